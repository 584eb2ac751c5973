"""Fuzzing every public Python function with hypothesis.

Each example draws a function and a call to it: shapes (an empty batch, k = 1, rows long
enough to be split across threads), dtypes (float16/32/64, mixed), layouts (C, Fortran,
strided, reversed, the distribution axis anywhere, broadcasting), options, and values salted
with NaN, infinities, negatives, zeros, subnormals, tiny and huge numbers. The call must match
a float64 reference computed here with numpy, from the documented semantics, to a tolerance
scaled by each row's condition (the sum of its terms' magnitudes); or, for a call drawn
invalid on purpose, raise TypeError or ValueError with the argument's name in the message.

CI runs each property for the profile's examples (60). The long run, thousands of examples
per property, is ``pytest -m slow tests/test_fuzz.py``; ``FASTKL_FUZZ_EXAMPLES`` sets its
count.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastkl
from fastkl import _cpu, compat

#: examples per property in the long run (pytest -m slow)
LONG = int(os.environ.get("FASTKL_FUZZ_EXAMPLES", "1000"))
DTYPES = [np.float16, np.float32, np.float64]
FORMS = ["probs", "log_probs", "logits"]
ROWWISE = {
    "kl_div": "kl",
    "js_div": "js",
    "js_distance": "js",
    "sym_kl": "sym_kl",
    "cross_entropy": "cross_entropy",
    "entropy": "entropy",
    "generalized_kl": "generalized_kl",
}
#: rows long enough for the kernels' (row, chunk) split across threads
LONG_K = 2 * _cpu.CHUNK + 3
#: every health check off: the strategies build large arrays on purpose, and a slow example
#: (a long row's first call compiles its kernels) is not a failure
QUIET = list(HealthCheck)
SLACK = 64  # rounding errors allowed, in ulps of the result's dtype times the row's scale


# --- values ------------------------------------------------------------------------------


def _specials(dtype, form: str) -> np.ndarray:
    """The values a row is salted with: the edges of the dtype and of the form."""
    info = np.finfo(dtype)
    huge = float(info.max) ** 0.45  # large, with room for a row's sum and a log's factor
    pool = [np.nan, np.inf, -np.inf, 0.0, -0.0, float(info.smallest_subnormal)]
    pool += [float(info.tiny), huge, -0.25, 1.0]
    if form != "probs":
        pool += [-huge, -1e4, 700.0]
    return np.array(pool, dtype=np.float64)


def _values(rng: np.random.Generator, shape, dtype, form: str, salt: float) -> np.ndarray:
    """Valid rows in ``form`` (probabilities summing to 1, their logs, or logits), salted."""
    x = rng.standard_exponential(shape)
    x /= np.maximum(x.sum(axis=-1, keepdims=True), 1e-300)
    if form == "log_probs":
        x = np.log(x)
    elif form == "logits":
        x = rng.normal(scale=rng.choice([0.1, 3.0, 30.0]), size=shape)
    if salt and x.size:
        mask = rng.random(shape) < salt
        x[mask] = rng.choice(_specials(dtype, form), size=int(mask.sum()))
    with np.errstate(over="ignore"):
        return x.astype(dtype)


# --- the float64 reference ---------------------------------------------------------------


def _log_side(x: np.ndarray, form: str, normalize: bool, eps: float | None):
    """(P, log P) in float64 for rows along the last axis, as the documentation defines them:
    a log-softmax for logits (and for log-probabilities under ``normalize``), a division by
    the row's sum for probabilities under ``normalize``, then the clip to [eps, 1]."""
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if form == "logits" or (form == "log_probs" and normalize):
            # (x - m) - log(sum(exp(x - m))): not x - logsumexp(x), which rounds the log of
            # the mass away when |m| is large (two logits of 2e17: -log 2 each, not 0)
            m = np.max(x, axis=-1, keepdims=True)
            lp = (x - m) - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
            # a row with +inf or all -inf has no softmax
            bad = np.any(x == np.inf, axis=-1) | np.all(x == -np.inf, axis=-1)
            lp[bad] = np.nan
            p = np.exp(lp)
        elif form == "log_probs":
            lp, p = x, np.exp(x)
        else:
            p = x / x.sum(axis=-1, keepdims=True) if normalize else x
            lp = np.log(p)
        if eps is not None:
            p = np.clip(p, eps, 1.0)
            lp = np.log(p)
        # a negative probability makes its row NaN (documented)
        neg = np.any(p < 0, axis=-1)
        p[neg] = np.nan
        lp[neg] = np.nan
    return p, lp


