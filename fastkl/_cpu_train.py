"""CPU training kernels: a row's value and its gradient in one call, with a temperature and a
skew.

The value kernels (``_cpu``, ``_cpu_family``) are specialized for speed in the inputs'
precision; these compute in float64 and serve every call that asks for more than a value at
temperature 1 (``grad=``, ``temperature=``, Jensen-Shannon's ``beta``). One template serves
every divergence through its spec's ``Terms.grad`` (``_math.<name>_grad``: the term and its
partial derivatives), and the form of each side is a runtime argument: one compiled kernel per
divergence and dtype.

How a side is read (its *kind*):

* ``SOFT``: a softmax of ``z = f(x) / T``, with ``f(x) = x`` for logits and log-probabilities
  and ``log x`` for probabilities. Logits, normalized log-probabilities and any side under a
  temperature other than 1. Its log-probabilities are ``(z - m) - c``, with m the row's
  maximum of z and c the log of its shifted mass (kept apart: ``m + c`` would round c away
  for huge logits).
* ``LOG``: log-probabilities as given (``exp(x)`` the probabilities).
* ``PROB``: probabilities, divided by their row sum with ``normalize``.

``eps`` then clips the probabilities to ``[eps, 1]`` (a log side's logs to ``[log eps, 0]``),
and a clipped entry passes no gradient.

A row takes three passes over its inputs (from cache for rows up to the L2 size):

1. statistics of each side: the maximum and the log-sum-exp of z (``SOFT``), or the row sum
   (``PROB`` with ``normalize``);
2. the terms: the value's sum, and each gradient side's partial derivatives ``h`` (in log
   coordinates for log kinds, ``dt/dlog p``; in probabilities for ``PROB``) into a float64
   scratch row, with their sum ``H`` (``SOFT``: ``sum h``; normalized ``PROB``:
   ``sum u h`` with u the normalized entries);
3. the gradient, written once: for ``SOFT`` ``(h_j - s_j H) / T``, s the unclipped softmax
   (times ``1 / x_j`` for probabilities, the derivative of the log); for normalized ``PROB``
   ``(h_j - H) / a``, a the row sum; else ``h_j``; all times the row's factor (its weight in
   the reduction, ``1 / log(base)`` and the slope of the post step).

The gradient is written after the last read of the row, element by element, so it may be the
input itself (``grad_out=`` in place). A row's sums run in the source's order (no ``reassoc``),
so results are bitwise the same for any thread count.

Speed: the kinds are runtime values, so the loops do not vectorize; the transcendental
functions run one at a time (about 5 ns an ``exp``, 8 a ``log``). Specializing the kernel per
pair of kinds, as the value kernels are, is what would vectorize it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import Unbound, specialize
from ._cpu import (
    _CALL,
    _HELPER,
    _KERNEL,
    _S,
    LANES,
    _row_max,
    clip,
    exact_div,
    exp,
    lanes,
    lanes_total,
    log,
)
from ._math import LOG_PROBS, LOGITS, PROBS
from .divergences import Terms

finish_row = _S.finish_row
post_slope = _S.post_slope

SOFT = 0
LOG = 1
PROB = 2

TRAIN_BLOCK = 64  # rows per parallel task (they share the scratch rows of the derivatives)

GRAD = Unbound("the divergence's term and derivatives (Terms.grad, compiled)")
HAS_Q = Unbound("whether the terms read q (Terms.reads_q)")
TRAIN_ROW = Unbound("_t_train_row specialized")
TRAIN_ELEM = Unbound("_t_train_elem specialized")
TRAIN_BLOCK_FN = Unbound("_t_train_block specialized")


@njit(**_CALL)
def side_kind(form, normalize, inv_t):
    """How a side of ``form`` is read (see the module docstring)."""
    if form == LOGITS or inv_t != 1.0 or (form == LOG_PROBS and normalize):
        return SOFT
    return LOG if form == LOG_PROBS else PROB


@njit(**_HELPER)
def _z(x, login, inv_t):
    """A SOFT side's score: ``x / T`` for log inputs, ``log(x) / T`` for probabilities."""
    return (x if login else log(x)) * inv_t


