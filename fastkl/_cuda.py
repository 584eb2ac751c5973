"""CUDA kernels: a group of threads per row around the scalar terms of ``_math``.

Imported only for ``device="cuda"`` or CUDA inputs (``_cuda_driver``), never with fastkl.

Two kernel templates serve every row-wise function (KL and the family), each specialized per
divergence, forms, row shape and compute precision:

* the **fast** kernel (``_t_fast_rows_cuda``) computes in the inputs' precision: float32 for
  float32, float16 and bfloat16 inputs, float64 for float64, with the fast terms of ``_math``
  and the fast functions of ``_cuda_device``. A value outside a fast term's assumptions (a
  zero where a log is taken, a subnormal, an infinity, a NaN, a negative probability) makes
  the term NaN, and the NaN rides in the row's sum: the row's result is not finite;
* the **exact** kernel (``_t_rows_cuda``) then recomputes exactly those rows (it skips every
  row whose fast result is finite) with the float64 exact terms of ``_math``, every IEEE
  special value handled term by term. It is also the only kernel for the few calls the fast
  one does not take (``eps`` with log-score sides or with ``normalize``, as on the CPU).

A row is scored by a *group* of threads. Rows of up to ``WARP_MAX_K`` elements take a group of
at most a warp, sized so that each lane reads about ``UNROLL`` vectors of each side (several
short rows per warp: a row of 128 float32 is 8 lanes, 4 rows per warp); longer rows take a
block each (``LONG_THREADS``). Lane ``l`` reads vectors ``l, l + G, ...`` of ``WIDTH`` elements
(16 bytes: ``ld.global.nc.v4`` for float32), ``UNROLL`` vectors of each side before it uses
any, so every lane keeps several loads in flight. Blocks take rows in a grid-stride loop;
every thread of a block runs the same number of iterations (a group past the last row reduces
nothing), so no barrier or shuffle is ever reached by part of a group.

How the fast kernel reads a row, by divergence and forms (``plan``):

* **moments**, one pass for everything but Jensen-Shannon: KL, cross-entropy, entropy, Jeffreys
  and generalized KL are linear in log p and log q (their spec's ``Terms.moments``), so each lane
  accumulates the moments and the masses with running maxima for the log-score sides (an online
  log-sum-exp, rescaled when a maximum grows); the group then takes the maxima, each lane
  rescales its sums to them once, the sums are added, and ``_math``'s ``*_from_moments`` gives
  the row. Each byte of a logits row is read once.
* **terms**, one pass of ``_math``'s fast terms where no side needs row statistics
  (probabilities and log-probabilities; clipped probabilities with ``eps``).
* **two passes** for Jensen-Shannon with logits (or ``normalize``): the statistics, then the
  terms, whose logarithm mixes the two sides.

Sums: terms add in the compute precision within a batch of ``UNROLL * WIDTH`` elements, then
in float64; the lanes' sums are added in float64 by warp shuffles (``shfl_xor_sync``) and across
the warps of a block through shared memory, every lane in the same order, so results are
bitwise the same on every run. The CUDA simulator has no warp-level operations: under it every
group reduces through shared memory with barriers (a tree over the group's slots), the same
kernels with the same per-lane work, which is what CI runs.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from typing import Any

try:  # numba's own numba.cuda is deprecated and lacks what the kernels use
    NUMBA_CUDA_VERSION = importlib.metadata.version("numba-cuda")
except importlib.metadata.PackageNotFoundError:
    raise ImportError(
        "the CUDA backend needs NVIDIA's numba-cuda: pip install 'fastkl[cuda]'"
    ) from None

import numba
from numba import cuda

from . import _math
from ._config import Unbound, specialize
from ._cuda_device import EXACT, FAST32, FAST64, LOADS, SIMULATOR, device, device_sync, exp, f64
from ._cuda_device import log as log
from ._math import LOGITS, PROBS
from .divergences import Terms

# --- tunables (one place; tests shrink them to force multi-block and grid-stride launches) ----

#: Threads per block for rows of up to WARP_MAX_K elements (several rows per warp).
THREADS = 256
#: Threads per row at most for rows of up to WARP_MAX_K elements: a warp. Only the simulator
#: may take fewer (tests do: the simulator runs every thread as a Python thread).
ROW_THREADS = 32
#: The longest row scored by a group of at most a warp; longer rows take a block each.
WARP_MAX_K = 2048
#: Threads per block (and per row) for long rows.
LONG_THREADS = 512
#: Vectors of each side a lane loads before it uses any (bytes in flight per lane).
UNROLL = 4
#: Bytes per vector load.
VECTOR_BYTES = 16
#: Resident threads per multiprocessor the grid is sized for; rows beyond are taken in a
#: grid-stride loop.
THREADS_PER_SM = 2048
#: Blocks per launch at most, whatever the GPU (None: what THREADS_PER_SM fills).
MAX_BLOCKS: int | None = None
#: Rows summed per block by the reduction kernel (the driver's RowSum block).
SUM_ROWS = 4096
WARP = 32
FULL_MASK = 0xFFFFFFFF

NEG_INF = -math.inf
NAN = math.nan
TINY64 = 2.2250738585072014e-308
#: A log-probability below this weighs exp(LOW) = 0: it is clamped where it multiplies its own
#: weight, so that a -inf log-probability (a zero) gives 0 * LOW = 0, not 0 * -inf = NaN.
LOW = -1e4


clip = EXACT.clip
FINISH = EXACT.finish_row  # clamp at 0, or the square root of a distance
KL = EXACT.kl_term
KL_LOG = EXACT.kl_term_log


def _t_kl4(p, q, lp, lq):
    """KL's exact term in the family's signature: from the probabilities when both sides are
    probabilities (the quotient keeps near-equal p and q precise), else from the logs."""
    if LOG_P or LOG_Q:
        return KL_LOG(p, lp, lq)
    return KL(p, q)


def _t_kl_fast(p, q, lp, lq, lr):
    """KL's fast term in the family's signature, guarded as the CPU's per-pair terms are: NaN
    where the log of a probability side is outside the fast log's domain."""
    if LOG_P or LOG_Q:
        return _t_guarded(KL_LOG_FAST(p, lp, lq), p, q, LOG_P, LOG_Q)
    return GUARD(KL_FAST(p, q), p, q)


def _exact_term(terms: Terms, log_p: bool, log_q: bool) -> tuple[Any, bool, bool]:
    """(the exact device term, whether it reads q, whether it reads a probability's log)."""
    if terms.exact is not None:
        return getattr(EXACT, terms.exact.__name__), terms.reads_q, terms.needs_log
    bindings = {"LOG_P": log_p, "LOG_Q": log_q, "KL": KL, "KL_LOG": KL_LOG}
    term = device(specialize(_t_kl4, f"kl4_{int(log_p)}{int(log_q)}", bindings))
    return term, True, log_p or log_q


# --- reductions of the exact kernel: a float64 sum, and a log-sum-exp (max, sum) -------------
#
# Each returns the group's total to every lane. ``tid`` is the thread's index in the block,
# ``lane`` its index in the group, ``sm``/``sm2`` shared scratch of the block.


