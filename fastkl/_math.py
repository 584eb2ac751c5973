"""The scalar definitions: every divergence formula of fastkl, written once.

These are plain Python functions on scalars. No decorator: each target compiles them
(``fastkl._config.compile_scalars``): the CPU kernels as plain ``njit`` functions that LLVM
inlines into the vectorized loops, the C API through the same CPU kernels, CUDA as device
functions. The names ``log``, ``exp``, ``log_core`` and ``log_ratio_core`` are resolved per
target too, so a target can substitute its own implementation (a vectorizable log on the CPU,
libdevice's on the GPU) without a second copy of any formula.

Exact semantics, shared by every path:

* ``0 * log(0 / q) = 0`` for any q (a zero probability contributes nothing), but a NaN
  anywhere still propagates;
* ``p * log(p / 0) = +inf`` for p > 0;
* never a NaN from ``0 * log 0`` or ``0 * (-inf)``.
"""

from math import exp, inf, log  # noqa: F401  (exp and log are rebound per target)

# ``log_core`` is a log that only needs to be right for positive normal finite inputs (the CPU
# binds a vectorizable polynomial without special-value handling); by default the full log.
log_core = log

__all__ = [
    "clip",
    "kl_term",
    "kl_term_fast",
    "kl_term_log",
    "kl_term_log_fast",
    "log_ratio_core",
    "max_nan",
]

# Input forms, shared with the C API's FASTKL_PROBS / FASTKL_LOG_PROBS / FASTKL_LOGITS.
PROBS = 0
LOG_PROBS = 1
LOGITS = 2


def clip(x, lo, hi):
    """``x`` clipped to ``[lo, hi]``, NaN kept (``min``/``max`` would drop it)."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def max_nan(a, b):
    """The larger of ``a`` and ``b``; NaN if ``a`` is NaN (so a NaN row stays NaN)."""
    return a if (a >= b or a != a) else b


def log_ratio_core(p, q):
    """``log(p / q)`` for positive normal finite p and q.

    A target may bind a form that never forms the quotient (the CPU's splits both floats into
    mantissa and exponent: one division, no overflow); this is the portable default.
    """
    return log_core(p / q)


def kl_term_fast(p, q):
    """``p * log(p / q)`` for positive normal finite p and q (or p == 0, where the CPU's
    ``log_ratio_core`` stays finite): the hot-loop form of :func:`kl_term`.

    No special cases: the fast kernels check every pair (``_simd.ratio_unsafe``) and recompute
    rows that hold any other value with :func:`kl_term`.
    """
    return p * log_ratio_core(p, q)


def kl_term(p, q):
    """``p * log(p / q)``: one term of KL(P||Q) from two probabilities, exactly.

    0 where p == 0 (unless q is NaN), +inf where p > 0 and q == 0, NaN if p or q is NaN or
    negative. Where the quotient under- or overflows although p and q are positive and finite
    (a subnormal q, or measures larger than 1), the logs are taken apart instead.
    """
    if p == 0.0:
        return p if q == q else q  # 0 whatever q is; a NaN q still makes the row NaN
    r = p / q
    if r >= 1e-300 and r < inf:
        return p * log(r)  # the quotient keeps the precision of near-equal p and q
    if p > 0.0 and q > 0.0 and q < inf:
        return p * (log(p) - log(q))  # the quotient under- or overflowed
    return p * log(r)  # q == 0: +inf; negative or NaN: NaN; q == inf: -inf


def kl_term_log_fast(p, logp, logq):
    """``p * (log p - log q)``: the hot-loop form of :func:`kl_term_log` (p > 0, finite logs)."""
    return p * (logp - logq)


def kl_term_log(p, logp, logq):
    """``p * (log p - log q)``: one term of KL(P||Q) from p, its log, and the log of q.

    Same semantics as :func:`kl_term`: 0 where p == 0 (even where log q == -inf) unless log q is
    NaN; +inf where p > 0 and log q == -inf.
    """
    return kl_term_log_fast(p, logp, logq) if (p != 0.0 or logq != logq) else p
