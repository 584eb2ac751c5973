"""CUDA kernels: a group of threads per row around the scalar terms of ``_math``.

Imported only for ``device="cuda"`` or CUDA inputs (``_cuda_driver``), never with fastkl.

One kernel template serves every row-wise function (KL and the family), specialized per
divergence, form pair and row shape. A row is scored by a *group* of threads:

* a warp (32 threads) for rows of up to ``WARP_MAX_K`` elements, several rows per block;
* a whole block (``LONG_THREADS`` threads) for longer rows (vocabularies of 32k to 256k).

Lane ``l`` of a group reads elements ``l, l + G, l + 2G, ...`` of the row, so a warp's loads
are coalesced, and the group reduces its lanes' partial sums. Blocks take rows in a
grid-stride loop; every thread of a block runs the same number of iterations (a group past
the last row reduces zeros), so no barrier or shuffle is ever reached by part of a group.

A row takes two passes over its elements:

1. statistics, when a side needs them: the log-sum-exp of a log-score side (logits, or
   log-probabilities with ``normalize``), fused and online (each lane keeps a running maximum
   and a sum rescaled whenever the maximum grows, and lanes merge their pairs), so the
   log-softmax is never materialized; or the mass of a probability side being normalized;
2. the terms, in float64: the exact terms of ``_math`` (the CPU's exact path), whatever the
   input dtype. Every IEEE special value is handled term by term, so there is no fast/exact
   split on the GPU.

Reductions: warp shuffles (``shfl_xor_sync``) within a warp and shared memory across the warps
of a block. The CUDA simulator has no warp-level operations, so under it every group reduces
through shared memory with barriers (a tree over the group's slots): the same kernels, the
same per-lane work, testable in CI.
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any

try:  # numba's own numba.cuda is deprecated and lacks what the kernels use
    NUMBA_CUDA_VERSION = importlib.metadata.version("numba-cuda")
except importlib.metadata.PackageNotFoundError:
    raise ImportError(
        "the CUDA backend needs NVIDIA's numba-cuda: pip install 'fastkl[cuda]'"
    ) from None

import numba
import numpy as np
from numba import cuda

from . import _math
from ._config import compile_scalars, specialize
from ._math import LOGITS

#: Whether kernels run in numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

# --- tunables (one place; tests shrink them to force multi-block and grid-stride launches) ----

#: Threads per block for rows of up to WARP_MAX_K elements: a warp per row, 8 rows per block.
THREADS = 256
#: Threads per row for rows of up to WARP_MAX_K elements: a warp. Only the simulator may take
#: fewer (tests do: the simulator runs every thread as a Python thread).
ROW_THREADS = 32
#: The longest row scored by one warp; longer rows take a block each.
WARP_MAX_K = 2048
#: Threads per block (and per row) for long rows.
LONG_THREADS = 512
#: Blocks per launch at most, per multiprocessor; rows beyond are taken in a grid-stride loop.
BLOCKS_PER_SM = 32
#: Blocks per launch at most, whatever the GPU (None: BLOCKS_PER_SM per multiprocessor).
MAX_BLOCKS: int | None = None
#: Rows summed per block by the reduction kernel (the driver's RowSum block).
SUM_ROWS = 4096
WARP = 32


# --- the scalar terms, as device functions --------------------------------------------------


def _sim_log(x: Any) -> float:
    """``log`` with IEEE results in the simulator (math.log raises at 0 and below)."""
    x = float(x)
    if x > 0.0:
        return math.log(x) if x < math.inf else x
    return -math.inf if x == 0.0 else math.nan


def _sim_exp(x: Any) -> float:
    try:
        return math.exp(float(x))
    except OverflowError:
        return math.inf


def _sim_log1p(x: Any) -> float:
    """``log1p`` with IEEE results in the simulator (math.log1p raises at -1 and below)."""
    x = float(x)
    if x > -1.0:
        return math.log1p(x)
    return -math.inf if x == -1.0 else math.nan


def _sim_expm1(x: Any) -> float:
    try:
        return math.expm1(float(x))
    except OverflowError:
        return math.inf


if SIMULATOR:
    # The simulator runs kernels as Python: the terms stay plain functions (a device-function
    # wrapper would take the simulator's module lock on every call), with IEEE log/exp.
    _D = compile_scalars(
        _math,
        lambda fn: fn,
        {"log": _sim_log, "exp": _sim_exp, "expm1": _sim_expm1, "log1p": _sim_log1p},
    )
    log, exp, f64 = _sim_log, _sim_exp, np.float64
else:
    _D = compile_scalars(_math, cuda.jit(device=True, forceinline=True))  # libdevice's math
    log, exp, f64 = math.log, math.exp, numba.float64

clip = _D.clip
FINISH = _D.finish_row  # clamp at 0, or the square root of a distance


KL = _D.kl_term  # bound per form pair in _term
KL_LOG = _D.kl_term_log


def _t_kl4(p, q, lp, lq):
    """KL's term in the family's signature: from the probabilities when both sides are
    probabilities (the quotient keeps near-equal p and q precise), else from the logs."""
    if LOG_P or LOG_Q:
        return KL_LOG(p, lp, lq)
    return KL(p, q)


#: name -> (exact term, whether the divergence reads q, whether it needs the logs of
#: probability sides)
DIVERGENCES = {
    "kl": (None, True, None),  # bound per form pair: see _term
    "js": (_D.js_term, True, False),
    "sym_kl": (_D.sym_kl_term, True, True),
    "cross_entropy": (_D.cross_entropy_term, True, True),
    "entropy": (_D.entropy_term, False, True),
    "generalized_kl": (_D.generalized_kl_term, True, True),
}


def _device(fn: Any) -> Any:
    """A device function of plain arithmetic (left as Python in the simulator)."""
    return fn if SIMULATOR else cuda.jit(device=True, forceinline=True)(fn)


def _device_sync(fn: Any) -> Any:
    """A device function that calls ``cuda.*`` (barriers, shuffles): a device function in the
    simulator too, which is how the simulator gives it the running block's ``cuda``."""
    return (
        cuda.jit(device=True, forceinline=True)(fn) if not SIMULATOR else cuda.jit(device=True)(fn)
    )


