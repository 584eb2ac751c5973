"""pairwise_kl and nearest_kl against a naive double loop, kl_div, and np.argsort."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import kl_ref, random_probs

import fastkl
import fastkl.pairwise as pw
from fastkl.pairwise import nearest_kl, pairwise_kl

FORMS = ["probs", "log_probs", "logits"]
DTYPES = [np.float32, np.float64]


def rows_in_form(rng, n, k, form, dtype, zeros=0.25):
    """n distributions of length k with about ``zeros`` of their entries 0, given in ``form``
    (-inf log-probabilities and logits for the zeros; logits carry a random row shift)."""
    p = random_probs(rng, (n, k))
    p[rng.random((n, k)) < zeros] = 0.0
    p[np.arange(n), rng.integers(0, k, n)] += 0.5  # every row keeps some mass
    p /= p.sum(axis=1, keepdims=True)
    if form == "probs":
        return p.astype(dtype)
    with np.errstate(divide="ignore"):
        x = np.log(p)
    if form == "logits":
        x += rng.normal(size=(n, 1)) * 3
    return x.astype(dtype)


def naive_pairwise(P, Q, **kw):
    """The obvious double loop over the scipy reference (float64)."""
    P, Q = np.atleast_2d(P), np.atleast_2d(Q)
    return np.array([[kl_ref(p, q, **kw) for q in Q] for p in P])


def error_scale(P, Q, p_form, q_form, eps):
    """S_ij = sum_t p_it |log p_it| + sum_t p_it |log q_jt| (terms with p = 0 or q = 0
    dropped): what the decomposition's rounding errors are proportional to."""
    from reference import to_probs

    p = to_probs(np.atleast_2d(P), p_form)
    q = to_probs(np.atleast_2d(Q), q_form)
    if eps is not None:
        p, q = np.clip(p, eps, 1), np.clip(q, eps, 1)
    with np.errstate(divide="ignore"):
        lp, lq = np.abs(np.log(p)), np.abs(np.log(q))
    lp[p == 0] = 0
    lq[q == 0] = 0
    return (p * lp).sum(1)[:, None] + p @ lq.T


def assert_pairwise(actual, desired, *, scale, dtype, rel, k):
    """Same NaNs and infinities in the same places; finite entries within the decomposition's
    bound (k + 4) * eps * scale plus ``rel`` of the value (the peer's own rounding)."""
    a = np.asarray(actual, np.float64)
    d = np.asarray(desired, np.float64)
    assert a.shape == d.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(d))
    inf = np.isinf(d)
    np.testing.assert_array_equal(a[inf], d[inf])
    fin = np.isfinite(d)
    assert np.isfinite(a[fin]).all()
    bound = (k + 4) * np.finfo(dtype).eps * np.broadcast_to(scale, d.shape)[fin]
    bound = bound + rel * np.abs(d[fin]) + 1e-300
    err = np.abs(a[fin] - d[fin])
    assert (err <= bound).all(), f"worst error / bound: {(err / bound).max():.3g}"


# --- pairwise_kl: values --------------------------------------------------------------------