def _terms(name: str, p, lp, q, lq) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise terms of divergence ``name`` and an upper bound of their rounding scale."""
    poison = np.isnan(lp) | np.isnan(lq)  # a NaN in either input makes the term NaN

    def xlogy(x, y):  # x * y with 0 where x == 0 (0 log 0 = 0, even where y is -inf - -inf)
        return np.where(x == 0, np.where(poison, np.nan, 0.0), x * y)

    with np.errstate(all="ignore"):
        if name == "kl":
            t = xlogy(p, lp - lq)
        elif name == "sym_kl":
            t = xlogy(p, lp - lq) + xlogy(q, lq - lp)
        elif name == "cross_entropy":
            t = -xlogy(p, lq)
        elif name == "entropy":
            t = -xlogy(p, lp)
        elif name == "generalized_kl":
            t = xlogy(p, lp - lq) - p + q
        else:  # js, with log m from the logs: exact where p and q underflow
            lm = np.logaddexp(lp, lq) - math.log(2.0)
            t = 0.5 * (xlogy(p, lp - lm) + xlogy(q, lq - lm))
        mag = (np.abs(p) + np.abs(q)) * (1.0 + np.abs(lp) + np.abs(lq)) + np.abs(t)
        mag = np.where(np.isfinite(mag), mag, 0.0)
    return t, mag


def rowwise_ref(name: str, arrays, *, forms, normalize=False, eps=None, base=None):
    """Per-row values and error scales of divergence ``name`` (rows on the last axis)."""
    p, lp = _log_side(arrays[0], forms[0], normalize, eps)
    if len(arrays) == 2:
        q, lq = _log_side(arrays[1], forms[1], normalize, eps)
        p, q = np.broadcast_arrays(p, q)
        lp, lq = np.broadcast_arrays(lp, lq)
    else:
        q, lq = p, lp
    t, mag = _terms(name, p, lp, q, lq)
    with np.errstate(all="ignore"):
        value, scale = t.sum(axis=-1), mag.sum(axis=-1)
        if base is not None:
            value, scale = value / math.log(base), scale / abs(math.log(base))
    return value, scale


def tolerance(value, scale, dtype) -> np.ndarray:
    """The rounding a kernel computing in ``dtype`` may make on a value with this scale."""
    eps = float(np.finfo(dtype).eps)
    with np.errstate(all="ignore"):
        # the last term: rounding to dtype's subnormals, whose spacing is absolute
        tiny = float(np.finfo(dtype).smallest_subnormal)
        return SLACK * eps * (np.asarray(scale) + np.abs(value)) + tiny


def assert_matches(got, ref, tol, dtype, *, what: str) -> None:
    """``got`` equals ``ref`` where ``ref`` is NaN or infinite and is within ``tol`` of it
    elsewhere (or an infinity of its sign, where ``ref`` is at the edge of ``dtype``)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.broadcast_to(np.asarray(ref, dtype=np.float64), got.shape)
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), got.shape)
    top = float(np.finfo(dtype).max)
    with np.errstate(all="ignore"):
        near = np.abs(got - ref) <= tol
        overflow = np.isinf(got) & (np.abs(ref) + tol >= top) & (np.sign(got) == np.sign(ref))
    ok = np.where(
        np.isfinite(ref), near | overflow, np.where(np.isnan(ref), np.isnan(got), got == ref)
    )
    if not ok.all():
        bad = np.flatnonzero(~ok.ravel())[:5]
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)} value(s) off, first at {bad.tolist()}: "
            f"got {got.ravel()[bad]}, want {ref.ravel()[bad]} (tol {tol.ravel()[bad]})"
        )


