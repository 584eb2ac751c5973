"""``where`` (the rows that count) and ``weights`` (per-row weights) of every row-wise function,
against numpy applied to the rows of ``reduction="none"``."""

from __future__ import annotations

import numpy as np
import pytest
from reference import random_probs

import fastkl
from fastkl.divergences import REGISTRY

NAMES = [spec.name for spec in REGISTRY]


def call(name, p, q, **kw):
    fn = getattr(fastkl, name)
    return fn(p, q, **kw) if fn.spec.reads_q else fn(p, **kw)


@pytest.fixture
def data(rng):
    p = random_probs(rng, (4, 6, 9))
    q = random_probs(rng, (6, 9))  # broadcast against p's first dimension
    mask = rng.random((4, 6)) < 0.6
    mask[0, 0] = True
    weights = rng.random((4, 6)) * 3
    return p, q, mask, weights


@pytest.mark.parametrize("name", NAMES)
def test_where_and_weights_equal_numpy_on_the_rows(data, name):
    p, q, mask, weights = data
    rows = call(name, p, q)
    np.testing.assert_array_equal(call(name, p, q, where=mask), np.where(mask, rows, 0.0))
    kept = rows[mask]
    np.testing.assert_allclose(call(name, p, q, where=mask, reduction="sum"), kept.sum(),
                               rtol=1e-13)  # fmt: skip
    np.testing.assert_allclose(call(name, p, q, where=mask, reduction="mean"), kept.mean(),
                               rtol=1e-13)  # fmt: skip
    w = weights
    np.testing.assert_allclose(call(name, p, q, weights=w, reduction="sum"), (w * rows).sum(),
                               rtol=1e-13)  # fmt: skip
    expected = (w * rows).sum() / w.sum()
    np.testing.assert_allclose(call(name, p, q, weights=w, reduction="mean"), expected,
                               rtol=1e-13)  # fmt: skip
    both = np.where(mask, w, 0.0)
    expected = (both * rows).sum() / both.sum()
    got = call(name, p, q, where=mask, weights=w, reduction="mean")
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_broadcast_where_and_weights(data):
    p, q, mask, weights = data
    rows = fastkl.kl_div(p, q)
    per_batch = mask[:, :1]  # (4, 1): whole sequences in or out
    np.testing.assert_array_equal(
        fastkl.kl_div(p, q, where=per_batch), np.where(per_batch, rows, 0.0)
    )
    per_position = weights[0]  # (6,): one weight per position, for every sequence
    np.testing.assert_allclose(
        fastkl.kl_div(p, q, weights=per_position, reduction="sum"),
        (per_position * rows).sum(),
        rtol=1e-13,
    )
    assert fastkl.kl_div(p, q, where=True, reduction="sum") == fastkl.kl_div(p, q, reduction="sum")


def test_left_out_rows_may_hold_anything(data):
    p, q, mask, _ = data
    p = p.copy()
    p[~mask] = np.nan  # padding
    p[~mask][..., :1] = -5.0
    got = fastkl.kl_div(p, q, where=mask, validate=True)
    assert np.all(got[~mask] == 0.0) and np.all(np.isfinite(got[mask]))
    clean = fastkl.kl_div(np.where(mask[..., None], p, q), q, where=mask, reduction="mean")
    assert fastkl.kl_div(p, q, where=mask, reduction="mean") == clean
    p[0, 0, 0] = -1.0  # a kept row that is invalid is still reported
    with pytest.raises(ValueError, match=r"p: row \(0, 0\) has a negative probability"):
        fastkl.kl_div(p, q, where=mask, validate=True)


def test_weight_zero_adds_nothing_and_empty_selections():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.5, 0.5], [0.0, 1.0]])  # row 1 is +inf
    assert fastkl.kl_div(p, q, weights=[2.0, 0.0], reduction="sum") == 0.0
    assert np.isinf(fastkl.kl_div(p, q, weights=[2.0, 1e-300], reduction="sum"))
    none = np.zeros(2, bool)
    assert fastkl.kl_div(p, q, where=none, reduction="sum") == 0.0
    assert np.isnan(fastkl.kl_div(p, q, where=none, reduction="mean"))
    assert np.isnan(fastkl.kl_div(p, q, weights=[0.0, 0.0], reduction="mean"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"where": [1, 0, 1, 1, 0, 1]}, TypeError, "where: expected a boolean array"),
        ({"where": np.ones(5, bool)}, ValueError, "where: shape .5,. does not broadcast"),
        ({"weights": [1.0] * 6}, ValueError, "weights: only with reduction='sum' or 'mean'"),
        ({"weights": [1.0, -1, 1, 1, 1, 1], "reduction": "sum"}, ValueError,
         r"weights: expected finite values >= 0, got -1.0 at row \(0, 1\)"),
        ({"weights": [1.0, 1, np.nan, 1, 1, 1], "reduction": "mean"}, ValueError,
         "weights: expected finite values >= 0, got nan"),
        ({"weights": [1.0, 1, np.inf, 1, 1, 1], "reduction": "mean"}, ValueError,
         "weights: expected finite values >= 0, got inf"),
        ({"weights": np.ones(6, complex), "reduction": "sum"}, TypeError,
         "weights: expected real numbers"),
        ({"weights": np.ones(7), "reduction": "sum"}, ValueError, "weights: shape .7,."),
    ],
)  # fmt: skip
def test_bad_where_and_weights_name_the_argument(data, monkeypatch, kwargs, error, message):
    p, q, _, _ = data
    from fastkl import _prepare

    def no_kernel(*args, **kw):
        raise AssertionError("a kernel ran before the arguments were checked")

    monkeypatch.setattr(_prepare, "run_blocks", no_kernel)
    with pytest.raises(error, match=message):
        fastkl.js_div(p, q, **kwargs)


