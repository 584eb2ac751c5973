"""The divergence family against the float64 scipy references: forms, options, exact zeros."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close, divergence_ref, random_probs
from scipy.spatial.distance import jensenshannon

import fastkl
from fastkl.divergences import REGISTRY, lookup

FORMS = ["probs", "log_probs", "logits"]
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-7}, np.float64: {"rtol": 1e-12, "atol": 1e-15}}

#: public function -> its terms' reference in tests/reference.py: every divergence of the
#: registry on the family's kernels (KL has its own tests; js_distance is js_div's root)
FAMILY = {
    spec.name: spec.terms.tag
    for spec in REGISTRY
    if not spec.terms.own_kernels and spec.name != "js_distance"
}
TWO_SIDED = [name for name in FAMILY if lookup(name).reads_q]


def call(name, p, q, **kw):
    """fastkl's function ``name`` (entropy takes p alone)."""
    fn = getattr(fastkl, name)
    if not lookup(name).reads_q:
        kw.pop("q_form", None)
        return fn(p, **kw)
    return fn(p, q, **kw)


def ref(name, p, q, **kw):
    """The float64 reference, after the spec's post step."""
    return post(name, divergence_ref(FAMILY[name], p, q, **kw))


def post(name, out):
    """A reference sum after function ``name``'s post step (a clamp, a square root)."""
    if lookup(name).post != "none":
        out = np.maximum(out, 0.0)
    return np.sqrt(out) if lookup(name).post == "sqrt" else out


def given(rng, shape, form, dtype, zeros=False):
    """A random input of ``shape`` in ``form``; ``zeros``: some exact zeros (probabilities)."""
    p = random_probs(rng, shape)
    if zeros:
        p[rng.random(shape) < 0.2] = 0.0
        p[..., 0] += 0.1  # no row without mass
        p /= p.sum(axis=-1, keepdims=True)
    if form == "log_probs":
        with np.errstate(divide="ignore"):
            p = np.log(p)
    elif form == "logits":
        with np.errstate(divide="ignore"):
            p = np.log(p) + rng.normal(size=(*shape[:-1], 1)) * 3
    return p.astype(dtype)


@pytest.mark.parametrize("q_form", FORMS)
@pytest.mark.parametrize("p_form", FORMS)
@pytest.mark.parametrize("name", list(FAMILY))
def test_forms_float64(rng, name, p_form, q_form):
    if not lookup(name).reads_q and q_form != "probs":
        pytest.skip("entropy has no q")
    # zeros in probability sides (a zero in q makes some rows +inf for sym_kl, cross_entropy)
    p = given(rng, (37, 19), p_form, np.float64, zeros=p_form == "probs")
    q = given(rng, (37, 19), q_form, np.float64, zeros=q_form == "probs" and name == "js_div")
    got = call(name, p, q, p_form=p_form, q_form=q_form)
    assert got.dtype == np.float64 and got.shape == (37,)
    assert_close(got, ref(name, p, q, p_form=p_form, q_form=q_form), **TOL[np.float64])


# float32: each function on probabilities, and the distillation pairs on logits (each form pair
# is a kernel compiled per dtype; these are the ones people use).
F32_CASES = [(name, "probs", "probs") for name in FAMILY] + [
    ("js_div", "logits", "logits"),
    ("cross_entropy", "probs", "logits"),
    ("entropy", "logits", "probs"),
]


@pytest.mark.parametrize(("name", "p_form", "q_form"), F32_CASES)
def test_float32(rng, name, p_form, q_form):
    for k in (5, 64, 1500):  # one segment, and several (the exact path for rows with zeros)
        p = given(rng, (23, k), p_form, np.float32, zeros=True)
        q = given(rng, (23, k), q_form, np.float32, zeros=name == "js_div")
        got = call(name, p, q, p_form=p_form, q_form=q_form)
        assert got.dtype == np.float32
        assert_close(got, ref(name, p, q, p_form=p_form, q_form=q_form), **TOL[np.float32])


@pytest.mark.parametrize("name", list(FAMILY))
def test_long_rows(rng, name):
    p = random_probs(rng, (3, 5000))
    q = random_probs(rng, (3, 5000))
    assert_close(call(name, p, q), ref(name, p, q), **TOL[np.float64])


@pytest.mark.parametrize("name", list(FAMILY))
def test_options(rng, name):
    p = random_probs(rng, (2, 3, 11)) * 2.0  # unnormalized: normalize=True divides
    q = random_probs(rng, (11,))  # one row against all
    options = [{"normalize": True}, {"normalize": True, "base": 2.0}, {"eps": 1e-3}]
    for kw in options if lookup(name).uses_base else [options[0], options[2]]:
        assert_close(call(name, p, q, **kw), ref(name, p, q, **kw), **TOL[np.float64])
    pn = p / p.sum(-1, keepdims=True)
    expected = ref(name, pn, q)
    assert_close(call(name, pn, q, reduction="sum"), expected.sum(), rtol=1e-12)
    assert_close(call(name, pn, q, reduction="mean"), expected.mean(), rtol=1e-12)
    out = np.empty((2, 3))
    assert call(name, pn, q, out=out) is out
    assert_close(out, expected, **TOL[np.float64])
    # distributions along axis 0, Fortran order: staged a block at a time
    moved = np.asfortranarray(np.moveaxis(pn, -1, 0))
    assert_close(call(name, moved, q[:, None, None], axis=0), expected, **TOL[np.float64])


