"""Values and gradients of the training calls (``grad=``, ``temperature=``, ``beta=``) against a
numpy reference: the value written out with scipy's elementwise functions, and its gradient
by central differences of that reference (and by torch's autograd where torch is installed,
in ``test_torch.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import kl_div as gkl_terms
from scipy.special import log_softmax, rel_entr, xlogy

import fastkl
from fastkl.divergences import REGISTRY

NAMES = [spec.name for spec in REGISTRY]
TWO_SIDED = [spec.name for spec in REGISTRY if spec.reads_q]
FORMS = ["probs", "log_probs", "logits"]


def read(x, form, temperature, normalize, eps):
    """A side as probabilities, the way fastkl's docs define it (float64)."""
    if temperature != 1.0 or form == "logits" or (form == "log_probs" and normalize):
        z = (np.log(x) if form == "probs" else x) / temperature
        logs = log_softmax(z, axis=-1)
        if eps:
            logs = np.clip(logs, np.log(eps), 0.0)
        return np.exp(logs)
    if form == "log_probs":
        return np.exp(np.clip(x, np.log(eps), 0.0) if eps else x)
    u = x / x.sum(-1, keepdims=True) if normalize else x
    return np.clip(u, eps, 1.0) if eps else u


def rows(name, p, q, beta=0.5):
    """The rows' values of divergence ``name`` between probabilities p and q (natural log)."""
    if name in ("js_div", "js_distance"):
        m = beta * p + (1 - beta) * q
        v = np.maximum((beta * rel_entr(p, m) + (1 - beta) * rel_entr(q, m)).sum(-1), 0.0)
        return np.sqrt(v) if name == "js_distance" else v
    terms = {
        "kl_div": lambda: rel_entr(p, q),
        "sym_kl": lambda: rel_entr(p, q) + rel_entr(q, p),
        "cross_entropy": lambda: -xlogy(p, q),
        "entropy": lambda: -xlogy(p, p),
        "generalized_kl": lambda: gkl_terms(p, q),
        "tv_distance": lambda: 0.5 * np.abs(p - q),
        "hellinger": lambda: 0.5 * (np.sqrt(p) - np.sqrt(q)) ** 2,
    }
    v = terms[name]().sum(-1)
    return np.sqrt(v) if name == "hellinger" else v


def reference(name, p, q, p_form="probs", q_form="probs", temperature=1.0, beta=0.5,
              normalize=False, eps=None, base=None, reduction="none", where=None,
              weights=None):  # fmt: skip
    pp = read(p, p_form, temperature, normalize, eps)
    qq = read(q, q_form, temperature, normalize, eps) if q is not None else pp
    if base is not None and name in ("js_distance", "hellinger"):
        raise AssertionError("base of a distance: not in the reference")
    v = rows(name, pp, qq, beta) / (np.log(base) if base else 1.0)
    keep = np.ones(v.shape) if where is None else np.broadcast_to(where, v.shape)
    w = keep * (1.0 if weights is None else np.broadcast_to(weights, v.shape))
    if reduction == "none":
        return np.where(keep > 0, v, 0.0)
    total = (w * v).sum()
    return total if reduction == "sum" else total / w.sum()


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar f at x (float64)."""
    g = np.zeros_like(x)
    flat, out = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        step = h * max(1.0, abs(flat[i]))
        keep = flat[i]
        flat[i] = keep + step
        up = f(x)
        flat[i] = keep - step
        down = f(x)
        flat[i] = keep
        out[i] = (up - down) / (2 * step)
    return g


def sample(rng, form, shape):
    """Inputs of ``form`` well inside their domain (no clip boundary or zero near)."""
    logits = rng.normal(size=shape)
    if form == "logits":
        return logits + 3.0
    logs = log_softmax(logits, axis=-1)
    return logs if form == "log_probs" else np.exp(logs)


def call(name, p, q, **kw):
    fn = getattr(fastkl, name)
    return fn(p, q, **kw) if fn.spec.reads_q else fn(p, **kw)


def check(name, p, q, rtol=1e-6, atol=1e-8, **kw):
    """fastkl's value and gradients against the reference and its central differences."""
    two = q is not None
    grad = "both" if two else "p"
    got = call(name, p, q, grad=grad, **kw)
    value, grads = got[0], got[1:]
    np.testing.assert_allclose(value, reference(name, p, q, **kw), rtol=1e-10, atol=1e-14)
    plain = {k: v for k, v in kw.items() if k not in ("temperature", "beta")}
    if kw.get("temperature", 1.0) == 1.0 and kw.get("beta", 0.5) == 0.5:
        np.testing.assert_allclose(value, call(name, p, q, **plain), rtol=1e-12, atol=1e-15)

    def total(x, side):
        args = (x, q) if side == 0 else (p, x)
        return np.sum(reference(name, *args, **kw))

    for side, g in enumerate(grads):
        x = (p, q)[side].copy()
        assert g.shape == x.shape and g.dtype == x.dtype
        expected = numeric_grad(lambda y, s=side: total(y, s), x)
        np.testing.assert_allclose(g, expected, rtol=rtol, atol=atol, err_msg=f"grad {side}")