@pytest.mark.parametrize("eps", [None, 1e-7])
@pytest.mark.parametrize("base", [None, 2.0])
@pytest.mark.parametrize("q_form", FORMS)
@pytest.mark.parametrize("p_form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_form_pair_matches_naive_and_kl_div(rng, dtype, p_form, q_form, base, eps):
    k = 6
    P = rows_in_form(rng, 7, k, p_form, dtype)
    Q = rows_in_form(rng, 5, k, q_form, dtype)
    kw = {"p_form": p_form, "q_form": q_form, "base": base, "eps": eps}
    got = pairwise_kl(P, Q, **kw)
    assert got.shape == (7, 5) and got.dtype == dtype
    assert np.isinf(got).any() == (eps is None)  # zeros in Q under positive P
    scale = error_scale(P, Q, p_form, q_form, eps) / (np.log(base) if base else 1.0)
    assert_pairwise(got, naive_pairwise(P, Q, **kw), scale=scale, dtype=dtype, rel=0, k=k)
    # every pair against kl_div(P[i], Q[j]) (one broadcast call: the same per-pair kernel)
    ref = fastkl.kl_div(P[:, None, :], Q[None, :, :], **kw)
    rel = 1e-5 if dtype == np.float32 else 1e-12  # kl_div's own float32 rounding
    assert_pairwise(got, ref, scale=scale, dtype=dtype, rel=rel, k=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_loop_over_kl_div(rng, dtype):
    P = rows_in_form(rng, 4, 5, "probs", dtype)
    Q = rows_in_form(rng, 3, 5, "probs", dtype)
    loop = np.array([[fastkl.kl_div(p, q) for q in Q] for p in P])
    got = pairwise_kl(P, Q)
    rel = 1e-5 if dtype == np.float32 else 1e-12
    scale = error_scale(P, Q, "probs", "probs", None)
    assert_pairwise(got, loop, scale=scale, dtype=dtype, rel=rel, k=5)


def test_float32_precision_on_realistic_rows(rng):
    # 64 categories, no zeros: the error is a few eps * (H + |cross-entropy|), not relative
    P = random_probs(rng, (300, 64), np.float32)
    Q = np.concatenate([P[:50], random_probs(rng, (200, 64), np.float32)])  # P_i == Q_i too
    got = pairwise_kl(P, Q)
    truth = pairwise_kl(P.astype(np.float64), Q.astype(np.float64))
    scale = error_scale(P, Q, "probs", "probs", None)
    err = np.abs(got - truth) / (np.finfo(np.float32).eps * scale)
    assert err.max() < 8, err.max()
    assert np.abs(np.diagonal(got[:50, :50])).max() < 1e-5  # KL(P||P) ~ 0 within that


def test_zero_semantics():
    P = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    Q = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    got = pairwise_kl(P, Q)
    # a zero in P contributes nothing, also against a zero in Q; P positive where Q is 0: inf
    np.testing.assert_array_equal(np.isinf(got), [[0, 1, 0], [1, 1, 0], [0, 1, 0]])
    assert got[0, 0] == 0.0
    np.testing.assert_allclose(got[0, 2], np.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(got[1, 2], np.log(2.0), rtol=1e-15)
    assert got[2, 0] == pytest.approx(np.log(2.0), rel=1e-15)
    # log forms: -inf is a zero probability
    with np.errstate(divide="ignore"):
        lq = np.log(Q)
    np.testing.assert_array_equal(pairwise_kl(P, lq, q_form="log_probs"), got)
    # a base below 1 flips the sign, infinities included (as kl_div)
    half = pairwise_kl(P, Q, base=0.5)
    assert half[0, 1] == -np.inf
    np.testing.assert_allclose(half[0, 2], -1.0, rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_negative_and_infinite_rows_follow_kl_div(rng, dtype):
    P = rows_in_form(rng, 6, 4, "probs", dtype)
    Q = rows_in_form(rng, 5, 4, "probs", dtype)
    P[1, 2] = np.nan
    P[3] = [0.0, -0.25, 0.75, 0.5]  # a negative probability
    P[4, 0] = np.inf
    Q[0, 1] = np.nan
    Q[2] = [0.0, 1.25, -0.25, 0.0]
    Q[4, 3] = np.inf
    got = pairwise_kl(P, Q)
    ref = fastkl.kl_div(P[:, None, :], Q[None, :, :])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(got[1]).all() and np.isnan(got[:, 0]).all()
    assert np.isnan(got[3, 1]) and np.isnan(got[0, 2])  # a negative meets a positive
    # log forms: NaN and +inf log-probabilities
    with np.errstate(divide="ignore", invalid="ignore"):
        lp, lq = np.log(rows_in_form(rng, 3, 4, "probs", dtype)), np.log(Q)
    lp[0, 0] = np.inf
    lp[2, 1] = np.nan
    got = pairwise_kl(lp, lq, p_form="log_probs", q_form="log_probs")
    ref = fastkl.kl_div(lp[:, None, :], lq[None, :, :], p_form="log_probs", q_form="log_probs")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    # logits: all -inf and +inf rows
    x = rng.normal(size=(3, 4)).astype(dtype)
    x[0] = -np.inf
    x[1, 2] = np.inf
    got = pairwise_kl(x, x, p_form="logits", q_form="logits")
    ref = fastkl.kl_div(x[:, None, :], x[None, :, :], p_form="logits", q_form="logits")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(got[:2]).all() and np.isnan(got[:, :2]).all()


@pytest.mark.parametrize("k", [63, 64, 65, 200])
def test_zeros_in_long_rows(rng, k):
    # the zero indicator is taken on 64-bit words: rows of several words, and a zero in each
    P = rows_in_form(rng, 9, k, "probs", np.float64, zeros=0.5)
    Q = rows_in_form(rng, 8, k, "probs", np.float64, zeros=0.02)
    P[0] = 0.0
    P[0, -1] = 1.0  # one category only: the last bit of the last word
    Q[1] = 1.0 / (k - 1)
    Q[1, -1] = 0.0
    got = pairwise_kl(P, Q)
    ref = fastkl.kl_div(P[:, None], Q[None])
    scale = error_scale(P, Q, "probs", "probs", None)
    assert_pairwise(got, ref, scale=scale, dtype=np.float64, rel=1e-12, k=k)
    assert got[0, 1] == np.inf


def test_eps_clips_like_kl_div():
    P = np.array([[1.0, 0.0], [0.5, 0.5]])
    Q = np.array([[0.0, 1.0], [-0.5, 1.5]])  # a negative probability is clipped to eps too
    got = pairwise_kl(P, Q, eps=1e-7)
    np.testing.assert_allclose(got, fastkl.kl_div(P[:, None], Q[None], eps=1e-7), rtol=1e-12)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0, 0], np.log(1 / 1e-7) + 1e-7 * np.log(1e-7), rtol=1e-12)


# --- shapes, dtypes, out ----------------------------------------------------------------------


def test_one_dimensional_sides(rng):
    P = random_probs(rng, (4, 3))
    Q = random_probs(rng, (5, 3))
    full = pairwise_kl(P, Q)
    # BLAS may order a product's sums differently for other shapes: the last bit may differ
    np.testing.assert_allclose(pairwise_kl(P[1], Q), full[1], rtol=1e-14)
    np.testing.assert_allclose(pairwise_kl(P, Q[2]), full[:, 2], rtol=1e-14)
    one = pairwise_kl(P[1], Q[2])
    assert isinstance(one, np.float64)
    np.testing.assert_allclose(one, full[1, 2], rtol=1e-14)
    assert pairwise_kl(P[1].tolist(), Q[2].tolist()) == one


def test_dtypes(rng):
    P = random_probs(rng, (3, 4))
    Q = random_probs(rng, (2, 4))
    assert pairwise_kl(P.astype(np.float16), Q.astype(np.float16)).dtype == np.float32
    assert pairwise_kl(P.astype(np.float32), Q).dtype == np.float64
    assert pairwise_kl(P, Q.astype(np.float16)).dtype == np.float64
    h = P.astype(np.float16)
    np.testing.assert_allclose(
        pairwise_kl(h, Q.astype(np.float32)),
        pairwise_kl(h.astype(np.float32), Q.astype(np.float32)),
        rtol=0,
        atol=0,
    )


def test_layouts_read_in_place(rng):
    P = random_probs(rng, (6, 5))
    Q = random_probs(rng, (4, 5))
    want = pairwise_kl(P, Q)
    np.testing.assert_allclose(pairwise_kl(np.asfortranarray(P), Q), want, rtol=1e-14)
    big = np.zeros((12, 10))
    big[::2, ::2] = P
    np.testing.assert_allclose(pairwise_kl(big[::2, ::2], Q[::-1]), want[:, ::-1], rtol=1e-14)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "1-d strided"])
