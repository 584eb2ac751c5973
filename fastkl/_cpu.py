"""CPU kernels: thin ``prange`` loops over rows around the scalar terms of ``_math``.

Every kernel takes its rows in the layout the C API uses: a 1-D contiguous buffer and a row
stride ``ld`` in elements (row ``i`` is ``x[i * ld : i * ld + k]``; ``ld == 0`` repeats one row
for every output). The driver (``_driver.py``) brings any input to that layout, without copying
the whole array, and owns every other argument decision.

Per-element arithmetic is float64 and each row accumulates in float64, whatever the input
dtype, so float32 inputs get float64 accuracy (long rows of 100,000 terms included).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _math
from ._config import JIT_OPTIONS, compile_scalars
from ._math import LOGITS, PROBS

_S = compile_scalars(_math, njit(inline="always", **JIT_OPTIONS))
clip = _S.clip
max_nan = _S.max_nan
kl_term = _S.kl_term
kl_term_log = _S.kl_term_log

log = math.log
exp = math.exp

# How a row is read once its form is resolved: as probabilities (times a scale) or as
# log-probabilities (minus a shift).
_AS_PROB = 0
_AS_LOG = 1

_KERNEL = dict(JIT_OPTIONS, parallel=True, cache=True)
_HELPER = dict(JIT_OPTIONS, inline="always")


@njit(**_HELPER)
def _row_sum(x):
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j]
    return acc


@njit(**_HELPER)
def _row_logsumexp(x):
    """log(sum(exp(x))) in two vectorizable passes (max, then the shifted sum)."""
    m = -np.inf
    for j in range(x.shape[0]):
        m = max_nan(x[j], m)
    acc = 0.0
    for j in range(x.shape[0]):
        acc += exp(x[j] - m)
    return m + log(acc)


@njit(**_HELPER)
def _read_as(x, form, normalize, eps):
    """How to read row ``x``: (kind, a, lo, hi).

    kind _AS_PROB: the probabilities are ``clip(x * a, lo, hi)``;
    kind _AS_LOG: the log-probabilities are ``clip(x - a, lo, hi)``.
    ``a`` fuses normalization (1 / sum, or the log-sum-exp of logits) into the term loop, and
    the bounds fuse eps-clipping (infinite bounds clip nothing and keep NaN).
    """
    if form == PROBS:
        a = 1.0 / _row_sum(x) if normalize else 1.0
        if eps > 0.0:
            return _AS_PROB, a, eps, 1.0
        return _AS_PROB, a, -np.inf, np.inf
    # Normalizing log-probabilities is subtracting their log-sum-exp: they are logits then.
    a = _row_logsumexp(x) if (form == LOGITS or normalize) else 0.0
    if eps > 0.0:
        return _AS_LOG, a, log(eps), 0.0
    return _AS_LOG, a, -np.inf, np.inf


@njit(**_HELPER)
def _kl_row(p, q, p_form, q_form, normalize, eps):
    pk, pa, plo, phi = _read_as(p, p_form, normalize, eps)
    qk, qa, qlo, qhi = _read_as(q, q_form, normalize, eps)
    acc = 0.0
    if pk == _AS_PROB and qk == _AS_PROB:
        for j in range(p.shape[0]):
            acc += kl_term(clip(p[j] * pa, plo, phi), clip(q[j] * qa, qlo, qhi))
    elif pk == _AS_PROB:
        for j in range(p.shape[0]):
            pj = clip(p[j] * pa, plo, phi)
            acc += kl_term_log(pj, log(pj), clip(q[j] - qa, qlo, qhi))
    elif qk == _AS_PROB:
        for j in range(p.shape[0]):
            lp = clip(p[j] - pa, plo, phi)
            acc += kl_term_log(exp(lp), lp, log(clip(q[j] * qa, qlo, qhi)))
    else:
        for j in range(p.shape[0]):
            lp = clip(p[j] - pa, plo, phi)
            acc += kl_term_log(exp(lp), lp, clip(q[j] - qa, qlo, qhi))
    return acc


@njit(**_KERNEL)
def _kl_rows_cpu(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, out):
    """out[i] = KL(p_i || q_i) / divisor for every row i (see the module docstring)."""
    for i in prange(out.shape[0]):
        row = _kl_row(
            p[i * ldp : i * ldp + k], q[i * ldq : i * ldq + k], p_form, q_form, normalize, eps
        )
        out[i] = row / divisor


# --- validation --------------------------------------------------------------------------

#: Row status codes of _check_rows_cpu; the driver turns them into messages.
ROW_OK = 0
ROW_NAN = 1
ROW_NEGATIVE = 2
ROW_BAD_SUM = 3
ROW_POS_INF = 4

#: What _check_rows_cpu checks of a row's total mass.
SUM_UNCHECKED = 0
SUM_IS_ONE = 1
SUM_POSITIVE = 2


@njit(**_HELPER)
def _check_row(x, form, sum_check, tol):
    nan = False
    neg = False
    pos_inf = False
    for j in range(x.shape[0]):
        v = x[j]
        nan |= v != v
        neg |= v < 0.0
        pos_inf |= v == np.inf
    if nan:
        return ROW_NAN
    if form == PROBS and neg:
        return ROW_NEGATIVE
    if form != PROBS and pos_inf:
        return ROW_POS_INF
    if sum_check == SUM_UNCHECKED:
        return ROW_OK
    total = _row_sum(x) if form == PROBS else exp(_row_logsumexp(x))
    if sum_check == SUM_POSITIVE:
        return ROW_OK if total > 0.0 else ROW_BAD_SUM
    return ROW_OK if abs(total - 1.0) <= tol else ROW_BAD_SUM


@njit(**_KERNEL)
def _check_rows_cpu(x, ld, k, form, sum_check, tol, status):
    """status[i] = the ROW_* code of row i."""
    for i in prange(status.shape[0]):
        status[i] = _check_row(x[i * ld : i * ld + k], form, sum_check, tol)