@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.terms.grad is not None], ids=str)
def test_scalar_partials_equal_central_differences(rng, spec):
    """Each divergence's ``_math.<name>_grad`` (plain Python here): its term is the exact
    term, and its four partials are the central differences of that term."""
    grad = spec.terms.grad
    for _ in range(20):
        p, q = rng.uniform(0.05, 0.9, size=2)
        beta = rng.uniform(0.05, 0.95)

        def term(a, b, beta=beta):
            return grad(a, b, np.log(a), np.log(b), beta)[0]

        t, dp, dq, dlp, dlq = grad(p, q, np.log(p), np.log(q), beta)
        h = 1e-6
        np.testing.assert_allclose(dp, (term(p + h, q) - term(p - h, q)) / (2 * h), rtol=1e-6,
                                   atol=1e-9)  # fmt: skip
        np.testing.assert_allclose(dq, (term(p, q + h) - term(p, q - h)) / (2 * h), rtol=1e-6,
                                   atol=1e-9)  # fmt: skip
        np.testing.assert_allclose([dlp, dlq], [p * dp, q * dq], rtol=1e-12, atol=1e-15)
        if spec.terms.exact is not None and not spec.skewed:
            assert t == spec.terms.exact(p, q, np.log(p), np.log(q))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_of_every_divergence(rng, name):
    """Every divergence end to end: a probability side (its partials in probabilities) and a
    logits side (in log coordinates, through the softmax)."""
    p = sample(rng, "probs", (3, 5))
    q = sample(rng, "logits", (3, 5)) if getattr(fastkl, name).spec.reads_q else None
    kw = {"reduction": "sum"}
    if q is not None:
        kw["q_form"] = "logits"
    check(name, p, q, **kw)


@pytest.mark.parametrize(
    ("p_form", "q_form"), [("log_probs", "probs"), ("logits", "log_probs"), ("probs", "probs")]
)
def test_every_side_mode(rng, p_form, q_form):
    """The chain through each side's mode, on KL (the chain does not depend on the
    divergence: every divergence's partials are checked above)."""
    p = sample(rng, p_form, (3, 5))
    q = sample(rng, q_form, (3, 5))
    check("kl_div", p, q, p_form=p_form, q_form=q_form, reduction="mean")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    ("name", "form"),
    [("kl_div", "probs"), ("kl_div", "log_probs"), ("kl_div", "logits"), ("js_div", "logits"),
     ("cross_entropy", "logits")],
)  # fmt: skip
def test_forms_and_reductions(rng, name, reduction, form):
    p = sample(rng, "probs", (4, 6))
    q = sample(rng, form, (4, 6))
    check(name, p, q, q_form=form, reduction=reduction)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
@pytest.mark.parametrize(("p_form", "q_form"), [("logits", "logits"), ("probs", "log_probs")])
def test_temperature_on_every_form(rng, temperature, p_form, q_form):
    p = sample(rng, p_form, (3, 6))
    q = sample(rng, q_form, (3, 6))
    check("kl_div", p, q, p_form=p_form, q_form=q_form, temperature=temperature,
          reduction="mean")  # fmt: skip


