"""CPU kernels of the divergence family and of the closed forms.

The family (Jensen-Shannon, Jeffreys, cross-entropy, entropy, generalized KL) shares one
kernel template, specialized per divergence and form pair, around the terms of ``_math``:

1. statistics of a row, when a side needs them: the log-sum-exp of logits (a max pass through
   ordered bits, then a sum of exponentials), or the mass of a probability row to normalize;
2. one sum pass over segments of ``SEG`` elements in the input's precision (vectorized: the
   fast term checks itself through ``ratio_guard`` and turns NaN where it is not exact; the
   terms go to explicit lanes, as in ``_cpu``), each segment's partial sum added in float64 in
   a fixed order;
3. a row whose fast sum is not finite (a zero in a side that cannot have one, a NaN, a -inf
   logit, a subnormal) is computed again by the exact float64 terms.

Unlike KL, whose terms split into sums that a finish step rescales (``_cpu``), these terms
mix p and q inside a logarithm (Jensen-Shannon's ``m``) or are linear in one side only, so
both sides are normalized before the sum pass: a log-score row is read three times (its
max; its exponentials and shifted logs, stored in scratch rows so that the sum pass does not
take them again, 25% faster for Jensen-Shannon on logits; the terms), from cache for rows up
to the L2 size.
The row is the unit of work (no split of long rows across threads).

The closed forms are elementwise terms summed along a row (``k == 1`` for elementwise
results), computed in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _simd
from ._config import Unbound, specialize
from ._cpu import (
    _CALL,
    _HELPER,
    _KERNEL,
    _S,  # the scalar terms of _math, compiled for the CPU
    LANES,
    SEG,
    _read_as,
    _row_mass,
    _row_max,
    clip,
    exact_div,
    exp,
    exp_core,
    lanes,
    lanes_total,
    like,
    log,
    log_core,
    max_nan,
)
from ._math import LOGITS
from .divergences import Terms

log_ratio_core = _simd.log_ratio_core

FAM_BLOCK = 64  # rows per parallel task (they share the scratch rows of log sides)


@njit(**_HELPER)
def _seg_exp_store(x, m, e, s):
    """s[j] = x[j] - m and e[j] = exp(s[j]) for a segment; returns the sum of e in float64,
    or NaN where an s[j] is above 0: exp_core is right for x - m <= 0 only, and an unshifted
    log-probability above 0 (p > 1, which overflows float32 from 89 on) must go to the exact
    path. The sum pass reads the shifted logs s (and subtracts the log of the mass there).

    An exponential is stored as NaN where s[j] is above 0, which makes the sum NaN: the check
    needs no count of its own (an integer count beside the float32 lanes halved their
    vector width)."""
    mm = like(x[0], m)
    for j in range(x.shape[0]):
        d = x[j] - mm
        s[j] = d
        e[j] = exp_core(d) if d <= like(d, 0.0) else like(d, np.nan)
    return _row_mass(e)


@njit(**_HELPER)
def _row_exp(x, e, d, shift):
    """Shifted logs and exponentials of a log-score row into ``d`` and ``e``, for the sum pass
    to read: (m, c, 1 / s) with d = x - m, e = exp(d), s = sum(e), c = log(s). With ``shift``
    m is the row's maximum (logits, or normalized log-probabilities); without, m = c = 0 and
    s = 1.
    """
    k = x.shape[0]
    m = 0.0
    if shift:
        m = _row_max(x[: min(SEG, k)])
        for s in range(SEG, k, SEG):
            m = max_nan(_row_max(x[s : min(s + SEG, k)]), m)
        if not abs(m) < np.inf:
            return m, 0.0, np.nan  # NaN or +-inf logits: the exact path decides
    acc = 0.0
    for s in range(0, k, SEG):
        e_ = min(s + SEG, k)
        acc += _seg_exp_store(x[s:e_], m, e[s:e_], d[s:e_])
    if not shift:
        # NaN (a NaN, or a log-probability above 0) poisons the fast sum: the exact path
        return 0.0, 0.0, (1.0 if acc == acc else np.nan)
    return m, log(acc), 1.0 / acc


@njit(**_HELPER)
def _row_total(x):
    k = x.shape[0]
    acc = 0.0
    for s in range(0, k, SEG):
        acc += _row_mass(x[s : min(s + SEG, k)])
    return acc


# --- templates, specialized per (divergence's terms, form pair) ------------------------------
#
# Bound per specialization from the spec (``fastkl.divergences.Terms``), and the _t_* helpers
# below to their specialized versions.

LOG_P = Unbound("whether p is log-scores")
LOG_Q = Unbound("whether q is log-scores")
HAS_Q = Unbound("whether the terms read q (Terms.reads_q)")
TERM = Unbound("the exact term (Terms.exact, compiled)")
TERM_FAST = Unbound("the fast term (Terms.fast, compiled)")
FAM_TERM = Unbound("_t_fam_term specialized")
SEG_SUM = Unbound("_t_fam_seg specialized")
FINISH = _S.finish_row


def _t_fam_term(p, q, ep, eq, dp, dq, j, ap, cp, ip, aq, cq, iq, lo, hi):
    """Term j of a segment's fast sum (NaN where it is not exact). A probability side is
    ``clip(x * a, lo, hi)``; a log-score side has log ``d - c`` and probability ``e * i``, d
    and e its stored shifted log and exponential."""
    if LOG_P:
        lpj = dp[j] - cp
        pj = ep[j] * ip
    else:
        pj = clip(p[j] * ap, lo, hi)
        lpj = log_core(pj)
    qj, lqj = like(pj, 1.0), like(pj, 0.0)
    if HAS_Q:
        if LOG_Q:
            lqj = dq[j] - cq
            qj = eq[j] * iq
        else:
            qj = clip(q[j] * aq, lo, hi)
            lqj = log_core(qj)
    lr = lpj - lqj if (LOG_P or LOG_Q) else log_ratio_core(pj, qj)
    return TERM_FAST(pj, qj, lpj, lqj, lr)


def _t_fam_seg(p, q, ep, eq, dp, dq, ap, cp, ip, aq, cq, iq, lo, hi):
    """The fast sum of a segment, term j into lane j % LANES (see ``_cpu``)."""
    a = lanes(p[0])
    n = p.shape[0]
    full = n - n % LANES
    for j0 in range(0, full, LANES):
        for lane in range(LANES):
            a[lane] += FAM_TERM(p, q, ep, eq, dp, dq, j0 + lane, ap, cp, ip, aq, cq, iq, lo, hi)
    for lane in range(n - full):
        a[lane] += FAM_TERM(p, q, ep, eq, dp, dq, full + lane, ap, cp, ip, aq, cq, iq, lo, hi)
    return lanes_total(a)


@njit(**_HELPER)
def _prob_params(x, normalize):
    """A probability row's (scale, 0, 1) for the sum pass."""
    return (1.0 / _row_total(x) if normalize else 1.0), 0.0, 1.0