@pytest.mark.parametrize("name", TWO_SIDED)
def test_log_probs_eps(rng, name):
    # clipping log-scores takes the exact path
    p, q = random_probs(rng, (5, 9)), random_probs(rng, (5, 9))
    kw = {"p_form": "log_probs", "q_form": "logits", "eps": 1e-2}
    got = call(name, np.log(p), np.log(q), **kw)
    assert_close(got, ref(name, np.log(p), np.log(q), **kw), **TOL[np.float64])


# --- exact semantics at the edges ------------------------------------------------------------

INF, NAN = np.inf, np.nan
L2 = np.log(2.0)
# (p row, q row) -> expected value per function
EDGES = [
    # zeros shared by both rows contribute nothing
    (
        [0.0, 0.5, 0.5],
        [0.0, 0.5, 0.5],
        {"js_div": 0, "sym_kl": 0, "generalized_kl": 0, "tv_distance": 0, "hellinger": 0},
    ),
    # disjoint supports: JS is log 2, every log(p / 0) is +inf
    (
        [1.0, 0.0],
        [0.0, 1.0],
        {"js_div": L2, "sym_kl": INF, "cross_entropy": INF, "tv_distance": 1.0, "hellinger": 1.0},
    ),
    # p == 0 where q > 0: the cross-entropy and KL terms are 0, generalized KL's term is q
    ([0.0, 1.0], [0.5, 0.5], {"cross_entropy": L2, "entropy": 0.0, "generalized_kl": L2}),
    ([0.5, 0.5], [1.0, 0.0], {"sym_kl": INF, "cross_entropy": INF, "generalized_kl": INF}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("p", "q", "expected"), EDGES)
def test_zero_terms(p, q, expected, dtype):
    for name, value in expected.items():
        got = call(name, np.array([p], dtype), np.array([q], dtype))
        assert_close(got, [value], rtol=1e-6 if dtype == np.float32 else 1e-15, atol=1e-15)


@pytest.mark.parametrize("name", list(FAMILY))
def test_nan_and_negative_give_nan(name):
    rows = np.array([[0.2, np.nan, 0.8], [0.5, -0.1, 0.6], [0.2, 0.3, 0.5]])
    q = np.array([0.3, 0.3, 0.4])
    got = call(name, rows, q)
    assert np.isnan(got[0]) and np.isnan(got[1]) and np.isfinite(got[2])
    if lookup(name).reads_q:  # a NaN or a negative value in q too
        got = call(name, q, rows)
        assert np.isnan(got[0]) and np.isnan(got[1]) and np.isfinite(got[2])


@pytest.mark.parametrize("name", list(FAMILY))
def test_minus_inf_logits_are_zero_probabilities(name):
    z = np.array([[1.0, -np.inf, 0.5]])
    p = np.exp(z) / np.exp(z).sum()
    q = np.array([[0.2, 0.3, 0.5]])
    got = call(name, z, q, p_form="logits")
    assert_close(got, ref(name, p, q), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["kl_div", *FAMILY])
def test_huge_logits_keep_the_log_of_their_mass(name, dtype):
    """Two logits tie at 2e17: each is the log-probability -log 2, which ``z - (m + log s)``
    rounds to 0 (found by the long fuzz run: pairwise_kl and kl_div disagreed). Row 0 goes
    by the fast path, row 1 (a -inf logit) and the eps calls by the exact one; z is p, then q.
    """
    z = np.array([[-1.0, 2e17, 0.5, 2e17, 3.0], [-1.0, 2e17, -np.inf, 2e17, 3.0]], dtype)
    x = np.array([[0.1, 0.2, 0.3, 0.15, 0.25], [0.0, 0.3, 0.0, 0.7, 0.0]], dtype)
    stem = FAMILY.get(name, "kl")
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == np.float32 else {"rtol": 1e-12}
    for eps in (None, 1e-7):
        got = call(name, z, x, p_form="logits", eps=eps)
        want = post(name, divergence_ref(stem, z, x, p_form="logits", eps=eps))
        if name == "sym_kl" and eps is None:
            # KL(q || p) where softmax(z) underflows to 0: the reference, in probabilities,
            # says inf; the fast path keeps the log-probability -2e17 (as kl_div does for a
            # log-score q), a finite 1.3e17. The exact path (row 1: a -inf logit) says inf.
            assert got[0] > 1e17 and want[0] == np.inf
            got, want = got[1:], want[1:]
        assert_close(got, want, **tol)
        if lookup(name).reads_q:  # x's zeros sit where softmax(z) is 0: finite in both rows
            got = call(name, x[1], z, q_form="logits", eps=eps)
            want = post(name, divergence_ref(stem, x[1], z, q_form="logits", eps=eps))
            assert np.all(np.isfinite(want))
            assert_close(got, want, **tol)


# --- Jensen-Shannon ----------------------------------------------------------------------------


def test_js_distance_is_the_root_and_never_nan(rng):
    p = random_probs(rng, (50, 33))
    q = random_probs(rng, (50, 33))
    assert_close(fastkl.js_distance(p, q), np.sqrt(fastkl.js_div(p, q)), rtol=1e-15)
    assert_close(fastkl.js_distance(p, q, base=2), jensenshannon(p, q, base=2, axis=1), rtol=1e-12)
    # scipy issues 20083, 20779: near-identical rows gave sqrt of a negative rounding error
    near = p * (1 + 1e-9 * rng.normal(size=p.shape))
    for a in (p, near, p.astype(np.float32)):
        d = fastkl.js_distance(a, p.astype(a.dtype))
        assert np.all(d >= 0) and not np.any(np.isnan(d))
    assert np.all(fastkl.js_distance(p, p) == 0.0)


def test_js_div_is_bounded_and_symmetric(rng):
    p = given(rng, (40, 8), "probs", np.float64, zeros=True)
    q = given(rng, (40, 8), "probs", np.float64, zeros=True)
    js = fastkl.js_div(p, q, base=2)
    assert np.all(js >= 0) and np.all(js <= 1 + 1e-15)
    assert_close(js, fastkl.js_div(q, p, base=2), rtol=1e-14, atol=1e-16)


def test_js_reduction_of_distances(rng):
    p, q = random_probs(rng, (6, 5)), random_probs(rng, (6, 5))
    assert_close(
        fastkl.js_distance(p, q, reduction="mean"), np.sqrt(fastkl.js_div(p, q)).mean(), rtol=1e-14
    )


# --- identities --------------------------------------------------------------------------------


def test_identities(rng):
    p = given(rng, (30, 17), "probs", np.float64, zeros=True)
    q = random_probs(rng, (30, 17))
    kl = fastkl.kl_div(p, q)
    assert_close(fastkl.cross_entropy(p, q), fastkl.entropy(p) + kl, rtol=1e-12)
    assert_close(fastkl.sym_kl(p, q), kl + fastkl.kl_div(q, p), rtol=1e-12)
    assert_close(fastkl.generalized_kl(p, q), kl, rtol=1e-10, atol=1e-14)
    assert_close(fastkl.cross_entropy(p, p), fastkl.entropy(p), rtol=1e-12)


def test_generalized_kl_measures_validate():
    p, q = np.array([[2.0, 0.5, 0.0]]), np.array([[1.0, 1.0, 3.0]])
    expected = 2 * np.log(2) - 2 + 1 + 0.5 * np.log(0.5) - 0.5 + 1 + 3
    assert_close(fastkl.generalized_kl(p, q, validate=True), [expected], rtol=1e-14)
    with pytest.raises(ValueError, match="q: row 0 has a negative"):
        fastkl.generalized_kl(p, -q, validate=True)
    with pytest.raises(ValueError, match="p: row 0 sums to"):
        fastkl.js_div(p, q, validate=True)


@pytest.mark.parametrize("name", list(FAMILY))
def test_bad_options_name_the_argument(name):
    p = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="p_form"):
        call(name, p, p, p_form="prob")
    with pytest.raises(ValueError if lookup(name).uses_base else TypeError, match="base"):
        call(name, p, p, base=1.0)
    with pytest.raises(TypeError, match="p: expected floating"):
        call(name, np.array([1, 0]), p)
    if lookup(name).reads_q:
        with pytest.raises(ValueError, match="same length"):
            call(name, p, np.array([1.0, 0.0, 0.0]))


# --- agreement with the peers --------------------------------------------------------------------


def test_dense_peers(peers):
    d = peers["dense"]
    f64 = {"rtol": 1e-12, "atol": 1e-15}
    assert_close(fastkl.js_distance(d["P"], d["Q"]), d["js_dist"], **f64)
    assert_close(fastkl.js_distance(d["P"], d["Q"], base=2), d["js_dist_base2"], **f64)
    assert_close(fastkl.cross_entropy(d["P"], d["Q"]), d["cross_entropy"], **f64)
    assert_close(fastkl.entropy(d["P"]), d["entropy"], **f64)


def test_generalized_kl_peer(peers):
    d = peers["generalized_kl"]
    assert_close(fastkl.generalized_kl(d["PK"], d["QK"]), d["rowsum"], rtol=1e-12, atol=1e-15)
