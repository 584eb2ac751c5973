"""fastkl: Kullback-Leibler divergence and its family, row by row, at the speed of memory.

The data path: a public function (``fastkl.api``) -> the driver (``fastkl._driver``: argument
handling, layout, validation, reductions) -> a kernel (``fastkl._cpu``) built on the scalar
definitions of ``fastkl._math``.

The public names load on first use (PEP 562): ``import fastkl`` and the command line start
without importing numba, so that they answer at once (and Ctrl-C at start-up is one line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> the module that defines it
_HOMES = {
    "CompileWarning": "_warmup",
    "bernoulli_kl": "api",
    "compat": "compat",
    "cross_entropy": "api",
    "entropy": "api",
    "gaussian_kl": "api",
    "generalized_kl": "api",
    "js_distance": "api",
    "js_div": "api",
    "kl_div": "api",
    "nearest_kl": "pairwise",
    "pairwise_kl": "pairwise",
    "sym_kl": "api",
    "vae_kl": "api",
}

__all__ = [
    "CompileWarning",
    "__version__",
    "bernoulli_kl",
    "compat",
    "cross_entropy",
    "entropy",
    "gaussian_kl",
    "generalized_kl",
    "js_distance",
    "js_div",
    "kl_div",
    "nearest_kl",
    "pairwise_kl",
    "sym_kl",
    "vae_kl",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name, name)
    try:
        module = importlib.import_module(f"{__name__}.{home}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{home}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = module if home == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from . import compat
    from ._warmup import CompileWarning
    from .api import (
        bernoulli_kl,
        cross_entropy,
        entropy,
        gaussian_kl,
        generalized_kl,
        js_distance,
        js_div,
        kl_div,
        sym_kl,
        vae_kl,
    )
    from .pairwise import nearest_kl, pairwise_kl
