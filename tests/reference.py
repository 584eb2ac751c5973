"""Slow, obviously-correct references, built on scipy and numpy in float64."""

from __future__ import annotations

import numpy as np
from scipy.special import entr, log_softmax, rel_entr, xlogy
from scipy.special import kl_div as scipy_kl_div


def to_probs(x: np.ndarray, form: str, axis: int = -1) -> np.ndarray:
    """Probabilities (float64) from an input given in ``form``."""
    x = np.asarray(x, dtype=np.float64)
    if form == "probs":
        return x
    if form == "log_probs":
        return np.exp(x)
    return np.exp(log_softmax(x, axis=axis))


def ref_inputs(
    p: np.ndarray,
    q: np.ndarray,
    *,
    p_form: str = "probs",
    q_form: str = "probs",
    axis: int = -1,
    eps: float | None = None,
    normalize: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 probabilities after fastkl's conversions (forms, normalize, eps)."""
    p, q = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(q, np.float64))
    if normalize and p_form == "log_probs":
        p_form = "logits"
    if normalize and q_form == "log_probs":
        q_form = "logits"
    pp = to_probs(p, p_form, axis)
    qq = to_probs(q, q_form, axis)
    if normalize:
        if p_form == "probs":
            pp = pp / pp.sum(axis=axis, keepdims=True)
        if q_form == "probs":
            qq = qq / qq.sum(axis=axis, keepdims=True)
    if eps is not None:
        pp = np.clip(pp, eps, 1.0)
        qq = np.clip(qq, eps, 1.0)
    return pp, qq


#: divergence -> its elementwise terms from float64 probabilities (scipy's functions)
TERMS = {
    "kl": rel_entr,
    "js": lambda p, q: 0.5 * (rel_entr(p, (p + q) / 2) + rel_entr(q, (p + q) / 2)),
    "sym_kl": lambda p, q: rel_entr(p, q) + rel_entr(q, p),
    "cross_entropy": lambda p, q: -xlogy(p, q),
    "entropy": lambda p, q: entr(p),
    "generalized_kl": scipy_kl_div,
    "tv": lambda p, q: 0.5 * np.abs(p - q),
    # the squared distance's terms (the spec's post step takes the root)
    "hellinger": lambda p, q: 0.5 * (np.sqrt(p) - np.sqrt(q)) ** 2,
}


def divergence_ref(name: str, p, q, *, axis: int = -1, base: float | None = None, **kw):
    """sum(TERMS[name](p, q), axis) after the same conversions, in float64 (``base`` divides)."""
    pp, qq = ref_inputs(p, q, axis=axis, **kw)
    with np.errstate(all="ignore"):
        out = TERMS[name](pp, qq).sum(axis=axis)
    if base is not None:
        out = out / np.log(base)
    return out


def kl_ref(p: np.ndarray, q: np.ndarray, **kw) -> np.ndarray:
    """sum(rel_entr(p, q), axis) after the same conversions, in float64."""
    return divergence_ref("kl", p, q, **kw)


def random_probs(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.float64):
    x = rng.standard_exponential(shape)
    return (x / x.sum(axis=-1, keepdims=True)).astype(dtype)


def assert_close(actual, desired, *, rtol: float, atol: float = 0.0) -> None:
    """assert_allclose that also requires the same infinities and NaNs in the same places."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, equal_nan=True)