def _t_fam_fast(p, q, ep, eq, dp, dq, p_form, q_form, normalize, eps):
    """A row's fast value; ep, eq, dp, dq: scratch of k elements for the exponentials and the
    shifted logs of log sides."""
    k = p.shape[0]
    # (a, c, i): (scale, 0, 1) for probabilities; the shift and the inverse mass of the stored
    # exponentials for log-scores
    if LOG_P:
        a_p, c_p, i_p = _row_exp(p, ep, dp, p_form == LOGITS or normalize)
    else:
        a_p, c_p, i_p = _prob_params(p, normalize)
    a_q, c_q, i_q = 1.0, 0.0, 1.0
    if HAS_Q:
        if LOG_Q:
            a_q, c_q, i_q = _row_exp(q, eq, dq, q_form == LOGITS or normalize)
        else:
            a_q, c_q, i_q = _prob_params(q, normalize)
    if not (abs(i_p) < np.inf and abs(i_q) < np.inf):
        # A NaN or infinite logit (or a log-probability above 0): _row_exp stopped before
        # filling the scratch, which the sum must not read; the exact path decides.
        return np.nan
    lo, hi = (eps, 1.0) if eps > 0.0 else (-np.inf, np.inf)
    x = p[0]
    acc = 0.0
    for s in range(0, k, SEG):
        e = min(s + SEG, k)
        acc += SEG_SUM(
            p[s:e],
            q[s:e],
            ep[s:e],
            eq[s:e],
            dp[s:e],
            dq[s:e],
            like(x, a_p),
            like(x, c_p),
            like(x, i_p),
            like(x, a_q),
            like(x, c_q),
            like(x, i_q),
            like(x, lo),
            like(x, hi),
        )
    return acc