def _term(name: str, log_p: bool, log_q: bool) -> tuple[Any, bool, bool]:
    term, has_q, needs_log = DIVERGENCES[name]
    if name == "kl":
        bindings = {"LOG_P": log_p, "LOG_Q": log_q, "KL": _D.kl_term, "KL_LOG": _D.kl_term_log}
        term = _device(specialize(_t_kl4, f"kl4_{int(log_p)}{int(log_q)}", bindings))
        needs_log = log_p or log_q
    return term, has_q, needs_log


# --- reductions over a group of lanes ---------------------------------------------------------
#
# Each returns the group's total to every lane. ``tid`` is the thread's index in the block,
# ``lane`` its index in the group, ``sm``/``sm2`` shared scratch of the block.


@_device
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
        v += cuda.shfl_xor_sync(0xFFFFFFFF, v, off)
        off //= 2
    return v


def _t_warp_lse(m, s, tid, lane, sm, sm2):
    off = WARP // 2
    while off > 0:
        m2 = cuda.shfl_xor_sync(0xFFFFFFFF, m, off)
        s2 = cuda.shfl_xor_sync(0xFFFFFFFF, s, off)
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
    """A group's total through shared memory: a tree over the group's GROUP slots, with block
    barriers (the simulator's reduction; every group of the block takes part)."""
    sm[tid] = v
    cuda.syncthreads()
    h = GROUP // 2
    while h > 0:
        if lane < h:
            sm[tid] += sm[tid + h]
        cuda.syncthreads()
        h //= 2
    total = sm[tid - lane]
    cuda.syncthreads()
    return total


def _t_shared_lse(m, s, tid, lane, sm, sm2):
    sm[tid] = m
    sm2[tid] = s
    cuda.syncthreads()
    h = GROUP // 2
    while h > 0:
        if lane < h:
            sm[tid], sm2[tid] = _lse_merge(sm[tid], sm2[tid], sm[tid + h], sm2[tid + h])
        cuda.syncthreads()
        h //= 2
    m, s = sm[tid - lane], sm2[tid - lane]
    cuda.syncthreads()
    return m, s


# --- the row kernel template ------------------------------------------------------------------
#
# Bound per specialization: LOG_P, LOG_Q (log-score sides), HAS_Q (False for entropy),
# NEEDS_LOG (the term reads the log of a probability side), TERM, GROUP (threads per row),
# BLOCK (threads per block), SHARED (slots of shared scratch), SUM and LSE (the reductions).

LOG_P = False
LOG_Q = False
HAS_Q = True
NEEDS_LOG = True
GROUP = WARP
BLOCK = THREADS
SHARED = THREADS
TERM = _D.js_term
SUM = _t_shared_sum
LSE = _t_shared_lse


def _t_lse_part(x, i, kk, lane):
    """This lane's (max, sum of exp(x - max)) over its elements of row i: online, so the
    row is read once. -inf elements weigh 0; a NaN makes the sum NaN; +inf gives NaN later."""
    m = -math.inf
    s = f64(0.0)
    for j in range(lane, kk, GROUP):
        v = f64(x[i, j])
        if v > m:
            s = s * exp(m - v) + 1.0
            m = v
        elif v != -math.inf:
            s += exp(v - m)
    return m, s


