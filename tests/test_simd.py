"""The vectorizable log and exp of fastkl._simd, checked densely against float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from fastkl import _simd
from fastkl._config import JIT_OPTIONS


@njit(parallel=True, **JIT_OPTIONS)
def _apply(which, x, out):
    for i in prange(x.shape[0]):
        if which == 0:
            out[i] = _simd.log(x[i])
        elif which == 1:
            out[i] = _simd.exp(x[i])
        elif which == 2:
            out[i] = _simd.log_core(x[i])
        else:
            out[i] = _simd.exp_core(x[i])


def run(which: str, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _apply(["log", "exp", "log_core", "exp_core"].index(which), x, out)
    return out


def ulps(got: np.ndarray, ref: np.ndarray, dtype) -> np.ndarray:
    """|got - ref| in units of the spacing of ref rounded to dtype."""
    spacing = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


# Every float32 exponent and a dense, irregular sample of mantissas: 7.6 million values in CI,
# every positive float32 with FASTKL_DENSE=1 (a stride of 1).
STRIDE = 1 if __import__("os").environ.get("FASTKL_DENSE") else 281


def test_log_float32_every_positive_float():
    x = np.arange(1, 0x7F800000, STRIDE, dtype=np.uint32).view(np.float32)
    err = ulps(run("log", x), np.log(x.astype(np.float64)), np.float32)
    assert err.max() <= 2.5, (err.max(), x[err.argmax()])
    normal = x >= np.finfo(np.float32).tiny
    err_core = ulps(run("log_core", x[normal]), np.log(x[normal].astype(np.float64)), np.float32)
    assert err_core.max() <= 2.5


def test_log_float64():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.exp(rng.uniform(-744, 709, 1_000_000)),  # all binades, subnormals included
            rng.uniform(0.5, 2.0, 500_000),  # around 1, where log is small
            np.nextafter(1.0, [0.0, 2.0]),
        ]
    )
    err = np.abs(run("log", x) - np.log(x)) / np.spacing(np.abs(np.log(x)))
    assert err.max() <= 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -1.0, np.nan, -np.inf, 1.0], dtype)
    got = run("log", x)
    assert got[0] == -np.inf and got[1] == -np.inf and got[2] == np.inf
    assert np.isnan(got[3]) and np.isnan(got[4]) and np.isnan(got[5])
    assert got[6] == 0.0


def test_exp_float32():
    x = np.linspace(-110, 95, 2_000_001).astype(np.float32)
    got = run("exp", x)
    ref = np.exp(x.astype(np.float64))
    tiny, big = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    normal = (ref >= tiny) & (ref <= big)
    assert ulps(got[normal], ref[normal], np.float32).max() <= 2.0
    sub = (ref < tiny) & (ref > 0)  # subnormal results: within a unit of the last place
    assert np.abs(got[sub] - ref[sub]).max() <= 2 * np.finfo(np.float32).smallest_subnormal
    assert np.all(got[ref > big] == np.inf)
    core = x <= 0
    ref_core = ref[core]
    got_core = run("exp_core", x[core])
    normal_core = ref_core >= tiny
    assert ulps(got_core[normal_core], ref_core[normal_core], np.float32).max() <= 2.0
    assert np.all(got_core[ref_core < tiny / 2] <= tiny)  # flushed towards 0, never garbage


def test_exp_float64():
    rng = np.random.default_rng(1)
    x = rng.uniform(-745, 709.7, 1_000_000)
    got = run("exp", x)
    ref = np.exp(x)
    normal = ref >= np.finfo(np.float64).tiny
    assert (np.abs(got[normal] - ref[normal]) / np.spacing(ref[normal])).max() <= 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    got = run("exp", np.array([np.inf, -np.inf, np.nan, 0.0, 1000.0, -1000.0], dtype))
    assert got[0] == np.inf and got[1] == 0.0 and np.isnan(got[2])
    assert got[3] == 1.0 and got[4] == np.inf and got[5] == 0.0


def test_python_fallbacks_agree():
    # The plain-Python versions (used with NUMBA_DISABLE_JIT=1) follow the same semantics.
    assert _simd.log(0.0) == -np.inf and np.isnan(_simd.log(-1.0))
    assert _simd.exp(1000.0) == np.inf
    for v in [-3.5, 0.0, 2.25, -np.inf, np.inf]:
        b = _simd.ordered_bits(v)
        assert _simd.from_ordered_bits(b, np.float64(1.0)) == v
    assert _simd.ordered_bits(-1.0) < _simd.ordered_bits(-0.5) < _simd.ordered_bits(0.5)


@njit(parallel=True, **JIT_OPTIONS)
def _apply_ratio(p, q, out, guarded):
    for i in prange(p.shape[0]):
        out[i] = _simd.log_ratio_core(p[i], q[i])
        guarded[i] = _simd.ratio_guard(out[i], p[i], q[i])


def _ratio_pairs(dtype, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random mantissas for every exponent difference a ratio of normal floats can have,
    plus neighbours (p and q one ulp apart: the smallest, hardest results)."""
    info = np.finfo(dtype)
    rng = np.random.default_rng(seed)
    lo, hi = info.minexp, info.maxexp - 1
    ep = rng.integers(lo, hi + 1, n)
    eq = rng.integers(lo, hi + 1, n)
    p = np.ldexp(rng.uniform(1, 2, n), ep).astype(dtype)
    q = np.ldexp(rng.uniform(1, 2, n), eq).astype(dtype)
    near = rng.uniform(0.5, 2.0, n // 4).astype(dtype)
    p = np.concatenate([p, near, near, near])
    q = np.concatenate([q, near, np.nextafter(near, dtype(0)), np.nextafter(near, dtype(3))])
    return p, q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_ratio_every_exponent_difference(dtype):
    # log(p / q) without the quotient, for all positive normal p and q, extreme exponent
    # differences (where p / q itself would overflow or underflow) and near-equal p and q
    # included: within 2 ulp of the result plus one ulp of 1 (3 ulp where p and q share a
    # binade, so that a - b is exact and nothing cancels). The second part is the bound
    # for p and q on either side of a power of two, where e ln 2 and log(a / b) cancel. It is
    # what the KL term needs (an absolute error, weighted by p) and no worse than the log of
    # the correctly rounded quotient, whose rounding alone is half an ulp of 1 near p == q.
    p, q = _ratio_pairs(dtype, 2_000_000, 3)
    got, guarded = np.empty_like(p), np.empty_like(p)
    _apply_ratio(p, q, got, guarded)
    wide = np.longdouble  # 64-bit mantissa on x86-64: exact enough for the float64 bound
    pw, qw = p.astype(wide), q.astype(wide)
    d = (pw - qw) / qw  # p - q is exact where p and q are close
    close = np.abs(d) < 0.5
    ref = np.log(pw) - np.log(qw)
    ref[close] = np.log1p(d[close])
    bound = 2 * np.spacing(np.abs(ref).astype(dtype)).astype(wide) + np.finfo(dtype).eps
    excess = np.abs(got.astype(wide) - ref) / bound
    worst = excess.argmax()
    assert float(excess[worst]) <= 1.0, (float(excess[worst]), p[worst], q[worst])
    same_binade = np.frexp(p)[1] == np.frexp(q)[1]  # a - b exact: a few ulp, no absolute part
    ulp = np.abs(got - ref)[same_binade] / np.spacing(np.abs(ref[same_binade]).astype(dtype))
    assert float(ulp.max()) <= 3.0
    assert np.array_equal(guarded, got)  # normal pairs pass the guard unchanged


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratio_guard_special_values(dtype):
    info = np.finfo(dtype)
    sub, tiny, big = info.smallest_subnormal, info.tiny, info.max
    # (p, q, passes): the guard lets through exactly the pairs log_ratio_core is exact for
    cases = [
        (0.5, 0.25, True),
        (0.0, 0.25, True),  # a zero p: 0 * (finite) = 0
        (tiny, big, True),
        (big, tiny, True),
        (0.5, 0.0, False),  # +inf term: the exact path
        (0.0, 0.0, False),
        (sub, 0.5, False),  # subnormals: the exact path
        (0.5, sub, False),
        (-0.0, 0.5, False),
        (-0.5, 0.5, False),
        (0.5, -0.5, False),
        (np.inf, 0.5, False),
        (0.5, np.inf, False),
        (np.nan, 0.5, False),
        (0.5, np.nan, False),
    ]
    p = np.array([c[0] for c in cases], dtype)
    q = np.array([c[1] for c in cases], dtype)
    got, guarded = np.empty_like(p), np.empty_like(p)
    _apply_ratio(p, q, got, guarded)
    passes = np.array([c[2] for c in cases])
    assert np.array_equal(~np.isnan(guarded), passes)
    assert np.all(np.isfinite(got[passes]))
    for pv, qv, ok in cases:  # the plain-Python version (NUMBA_DISABLE_JIT=1) agrees
        assert np.isnan(_simd.ratio_guard(dtype(1.0), dtype(pv), dtype(qv))) != ok


# --- sums in explicit lanes ----------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _lane_loop(x):
    """A sum written as the kernels write theirs: term j into lane j % LANES."""
    a = _simd.lanes(x[0])
    full = x.shape[0] - x.shape[0] % _simd.LANES
    for j0 in range(0, full, _simd.LANES):
        for lane in range(_simd.LANES):
            a[lane] += x[j0 + lane]
    for lane in range(x.shape[0] - full):
        a[lane] += x[full + lane]
    return _simd.lanes_total(a)


@njit(parallel=True, **JIT_OPTIONS)
def _lane_sums(x, k, out, loop_out):
    for i in prange(out.shape[0]):
        out[i] = _simd.lane_sum(x[i * k : i * k + k])
        loop_out[i] = _lane_loop(x[i * k : i * k + k])


def _order_reference(row: np.ndarray) -> float:
    """The lanes' order in numpy, element by element in the row's precision."""
    a = np.zeros(_simd.LANES, row.dtype)
    for j, v in enumerate(row):
        a[j % _simd.LANES] += v
    while a.shape[0] > 1:
        a = a[: a.shape[0] // 2] + a[a.shape[0] // 2 :]
    return float(a[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_sums_add_in_the_documented_order(dtype):
    """``lane_sum`` (an explicit vector loop), a loop over ``lanes`` (what the kernels write),
    the plain-Python fallback and numpy element by element: the same bits, for every tail
    length; and within float rounding of the exact sum."""
    rng = np.random.default_rng(7)
    for k in [1, 2, 15, 16, 17, 31, 32, 33, 47, 100, 512]:
        x = (rng.standard_normal(9 * k) * 10.0 ** rng.integers(-3, 4, 9 * k)).astype(dtype)
        out, loop_out = np.empty(9), np.empty(9)
        _lane_sums(x, k, out, loop_out)
        for i in range(9):
            row = x[i * k : (i + 1) * k]
            want = _order_reference(row)
            assert out[i] == want and loop_out[i] == want, (k, i)
            assert _simd.lane_sum(row) == want
            exact = __import__("math").fsum(row.astype(np.float64))
            scale = np.abs(row.astype(np.float64)).sum()
            assert abs(out[i] - exact) <= 4 * k * np.finfo(dtype).eps * scale


def test_lane_sum_keeps_special_values_and_reads_no_further():
    """NaN and inf ride in the sum; a row read from the middle of a buffer adds none of its
    neighbours (the tail is a masked load)."""
    x = np.arange(40, dtype=np.float32)
    out, loop_out = np.empty(1), np.empty(1)
    _lane_sums(x[3:24], 21, out, loop_out)  # k = 21 rows of the slice: one row
    assert out[0] == loop_out[0] == float(np.arange(3, 24).sum())
    for bad, want in [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, -np.inf)]:
        y = np.ones(37)
        y[35] = bad
        _lane_sums(y, 37, out, loop_out)
        assert np.array_equal(out, [want], equal_nan=True), bad
        assert np.array_equal(loop_out, [want], equal_nan=True), bad