def test_temperature_values_without_a_gradient(rng):
    z, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    for t in (0.25, 1.0, 3.0):
        expected = rows("kl_div", np.exp(log_softmax(y / t, -1)), np.exp(log_softmax(z / t, -1)))
        got = fastkl.kl_div(y, z, p_form="logits", q_form="logits", temperature=t)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        # probabilities at temperature t: p ** (1 / t), renormalized
        p = np.exp(log_softmax(y, -1))
        sharp = p ** (1 / t) / (p ** (1 / t)).sum(-1, keepdims=True)
        expected = rows("kl_div", sharp, np.exp(log_softmax(z / t, -1)))
        got = fastkl.kl_div(p, z, q_form="logits", temperature=t)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_normalize_and_eps(rng):
    p = sample(rng, "probs", (3, 6)) * 3.0
    q = sample(rng, "probs", (3, 6)) * 0.5
    check("kl_div", p, q, normalize=True, reduction="sum")
    check("js_div", p, q, normalize=True, reduction="sum", beta=0.3)
    # eps clips, and a clipped entry passes no gradient
    p = np.array([[0.6, 0.3995, 1e-4, 1e-4]])
    q = np.array([[0.25, 0.25, 0.4999, 1e-4]])
    _, gp, gq = fastkl.kl_div(p, q, eps=1e-3, grad="both")
    assert gp[0, 2] == gp[0, 3] == 0.0 and gq[0, 3] == 0.0 and gq[0, 0] != 0.0
    check("kl_div", p, q, eps=1e-3, reduction="sum")
    lq = np.log(q)
    _, g = fastkl.kl_div(p, lq, q_form="log_probs", eps=1e-3, grad="q")
    assert g[0, 3] == 0.0 and g[0, 2] != 0.0


def test_base_and_weighted_reductions(rng):
    p = sample(rng, "probs", (2, 3, 5))
    q = sample(rng, "logits", (3, 5))  # broadcast: its gradient sums over the first axis
    where = np.array([[True, False, True], [True, True, False]])
    weights = rng.random((2, 3))
    for reduction in ("sum", "mean"):
        check("kl_div", p, q, q_form="logits", base=2.0, reduction=reduction, where=where,
              weights=weights)  # fmt: skip
    check("js_div", p, q, q_form="logits", where=where, reduction="none")
    _, g = fastkl.kl_div(p, q, q_form="logits", where=np.zeros((2, 3), bool), grad="both")[1:]
    assert not g.any()


def test_skewed_jensen_shannon(rng):
    p = sample(rng, "probs", (4, 6))
    q = sample(rng, "logits", (4, 6))
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        check("js_div", p, q, q_form="logits", beta=beta, reduction="sum")
    # continuous at both ends, where it is 0
    for beta in (0.0, 1.0):
        assert not fastkl.js_div(p, q, q_form="logits", beta=beta).any()
    near = fastkl.js_div(p, q, q_form="logits", beta=1e-9)
    assert np.all(near < 1e-7) and np.all(near > 0)
    # beta = 1/2 is the default divergence
    np.testing.assert_allclose(fastkl.js_div(p, q, q_form="logits", beta=0.5000001),
                               fastkl.js_div(p, q, q_form="logits"), rtol=1e-6)  # fmt: skip
    # disjoint supports: finite for every skew
    assert np.isfinite(fastkl.js_div([1.0, 0.0], [0.0, 1.0], beta=0.2))


def test_special_values():
    # p > 0 where q == 0: the value is +inf and the gradient along q is -inf there
    v, _gp, gq = fastkl.kl_div([0.5, 0.5], [1.0, 0.0], grad="both")
    assert v == np.inf and gq[1] == -np.inf and np.isfinite(gq[0])
    # 0 log 0: a zero of p passes no gradient to q
    v, gq = fastkl.kl_div([1.0, 0.0], [0.5, 0.5], grad="q")
    np.testing.assert_array_equal(gq, [-2.0, 0.0])
    # logits: finite gradients even where a probability underflows to 0
    z = np.array([[0.0, -800.0, 5.0]])
    v, g = fastkl.kl_div(np.array([[0.2, 0.0, 0.8]]), z, q_form="logits", grad="q")
    assert np.all(np.isfinite(g)) and np.isfinite(v).all()
    # a NaN in a row: that row's value is NaN, the other rows are untouched
    p = np.array([[0.5, 0.5], [np.nan, 0.5]])
    v, g = fastkl.kl_div(p, np.zeros((2, 2)), q_form="logits", grad="q")
    assert np.isnan(v[1]) and np.isfinite(v[0]) and np.isfinite(g[0]).all()


