"""CPU kernels: ``prange`` loops over rows around the scalar terms of ``_math``.

Every kernel takes its rows in the layout the C API uses: a 1-D contiguous buffer and a row
stride ``ld`` in elements (row ``i`` is ``x[i * ld : i * ld + k]``; ``ld == 0`` repeats one row
for every output). The driver (``_driver.py``, ``_prepare.py``) brings any input to that
layout, without copying the whole array, and owns every other argument decision.

How a row is scored
-------------------
Each row first takes the fast path, which vectorizes (16 float32 lanes per AVX-512 instruction)
because it has no branch and no special-value select in its inner loops. Depending on the
forms, that is:

* a statistics pass: the row maximum of logits, through an integer max of the float's ordered
  bits (LLVM does not vectorize a float max reduction unless NaNs are ruled out, and they must
  not be); or the row sum, when normalizing probabilities;
* a sum pass over segments of ``SEG`` elements, in the input's precision with the polynomial
  ``log_ratio_core``/``log_core``/``exp_core`` of ``_simd``. Within a segment, term j goes to
  lane ``j % LANES`` of a vector of partial sums (``_simd.lanes``), which are then added by
  halves; each segment's sum is added in float64, segment by segment and chunk by chunk, in a
  fixed order;
* a few scalar operations that finish the row.

The sum pass also checks that every value met the fast path's assumptions: a term is NaN
where its values are outside them (for probabilities on both sides, ``_simd.ratio_guard``
turns it NaN unless q is positive, normal and finite and p is zero or so). The NaN rides in
the row's sum, so the check costs no reduction of its own. A row that fails, or whose result
is not finite (a NaN, a zero in q, logits of -inf), is computed again by the exact path
(``_t_exact_row``: float64, IEEE special values handled term by term). That is where the
exact semantics of ``_math`` come from, at no cost to ordinary rows.

Shapes
------
* k <= FLAT_MAX_K (probabilities on both sides): a row is too short for a vector loop, so the
  terms of a block of rows are computed as one flat vectorized loop (strided rows are first
  copied into a contiguous run) and then summed by a loop over rows compiled for that k.
* Rows with statistics (logits, normalize, eps) go in blocks of ROW_BLOCK rows whose float64
  finish (divisions and a log per row) is one vectorized loop.
* Rows of at least 2 * CHUNK elements: (row, chunk) pairs are the parallel tasks, so that a
  few long rows still use every core; their partial sums are combined in chunk order. Log-score
  sides shift each chunk by its own maxima (no statistics pass: the data is read once).

The mode depends on k and the forms only, never on n, the layout or the thread count, and
every sum is written in an order that the compiler may not change (no ``reassoc``; the lanes
are explicit). That is what makes results bitwise identical whatever the number of threads,
whatever block of rows a row arrives in, and whether this process compiled the kernel or
loaded it from the cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _config, _math, _simd
from ._config import JIT_OPTIONS, Unbound, compile_scalars, specialize
from ._math import LOGITS, PROBS


@njit(**dict(JIT_OPTIONS, fastmath=False))
def exact_div(x, a):
    """``x / a`` as one IEEE division: no fastmath, whose ``arcp`` would multiply by ``1 / a``,
    which overflows to inf for a subnormal ``a`` (a row whose total is subnormal)."""
    return x / a


_S = compile_scalars(
    _math,
    njit(**JIT_OPTIONS),  # leaves: LLVM inlines them into the vectorized loops
    {
        "log": _simd.log,
        "exp": _simd.exp,
        "log_core": _simd.log_core,
        "log_ratio_core": _simd.log_ratio_core,
        "ratio_guard": _simd.ratio_guard,
        "like": _simd.like,
        "exact_div": exact_div,
    },
)
clip = _S.clip
max_nan = _S.max_nan
kl_term = _S.kl_term
kl_term_fast = _S.kl_term_fast
kl_term_log = _S.kl_term_log
kl_term_log_fast = _S.kl_term_log_fast

log = _simd.log
exp = _simd.exp
log_core = _simd.log_core
exp_core = _simd.exp_core
like = _simd.like
ratio_guard = _simd.ratio_guard
LANES = _simd.LANES
lanes = _simd.lanes
lanes_total = _simd.lanes_total
lane_sum = _simd.lane_sum

SEG = 512  # elements summed in the input's precision before a float64 add
CHUNK = 64 * SEG  # the unit a long row is split into across threads
FLAT_MAX_K = 8
FLAT_BLOCK_ROWS = 512
ROW_BLOCK = 64  # rows whose finish is one vectorized loop (_t_kl_rows)
MIN_NORMAL_F64 = float(np.finfo(np.float64).tiny)

_KERNEL = dict(JIT_OPTIONS, parallel=True, cache=_config.CACHE)
# Loop structure is inlined at the numba IR level: a call per segment of 64 elements would
# cost more than the segment (and the stack lanes of ``_simd.lanes`` belong to the frame they
# are inlined into). Leaves (log, exp, the scalar terms) and the rarely taken exact path are
# ordinary calls, which keeps the IR, and the compile time, small.
_HELPER = dict(JIT_OPTIONS, inline="always")
_CALL = dict(JIT_OPTIONS)


@njit(**_HELPER)
def _add4(s0, s1, s2, s3, t0, t1, t2, t3):
    return s0 + t0, s1 + t1, s2 + t2, s3 + t3


# --- the exact path ---------------------------------------------------------------------


@njit(**_CALL)
def _row_sum_exact(x):
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j]
    return acc


@njit(**_CALL)
def _row_logsumexp_exact(x):
    """A row's log-sum-exp as (m, c): its maximum and log(sum(exp(x - m))), kept apart so
    that a log-probability is read as ``(x - m) - c``. As one number, ``m + c`` rounds away
    c when |m| is large (two logits of 2e17: each log-probability is -log 2, not 0)."""
    m = -np.inf
    for j in range(x.shape[0]):
        m = max_nan(x[j], m)
    acc = 0.0
    for j in range(x.shape[0]):
        acc += exp(x[j] - m)
    return m, log(acc)


@njit(**_CALL)
def _read_as(x, form, normalize, eps):
    """How to read row ``x`` exactly: (a, c, lo, hi).

    Probabilities are ``clip(x / a, lo, hi)`` (c is 0); log-probabilities (log forms) are
    ``clip((x - a) - c, lo, hi)``, a the row's maximum and c the log of its shifted mass.
    Infinite bounds clip nothing and keep NaN. (A division, not a product with 1 / a: a
    subnormal total's reciprocal overflows to inf.)
    """
    lo, hi = -np.inf, np.inf
    if form == PROBS:
        a = _row_sum_exact(x) if normalize else 1.0
        if eps > 0.0:
            lo, hi = eps, 1.0
        return a, 0.0, lo, hi
    # Normalizing log-probabilities is subtracting their log-sum-exp: they are logits then.
    a, c = _row_logsumexp_exact(x) if (form == LOGITS or normalize) else (0.0, 0.0)
    if eps > 0.0:
        lo, hi = log(eps), 0.0
    return a, c, lo, hi


# --- the fast path, written once as templates over a form pair ----------------------------
#
# The functions named _t_* are plain Python templates. They are specialized per form pair
# (``_family`` below, through ``_config.specialize``) with these names bound:
#   LOG_P, LOG_Q: whether p and q are log-scores (constants, so LLVM drops the other branches);
#   SEG_SUMS: the pair's segment loop (``_t_seg_sums`` over the pair's ``_terms_*``),
#     returning 4 float64 sums: s0 the KL accumulator, s1 a check (0 when the fast path
#     holds; the segment loops put theirs in s0, the exact path's choice of rows adds none),
#     s2 the mass of p (sum of p, or of exp(p - max) for log-scores), s3 that of q (log q
#     only);
#   and the other _t_* names, bound to their specialized versions.
# Each pair's kernels then compile only that pair's code.

LOG_P = Unbound("whether p is log-scores")
LOG_Q = Unbound("whether q is log-scores")


@njit(**_HELPER)
def _row_max(x):
    """Maximum of a segment through ordered integer bits (a vectorizable reduction)."""
    m = _simd.lowest_ordered(x[0])
    for j in range(x.shape[0]):
        b = _simd.ordered_bits(x[j])
        m = b if b > m else m
    return np.float64(_simd.from_ordered_bits(m, x[0]))


@njit(**_HELPER)
def _row_max2(p, q):
    mp = _simd.lowest_ordered(p[0])
    mq = _simd.lowest_ordered(q[0])
    for j in range(p.shape[0]):
        bp = _simd.ordered_bits(p[j])
        bq = _simd.ordered_bits(q[j])
        mp = bp if bp > mp else mp
        mq = bq if bq > mq else mq
    return (
        np.float64(_simd.from_ordered_bits(mp, p[0])),
        np.float64(_simd.from_ordered_bits(mq, q[0])),
    )


@njit(**_HELPER)
def _row_mass(x):
    """The sum of a segment in its precision, in explicit lanes, as a float64."""
    return lane_sum(x)


# --- the terms of a segment, per form pair ----------------------------------------------
#
# ``_terms_xy(pj, qj, xp, xq, lo, hi, clipping)`` is element j's share of the pair's sums:
# (the KL term, the term of p's mass, the term of q's mass). xp, xq are each side's scale
# (probabilities) or shift (log-scores). The KL term is NaN where the element is outside the
# fast path's assumptions: the check rides in the row's sum, which then sends the row to the
# exact path, so it needs no reduction of its own (a count beside the float lanes halved
# their vector width).


@njit(**_HELPER)
def _terms_pp(pj, qj, ap, aq, lo, hi, clipping):
    """p log(p/q), each side scaled (and clipped if ``clipping``). It is NaN unless q is
    positive, normal and finite and p is 0 or so (``ratio_guard``)."""
    pj = pj * ap
    qj = qj * aq
    if clipping:
        pj = clip(pj, lo, hi)
        qj = clip(qj, lo, hi)
    zero = like(pj, 0.0)
    return ratio_guard(kl_term_fast(pj, qj), pj, qj), zero, zero


@njit(**_HELPER)
def _terms_pl(pj, zq, ap, mq, lo, hi, clipping):
    """p probabilities, q log-scores shifted by mq."""
    pj = pj * ap
    dq = zq - mq
    t = kl_term_log_fast(pj, log_core(pj), dq)  # p == 0: 0 times a finite log_core(0)
    ok = pj >= like(pj, 0.0)  # not a negative or NaN p
    return (t if ok else like(pj, np.nan)), pj, exp_core(dq)


@njit(**_HELPER)
def _terms_lp(zp, qj, mp, aq, lo, hi, clipping):
    """p log-scores shifted by mp, q probabilities (which must be positive and normal)."""
    low = like(zp, -1e4)  # exp(low) is 0: a log-probability of -inf weighs 0, not NaN
    tiny = like(zp, 1.1754943508222875e-38)  # float32's smallest normal
    dp = zp - mp
    e = exp_core(dp)  # right for dp <= 0 only: a log-probability above 0 is flagged below
    qj = qj * aq
    t = kl_term_log_fast(e, low if dp < low else dp, log_core(qj))
    # q in log_core's domain (normal, positive, finite: compares, which a NaN fails), and a
    # log p of at most 0
    ok = (qj >= tiny) & (qj < like(zp, np.inf)) & (dp <= like(zp, 0.0))
    return (t if ok else like(zp, np.nan)), e, like(zp, 0.0)


@njit(**_HELPER)
def _terms_ll(zp, zq, mp, mq, lo, hi, clipping):
    """Both sides log-scores, shifted by their maxima (log-probabilities: by 0)."""
    low = like(zp, -1e4)
    dp = zp - mp
    dq = zq - mq
    e = exp_core(dp)
    t = kl_term_log_fast(e, low if dp < low else dp, dq)
    # exp_core is right for dp <= 0 only: a log-probability above 0 (p > 1, which overflows
    # float32 from 89 on) sends the row to the exact path. q's mass is only read for logits,
    # whose dq <= 0.
    return (t if dp <= like(zp, 0.0) else like(zp, np.nan)), e, exp_core(dq)


# Bound per pair as well: its terms, whether it clips (probabilities only: the other pairs
# send clipped rows to the exact path) and whether its third and fourth sums are read.
TERMS = Unbound("the pair's terms: _terms_pp, _terms_pl, _terms_lp or _terms_ll")
CLIPS = Unbound("whether the pair clips (probabilities only)")
MASS_P = Unbound("whether the third sum (the mass of p) is read")
MASS_Q = Unbound("whether the fourth sum (the mass of q) is read")


def _t_seg_lanes(p, q, xp, xq, lo, hi, clipping):
    """A segment's sums (s0, 0, s2, s3), term j into lane j % LANES."""
    a0 = lanes(p[0])
    a2 = lanes(p[0])
    a3 = lanes(p[0])
    n = p.shape[0]
    full = n - n % LANES
    for j0 in range(0, full, LANES):
        for lane in range(LANES):
            t0, t2, t3 = TERMS(p[j0 + lane], q[j0 + lane], xp, xq, lo, hi, clipping)
            a0[lane] += t0
            if MASS_P:
                a2[lane] += t2
            if MASS_Q:
                a3[lane] += t3
    for lane in range(n - full):
        t0, t2, t3 = TERMS(p[full + lane], q[full + lane], xp, xq, lo, hi, clipping)
        a0[lane] += t0
        if MASS_P:
            a2[lane] += t2
        if MASS_Q:
            a3[lane] += t3
    s2 = lanes_total(a2) if MASS_P else 0.0
    s3 = lanes_total(a3) if MASS_Q else 0.0
    return lanes_total(a0), 0.0, s2, s3


def _t_seg_sums(p, q, xp, xq, lo, hi):
    """SEG_SUMS: a loop of its own for clipping, whose bounds are not free in the other."""
    if CLIPS and lo > -np.inf:
        return SEG_LANES(p, q, xp, xq, lo, hi, True)
    return SEG_LANES(p, q, xp, xq, lo, hi, False)


def _t_seg_stats(p, q, stat_p, stat_q):
    """A segment's statistics: the maximum of a log-score side, the mass of a probability side."""
    if LOG_P and LOG_Q and stat_p and stat_q:
        return _row_max2(p, q)
    sp = 0.0
    sq = 0.0
    if stat_p:
        sp = _row_max(p) if LOG_P else _row_mass(p)
    if stat_q:
        sq = _row_max(q) if LOG_Q else _row_mass(q)
    return sp, sq


def _t_combine(sp, sq, a, b):
    return (max_nan(a, sp) if LOG_P else sp + a), (max_nan(b, sq) if LOG_Q else sq + b)


def _t_chunk_stats(p, q, stat_p, stat_q, start, stop):
    """Statistics of elements start:stop, segment by segment in a fixed order."""
    sp, sq = _t_seg_stats(
        p[start : min(start + SEG, stop)], q[start : min(start + SEG, stop)], stat_p, stat_q
    )
    for s in range(start + SEG, stop, SEG):
        e = min(s + SEG, stop)
        a, b = _t_seg_stats(p[s:e], q[s:e], stat_p, stat_q)
        sp, sq = _t_combine(sp, sq, a, b)
    return sp, sq


def _t_row_params(stat_p, stat_q, sp, sq, eps):
    """A row's statistics as the sum pass's arguments (a_p, a_q, lo, hi)."""
    if LOG_P:
        a_p = sp if stat_p else 0.0
    else:
        a_p = 1.0 / sp if stat_p else 1.0
    if LOG_Q:
        a_q = sq if stat_q else 0.0
    else:
        a_q = 1.0 / sq if stat_q else 1.0
    if eps > 0.0:
        return a_p, a_q, eps, 1.0
    return a_p, a_q, -np.inf, np.inf


def _t_chunk_sums(p, q, a_p, a_q, lo, hi, start, stop):
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for s in range(start, stop, SEG):
        e = min(s + SEG, stop)
        t0, t1, t2, t3 = SEG_SUMS(
            p[s:e], q[s:e], like(p[0], a_p), like(q[0], a_q), like(p[0], lo), like(p[0], hi)
        )
        s0, s1, s2, s3 = _add4(s0, s1, s2, s3, t0, t1, t2, t3)
    return s0, s1, s2, s3


def _t_finish(stat_p, stat_q, s0, s2, s3):
    """KL from a row's float64 sums, without a branch: a loop over a block of rows vectorizes
    (``log_core``: the masses are checked by :func:`_t_ok`, not here)."""
    kl = s0
    if LOG_P and stat_p and LOG_Q and stat_q:
        kl = s0 / s2 + log_core(s3 / s2)  # one float64 log per row instead of two
        # Both sides are softmax distributions, so KL >= 0 holds exactly (Gibbs); a negative
        # value is rounding in the last bit (identical float32 logits gave -1.1e-16).
        kl = 0.0 if kl < 0.0 else kl
    elif LOG_P and stat_p:
        kl = s0 / s2 - log_core(s2)  # p = exp(dp) / s2
    elif LOG_Q and stat_q:
        kl += s2 * log_core(s3)  # log q = dq - log(s3), weighted by the mass of p
    return kl


def _t_ok(stat_p, stat_q, kl, s1, s2, s3):
    """Whether a row's fast result stands; False sends the row to the exact path."""
    ok = s1 == 0.0 and abs(kl) < np.inf
    if LOG_P and stat_p:
        ok = ok and s2 >= MIN_NORMAL_F64 and s2 < np.inf  # log_core's domain
    if LOG_Q and stat_q:
        ok = ok and s3 >= MIN_NORMAL_F64 and s3 < np.inf
    return ok


def _t_row_stats(p, q, stat_p, stat_q):
    k = p.shape[0]
    sp, sq = _t_chunk_stats(p, q, stat_p, stat_q, 0, min(CHUNK, k))
    for c in range(CHUNK, k, CHUNK):
        a, b = _t_chunk_stats(p, q, stat_p, stat_q, c, min(c + CHUNK, k))
        sp, sq = _t_combine(sp, sq, a, b)
    return sp, sq


def _t_plain_sums(p, q):
    """The sum pass of a row without statistics or clipping.

    Unit scales and zero shifts are compile-time constants here, so LLVM removes them from
    the loop; a row of one segment skips the loop structure (per-row overhead is what short
    rows pay for). Longer rows go through the same chunk and segment order as every mode.
    """
    k = p.shape[0]
    a_p = 0.0 if LOG_P else 1.0
    a_q = 0.0 if LOG_Q else 1.0
    if k <= SEG:
        return SEG_SUMS(
            p, q, like(p[0], a_p), like(q[0], a_q), like(p[0], -np.inf), like(p[0], np.inf)
        )
    s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
    for c in range(0, k, CHUNK):
        t0, t1, t2, t3 = _t_chunk_sums(p, q, a_p, a_q, -np.inf, np.inf, c, min(c + CHUNK, k))
        s0, s1, s2, s3 = _add4(s0, s1, s2, s3, t0, t1, t2, t3)
    return s0, s1, s2, s3


def _t_fast_sums(p, q, p_form, q_form, normalize, eps):
    """A row's float64 sums (s0, s1, s2, s3) by the fast path; s1 = 1 when the row must take
    the exact path instead (rows without statistics or eps take _t_kl_rows_plain)."""
    k = p.shape[0]
    if eps > 0.0 and (LOG_P or LOG_Q):
        return 0.0, 1.0, 1.0, 1.0  # clipping log-scores: the exact path
    stat_p = p_form == LOGITS or normalize
    stat_q = q_form == LOGITS or normalize
    sp, sq = 0.0, 0.0
    if k <= SEG:
        # one segment: the same operations as below, without the loop structure
        if stat_p or stat_q:
            sp, sq = _t_seg_stats(p, q, stat_p, stat_q)
        a_p, a_q, lo, hi = _t_row_params(stat_p, stat_q, sp, sq, eps)
        return SEG_SUMS(p, q, like(p[0], a_p), like(q[0], a_q), like(p[0], lo), like(p[0], hi))
    if stat_p or stat_q:
        sp, sq = _t_row_stats(p, q, stat_p, stat_q)
    a_p, a_q, lo, hi = _t_row_params(stat_p, stat_q, sp, sq, eps)
    s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
    for c in range(0, k, CHUNK):
        t0, t1, t2, t3 = _t_chunk_sums(p, q, a_p, a_q, lo, hi, c, min(c + CHUNK, k))
        s0, s1, s2, s3 = _add4(s0, s1, s2, s3, t0, t1, t2, t3)
    return s0, s1, s2, s3


def _t_exact_row(p, q, p_form, q_form, normalize, eps):
    """KL of one row in float64, every IEEE special value handled term by term."""
    pa, pc, plo, phi = _read_as(p, p_form, normalize, eps)
    qa, qc, qlo, qhi = _read_as(q, q_form, normalize, eps)
    acc = 0.0
    if not LOG_P and not LOG_Q:
        for j in range(p.shape[0]):
            acc += kl_term(
                clip(exact_div(p[j], pa), plo, phi), clip(exact_div(q[j], qa), qlo, qhi)
            )
    elif not LOG_P:
        for j in range(p.shape[0]):
            pj = clip(exact_div(p[j], pa), plo, phi)
            acc += kl_term_log(pj, log(pj), clip((q[j] - qa) - qc, qlo, qhi))
    elif not LOG_Q:
        for j in range(p.shape[0]):
            lp = clip((p[j] - pa) - pc, plo, phi)
            acc += kl_term_log(exp(lp), lp, log(clip(exact_div(q[j], qa), qlo, qhi)))
    else:
        for j in range(p.shape[0]):
            lp = clip((p[j] - pa) - pc, plo, phi)
            acc += kl_term_log(exp(lp), lp, clip((q[j] - qa) - qc, qlo, qhi))
    return acc


def _t_rows_block(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, out, r0):
    """Rows r0 to r0 + ROW_BLOCK of _t_kl_rows (fewer at the end).

    Each row's sums go to the block's scratch; then one loop finishes the whole block. A
    row's finish is a few dependent float64 divisions and a log, about 60 cycles of latency
    that a loop over rows pipelines and vectorizes; row by row, it cost a quarter of a 64-logit
    row. The loop always runs over the full block (unused slots hold a harmless row), so
    every row goes through the same machine code wherever it sits in a block.
    """
    rows = min(ROW_BLOCK, out.shape[0] - r0)
    stat_p = p_form == LOGITS or normalize
    stat_q = q_form == LOGITS or normalize
    sums = np.ones((4, ROW_BLOCK))
    for r in range(rows):
        i = r0 + r
        s0, s1, s2, s3 = _t_fast_sums(
            p[i * ldp : i * ldp + k], q[i * ldq : i * ldq + k], p_form, q_form, normalize, eps
        )
        sums[0, r] = s0
        sums[1, r] = s1
        sums[2, r] = s2
        sums[3, r] = s3
    kls = np.empty(ROW_BLOCK)
    for r in range(ROW_BLOCK):
        kls[r] = _t_finish(stat_p, stat_q, sums[0, r], sums[2, r], sums[3, r])
    for r in range(rows):
        i = r0 + r
        kl = kls[r]
        if not _t_ok(stat_p, stat_q, kl, sums[1, r], sums[2, r], sums[3, r]):
            kl = _t_exact_row(
                p[i * ldp : i * ldp + k], q[i * ldq : i * ldq + k], p_form, q_form, normalize, eps
            )
        out[i] = kl if divisor == 1.0 else kl / divisor


def _t_kl_rows(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, out):
    """out[i] = KL(p_i || q_i) / divisor, a block of ROW_BLOCK rows per task.

    The parallel loop only calls the block's function: numba's parfor passes then see a few
    statements instead of the inlined sums of every path (they dominated the compile time).
    """
    for b in prange((out.shape[0] + ROW_BLOCK - 1) // ROW_BLOCK):
        _t_rows_block(
            p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, out, b * ROW_BLOCK
        )


def _t_kl_rows_plain(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, out):
    """_t_kl_rows for rows without statistics or clipping (probabilities or log-probabilities,
    no normalize, no eps): nothing per row but the sum pass, for the many-short-rows case."""
    for i in prange(out.shape[0]):
        pr = p[i * ldp : i * ldp + k]
        qr = q[i * ldq : i * ldq + k]
        s0, s1, s2, s3 = _t_plain_sums(pr, qr)
        kl = s0
        if not _t_ok(False, False, kl, s1, s2, s3):
            kl = _t_exact_row(pr, qr, p_form, q_form, normalize, eps)
        out[i] = kl if divisor == 1.0 else kl / divisor


def _t_rescale(stat_p, stat_q, s0, s2, s3, dp, dq):
    """A chunk's sums, taken against the chunk's own maxima, re-expressed against the row's.

    dp and dq are the chunk's maxima minus the row's (<= 0; 0 for a side without one). Terms
    shifted by less grow by exp(dp), and each log-probability moves by dp (or dq).
    """
    if LOG_P and stat_p:
        fp = exp(dp)
        s0 = fp * (s0 + s2 * (dp - dq)) if LOG_Q else fp * (s0 + s2 * dp)
        s2 = fp * s2
    elif LOG_Q and stat_q:
        s0 = s0 - s2 * dq  # s2 is the mass of p, which weighs every log q
    if LOG_Q and stat_q:
        s3 = exp(dq) * s3
    return s0, s2, s3


def _t_kl_rows_split(p, ldp, q, ldq, k, p_form, q_form, normalize, eps, divisor, out):
    """A few long rows: (row, chunk) tasks over the threads, combined in the row order above.

    Log-score sides take no statistics pass: each chunk is shifted by its own maxima (the
    online log-sum-exp) and rescaled to the row's when the chunks are combined, so the data is
    read once, while a chunk is in cache. A normalized probability side needs its row's mass
    before any term (eps clips after normalizing): a statistics pass first, reading twice.
    """
    n = out.shape[0]
    chunks = (k + CHUNK - 1) // CHUNK
    stat_p = p_form == LOGITS or normalize
    stat_q = q_form == LOGITS or normalize
    fast = not (eps > 0.0 and (LOG_P or LOG_Q))
    two_pass = (stat_p and not LOG_P) or (stat_q and not LOG_Q)
    params = np.zeros((n, 4))
    if fast and two_pass:
        stats = np.zeros((n, chunks, 2))
        for t in prange(n * chunks):
            i, c = t // chunks, t % chunks
            a, b = _t_chunk_stats(
                p[i * ldp : i * ldp + k],
                q[i * ldq : i * ldq + k],
                stat_p,
                stat_q,
                c * CHUNK,
                min(c * CHUNK + CHUNK, k),
            )
            stats[i, c, 0] = a
            stats[i, c, 1] = b
        for i in range(n):
            sp, sq = stats[i, 0, 0], stats[i, 0, 1]
            for c in range(1, chunks):
                sp, sq = _t_combine(sp, sq, stats[i, c, 0], stats[i, c, 1])
            a_p, a_q, lo, hi = _t_row_params(stat_p, stat_q, sp, sq, eps)
            params[i, 0] = a_p
            params[i, 1] = a_q
            params[i, 2] = lo
            params[i, 3] = hi
    # per (row, chunk): the 4 sums, then the chunk's maxima (one-pass only)
    sums = np.zeros((n, chunks, 6))
    if fast:
        for t in prange(n * chunks):
            i, c = t // chunks, t % chunks
            pr = p[i * ldp : i * ldp + k]
            qr = q[i * ldq : i * ldq + k]
            start, stop = c * CHUNK, min(c * CHUNK + CHUNK, k)
            a, b = 0.0, 0.0
            if two_pass:
                a_p, a_q, lo, hi = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
            else:
                if stat_p or stat_q:
                    a, b = _t_chunk_stats(pr, qr, stat_p, stat_q, start, stop)
                a_p, a_q, lo, hi = _t_row_params(stat_p, stat_q, a, b, eps)
            s0, s1, s2, s3 = _t_chunk_sums(pr, qr, a_p, a_q, lo, hi, start, stop)
            sums[i, c, 0] = s0
            sums[i, c, 1] = s1
            sums[i, c, 2] = s2
            sums[i, c, 3] = s3
            sums[i, c, 4] = a
            sums[i, c, 5] = b
    for i in prange(n):
        top_p, top_q = sums[i, 0, 4], sums[i, 0, 5]
        for c in range(1, chunks):
            top_p, top_q = _t_combine(top_p, top_q, sums[i, c, 4], sums[i, c, 5])
        s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
        for c in range(chunks):
            t0, t2, t3 = sums[i, c, 0], sums[i, c, 2], sums[i, c, 3]
            if not two_pass:
                t0, t2, t3 = _t_rescale(
                    stat_p, stat_q, t0, t2, t3, sums[i, c, 4] - top_p, sums[i, c, 5] - top_q
                )
            s0, s1, s2, s3 = _add4(s0, s1, s2, s3, t0, sums[i, c, 1], t2, t3)
        kl = _t_finish(stat_p, stat_q, s0, s2, s3)
        if not (fast and _t_ok(stat_p, stat_q, kl, s1, s2, s3)):
            kl = _t_exact_row(
                p[i * ldp : i * ldp + k], q[i * ldq : i * ldq + k], p_form, q_form, normalize, eps
            )
        out[i] = kl / divisor


SEG_LANES = Unbound("the pair's _t_seg_lanes")
SEG_SUMS = Unbound("the pair's _t_seg_sums")

_HELPER_TEMPLATES = (
    "_t_seg_stats",
    "_t_combine",
    "_t_chunk_stats",
    "_t_row_params",
    "_t_chunk_sums",
    "_t_finish",
    "_t_ok",
    "_t_rescale",
    "_t_row_stats",
    "_t_plain_sums",
    "_t_fast_sums",
    "_t_exact_row",
    "_t_rows_block",
)
#: helpers compiled as functions of their own, not inlined into their callers' numba IR
_CALLED = ("_t_exact_row", "_t_rows_block", "_t_chunk_sums", "_t_chunk_stats")
_KERNEL_TEMPLATES = ("_t_kl_rows", "_t_kl_rows_plain", "_t_kl_rows_split")


def _family(tag: str, log_p: bool, log_q: bool, terms) -> dict:
    """Specialize every template for one form pair; returns the pair's kernels by template."""
    bindings = {
        "LOG_P": log_p,
        "LOG_Q": log_q,
        "TERMS": terms,
        "CLIPS": not (log_p or log_q),
        # pl: the mass of p weighs log q's shift; lp, ll: the mass of exp(p)
        "MASS_P": log_p or log_q,
        "MASS_Q": log_q,
    }
    lanes_fn = specialize(_t_seg_lanes, f"seg_lanes_{tag}", bindings)
    bindings["SEG_LANES"] = njit(**_HELPER)(lanes_fn)
    bindings["SEG_SUMS"] = njit(**_HELPER)(specialize(_t_seg_sums, f"seg_sums_{tag}", bindings))
    for name in _HELPER_TEMPLATES:
        fn = specialize(globals()[name], f"{name[3:]}_{tag}", bindings)
        bindings[name] = njit(**(_CALL if name in _CALLED else _HELPER))(fn)
    kernels = {"_t_exact_row": bindings["_t_exact_row"]}
    for name in _KERNEL_TEMPLATES:
        fn = specialize(globals()[name], f"{name[3:]}_{tag}_cpu", bindings)
        kernels[name] = njit(**_KERNEL)(fn)
    return kernels


#: (p is log-scores, q is log-scores) -> the pair's kernels (and exact row) by template name
KL_KERNELS = {
    (False, False): _family("pp", False, False, _terms_pp),
    (False, True): _family("pl", False, True, _terms_pl),
    (True, False): _family("lp", True, False, _terms_lp),
    (True, True): _family("ll", True, True, _terms_ll),
}


# The flat kernel's rows with special values fall back to the probabilities pair's exact row.
_exact_row_pp = KL_KERNELS[(False, False)]["_t_exact_row"]


K = Unbound("a flat kernel's row length")


def _t_flat_sums(terms, sums):
    """sums[i] = the K terms of row i added in order. K is a constant, so the loop over rows
    vectorizes (K-strided loads); with a runtime k, only the inner K-loop could, and it is
    shorter than a vector. Each row's terms are added in order, in the vector body and the
    remainder alike (the lanes are rows)."""
    for i in range(sums.shape[0]):
        acc = like(terms[0], 0.0)
        for j in range(K):
            acc += terms[i * K + j]
        sums[i] = acc


FLAT_SUMS = Unbound("the row sums of _t_flat_sums compiled for K")


def _t_flat_block(x, ld, r0, r1):
    """Rows ``r0:r1`` (at stride ``ld``) as one contiguous run of ``(r1 - r0) * K`` elements:
    a view when the rows are contiguous, else a copy (strided rows, or one repeated row)."""
    if ld == K:
        return x[r0 * K : r1 * K]
    run = np.empty((r1 - r0) * K, dtype=x.dtype)
    for i in range(r1 - r0):
        for j in range(K):
            run[i * K + j] = x[(r0 + i) * ld + j]
    return run


FLAT_BLOCK = Unbound("_t_flat_block compiled for K")


def _t_flat_rows(p, ldp, q, ldq, divisor, out, r0):
    """Rows r0 to r0 + FLAT_BLOCK_ROWS (fewer at the end) of k == K probabilities.

    Rows shorter than a vector leave a row-by-row loop scalar; the terms of a block of rows
    are one contiguous run, so compute them flat, then add each row's terms in order (one
    vectorized loop over the rows), then recompute the rare rows that are not finite.
    Strided or repeated rows are first copied into a contiguous run, a block at a time: the
    same loops then see the same values, so a row's bits do not depend on its layout (a
    strided matrix and one of its rows alone give the same result).
    """
    r1 = min(r0 + FLAT_BLOCK_ROWS, out.shape[0])
    pb = FLAT_BLOCK(p, ldp, r0, r1)
    qb = FLAT_BLOCK(q, ldq, r0, r1)
    terms = np.empty(pb.shape[0], dtype=p.dtype)
    for j in range(pb.shape[0]):
        terms[j] = ratio_guard(kl_term_fast(pb[j], qb[j]), pb[j], qb[j])
    sums = np.empty(r1 - r0, dtype=p.dtype)
    FLAT_SUMS(terms, sums)
    for i in range(r1 - r0):
        kl = np.float64(sums[i])
        if not abs(kl) < np.inf:  # NaN from ratio_guard, a zero in q, or a NaN
            row = i * K
            kl = _exact_row_pp(pb[row : row + K], qb[row : row + K], PROBS, PROBS, False, 0.0)
        out[r0 + i] = kl / divisor


def _flat_rows(k: int):
    sums = njit(**_CALL)(specialize(_t_flat_sums, f"flat_sums_{k}", {"K": k}))
    block = njit(**_HELPER)(specialize(_t_flat_block, f"flat_block_{k}", {"K": k}))
    bindings = {"K": k, "FLAT_SUMS": sums, "FLAT_BLOCK": block}
    return njit(**_CALL)(specialize(_t_flat_rows, f"flat_rows_{k}", bindings))


FLAT_ROWS = Unbound("the block function of rows of K (a link of _flat_chain)")
FLAT_NEXT = Unbound("the next link of _flat_chain")


def _t_flat_pick(p, ldp, q, ldq, k, divisor, out, r0):
    """The block function of rows of k == K, else the next link of the chain."""
    if k == K:
        FLAT_ROWS(p, ldp, q, ldq, divisor, out, r0)
    else:
        FLAT_NEXT(p, ldp, q, ldq, k, divisor, out, r0)


@njit(**_HELPER)
def _flat_end(p, ldp, q, ldq, k, divisor, out, r0):
    pass  # k > FLAT_MAX_K never reaches the flat mode


def _flat_chain():
    chain = _flat_end
    for k in range(FLAT_MAX_K, 0, -1):
        bindings = {"K": k, "FLAT_ROWS": _flat_rows(k), "FLAT_NEXT": chain}
        chain = njit(**_HELPER)(specialize(_t_flat_pick, f"flat_pick_{k}", bindings))
    return chain


FLAT_PICK = _flat_chain()


@njit(**_KERNEL)
def kl_rows_flat(p, ldp, q, ldq, k, divisor, out):
    """k <= FLAT_MAX_K probability rows, a block of FLAT_BLOCK_ROWS per task: one parallel
    kernel for every such k, calling the block function compiled for its k (a kernel per k
    cost a parallel loop's compile each)."""
    for b in prange((out.shape[0] + FLAT_BLOCK_ROWS - 1) // FLAT_BLOCK_ROWS):
        FLAT_PICK(p, ldp, q, ldq, k, divisor, out, b * FLAT_BLOCK_ROWS)


MODE_FLAT = 0
MODE_SPLIT = 1
MODE_PLAIN = 2
MODE_ROWS = 3
#: the mode codes of kl_mode, by name
MODES = {MODE_FLAT: "flat", MODE_SPLIT: "split", MODE_PLAIN: "rows", MODE_ROWS: "rows"}


@njit(**_HELPER)
def kl_mode(p_form, q_form, k, normalize, eps):
    """Which KL kernel scores a call: MODE_FLAT, MODE_SPLIT, MODE_PLAIN or MODE_ROWS.

    One decision for the Python driver (through ``py_func``) and the C API's cfuncs, so both
    run the same machine code and give the same bits.
    """
    log_p = p_form != PROBS
    log_q = q_form != PROBS
    # Not the layout (row strides): a row's kernel, hence its bits, must not depend on
    # whether it arrives alone or inside a strided matrix.
    if not (log_p or log_q) and k <= FLAT_MAX_K and not normalize and eps == 0.0:
        return MODE_FLAT
    if k >= 2 * CHUNK:
        # Long rows always go by (row, chunk) tasks, whatever n: a few rows still use every
        # core, and the mode (hence the exact machine code, hence the bits) depends on k only.
        return MODE_SPLIT
    if p_form != LOGITS and q_form != LOGITS and not normalize and eps == 0.0:
        return MODE_PLAIN
    return MODE_ROWS


def kl_kernel(
    p_form: int, q_form: int, n: int, k: int, ldp: int, ldq: int, normalize: bool, eps: float
):
    """The kernel for one call and its leading arguments (the driver adds the rest)."""
    # the plain function (under NUMBA_DISABLE_JIT, njit returns it as is)
    mode = getattr(kl_mode, "py_func", kl_mode)(p_form, q_form, k, normalize, eps)
    if mode == MODE_FLAT:
        return "flat", kl_rows_flat
    family = KL_KERNELS[(p_form != PROBS, q_form != PROBS)]
    kernel = {MODE_SPLIT: "_t_kl_rows_split", MODE_PLAIN: "_t_kl_rows_plain"}.get(
        mode, "_t_kl_rows"
    )
    return MODES[mode], family[kernel]


# --- validation --------------------------------------------------------------------------

#: Row status codes of check_rows; the driver turns them into messages.
ROW_OK = 0
ROW_NAN = 1
ROW_NEGATIVE = 2
ROW_BAD_SUM = 3
ROW_POS_INF = 4

#: What check_rows checks of a row's total mass.
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
    if form == PROBS:
        total = _row_sum_exact(x)
    else:
        m, c = _row_logsumexp_exact(x)
        total = exp(m + c)
    if sum_check == SUM_POSITIVE:
        return ROW_OK if total > 0.0 else ROW_BAD_SUM
    return ROW_OK if abs(total - 1.0) <= tol else ROW_BAD_SUM


@njit(**_KERNEL)
def check_rows(x, ld, k, form, sum_check, tol, status):
    """status[i] = the ROW_* code of row i."""
    for i in prange(status.shape[0]):
        status[i] = _check_row(x[i * ld : i * ld + k], form, sum_check, tol)