def reduce_ref(value, tol, reduction: str):
    """A reduction of per-row reference values and their tolerances."""
    if reduction == "none":
        return value, tol
    n = value.size
    with np.errstate(all="ignore"):
        total, tol_total = value.sum(), tol.sum()
    if reduction == "sum":
        return total, tol_total
    return (total / n, tol_total / n) if n else (np.nan, 0.0)


# --- calls -------------------------------------------------------------------------------


def _layout(draw, rng, x: np.ndarray) -> np.ndarray:
    """``x`` (rows on the last axis) in a drawn memory layout with the same values."""
    kind = draw(st.sampled_from(["C", "F", "strided", "reversed", "list"]))
    if kind == "F":
        return np.asfortranarray(x)
    if kind == "strided":  # every other element of a larger buffer
        big = np.empty((*x.shape[:-1], 2 * x.shape[-1]), x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if kind == "reversed":
        return np.flip(np.flip(x, -1).copy(), -1)
    if kind == "list" and 0 < x.size < 2000 and x.dtype == np.float64:
        return x.tolist()
    return x


@st.composite
def rowwise_calls(draw, names=tuple(ROWWISE)):
    """(function name, positional arrays, keyword options, reference rows) for a row-wise
    call; arrays carry the distribution axis where ``axis`` says."""
    name = draw(st.sampled_from(names))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nargs = 1 if name == "entropy" else 2
    huge_k = draw(st.integers(0, 24)) == 0
    k = LONG_K if huge_k else draw(st.one_of(st.integers(1, 9), st.integers(10, 200)))
    batch = draw(
        st.sampled_from(
            [(), (0,), (1,), (3,), (2, 3)]
            if huge_k
            else [(), (0,), (1,), (5,), (37,), (2, 3), (4, 0, 2)]
        )
    )
    if huge_k:
        batch = batch if np.prod(batch, dtype=int) <= 2 else (2,)
    dtypes = [draw(st.sampled_from(DTYPES))] * nargs
    if nargs == 2 and draw(st.booleans()):
        dtypes[1] = draw(st.sampled_from(DTYPES))
    forms = [draw(st.sampled_from(FORMS)) for _ in range(nargs)]
    salt = draw(st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5]))
    shapes = [(*batch, k)] * nargs
    if nargs == 2 and batch and draw(st.booleans()):
        # broadcasting: one side with fewer or unit batch dimensions
        side = draw(st.integers(0, 1))
        shapes[side] = draw(st.sampled_from([(k,), (1,) * len(batch) + (k,)]))
    rows = [_values(rng, s, d, f, salt) for s, d, f in zip(shapes, dtypes, forms, strict=True)]
    ndim = max(len(s) for s in shapes)
    axis = -1
    arrays = rows
    if ndim > 1 and draw(st.booleans()):
        axis = draw(st.integers(0, ndim - 1))
        axis_arg = axis if draw(st.booleans()) else axis - ndim
        arrays = [
            np.moveaxis(np.expand_dims(r, tuple(range(ndim - r.ndim))), -1, axis) for r in rows
        ]
        axis = axis_arg
    arrays = [_layout(draw, rng, a) for a in arrays]
    options = {}
    if nargs == 2 or draw(st.booleans()):
        options["p_form"] = forms[0]
    if nargs == 2:
        options["q_form"] = forms[1]
    if axis != -1:
        options["axis"] = axis
    options["reduction"] = draw(st.sampled_from(["none", "none", "sum", "mean"]))
    options["base"] = draw(st.sampled_from([None, None, 2, 10.0, np.float32(0.5)]))
    options["eps"] = draw(st.sampled_from([None, None, None, 1e-7, np.float32(1e-3)]))
    options["normalize"] = draw(st.booleans())
    return name, arrays, options, rows


