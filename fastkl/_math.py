"""The scalar definitions: every divergence formula of fastkl, written once.

These are plain Python functions on scalars. No decorator: each target compiles them
(``fastkl._config.compile_scalars``): the CPU kernels as ``njit(inline="always")``, the C API
through the same CPU kernels, CUDA as device functions. The names ``log`` and ``exp`` are
resolved per target too, so a target can substitute its own implementation (a vectorizable
log on the CPU, libdevice's on the GPU) without a second copy of any formula.

Exact semantics, shared by every path:

* ``0 * log(0 / q) = 0`` for any q (a zero probability contributes nothing), but a NaN
  anywhere still propagates;
* ``p * log(p / 0) = +inf`` for p > 0;
* never a NaN from ``0 * log 0`` or ``0 * (-inf)``.
"""

from math import exp, inf, log  # noqa: F401  (exp and log are rebound per target)

__all__ = ["clip", "kl_term", "kl_term_log", "max_nan"]

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


def kl_term(p, q):
    """``p * log(p / q)``: one term of KL(P||Q) from two probabilities.

    0 where p == 0 (unless q is NaN), +inf where p > 0 and q == 0, NaN if p or q is NaN or p < 0.
    One log of the quotient is both the cheapest and the most accurate form; where the
    quotient under- or overflows although p and q are positive (a subnormal q, or measures
    larger than 1), the logs are taken apart instead.
    """
    r = p / q
    if (r == 0.0 and p != 0.0) or r == inf:
        lr = log(p) - log(q)
    else:
        lr = log(r)
    # p itself is the zero of the right type (0.0 would promote float32 to float64).
    return p * lr if (p != 0.0 or q != q) else p


def kl_term_log(p, logp, logq):
    """``p * (log p - log q)``: one term of KL(P||Q) from p, its log, and the log of q.

    Same semantics as :func:`kl_term`: 0 where p == 0 (even where log q == -inf) unless log q is
    NaN; +inf where p > 0 and log q == -inf.
    """
    return p * (logp - logq) if (p != 0.0 or logq != logq) else p
