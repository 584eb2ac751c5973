"""CUDA training kernels: a row's value and its gradient in one launch, with a temperature and
a skew (the GPU's counterpart of ``_cpu_train``, whose docstring defines the side modes and
the three passes).

A row is scored by a group of threads, as by the exact value kernel of ``_cuda`` (its group
shapes and reductions): at most a warp for rows of up to ``_cuda.WARP_MAX_K`` elements, a block
beyond. Each lane takes elements ``lane, lane + GROUP, ...``; everything is float64, with the
divergence's ``_math.<name>_grad`` compiled as a device function:

1. statistics: for a SOFT side an online log-sum-exp of its scores (the maximum and the
   shifted mass in one read), merged over the group; for a normalized probability side its
   mass;
2. the terms: each lane's share of the value and of H (``sum h`` for SOFT, ``sum u h`` for a
   normalized probability side), summed over the group;
3. the gradient: each entry's term and derivatives computed again (a GPU has the arithmetic
   to spare, and no per-row scratch to keep them in), written once.

Sums follow one order per group shape (shuffles, or shared memory in the simulator), so
results are bitwise the same on every run.
"""

from __future__ import annotations

import math
from typing import Any

import numba
from numba import cuda

from . import _cuda
from ._config import Unbound, specialize
from ._cpu_train import LOG, PROB, SOFT_LOGIN, SOFT_PROB, side_mode
from ._cuda import _t_elem
from ._cuda_device import EXACT, LOADS, device_sync, exp, f64, log
from .divergences import Terms

GRAD = Unbound("the divergence's term and derivatives (Terms.grad, a device function)")
HAS_Q = Unbound("whether the terms read q")
MODE_P = Unbound("p's mode")
MODE_Q = Unbound("q's mode")
CLIP = Unbound("whether eps clips")
GROUP = Unbound("threads per row")
BLOCK = Unbound("threads per block")
SHARED = Unbound("slots of shared scratch")
SUM = Unbound("the group's float64 sum")
LSE = Unbound("the group's log-sum-exp")
clip = EXACT.clip
FINISH = EXACT.finish_row
SLOPE = EXACT.post_slope


def _t_score(v, mode, inv_t):
    """A SOFT side's score z of an element."""
    return (v if mode == SOFT_LOGIN else log(v)) * inv_t


def _t_stats(x, i, kk, lane, tid, sm, sm2, mode, normalize, inv_t):
    """(m, c, a) of row i: a SOFT side's maximum score and the log of its shifted mass; a
    normalized probability side's mass a (else 1)."""
    if mode == SOFT_LOGIN or mode == SOFT_PROB:
        m = -math.inf
        s = f64(0.0)
        for j in range(lane, kk, GROUP):
            v = _t_score(_t_elem(x, i, j), mode, inv_t)
            if v > m:
                s = s * exp(m - v) + 1.0
                m = v
            elif v != -math.inf:
                s += exp(v - m)  # NaN stays in the sum
        m, s = LSE(m, s, tid, lane, sm, sm2)
        if not abs(m) < math.inf:
            return m, f64(math.nan), f64(1.0)  # a NaN, +inf, or nothing above -inf
        return m, log(s), f64(1.0)
    if mode == PROB and normalize:
        s = f64(0.0)
        for j in range(lane, kk, GROUP):
            s += _t_elem(x, i, j)
        return f64(0.0), f64(0.0), SUM(s, tid, lane, sm, sm2)
    return f64(0.0), f64(0.0), f64(1.0)


def _t_read(x, i, j, mode, inv_t, m, c, a, lo, hi, llo, lhi):
    """Element j of row i: (probability, its log, whether it passes a gradient, the unclipped
    normalized entry)."""
    v = _t_elem(x, i, j)
    if mode == PROB:
        u = v / a
        r = clip(u, lo, hi) if CLIP else u
        return r, log(r), (not CLIP) or (u >= lo and u <= hi), u
    lj = v if mode == LOG else (_t_score(v, mode, inv_t) - m) - c
    s = exp(lj)
    if not CLIP:
        return s, lj, True, s
    lc = clip(lj, llo, lhi)
    return exp(lc), lc, (lj >= llo and lj <= lhi), s


def _t_entry(p, ip, q, iq, j, inv_t, beta, mp, cp, ap, mq, cq, aq, lo, hi, llo, lhi):
    """Entry j: (term, h of p, h of q, p's and q's shares of H, normalized p entry, normalized
    q entry). A probability side's share is u dt/du, the log coordinate's partial (0 at
    u = 0, where h is infinite)."""
    pj, lpj, pass_p, up = _t_read(p, ip, j, MODE_P, inv_t, mp, cp, ap, lo, hi, llo, lhi)
    qj, lqj, pass_q, uq = f64(1.0), f64(0.0), True, f64(1.0)
    if HAS_Q:
        qj, lqj, pass_q, uq = _t_read(q, iq, j, MODE_Q, inv_t, mq, cq, aq, lo, hi, llo, lhi)
    t, dp, dq, dlp, dlq = GRAD(pj, qj, lpj, lqj, beta)
    hp = (dp if MODE_P == PROB else dlp) if pass_p else 0.0
    hq = (dq if MODE_Q == PROB else dlq) if pass_q else 0.0
    share_p = (dlp if pass_p else 0.0) if MODE_P == PROB else hp
    share_q = (dlq if pass_q else 0.0) if MODE_Q == PROB else hq
    return t, hp, hq, share_p, share_q, up, uq


