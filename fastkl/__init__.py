"""fastkl: Kullback-Leibler divergence and its family, row by row, at the speed of memory.

The data path: a public function (``fastkl.api``) -> the driver (``fastkl._driver``: argument
handling, layout, validation, reductions) -> a kernel (``fastkl._cpu``) built on the scalar
definitions of ``fastkl._math``.
"""

from . import compat
from ._version import __version__
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

__all__ = [
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