def test_float32_gradients_match_float64(rng):
    for k in (64, 4099):
        y = rng.normal(size=(8, k)) * 3
        z = rng.normal(size=(8, k)) * 3
        p = np.exp(log_softmax(y, -1))
        for name in ("kl_div", "js_div"):
            v32, g32 = call(name, p.astype(np.float32), z.astype(np.float32), q_form="logits",
                            grad="q")  # fmt: skip
            assert g32.dtype == np.float32 and v32.dtype == np.float32
            # the same inputs: float32's, read in float64
            v64, g64 = call(name, p.astype(np.float32).astype(np.float64),
                            z.astype(np.float32).astype(np.float64), q_form="logits",
                            grad="q")  # fmt: skip
            np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(v32, v64, rtol=1e-6)


def test_layouts_and_dtypes(rng):
    p = sample(rng, "probs", (5, 7))
    z = sample(rng, "logits", (7, 5)).T  # a transposed (strided) input
    _, g = fastkl.kl_div(p, z, q_form="logits", grad="q", reduction="sum")
    _, g_c = fastkl.kl_div(p, np.ascontiguousarray(z), q_form="logits", grad="q", reduction="sum")
    assert g.shape == z.shape
    np.testing.assert_array_equal(g, g_c)
    # axis=0
    _, g0 = fastkl.kl_div(p.T, z.T, q_form="logits", grad="q", reduction="sum", axis=0)
    np.testing.assert_array_equal(g0, g_c.T)
    # float16: the gradient in float16, computed in float32
    _, g16 = fastkl.kl_div(p.astype(np.float16), z.astype(np.float16), q_form="logits",
                           grad="q", reduction="sum")  # fmt: skip
    assert g16.dtype == np.float16
    np.testing.assert_allclose(g16, g_c, atol=2e-3)
    # one reference row against a batch: its gradient is the sum over the batch
    q = sample(rng, "logits", (7,))
    _, gq = fastkl.kl_div(p, q, q_form="logits", grad="q", reduction="sum")
    _, full = fastkl.kl_div(p, np.tile(q, (5, 1)), q_form="logits", grad="q", reduction="sum")
    assert gq.shape == (7,)
    np.testing.assert_allclose(gq, full.sum(0), rtol=1e-12, atol=1e-15)


def test_grad_out_in_place(rng):
    p = sample(rng, "probs", (6, 9))
    z = sample(rng, "logits", (6, 9))
    v, g = fastkl.kl_div(p, z, q_form="logits", grad="q", reduction="mean")
    work = z.copy()
    v2, g2 = fastkl.kl_div(p, work, q_form="logits", grad="q", reduction="mean", grad_out=work)
    assert g2 is work and v2 == v
    np.testing.assert_array_equal(work, g)
    gp, gq = np.empty_like(p), np.empty_like(z)
    got = fastkl.js_div(p, z, q_form="logits", grad="both", grad_out=(gp, gq))
    assert got[1] is gp and got[2] is gq
    expected = fastkl.js_div(p, z, q_form="logits", grad="both")
    np.testing.assert_array_equal(gp, expected[1])
    np.testing.assert_array_equal(gq, expected[2])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature: expected a finite float > 0"),
        ({"temperature": np.inf}, ValueError, "temperature: expected a finite float > 0"),
        ({"temperature": -1.0}, ValueError, "temperature: expected a finite float > 0"),
        ({"temperature": "2"}, TypeError, "temperature: expected a finite float > 0"),
        ({"beta": 1.5}, ValueError, r"beta: expected a float in \[0, 1\]"),
        ({"beta": np.nan}, ValueError, r"beta: expected a float in \[0, 1\]"),
        ({"grad": "x"}, ValueError, "grad: expected one of None, 'p', 'q', 'both'"),
        ({"grad": True}, ValueError, "grad: expected one of"),
        ({"grad": "q", "grad_out": np.empty((6, 8))}, ValueError,
         r"grad_out \(q\): expected q's shape \(6, 9\)"),
        ({"grad": "q", "grad_out": np.empty((6, 9), np.float32)}, ValueError,
         r"grad_out \(q\): expected q's dtype float64"),
        ({"grad": "q", "grad_out": [[0.0] * 9] * 6}, TypeError,
         r"grad_out \(q\): expected a numpy array"),
        ({"grad": "both", "grad_out": np.empty((6, 9))}, TypeError,
         "grad_out: expected a pair of arrays"),
        ({"grad": "q", "grad_out": "P"}, ValueError, r"grad_out \(q\): overlaps"),
    ],
)  # fmt: skip
def test_bad_training_arguments_name_the_argument(rng, monkeypatch, kwargs, error, message):
    p = sample(rng, "probs", (6, 9))
    q = sample(rng, "probs", (6, 9))
    if isinstance(kwargs.get("grad_out"), str):
        kwargs = dict(kwargs, grad_out=p)
    from fastkl import _prepare

    def no_kernel(*args, **kw):
        raise AssertionError("a kernel ran before the arguments were checked")

    monkeypatch.setattr(_prepare, "run_blocks", no_kernel)
    monkeypatch.setattr(_prepare, "operands", no_kernel)
    with pytest.raises(error, match=message):
        fastkl.js_div(p, q, **kwargs)


