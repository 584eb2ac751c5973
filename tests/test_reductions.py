"""Reductions: a fixed-order float64 sum that is the same for every chunking of the rows."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastkl
from fastkl._prepare import RowSum


@given(
    n=st.integers(0, 20_000),
    cuts=st.lists(st.integers(0, 20_000), max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_row_sum_is_the_same_for_any_chunking(n, cuts, seed):
    values = np.random.default_rng(seed).standard_normal(n) * 10.0 ** (np.arange(n) % 7)
    whole = RowSum()
    whole.add(values)
    pieces = RowSum()
    bounds = sorted({0, n, *(c % (n + 1) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        pieces.add(values[a:b])
    assert pieces.count == whole.count == n
    assert pieces.sum() == whole.sum()  # bitwise
    assert whole.sum() == pytest.approx(math.fsum(values), rel=1e-12, abs=1e-9)


def test_row_sum_special_values():
    s = RowSum()
    s.add(np.array([1.0, np.inf, 2.0]))
    assert s.sum() == np.inf
    # numpy's warnings, as for any float64 sum that overflows or meets inf - inf
    with np.errstate(over="ignore", invalid="ignore"):
        s.add(np.full(5000, -np.inf))  # inf - inf: NaN, not an exception
        assert math.isnan(s.sum())
        big = RowSum()
        big.add(np.full(10_000, 1e305))  # block sums overflow: inf, not an OverflowError
        assert big.sum() == np.inf
    assert math.isnan(RowSum().mean()) and RowSum().sum() == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float64_out_holds_what_the_reductions_sum(rng, dtype):
    p = rng.dirichlet(np.ones(16), 9000).astype(dtype)
    q = rng.dirichlet(np.ones(16), 9000).astype(dtype)
    rows64 = np.empty(9000, np.float64)
    assert fastkl.kl_div(p, q, out=rows64) is rows64
    total = RowSum()
    total.add(rows64)
    assert fastkl.kl_div(p, q, reduction="sum") == dtype(total.sum())
    assert fastkl.kl_div(p, q, reduction="mean") == dtype(total.mean())
    # The float64 values are the float32 results before rounding.
    np.testing.assert_array_equal(rows64.astype(dtype), fastkl.kl_div(p, q))
    if dtype == np.float64:
        with pytest.raises(ValueError, match=r"out: expected dtype float64, got float32"):
            fastkl.kl_div(p, q, out=np.empty(9000, np.float32))
    else:
        with pytest.raises(
            ValueError, match=r"expected dtype float32 \(or float64\), got float16"
        ):
            fastkl.js_div(p, q, out=np.empty(9000, np.float16))