@pytest.mark.cuda
def test_where_and_weights_on_the_gpu(data):
    import numba

    if not numba.config.ENABLE_CUDASIM:
        from fastkl.info import cuda_status

        if not cuda_status()["available"]:
            pytest.skip("no usable GPU; run `NUMBA_ENABLE_CUDASIM=1 pytest -m cuda`")
    from numba import cuda

    p, q, mask, weights = data
    q = np.ascontiguousarray(np.broadcast_to(q, p.shape))  # device rows: one stride each
    rows = fastkl.js_div(p, q)
    dp, dq = cuda.to_device(p), cuda.to_device(q)
    got = fastkl.js_div(dp, dq, where=mask)
    np.testing.assert_allclose(got.copy_to_host(), np.where(mask, rows, 0.0), rtol=1e-10)
    out = cuda.device_array(mask.shape)
    fastkl.js_div(dp, dq, where=mask, out=out)
    np.testing.assert_allclose(out.copy_to_host(), np.where(mask, rows, 0.0), rtol=1e-10)
    w = np.where(mask, weights, 0.0)
    for inputs in ((dp, dq), (p, q)):  # on the device, and numpy streamed through it
        got = fastkl.js_div(*inputs, where=mask, weights=weights, reduction="mean", device="cuda")
        np.testing.assert_allclose(got, (w * rows).sum() / w.sum(), rtol=1e-10)
        got = fastkl.js_div(*inputs, where=mask, reduction="none", device="cuda")
        host = got.copy_to_host() if hasattr(got, "copy_to_host") else got
        np.testing.assert_allclose(host, np.where(mask, rows, 0.0), rtol=1e-10)


@pytest.mark.parametrize("name", ["kl_div", "entropy", "hellinger"])
def test_where_and_weights_on_dask(data, name):
    da = pytest.importorskip("dask.array")
    fkd = pytest.importorskip("fastkl.dask")
    p, q, mask, weights = data
    lazy_p = da.from_array(p, chunks=(2, 3, 9))

    def lazy(**kw):
        fn = getattr(fkd, name)
        return (fn(lazy_p, q, **kw) if fn.__name__ != "entropy" else fn(lazy_p, **kw)).compute()

    np.testing.assert_array_equal(lazy(where=mask), call(name, p, q, where=mask))
    for reduction in ("sum", "mean"):
        for kw in ({"where": mask}, {"weights": weights}, {"where": mask, "weights": weights}):
            want = call(name, p, q, reduction=reduction, **kw)
            np.testing.assert_allclose(lazy(reduction=reduction, **kw), want, rtol=1e-13)
    with pytest.raises(ValueError, match="weights: only with reduction='sum' or 'mean'"):
        getattr(fkd, name)(lazy_p, q, weights=weights) if name != "entropy" else fkd.entropy(
            lazy_p, weights=weights
        )
    with pytest.raises(TypeError, match="where: expected a numpy array or array_like"):
        fkd.kl_div(lazy_p, q, where=da.from_array(mask))
    with pytest.raises(ValueError, match="where: shape"):
        fkd.kl_div(lazy_p, q, where=mask[:, :2])
    assert np.isnan(
        fkd.kl_div(lazy_p, q, where=np.zeros((4, 6), bool), reduction="mean").compute()
    )


def test_where_on_dask_validates_the_kept_rows_only(data):
    da = pytest.importorskip("dask.array")
    fkd = pytest.importorskip("fastkl.dask")
    p, q, mask, _ = data
    p = p.copy()
    p[~mask] = np.nan  # padding
    lazy_p = da.from_array(p, chunks=(2, 3, 9))
    got = fkd.kl_div(lazy_p, q, where=mask, validate=True).compute()
    np.testing.assert_array_equal(got, fastkl.kl_div(p, q, where=mask, validate=True))


def test_where_from_a_torch_mask_and_extreme_weights():
    torch = pytest.importorskip("torch")
    p = np.array([[0.1, 0.9], [0.5, 0.5], [0.3, 0.7]])
    labels = torch.tensor([1, 2, -100])
    got = fastkl.kl_div(p, [0.4, 0.6], where=labels != -100, reduction="mean")
    assert got == fastkl.kl_div(p[:2], [0.4, 0.6], reduction="mean")
    for scale in (1e308, 5e-324):  # the mean's weights rescaled: no overflow, no underflow
        got = fastkl.kl_div(p, [0.4, 0.6], weights=[scale, scale, 0.0], reduction="mean")
        np.testing.assert_allclose(got, fastkl.kl_div(p[:2], [0.4, 0.6], reduction="mean"))