def test_out(rng, layout):
    P = random_probs(rng, (5, 3))
    Q = random_probs(rng, (4, 3))
    want = pairwise_kl(P, Q)
    if layout == "C":
        out = np.empty((5, 4))
    elif layout == "F":
        out = np.empty((5, 4), order="F")
    elif layout == "strided":
        out = np.empty((10, 12))[::2, ::3]
    else:
        out = np.empty(8)[::2]
        assert pairwise_kl(P[0], Q, out=out) is out
        np.testing.assert_allclose(out, want[0], rtol=1e-14)  # other shapes: the last bit
        out = np.empty(10)[::2]
        assert pairwise_kl(P, Q[1], out=out) is out
        np.testing.assert_allclose(out, want[:, 1], rtol=1e-14)
        return
    assert pairwise_kl(P, Q, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_out_scalar(rng):
    out = np.empty((), np.float32)
    p = random_probs(rng, (3,), np.float32)
    q = random_probs(rng, (3,), np.float32)
    assert pairwise_kl(p, q, out=out) is out
    np.testing.assert_allclose(out, fastkl.kl_div(p, q), rtol=1e-5)


def test_empty():
    P = np.empty((0, 3))
    Q = np.full((2, 3), 1 / 3)
    assert pairwise_kl(P, Q).shape == (0, 2)
    assert pairwise_kl(Q, P).shape == (2, 0)
    values, indices = nearest_kl(P, Q, 2)
    assert values.shape == (0, 2) and indices.shape == (0, 2)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"P": np.ones((2, 2, 2))}, ValueError, "^P: .*3 dimensions"),
        ({"Q": np.ones((1, 1, 2))}, ValueError, "^Q: .*3 dimensions"),
        ({"P": np.float64(0.5)}, ValueError, "^P: .*0-d"),
        ({"Q": np.ones((2, 2), np.int64)}, TypeError, "^Q: expected floating"),
        ({"P": np.ones((2, 2), complex)}, TypeError, "^P: expected floating"),
        ({"Q": np.full((2, 3), 1 / 3)}, ValueError, "P and Q must have the same"),
        ({"P": np.ones((2, 0)), "Q": np.ones((2, 0))}, ValueError, "k == 0"),
        ({"p_form": "prob"}, ValueError, "^p_form: expected one of"),
        ({"q_form": None}, ValueError, "^q_form: expected one of"),
        ({"base": 1}, ValueError, "^base:"),
        ({"base": "2"}, TypeError, "^base:"),
        ({"eps": 0.0}, ValueError, "^eps:"),
        ({"out": np.empty((2, 3))}, ValueError, r"^out: expected shape \(2, 2\)"),
        ({"out": np.empty((2, 2), np.float32)}, ValueError, "^out: expected dtype float64"),
        ({"out": [[0.0, 0.0], [0.0, 0.0]]}, TypeError, "^out: expected a numpy array"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = {"P": np.full((2, 2), 0.5), "Q": np.full((2, 2), 0.5), **kwargs}
    P, Q = args.pop("P"), args.pop("Q")
    with pytest.raises(exc, match=match):
        pairwise_kl(P, Q, **args)
    if "out" not in args:
        with pytest.raises(exc, match=match):
            nearest_kl(P, Q, 1, **args)


def test_bad_out_memory():
    P = np.full((2, 2), 0.5)
    ro = np.empty((2, 2))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: the array is read-only"):
        pairwise_kl(P, P.copy(), out=ro)
    with pytest.raises(ValueError, match=r"^out: overlaps an input"):
        pairwise_kl(P, P.copy(), out=P)


@pytest.mark.parametrize(
    ("k", "exc"),
    [
        (0, ValueError),
        (4, ValueError),
        (-1, ValueError),
        (1.0, TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_k(k, exc):
    with pytest.raises(exc, match=r"^k: "):
        nearest_kl(np.full((2, 2), 0.5), np.full((3, 2), 0.5), k)


# --- blocks and memory ---------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 rows and indicator chunks of a few columns: every path crosses blocks."""
    monkeypatch.setattr(pw, "BLOCK_BYTES", 8 * 8 * 4)  # k = 4 -> 8 rows per block
    monkeypatch.setattr(pw, "MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(pw, "NEAREST_BLOCK_BYTES", 40 * 8)
    monkeypatch.setattr(pw, "NEAREST_Q_ROWS", 8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_blocks(rng, small_blocks, dtype):
    P = rows_in_form(rng, 37, 4, "probs", dtype)
    Q = rows_in_form(rng, 29, 4, "logits", dtype)
    P[9, 0] = np.nan
    Q[17, 2] = np.nan
    kw = {"q_form": "logits"}
    got = pairwise_kl(P, Q, **kw)
    ref = fastkl.kl_div(P[:, None], Q[None], **kw)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isinf(got).sum() > 20
    values, indices = nearest_kl(P, Q, 5, **kw)
    order = np.argsort(got, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, order)
    # blocks of other shapes: BLAS may round the last bit differently
    np.testing.assert_allclose(values, np.take_along_axis(got, order, 1), rtol=1e-6)


def test_memory_is_bounded(rng, monkeypatch):
    monkeypatch.setattr(pw, "BLOCK_BYTES", 1 << 16)  # 910 rows of 8 (+ 1) float64
    monkeypatch.setattr(pw, "NEAREST_BLOCK_BYTES", 1 << 20)
    n, m, k = 3000, 2500, 8
    P = random_probs(rng, (n, k))
    Q = random_probs(rng, (m, k))
    Q[::7, 3] = 0.0  # the indicator path too
    out = np.empty((n, m))
    pairwise_kl(P[:10], Q[:10])  # imports and first-call allocations outside the trace
    tracemalloc.start()
    try:
        pairwise_kl(P, Q, out=out)
        _, peak_pairwise = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        nearest_kl(P, Q, 3)
        _, peak_nearest = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a handful of blocks of 64 KiB, never the 60 MB of out
    assert peak_pairwise < 1 << 20, peak_pairwise
    # nearest: the results (n x 3 values and indices) plus a block of scores
    assert peak_nearest < n * 3 * 16 + (2 << 20), peak_nearest


# --- nearest_kl ------------------------------------------------------------------------------


@pytest.mark.parametrize("kk", [1, 2, 5, 11])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_matches_argsort(rng, dtype, kk):
    P = rows_in_form(rng, 9, 5, "probs", dtype)
    Q = rows_in_form(rng, 11, 5, "probs", dtype)
    Q[6] = Q[2]  # exact ties: the lower index first
    Q[8] = Q[2]
    Q[4, 1] = np.nan  # a NaN column sorts last
    full = pairwise_kl(P, Q)
    values, indices = nearest_kl(P, Q, kk)
    order = np.argsort(full, axis=1, kind="stable")[:, :kk]
    assert values.dtype == dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_array_equal(values, np.take_along_axis(full, order, 1))


@pytest.mark.parametrize("kk", [1, 3, 70])
def test_nearest_long_rows_of_scores(rng, monkeypatch, kk):
    # Q blocks of 150 rows: runs of 64 scores that the merge screens at once, a short tail,
    # and ties, NaNs and infinities on both sides of run and block boundaries
    monkeypatch.setattr(pw, "NEAREST_Q_ROWS", 150)
    P = rows_in_form(rng, 12, 6, "probs", np.float32, zeros=0.0)
    Q = rows_in_form(rng, 400, 6, "probs", np.float32, zeros=0.0)
    Q[[63, 64, 149, 150, 399]] = Q[5]  # exact ties with row 5
    Q[[0, 70, 200], 2] = np.nan
    Q[[1, 128, 300], 3] = 0.0  # +inf against every row of P
    P[3] = Q[5]  # a row whose best is 0, tied six times
    P[7] = Q[1]  # a zero too: +inf against the rows without it
    full = pairwise_kl(P, Q)
    values, indices = nearest_kl(P, Q, kk)
    order = np.argsort(full, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_allclose(values, np.take_along_axis(full, order, 1), rtol=1e-6)
    np.testing.assert_array_equal(indices[3, : min(kk, 6)], [5, 63, 64, 149, 150, 399][:kk])


def test_nearest_ties_infinities_and_nans():
    P = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    Q = np.array(
        [[np.nan, 0.5, 0.5], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]
    )
    values, indices = nearest_kl(P, Q, 5)
    np.testing.assert_array_equal(indices, [[2, 4, 1, 3, 0], [2, 4, 1, 3, 0]])
    assert np.isinf(values[:, 2:4]).all() and np.isnan(values[:, 4]).all()
    values, indices = nearest_kl(P[0], Q, 1)  # a 1-d P: results of shape (k,)
    assert values.shape == indices.shape == (1,) and indices[0] == 2


def test_nearest_with_forms_and_options(rng):
    P = rows_in_form(rng, 6, 4, "logits", np.float32)
    Q = rows_in_form(rng, 7, 4, "log_probs", np.float32)
    kw = {"p_form": "logits", "q_form": "log_probs", "base": 2, "eps": 1e-6}
    full = pairwise_kl(P, Q, **kw)
    values, indices = nearest_kl(P, Q, 3, **kw)
    order = np.argsort(full, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_array_equal(values, np.take_along_axis(full, order, 1))


@given(
    n=st.integers(1, 6),
    m=st.integers(1, 6),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    zeros=st.sampled_from([0.0, 0.3, 0.7]),
)
def test_property_matches_kl_div(n, m, k, seed, zeros):
    rng = np.random.default_rng(seed)
    P = rows_in_form(rng, n, k, "probs", np.float64, zeros)
    Q = rows_in_form(rng, m, k, "probs", np.float64, zeros)
    got = pairwise_kl(P, Q)
    ref = fastkl.kl_div(P[:, None], Q[None])
    scale = error_scale(P, Q, "probs", "probs", None)
    assert_pairwise(got, ref, scale=scale, dtype=np.float64, rel=1e-12, k=k)
    kk = int(rng.integers(1, m + 1))
    _, indices = nearest_kl(P, Q, kk)
    np.testing.assert_array_equal(indices, np.argsort(got, axis=1, kind="stable")[:, :kk])