def _t_fam_exact(p, q, p_form, q_form, normalize, eps):
    """A row in float64 with the exact terms (every IEEE special value handled)."""
    pa, pc, plo, phi = _read_as(p, p_form, normalize, eps)
    qa, qc, qlo, qhi = _read_as(q, q_form, normalize, eps) if HAS_Q else (1.0, 0.0, 0.0, 1.0)
    acc = 0.0
    for j in range(p.shape[0]):
        if LOG_P:
            lp = clip((p[j] - pa) - pc, plo, phi)
            pj = exp(lp)
        else:
            pj = clip(exact_div(p[j], pa), plo, phi)
            lp = log(pj)
        qj, lq = 1.0, 0.0
        if HAS_Q:
            if LOG_Q:
                lq = clip((q[j] - qa) - qc, qlo, qhi)
                qj = exp(lq)
            else:
                qj = clip(exact_div(q[j], qa), qlo, qhi)
                lq = log(qj)
        acc += TERM(pj, qj, lp, lq)
    return acc


def _t_fam_block(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, post, out, r0):
    """Rows r0 to r0 + FAM_BLOCK of _t_fam_rows (fewer at the end): they share the scratch for
    the exponentials of log-score sides."""
    # Clipping log-scores needs their log-sum-exp before the clip: the exact path does it.
    fast = not (eps > 0.0 and (LOG_P or (HAS_Q and LOG_Q)))
    # exponentials and shifted logs of the log-score sides (a probability side passes its own
    # row: unread)
    scratch = np.empty((4, k if (LOG_P or LOG_Q) else 1), dtype=p.dtype)
    for i in range(r0, min(r0 + FAM_BLOCK, out.shape[0])):
        pr = p[i * ldp : i * ldp + k]
        qr = q[i * ldq : i * ldq + k]
        v = np.nan
        if fast:
            v = _t_fam_fast(
                pr,
                qr,
                scratch[0] if LOG_P else pr,
                scratch[1] if LOG_Q else qr,
                scratch[2] if LOG_P else pr,
                scratch[3] if LOG_Q else qr,
                p_form,
                q_form,
                normalize,
                eps,
            )
        if not abs(v) < np.inf:
            v = _t_fam_exact(pr, qr, p_form, q_form, normalize, eps)
        out[i] = FINISH(v / divisor, post)