def test_entropy_takes_p_only_and_beta_is_jensen_shannon_only():
    with pytest.raises(ValueError, match="grad: expected one of None, 'p', got 'q'"):
        fastkl.entropy([0.5, 0.5], grad="q")
    with pytest.raises(TypeError, match="beta"):
        fastkl.kl_div([0.5, 0.5], [0.5, 0.5], beta=0.2)
    _v, g = fastkl.entropy([0.25, 0.75], grad="p")
    np.testing.assert_allclose(g, -(np.log([0.25, 0.75]) + 1))


def test_the_training_guide_examples_run():
    import doctest
    from pathlib import Path

    guide = Path(__file__).resolve().parents[1] / "docs" / "guide" / "training.rst"
    result = doctest.testfile(str(guide), module_relative=False)
    assert result.attempted > 10 and result.failed == 0


def test_dask_takes_temperature_and_beta_but_no_gradient(rng):
    da = pytest.importorskip("dask.array")
    import fastkl.dask as fd

    p = sample(rng, "probs", (40, 8))
    z = sample(rng, "logits", (40, 8))
    lazy = fd.js_div(da.from_array(p, chunks=(10, 8)), da.from_array(z, chunks=(10, 8)),
                     q_form="logits", beta=0.3, temperature=2.0)  # fmt: skip
    np.testing.assert_array_equal(
        lazy.compute(), fastkl.js_div(p, z, q_form="logits", beta=0.3, temperature=2.0)
    )
    with pytest.raises(TypeError, match="unexpected keyword argument 'grad'"):
        fd.kl_div(p, z, grad="q")


def test_zeros_of_a_normalized_side_and_the_ends_of_beta():
    """A zero in a normalized probability row: -inf in that entry's gradient only (its share
    of the row's projection is 0, not 0 * -inf); the skew's ends have zero gradients."""
    q = np.array([[0.2, 0.3, 0.5]])
    v, gp = fastkl.kl_div([[0.5, 0.5, 0.0]], q, normalize=True, grad="p")
    assert np.isfinite(v).all() and np.isfinite(gp[0, :2]).all() and gp[0, 2] == -np.inf
    p = np.array([[0.6, 0.4, 0.0]])
    q = np.array([[0.3, 0.7, 0.0]])  # a shared zero: finite, -beta log beta on p's side
    v, gp, gq = fastkl.js_div(p, q, normalize=True, beta=0.3, grad="both")
    assert np.isfinite(gp).all() and np.isfinite(gq).all()
    _, gp, gq = fastkl.js_div(p, q, beta=0.3, grad="both")
    np.testing.assert_allclose([gp[0, 2], gq[0, 2]], [-0.3 * np.log(0.3), -0.7 * np.log(0.7)])
    for beta in (0.0, 1.0):
        v, gp, gq = fastkl.js_div([[0.5, 0.5, 0.0]], [[0.0, 0.5, 0.5]], beta=beta, grad="both")
        assert v == 0.0 and not gp.any() and not gq.any()


def test_grad_out_that_aliases_itself_or_comes_without_grad():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.3, 0.7]])
    a = np.empty_like(p)
    with pytest.raises(ValueError, match=r"grad_out \(p\): overlaps another input or output"):
        fastkl.kl_div(p, q, grad="both", grad_out=(a, a))
    with pytest.raises(ValueError, match="grad_out: only with grad="):
        fastkl.kl_div(p, q, grad_out=a)
