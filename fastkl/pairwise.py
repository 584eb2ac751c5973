"""Pairwise scoring: KL(P_i || Q_j) for every row of P against every row of Q.

The divergence splits into an entropy and a cross-entropy,

    KL(P_i || Q_j) = sum_t p_it log p_it - sum_t p_it log q_jt = -H(P_i) + CE(P_i, Q_j),

and the cross-entropies of all pairs are one matrix product, which BLAS runs near the
machine's peak. -H(P_i) rides in the same product as one extra column (A = [p | -H],
B = [-log q | 1], D = A @ B.T), so the (n, m) result is written once, by the product, with no
second pass over it.

The product alone would lose the exact semantics; they are restored where needed, never on
the whole output:

* log q = -inf (a zero in Q) enters B as 0. For the rows of Q that hold a zero, the indicator
  product (p > 0) @ (q == 0).T, taken on bits (one AND per pair and 64 categories), marks the
  pairs that are +inf;
* 0 log 0 = 0 in the entropy, and a zero p contributes 0 to the product;
* a row of P or Q that holds a value the product cannot carry (NaN, a negative probability,
  +inf) is scored by :func:`fastkl.kl_div` against the block on the other side, so its
  semantics are kl_div's by construction.

Memory: inputs are converted (dtype, form, clipping) a block of rows at a time, so the
temporaries (converted P, log Q, the indicators, a block of scores for ``nearest_kl``) stay
within a fixed budget whatever n and m (see ``BLOCK_BYTES`` and ``NEAREST_BLOCK_BYTES``).

The two small kernels here (``_mark_inf_cpu``, ``_topk_merge_cpu``) do what numpy does
slowly: a scattered write and a running selection.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike

from . import _config, _prepare
from ._config import JIT_OPTIONS
from .api import entropy, kl_div

__all__ = ["nearest_kl", "pairwise_kl"]

Form = Literal["probs", "log_probs", "logits"]

#: Bytes of one converted block of rows (P or Q, k + 1 columns in the compute dtype): 16,131
#: rows of 64 float32. A call makes one product per pair of blocks, and on a loaded machine
#: each multi-threaded BLAS call pays for waking its threads (measured on 2 shared cores:
#: 10,000 x 10,000 x 64 float32 as 2 x 2 blocks took 1.2x the time of one product, as one
#: block 1.0x), so blocks are as large as a small budget allows. Peak temporaries are about
#: twice this (measured: 5 MiB for 10,000 x 10,000 x 64 float32, 7.6 MiB in float64). Rows
#: longer than 131,072 float32 go MIN_BLOCK_ROWS at a time.
BLOCK_BYTES = 1 << 22
MIN_BLOCK_ROWS = 8

#: Bytes of the block of scores of ``nearest_kl`` (rows of P x NEAREST_Q_ROWS rows of Q):
#: 2,048 x 2,048 float32.
NEAREST_BLOCK_BYTES = 1 << 24
#: exp of a float64 below this is 0 (as kl_div's exact terms take it: ``_simd._exp_f64``)
EXP_ZERO_BELOW = -745.1332191019412
NEAREST_Q_ROWS = 2048


# --- conversion of one block of rows ---------------------------------------------------


def _log_probs_into(x: np.ndarray, form: str, eps: float, out: np.ndarray) -> None:
    """Write the log-probabilities of the rows ``x`` (given in ``form``, in the dtype of
    ``out``) into ``out``, clipped to [log eps, 0] when eps > 0 (probabilities to [eps, 1],
    as kl_div does)."""
    with np.errstate(all="ignore"):
        if form == "probs":
            if eps:
                np.clip(x, eps, 1.0, out=out)
                np.log(out, out=out)
            else:
                np.log(x, out=out)
            return
        out[...] = x
        if form == "logits":  # log-softmax; NaN for rows with NaN, +inf, or only -inf
            out -= out.max(axis=1, keepdims=True)
            out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
        if eps:
            np.clip(out, math.log(eps), 0.0, out=out)


def _entropy_rows(x: np.ndarray, form: str, eps: float) -> np.ndarray:
    """H(P_i) in nats of a block of rows given in ``form`` (in the compute dtype), clipped to
    [eps, 1] first when eps > 0: the one entropy of pairwise scoring.

    Rows with values the product cannot carry are scored by kl_div instead, so only valid
    rows matter here.
    """
    return entropy(x, p_form=form, eps=eps or None)


def _bits(mask: np.ndarray) -> np.ndarray:
    """Each row of a boolean (rows, k) mask as ceil(k / 64) uint64 words of bits."""
    packed = np.packbits(mask, axis=1)
    words = np.zeros((mask.shape[0], -(-packed.shape[1] // 8) * 8), np.uint8)
    words[:, : packed.shape[1]] = packed
    return words.view(np.uint64)


@njit(parallel=True, cache=_config.CACHE, **JIT_OPTIONS)
def _mark_inf_cpu(p_bits, zero_bits, cols, inf, target):
    """``target[i, cols[c]] = inf`` where row i of P is positive at a zero of row c of Q.

    The indicator product (p > 0) @ (q == 0).T, taken on bits: one AND per 64 categories and
    pair, in one pass whatever the pattern of zeros.
    """
    words = p_bits.shape[1]
    for i in prange(p_bits.shape[0]):
        for c in range(zero_bits.shape[0]):
            hit = p_bits[i, 0] & zero_bits[c, 0]
            for w in range(1, words):
                hit |= p_bits[i, w] & zero_bits[c, w]
            if hit != 0:
                target[i, cols[c]] = inf


class _PBlock:
    """Rows ``i0:i1`` of P as the left operand A = [p | -H / log(base)], shape (rows, k + 1)."""

    def __init__(self, x: np.ndarray, i0: int, form: str, eps: float, divisor: float, dtype):
        self.i0, self.rows = i0, x.shape[0]
        k = x.shape[1]
        a = np.empty((self.rows, k + 1), dtype)
        p = a[:, :k]
        with np.errstate(all="ignore"):
            if form == "probs":
                if eps:
                    np.clip(x, eps, 1.0, out=p)
                else:
                    p[...] = x
            else:
                _log_probs_into(x, form, eps, p)
                np.exp(p, out=p)
            np.divide(_entropy_rows(x, form, eps), -divisor, out=a[:, k])
            # NaN, negative or infinite probabilities: the row is kl_div's (see module doc)
            self.bad = np.flatnonzero(~(p.min(axis=1) >= 0) | ~np.isfinite(a[:, k]))
        a[self.bad] = 0.0
        self.a = a
        # log forms: p > 0 as kl_div decides it, from the logs in float64, even where exp
        # underflows in the compute dtype (float32 from log p < -103.9)
        self._logs = None if form == "probs" else (x, form, eps)
        self._positive_bits: np.ndarray | None = None

    def positive_bits(self) -> np.ndarray:
        """The indicator p > 0 as bits (see ``_bits``), made on first use."""
        if self._positive_bits is None:
            if self._logs is None:
                positive = self.a[:, :-1] > 0
            else:
                x, form, eps = self._logs
                logs = np.empty(x.shape, np.float64)
                _log_probs_into(x, form, eps, logs)
                positive = logs >= EXP_ZERO_BELOW
            positive[self.bad] = False
            self._positive_bits = _bits(positive)
        return self._positive_bits


class _QBlock:
    """Rows ``j0:j1`` of Q as the right operand B = [-log q / log(base) | 1], shape
    (rows, k + 1), with log q = -inf entered as 0 and remembered in an indicator."""

    def __init__(self, x: np.ndarray, j0: int, form: str, eps: float, divisor: float, dtype):
        self.j0, self.rows = j0, x.shape[0]
        k = x.shape[1]
        b = np.empty((self.rows, k + 1), dtype)
        logq = b[:, :k]
        _log_probs_into(x, form, eps, logq)
        # One pass finds the rows with a -inf (a zero), a NaN (also from a negative
        # probability) or a +inf; only those are looked at element by element.
        with np.errstate(invalid="ignore"):
            odd = np.flatnonzero(~np.isfinite(logq.sum(axis=1)))
        self.bad = odd[:0]
        self.with_zeros = odd[:0]
        self.zero_bits = _bits(np.zeros((0, k), bool))
        if odd.size:
            rows = logq[odd]
            zero = rows == -np.inf
            bad = ~(rows < np.inf).all(axis=1)  # NaN or +inf: the row is kl_div's
            has_zero = ~bad & zero.any(axis=1)
            self.bad = odd[bad]
            self.with_zeros = odd[has_zero]
            self.zero_bits = _bits(zero[has_zero])
            rows[zero] = 0.0  # the +inf of these pairs comes from the indicator product
            rows[bad] = 0.0
            logq[odd] = rows
        np.divide(logq, -divisor, out=logq)
        b[:, k] = 1.0
        self.b = b


class _Scorer:
    """Blocks of the matrix KL(P_i || Q_j), shared by pairwise_kl and nearest_kl."""

    def __init__(self, P: np.ndarray, Q: np.ndarray, p_form, q_form, base, eps) -> None:
        self.P, self.Q = P, Q  # 2-d, validated
        self.p_form = p_form
        self.q_form = q_form
        self.base, self.eps = base, eps
        self.divisor = _prepare.parse_base(base)
        self.eps_value = _prepare.parse_eps(eps)
        # +inf / log(base): -inf for a base below 1, as kl_div gives
        self.inf = math.inf if self.divisor > 0 else -math.inf
        any64 = P.dtype.itemsize == 8 or Q.dtype.itemsize == 8
        self.dtype = np.dtype(np.float64 if any64 else np.float32)
        self.k = P.shape[1]

    def rows_per_block(self) -> int:
        return max(MIN_BLOCK_ROWS, BLOCK_BYTES // ((self.k + 1) * self.dtype.itemsize))

    def p_block(self, i0: int, i1: int) -> _PBlock:
        x = self.P[i0:i1].astype(self.dtype, copy=False)  # a block at most: f16, mixed dtypes
        return _PBlock(x, i0, self.p_form, self.eps_value, self.divisor, self.dtype)

    def q_block(self, j0: int, j1: int) -> _QBlock:
        x = self.Q[j0:j1].astype(self.dtype, copy=False)
        return _QBlock(x, j0, self.q_form, self.eps_value, self.divisor, self.dtype)

    def score(self, pb: _PBlock, qb: _QBlock, target: np.ndarray) -> None:
        """KL(P_i || Q_j) for the rows of pb and qb into ``target`` (pb.rows, qb.rows)."""
        np.matmul(pb.a, qb.b.T, out=target)
        if qb.with_zeros.size:
            with _config.kernel_guard():
                _mark_inf_cpu(pb.positive_bits(), qb.zero_bits, qb.with_zeros, self.inf, target)
        kw = {"p_form": self.p_form, "q_form": self.q_form, "base": self.base, "eps": self.eps}
        q_rows = self.Q[qb.j0 : qb.j0 + qb.rows]
        for i in pb.bad:
            kl_div(self.P[pb.i0 + i], q_rows, out=target[i], **kw)
        p_rows = self.P[pb.i0 : pb.i0 + pb.rows]
        for j in qb.bad:
            kl_div(p_rows, self.Q[qb.j0 + j], out=target[:, j], **kw)


def _even(n: int, most: int) -> int:
    """The step that splits n rows into equal blocks of at most ``most`` rows (20,000 rows in
    blocks of at most 16,131 go as 2 x 10,000, not 16,131 + 3,869: no thin product)."""
    return -(-n // -(-n // most)) if n else most


def _as_matrix(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """``x`` as a 2-d float array of rows (a 1-d input is one row), and whether it was 1-d."""
    a = _prepare.as_float_array(x, name)
    if a.ndim > 2:
        raise ValueError(
            f"{name}: expected a 2-d array of distributions (rows) or one 1-d distribution, "
            f"got {a.ndim} dimensions (shape {a.shape})"
        )
    return (a[np.newaxis], True) if a.ndim == 1 else (a, False)


def _setup(P, Q, p_form, q_form, base, eps) -> tuple[_Scorer, bool, bool]:
    _prepare.parse_form(p_form, "p_form")
    _prepare.parse_form(q_form, "q_form")
    P2, p1 = _as_matrix(P, "P")
    Q2, q1 = _as_matrix(Q, "Q")
    if P2.shape[1] != Q2.shape[1]:
        raise ValueError(
            "P and Q must have the same distribution length (last axis): "
            f"got P {np.shape(P)} and Q {np.shape(Q)}"
        )
    if P2.shape[1] == 0:
        raise ValueError("P, Q: zero-length distributions (k == 0)")
    return _Scorer(P2, Q2, p_form, q_form, base, eps), p1, q1


# --- public functions ------------------------------------------------------------------------


def pairwise_kl(
    P: ArrayLike,
    Q: ArrayLike,
    *,
    p_form: Form = "probs",
    q_form: Form = "probs",
    base: float | None = None,
    eps: float | None = None,
    out: np.ndarray | None = None,
) -> Any:
    r"""Kullback-Leibler divergence of every row of P from every row of Q.

    .. math::

        D_{ij} = D(P_i \,\|\, Q_j) = \sum_t p_{it} \log \frac{p_{it}}{q_{jt}}
               = -H(P_i) - \sum_t p_{it} \log q_{jt}

    The second sum, for all pairs at once, is one BLAS matrix product (``-H(P_i)`` rides in
    it as an extra column), taken over blocks of rows so that the converted inputs never
    exist whole: memory beyond the result stays within a few MiB whatever the sizes.

    The conventions are those of :func:`fastkl.kl_div`, exactly: a term is 0 where
    :math:`p_{it} = 0` (also where :math:`q_{jt} = 0`), :math:`D_{ij} = +\infty` where
    :math:`p_{it} > 0` and :math:`q_{jt} = 0` for some t, a NaN in :math:`P_i` makes row i
    NaN and a NaN in :math:`Q_j` column j. Rows holding a NaN, a negative probability or an
    infinity are scored by :func:`fastkl.kl_div` itself, so every entry equals
    ``kl_div(P[i], Q[j])`` up to rounding.

    Parameters
    ----------
    P, Q : array_like
        Distributions as rows: P of shape (n, k), Q of shape (m, k), float16 (computed in
        float32), float32 or float64. A 1-d array is one distribution: P of shape (k,) gives
        a result of shape (m,), Q of shape (k,) one of shape (n,), both 1-d a scalar.
    p_form, q_form : {"probs", "log_probs", "logits"}
        How each side is given: probabilities, natural-log probabilities (-inf is a zero
        probability), or unnormalized log-scores (a log-softmax is taken per row, a block of
        rows at a time).
    base : float, optional
        Logarithm base: None for nats, 2 for bits, any finite base > 0 and != 1.
    eps : float, optional
        A float in (0, 1): clip both probabilities to ``[eps, 1]`` first (Keras-style), as
        :func:`fastkl.kl_div` does. None keeps the exact semantics.
    out : ndarray, optional
        An array of the result's shape and dtype, writable and not overlapping the inputs
        (any strides), filled and returned.

    Returns
    -------
    ndarray or numpy scalar
        Shape (n, m) (see ``P, Q`` for 1-d inputs); float64 if either input is float64, else
        float32.

    Raises
    ------
    TypeError
        A non-floating input, or an option of the wrong type.
    ValueError
        An input with more than 2 dimensions or 0-d, different distribution lengths,
        ``k == 0``, an unknown form, a bad ``base`` or ``eps``, or an ``out`` of the wrong
        shape or dtype, read-only or overlapping an input.

    See Also
    --------
    fastkl.kl_div : the same divergence for aligned rows.
    nearest_kl : the k rows of Q closest to each row of P, without the (n, m) matrix.

    Notes
    -----
    **Precision.** The product is taken in the result's precision (float32 inputs use float32
    BLAS), and the decomposition cancels where :math:`P_i \approx Q_j`: the absolute error is
    about :math:`\epsilon \, (H(P_i) + |\sum_t p_{it} \log q_{jt}|)` times a small factor
    (:math:`\epsilon` the machine epsilon of the result dtype, 1.2e-7 for float32; the factor
    is at most k + 2 and in practice below 4), not relative to the result. For 64 random
    categories in float32 that is 4e-7 nats typically and 3e-6 at most, where
    :func:`fastkl.kl_div` is within 3e-7; KL(P || P) comes out within about 1e-6 of 0, either
    sign. Where that matters, pass float64 (errors near 1e-15). BLAS may order its sums
    differently for other shapes, so a pair's value can differ in the last bits between calls
    of different sizes.

    **Memory.** Beyond the result, a few blocks of at most ``BLOCK_BYTES`` (4 MiB) of
    converted rows: 5 MiB at 10,000 x 10,000 x 64 float32, whatever n and m.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.pairwise import pairwise_kl
    >>> P = np.array([[0.1, 0.9], [0.6, 0.4]])
    >>> Q = np.array([[0.4, 0.6], [0.5, 0.5], [1.0, 0.0]])
    >>> pairwise_kl(P, Q)
    array([[0.22628916, 0.36806421,        inf],
           [0.08109302, 0.02013551,        inf]])
    >>> pairwise_kl(P[0], Q, base=2)  # one row of P: shape (m,), in bits
    array([0.32646625, 0.53100441,        inf])
    >>> pairwise_kl(np.log(P), Q, p_form="log_probs").round(6)
    array([[0.226289, 0.368064,      inf],
           [0.081093, 0.020136,      inf]])
    """
    scorer, p1, q1 = _setup(P, Q, p_form, q_form, base, eps)
    n, m = scorer.P.shape[0], scorer.Q.shape[0]
    shape = {(False, False): (n, m), (True, False): (m,), (False, True): (n,), (True, True): ()}
    shape = shape[(p1, q1)]
    if out is not None:
        _prepare.check_out(out, shape, scorer.dtype, (P, Q))
        result = out
    else:
        result = np.empty(shape, scorer.dtype)
    # (n, m) view of the result, whatever its strides (matmul writes strided outputs in place)
    target = result.reshape(n, m) if result.flags.c_contiguous else result
    if result.ndim < 2 and not result.flags.c_contiguous:
        target = result[np.newaxis] if p1 else result[:, np.newaxis]
    p_step, q_step = _even(n, scorer.rows_per_block()), _even(m, scorer.rows_per_block())
    for i0 in range(0, n, p_step):
        pb = scorer.p_block(i0, min(n, i0 + p_step))
        for j0 in range(0, m, q_step):
            qb = scorer.q_block(j0, min(m, j0 + q_step))
            scorer.score(pb, qb, target[i0 : i0 + pb.rows, j0 : j0 + qb.rows])
    if out is None and result.ndim == 0:
        return result[()]
    return result


#: Scores that ``_topk_merge_cpu`` screens at once with one vectorized compare.
MERGE_SKIP = 64


@njit(parallel=True, cache=_config.CACHE, **JIT_OPTIONS)
def _topk_merge_cpu(d, rows, cols, j0, filled, vals, idx):
    """Merge row r of the scores ``d[:rows, :cols]`` (columns j0, j0 + 1, ... of Q) into row
    r of the running smallest ``vals`` and their column indices ``idx`` (the first ``filled``
    of each row set), kept sorted by (value, index) with NaN last.

    An insertion pass, not a selection: once a row holds k scores, a run of MERGE_SKIP scores
    with none below the k-th is skipped after one vectorized count, which is almost every run,
    so this reads d at about memory speed (np.argpartition of the same block costs ~8x the
    block's matrix product). The count's loop has a constant trip count: with a variable one
    LLVM leaves it scalar (10x slower).
    """
    k = vals.shape[1]
    for r in prange(rows):
        row = d[r]
        v_row = vals[r]
        i_row = idx[r]
        c = filled
        j = 0
        while j < cols:
            stop = min(j + MERGE_SKIP, cols)
            worst = v_row[k - 1]
            if c == k and stop - j == MERGE_SKIP and worst == worst:
                run = row[j:stop]
                below = 0
                for t in range(MERGE_SKIP):
                    below += run[t] < worst
                if below == 0:
                    j = stop
                    continue
            for jj in range(j, stop):
                v = row[jj]
                worst = v_row[k - 1]
                if c < k:
                    pos = c
                    c += 1
                elif v < worst or (worst != worst and v == v):
                    pos = k - 1
                else:
                    continue  # ties keep the lower index: a later equal score never displaces
                while pos > 0:
                    u = v_row[pos - 1]
                    if v < u or (u != u and v == v):  # strictly before u (NaN sorts last)
                        v_row[pos] = u
                        i_row[pos] = i_row[pos - 1]
                        pos -= 1
                    else:
                        break
                v_row[pos] = v
                i_row[pos] = j0 + jj
            j = stop


def nearest_kl(
    P: ArrayLike,
    Q: ArrayLike,
    k: int = 1,
    *,
    p_form: Form = "probs",
    q_form: Form = "probs",
    base: float | None = None,
    eps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""For each row of P, the ``k`` rows of Q with the smallest :math:`D(P_i \,\|\, Q_j)`.

    The scores are those of :func:`pairwise_kl` (same formula, conventions and precision),
    computed a block of P rows against a block of Q rows at a time and merged into a running
    selection per row of P: memory is O(n k) for the results plus one block of scores
    (``NEAREST_BLOCK_BYTES``, 16 MiB) and the converted rows, never O(n m).

    Parameters
    ----------
    P, Q : array_like
        Distributions as rows, P of shape (n, k_dist), Q of shape (m, k_dist); a 1-d P is one
        row (the results then have shape (k,)), a 1-d Q is one row (m == 1).
    k : int
        How many rows of Q to return per row of P, ``1 <= k <= m``.
    p_form, q_form, base, eps
        As for :func:`pairwise_kl`.

    Returns
    -------
    values : ndarray, shape (n, k)
        The k smallest divergences of each row of P, ascending; float64 if either input is
        float64, else float32.
    indices : ndarray of int64, shape (n, k)
        The rows of Q they belong to. Ties go to the lower index, and NaN sorts after every
        number (+inf included), so the order is that of a stable ``np.argsort`` of each row
        of ``pairwise_kl(P, Q)``.

    Raises
    ------
    TypeError, ValueError
        As for :func:`pairwise_kl`; also a ``k`` that is not an integer (TypeError) or outside
        ``[1, m]`` (ValueError).

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.pairwise import nearest_kl
    >>> P = np.array([[0.1, 0.9], [0.6, 0.4]])
    >>> Q = np.array([[0.4, 0.6], [0.5, 0.5], [1.0, 0.0]])
    >>> values, indices = nearest_kl(P, Q, k=2)
    >>> indices
    array([[0, 1],
           [1, 0]])
    >>> values
    array([[0.22628916, 0.36806421],
           [0.02013551, 0.08109302]])
    """
    scorer, p1, _ = _setup(P, Q, p_form, q_form, base, eps)
    n, m = scorer.P.shape[0], scorer.Q.shape[0]
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an integer, got {k!r}")
    k = int(k)
    if not 1 <= k <= m:
        raise ValueError(f"k: expected 1 <= k <= {m} (the number of rows of Q), got {k}")
    values = np.empty((n, k), scorer.dtype)
    indices = np.empty((n, k), np.int64)
    # Q blocks of NEAREST_Q_ROWS rows (k at least, so that each merge adds k candidates at
    # most once per block); P rows fill the rest of the block, so Q is converted n / bp times.
    bq = min(m, max(NEAREST_Q_ROWS, k))
    bp = max(1, min(scorer.rows_per_block(), NEAREST_BLOCK_BYTES // (bq * scorer.dtype.itemsize)))
    scores = np.empty((min(bp, n), bq), scorer.dtype)
    for i0 in range(0, n, bp):
        pb = scorer.p_block(i0, min(n, i0 + bp))
        vals, idx = values[i0 : i0 + pb.rows], indices[i0 : i0 + pb.rows]
        filled = 0
        for j0 in range(0, m, bq):
            qb = scorer.q_block(j0, min(m, j0 + bq))
            scorer.score(pb, qb, scores[: pb.rows, : qb.rows])
            with _config.kernel_guard():
                _topk_merge_cpu(scores, pb.rows, qb.rows, j0, filled, vals, idx)
            filled = min(k, filled + qb.rows)
    if p1:
        return values[0], indices[0]
    return values, indices
