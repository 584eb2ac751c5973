"""CPU training kernels: a row's value and its gradient in one call, with a temperature and a
skew.

The value kernels (``_cpu``, ``_cpu_family``) serve plain values; these serve every call that
asks for more (``grad=``, ``temperature=``, Jensen-Shannon's ``beta``). One template serves
every divergence through its spec's ``Terms.grad`` (``_math.<name>_grad``: the term and its
partial derivatives), computed in float64 whatever the inputs' precision, and is specialized
per divergence and per pair of side *modes*:

* ``SOFT_LOGIN``: a softmax of ``z = x / T`` (logits, normalized log-probabilities, or
  log-probabilities under a temperature); ``SOFT_PROB``: of ``z = log(x) / T``
  (probabilities under a temperature). Their log-probabilities are ``(z - m) - c``, with m
  the row's maximum of z and c the log of its shifted mass (kept apart: ``m + c`` would round
  c away for huge logits).
* ``LOG``: log-probabilities as given.
* ``PROB``: probabilities, divided by their row sum with ``normalize``.

``eps`` then clips the probabilities to ``[eps, 1]`` (a log side's logs to ``[log eps, 0]``),
and a clipped entry passes no gradient (a specialization of its own: ``CLIP``).

A row takes three passes over its inputs (from cache for rows up to the L2 size), each a loop
with no branch and no sum inside, which LLVM vectorizes; every sum is then taken over a
float64 scratch row by ``_simd.lane_sum`` (explicit lanes, a fixed order: results are bitwise
the same for any thread count):

1. statistics of each side: for SOFT, the shifted scores ``d = z - m`` and their exponentials
   into scratch, and their sum; for PROB with ``normalize``, the row sum;
2. the terms: each entry's term, and the partial derivatives ``h`` of each side (in log
   coordinates, ``dt/dlog p``, for the log modes; in probabilities for ``PROB``) into scratch
   rows; then the value's sum and ``H`` (SOFT: ``sum h``; normalized PROB: ``sum u h``, u the
   normalized entries, summed as the log coordinate's partials, which are 0 at u = 0 where
   ``h`` is infinite);
3. the gradient, written once: for SOFT ``(h_j - s_j H) / T``, s the unclipped softmax (times
   ``1 / x_j`` for probabilities, the derivative of the log); for normalized PROB
   ``(h_j - H) / a``, a the row sum; else ``h_j``; all times the row's factor (its weight in
   the reduction, ``1 / log(base)`` and the slope of the post step).

The gradient is written after the last read of the row, element by element, so it may be the
input itself (``grad_out=`` in place).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import Unbound, specialize
from ._cpu import _CALL, _HELPER, _KERNEL, _S, _row_max, clip, exact_div, exp, lane_sum, log
from ._math import LOG_PROBS, LOGITS, PROBS
from .divergences import Terms

finish_row = _S.finish_row
post_slope = _S.post_slope

SOFT_LOGIN = 0
SOFT_PROB = 1
LOG = 2
PROB = 3

TRAIN_BLOCK = 64  # rows per parallel task (they share the scratch rows)
SCRATCH = 7  # scratch rows of k float64 per task: h, s and d per side, and the terms

GRAD = Unbound("the divergence's term and derivatives (Terms.grad, compiled)")
HAS_Q = Unbound("whether the terms read q (Terms.reads_q)")
MODE_P = Unbound("p's mode")
MODE_Q = Unbound("q's mode (PROB, unread, for a divergence of p only)")
CLIP = Unbound("whether eps clips")
TRAIN_ROW = Unbound("_t_train_row specialized")
TRAIN_BLOCK_FN = Unbound("_t_train_block specialized")


def side_mode(form: int, normalize: bool, inv_t: float) -> int:
    """How a side of ``form`` is read (see the module docstring)."""
    if form == LOGITS or inv_t != 1.0 or (form == LOG_PROBS and normalize):
        return SOFT_PROB if form == PROBS else SOFT_LOGIN
    return LOG if form == LOG_PROBS else PROB


@njit(**_HELPER)
def _side_stats(x, d, e, mode, normalize, inv_t):
    """(c, a, 1 / S): for a SOFT mode, with m the maximum of z, d = z - m and e = exp(d) into
    scratch, S their sum and c = log S; for PROB the row sum a with ``normalize`` (else 1).
    NaN in c where a SOFT row cannot be read (a NaN, or no finite maximum)."""
    k = x.shape[0]
    if mode == SOFT_LOGIN or mode == SOFT_PROB:
        top = _row_max(x)
        m = (top if mode == SOFT_LOGIN else log(top)) * inv_t
        if not abs(m) < np.inf:
            return np.nan, 1.0, np.nan  # a NaN, +inf, or nothing above -inf: NaN
        for j in range(k):
            xj = np.float64(x[j])
            dj = (xj if mode == SOFT_LOGIN else log(xj)) * inv_t - m
            d[j] = dj
            e[j] = exp(dj)
        total = lane_sum(e)
        return log(total), 1.0, 1.0 / total
    if mode == PROB and normalize:
        for j in range(k):
            e[j] = np.float64(x[j])
        return 0.0, lane_sum(e), 1.0
    return 0.0, 1.0, 1.0


@njit(**_HELPER)
def _read(x, d, e, j, mode, c, a, inv_s, lo, hi, llo, lhi, clipping):
    """Entry j of a side: (probability, its log, whether it passes a gradient (not clipped),
    the unclipped normalized entry: the softmax for SOFT, x / a for PROB)."""
    if mode == PROB:
        xj = np.float64(x[j])
        u = exact_div(xj, a) if a != 1.0 else xj
        if not clipping:
            return u, log(u), True, u
        r = clip(u, lo, hi)
        return r, log(r), (u >= lo and u <= hi), u
    if mode == LOG:
        lj = np.float64(x[j])
        s = exp(lj)
    else:
        lj = d[j] - c
        s = e[j] * inv_s
    if not clipping:
        return s, lj, True, s
    lc = clip(lj, llo, lhi)
    return exp(lc), lc, (lj >= llo and lj <= lhi), s


def _t_train_row(p, q, scratch, gp, gq, normalize, eps, inv_t, beta, divisor, post, which, scale):
    """A row's value; with ``which`` (1: p, 2: q, 3: both) its gradient scaled by ``scale``
    into gp and gq (see the module docstring). scratch: SCRATCH float64 rows of k."""
    k = p.shape[0]
    hp, hq, sp, sq, dp_, dq_, tt = (scratch[0], scratch[1], scratch[2], scratch[3], scratch[4],
                                    scratch[5], scratch[6])  # fmt: skip
    cp, ap, ip = _side_stats(p, dp_, sp, MODE_P, normalize, inv_t)
    cq, aq, iq = 0.0, 1.0, 1.0
    if HAS_Q:
        cq, aq, iq = _side_stats(q, dq_, sq, MODE_Q, normalize, inv_t)
    lo, hi = (eps, 1.0) if CLIP else (-np.inf, np.inf)
    llo, lhi = (log(eps), 0.0) if CLIP else (-np.inf, np.inf)
    for j in range(k):  # a map: no branch, no sum (they come after, over the scratch rows)
        pj, lpj, pass_p, up = _read(p, dp_, sp, j, MODE_P, cp, ap, ip, lo, hi, llo, lhi, CLIP)
        qj, lqj, pass_q, uq = 1.0, 0.0, True, 1.0
        if HAS_Q:
            qj, lqj, pass_q, uq = _read(q, dq_, sq, j, MODE_Q, cq, aq, iq, lo, hi, llo, lhi,
                                        CLIP)  # fmt: skip
        t, dp, dq, dlp, dlq = GRAD(pj, qj, lpj, lqj, beta)
        tt[j] = t
        hj = dp if MODE_P == PROB else dlp
        hp[j] = hj if pass_p else 0.0
        sp[j] = up
        if MODE_P == PROB:
            # u dt/du, for H = sum u h: the log coordinate's partial, whose limit at u = 0 is
            # 0 (u times dt/du would be 0 * -inf there)
            dp_[j] = dlp if pass_p else 0.0
        if HAS_Q:
            hj = dq if MODE_Q == PROB else dlq
            hq[j] = hj if pass_q else 0.0
            sq[j] = uq
            if MODE_Q == PROB:
                dq_[j] = dlq if pass_q else 0.0
    raw = lane_sum(tt) / divisor
    v = finish_row(raw, post)
    if which == 0:
        return v
    f = scale * post_slope(raw, post) / divisor
    if which & 1:
        _write_grad(p, hp, sp, dp_, gp, MODE_P, normalize, inv_t, ap, f)
    if HAS_Q and which & 2:
        _write_grad(q, hq, sq, dq_, gq, MODE_Q, normalize, inv_t, aq, f)
    return v


@njit(**_HELPER)
def _write_grad(x, h, s, uh, g, mode, normalize, inv_t, a, f):
    """Pass 3 for one side: its gradient into g (which may be x itself: entry j is read before
    it is written). s: the unclipped normalized entries of pass 2; uh: for PROB, u dt/du."""
    k = x.shape[0]
    if mode == SOFT_LOGIN or mode == SOFT_PROB:
        total = lane_sum(h)
        ft = f * inv_t
        if mode == SOFT_LOGIN:
            for j in range(k):
                g[j] = (h[j] - s[j] * total) * ft
        else:
            zero = 0.0 if inv_t > 1.0 else np.nan  # d log x / dx at x == 0: 0 for T < 1
            for j in range(k):
                xj = np.float64(x[j])
                d = (h[j] - s[j] * total) * ft
                g[j] = d / xj if xj != 0.0 else zero
    elif mode == PROB and normalize:
        total = lane_sum(uh)
        fa = f / a
        for j in range(k):
            g[j] = (h[j] - total) * fa
    else:
        for j in range(k):
            g[j] = h[j] * f


def _t_train_block(p, ldp, q, ldq, k, normalize, eps, inv_t, beta, divisor, post, which, gp,
                   ldgp, gq, ldgq, scale, lds, out, r0):  # fmt: skip
    """Rows r0 to r0 + TRAIN_BLOCK (fewer at the end): they share the scratch rows."""
    scratch = np.empty((SCRATCH, k), np.float64)
    for i in range(r0, min(r0 + TRAIN_BLOCK, out.shape[0])):
        s = scale[i * lds]
        if which and s == 0.0:
            # a row left out (where=False, or weight 0): no value, no gradient
            out[i] = 0.0
            if which & 1:
                gp[i * ldgp : i * ldgp + k] = 0.0
            if HAS_Q and which & 2:
                gq[i * ldgq : i * ldgq + k] = 0.0
            continue
        out[i] = TRAIN_ROW(
            p[i * ldp : i * ldp + k],
            q[i * ldq : i * ldq + k],
            scratch,
            gp[i * ldgp : i * ldgp + k] if which & 1 else gp,
            gq[i * ldgq : i * ldgq + k] if (HAS_Q and which & 2) else gq,
            normalize,
            eps,
            inv_t,
            beta,
            divisor,
            post,
            which,
            s,
        )


def _t_train_rows(p, ldp, q, ldq, k, normalize, eps, inv_t, beta, divisor, post, which, gp,
                  ldgp, gq, ldgq, scale, lds, out):  # fmt: skip
    """out[i]: row i's value; gp, gq rows: its gradient times scale[i * lds] (``which``: 0
    none, 1 p, 2 q, 3 both; a row of scale 0 is skipped and left 0 when a gradient is taken).
    """
    for b in prange((out.shape[0] + TRAIN_BLOCK - 1) // TRAIN_BLOCK):
        TRAIN_BLOCK_FN(p, ldp, q, ldq, k, normalize, eps, inv_t, beta, divisor, post, which, gp,
                       ldgp, gq, ldgq, scale, lds, out, b * TRAIN_BLOCK)  # fmt: skip


_TRAIN_KERNELS: dict[tuple[Terms, int, int, bool], object] = {}


def train_kernel(terms: Terms, mode_p: int, mode_q: int, clipping: bool):
    """The training kernel of a divergence's terms for a pair of side modes (specialized on
    first use; ``mode_q`` is ignored for a divergence of p only)."""
    key = (terms, mode_p, mode_q if terms.reads_q else PROB, clipping)
    kernel = _TRAIN_KERNELS.get(key)
    if kernel is None:
        tag = f"{terms.tag}_{key[1]}{key[2]}{'c' if clipping else ''}"
        bindings = {
            "GRAD": getattr(_S, terms.grad.__name__),
            "HAS_Q": terms.reads_q,
            "MODE_P": key[1],
            "MODE_Q": key[2],
            "CLIP": clipping,
        }
        row = specialize(_t_train_row, f"train_row_{tag}", bindings)
        bindings["TRAIN_ROW"] = njit(**_CALL)(row)
        block = specialize(_t_train_block, f"train_block_{tag}", bindings)
        bindings["TRAIN_BLOCK_FN"] = njit(**_CALL)(block)
        rows = specialize(_t_train_rows, f"{tag}_train_rows_cpu", bindings)
        kernel = _TRAIN_KERNELS[key] = njit(**_KERNEL)(rows)
    return kernel