@device
def _lse_merge(m1, s1, m2, s2):
    """Two partial log-sum-exps (max, sum of exp(x - max)) as one. A maximum is never NaN (a
    NaN element turns the sum NaN instead); a side without elements has (-inf, 0)."""
    m = m1 if m1 >= m2 else m2
    if m == -math.inf:
        return m, s1 + s2
    return m, s1 * exp(m1 - m) + s2 * exp(m2 - m)


def _t_warp_sum(v, tid, lane, sm, sm2):
    """Butterfly over the 32 lanes of a warp: every lane ends with the same total."""
    off = WARP // 2
    while off > 0:
        v += cuda.shfl_xor_sync(FULL_MASK, v, off)
        off //= 2
    return v


def _t_warp_lse(m, s, tid, lane, sm, sm2):
    off = WARP // 2
    while off > 0:
        m2 = cuda.shfl_xor_sync(FULL_MASK, m, off)
        s2 = cuda.shfl_xor_sync(FULL_MASK, s, off)
        m, s = _lse_merge(m, s, m2, s2)
        off //= 2
    return m, s


def _t_block_sum(v, tid, lane, sm, sm2):
    """A block's total: warp butterflies, then the warps' totals through shared memory, added
    by every thread in the same order."""
    v = _t_warp_sum(v, tid, lane, sm, sm2)
    if tid % WARP == 0:
        sm[tid // WARP] = v
    cuda.syncthreads()
    total = sm[0]
    for w in range(1, GROUP // WARP):
        total += sm[w]
    cuda.syncthreads()  # sm is reused by the next reduction
    return total


def _t_block_lse(m, s, tid, lane, sm, sm2):
    m, s = _t_warp_lse(m, s, tid, lane, sm, sm2)
    if tid % WARP == 0:
        sm[tid // WARP] = m
        sm2[tid // WARP] = s
    cuda.syncthreads()
    m, s = sm[0], sm2[0]
    for w in range(1, GROUP // WARP):
        m, s = _lse_merge(m, s, sm[w], sm2[w])
    cuda.syncthreads()
    return m, s


def _t_shared_sum(v, tid, lane, sm, sm2):
    """A group's total through shared memory (the simulator's reduction, and the block sums'):
    every lane writes its value, then adds the group's GROUP slots in order; two barriers,
    whatever the group's size (the simulator's cost is in its barriers)."""
    sm[tid] = v
    cuda.syncthreads()
    first = tid - lane
    total = sm[first]
    for w in range(1, GROUP):
        total += sm[first + w]
    cuda.syncthreads()
    return total


def _t_shared_lse(m, s, tid, lane, sm, sm2):
    sm[tid] = m
    sm2[tid] = s
    cuda.syncthreads()
    first = tid - lane
    m, s = sm[first], sm2[first]
    for w in range(1, GROUP):
        m, s = _lse_merge(m, s, sm[first + w], sm2[first + w])
    cuda.syncthreads()
    return m, s


# --- the exact kernel -------------------------------------------------------------------------
#
# Bound per specialization: LOG_P, LOG_Q (log-score sides), HAS_Q (False for entropy),
# NEEDS_LOG (the term reads the log of a probability side), TERM, GROUP (threads per row),
# BLOCK (threads per block), SHARED (slots of shared scratch), SUM and LSE (the reductions),
# REDO (score only the fast kernel's flagged rows, see ``flags``), LOAD1 (one element as
# float64, bfloat16 bits decoded).
#
# ``flags`` (int64) is what the fast kernel tells the exact one: flags[0] counts the rows it
# left non-finite, and flags[1:] lists the first of them (as many as fit). The exact kernel
# with REDO then returns at once where the count is 0, scores the listed rows where all fit,
# and else checks every row's value in ``out``. Without REDO, flags is not read.

LOG_P = Unbound("whether p is log-scores")
LOG_Q = Unbound("whether q is log-scores")
HAS_Q = Unbound("whether the terms read q")
NEEDS_LOG = Unbound("whether the exact term reads the log of a probability side")
GROUP = Unbound("threads per row")
BLOCK = Unbound("threads per block")
SHARED = Unbound("slots of shared scratch")
TERM = Unbound("the exact term")
SUM = Unbound("the group's float64 sum")
LSE = Unbound("the group's log-sum-exp")
REDO = Unbound("whether the exact kernel scores only the flagged rows")
LOAD1 = Unbound("one element as float64")


def _t_elem(x, i, j):
    """Element j of row i as float64."""
    return LOAD1(x, i, j, f64(0.0))[0]


def _t_lse_part(x, i, kk, lane):
    """This lane's (max, sum of exp(x - max)) over its elements of row i: online, so the
    row is read once. -inf elements weigh 0; a NaN makes the sum NaN; +inf gives NaN later."""
    m = -math.inf
    s = f64(0.0)
    for j in range(lane, kk, GROUP):
        v = _t_elem(x, i, j)
        if v > m:
            s = s * exp(m - v) + 1.0
            m = v
        elif v != -math.inf:
            s += exp(v - m)
    return m, s


def _t_mass_part(x, i, kk, lane):
    s = f64(0.0)
    for j in range(lane, kk, GROUP):
        s += _t_elem(x, i, j)
    return s


def _t_side_stat(x, i, kk, lane, tid, sm, sm2, log_side):
    """What a side's terms need of row i, as (a, c): a log-score side's maximum and the log
    of its shifted mass (kept apart: ``m + c`` as one number rounds c away when |m| is
    large), a probability side's mass (its divisor) and 0."""
    if log_side:
        m, s = _t_lse_part(x, i, kk, lane)
        m, s = LSE(m, s, tid, lane, sm, sm2)
        return m, log(s)
    return SUM(_t_mass_part(x, i, kk, lane), tid, lane, sm, sm2), f64(0.0)


def _t_read(x, i, j, a, c, lo, hi, log_side):
    """Element j of row i as (probability, log): a log-score as ``(x - a) - c``, or a
    probability divided by ``a`` (its row's mass, or 1), then clipped (infinite bounds clip
    nothing and keep NaN). A probability's log is taken only where the term reads it.

    A division, not a product with ``1 / a``: the reciprocal of a subnormal mass overflows
    to inf (the CPU paths divide too)."""
    if log_side:
        lx = clip((_t_elem(x, i, j) - a) - c, lo, hi)
        return exp(lx), lx
    px = clip(_t_elem(x, i, j) / a, lo, hi)
    return px, (log(px) if NEEDS_LOG else px)


def _t_rows_cuda(
    p, p_step, q, q_step, k, p_form, q_form, normalize, eps, divisor, post, out, flags
):
    """out[i] = D(p[i * p_step] || q[i * q_step]) / divisor, then ``post``: a group of GROUP
    threads per row, rows in a grid-stride loop (see the module docstring). With REDO, only
    the rows the fast kernel flagged (``flags``)."""
    sm = cuda.shared.array(SHARED, numba.float64)
    sm2 = cuda.shared.array(SHARED, numba.float64)
    n = out.shape[0]
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = BLOCK // GROUP
    stat_p = p_form == LOGITS or normalize
    stat_q = q_form == LOGITS or normalize
    rows = n
    listed = False
    if REDO:
        flagged = flags[0]
        if flagged == 0:
            return  # the whole grid: every row was scored by the fast kernel
        listed = flagged < flags.shape[0]
        if listed:
            rows = flagged
    for first in range(cuda.blockIdx.x * groups, rows, cuda.gridDim.x * groups):
        t = first + tid // GROUP
        need = t < rows
        i = t
        if listed:
            if need:
                i = flags[1 + t]
        elif REDO:
            if need:
                done = out[i]
                need = not (abs(done) < math.inf)
            if not cuda.syncthreads_or(1 if need else 0):  # every thread of the block votes
                continue  # every row of the block's tile was scored (the whole block skips)
        kk = k if need else 0  # a group with nothing to do reduces zeros with the others
        ip = i * p_step
        iq = i * q_step
        # 1. statistics: a shift (log-score sides) or a mass (probability sides)
        a_p = f64(0.0) if LOG_P else f64(1.0)
        a_q = f64(0.0) if LOG_Q else f64(1.0)
        c_p = f64(0.0)
        c_q = f64(0.0)
        if stat_p:
            a_p, c_p = _t_side_stat(p, ip, kk, lane, tid, sm, sm2, LOG_P)
        if HAS_Q and stat_q:
            a_q, c_q = _t_side_stat(q, iq, kk, lane, tid, sm, sm2, LOG_Q)
        # clipping bounds: [eps, 1] for probabilities, [log eps, 0] for log-probabilities
        lo_p, hi_p, lo_q, hi_q = -math.inf, math.inf, -math.inf, math.inf
        if eps > 0.0:
            lo_p, hi_p = (log(eps), 0.0) if LOG_P else (eps, 1.0)
            lo_q, hi_q = (log(eps), 0.0) if LOG_Q else (eps, 1.0)
        # 2. the terms, in float64
        acc = f64(0.0)
        for j in range(lane, kk, GROUP):
            pj, lpj = _t_read(p, ip, j, a_p, c_p, lo_p, hi_p, LOG_P)
            qj = f64(1.0)
            lqj = f64(0.0)
            if HAS_Q:
                qj, lqj = _t_read(q, iq, j, a_q, c_q, lo_q, hi_q, LOG_Q)
            acc += TERM(pj, qj, lpj, lqj)
        v = SUM(acc, tid, lane, sm, sm2)
        if lane == 0 and need:
            out[i] = FINISH(v / divisor, post)


# --- the fast kernel --------------------------------------------------------------------------
#
# A lane's state over its elements of a row is six numbers (mp, mq, A, B, W1, W2): the running
# maxima of the log-score sides that are shifted by them (F), the masses of p and q (sum of
# exp(x - m) for shifted sides, of the values for probabilities) and the moments (float64).
# In the terms mode only W1 is used: the sum of the terms. Bound per specialization:
#   F (the compute precision), WIDTH, UNROLL, UW (= UNROLL * WIDTH), STEP (= GROUP * WIDTH),
#   SPAN (= STEP * UNROLL), LOAD_P, LOAD_Q (vector loads of WIDTH), LOAD1;
#   LOG_P, LOG_Q, HAS_Q; SHIFT_P, SHIFT_Q (running maxima); NORM_P, NORM_Q (normalized by
#   their mass: logits, or ``normalize``); CLIP (terms mode with eps);
#   M1, M2 (moments in use), M1_Q, M2_Q (weighted by q), M1_A, M1_B, M2_A, M2_B (coefficients
#   of log p and log q), FROM_MOMENTS, NONNEG (a value >= 0 for two normalized sides);
#   TERM_FAST; EXP, LOG_CORE, LOG_RATIO, GUARD, LIKE, CLIPF (the precision's functions);
#   BATCH, ELEMENT, SWEEP, REDUCE and the other _t_ names, bound to their versions.

F = Unbound("F: see above")
WIDTH = Unbound("WIDTH: see above")
STEP = Unbound("STEP: see above")
SPAN = Unbound("SPAN: see above")
UW = Unbound("UW: see above")
LOAD_P = Unbound("LOAD_P: see above")
LOAD_Q = Unbound("LOAD_Q: see above")
SHIFT_P = Unbound("SHIFT_P: see above")
SHIFT_Q = Unbound("SHIFT_Q: see above")
NORM_P = Unbound("NORM_P: see above")
NORM_Q = Unbound("NORM_Q: see above")
CLIP = Unbound("CLIP: see above")
M1 = Unbound("M1: see above")
M2 = Unbound("M2: see above")
M1_Q = Unbound("M1_Q: see above")
M2_Q = Unbound("M2_Q: see above")
M1_A = Unbound("M1_A: see above")
M1_B = Unbound("M1_B: see above")
M2_A = Unbound("M2_A: see above")
M2_B = Unbound("M2_B: see above")
NONNEG = Unbound("NONNEG: see above")
FROM_MOMENTS = Unbound("FROM_MOMENTS: see above")
TERM_FAST = Unbound("TERM_FAST: see above")
EXP = Unbound("EXP: see above")
LOG_CORE = Unbound("LOG_CORE: see above")
LOG_RATIO = Unbound("LOG_RATIO: see above")
GUARD = Unbound("GUARD: see above")
LIKE = Unbound("LIKE: see above")
CLIPF = Unbound("CLIPF: see above")
KL_FAST = Unbound("KL_FAST: see above")
KL_LOG_FAST = Unbound("KL_LOG_FAST: see above")
USE_A = Unbound("USE_A: see above")
USE_B = Unbound("USE_B: see above")
WARP_GROUP = Unbound("WARP_GROUP: see above")


ELEMENT = Unbound("ELEMENT: bound per specialization")
BATCH = Unbound("BATCH: bound per specialization")
SWEEP = Unbound("SWEEP: bound per specialization")
REDUCE = Unbound("REDUCE: bound per specialization")
STATS_SWEEP = Unbound("STATS_SWEEP: bound per specialization")
STATS_REDUCE = Unbound("STATS_REDUCE: bound per specialization")
ROW_VALUE = Unbound("ROW_VALUE: bound per specialization")


def _t_neutral():
    """The state of a lane that has read nothing."""
    return F(NEG_INF), F(NEG_INF), f64(0.0), f64(0.0), f64(0.0), f64(0.0)


def _t_shift(m_old, m_new):
    """How a side's sums move when its running maximum goes from m_old to m_new: (the growth,
    in float64, and the factor exp(m_old - m_new) its weights scale by)."""
    if m_old == m_new:
        return f64(0.0), f64(1.0)
    if m_old == NEG_INF:  # nothing summed yet: the sums are 0
        return f64(0.0), f64(0.0)
    d = f64(m_new) - f64(m_old)
    return d, exp(-d)


def _t_rescale(s, mpn, mqn):
    """State s with its maxima raised to (mpn, mqn): masses scaled by their side's factor, a
    moment's shifted logs lowered by the growths (weighted by its mass) and its weights
    scaled."""
    mp, mq, a, b, w1, w2 = s
    dp, fp = f64(0.0), f64(1.0)
    dq, fq = f64(0.0), f64(1.0)
    if SHIFT_P:
        dp, fp = _t_shift(mp, mpn)
    if SHIFT_Q:
        dq, fq = _t_shift(mq, mqn)
    if M1:
        mass = b if M1_Q else a
        if mass != 0.0:
            w1 = w1 - (M1_A * dp + M1_B * dq) * mass
        w1 = w1 * (fq if M1_Q else fp)
    if M2:
        mass = b if M2_Q else a
        if mass != 0.0:
            w2 = w2 - (M2_A * dp + M2_B * dq) * mass
        w2 = w2 * (fq if M2_Q else fp)
    return mpn, mqn, a * fp, b * fq, w1, w2


def _t_integrand(q_weight, a, b, lpw, lqw, d):
    """a log p + b log q for a moment with (a, b) one of (1, -1), (0, +-1), (+-1, 0); d is
    log p - log q computed for the moment's weight side."""
    if a == 1.0 and b == -1.0:
        return d
    if a == 0.0:
        return lqw if b == 1.0 else -lqw
    return lpw if a == 1.0 else -lpw


def _t_guarded(t, w, o, w_log, o_log):
    """A moment's term t (weight value w, the other side's value o): NaN where the fast
    functions are not exact for the probabilities (the log of a probability side is taken)."""
    if not w_log:
        if o_log:
            return t if w >= LIKE(w, 0.0) else LIKE(w, NAN)  # not a negative or NaN weight
        return GUARD(t, w, o)
    if not o_log:
        return GUARD(t, w, o)
    return t


def _t_weigh(x, m, log_side, shift):
    """A side's element as (its weight, its log, the log clamped at LOW for the terms its own
    weight multiplies): a log-score shifted by the running maximum m (with ``shift``) and
    exponentiated, or a probability and its log."""
    if log_side:
        lx = x - m if shift else x
        low = LIKE(x, LOW)
        return EXP(lx), lx, (low if lx < low else lx)
    lx = LOG_CORE(x)
    return x, lx, lx


def _t_moment(on_q, a, b, wp, wq, lp, lq, lpc, lqc, dp, dq, q_log):
    """A moment's term: its integrand weighted by q (``on_q``) or by p, guarded."""
    if on_q:
        return _t_guarded(wq * _t_integrand(True, a, b, lp, lqc, dq), wq, wp, q_log, LOG_P)
    return _t_guarded(wp * _t_integrand(False, a, b, lpc, lq, dp), wp, wq, LOG_P, q_log)


def _t_moment_element(x, y, mp, mq):
    """Element (x of p, y of q) as (p's weight, q's weight, moment 1's term, moment 2's)."""
    wp, lp, lpc = _t_weigh(x, mp, LOG_P, SHIFT_P)
    wq, lq, lqc = LIKE(x, 1.0), LIKE(x, 0.0), LIKE(x, 0.0)
    if HAS_Q:
        wq, lq, lqc = _t_weigh(y, mq, LOG_Q, SHIFT_Q)
    if LOG_P or LOG_Q:
        dp = lpc - lq  # weighted by p, whose log is clamped
        dq = lp - lqc
    else:
        dp = LOG_RATIO(wp, wq)  # near-equal p and q keep their precision
        dq = dp
    q_log = LOG_Q and HAS_Q
    t1 = LIKE(x, 0.0)
    t2 = t1
    if M1:
        t1 = _t_moment(M1_Q, M1_A, M1_B, wp, wq, lp, lq, lpc, lqc, dp, dq, q_log)
    if M2:
        t2 = _t_moment(M2_Q, M2_A, M2_B, wp, wq, lp, lq, lpc, lqc, dp, dq, q_log)
    return wp, wq, t1, t2


def _t_moments_batch(s, xp, xq, j, kk, masked, a_p, c_p, a_q, c_q, lo, hi):
    """A batch of UNROLL vectors of this lane into its state: the batch's maxima first (the
    state is rescaled once if they grow), then the weights and moments in F, added to the
    state in float64."""
    mp = s[0]
    mq = s[1]
    if SHIFT_P or SHIFT_Q:
        bp = mp
        bq = mq
        for u in range(UNROLL):
            for t in range(WIDTH):
                if (not masked) or j + u * STEP + t < kk:
                    if SHIFT_P and xp[u * WIDTH + t] > bp:
                        bp = xp[u * WIDTH + t]
                    if SHIFT_Q and xq[u * WIDTH + t] > bq:
                        bq = xq[u * WIDTH + t]
        if bp != mp or bq != mq:
            s = _t_rescale(s, bp, bq)
            mp = bp
            mq = bq
    sa = F(0.0)
    sb = F(0.0)
    s1 = F(0.0)
    s2 = F(0.0)
    for u in range(UNROLL):
        for t in range(WIDTH):
            if (not masked) or j + u * STEP + t < kk:
                wp, wq, t1, t2 = ELEMENT(xp[u * WIDTH + t], xq[u * WIDTH + t], mp, mq)
                if USE_A:
                    sa += wp
                if USE_B:
                    sb += wq
                s1 += t1
                s2 += t2
    return mp, mq, s[2] + f64(sa), s[3] + f64(sb), s[4] + f64(s1), s[5] + f64(s2)


def _t_fast_read(x, a, c, log_side, lo, hi):
    """A side's element as (its probability, its log): a log-score read as ``(x - a) - c``,
    a probability as ``x * a`` (clipped with CLIP)."""
    if log_side:
        lx = (x - a) - c
        return EXP(lx), lx
    px = x * a
    if CLIP:
        px = CLIPF(px, lo, hi)
    return px, LOG_CORE(px)


def _t_terms_element(x, y, a_p, c_p, a_q, c_q, lo, hi):
    """Element (x of p, y of q) as a fast term of the divergence."""
    p, lp = _t_fast_read(x, a_p, c_p, LOG_P, lo, hi)
    q, lq = LIKE(x, 1.0), LIKE(x, 0.0)
    if HAS_Q:
        q, lq = _t_fast_read(y, a_q, c_q, LOG_Q, lo, hi)
    lr = lp - lq if (LOG_P or (LOG_Q and HAS_Q)) else LOG_RATIO(p, q)
    return TERM_FAST(p, q, lp, lq, lr)


def _t_terms_batch(s, xp, xq, j, kk, masked, a_p, c_p, a_q, c_q, lo, hi):
    """A batch of UNROLL vectors of this lane: the sum of its fast terms into W1."""
    acc = F(0.0)
    for u in range(UNROLL):
        for t in range(WIDTH):
            if (not masked) or j + u * STEP + t < kk:
                acc += ELEMENT(xp[u * WIDTH + t], xq[u * WIDTH + t], a_p, c_p, a_q, c_q, lo, hi)
    return s[0], s[1], s[2], s[3], s[4] + f64(acc), s[5]


def _t_load_batch(p, ip, q, iq, j, xp, xq):
    """UNROLL vectors of each side, all in the row: every load is issued before any is used."""
    zero = F(0.0)
    for u in range(UNROLL):
        vp = LOAD_P(p, ip, j + u * STEP, zero)
        for t in range(WIDTH):
            xp[u * WIDTH + t] = vp[t]
        if HAS_Q:
            vq = LOAD_Q(q, iq, j + u * STEP, zero)
            for t in range(WIDTH):
                xq[u * WIDTH + t] = vq[t]


def _t_load_tail(p, ip, q, iq, j, kk, xp, xq):
    """The row's last batch: whole vectors where they fit, single elements after them."""
    zero = F(0.0)
    for u in range(UNROLL):
        jj = j + u * STEP
        if jj + WIDTH <= kk:
            vp = LOAD_P(p, ip, jj, zero)
            for t in range(WIDTH):
                xp[u * WIDTH + t] = vp[t]
            if HAS_Q:
                vq = LOAD_Q(q, iq, jj, zero)
                for t in range(WIDTH):
                    xq[u * WIDTH + t] = vq[t]
        else:
            for t in range(WIDTH):
                if jj + t < kk:
                    xp[u * WIDTH + t] = LOAD1(p, ip, jj + t, zero)[0]
                    if HAS_Q:
                        xq[u * WIDTH + t] = LOAD1(q, iq, jj + t, zero)[0]


def _t_sweep(p, ip, q, iq, kk, lane, s, a_p, c_p, a_q, c_q, lo, hi):
    """This lane's state after its elements of row ip (p) and iq (q): batches of UNROLL
    vectors; then one last batch whose elements are checked against the row's end."""
    xp = cuda.local.array(UW, F)
    xq = cuda.local.array(UW, F)
    full = (kk // SPAN) * SPAN
    j = lane * WIDTH
    for base in range(0, full, SPAN):
        _t_load_batch(p, ip, q, iq, base + j, xp, xq)
        s = BATCH(s, xp, xq, base + j, kk, False, a_p, c_p, a_q, c_q, lo, hi)
    if full < kk:
        _t_load_tail(p, ip, q, iq, full + j, kk, xp, xq)
        s = BATCH(s, xp, xq, full + j, kk, True, a_p, c_p, a_q, c_q, lo, hi)
    return s


def _t_warp_max(mp, mq):
    """The running maxima of the WARP_GROUP lanes of a group (or of a warp of a block's
    group), to every lane: a butterfly of compares (NaN never wins: it is not a maximum)."""
    off = WARP_GROUP // 2
    while off > 0:
        if SHIFT_P:
            o = cuda.shfl_xor_sync(FULL_MASK, mp, off)
            mp = mp if mp >= o else o
        if SHIFT_Q:
            o = cuda.shfl_xor_sync(FULL_MASK, mq, off)
            mq = mq if mq >= o else o
        off //= 2
    return mp, mq


def _t_warp_sums(s):
    """The sums of the state over the WARP_GROUP lanes, to every lane: a butterfly of adds,
    which are commutative bit for bit, so both partners of a pair hold the same sums (only
    the fields in use are shuffled)."""
    mp, mq, a, b, w1, w2 = s
    off = WARP_GROUP // 2
    while off > 0:
        if USE_A:
            a += cuda.shfl_xor_sync(FULL_MASK, a, off)
        if USE_B:
            b += cuda.shfl_xor_sync(FULL_MASK, b, off)
        if M1:
            w1 += cuda.shfl_xor_sync(FULL_MASK, w1, off)
        if M2:
            w2 += cuda.shfl_xor_sync(FULL_MASK, w2, off)
        off //= 2
    return mp, mq, a, b, w1, w2


def _t_warp_reduce(s, tid, lane, sm):
    """A group of at most a warp: the maxima first, every lane's state rescaled to them once
    (one exponential per shifted side), then the sums."""
    if SHIFT_P or SHIFT_Q:
        mp, mq = _t_warp_max(s[0], s[1])
        s = _t_rescale(s, mp, mq)
    return _t_warp_sums(s)


def _t_put(sm, slot, s):
    sm[0, slot] = f64(s[0])
    sm[1, slot] = f64(s[1])
    sm[2, slot] = s[2]
    sm[3, slot] = s[3]
    sm[4, slot] = s[4]
    sm[5, slot] = s[5]


def _t_get(sm, slot):
    return F(sm[0, slot]), F(sm[1, slot]), sm[2, slot], sm[3, slot], sm[4, slot], sm[5, slot]


def _t_block_reduce(s, tid, lane, sm):
    """A block's state: the maxima (warp butterflies, then the warps' through shared memory),
    every lane rescaled to them, then the sums likewise; every thread combines the warps in
    the same order."""
    warps = GROUP // WARP
    if SHIFT_P or SHIFT_Q:
        mp, mq = _t_warp_max(s[0], s[1])
        if tid % WARP == 0:
            sm[0, tid // WARP] = f64(mp)
            sm[1, tid // WARP] = f64(mq)
        cuda.syncthreads()
        for w in range(warps):
            op = F(sm[0, w])
            oq = F(sm[1, w])
            mp = mp if mp >= op else op
            mq = mq if mq >= oq else oq
        cuda.syncthreads()
        s = _t_rescale(s, mp, mq)
    s = _t_warp_sums(s)
    if tid % WARP == 0:
        _t_put(sm, tid // WARP, s)
    cuda.syncthreads()
    mp, mq, a, b, w1, w2 = _t_get(sm, 0)
    for w in range(1, warps):
        t = _t_get(sm, w)
        a += t[2]
        b += t[3]
        w1 += t[4]
        w2 += t[5]
    cuda.syncthreads()  # sm is reused by the next row
    return s[0], s[1], a, b, w1, w2


def _t_shared_reduce(s, tid, lane, sm):
    """A group's state through shared memory, with block barriers (the simulator's
    reduction): the maxima, every lane rescaled to them, then the sums, each slot read in
    order by every lane."""
    first = tid - lane
    if SHIFT_P or SHIFT_Q:
        sm[0, tid] = f64(s[0])
        sm[1, tid] = f64(s[1])
        cuda.syncthreads()
        mp = s[0]
        mq = s[1]
        for w in range(GROUP):
            op = F(sm[0, first + w])
            oq = F(sm[1, first + w])
            mp = mp if mp >= op else op
            mq = mq if mq >= oq else oq
        cuda.syncthreads()
        s = _t_rescale(s, mp, mq)
    _t_put(sm, tid, s)
    cuda.syncthreads()
    a = sm[2, first]
    b = sm[3, first]
    w1 = sm[4, first]
    w2 = sm[5, first]
    for w in range(1, GROUP):
        a += sm[2, first + w]
        b += sm[3, first + w]
        w1 += sm[4, first + w]
        w2 += sm[5, first + w]
    cuda.syncthreads()
    return s[0], s[1], a, b, w1, w2


def _t_finish_moments(s):
    """A row's value from its reduced state, in float64 (NaN where a normalized side has no
    usable mass: the exact kernel decides)."""
    _, _, a, b, w1, w2 = s  # the maxima are in the moments already
    sp = a if NORM_P else f64(1.0)
    cp = log(a) if NORM_P else f64(0.0)
    sq = b if NORM_Q else f64(1.0)
    cq = log(b) if NORM_Q else f64(0.0)
    e1 = f64(0.0)
    e2 = f64(0.0)
    if M1:
        mass = b if M1_Q else a
        e1 = (w1 - (M1_A * cp + M1_B * cq) * mass) / (sq if M1_Q else sp)
    if M2:
        mass = b if M2_Q else a
        e2 = (w2 - (M2_A * cp + M2_B * cq) * mass) / (sq if M2_Q else sp)
    v = FROM_MOMENTS(e1, e2, a / sp, b / sq)
    if NONNEG and NORM_P and NORM_Q:
        v = 0.0 if v < 0.0 else v  # Gibbs: rounding below 0 in the last bits
    if NORM_P and not (a >= TINY64 and a < math.inf):
        v = NAN
    if NORM_Q and not (b >= TINY64 and b < math.inf):
        v = NAN
    return v


def _t_value_moments(p, ip, q, iq, kk, lane, tid, sm, eps):
    """A row's value in one pass (the moments mode)."""
    zero = F(0.0)
    s = SWEEP(p, ip, q, iq, kk, lane, _t_neutral(), zero, zero, zero, zero, zero, zero)
    return _t_finish_moments(REDUCE(s, tid, lane, sm))


def _t_value_terms(p, ip, q, iq, kk, lane, tid, sm, eps):
    """A row's value as the sum of its fast terms, no side needing statistics."""
    a_p = F(0.0) if LOG_P else F(1.0)
    a_q = F(0.0) if LOG_Q else F(1.0)
    zero = F(0.0)
    s = SWEEP(p, ip, q, iq, kk, lane, _t_neutral(), a_p, zero, a_q, zero, F(eps), F(1.0))
    return REDUCE(s, tid, lane, sm)[4]


def _t_value_two_pass(p, ip, q, iq, kk, lane, tid, sm, eps):
    """A row's value in two passes: the statistics of its normalized sides (STATS_SWEEP, a
    moments sweep without moments), then the sum of its fast terms."""
    zero = F(0.0)
    st = STATS_SWEEP(p, ip, q, iq, kk, lane, _t_neutral(), zero, zero, zero, zero, zero, zero)
    st = STATS_REDUCE(st, tid, lane, sm)
    a, b = st[2], st[3]
    ok = True
    a_p = F(0.0) if LOG_P else F(1.0)
    c_p = F(0.0)
    a_q = F(0.0) if LOG_Q else F(1.0)
    c_q = F(0.0)
    if NORM_P:
        ok = a >= TINY64 and a < math.inf
        if LOG_P:
            a_p = st[0]
            c_p = F(log(a))
        else:
            a_p = F(1.0 / a)
    if NORM_Q:
        ok = ok and b >= TINY64 and b < math.inf
        if LOG_Q:
            a_q = st[1]
            c_q = F(log(b))
        else:
            a_q = F(1.0 / b)
    s = SWEEP(p, ip, q, iq, kk, lane, _t_neutral(), a_p, c_p, a_q, c_q, zero, zero)
    v = REDUCE(s, tid, lane, sm)[4]
    return v if ok else NAN


def _t_fast_rows_cuda(p, p_step, q, q_step, k, eps, divisor, post, out, flags):
    """out[i] = D(p[i * p_step] || q[i * q_step]) / divisor, then ``post``, in the compute
    precision F. A row outside the fast path's assumptions comes out NaN or infinite, and is
    counted and listed in ``flags`` (zeroed by the caller) for the exact kernel to redo."""
    sm = cuda.shared.array((6, SHARED), numba.float64)
    n = out.shape[0]
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = BLOCK // GROUP
    for first in range(cuda.blockIdx.x * groups, n, cuda.gridDim.x * groups):
        i = first + tid // GROUP
        kk = k if i < n else 0  # a group past the last row reduces nothing with the others
        v = ROW_VALUE(p, i * p_step, q, i * q_step, kk, lane, tid, sm, eps)
        if lane == 0 and i < n:
            v = FINISH(v / divisor, post)
            out[i] = v
            if not (abs(v) < math.inf):
                slot = cuda.atomic.add(flags, 0, 1)
                if slot + 1 < flags.shape[0]:
                    flags[slot + 1] = i


def _t_block_sums_cuda(values, sums):
    """sums[b] = the sum of values[b * SUM_ROWS : (b + 1) * SUM_ROWS]: each thread adds a
    strided slice, then a tree in shared memory. The order is fixed by the block, so a
    reduction gives the same total on every run."""
    sm = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    start = b * SUM_ROWS
    stop = min(start + SUM_ROWS, values.shape[0])
    acc = f64(0.0)
    for j in range(start + tid, stop, BLOCK):
        acc += values[j]
    total = SUM(acc, tid, tid, sm, sm)  # the block is one group: a tree in shared memory
    if tid == 0:
        sums[b] = total


def _t_gather_cuda(src, step, start, dst):
    """dst[r] = src[(start + r) * step]: rows of a strided view into a contiguous buffer (for
    checking device rows on the host, a block at a time)."""
    r = cuda.blockIdx.x
    while r < dst.shape[0]:
        for j in range(cuda.threadIdx.x, dst.shape[1], cuda.blockDim.x):
            dst[r, j] = src[(start + r) * step, j]
        r += cuda.gridDim.x


def _t_zero_left_out_cuda(values, keep):
    """values[i] = 0 where keep[i] is False: the rows ``where`` leaves out."""
    i = cuda.grid(1)
    while i < values.shape[0]:
        if not keep[i]:
            values[i] = 0.0
        i += cuda.gridsize(1)


# --- planning and specialization --------------------------------------------------------------

_KERNELS: dict[tuple[Any, ...], Any] = {}


def _kernel(key: tuple[Any, ...], template: Any, name: str, bindings: dict[str, Any]) -> Any:
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _KERNELS[key] = cuda.jit(specialize(template, name, bindings))
    return kernel


@dataclass(frozen=True)
class Plan:
    """How one call is computed (see the module docstring)."""

    mode: str  # "moments", "terms", "two_pass", or "exact" (the exact kernel alone)
    log_p: bool
    log_q: bool
    has_q: bool
    norm_p: bool  # normalized by its mass (logits, or normalize)
    norm_q: bool


def plan(terms: Terms, p_form: int, q_form: int, normalize: bool, eps: float) -> Plan:
    """The fast kernel's mode for a call, or "exact" for the calls it does not take."""
    log_p, log_q = p_form != PROBS, (q_form != PROBS) and terms.reads_q
    norm_p = p_form == LOGITS or normalize
    norm_q = terms.reads_q and (q_form == LOGITS or normalize)
    # a normalized probability side's moments would hold log p unshifted, and subtract
    # log(sum p) at the end: both large for counts, so their difference cancels
    normalized_probs = normalize and (not log_p or (terms.reads_q and not log_q))
    if eps > 0.0 and (log_p or log_q or normalize):
        mode = "exact"  # clipping normalized log-scores needs their log-sum-exp first (CPU too)
    elif terms.moments and eps == 0.0 and not normalized_probs:
        mode = "moments"
    elif not (norm_p or norm_q):
        mode = "terms"
    else:
        mode = "two_pass"
    return Plan(mode, log_p, log_q, terms.reads_q, norm_p, norm_q)


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def fast_shape(k: int, width: int) -> tuple[int, int]:
    """(threads per row, threads per block) of the fast kernel for rows of k elements read
    ``width`` at a time: at most a warp per row, enough lanes for about UNROLL vectors each,
    up to WARP_MAX_K; a block per row beyond."""
    if k <= WARP_MAX_K:
        if not SIMULATOR and ROW_THREADS != WARP:
            raise ValueError(f"ROW_THREADS: a row of a warp is {WARP} threads on a GPU")
        group = min(ROW_THREADS, _pow2_at_least(-(-k // (width * UNROLL))))
        return group, max(THREADS, group)
    return LONG_THREADS, LONG_THREADS


def row_shape(k: int) -> tuple[int, int]:
    """(threads per row, threads per block) of the exact kernel for rows of k elements."""
    if k <= WARP_MAX_K:
        if not SIMULATOR and ROW_THREADS != WARP:
            raise ValueError(f"ROW_THREADS: a row of a warp is {WARP} threads on a GPU")
        return ROW_THREADS, THREADS
    return LONG_THREADS, LONG_THREADS


def _reductions(group: int, block: int) -> dict[str, Any]:
    """The exact kernel's reductions for a group of ``group`` threads in blocks of ``block``,
    and the shared scratch they need."""
    b = {"GROUP": group, "BLOCK": block}
    if SIMULATOR:
        fns = (_t_shared_sum, _t_shared_lse)
        b["SHARED"] = block
    elif group == WARP:
        fns = (_t_warp_sum, _t_warp_lse)
        b["SHARED"] = 1
    else:
        fns = (_t_block_sum, _t_block_lse)
        b["SHARED"] = block // WARP
    warp_sum = device_sync(specialize(_t_warp_sum, f"warp_sum_{group}", b))
    warp_lse = device_sync(specialize(_t_warp_lse, f"warp_lse_{group}", b))
    b.update({"_t_warp_sum": warp_sum, "_t_warp_lse": warp_lse})
    b["SUM"] = device_sync(specialize(fns[0], f"sum_{group}_{block}", b))
    b["LSE"] = device_sync(specialize(fns[1], f"lse_{group}_{block}", b))
    return b


def bind_helpers(helpers: tuple[Any, ...], tag: str, bindings: dict[str, Any]) -> None:
    """Specialize each template helper (``_t_<name>``) for ``bindings`` as a device function
    named ``<name>_<tag>``, and bind it there, in order (a helper may call the ones before)."""
    for helper in helpers:
        bindings[helper.__name__] = device(
            specialize(helper, f"{helper.__name__[3:]}_{tag}", bindings)
        )


def rows_kernel(
    terms: Terms, log_p: bool, log_q: bool, k: int, redo: bool = False
) -> tuple[Any, int, int]:
    """The exact row kernel of a divergence's ``terms`` for a form pair and row length, with its
    (threads per row, threads per block); compiled on first use. ``redo``: the kernel that
    scores only the rows a fast kernel left non-finite."""
    term, has_q, needs_log = _exact_term(terms, log_p, log_q)
    log_q = log_q and has_q
    group, block = row_shape(k)
    key = ("rows", terms, log_p, log_q, group, block, redo)
    if key not in _KERNELS:
        tag = f"{terms.tag}_{'l' if log_p else 'p'}{'l' if log_q else 'p'}_{group}_{block}"
        tag += "_redo" if redo else ""
        bindings = _reductions(group, block)
        bindings.update(
            {
                "LOG_P": log_p,
                "LOG_Q": log_q,
                "HAS_Q": has_q,
                "NEEDS_LOG": needs_log,
                "TERM": term,
                "REDO": redo,
                "LOAD1": LOADS[1],
            }
        )
        bind_helpers((_t_elem, _t_lse_part, _t_mass_part, _t_read, _t_side_stat), tag, bindings)
        _kernel(key, _t_rows_cuda, f"{tag}_rows_cuda", bindings)
    return _KERNELS[key], group, block


def _precision(single: bool) -> tuple[Any, Any]:
    """(F, the precision's functions)."""
    fast = FAST32 if single else FAST64
    return fast.F, fast


def _masses(terms: Terms | None, pl: Plan) -> dict[str, bool]:
    """Whether a sweep sums the mass of p (USE_A) and of q (USE_B): a normalized side's, and
    a moment's weight side's where the moment reads a normalized side's log."""
    use = [pl.norm_p, pl.norm_q]
    moments = terms.moments if terms is not None else ()
    for side, a, b in moments:
        if (a and pl.norm_p) or (b and pl.norm_q):
            use[side] = True
    if terms is not None and terms.uses_masses:
        use = [True, True]
    return {"USE_A": use[0], "USE_B": use[1] and pl.has_q}


def _moment_bindings(terms: Terms | None) -> dict[str, Any]:
    """The moments of a divergence's ``terms`` (None: none, the statistics pass). A moment
    not in use is bound as KL's (p-weighted, log p - log q): its state stays 0."""
    moments = terms.moments if terms is not None else ()
    b: dict[str, Any] = {"M1": len(moments) > 0, "M2": len(moments) > 1, "NONNEG": False}
    unused = (_math.MOMENT_P, 1.0, -1.0)
    for m, (side, a, coef_b) in zip(("M1", "M2"), (*moments, unused, unused), strict=False):
        b.update({f"{m}_Q": side == _math.MOMENT_Q, f"{m}_A": a, f"{m}_B": coef_b})
    if terms is not None and terms.moments:
        b["FROM_MOMENTS"] = getattr(EXACT, terms.from_moments.__name__)
        b["NONNEG"] = terms.nonnegative
    return b


def _state_bindings(
    base: dict[str, Any], tag: str, mode: str, moments: Terms | None, pl: Plan
) -> dict[str, Any]:
    """A sweep and a reduction of the state for ``mode`` ("moments", "stats" or "terms")."""
    b = dict(base)
    b.update(_moment_bindings(moments))
    b.update(_masses(moments, pl))
    if mode == "terms":
        b.update(
            {
                "SHIFT_P": False, "SHIFT_Q": False, "USE_A": False, "USE_B": False,
                "M1": True, "M2": False,
            }
        )  # fmt: skip
    # each helper is specialized after the ones it calls, so that it sees their versions
    helpers = [_t_shift, _t_rescale, _t_integrand, _t_guarded, _t_weigh, _t_fast_read, _t_moment]
    if mode == "terms":
        helpers += [_t_terms_element, _t_terms_batch]
    else:
        helpers += [_t_moment_element, _t_moments_batch]
    helpers += [_t_load_batch, _t_load_tail, _t_put, _t_get]
    for helper in helpers:
        b[helper.__name__] = device(specialize(helper, f"{mode}_{helper.__name__[3:]}_{tag}", b))
        if helper in (_t_terms_element, _t_moment_element):
            b["ELEMENT"] = b[helper.__name__]
        elif helper in (_t_terms_batch, _t_moments_batch):
            b["BATCH"] = b[helper.__name__]
    for helper in (_t_warp_max, _t_warp_sums, _t_warp_reduce):
        b[helper.__name__] = device_sync(
            specialize(helper, f"{mode}_{helper.__name__[3:]}_{tag}", b)
        )
    if SIMULATOR:
        reduce = _t_shared_reduce
    elif b["GROUP"] <= WARP:
        reduce = _t_warp_reduce
    else:
        reduce = _t_block_reduce
    sweep = device_sync(specialize(_t_sweep, f"{mode}_sweep_{tag}", b))  # cuda.local
    return {
        "SWEEP": sweep,
        "REDUCE": device_sync(specialize(reduce, f"{mode}_reduce_{tag}", b)),
        "ELEMENT": b["ELEMENT"],
        "BATCH": b["BATCH"],
    }


def fast_kernel(
    terms: Terms, p_form: int, q_form: int, normalize: bool, clip_: bool, single: bool,
    k: int, width: int,
) -> tuple[Any, int, int]:  # fmt: skip
    """The fast row kernel of a divergence's ``terms`` for its forms, options, precision (float32
    arithmetic with ``single``) and vector width, with its (threads per row, threads per
    block); compiled on first use."""
    pl = plan(terms, p_form, q_form, normalize, 1.0 if clip_ else 0.0)
    if pl.mode == "exact":
        raise ValueError(f"{terms.tag}: this call takes the exact kernel")
    group, block = fast_shape(k, width)
    key = ("fast", terms, p_form, q_form, normalize, clip_, single, width, group, block)
    if key in _KERNELS:
        return _KERNELS[key], group, block
    forms = f"{'plL'[p_form]}{'plL'[q_form]}{'n' if normalize else ''}{'c' if clip_ else ''}"
    tag = f"{terms.tag}_{forms}_{'f32' if single else 'f64'}_w{width}_{group}_{block}"
    precision, fast = _precision(single)
    bindings: dict[str, Any] = {
        "F": precision,
        "GROUP": group,
        "BLOCK": block,
        "WARP_GROUP": min(group, WARP),
        "SHARED": block if SIMULATOR else max(1, block // WARP),
        "WIDTH": width,
        "UNROLL": UNROLL,
        "UW": UNROLL * width,
        "STEP": group * width,
        "SPAN": group * width * UNROLL,
        "LOAD_P": LOADS[width],
        "LOAD_Q": LOADS[width],
        "LOAD1": LOADS[1],
        "LOG_P": pl.log_p,
        "LOG_Q": pl.log_q,
        "HAS_Q": pl.has_q,
        "SHIFT_P": pl.log_p and pl.norm_p,
        "SHIFT_Q": pl.log_q and pl.norm_q,
        "NORM_P": pl.norm_p,
        "NORM_Q": pl.norm_q,
        "CLIP": clip_,
        "EXP": fast.exp,
        "LOG_CORE": fast.log_core,
        "LOG_RATIO": fast.log_ratio_core,
        "GUARD": fast.ratio_guard,
        "LIKE": fast.like,
        "CLIPF": fast.clip,
        "KL_FAST": fast.kl_term_fast,
        "KL_LOG_FAST": fast.kl_term_log_fast,
        "FINISH": FINISH,
    }
    if terms.fast is None:
        bindings["_t_guarded"] = device(specialize(_t_guarded, f"kl_guarded_{tag}", bindings))
        bindings["TERM_FAST"] = device(specialize(_t_kl_fast, f"kl_fast_{tag}", bindings))
    else:
        bindings["TERM_FAST"] = getattr(fast, terms.fast.__name__)
    bindings["_t_neutral"] = device(specialize(_t_neutral, f"neutral_{tag}", bindings))
    parts: dict[str, Any] = {}
    if pl.mode == "moments":
        parts = _state_bindings(bindings, tag, "moments", terms, pl)
        bindings.update(parts)
        finish_bindings = {**bindings, **_moment_bindings(terms), **_masses(terms, pl)}
        finish = device(specialize(_t_finish_moments, f"finish_{tag}", finish_bindings))
        bindings["_t_finish_moments"] = finish
        value = _t_value_moments
    elif pl.mode == "terms":
        parts = _state_bindings(bindings, tag, "terms", None, pl)
        bindings.update(parts)
        value = _t_value_terms
    else:
        stats = _state_bindings(bindings, tag, "stats", None, pl)
        bindings["STATS_SWEEP"], bindings["STATS_REDUCE"] = stats["SWEEP"], stats["REDUCE"]
        parts = _state_bindings(bindings, tag, "terms", None, pl)
        bindings.update(parts)
        parts["STATS_ELEMENT"] = stats["ELEMENT"]
        value = _t_value_two_pass
    bindings["ROW_VALUE"] = device_sync(specialize(value, f"value_{tag}", bindings))
    _PARTS[key] = parts
    return _kernel(key, _t_fast_rows_cuda, f"{tag}_fast_rows_cuda", bindings), group, block


_PARTS: dict[tuple[Any, ...], dict[str, Any]] = {}


def fast_parts(
    terms: Terms, p_form: int, q_form: int, normalize: bool, clip_: bool, single: bool,
    k: int, width: int,
) -> dict[str, Any]:  # fmt: skip
    """The device functions a fast kernel is built from (its per-element function ELEMENT,
    its batch BATCH, ...): what the PTX tests read."""
    fast_kernel(terms, p_form, q_form, normalize, clip_, single, k, width)
    group, block = fast_shape(k, width)
    return _PARTS[("fast", terms, p_form, q_form, normalize, clip_, single, width, group, block)]


def block_sums_kernel() -> Any:
    tree = device_sync(specialize(_t_shared_sum, f"tree_sum_{THREADS}", {"GROUP": THREADS}))
    bindings = {"BLOCK": THREADS, "SUM_ROWS": SUM_ROWS, "SUM": tree}
    return _kernel(("sums", THREADS, SUM_ROWS), _t_block_sums_cuda, "block_sums_cuda", bindings)


def gather_kernel() -> Any:
    return _kernel(("gather",), _t_gather_cuda, "gather_cuda", {})


def zero_left_out_kernel() -> Any:
    return _kernel(("zero_left_out",), _t_zero_left_out_cuda, "zero_left_out_cuda", {})


def max_blocks(block: int = THREADS) -> int:
    """The grid size beyond which rows are taken in a grid-stride loop: the blocks of
    ``block`` threads that the device's multiprocessors hold at once."""
    if MAX_BLOCKS is not None:
        return MAX_BLOCKS
    per_sm = max(1, THREADS_PER_SM // block)
    if SIMULATOR:
        return per_sm
    return per_sm * cuda.get_current_device().MULTIPROCESSOR_COUNT