def _t_fam_rows(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, post, out):
    """out[i] = D(p_i || q_i) / divisor, then ``post``; a block of FAM_BLOCK rows per task (the
    parallel loop only calls the block's function, which keeps numba's parfor passes short)."""
    for b in prange((out.shape[0] + FAM_BLOCK - 1) // FAM_BLOCK):
        _t_fam_block(
            p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, post, out, b * FAM_BLOCK
        )


def _specialize_family(terms: Terms, log_p: bool, log_q: bool):
    tag = f"{terms.tag}_{'l' if log_p else 'p'}{'l' if log_q else 'p'}"
    bindings = {
        "LOG_P": log_p,
        "LOG_Q": log_q,
        "HAS_Q": terms.reads_q,
        "TERM": getattr(_S, terms.exact.__name__),
        "TERM_FAST": getattr(_S, terms.fast.__name__),
    }
    bindings["FAM_TERM"] = njit(**_HELPER)(specialize(_t_fam_term, f"term_{tag}", bindings))
    bindings["SEG_SUM"] = njit(**_HELPER)(specialize(_t_fam_seg, f"seg_{tag}", bindings))
    bindings["_t_fam_fast"] = njit(**_HELPER)(specialize(_t_fam_fast, f"fast_{tag}", bindings))
    bindings["_t_fam_exact"] = njit(**_CALL)(specialize(_t_fam_exact, f"exact_{tag}", bindings))
    bindings["_t_fam_block"] = njit(**_CALL)(specialize(_t_fam_block, f"block_{tag}", bindings))
    return njit(**_KERNEL)(specialize(_t_fam_rows, f"{tag}_rows_cpu", bindings))


_FAMILY_KERNELS: dict[tuple[Terms, bool, bool], object] = {}


def family_kernel(terms: Terms, log_p: bool, log_q: bool):
    """The row kernel of a divergence's terms for a form pair (specialized on first use)."""
    key = (terms, log_p, log_q and terms.reads_q)
    kernel = _FAMILY_KERNELS.get(key)
    if kernel is None:
        kernel = _FAMILY_KERNELS[key] = _specialize_family(*key)
    return kernel


# --- closed forms -------------------------------------------------------------------------------

TERM2 = Unbound("a closed form's term of two parameters")
TERM4 = Unbound("a closed form's term of four parameters")
CLOSED_TERM = Unbound("_t_term2 or _t_term4 specialized")
CLOSED_ROW = Unbound("_t_closed_row specialized")


def _t_term2(a, lda, b, ldb, c, ldc, d, ldd, i, j):
    """Term (i, j) of a closed form of two parameters, in float64 (c and d unread)."""
    return TERM2(np.float64(a[i * lda + j]), np.float64(b[i * ldb + j]))


def _t_term4(a, lda, b, ldb, c, ldc, d, ldd, i, j):
    """Term (i, j) of a closed form of four parameters, in float64."""
    return TERM4(
        np.float64(a[i * lda + j]),
        np.float64(b[i * ldb + j]),
        np.float64(c[i * ldc + j]),
        np.float64(d[i * ldd + j]),
    )


def _t_closed_row(a, lda, b, ldb, c, ldc, d, ldd, i, k):
    """Row i's sum of terms: in order below LANES terms (elementwise results are k == 1),
    else in explicit lanes (see ``_cpu``)."""
    if k < LANES:
        acc = 0.0
        for j in range(k):
            acc += CLOSED_TERM(a, lda, b, ldb, c, ldc, d, ldd, i, j)
        return acc
    sums = lanes(0.0)
    full = k - k % LANES
    for j0 in range(0, full, LANES):
        for lane in range(LANES):
            sums[lane] += CLOSED_TERM(a, lda, b, ldb, c, ldc, d, ldd, i, j0 + lane)
    for lane in range(k - full):
        sums[lane] += CLOSED_TERM(a, lda, b, ldb, c, ldc, d, ldd, i, full + lane)
    return lanes_total(sums)


def _t_sum_rows2(a, lda, b, ldb, k, divisor, out):
    """out[i] = sum_j TERM2(a_ij, b_ij) / divisor, in float64."""
    for i in prange(out.shape[0]):
        out[i] = CLOSED_ROW(a, lda, b, ldb, a, 0, a, 0, i, k) / divisor


def _t_sum_rows4(a, lda, b, ldb, c, ldc, d, ldd, k, out):
    """out[i] = sum_j TERM4(a_ij, b_ij, c_ij, d_ij), in float64."""
    for i in prange(out.shape[0]):
        out[i] = CLOSED_ROW(a, lda, b, ldb, c, ldc, d, ldd, i, k)


def _closed_kernel(name: str, template, **terms):
    term = _t_term4 if "TERM4" in terms else _t_term2
    bindings = dict(terms)
    bindings["CLOSED_TERM"] = njit(**_HELPER)(specialize(term, f"term_{name}", bindings))
    row = specialize(_t_closed_row, f"row_{name}", bindings)
    bindings["CLOSED_ROW"] = njit(**_HELPER)(row)
    return njit(**_KERNEL)(specialize(template, f"{name}_rows_cpu", bindings))


#: closed form -> its row kernel
CLOSED_KERNELS = {
    "bernoulli": _closed_kernel("bernoulli", _t_sum_rows2, TERM2=_S.bernoulli_term),
    "vae": _closed_kernel("vae", _t_sum_rows2, TERM2=_S.vae_term),
    "gaussian": _closed_kernel("gaussian", _t_sum_rows4, TERM4=_S.gaussian_term),
}