@njit(**_CALL)
def side_stats(x, kind, login, normalize, inv_t):
    """(m, c, a): for SOFT the maximum m of z and c = log(sum exp(z - m)); for PROB the row sum
    a with ``normalize`` (else 1). NaN in c or a where the row cannot be read (a NaN, or no
    finite maximum)."""
    k = x.shape[0]
    if kind == SOFT:
        top = _row_max(x)
        m = _z(top, login, inv_t)
        if not abs(m) < np.inf:
            return m, np.nan, 1.0  # a NaN, +inf, or nothing above -inf: the row is NaN
        acc = lanes(0.0)
        full = k - k % LANES
        for j0 in range(0, full, LANES):
            for lane in range(LANES):
                acc[lane] += exp(_z(np.float64(x[j0 + lane]), login, inv_t) - m)
        for lane in range(k - full):
            acc[lane] += exp(_z(np.float64(x[full + lane]), login, inv_t) - m)
        return m, log(lanes_total(acc)), 1.0
    if kind == PROB and normalize:
        acc = lanes(0.0)
        full = k - k % LANES
        for j0 in range(0, full, LANES):
            for lane in range(LANES):
                acc[lane] += np.float64(x[j0 + lane])
        for lane in range(k - full):
            acc[lane] += np.float64(x[full + lane])
        return 0.0, 0.0, lanes_total(acc)
    return 0.0, 0.0, 1.0


@njit(**_HELPER)
def _read(xj, kind, login, inv_t, m, c, a, clipping, lo, hi, llo, lhi):
    """Entry j of a side: (probability, its log, whether it passes a gradient (not clipped),
    the unclipped normalized entry: the softmax for SOFT, x / a for PROB)."""
    if kind == PROB:
        u = exact_div(xj, a) if a != 1.0 else xj
        if not clipping:
            return u, log(u), True, u
        r = clip(u, lo, hi)
        return r, log(r), (u >= lo and u <= hi), u
    lj = (_z(xj, login, inv_t) - m) - c if kind == SOFT else xj
    s = exp(lj)
    if not clipping:
        return s, lj, True, s
    lc = clip(lj, llo, lhi)
    return exp(lc), lc, (lj >= llo and lj <= lhi), s


def _t_train_elem(p, q, hp, hq, sp, sq, j, kp, kq, lp_in, lq_in, inv_t, mp, cp, ap, mq, cq, aq,
                  clipping, lo, hi, llo, lhi, beta, want_p, want_q):  # fmt: skip
    """Entry j of pass 2: (its term, its share of H for p and for q); the derivatives h and
    the unclipped normalized entries go to the scratch rows hp, hq, sp, sq."""
    pj, lpj, pass_p, up = _read(np.float64(p[j]), kp, lp_in, inv_t, mp, cp, ap, clipping, lo, hi,
                                llo, lhi)  # fmt: skip
    qj, lqj, pass_q, uq = 1.0, 0.0, True, 1.0
    if HAS_Q:
        qj, lqj, pass_q, uq = _read(np.float64(q[j]), kq, lq_in, inv_t, mq, cq, aq, clipping, lo,
                                    hi, llo, lhi)  # fmt: skip
    t, dp, dq, dlp, dlq = GRAD(pj, qj, lpj, lqj, beta)
    share_p = 0.0
    share_q = 0.0
    if want_p:
        h = (dp if kp == PROB else dlp) if pass_p else 0.0
        hp[j] = h
        sp[j] = up
        share_p = h * up if kp == PROB else h
    if want_q:
        h = (dq if kq == PROB else dlq) if pass_q else 0.0
        hq[j] = h
        sq[j] = uq
        share_q = h * uq if kq == PROB else h
    return t, share_p, share_q


def _t_train_row(
    p, q, hp, hq, sp, sq, gp, gq, fp, fq, normalize, eps, inv_t, beta, divisor, post, which, scale
):
    """A row's value; with ``which`` (1: p, 2: q, 3: both) its gradient scaled by ``scale``
    into gp and gq (see the module docstring). hp, hq, sp, sq: float64 scratch of k
    elements."""
    k = p.shape[0]
    kp = side_kind(fp, normalize, inv_t)
    kq = side_kind(fq, normalize, inv_t) if HAS_Q else PROB
    lp_in, lq_in = fp != PROBS, fq != PROBS
    mp, cp, ap = side_stats(p, kp, lp_in, normalize, inv_t)
    mq, cq, aq = side_stats(q, kq, lq_in, normalize, inv_t) if HAS_Q else (0.0, 0.0, 1.0)
    clipping = eps > 0.0
    lo, hi = (eps, 1.0) if clipping else (-np.inf, np.inf)
    llo, lhi = (log(eps), 0.0) if clipping else (-np.inf, np.inf)
    want_p = (which & 1) != 0
    want_q = HAS_Q and (which & 2) != 0
    # in order: the row's sums do not vectorize (its kinds are runtime values), so the order
    # is the source's whatever the build
    acc = 0.0
    sum_p = 0.0
    sum_q = 0.0
    for j in range(k):
        t, a_p, a_q = TRAIN_ELEM(p, q, hp, hq, sp, sq, j, kp, kq, lp_in, lq_in, inv_t, mp, cp, ap,
                                 mq, cq, aq, clipping, lo, hi, llo, lhi, beta, want_p,
                                 want_q)  # fmt: skip
        acc += t
        sum_p += a_p
        sum_q += a_q
    raw = acc / divisor
    v = finish_row(raw, post)
    if which == 0:
        return v
    f = scale * post_slope(raw, post) / divisor
    if want_p:
        _write_grad(p, hp, sp, gp, kp, lp_in, normalize, inv_t, ap, sum_p, f)
    if want_q:
        _write_grad(q, hq, sq, gq, kq, lq_in, normalize, inv_t, aq, sum_q, f)
    return v


