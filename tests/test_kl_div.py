"""kl_div against the float64 scipy reference: forms, dtypes, layouts, options, semantics."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close, kl_ref, random_probs
from scipy.special import log_softmax

import fastkl
from fastkl import _config

FORMS = ["probs", "log_probs", "logits"]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-7}, np.float64: {"rtol": 1e-12, "atol": 1e-15}}


def given(rng, shape, form, dtype):
    """A random input of ``shape`` in ``form`` (rows along the last axis)."""
    p = random_probs(rng, shape)
    if form == "log_probs":
        p = np.log(p)
    elif form == "logits":
        p = np.log(p) + rng.normal(size=(*shape[:-1], 1)) * 3  # arbitrary per-row shift
    return p.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_form", FORMS)
@pytest.mark.parametrize("p_form", FORMS)
def test_forms_and_dtypes(rng, p_form, q_form, dtype):
    p = given(rng, (37, 19), p_form, dtype)
    q = given(rng, (37, 19), q_form, dtype)
    got = fastkl.kl_div(p, q, p_form=p_form, q_form=q_form)
    assert got.dtype == dtype and got.shape == (37,)
    assert_close(got, kl_ref(p, q, p_form=p_form, q_form=q_form), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_accuracy(rng, dtype):
    p = random_probs(rng, (3, 100_000), dtype)
    q = random_probs(rng, (3, 100_000), dtype)
    got = fastkl.kl_div(p, q)
    # float32: within 1e-5 of the float64 result for the same float32 inputs
    assert_close(got, kl_ref(p, q), **TOL[dtype])


def test_near_identical_rows_float64(rng):
    p = random_probs(rng, (20, 256))
    q = p * (1 + 1e-6 * rng.normal(size=p.shape))
    q /= q.sum(axis=1, keepdims=True)
    assert_close(fastkl.kl_div(p, q), kl_ref(p, q), rtol=1e-12, atol=1e-15)


def test_float16_computes_in_float32(rng):
    p = random_probs(rng, (8, 16), np.float16)
    q = random_probs(rng, (8, 16), np.float16)
    got = fastkl.kl_div(p, q)
    assert got.dtype == np.float32
    assert_close(got, kl_ref(p, q), rtol=1e-5, atol=1e-7)


def test_mixed_dtypes_give_float64(rng):
    p = random_probs(rng, (10, 7), np.float32)
    q = random_probs(rng, (10, 7), np.float64)
    for a, b in [(p, q), (q, p)]:
        got = fastkl.kl_div(a, b)
        assert got.dtype == np.float64
        assert_close(got, kl_ref(a, b), rtol=1e-12, atol=1e-15)


# --- shapes, broadcasting, axis, layouts -------------------------------------------------


def test_one_reference_row_is_broadcast_without_copy(rng, monkeypatch):
    p = random_probs(rng, (1000, 16))
    q = random_probs(rng, (16,))
    seen = []
    from fastkl import _cpu

    real = _cpu.kl_kernel

    def spy(p_form, q_form, n, k, ldp, ldq, *rest):
        seen.append((n, k, ldp, ldq))
        return real(p_form, q_form, n, k, ldp, ldq, *rest)

    monkeypatch.setattr(_cpu, "kl_kernel", spy)
    got = fastkl.kl_div(p, q)
    assert seen == [(1000, 16, 16, 0)]  # one call, q read as a single row (ld == 0)
    assert_close(got, kl_ref(p, q), rtol=1e-12, atol=1e-15)


def test_leading_dimensions(rng):
    p = random_probs(rng, (2, 3, 4, 11))
    q = random_probs(rng, (2, 3, 4, 11))
    got = fastkl.kl_div(p, q)
    assert got.shape == (2, 3, 4)
    assert_close(got, kl_ref(p, q), rtol=1e-12, atol=1e-15)


def test_broadcast_that_does_not_collapse_is_gathered(rng, monkeypatch):
    # q of shape (T, V) against p of shape (B, T, V): row i of p meets row i % T of q, which
    # no single row stride describes. Small blocks force several staged blocks.
    monkeypatch.setattr(_config, "BLOCK_BYTES", 5 * 9 * 8)
    p = random_probs(rng, (7, 3, 9))
    q = random_probs(rng, (3, 9))
    got = fastkl.kl_div(p, q)
    assert got.shape == (7, 3)
    assert_close(got, kl_ref(p, q), rtol=1e-12, atol=1e-15)
    # and p broadcast against q: (B, 1, V) vs (T, V)
    got = fastkl.kl_div(p[:, :1, :], q)
    assert_close(got, kl_ref(p[:, :1, :], q), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("axis", [0, 1, -2])
def test_axis(rng, axis):
    p = random_probs(rng, (6, 5, 4))
    q = random_probs(rng, (6, 5, 4))
    p = np.moveaxis(p, -1, axis)
    q = np.moveaxis(q, -1, axis)
    got = fastkl.kl_div(p, q, axis=axis)
    assert_close(got, kl_ref(p, q, axis=axis), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "layout",
    ["fortran", "sliced_rows", "sliced_cols", "reversed_rows", "every_other", "transposed"],
)
def test_layouts(rng, layout, monkeypatch):
    monkeypatch.setattr(_config, "BLOCK_BYTES", 256)  # many small staged blocks
    base_p = random_probs(rng, (40, 24))
    base_q = random_probs(rng, (40, 24))

    def view(x):
        if layout == "fortran":
            return np.asfortranarray(x)
        if layout == "sliced_rows":
            return x[5:35]
        if layout == "sliced_cols":  # rows of 12 with a row stride of 24
            return x[:, 6:18]
        if layout == "reversed_rows":
            return x[::-1]
        if layout == "every_other":
            return x[:, ::2]
        return np.ascontiguousarray(x.T).T

    p, q = view(base_p), view(base_q)
    assert_close(fastkl.kl_div(p, q), kl_ref(p, q), rtol=1e-12, atol=1e-15)


def test_memmap_and_array_like(rng, tmp_path):
    p = random_probs(rng, (50, 8))
    q = random_probs(rng, (50, 8))
    path = tmp_path / "p.npy"
    np.save(path, p)
    mm = np.load(path, mmap_mode="r")

    class Wrapped:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    got = fastkl.kl_div(mm, Wrapped(q))
    assert_close(got, kl_ref(p, q), rtol=1e-12, atol=1e-15)
    assert_close(fastkl.kl_div(p.tolist(), q.tolist()), kl_ref(p, q), rtol=1e-12, atol=1e-15)


def test_one_dimensional_inputs_give_a_scalar():
    got = fastkl.kl_div([0.1, 0.9], [0.4, 0.6])
    assert isinstance(got, np.float64) and np.ndim(got) == 0


def test_empty_batch():
    got = fastkl.kl_div(np.empty((0, 5)), np.empty((0, 5)))
    assert got.shape == (0,) and got.dtype == np.float64
    assert fastkl.kl_div(np.empty((0, 5), np.float32), np.empty(5, np.float32)).shape == (0,)
    assert fastkl.kl_div(np.empty((0, 5)), np.ones(5) / 5, reduction="sum") == 0.0
    assert np.isnan(fastkl.kl_div(np.empty((0, 5)), np.ones(5) / 5, reduction="mean"))
    assert fastkl.kl_div(np.empty((2, 0, 5)), np.empty((2, 0, 5))).shape == (2, 0)


def test_k_equal_one():
    got = fastkl.kl_div(np.ones((4, 1)), np.ones((4, 1)))
    assert_close(got, np.zeros(4), rtol=0, atol=0)


# --- options -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions(rng, dtype):
    p = random_probs(rng, (2, 50, 6), dtype)
    q = random_probs(rng, (2, 50, 6), dtype)
    rows = kl_ref(p, q)
    s = fastkl.kl_div(p, q, reduction="sum")
    m = fastkl.kl_div(p, q, reduction="mean")
    assert type(s) is np.dtype(dtype).type and type(m) is np.dtype(dtype).type
    assert_close(s, rows.sum(), **TOL[dtype])
    assert_close(m, rows.mean(), **TOL[dtype])


@pytest.mark.parametrize("base", [2, 10, 0.5, np.e])
def test_base(rng, base):
    p = random_probs(rng, (9, 5))
    q = random_probs(rng, (9, 5))
    assert_close(fastkl.kl_div(p, q, base=base), kl_ref(p, q, base=base), rtol=1e-12)


@pytest.mark.parametrize("q_form", FORMS)
@pytest.mark.parametrize("p_form", FORMS)
def test_eps_clipping(rng, p_form, q_form):
    p = random_probs(rng, (12, 6))
    q = random_probs(rng, (12, 6))
    p[:, 0] = 0.0
    q[:, 1] = 0.0
    p[:, 2] = 1e-9
    p /= p.sum(axis=1, keepdims=True)  # logits renormalize: keep both sides distributions
    q /= q.sum(axis=1, keepdims=True)
    conv = {"probs": lambda x: x, "log_probs": np.log, "logits": lambda x: np.log(x) + 2.0}
    with np.errstate(divide="ignore"):
        pi, qi = conv[p_form](p), conv[q_form](q)
    got = fastkl.kl_div(pi, qi, p_form=p_form, q_form=q_form, eps=1e-7)
    expected = kl_ref(p, q, eps=1e-7)
    assert np.all(np.isfinite(got))
    assert_close(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("form", FORMS)
def test_normalize(rng, form):
    pk = rng.uniform(0, 5, size=(6, 9))
    qk = rng.uniform(0, 5, size=(6, 9))
    if form != "probs":
        pk, qk = np.log(pk), np.log(qk)
    got = fastkl.kl_div(pk, qk, p_form=form, q_form=form, normalize=True)
    expected = kl_ref(pk, qk, p_form=form, q_form=form, normalize=True)
    assert_close(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out(rng, dtype):
    p = random_probs(rng, (4, 5, 6), dtype)
    q = random_probs(rng, (4, 5, 6), dtype)
    out = np.full((4, 5), -1.0, dtype)
    got = fastkl.kl_div(p, q, out=out)
    assert got is out
    assert_close(out, kl_ref(p, q), **TOL[dtype])
    # a non-contiguous out is filled too
    big = np.zeros((5, 8), dtype)
    view = big[:, ::2].T
    assert fastkl.kl_div(p, q, out=view) is view
    assert_close(view, kl_ref(p, q), **TOL[dtype])
    assert np.all(big[:, 1::2] == 0)


# --- exact semantics ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_and_infinite_terms(dtype):
    p = np.array(
        [
            [0.0, 0.5, 0.5],  # zero in p: contributes 0
            [0.0, 0.5, 0.5],  # zero in both: 0, not NaN
            [0.5, 0.5, 0.0],  # zero in q where p > 0: +inf
            [1.0, 0.0, 0.0],
        ],
        dtype,
    )
    q = np.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype)
    got = fastkl.kl_div(p, q)
    assert_close(got, kl_ref(p, q), **TOL[dtype])
    assert got[1] == 0.0 and got[3] == 0.0 and got[2] == np.inf
    with np.errstate(divide="ignore"):
        lq = np.log(q)
        lp = np.log(p)
    # the same through log forms: 0 * (-inf) is 0, never NaN
    got_log = fastkl.kl_div(lp, lq, p_form="log_probs", q_form="log_probs")
    assert_close(got_log, kl_ref(p, q), **TOL[dtype])
    got_mixed = fastkl.kl_div(p, lq, q_form="log_probs")
    assert_close(got_mixed, kl_ref(p, q), **TOL[dtype])


@pytest.mark.parametrize("q_form", FORMS)
@pytest.mark.parametrize("p_form", FORMS)
def test_nan_anywhere_gives_nan_row(rng, p_form, q_form):
    p = given(rng, (6, 5), p_form, np.float64)
    q = given(rng, (6, 5), q_form, np.float64)
    if p_form == "probs":
        p[1, 0] = 0.0  # a zero p facing a NaN q still yields NaN
    p[0, 2] = np.nan
    q[1, 0] = np.nan
    got = fastkl.kl_div(p, q, p_form=p_form, q_form=q_form)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert np.all(np.isfinite(got[2:]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_probabilities_give_nan(dtype):
    # also where p == 0 faces a negative q, and where equal negative values would cancel
    p = np.array([[0.5, 0.5, 0.0], [-0.5, 1.5, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0]], dtype)
    q = np.array([[0.5, 0.6, -0.1], [-0.5, 1.5, 0.0], [-0.2, 1.2, 0.0], [0.3, 0.7, 0.0]], dtype)
    got = fastkl.kl_div(p, q)
    assert np.all(np.isnan(got[:3])) and got[3] == 0.0
    for name in ("js_div", "sym_kl", "cross_entropy", "generalized_kl"):
        assert np.all(np.isnan(getattr(fastkl, name)(p, q)[:3])), name


def test_logits_with_minus_inf_mean_zero_probability():
    zp = np.array([[0.0, -np.inf, 1.0]])
    zq = np.array([[0.5, -np.inf, 1.0]])
    got = fastkl.kl_div(zp, zq, p_form="logits", q_form="logits")
    with np.errstate(divide="ignore"):
        assert_close(got, kl_ref(zp, zq, p_form="logits", q_form="logits"), rtol=1e-12)
    assert np.isfinite(got[0])


def test_extreme_ratios_do_not_overflow():
    # p / q overflows float64 here although both are positive: the answer is finite.
    tiny = 5e-324
    got = fastkl.kl_div(np.array([1.0 - 1e-300, 1e-300]), np.array([1.0 - tiny, tiny]))
    expected = (1.0 - 1e-300) * np.log((1 - 1e-300) / (1 - tiny)) + 1e-300 * (
        np.log(1e-300) - np.log(tiny)
    )
    assert np.isfinite(got)
    assert_close(got, expected, rtol=1e-12)
    # measures larger than 1 (a quotient that underflows)
    got = fastkl.kl_div(np.array([1e-320]), np.array([1e10]))
    assert np.isfinite(got) and got < 0


def test_log_probs_log_softmax_agree(rng):
    z = rng.normal(size=(5, 7)) * 4
    lp = log_softmax(z, axis=1)
    a = fastkl.kl_div(z, z[::-1], p_form="logits", q_form="logits")
    b = fastkl.kl_div(lp, lp[::-1], p_form="log_probs", q_form="log_probs")
    c = fastkl.kl_div(np.exp(lp), np.exp(lp[::-1]))
    assert_close(a, b, rtol=1e-12, atol=1e-15)
    assert_close(a, c, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layout", ["fortran", "gathered"])
def test_staged_inputs_use_bounded_memory(rng, layout):
    import tracemalloc

    n, k = 200_000, 16
    p = random_probs(rng, (n, k))
    q = random_probs(rng, (n, k))
    if layout == "fortran":
        p, q = np.asfortranarray(p), np.asfortranarray(q)
    else:  # a (B, T, k) input against (T, k): rows gathered block by block
        p, q = p.reshape(n // 4, 4, k), q[:4]
    fastkl.kl_div(p[:2], q if layout == "gathered" else q[:2])
    tracemalloc.start()
    try:
        result = fastkl.kl_div(p, q)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the result, plus staged blocks of BLOCK_BYTES (and the gather's index arrays)
    assert peak < result.nbytes + 4 * _config.BLOCK_BYTES, (peak, p.nbytes)
    assert peak < p.nbytes / 2
    assert_close(result, kl_ref(p, q), rtol=1e-12, atol=1e-15)
