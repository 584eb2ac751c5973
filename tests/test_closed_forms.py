"""Closed forms: Bernoulli, diagonal Gaussian and VAE KL against the peers and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close
from scipy.special import rel_entr

import fastkl

F64 = {"rtol": 1e-12, "atol": 1e-15}


def bernoulli_ref(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return rel_entr(p, q) + rel_entr(1 - p, 1 - q)


def gaussian_ref(mp, sp, mq, sq):
    mp, sp, mq, sq = (np.asarray(x, np.float64) for x in (mp, sp, mq, sq))
    return np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5


# --- Bernoulli ---------------------------------------------------------------------------------


def test_bernoulli_peers_and_seed(peers):
    d = peers["bernoulli"]
    assert_close(fastkl.bernoulli_kl(d["rho"], d["rho_hat"]), d["kl"], **F64)
    # ../shared/seeds/000: KL([0.1, 0.9] || [0.4, 0.6])
    assert_close(fastkl.bernoulli_kl(0.1, 0.4), 0.226289161185359, rtol=1e-14)
    assert_close(fastkl.bernoulli_kl(0.1, 0.4), fastkl.kl_div([0.1, 0.9], [0.4, 0.6]), rtol=1e-15)


def test_bernoulli_random_axis_and_reductions(rng):
    rho = rng.uniform(0.01, 0.2, size=(64,))  # a target per unit
    rho_hat = rng.uniform(size=(8, 64))  # mean activations, per sample and unit
    terms = bernoulli_ref(rho, rho_hat)
    assert_close(fastkl.bernoulli_kl(rho, rho_hat), terms, **F64)
    assert_close(fastkl.bernoulli_kl(rho, rho_hat, axis=-1), terms.sum(-1), **F64)
    assert_close(fastkl.bernoulli_kl(rho, rho_hat, axis=0), terms.sum(0), **F64)
    assert_close(fastkl.bernoulli_kl(rho, rho_hat, reduction="sum"), terms.sum(), rtol=1e-12)
    got = fastkl.bernoulli_kl(rho, rho_hat, axis=-1, reduction="mean", base=2)
    assert_close(got, terms.sum(-1).mean() / np.log(2), rtol=1e-12)
    got32 = fastkl.bernoulli_kl(rho.astype(np.float32), rho_hat.astype(np.float32))
    assert got32.dtype == np.float32
    assert_close(
        got32, bernoulli_ref(rho.astype(np.float32), rho_hat.astype(np.float32)), rtol=1e-6
    )


def test_bernoulli_edges():
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.3, 0.3, 1.5, -0.1, np.nan, 0.3])
    q = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 1.2])
    want = [0.0, 0.0, np.inf, np.inf, np.inf, np.inf, np.nan, np.nan, np.nan, np.nan]
    assert_close(fastkl.bernoulli_kl(p, q), want, rtol=0)
    assert fastkl.bernoulli_kl(1, 0).dtype == np.float64  # integers are read as float64


def test_bernoulli_q_below_half_an_ulp_of_one():
    """KL(0 || q) = -log(1 - q) ~ q: 1 - q rounds to 1 here, log1p keeps it (found by the
    long fuzz run: float32 q = its smallest normal gave 0)."""
    for q in (1e-300, 5e-324, 1e-17, 2.0**-60):
        got = float(fastkl.bernoulli_kl(0.0, q))
        assert abs(got - q) <= 1e-15 * q, (q, got)  # not approx: its abs=1e-12 passes 0
    tiny = np.finfo(np.float32).tiny
    got = fastkl.bernoulli_kl(np.float32(0.0), np.array([tiny], np.float32))
    assert got.dtype == np.float32 and got[0] == tiny


# --- Gaussians ---------------------------------------------------------------------------------


def test_gaussian_peers(peers):
    d = peers["diag_gauss"]
    got = fastkl.gaussian_kl(d["mu_p"], d["sigma_p"], d["mu_q"], d["sigma_q"])
    assert_close(got, d["kl"], **F64)  # TFP MultivariateNormalDiag
    assert_close(got, d["kl_torch"], **F64)  # torch Independent(Normal)
    s = peers["normal_scalar"]  # TFP, float32
    assert_close(fastkl.gaussian_kl(1.0, 1.0, 2.0, 0.5, axis=None), s["fwd"], rtol=1e-6)
    assert_close(fastkl.gaussian_kl(2.0, 0.5, 1.0, 1.0, axis=None), s["rev"], rtol=1e-6)
    assert_close(fastkl.gaussian_kl(1.0, 1.0, 2.0, 0.5, axis=None), 2.80685281944005, rtol=1e-14)


def test_gaussian_random_and_broadcast(rng):
    mp, mq = rng.normal(size=(10, 5)), rng.normal(size=(5,))
    sp, sq = rng.uniform(0.1, 3, size=(10, 5)), rng.uniform(0.1, 3, size=(10, 1))
    terms = gaussian_ref(mp, sp, mq, sq)
    assert_close(fastkl.gaussian_kl(mp, sp, mq, sq), terms.sum(-1), **F64)
    assert_close(fastkl.gaussian_kl(mp, sp, mq, sq, axis=None), terms, **F64)
    assert_close(fastkl.gaussian_kl(mp, sp, mq, sq, axis=0), terms.sum(0), **F64)
    assert_close(
        fastkl.gaussian_kl(mp, sp, mq, sq, reduction="mean"), terms.sum(-1).mean(), rtol=1e-12
    )
    assert_close(fastkl.gaussian_kl(mp, sp, mp, sp), np.zeros(10), rtol=0, atol=1e-15)


def test_gaussian_edges():
    got = fastkl.gaussian_kl(
        0.0, [0.0, 1.0, -1.0, 0.0, 1.0], 0.0, [1.0, 0.0, 1.0, 0.0, -1.0], axis=None
    )
    assert_close(got, [np.inf, np.inf, np.nan, np.nan, np.nan], rtol=0)


# --- VAE ---------------------------------------------------------------------------------------


def test_vae_peers(peers):
    d = peers["vae"]
    assert_close(fastkl.vae_kl(d["mu"], d["logvar"]), d["kl"], **F64)


def test_vae_random_and_small_logvar(rng):
    mu, logvar = rng.normal(size=(16, 32)), rng.normal(size=(16, 32))
    want = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(-1)
    assert_close(fastkl.vae_kl(mu, logvar), want, rtol=1e-12)
    assert_close(fastkl.vae_kl(mu, logvar, reduction="mean"), want.mean(), rtol=1e-12)
    # near the prior: expm1 keeps the value that 1 + logvar - exp(logvar) rounds away
    lv = np.array([1e-9, -1e-9])
    assert_close(fastkl.vae_kl(np.zeros(2), lv), (lv**2 / 4).sum(), rtol=1e-6)
    assert fastkl.vae_kl(mu.astype(np.float32), logvar.astype(np.float32)).dtype == np.float32


def test_closed_forms_check_their_arguments():
    with pytest.raises(TypeError, match="sigma_q: expected floating"):
        fastkl.gaussian_kl(0.0, 1.0, 0.0, np.array([True]))
    with pytest.raises(ValueError, match="logvar: the shapes do not broadcast"):
        fastkl.vae_kl(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="base"):
        fastkl.bernoulli_kl(0.1, 0.2, base=-1)
    with pytest.raises(ValueError, match="reduction"):
        fastkl.vae_kl(np.zeros(3), np.zeros(3), reduction="batchmean")