def _out_dtype(arrays) -> np.dtype:
    dt = np.result_type(*[np.asarray(a).dtype for a in arrays])
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def check_rowwise(name, arrays, options, rows) -> None:
    forms = [options.get("p_form", "probs"), options.get("q_form", "probs")][: len(rows)]
    value, scale = rowwise_ref(
        ROWWISE[name],
        rows,
        forms=forms,
        normalize=options["normalize"],
        eps=None if options["eps"] is None else float(options["eps"]),
        base=None if options["base"] is None else float(options["base"]),
    )
    dtype = _out_dtype(arrays)
    tol = tolerance(value, scale, dtype)
    if name in ("js_div", "js_distance"):
        value = np.where(value < 0, 0.0, value)  # rounding below 0 is clamped (documented)
    if name == "js_distance":
        # |sqrt(a) - sqrt(b)| <= sqrt(|a - b|): an absolute error d near 0 becomes sqrt(d)
        value, tol = np.sqrt(value), np.sqrt(tol)
    value, tol = reduce_ref(value, tol, options["reduction"])
    got = np.asarray(getattr(fastkl, name)(*arrays, **options))
    shapes = ", ".join(f"{a.dtype}{a.shape}" for a in map(np.asarray, arrays))
    what = f"{name}({shapes}, {options})"
    assert got.shape == np.shape(value), (what, got.shape)
    assert got.dtype == dtype, (what, got.dtype)
    assert_matches(got, value, tol, dtype, what=what)


def _rowwise_matches_reference(call):
    check_rowwise(*call)


# --- calls drawn invalid on purpose -------------------------------------------------------

#: mutation -> (options or arrays to change, the exception, the name its message must give)
_BAD_OPTIONS = [
    ({"p_form": "prob"}, ValueError, "p_form"),
    ({"q_form": None}, ValueError, "q_form"),
    ({"axis": 7}, ValueError, "axis"),
    ({"axis": 1.0}, TypeError, "axis"),
    ({"axis": None}, TypeError, "axis"),
    ({"reduction": "avg"}, ValueError, "reduction"),
    ({"reduction": None}, ValueError, "reduction"),
    ({"base": 1}, ValueError, "base"),
    ({"base": 0.0}, ValueError, "base"),
    ({"base": -2.0}, ValueError, "base"),
    ({"base": float("nan")}, ValueError, "base"),
    ({"base": float("inf")}, ValueError, "base"),
    ({"base": "2"}, TypeError, "base"),
    ({"base": True}, TypeError, "base"),
    ({"eps": 0.0}, ValueError, "eps"),
    ({"eps": 1.0}, ValueError, "eps"),
    ({"eps": -1e-7}, ValueError, "eps"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"eps": "1e-7"}, TypeError, "eps"),
    ({"normalize": "yes"}, TypeError, "normalize"),
    ({"normalize": 1}, TypeError, "normalize"),
    ({"validate": None}, TypeError, "validate"),
    ({"device": "gpu"}, ValueError, "device"),
    ({"out": [0.0]}, (TypeError, ValueError), "out"),  # ValueError first with a reduction
]