@njit(**_HELPER)
def _write_grad(x, h, s, g, kind, login, normalize, inv_t, a, total, f):
    """Pass 3 for one side: its gradient into g (which may be x itself: entry j is read before
    it is written). s: the unclipped normalized entries of pass 2."""
    k = x.shape[0]
    if kind == SOFT:
        ft = f * inv_t
        if login:
            for j in range(k):
                g[j] = (h[j] - s[j] * total) * ft
        else:
            for j in range(k):
                # d log x / dx = 1 / x; at x == 0 the limit is 0 for T < 1
                xj = np.float64(x[j])
                d = (h[j] - s[j] * total) * ft
                g[j] = d / xj if xj != 0.0 else (0.0 if inv_t > 1.0 else np.nan)
    elif kind == PROB and normalize:
        fa = f / a
        for j in range(k):
            g[j] = (h[j] - total) * fa
    else:
        for j in range(k):
            g[j] = h[j] * f


def _t_train_block(p, ldp, q, ldq, k, fp, fq, normalize, eps, inv_t, beta, divisor, post,
                   which, gp, ldgp, gq, ldgq, scale, lds, out, r0):  # fmt: skip
    """Rows r0 to r0 + TRAIN_BLOCK (fewer at the end): they share the scratch rows."""
    h = np.empty((4, k if which else 1), np.float64)
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
            h[0],
            h[1],
            h[2],
            h[3],
            gp[i * ldgp : i * ldgp + k] if which & 1 else gp,
            gq[i * ldgq : i * ldgq + k] if (HAS_Q and which & 2) else gq,
            fp,
            fq,
            normalize,
            eps,
            inv_t,
            beta,
            divisor,
            post,
            which,
            s,
        )


def _t_train_rows(p, ldp, q, ldq, k, fp, fq, normalize, eps, inv_t, beta, divisor, post,
                  which, gp, ldgp, gq, ldgq, scale, lds, out):  # fmt: skip
    """out[i]: row i's value; gp, gq rows: its gradient times scale[i * lds] (``which``: 0
    none, 1 p, 2 q, 3 both; a row of scale 0 is skipped and left 0 when a gradient is taken).
    """
    for b in prange((out.shape[0] + TRAIN_BLOCK - 1) // TRAIN_BLOCK):
        TRAIN_BLOCK_FN(p, ldp, q, ldq, k, fp, fq, normalize, eps, inv_t, beta, divisor, post,
                       which, gp, ldgp, gq, ldgq, scale, lds, out, b * TRAIN_BLOCK)  # fmt: skip


_TRAIN_KERNELS: dict[Terms, object] = {}


def train_kernel(terms: Terms):
    """The training kernel of a divergence's terms (specialized on first use)."""
    kernel = _TRAIN_KERNELS.get(terms)
    if kernel is None:
        bindings = {"GRAD": getattr(_S, terms.grad.__name__), "HAS_Q": terms.reads_q}
        elem = specialize(_t_train_elem, f"train_elem_{terms.tag}", bindings)
        bindings["TRAIN_ELEM"] = njit(**_HELPER)(elem)
        row = specialize(_t_train_row, f"train_row_{terms.tag}", bindings)
        bindings["TRAIN_ROW"] = njit(**_HELPER)(row)
        block = specialize(_t_train_block, f"train_block_{terms.tag}", bindings)
        bindings["TRAIN_BLOCK_FN"] = njit(**_CALL)(block)
        rows = specialize(_t_train_rows, f"{terms.tag}_train_rows_cpu", bindings)
        kernel = _TRAIN_KERNELS[terms] = njit(**_KERNEL)(rows)
    return kernel