def _t_grad_entry(h, u, x, total, mode, normalize, inv_t, a, f):
    """The gradient of one entry (see ``_cpu_train._write_grad``)."""
    if mode == SOFT_LOGIN or mode == SOFT_PROB:
        d = (h - u * total) * (f * inv_t)
        if mode == SOFT_PROB:
            if x != 0.0:
                return d / x
            return 0.0 if inv_t > 1.0 else math.nan
        return d
    if mode == PROB and normalize:
        return (h - total) * (f / a)
    return h * f


def _t_train_rows_cuda(p, p_step, q, q_step, k, normalize, eps, inv_t, beta, divisor, post,
                       which, gp, gq, scale, s_step, out):  # fmt: skip
    """out[i]: row i's value; gp[i], gq[i]: its gradient times scale[i * s_step] (``which``:
    0 none, 1 p, 2 q, 3 both; a row of scale 0 is left 0 when a gradient is taken). A group
    of GROUP threads per row, rows in a grid-stride loop; every thread of a block runs the
    same iterations, so every reduction is reached by the whole block."""
    sm = cuda.shared.array(SHARED, numba.float64)
    sm2 = cuda.shared.array(SHARED, numba.float64)
    n = out.shape[0]
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = BLOCK // GROUP
    want_p = (which & 1) != 0
    want_q = HAS_Q and (which & 2) != 0
    lo, hi = (eps, 1.0) if CLIP else (-math.inf, math.inf)
    llo, lhi = (log(eps), 0.0) if CLIP else (-math.inf, math.inf)
    for first in range(cuda.blockIdx.x * groups, n, cuda.gridDim.x * groups):
        i = first + tid // GROUP
        need = i < n
        s = scale[i * s_step] if need else 0.0
        skip = need and which != 0 and s == 0.0
        kk = k if (need and not skip) else 0
        ip = i * p_step
        iq = i * q_step
        mp, cp, ap = _t_stats(p, ip, kk, lane, tid, sm, sm2, MODE_P, normalize, inv_t)
        mq, cq, aq = f64(0.0), f64(0.0), f64(1.0)
        if HAS_Q:
            mq, cq, aq = _t_stats(q, iq, kk, lane, tid, sm, sm2, MODE_Q, normalize, inv_t)
        acc = f64(0.0)
        sum_p = f64(0.0)
        sum_q = f64(0.0)
        for j in range(lane, kk, GROUP):
            t, hp, hq, share_p, share_q, up, uq = _t_entry(p, ip, q, iq, j, inv_t, beta, mp, cp,
                                                           ap, mq, cq, aq, lo, hi, llo,
                                                           lhi)  # fmt: skip
            acc += t
            sum_p += share_p
            sum_q += share_q
        raw = SUM(acc, tid, lane, sm, sm2) / divisor
        total_p = SUM(sum_p, tid, lane, sm, sm2) if want_p else 0.0
        total_q = SUM(sum_q, tid, lane, sm, sm2) if want_q else 0.0
        if lane == 0 and need:
            out[i] = 0.0 if skip else FINISH(raw, post)
        if which != 0 and need:
            f = s * SLOPE(raw, post) / divisor
            for j in range(lane, kk, GROUP):
                t, hp, hq, share_p, share_q, up, uq = _t_entry(p, ip, q, iq, j, inv_t, beta, mp,
                                                               cp, ap, mq, cq, aq, lo, hi, llo,
                                                               lhi)  # fmt: skip
                if want_p:
                    gp[i, j] = _t_grad_entry(hp, up, _t_elem(p, ip, j), total_p, MODE_P,
                                             normalize, inv_t, ap, f)  # fmt: skip
                if want_q:
                    gq[i, j] = _t_grad_entry(hq, uq, _t_elem(q, iq, j), total_q, MODE_Q,
                                             normalize, inv_t, aq, f)  # fmt: skip
            if skip:
                for j in range(lane, k, GROUP):
                    if want_p:
                        gp[i, j] = 0.0
                    if want_q:
                        gq[i, j] = 0.0


_KERNELS: dict[tuple[Any, ...], Any] = {}


def train_kernel(
    terms: Terms, mode_p: int, mode_q: int, clipping: bool, k: int
) -> tuple[Any, int, int]:
    """The training kernel of a divergence's terms for a pair of side modes and a row length,
    with its (threads per row, threads per block); compiled on first use."""
    mode_q = mode_q if terms.reads_q else PROB
    group, block = _cuda.row_shape(k)
    key = (terms, mode_p, mode_q, clipping, group, block)
    kernel = _KERNELS.get(key)
    if kernel is None:
        tag = f"{terms.tag}_{mode_p}{mode_q}{'c' if clipping else ''}_{group}_{block}"
        bindings = _cuda._reductions(group, block)
        bindings.update(
            {
                "GRAD": getattr(EXACT, terms.grad.__name__),
                "HAS_Q": terms.reads_q,
                "MODE_P": mode_p,
                "MODE_Q": mode_q,
                "CLIP": clipping,
                "LOAD1": LOADS[1],
            }
        )
        _cuda.bind_helpers((_t_elem, _t_score, _t_read, _t_entry, _t_grad_entry), f"train_{tag}",
                           bindings)  # fmt: skip
        stats = specialize(_t_stats, f"train_stats_{tag}", bindings)
        bindings["_t_stats"] = device_sync(stats)
        template = specialize(_t_train_rows_cuda, f"{tag}_train_rows_cuda", bindings)
        kernel = _KERNELS[key] = cuda.jit(template)
    return kernel, group, block


__all__ = ["LOG", "PROB", "SOFT_LOGIN", "SOFT_PROB", "side_mode", "train_kernel"]