@st.composite
def bad_rowwise_calls(draw):
    """A valid row-wise call on (n, k) rows with one thing made wrong."""
    name = draw(st.sampled_from(tuple(ROWWISE)))
    nargs = 1 if name == "entropy" else 2
    dtype = draw(st.sampled_from(DTYPES))
    n, k = draw(st.sampled_from([0, 1, 5])), draw(st.sampled_from([1, 3, 70]))
    arrays = [np.full((n, k), 1 / k, dtype) for _ in range(nargs)]
    options = {
        "p_form": draw(st.sampled_from(FORMS)),
        "axis": -1,
        "reduction": draw(st.sampled_from(["none", "sum", "mean"])),
        "base": None,
        "eps": None,
        "normalize": False,
    }
    if nargs == 2:
        options["q_form"] = draw(st.sampled_from(FORMS))
    side = draw(st.integers(0, nargs - 1))
    label = "pq"[side]
    kinds = ["option", "dtype", "scalar", "k0", "out"] + (["k", "batch"] if nargs == 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "option":
        change, exc, word = draw(st.sampled_from(_BAD_OPTIONS))
        if nargs == 1 and "q_form" in change:
            change, exc, word = {"p_form": 3}, ValueError, "p_form"
        options.update(change)
    elif kind == "dtype":
        dtype = draw(st.sampled_from([np.int64, np.bool_, np.complex128, np.object_, "U3"]))
        arrays[side] = arrays[side].astype(dtype)
        exc, word = TypeError, label
    elif kind == "scalar":
        arrays[side] = np.float64(0.5)
        exc, word = ValueError, label
    elif kind == "k":  # two lengths along the axis
        arrays[side] = np.full((n, k + draw(st.integers(1, 3))), 0.25)
        exc, word = ValueError, "p and q"
    elif kind == "k0":
        arrays = [np.empty((n, 0), dtype) for _ in arrays]
        exc, word = ValueError, "k == 0"
    elif kind == "batch":
        arrays[side] = np.full((3, 7, k), 0.25)
        arrays[1 - side] = np.full((2, 5, k), 0.25)
        exc, word = ValueError, "broadcast"
    else:
        bad = draw(st.sampled_from(["shape", "dtype", "readonly"]))
        out = np.empty((n, 2) if bad == "shape" else n, np.int32 if bad == "dtype" else None)
        out.flags.writeable = bad != "readonly"
        options.update(out=out, reduction="none")
        exc, word = (TypeError, ValueError), "out"
    return name, arrays, options, exc, word


def _rowwise_rejects_bad_calls(call):
    name, arrays, options, exc, word = call
    with pytest.raises(exc) as info:
        getattr(fastkl, name)(*arrays, **options)
    assert word in str(info.value), (name, options, str(info.value))


# --- closed forms ------------------------------------------------------------------------


def _closed_values(rng, shape, dtype, lo, hi, salt):
    x = rng.uniform(lo, hi, size=shape)
    if salt and x.size:
        mask = rng.random(shape) < salt
        info = np.finfo(dtype)
        pool = [np.nan, np.inf, -np.inf, 0.0, 1.0, -0.5, 1.5, float(info.tiny)]
        pool += [float(info.smallest_subnormal), 1.0 - float(info.eps), float(info.max) ** 0.45]
        x[mask] = rng.choice(pool, size=int(mask.sum()))
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def _closed_ref(name, args):
    """Elementwise float64 value and rounding scale of a closed form (documented edges)."""
    a = [np.asarray(x, np.float64) for x in args]
    with np.errstate(all="ignore"):
        if name == "bernoulli_kl":
            p, q = np.broadcast_arrays(*a)
            t = (
                _terms("kl", p, np.log(p), q, np.log(q))[0]
                + _terms("kl", 1 - p, np.log1p(-p), 1 - q, np.log1p(-q))[0]
            )
            t = np.where((p < 0) | (p > 1) | (q < 0) | (q > 1), np.nan, t)
            mag = 2 + np.abs(np.log(p)) + np.abs(np.log(q)) + np.abs(np.log1p(-p))
            mag = mag + np.abs(np.log1p(-q)) + np.abs(t)
            # rounding of 1 - q, amplified near q = 0 or 1 (inf there: any value passes only
            # where the reference is not finite anyway)
            mag = mag / np.maximum(np.minimum(np.abs(1 - q), np.abs(q)), 1e-300)
        elif name == "gaussian_kl":
            mp, sp, mq, sq = np.broadcast_arrays(*a)
            r = sp / sq
            d = (mp - mq) / sq
            t = 0.5 * (r * r + d * d) - 0.5 - np.log(r)
            # documented edges: +inf for a point mass against a positive sigma, an infinitely
            # wide p against a finite q, or a ratio sigma_p / sigma_q beyond float64 (a
            # subnormal sigma_q: r^2 / 2 outgrows log r, where numpy gets inf - inf); NaN for a
            # negative or NaN input
            inf = ((sq == 0) & (sp > 0)) | ((sp == np.inf) & (sq < np.inf)) | (r == np.inf)
            t = np.where(inf, np.inf, t)
            nan = (sp < 0) | (sq < 0) | np.isnan(sp) | np.isnan(sq) | np.isnan(mp) | np.isnan(mq)
            t = np.where(nan, np.nan, t)
            mag = 1 + r * r + d * d + np.abs(np.log(r)) + (np.abs(mp) + np.abs(mq)) ** 2 / sq**2
        else:  # vae_kl
            mu, lv = np.broadcast_arrays(*a)
            t = 0.5 * (mu * mu + np.expm1(lv) - lv)
            mag = mu * mu + np.exp(lv) + np.abs(lv) + 1
        mag = np.where(np.isfinite(mag), mag, 0.0)
    return t, mag


@st.composite
def closed_calls(draw):
    name = draw(st.sampled_from(["bernoulli_kl", "gaussian_kl", "vae_kl"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (4, 200)]))
    salt = draw(st.sampled_from([0.0, 0.05, 0.3]))
    if name == "bernoulli_kl":
        args = [_closed_values(rng, shape, dtype, 0, 1, salt) for _ in range(2)]
    elif name == "gaussian_kl":
        args = [
            _closed_values(rng, shape, dtype, lo, hi, salt)
            for lo, hi in [(-3, 3), (0.1, 3), (-3, 3), (0.1, 3)]
        ]
    else:
        args = [_closed_values(rng, shape, dtype, -3, 3, salt) for _ in range(2)]
    if 0 not in shape[:-1] and len(shape) >= 1 and draw(st.booleans()):
        # broadcasting: the last argument is one row, or one element
        args[-1] = args[-1][(0,) * (len(shape) - 1)] if len(shape) > 1 else args[-1][:1]
    ndim = len(np.broadcast_shapes(*[np.shape(x) for x in args]))
    axes = [None, *list(range(-ndim, ndim))]
    options = {"reduction": draw(st.sampled_from(["none", "sum", "mean"]))}
    axis = draw(st.sampled_from(axes))
    if name == "bernoulli_kl":
        options["base"] = draw(st.sampled_from([None, 2]))
    if not (axis is None and name != "bernoulli_kl" and ndim == 0):
        options["axis"] = axis
    if ndim == 0 and name != "bernoulli_kl":
        options["axis"] = None
    return name, args, options


def _closed_forms_match_reference(call):
    name, args, options = call
    t, mag = _closed_ref(name, args)
    dtype = _out_dtype(args)
    tol = tolerance(t, mag, dtype)
    axis = options.get("axis", -1 if name != "bernoulli_kl" else None)
    if axis is not None:
        with np.errstate(all="ignore"):
            t, tol = t.sum(axis=axis), tol.sum(axis=axis)
    if options.get("base"):
        t, tol = t / math.log(options["base"]), tol / math.log(options["base"])
    t, tol = reduce_ref(np.asarray(t), np.asarray(tol), options["reduction"])
    what = f"{name}({[np.asarray(a).shape for a in args]}, {dtype}, {options})"
    shape = np.broadcast_shapes(*[np.shape(a) for a in args])
    if axis is not None and shape[axis] == 0:
        # nothing to sum: k == 0, an error as for the row-wise functions
        with pytest.raises(ValueError, match="k == 0"):
            getattr(fastkl, name)(*args, **options)
        return
    got = np.asarray(getattr(fastkl, name)(*args, **options))
    assert got.shape == np.shape(t), (what, got.shape)
    assert got.dtype == dtype, (what, got.dtype)
    assert_matches(got, t, tol, dtype, what=what)


# --- pairwise and nearest ----------------------------------------------------------------


@st.composite
def pairwise_calls(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from(DTYPES))
    n, m = draw(st.integers(0, 9)), draw(st.integers(1, 9))
    k = draw(st.one_of(st.integers(1, 9), st.integers(10, 150)))
    forms = [draw(st.sampled_from(FORMS)) for _ in range(2)]
    salt = draw(st.sampled_from([0.0, 0.0, 0.02, 0.2]))
    P = _values(rng, (n, k), dtype, forms[0], salt)
    Q = _values(rng, (m, k), draw(st.sampled_from([dtype, np.float64])), forms[1], salt)
    P, Q = _layout(draw, rng, P), _layout(draw, rng, Q)
    options = {
        "p_form": forms[0],
        "q_form": forms[1],
        "base": draw(st.sampled_from([None, 2.0])),
        "eps": draw(st.sampled_from([None, 1e-7])),
    }
    return P, Q, options, draw(st.integers(1, m))


def _pairwise_and_nearest_match_reference(call):
    P, Q, options, top = call
    P64, Q64 = np.asarray(P), np.asarray(Q)
    value, scale = rowwise_ref(
        "kl",
        [P64[:, None, :], Q64[None, :, :]],
        forms=[options["p_form"], options["q_form"]],
        eps=options["eps"],
        base=options["base"],
    )
    dtype = _out_dtype([P64, Q64])
    got = fastkl.pairwise_kl(P, Q, **options)
    assert got.shape == value.shape and got.dtype == dtype
    assert_matches(got, value, tolerance(value, scale, dtype), dtype, what=f"pairwise {options}")
    values, indices = fastkl.nearest_kl(P, Q, top, **options)
    order = np.argsort(got, axis=1, kind="stable")[:, :top]
    assert np.array_equal(indices, order)
    assert np.array_equal(values, np.take_along_axis(got, order, axis=1), equal_nan=True)


# --- the peers' drop-ins -----------------------------------------------------------------


@st.composite
def compat_calls(draw):
    """A drop-in call and the native call the README's table gives for it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(st.sampled_from([(1, 5), (4, 7), (3, 2, 6), (6,), (2, 130)]))
    salt = draw(st.sampled_from([0.0, 0.0, 0.05]))
    p = _values(rng, shape, dtype, "probs", salt)
    lp = _values(rng, shape, dtype, "log_probs", salt)
    lq = _values(rng, shape, dtype, "log_probs", salt)
    zq = _values(rng, shape, dtype, "logits", salt)
    which = draw(st.sampled_from(list(compat.__all__)))
    red = draw(st.sampled_from(["none", "sum", "mean"]))
    if which == "torch_kl_div":
        log_target = draw(st.booleans())
        tr = draw(st.sampled_from(["sum", "batchmean", "none"]))
        target = lp if log_target else p
        form = "log_probs" if log_target else "probs"
        native = fastkl.kl_div(target, lq, p_form=form, q_form="log_probs")
        if tr == "sum":
            native = native.sum()
        elif tr == "batchmean":
            native = native.sum() / shape[0]  # torch: input.shape[0]
        got = compat.torch_kl_div(lq, target, tr, log_target=log_target)
        if tr == "none":
            got = got.sum(axis=-1)
    elif which == "keras_kl_divergence":
        q = np.flip(p, -1)
        got = compat.keras_kl_divergence(p, q)
        native = fastkl.kl_div(p, q, eps=np.float32(1e-7))
    elif which == "mxnet_kl_div_loss":
        got = compat.mxnet_kl_div_loss(zq, p, from_logits=False)
        native = fastkl.kl_div(p, zq, q_form="logits")
    elif which == "optax_kl_divergence":
        got = compat.optax_kl_divergence(lq, p)
        native = fastkl.kl_div(p, lq, q_form="log_probs")
    elif which == "optax_kl_divergence_with_log_targets":
        got = compat.optax_kl_divergence_with_log_targets(lq, lp)
        native = fastkl.kl_div(lp, lq, p_form="log_probs", q_form="log_probs")
    elif which == "scipy_entropy":
        got = compat.scipy_entropy(p, p[::-1].copy() if p.ndim == 1 else p[::-1], axis=-1)
        q = p[::-1] if p.ndim > 1 else p[::-1].copy()
        native = fastkl.kl_div(p, q, normalize=True)
        # A distribution with a negative entry after normalizing has scipy's value there
        # (rel_entr's +inf), which the drop-in keeps and fastkl's exact semantics do not (NaN).
        from scipy.stats import entropy

        p64, q64 = p.astype(np.float64), q.astype(np.float64)
        with np.errstate(all="ignore"):
            negative = np.any(p64 / p64.sum(-1, keepdims=True) < 0, axis=-1) | np.any(
                q64 / q64.sum(-1, keepdims=True) < 0, axis=-1
            )
            scipy_value = entropy(p64, q64, axis=-1)
        native = np.where(negative & ~np.isnan(scipy_value), scipy_value, native)
    elif which == "scipy_jensenshannon":
        q = p[::-1].copy()
        got = compat.scipy_jensenshannon(p, q, axis=-1)
        native = fastkl.js_distance(p, q, normalize=True)
    else:  # torchmetrics_kl_divergence
        reduction = {"none": "none", "sum": "sum", "mean": "mean"}[red]
        p2, q2 = p.reshape(-1, shape[-1]), p[::-1].reshape(-1, shape[-1]).copy()
        got = compat.torchmetrics_kl_divergence(p2, q2, reduction=reduction)
        native = fastkl.kl_div(p2, q2, normalize=True, reduction=reduction)
    return which, got, native, dtype, shape[-1]


def _drop_ins_equal_their_native_calls(call):
    # The native calls match the float64 reference (the properties above); the drop-ins are
    # those calls, so bit-for-bit or to rounding in the final reduction.
    which, got, native, dtype, k = call
    got, native = np.asarray(got, np.float64), np.asarray(native, np.float64)
    assert got.shape == native.shape, (which, got.shape, native.shape)
    # bitwise where the drop-in is the native call; a reduction may add the rows in another
    # order than numpy's sum of them: k ulps of the rows' absolute sum (of the finite ones: a
    # NaN or inf row must not make every other row's tolerance NaN or inf)
    finite = np.abs(native[np.isfinite(native)])
    tol = 8 * np.finfo(dtype).eps * (np.abs(native) + k * finite.max(initial=0.0))
    if which == "mxnet_kl_div_loss":
        tol = tol + 1e-12 * k  # MXNet's log(p + 1e-12): 1e-12 per positive p, at most
    assert_matches(got, native, tol, dtype, what=which)


# --- the properties: the CI run (the profile's examples) and the long run (pytest -m slow) ---


def _properties(strategy, body):
    ci = settings(suppress_health_check=QUIET)(given(strategy)(body))
    long = settings(max_examples=LONG, deadline=None, suppress_health_check=QUIET)
    return ci, pytest.mark.slow(long(given(strategy)(body)))


test_rowwise_matches_reference, test_rowwise_matches_reference_long = _properties(
    rowwise_calls(), _rowwise_matches_reference
)
test_rowwise_rejects_bad_calls, test_rowwise_rejects_bad_calls_long = _properties(
    bad_rowwise_calls(), _rowwise_rejects_bad_calls
)
test_closed_forms_match_reference, test_closed_forms_match_reference_long = _properties(
    closed_calls(), _closed_forms_match_reference
)
test_pairwise_and_nearest_match_reference, test_pairwise_and_nearest_match_reference_long = (
    _properties(pairwise_calls(), _pairwise_and_nearest_match_reference)
)
test_drop_ins_equal_their_native_calls, test_drop_ins_equal_their_native_calls_long = _properties(
    compat_calls(), _drop_ins_equal_their_native_calls
)
