"""fastkl: Kullback-Leibler divergence and its family, row by row, at the speed of memory.

The data path: a public function (``fastkl.api``, one per spec of :mod:`fastkl.divergences`)
-> the driver (``fastkl._driver``, with ``fastkl._prepare``: argument handling, layout,
validation, reductions) -> a backend (``fastkl._backend_cpu`` or ``fastkl._cuda_driver``) and
its kernels, built on the scalar definitions of ``fastkl._math``.

The public names load on first use (PEP 562): ``import fastkl`` and the command line start
without importing numba, so that they answer at once (and Ctrl-C at start-up is one line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .divergences import REGISTRY

#: public name -> the module that defines it (the row-wise functions: one per spec of the
#: registry, in ``api``)
_HOMES = {
    "CompileWarning": "_warmup",
    "bernoulli_kl": "api",
    "compat": "compat",
    "divergences": "divergences",
    "gaussian_kl": "api",
    "nearest_kl": "pairwise",
    "pairwise_kl": "pairwise",
    "vae_kl": "api",
    **{spec.name: "api" for spec in REGISTRY},
}

#: The public names, written out for static readers (a test checks them against the registry).
__all__ = [
    "CompileWarning",
    "__version__",
    "bernoulli_kl",
    "compat",
    "cross_entropy",
    "divergences",
    "entropy",
    "gaussian_kl",
    "generalized_kl",
    "hellinger",
    "js_distance",
    "js_div",
    "kl_div",
    "nearest_kl",
    "pairwise_kl",
    "sym_kl",
    "tv_distance",
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
    from . import compat, divergences
    from ._warmup import CompileWarning
    from .api import (
        bernoulli_kl,
        cross_entropy,
        entropy,
        gaussian_kl,
        generalized_kl,
        hellinger,
        js_distance,
        js_div,
        kl_div,
        sym_kl,
        tv_distance,
        vae_kl,
    )
    from .pairwise import nearest_kl, pairwise_kl