def _t_mass_part(x, i, kk, lane):
    s = f64(0.0)
    for j in range(lane, kk, GROUP):
        s += f64(x[i, j])
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
        lx = clip((f64(x[i, j]) - a) - c, lo, hi)
        return exp(lx), lx
    px = clip(f64(x[i, j]) / a, lo, hi)
    return px, (log(px) if NEEDS_LOG else px)


def _t_rows_cuda(p, p_step, q, q_step, k, p_form, q_form, normalize, eps, divisor, post, out):
    """out[i] = D(p[i * p_step] || q[i * q_step]) / divisor, then ``post``: a group of GROUP
    threads per row, rows in a grid-stride loop (see the module docstring)."""
    sm = cuda.shared.array(SHARED, numba.float64)
    sm2 = cuda.shared.array(SHARED, numba.float64)
    n = out.shape[0]
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = BLOCK // GROUP
    stat_p = p_form == LOGITS or normalize
    stat_q = q_form == LOGITS or normalize
    for first in range(cuda.blockIdx.x * groups, n, cuda.gridDim.x * groups):
        i = first + tid // GROUP
        kk = k if i < n else 0  # a group past the last row reduces zeros with the others
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
        if lane == 0 and i < n:
            out[i] = FINISH(v / divisor, post)


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


# --- specialization ---------------------------------------------------------------------------

_KERNELS: dict[tuple[Any, ...], Any] = {}


def _kernel(key: tuple[Any, ...], template: Any, name: str, bindings: dict[str, Any]) -> Any:
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _KERNELS[key] = cuda.jit(specialize(template, name, bindings))
    return kernel


def _reductions(group: int, block: int) -> dict[str, Any]:
    """The reductions a group of ``group`` threads in blocks of ``block`` uses, and the shared
    scratch they need."""
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
    warp_sum = _device_sync(specialize(_t_warp_sum, f"warp_sum_{group}", b))
    warp_lse = _device_sync(specialize(_t_warp_lse, f"warp_lse_{group}", b))
    b.update({"_t_warp_sum": warp_sum, "_t_warp_lse": warp_lse})
    b["SUM"] = _device_sync(specialize(fns[0], f"sum_{group}_{block}", b))
    b["LSE"] = _device_sync(specialize(fns[1], f"lse_{group}_{block}", b))
    return b


def row_shape(k: int) -> tuple[int, int]:
    """(threads per row, threads per block) for rows of k elements."""
    if k <= WARP_MAX_K:
        if not SIMULATOR and ROW_THREADS != WARP:
            raise ValueError(f"ROW_THREADS: a row of a warp is {WARP} threads on a GPU")
        return ROW_THREADS, THREADS
    return LONG_THREADS, LONG_THREADS


def rows_kernel(name: str, log_p: bool, log_q: bool, k: int) -> tuple[Any, int, int]:
    """The row kernel of divergence ``name`` for a form pair and row length, with its
    (threads per row, threads per block); compiled on first use."""
    term, has_q, needs_log = _term(name, log_p, log_q)
    log_q = log_q and has_q
    group, block = row_shape(k)
    key = ("rows", name, log_p, log_q, group, block)
    if key not in _KERNELS:
        tag = f"{name}_{'l' if log_p else 'p'}{'l' if log_q else 'p'}_{group}_{block}"
        bindings = _reductions(group, block)
        bindings.update(
            {
                "LOG_P": log_p,
                "LOG_Q": log_q,
                "HAS_Q": has_q,
                "NEEDS_LOG": needs_log,
                "TERM": term,
            }
        )
        for helper in (_t_lse_part, _t_mass_part, _t_read, _t_side_stat):
            bindings[helper.__name__] = _device(
                specialize(helper, f"{helper.__name__[3:]}_{tag}", bindings)
            )
        _kernel(key, _t_rows_cuda, f"{tag}_rows_cuda", bindings)
    return _KERNELS[key], group, block


def block_sums_kernel() -> Any:
    tree = _device_sync(specialize(_t_shared_sum, f"tree_sum_{THREADS}", {"GROUP": THREADS}))
    bindings = {"BLOCK": THREADS, "SUM_ROWS": SUM_ROWS, "SUM": tree}
    return _kernel(("sums", THREADS, SUM_ROWS), _t_block_sums_cuda, "block_sums_cuda", bindings)


def gather_kernel() -> Any:
    return _kernel(("gather",), _t_gather_cuda, "gather_cuda", {})


def max_blocks() -> int:
    """The grid size beyond which rows are taken in a grid-stride loop."""
    if MAX_BLOCKS is not None:
        return MAX_BLOCKS
    if SIMULATOR:
        return BLOCKS_PER_SM
    return BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT
