"""Agreement with the values the peer libraries returned (tests/data/peers.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from reference import assert_close

import fastkl

F64 = {"rtol": 1e-12, "atol": 1e-15}
F32 = {"rtol": 1e-6}


def test_fixture_is_the_shared_reference():
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "peers.json"
    if not shared.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    ours = json.loads((Path(__file__).parent / "data" / "peers.json").read_text())
    assert ours == json.loads(shared.read_text())


def test_dense_scipy(peers):
    d = peers["dense"]
    assert_close(fastkl.kl_div(d["P"], d["Q"]), d["kl"], **F64)
    assert_close(fastkl.kl_div(d["Q"], d["P"]), d["kl_rev"], **F64)
    assert_close(fastkl.kl_div(d["P"], d["Q"], base=2), d["kl_bits"], **F64)


def test_zeros_in_p_scipy_rel_entr(peers):
    d = peers["zeros_in_p"]
    assert np.any(d["P"] == 0)
    assert_close(fastkl.kl_div(d["P"], d["Q"]), d["kl"], **F64)


def test_logits_torch_and_tfp(peers):
    d = peers["logits"]
    got = fastkl.kl_div(d["ZP"], d["ZQ"], p_form="logits", q_form="logits")
    assert_close(got, d["kl"], **F64)
    assert_close(got, d["tfp_kl"], **F64)


def test_probs_vs_logits_torch(peers):
    d = peers["probs_vs_logits"]
    assert_close(fastkl.kl_div(d["P"], d["ZQ"], q_form="logits"), d["kl"], **F64)


def test_torch_kl_div_reductions(peers):
    d = peers["torch_kl_div"]
    p, q = d["P"], d["Q"]
    n, k = p.shape
    assert_close(fastkl.kl_div(p, q, reduction="sum"), d["reduction_sum"], **F64)
    # torch's "batchmean" is our "mean" over distributions; its "mean" divides by n * k
    assert_close(fastkl.kl_div(p, q, reduction="mean"), d["reduction_batchmean"], **F64)
    assert_close(fastkl.kl_div(p, q, reduction="sum") / (n * k), d["reduction_mean"], **F64)
    got = fastkl.kl_div(p, np.log(q), q_form="log_probs", p_form="probs", reduction="mean")
    assert_close(got, d["reduction_batchmean"], **F64)
    got = fastkl.kl_div(np.log(p), np.log(q), p_form="log_probs", q_form="log_probs")
    assert_close(got.mean(), d["log_target_batchmean"], **F64)
    # reduction="none" in torch is per element; its row sums are our rows
    assert_close(fastkl.kl_div(p, q), d["reduction_none"].sum(axis=1), **F64)


def test_torch_kl_div_3d(peers):
    d = peers["torch_kl_div_3d"]
    rows = fastkl.kl_div(d["P"], d["Q"])
    assert rows.shape == (3, 4)
    assert_close(rows, d["rowwise"], **F64)
    # torch's batchmean divides by the first dimension only
    assert_close(fastkl.kl_div(d["P"], d["Q"], reduction="sum") / 3, d["batchmean"], **F64)


def test_keras_clipping(peers):
    d = peers["keras"]
    # Keras clips at its epsilon cast to float32 (1.0000000116860974e-07), also for float64
    # tensors: with a float64 1e-7 the clipped rows differ by about 6e-9.
    got = fastkl.kl_div(d["P"], d["Q"], eps=np.float32(1e-7))
    assert_close(got, d["per_row"], **F64)
    got32 = fastkl.kl_div(
        d["P"].astype(np.float32), d["Q"].astype(np.float32), eps=1e-7, reduction="mean"
    )
    assert got32.dtype == np.float32
    assert_close(got32, d["KLDivergence_default"], **F32)


def test_scipy_entropy_normalize_and_axis(peers):
    d = peers["scipy_entropy"]
    pk, qk = d["PK"], d["QK"]
    assert_close(fastkl.kl_div(pk, qk, normalize=True, axis=0), d["axis0"], **F64)
    assert_close(fastkl.kl_div(pk, qk, normalize=True, axis=1), d["axis1"], **F64)
    got = fastkl.kl_div(pk, qk, normalize=True, axis=1, base=2)
    assert_close(got, d["axis1_base2"], **F64)


def test_torchmetrics_mean_of_normalized(peers):
    d = peers["torchmetrics"]
    got = fastkl.kl_div(d["PK"], d["QK"], normalize=True, reduction="mean")
    assert_close(got, d["mean"], **F64)


def test_optax_float32(peers):
    d = peers["optax"]
    p32, q32 = d["P"].astype(np.float32), d["Q"].astype(np.float32)
    got = fastkl.kl_div(p32, np.log(q32), q_form="log_probs")
    assert_close(got, d["kl_divergence"], **F32)
    got = fastkl.kl_div(np.log(p32), np.log(q32), p_form="log_probs", q_form="log_probs")
    assert_close(got, d["with_log_targets"], **F32)


def test_mxnet(peers):
    d = peers["mxnet"]
    p, q = d["P"], d["Q"]
    k = p.shape[1]
    # MXNet 1.9.1 computes label * (log(label + 1e-12) - pred): to first order that is KL plus
    # 1e-12 for each of the k positive labels.
    assert np.all(p > 0)
    got = fastkl.kl_div(p, np.log(q), q_form="log_probs")
    assert_close(got + k * 1e-12, d["from_logits_true"], **F64)
    got = fastkl.kl_div(p, d["ZQ"], q_form="logits")  # MXNet's log_softmax ran in float32
    assert_close(got + k * 1e-12, d["from_logits_false"], **F32)


def test_seed_values():
    assert_close(fastkl.kl_div([0.1, 0.9], [0.4, 0.6]), 0.226289161185359, **F64)
    assert_close(fastkl.kl_div([0.5, 0.5], [0.99, 0.01]), 1.61446308036085, **F64)
    assert_close(fastkl.kl_div([0.99, 0.01], [0.5, 0.5]), 0.637145646205098, **F64)
    assert_close(fastkl.kl_div([1.0, 0.0], [0.8, 0.2], base=2), 0.321928094887362, **F64)
    assert_close(fastkl.kl_div([1.0, 0.0], [0.2, 0.8], base=2), 2.321928094887362, **F64)


@pytest.mark.parametrize(
    ("p", "q", "exact", "keras"),
    [
        ([0, 0.5, 0.5], [0.2, 0.3, 0.5], 0.255412811882995, 0.255411361017206),
        ([0.5, 0.5], [1, 0], np.inf, 7.36590063907617),
        ([0, 0.5, 0.5], [0, 0.5, 0.5], 0.0, 0.0),
    ],
)
def test_edge_rows_where_peers_disagree(p, q, exact, keras):
    assert_close(fastkl.kl_div(np.array(p, float), np.array(q, float)), exact, **F64)
    got = fastkl.kl_div(np.array(p, float), np.array(q, float), eps=np.float32(1e-7))
    assert_close(got, keras, **F64)
