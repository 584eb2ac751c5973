"""Properties of KL that hold for any input (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference import assert_close, divergence_ref, kl_ref

import fastkl

dtypes = st.sampled_from([np.float32, np.float64])


@st.composite
def distributions(draw, min_rows=1, max_rows=6, max_k=40):
    """A (n, k) pair of probability arrays with exact zeros and tiny values mixed in."""
    n = draw(st.integers(min_rows, max_rows))
    k = draw(st.integers(1, max_k))
    dtype = draw(dtypes)
    weights = st.one_of(
        st.just(0.0), st.floats(1e-30, 1.0), st.floats(0.0, 1.0, allow_subnormal=False)
    )

    def side():
        x = draw(arrays(np.float64, (n, k), elements=weights))
        x[:, draw(st.integers(0, k - 1))] += 1.0  # every row has mass
        return (x / x.sum(axis=1, keepdims=True)).astype(dtype)

    return side(), side()


@given(distributions())
def test_matches_reference(pq):
    p, q = pq
    tol = {"rtol": 1e-5, "atol": 1e-7} if p.dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    assert_close(fastkl.kl_div(p, q), kl_ref(p, q), **tol)


@given(distributions())
def test_nonnegative(pq):
    p, q = pq
    got = fastkl.kl_div(p, q)
    # Gibbs' inequality, up to the rounding of rows that sum to 1 only approximately
    assert np.all(got >= -1e-6)


@given(distributions())
def test_zero_for_identical_rows(pq):
    p, _ = pq
    assert np.all(fastkl.kl_div(p, p) == 0.0)
    with np.errstate(divide="ignore"):
        lp = np.log(p)
    assert np.all(fastkl.kl_div(lp, lp, p_form="log_probs", q_form="log_probs") == 0.0)
    assert np.all(fastkl.kl_div(lp, lp, p_form="logits", q_form="logits") == 0.0)


@given(distributions(), st.randoms(use_true_random=False))
def test_invariant_under_column_permutation(pq, random):
    p, q = pq
    perm = list(range(p.shape[1]))
    random.shuffle(perm)
    a = fastkl.kl_div(p, q)
    b = fastkl.kl_div(p[:, perm], q[:, perm])
    tol = {"rtol": 1e-5, "atol": 1e-7} if p.dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    assert_close(a, b, **tol)


@given(distributions(), st.floats(-50, 50))
def test_forms_agree(pq, shift):
    # rows that sum to 1 in float64 (float32 rounding leaves them 1 +- 1e-7 off, which
    # logits would renormalize and probabilities would not)
    p, q = (x / x.sum(axis=1, keepdims=True) for x in (y.astype(np.float64) for y in pq))
    with np.errstate(divide="ignore"):
        lp, lq = np.log(p), np.log(q)
    ref = fastkl.kl_div(p, q)
    for p_in, pf in [(p, "probs"), (lp, "log_probs"), (lp + shift, "logits")]:
        for q_in, qf in [(q, "probs"), (lq, "log_probs"), (lq - shift, "logits")]:
            got = fastkl.kl_div(p_in, q_in, p_form=pf, q_form=qf)
            assert_close(got, ref, rtol=1e-9, atol=1e-12)


@given(distributions(), st.floats(0.1, 100.0))
def test_normalize_is_scale_invariant(pq, scale):
    p, q = (x / x.sum(axis=1, keepdims=True) for x in (y.astype(np.float64) for y in pq))
    assert_close(
        fastkl.kl_div(p * scale, q / scale, normalize=True),
        fastkl.kl_div(p, q),
        rtol=1e-12,
        atol=1e-14,
    )


# --- the family ------------------------------------------------------------------------------

FAMILY = {
    "js_div": "js",
    "sym_kl": "sym_kl",
    "cross_entropy": "cross_entropy",
    "generalized_kl": "generalized_kl",
}


@given(distributions(), st.sampled_from(sorted(FAMILY)))
def test_family_matches_reference(pq, name):
    p, q = pq
    tol = {"rtol": 1e-5, "atol": 1e-7} if p.dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    got = getattr(fastkl, name)(p, q)
    assert_close(got, divergence_ref(FAMILY[name], p, q), **tol)
    h = fastkl.entropy(p)
    assert_close(h, divergence_ref("entropy", p, p), **tol)


@given(distributions())
def test_family_identities(pq):
    p, q = (x.astype(np.float64) for x in pq)
    kl, kl_rev = fastkl.kl_div(p, q), fastkl.kl_div(q, p)
    js = fastkl.js_div(p, q)
    # symmetric, bounded by log 2 (times the mass of rows rounded from float32), never
    # negative; the distance is its root, never NaN
    assert_close(js, fastkl.js_div(q, p), rtol=1e-12, atol=1e-15)
    assert np.all((js >= 0) & (js <= np.log(2) * (1 + 1e-6)))
    assert_close(fastkl.js_distance(p, q), np.sqrt(js), rtol=1e-15)
    assert_close(fastkl.sym_kl(p, q), kl + kl_rev, rtol=1e-12, atol=1e-15)
    with np.errstate(invalid="ignore"):  # inf - inf where KL is infinite: skip those rows
        finite = np.isfinite(kl)
        ce = fastkl.cross_entropy(p, q)
        assert_close(ce[finite], (fastkl.entropy(p) + kl)[finite], rtol=1e-10, atol=1e-14)
