"""Every bad input gets a TypeError or ValueError that names the argument."""

from __future__ import annotations

import numpy as np
import pytest

import fastkl

P = np.full((3, 4), 0.25)
Q = np.full((3, 4), 0.25)


@pytest.mark.parametrize(
    ("p", "q", "exc", "match"),
    [
        (P.astype(np.int64), Q, TypeError, r"^p: expected floating-point .* got dtype int64"),
        (P, Q > 0, TypeError, r"^q: .* got dtype bool"),
        (P.astype(np.complex128), Q, TypeError, r"^p: .*complex128"),
        (np.array([[0.5, 0.5]], dtype=object), Q, TypeError, r"^p: .*object"),
        (P.astype(np.longdouble), Q, TypeError, r"^p: .*float128"),
        ("abc", Q, TypeError, r"^p: "),
        (np.float64(0.5), Q, ValueError, r"^p: .*0-d"),
        (P, 0.5, ValueError, r"^q: .*0-d"),
        (P, np.full((3, 5), 0.2), ValueError, r"same length along axis -1.*\(3, 4\).*\(3, 5\)"),
        (np.empty((3, 0)), np.empty((3, 0)), ValueError, r"k == 0"),
        (np.full((3, 4), 0.25), np.full((2, 4), 0.25), ValueError, r"do not broadcast"),
        ([[0.5, 0.5], [1.0]], Q, ValueError, r"^p: could not convert"),
    ],
)
def test_bad_arrays(p, q, exc, match):
    if isinstance(p, np.ndarray) and p.dtype == np.longdouble and p.itemsize == 8:
        pytest.skip("long double is float64 on this platform")
    with pytest.raises(exc, match=match):
        fastkl.kl_div(p, q)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"p_form": "prob"}, ValueError, r"^p_form: expected one of 'probs', 'log_probs'"),
        ({"q_form": None}, ValueError, r"^q_form: "),
        ({"reduction": "batchmean"}, ValueError, r"^reduction: expected one of 'none'"),
        ({"base": 0}, ValueError, r"^base: "),
        ({"base": -2.0}, ValueError, r"^base: "),
        ({"base": 1}, ValueError, r"^base: "),
        ({"base": np.inf}, ValueError, r"^base: "),
        ({"base": "2"}, TypeError, r"^base: "),
        ({"base": True}, TypeError, r"^base: "),
        ({"eps": 0.0}, ValueError, r"^eps: expected None or a float in \(0, 1\)"),
        ({"eps": 1.0}, ValueError, r"^eps: "),
        ({"eps": -1e-7}, ValueError, r"^eps: "),
        ({"eps": np.nan}, ValueError, r"^eps: "),
        ({"eps": "1e-7"}, TypeError, r"^eps: "),
        ({"normalize": "yes"}, TypeError, r"^normalize: "),
        ({"validate": 1}, TypeError, r"^validate: "),
        ({"axis": 2}, ValueError, r"^axis: 2 is out of bounds"),
        ({"axis": -3}, ValueError, r"^axis: "),
        ({"axis": 0.0}, TypeError, r"^axis: expected an integer"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastkl.kl_div(P, Q, **kwargs)


def test_bad_out():
    with pytest.raises(TypeError, match=r"^out: expected a numpy array"):
        fastkl.kl_div(P, Q, out=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"^out: expected shape \(3,\), got \(4,\)"):
        fastkl.kl_div(P, Q, out=np.empty(4))
    with pytest.raises(ValueError, match=r"^out: expected dtype float64, got float32"):
        fastkl.kl_div(P, Q, out=np.empty(3, np.float32))
    ro = np.empty(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: the array is read-only"):
        fastkl.kl_div(P, Q, out=ro)
    buf = np.full((3, 5), 0.25)
    with pytest.raises(ValueError, match=r"^out: overlaps an input"):
        fastkl.kl_div(buf[:, :4], Q, out=buf[:, 0])
    with pytest.raises(ValueError, match=r"^out: only supported with reduction='none'"):
        fastkl.kl_div(P, Q, reduction="sum", out=np.empty(3))


@pytest.mark.parametrize(
    ("p", "kwargs", "match"),
    [
        ([[0.5, 0.5], [0.5, np.nan]], {}, r"^p: row 1 contains NaN"),
        ([[0.5, 0.5], [1.5, -0.5]], {}, r"^p: row 1 has a negative probability"),
        ([[0.5, 0.5], [0.5, 0.6]], {}, r"^p: row 1 sums to 1.1, not 1 \(tolerance 1e-06\)"),
        ([[0.0, 0.0]], {"normalize": True}, r"^p: row 0 sums to 0.0: cannot normalize"),
        ([[0.0, 0.0], [1.0, np.inf]], {"p_form": "logits"}, r"^p: row 1 contains \+inf"),
        ([[-0.1, -0.2]], {"p_form": "log_probs"}, r"^p: row 0 sums to 1.7.*, not 1"),
    ],
)
def test_validate_names_the_first_bad_row(p, kwargs, match):
    q = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match=match):
        fastkl.kl_div(np.array(p), q, validate=True, **kwargs)


def test_validate_checks_q_and_nd_rows():
    p = np.full((2, 3, 2), 0.5)
    q = np.full((2, 3, 2), 0.5)
    q[1, 2, 0] = -0.1
    with pytest.raises(ValueError, match=r"^q: row \(1, 2\) has a negative probability"):
        fastkl.kl_div(p, q, validate=True)


def test_validate_accepts_valid_inputs():
    rng = np.random.default_rng(1)
    for dtype, k in [(np.float32, 64), (np.float32, 100_000), (np.float64, 7), (np.float16, 50)]:
        x = rng.random((3, k))
        p = (x / x.sum(axis=1, keepdims=True)).astype(dtype)
        fastkl.kl_div(p, p, validate=True)
        fastkl.kl_div(np.log(p), p, p_form="log_probs", validate=True)
    fastkl.kl_div(rng.random((3, 5)) * 7, rng.random((3, 5)), normalize=True, validate=True)
    fastkl.kl_div(rng.normal(size=(3, 5)), [0.2] * 5, p_form="logits", validate=True)


def test_no_validation_by_default():
    # Off by default: an invalid row is scored, not rejected (a negative probability is NaN).
    got = fastkl.kl_div(np.array([[1.5, -0.5]]), np.array([0.5, 0.5]))
    assert np.isnan(got[0])
