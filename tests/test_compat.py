"""The peer drop-ins of fastkl.compat against the peers' own numbers.

Three kinds of evidence: the values the peer libraries returned (tests/data/peers.json), scipy
and torch called directly on random inputs, and the slow references of tests/reference.py for
the edge semantics where a drop-in deliberately differs from its peer (a true 0 where the peer
computes 0 * -inf = NaN).

torch is not in the test extra (a CPU wheel is several hundred MB): the tests that call it skip,
each on its own, where it is not installed, and run wherever it is (``pip install torch``).
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from reference import assert_close, kl_ref, random_probs

import fastkl
from fastkl import compat

F64 = {"rtol": 1e-12, "atol": 1e-15}
F32 = {"rtol": 1e-6}


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


# --- the peers' signatures --------------------------------------------------------------------


SIGNATURES = {
    "torch_kl_div": "(input, target, reduction='mean', log_target=False)",
    "keras_kl_divergence": "(y_true, y_pred)",
    "mxnet_kl_div_loss": (
        "(pred, label, from_logits=True, axis=-1, weight=None, *, mean_over_classes=False)"
    ),
    "scipy_entropy": "(pk, qk=None, base=None, axis=0, *, keepdims=False)",
    "scipy_jensenshannon": "(p, q, base=None, *, axis=0, keepdims=False)",
    "optax_kl_divergence": "(log_predictions, targets, axis=-1)",
    "optax_kl_divergence_with_log_targets": "(log_predictions, log_targets, axis=-1)",
    "torchmetrics_kl_divergence": "(p, q, log_prob=False, reduction='mean')",
    "trl_generalized_jsd_loss": (
        "(student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0, "
        "reduction='batchmean')"
    ),
}


def test_every_drop_in_has_the_peer_signature():
    assert sorted(compat.__all__) == sorted(SIGNATURES)
    for name, expected in SIGNATURES.items():
        sig = inspect.signature(getattr(compat, name))
        plain = sig.replace(
            parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
            return_annotation=sig.empty,
        )
        assert str(plain) == expected, name


def test_scipy_signatures_are_scipys():
    # the parameters scipy itself declares (scipy's nan_policy is not offered)
    ours = inspect.signature(compat.scipy_jensenshannon).parameters
    theirs = inspect.signature(scipy.spatial.distance.jensenshannon).parameters
    assert [(n, p.default, p.kind) for n, p in ours.items()] == [
        (n, p.default, p.kind) for n, p in theirs.items()
    ]
    theirs = {
        n: (p.default, p.kind)
        for n, p in inspect.signature(scipy.stats.entropy).parameters.items()
        if n != "nan_policy"
    }
    ours = {
        n: (p.default, p.kind)
        for n, p in inspect.signature(compat.scipy_entropy).parameters.items()
    }
    assert ours == theirs


# --- torch ------------------------------------------------------------------------------------


def test_torch_kl_div_peers(peers):
    d = peers["torch_kl_div"]
    p, log_q = d["P"], np.log(d["Q"])
    terms = compat.torch_kl_div(log_q, p, reduction="none")
    assert terms.shape == p.shape  # torch's "none" is per element
    assert_close(terms, d["reduction_none"], **F64)
    assert_close(compat.torch_kl_div(log_q, p, reduction="sum"), d["reduction_sum"], **F64)
    assert_close(compat.torch_kl_div(log_q, p), d["reduction_mean"], **F64)  # the default
    assert_close(compat.torch_kl_div(log_q, p, "batchmean"), d["reduction_batchmean"], **F64)
    got = compat.torch_kl_div(log_q, np.log(p), "batchmean", log_target=True)
    assert_close(got, d["log_target_batchmean"], **F64)
    # the defaults are torch's: "mean" over elements, which is not the KL per row
    assert not np.isclose(d["reduction_mean"], d["reduction_batchmean"])


def test_torch_kl_div_3d_peers(peers):
    d = peers["torch_kl_div_3d"]
    p, log_q = d["P"], np.log(d["Q"])
    got = compat.torch_kl_div(log_q, p, reduction="batchmean")  # / first dimension (3) only
    assert_close(got, d["batchmean"], **F64)
    terms = compat.torch_kl_div(log_q, p, reduction="none")
    assert terms.shape == (3, 4, 5)
    assert_close(terms.sum(axis=-1), d["rowwise"], **F64)
    assert_close(compat.torch_kl_div(log_q, p), d["rowwise"].sum() / 60, **F64)


def test_torch_kl_div_true_value_where_torch_gives_nan():
    # P = Q = [0, .5, .5]: torch computes 0 * (log 0 - (-inf)) = NaN for the first term
    p = np.array([0.0, 0.5, 0.5])
    for reduction in ("none", "sum", "mean", "batchmean"):
        got = compat.torch_kl_div(_log(p), p, reduction=reduction)
        assert_close(got, np.zeros_like(got), rtol=0, atol=0)
        got = compat.torch_kl_div(_log(p), _log(p), reduction=reduction, log_target=True)
        assert_close(got, np.zeros_like(got), rtol=0, atol=0)
    # a zero target still contributes 0 against a finite log q, and +inf where q = 0 < p
    got = compat.torch_kl_div(np.log([0.5, 0.5]), np.array([0.0, 1.0]), "none")
    assert_close(got, [0.0, np.log(2.0)], **F64)
    got = compat.torch_kl_div(np.array([0.0, -np.inf]), np.array([0.5, 0.5]), "sum")
    assert got == np.inf
    # a NaN is a property of the input: it stays
    got = compat.torch_kl_div(np.array([np.nan, -1.0]), np.array([0.0, 1.0]), "none")
    assert np.isnan(got[0]) and got[1] == 1.0
    assert np.isnan(compat.torch_kl_div(np.array([np.nan, -1.0]), np.array([0.0, 1.0]), "sum"))


def test_torch_kl_div_reductions_match_the_row_sums(rng):
    # unnormalized log-scores and targets: torch uses them as they are, and so must this
    target = rng.random((6, 5)) * 2
    target[0, :2] = 0.0
    inp = rng.normal(size=(6, 5))
    terms = compat.torch_kl_div(inp, target, "none")
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(target == 0, 0.0, target * (np.log(target) - inp))
    assert_close(terms, want, **F64)
    total = want.sum()
    assert_close(compat.torch_kl_div(inp, target, "sum"), total, **F64)
    assert_close(compat.torch_kl_div(inp, target, "mean"), total / 30, **F64)
    assert_close(compat.torch_kl_div(inp, target, "batchmean"), total / 6, **F64)


def test_torch_kl_div_shapes_and_dtypes(rng):
    p = random_probs(rng, (4, 3))
    log_q = np.log(random_probs(rng, (3,)))
    # broadcasting: torch's batchmean divides by input.shape[0], here 3 (1-d input)
    full = compat.torch_kl_div(np.broadcast_to(log_q, (4, 3)), p, "sum")
    assert_close(compat.torch_kl_div(log_q, p, "sum"), full, **F64)
    assert_close(compat.torch_kl_div(log_q, p, "batchmean"), full / 3, **F64)
    assert compat.torch_kl_div(log_q, p, "none").shape == (4, 3)
    # a length-1 last axis broadcasts, as in torch
    col = np.log(np.full((4, 1), 0.5))
    assert_close(
        compat.torch_kl_div(col, p, "sum"),
        compat.torch_kl_div(np.broadcast_to(col, (4, 3)), p, "sum"),
        **F64,
    )
    # 0-d inputs: one term, batchmean divides by 1
    assert_close(
        compat.torch_kl_div(np.float64(-1.0), np.float64(0.5), "batchmean"),
        0.5 * (np.log(0.5) + 1.0),
        **F64,
    )
    assert compat.torch_kl_div(np.float64(-1.0), np.float64(0.5), "none").shape == ()
    # float32 in, float32 out; float16 computed in float32
    for dtype, result in ((np.float32, np.float32), (np.float16, np.float32)):
        for reduction in ("none", "sum", "mean", "batchmean"):
            got = compat.torch_kl_div(log_q.astype(dtype), p.astype(dtype), reduction)
            assert got.dtype == result, (dtype, reduction)
    # an empty batch: torch gives 0 for "sum" and NaN (0 / 0) for the means
    empty = np.empty((0, 3))
    assert compat.torch_kl_div(empty, empty, "sum") == 0.0
    assert np.isnan(compat.torch_kl_div(empty, empty, "mean"))
    assert np.isnan(compat.torch_kl_div(empty, empty, "batchmean"))
    assert compat.torch_kl_div(empty, empty, "none").shape == (0, 3)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
def test_torch_kl_div_against_torch(rng, reduction, log_target, dtype):
    torch = pytest.importorskip("torch")
    n, k = 7, 11
    target = random_probs(rng, (n, k))
    target[rng.random((n, k)) < 0.25] = 0.0  # zeros in the target
    inp = rng.normal(size=(n, k)) - 2.0  # finite log-scores, not normalized
    t_in = _log(target) if log_target else target
    tol = F64 if dtype == np.float64 else {"rtol": 2e-5, "atol": 1e-6}

    got = compat.torch_kl_div(inp.astype(dtype), t_in.astype(dtype), reduction, log_target)
    want_terms = torch.nn.functional.kl_div(
        torch.from_numpy(inp), torch.from_numpy(t_in), reduction="none", log_target=log_target
    ).numpy()
    zero = target == 0
    if log_target:
        # torch: exp(-inf) * (-inf - input) = 0 * -inf = NaN at every zero target
        assert np.isnan(want_terms[zero]).all()
        want_terms[zero] = 0.0  # the true value
        want = {
            "none": want_terms,
            "sum": want_terms.sum(),
            "mean": want_terms.mean(),
            "batchmean": want_terms.sum() / n,
        }[reduction]
    else:
        assert not np.isnan(want_terms).any()  # finite input: torch has no NaN here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            want = torch.nn.functional.kl_div(
                torch.from_numpy(inp.astype(dtype)),
                torch.from_numpy(t_in.astype(dtype)),
                reduction=reduction,
            ).numpy()
    assert np.asarray(got).dtype == dtype
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, **tol)


def test_torch_kl_div_against_torch_where_torch_gives_nan(rng):
    torch = pytest.importorskip("torch")
    target = random_probs(rng, (5, 6))
    target[:, 0] = 0.0
    inp = np.log(random_probs(rng, (5, 6)))
    inp[:, 0] = -np.inf  # q = 0 where p = 0
    inp[1, 3] = np.nan
    theirs = torch.nn.functional.kl_div(
        torch.from_numpy(inp), torch.from_numpy(target), reduction="none"
    ).numpy()
    assert np.isnan(theirs[:, 0]).all()
    ours = compat.torch_kl_div(inp, target, "none")
    assert (ours[:, 0] == 0).all()
    assert np.isnan(ours[1, 3]) and np.isnan(theirs[1, 3])
    assert_close(ours[:, 1:], theirs[:, 1:], **F64)


def _torch_kl_div(torch, inp, target, reduction, log_target=False):
    with warnings.catch_warnings():  # torch's warning that its "mean" is not the KL
        warnings.simplefilter("ignore", UserWarning)
        return torch.nn.functional.kl_div(
            torch.from_numpy(inp),
            torch.from_numpy(target),
            reduction=reduction,
            log_target=log_target,
        ).numpy()


@pytest.mark.parametrize("log_target", [False, True])
def test_torch_kl_div_native_calls_against_torch(rng, log_target):
    # the README's native column for F.kl_div: the same numbers through fastkl.kl_div
    torch = pytest.importorskip("torch")
    n, k = 9, 7
    p = random_probs(rng, (n, k))
    if not log_target:  # zeros in a log target are torch's NaN, checked above
        p[rng.random((n, k)) < 0.25] = 0.0
    lq = np.log(random_probs(rng, (n, k)))
    target = np.log(p) if log_target else p
    p_form = "log_probs" if log_target else "probs"

    def native(reduction):
        return fastkl.kl_div(target, lq, p_form=p_form, q_form="log_probs", reduction=reduction)

    def theirs(reduction):
        return _torch_kl_div(torch, lq, target, reduction, log_target)

    assert not np.isnan(theirs("none")).any()
    assert_close(native("mean"), theirs("batchmean"), **F64)
    assert_close(native("sum"), theirs("sum"), **F64)
    assert_close(native("sum") / p.size, theirs("mean"), **F64)
    assert_close(native("none"), theirs("none").sum(axis=-1), **F64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_kl_div_of_log_softmax_against_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    p = random_probs(rng, (8, 6)).astype(dtype)
    p[0, :3] = 0.0
    zq = (rng.normal(size=(8, 6)) * 3).astype(dtype)
    with torch.no_grad():
        lq = torch.nn.functional.log_softmax(torch.from_numpy(zq), dim=-1)
        want = torch.nn.functional.kl_div(lq, torch.from_numpy(p), reduction="batchmean").numpy()
    tol = F64 if dtype == np.float64 else {"rtol": 1e-5}
    got = compat.torch_kl_div(scipy.special.log_softmax(zq, axis=-1), p, "batchmean")
    assert_close(got, want, **tol)
    got = fastkl.kl_div(p, zq, q_form="logits", reduction="mean")
    assert got.dtype == dtype
    assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("form", ["probs", "logits"])
def test_torch_categorical_against_torch(rng, form, dtype):
    # torch.distributions: kl_divergence(Categorical, Categorical) and Categorical.entropy()
    torch = pytest.importorskip("torch")
    categorical = torch.distributions.Categorical
    n, k = 10, 7
    if form == "probs":  # unnormalized weights with zeros: Categorical normalizes them
        p, q = _unnormalized(rng, (n, k)) + 1e-3, _unnormalized(rng, (n, k)) + 1e-3
        p[1:4, :2] = 0.0
        q[1:3, :2] = 0.0  # q = 0 where p = 0: a finite divergence
        q[0, 3] = 0.0  # q = 0 < p: +inf
        p, q = p.astype(dtype), q.astype(dtype)
        dp, dq = categorical(probs=torch.from_numpy(p)), categorical(probs=torch.from_numpy(q))
        kl = fastkl.kl_div(p, q, normalize=True)
        h = fastkl.entropy(p, normalize=True)
    else:
        zp, zq = (rng.normal(size=(n, k)) * 2).astype(dtype), rng.normal(size=(n, k)).astype(dtype)
        zp[1:4, :2] = -np.inf  # classes of probability 0
        zq[1:3, :2] = -np.inf
        zq[0, 3] = -np.inf
        dp, dq = categorical(logits=torch.from_numpy(zp)), categorical(logits=torch.from_numpy(zq))
        kl = fastkl.kl_div(zp, zq, p_form="logits", q_form="logits")
        h = fastkl.entropy(zp, p_form="logits")
    want = torch.distributions.kl_divergence(dp, dq).numpy()
    assert np.isinf(want[0]) and np.isfinite(want[1:]).all()
    tol = F64 if dtype == np.float64 else {"rtol": 2e-5, "atol": 1e-6}
    assert kl.dtype == dtype and h.dtype == dtype
    assert_close(kl, want, **tol)
    assert_close(h, dp.entropy().numpy(), **tol)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_torch_cross_entropy_against_torch(rng, reduction):
    # soft targets: F.cross_entropy(logits, probabilities) is fastkl.cross_entropy on logits;
    # class indices are one-hot targets. torch's "mean" divides by the batch, as fastkl's does.
    torch = pytest.importorskip("torch")
    n, k = 12, 5
    p = random_probs(rng, (n, k))
    p[rng.random((n, k)) < 0.3] = 0.0
    zq = rng.normal(size=(n, k)) * 4
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(zq), torch.from_numpy(p), reduction=reduction
    ).numpy()
    got = fastkl.cross_entropy(p, zq, q_form="logits", reduction=reduction)
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, **F64)
    labels = rng.integers(0, k, size=n)
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(zq), torch.from_numpy(labels), reduction=reduction
    ).numpy()
    got = fastkl.cross_entropy(np.eye(k)[labels], zq, q_form="logits", reduction=reduction)
    assert_close(got, want, **F64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", None])
@pytest.mark.parametrize("log_prob", [False, True])
def test_torchmetrics_against_torch(rng, log_prob, reduction):
    # torchmetrics' kl_divergence is a few torch operations (torchmetrics 1.x): the same
    # operations here, as torch computes them
    torch = pytest.importorskip("torch")
    n, k = 8, 6
    if log_prob:  # used as they are, not normalized; -inf in p contributes 0
        p, q = np.log(random_probs(rng, (n, k))), rng.normal(size=(n, k))
        p[0, :2] = -np.inf
        tp, tq = torch.from_numpy(p), torch.from_numpy(q)
        rows = torch.sum(tp.exp() * torch.where(torch.isneginf(tp), 0.0, tp - tq), dim=-1)
    else:  # normalized first; 0 log 0 = 0
        p, q = _unnormalized(rng, (n, k)) + 1e-3, _unnormalized(rng, (n, k)) + 1e-3
        p[0, :2] = 0.0
        tp, tq = torch.from_numpy(p), torch.from_numpy(q)
        tp, tq = tp / tp.sum(dim=-1, keepdim=True), tq / tq.sum(dim=-1, keepdim=True)
        rows = torch.where(tp == 0, 0.0, tp * torch.log(tp / tq)).sum(dim=-1)
    want = {"mean": rows.sum() / n, "sum": rows.sum()}.get(reduction, rows).numpy()
    got = compat.torchmetrics_kl_divergence(p, q, log_prob=log_prob, reduction=reduction)
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, **F64)


# --- keras ------------------------------------------------------------------------------------


def test_keras_peers(peers):
    d = peers["keras"]
    assert (d["P"] == 0).any() and (d["Q"] == 0).any()
    assert_close(compat.keras_kl_divergence(d["P"], d["Q"]), d["per_row"], **F64)
    # the loss object's default reduction, sum_over_batch_size, in float32: the mean of rows
    p32, q32 = d["P"].astype(np.float32), d["Q"].astype(np.float32)
    per_row = compat.keras_kl_divergence(p32, q32)
    assert per_row.dtype == np.float32
    assert_close(per_row.mean(), d["KLDivergence_default"], **F32)
    got = fastkl.kl_div(p32, q32, eps=compat.KERAS_EPSILON, reduction="mean")
    assert_close(got, d["KLDivergence_default"], **F32)


def test_keras_clip_formula(rng):
    y_true = random_probs(rng, (4, 3, 5))
    y_pred = random_probs(rng, (4, 3, 5))
    y_true[0, 0, :2] = 0.0
    y_pred[1, 2, 3] = 0.0
    y_true[2, 1, 0] = -0.25  # Keras clips negatives to epsilon too, and values above 1
    y_pred[3, 0, 1] = 1.5
    eps = float(np.float32(1e-7))
    t, y = np.clip(y_true, eps, 1.0), np.clip(y_pred, eps, 1.0)
    want = (t * np.log(t / y)).sum(axis=-1)
    got = compat.keras_kl_divergence(y_true, y_pred)
    assert got.shape == (4, 3)
    assert_close(got, want, **F64)


# --- MXNet ------------------------------------------------------------------------------------


def test_mxnet_peers(peers):
    d = peers["mxnet"]
    p, q, zq = d["P"], d["Q"], d["ZQ"]
    k = p.shape[1]
    assert_close(compat.mxnet_kl_div_loss(np.log(q), p), d["from_logits_true"], **F64)
    # MXNet's log_softmax ran in float32
    got = compat.mxnet_kl_div_loss(zq, p, from_logits=False)
    assert_close(got, d["from_logits_false"], **F32)
    # releases before 1.8 averaged over the classes
    got = compat.mxnet_kl_div_loss(np.log(q), p, mean_over_classes=True)
    assert_close(got, d["from_logits_true"] / k, **F64)
    got = compat.mxnet_kl_div_loss(np.log(q), p, weight=2.5)
    assert_close(got, 2.5 * d["from_logits_true"], **F64)
    # the 1e-12 of MXNet's log(label + 1e-12) is visible at this tolerance
    plain = fastkl.kl_div(p, np.log(q), q_form="log_probs")
    assert not np.allclose(plain, d["from_logits_true"], rtol=1e-12, atol=0)


def test_mxnet_axis_and_zero_labels(rng):
    # classes along axis 0 of a 3-d array, zero labels, one pair that MXNet makes NaN
    label = random_probs(rng, (4, 6, 5))
    label[0, 0, :] = 0.0
    z = rng.normal(size=(4, 6, 5))
    label, z = np.moveaxis(label, -1, 0), np.moveaxis(z, -1, 0)  # (5, 4, 6): axis 0
    got = compat.mxnet_kl_div_loss(z, label, from_logits=False, axis=0)
    positive = np.count_nonzero(label > 0, axis=0)
    want = kl_ref(label, z, q_form="logits", axis=0) + 1e-12 * positive
    assert got.shape == (4, 6)
    assert_close(got, want, **F64)
    # label 0 against log q = -inf: MXNet 0 * (log(1e-12) + inf) = NaN; the true term is 0
    got = compat.mxnet_kl_div_loss(_log([0.0, 0.5, 0.5]), np.array([0.0, 0.5, 0.5]))
    assert_close(got, 2e-12, rtol=1e-12)
    # a label row broadcast against a batch of predictions
    row = random_probs(rng, (5,))
    log_q = np.log(random_probs(rng, (3, 5)))
    got = compat.mxnet_kl_div_loss(log_q, row)
    assert_close(got, kl_ref(row, log_q, q_form="log_probs") + 5e-12, **F64)


# --- scipy ------------------------------------------------------------------------------------


def test_scipy_entropy_peers(peers):
    d = peers["scipy_entropy"]
    pk, qk = d["PK"], d["QK"]
    assert_close(compat.scipy_entropy(pk, qk), d["axis0"], **F64)  # scipy's default: columns
    assert_close(compat.scipy_entropy(pk, qk, axis=1), d["axis1"], **F64)
    assert_close(compat.scipy_entropy(pk, qk, base=2, axis=1), d["axis1_base2"], **F64)
    assert_close(compat.scipy_entropy(pk, qk, None, 1), d["axis1"], **F64)  # positional


def test_scipy_entropy_of_p_peers(peers):
    d = peers["dense"]
    assert_close(compat.scipy_entropy(d["P"], axis=1), d["entropy"], **F64)
    assert_close(compat.scipy_entropy(d["P"].T), d["entropy"], **F64)
    assert_close(compat.scipy_entropy(d["P"], d["Q"], axis=-1), d["kl"], **F64)


def test_scipy_jensenshannon_peers(peers):
    d = peers["dense"]  # rows are the distributions: scipy was called with axis=1
    assert_close(compat.scipy_jensenshannon(d["P"], d["Q"], axis=1), d["js_dist"], **F64)
    got = compat.scipy_jensenshannon(d["P"], d["Q"], base=2, axis=1)
    assert_close(got, d["js_dist_base2"], **F64)
    assert_close(compat.scipy_jensenshannon(d["P"].T, d["Q"].T), d["js_dist"], **F64)


def _unnormalized(rng, shape):
    x = rng.random(shape) * 3
    x[rng.random(shape) < 0.2] = 0.0  # zeros, as counts have
    return x


@pytest.mark.parametrize("shape_axis", [((5, 7), 0), ((5, 7), 1), ((3, 4, 6), 1), ((8,), 0)])
@pytest.mark.parametrize("base", [None, 2, 10.0])
@pytest.mark.parametrize("keepdims", [False, True])
def test_scipy_entropy_against_scipy(rng, shape_axis, base, keepdims):
    shape, axis = shape_axis
    pk = _unnormalized(rng, shape)
    qk = _unnormalized(rng, shape) + 0.1  # p > 0 with q = 0 (inf) tested below
    want = scipy.stats.entropy(pk, qk, base=base, axis=axis, keepdims=keepdims)
    got = compat.scipy_entropy(pk, qk, base, axis, keepdims=keepdims)
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, **F64)
    want = scipy.stats.entropy(pk, base=base, axis=axis, keepdims=keepdims)
    got = compat.scipy_entropy(pk, base=base, axis=axis, keepdims=keepdims)
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, **F64)


def test_scipy_entropy_edges_like_scipy(rng):
    # integer counts, a broadcast qk, p > 0 where q = 0 (inf), a zero-mass column (NaN)
    counts = rng.integers(0, 5, size=(6, 4))
    counts[:, 2] = 0
    qk = rng.random(6)
    qk[1] = 0.0
    with np.errstate(all="ignore"):
        want = scipy.stats.entropy(counts, qk[:, None])
        want_h = scipy.stats.entropy(counts)
    got = compat.scipy_entropy(counts, qk[:, None])
    assert np.isnan(got[2]) and np.isinf(want[counts[1] > 0]).all()
    assert_close(got, want, **F64)
    assert_close(compat.scipy_entropy(counts), want_h, **F64)
    assert compat.scipy_entropy(counts.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("shape_axis", [((5, 7), 0), ((5, 7), -1), ((3, 4, 6), 2), ((6,), 0)])
@pytest.mark.parametrize("base", [None, 2])
@pytest.mark.parametrize("keepdims", [False, True])
def test_scipy_jensenshannon_against_scipy(rng, shape_axis, base, keepdims):
    shape, axis = shape_axis
    p = _unnormalized(rng, shape) + 0.01
    q = _unnormalized(rng, shape)
    want = scipy.spatial.distance.jensenshannon(p, q, base, axis=axis, keepdims=keepdims)
    got = compat.scipy_jensenshannon(p, q, base, axis=axis, keepdims=keepdims)
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, **F64)


def test_scipy_jensenshannon_no_nan_on_near_identical_rows():
    # a pair for which scipy's divergence rounds below 0 and its distance is NaN
    p = np.array(
        [
            0.933108418355808,
            0.9862614782663774,
            0.7444999165908456,
            0.5177068201306432,
            0.04823385270733371,
        ]
    )
    q = np.array(
        [
            0.9331084184138905,
            0.9862614776136851,
            0.7444999162809002,
            0.5177068202987339,
            0.04823385266857379,
        ]
    )
    with np.errstate(invalid="ignore"):
        assert np.isnan(scipy.spatial.distance.jensenshannon(p, q))
    got = compat.scipy_jensenshannon(p, q)
    assert 0.0 <= got < 1e-7
    counts = np.array([[3, 1, 0], [1, 1, 2]])  # integer counts, disjoint and identical
    got = compat.scipy_jensenshannon(counts, counts[::-1], base=2, axis=1)
    assert_close(got, scipy.spatial.distance.jensenshannon(counts, counts[::-1], 2, axis=1), **F64)


# --- optax ------------------------------------------------------------------------------------


def test_optax_peers(peers):
    d = peers["optax"]  # JAX computed in float32
    p32, q32 = d["P"].astype(np.float32), d["Q"].astype(np.float32)
    got = compat.optax_kl_divergence(np.log(q32), p32)
    assert got.dtype == np.float32
    assert_close(got, d["kl_divergence"], **F32)
    got = compat.optax_kl_divergence_with_log_targets(np.log(q32), np.log(p32))
    assert_close(got, d["with_log_targets"], **F32)


def test_optax_axis_and_zero_targets(rng):
    targets = random_probs(rng, (4, 5, 3))
    targets[0, 0, :2] = 0.0
    log_pred = np.log(random_probs(rng, (4, 5, 3)))
    log_pred[0, 0, 0] = -np.inf  # optax: 0 * (0 + inf) = NaN; the true term is 0
    t, lp = np.moveaxis(targets, -1, 1), np.moveaxis(log_pred, -1, 1)  # classes on axis 1
    want = kl_ref(targets, log_pred, q_form="log_probs")
    assert np.isfinite(want[0, 0])
    assert_close(compat.optax_kl_divergence(lp, t, axis=1), want, **F64)
    got = compat.optax_kl_divergence_with_log_targets(lp, _log(t), 1)
    assert_close(got, want, **F64)


# --- torchmetrics -----------------------------------------------------------------------------


def test_torchmetrics_peers(peers):
    d = peers["torchmetrics"]
    pk, qk = d["PK"], d["QK"]
    n = pk.shape[0]
    assert_close(compat.torchmetrics_kl_divergence(pk, qk), d["mean"], **F64)
    assert_close(compat.torchmetrics_kl_divergence(pk, qk, reduction="sum"), d["mean"] * n, **F64)
    rows = compat.torchmetrics_kl_divergence(pk, qk, reduction="none")
    assert rows.shape == (n,)
    assert_close(rows.mean(), d["mean"], **F64)
    assert_close(compat.torchmetrics_kl_divergence(pk, qk, False, None), rows, **F64)


def test_torchmetrics_log_prob_is_not_normalized(rng):
    p = np.log(random_probs(rng, (4, 6)))
    q = rng.normal(size=(4, 6))  # log-scores that do not sum to 1: used as they are
    p[0, 0] = -np.inf  # contributes 0
    got = compat.torchmetrics_kl_divergence(p, q, log_prob=True, reduction="none")
    assert_close(got, kl_ref(p, q, p_form="log_probs", q_form="log_probs"), **F64)
    normalized = kl_ref(p, q, p_form="log_probs", q_form="logits")
    assert not np.allclose(got, normalized)
    # probabilities are normalized first
    pk, qk = rng.random((3, 5)) * 4, rng.random((3, 5)) * 4
    pk[0, 1] = 0.0
    got = compat.torchmetrics_kl_divergence(pk, qk, reduction="none")
    assert_close(got, kl_ref(pk, qk, normalize=True), **F64)


# --- bad input: errors name the peer's argument -----------------------------------------------

X = np.log(np.full((3, 4), 0.25))
P = np.full((3, 4), 0.25)
INTS = np.ones((3, 4), dtype=np.int64)

BAD = [
    (compat.torch_kl_div, (X, P), {"reduction": "batch_mean"}, ValueError, "reduction"),
    (compat.torch_kl_div, (X, P), {"reduction": None}, ValueError, "reduction"),
    (compat.torch_kl_div, (X, P), {"log_target": 1}, TypeError, "log_target"),
    (compat.torch_kl_div, (INTS, P), {}, TypeError, "input"),
    (compat.torch_kl_div, (X, INTS), {}, TypeError, "target"),
    (compat.torch_kl_div, (X, P[:2]), {}, ValueError, "input and target"),
    (compat.torch_kl_div, (X, P[:2]), {"reduction": "none"}, ValueError, "input and target"),
    (compat.keras_kl_divergence, (P.astype(complex), P), {}, TypeError, "y_true"),
    (compat.keras_kl_divergence, (P, P[:, :3]), {}, ValueError, "y_true and y_pred"),
    (compat.mxnet_kl_div_loss, (X, P), {"from_logits": "yes"}, TypeError, "from_logits"),
    (compat.mxnet_kl_div_loss, (X, P), {"weight": "2"}, TypeError, "weight"),
    (compat.mxnet_kl_div_loss, (X, P), {"mean_over_classes": 1}, TypeError, "mean_over_classes"),
    (compat.mxnet_kl_div_loss, (X, P[:, :3]), {}, ValueError, "pred and label"),
    (compat.mxnet_kl_div_loss, (X, P), {"axis": 2}, ValueError, "axis"),
    (compat.scipy_entropy, (P.astype(complex),), {}, TypeError, "pk"),
    (compat.scipy_entropy, (P, P[:2]), {}, ValueError, "pk and qk"),
    (compat.scipy_entropy, (P, P), {"base": 1}, ValueError, "base"),
    (compat.scipy_entropy, (P,), {"base": -2.0}, ValueError, "base"),
    (compat.scipy_entropy, (P,), {"keepdims": "no"}, TypeError, "keepdims"),
    (compat.scipy_entropy, (P,), {"axis": 1.5}, TypeError, "axis"),
    (compat.scipy_jensenshannon, (P, P[:2]), {}, ValueError, "p and q"),
    (compat.scipy_jensenshannon, (P, "abc"), {}, TypeError, "q"),
    (compat.optax_kl_divergence, (X, P), {"axis": (0, 1)}, TypeError, "axis"),
    (compat.optax_kl_divergence, (X, INTS), {}, TypeError, "targets"),
    (compat.optax_kl_divergence_with_log_targets, (INTS, X), {}, TypeError, "log_predictions"),
    (
        compat.torchmetrics_kl_divergence,
        (P, P),
        {"reduction": "elementwise_mean"},
        ValueError,
        "reduction",
    ),
    (compat.torchmetrics_kl_divergence, (P, P), {"log_prob": None}, TypeError, "log_prob"),
    (compat.torchmetrics_kl_divergence, (P[0], P[0]), {}, ValueError, "p and q"),
    (compat.torchmetrics_kl_divergence, (P, P[:2]), {}, ValueError, "p and q"),
]


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "exc", "name"),
    BAD,
    ids=[f"{fn.__name__}-{name}-{i}" for i, (fn, _, _, _, name) in enumerate(BAD)],
)
def test_bad_input_names_the_argument(fn, args, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        fn(*args, **kwargs)
