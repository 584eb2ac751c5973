"""The kernel modes (flat short rows, plain rows, rows with statistics, split long rows) agree
with the reference, keep the exact semantics, and are bitwise deterministic."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from reference import assert_close, kl_ref, random_probs

import fastkl
from fastkl import _config, _cpu

FORMS = ["probs", "log_probs", "logits"]
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-7}, np.float64: {"rtol": 1e-12, "atol": 1e-15}}


def inputs(rng, shape, form, dtype, seed_shift=0.0):
    p = random_probs(rng, shape)
    if form == "log_probs":
        p = np.log(p)
    elif form == "logits":
        p = np.log(p) + 2.0 + seed_shift
    return p.astype(dtype)


def mode_of(p_form, q_form, n, k, **kw):
    code = {"probs": 0, "log_probs": 1, "logits": 2}
    return _cpu.kl_kernel(code[p_form], code[q_form], n, k, k, k, False, 0.0)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_flat_short_rows(rng, dtype, k):
    assert mode_of("probs", "probs", 3000, k) == "flat"
    p = random_probs(rng, (3000, k), dtype)
    q = random_probs(rng, (3000, k), dtype)
    p[7, 0] = 0.0  # exact zero: the fast path handles it
    q[1234, 0] = 0.0  # +inf row: the block is recomputed exactly
    p[2500, 0] = np.nan
    got = fastkl.kl_div(p, q)
    assert_close(got, kl_ref(p, q), **TOL[dtype])


@pytest.mark.parametrize("q_form", FORMS)
@pytest.mark.parametrize("p_form", FORMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_long_rows(rng, p_form, q_form, dtype):
    n, k = 3, 2 * _cpu.CHUNK + 777
    assert mode_of(p_form, q_form, n, k) == "split"
    p = inputs(rng, (n, k), p_form, dtype)
    q = inputs(rng, (n, k), q_form, dtype)
    got = fastkl.kl_div(p, q, p_form=p_form, q_form=q_form)
    assert_close(got, kl_ref(p, q, p_form=p_form, q_form=q_form), **TOL[dtype])
    # the same rows scored among many give the same bits: the mode depends on k, not n
    many = fastkl.kl_div(
        np.concatenate([p] * 4), np.concatenate([q] * 4), p_form=p_form, q_form=q_form
    )
    assert np.array_equal(many[:n], got)


@pytest.mark.parametrize(
    ("p_form", "q_form"),
    [("logits", "logits"), ("logits", "probs"), ("probs", "logits"), ("log_probs", "logits")],
)
def test_split_rows_with_distant_chunk_maxima(rng, p_form, q_form):
    # A split row's chunks are each shifted by their own maxima and rescaled to the row's when
    # combined: chunks whose maxima lie far apart, a -inf logit, and a chunk of p with no mass
    # at all (its own maximum is -inf) all give the reference's value.
    n, k, c = 3, 2 * _cpu.CHUNK + 777, _cpu.CHUNK
    assert mode_of(p_form, q_form, n, k) == "split"
    p = inputs(rng, (n, k), p_form, np.float64)
    q = inputs(rng, (n, k), q_form, np.float64)
    for x, form in ((p, p_form), (q, q_form)):
        if form == "logits":
            x[0, :c] -= 60.0  # the first chunk far below the others
            x[1, c:] -= 60.0  # the others far below the first
            x[2, 5] = -np.inf
    if p_form == "logits":
        p[2, c : 2 * c] = -np.inf
    got = fastkl.kl_div(p, q, p_form=p_form, q_form=q_form)
    with np.errstate(all="ignore"):
        ref = kl_ref(p, q, p_form=p_form, q_form=q_form)
    assert_close(got, ref, rtol=1e-12, atol=1e-15)
    assert np.all(np.isfinite(got[:2]))


@pytest.mark.parametrize("form", FORMS)
def test_special_values_in_every_pair_at_vector_width(rng, form):
    # k = 64: the vectorized loops, not a scalar remainder, meet the special values
    p = inputs(rng, (6, 64), form, np.float32)
    q = inputs(rng, (6, 64), form, np.float32)
    zero = {"probs": 0.0, "log_probs": -np.inf, "logits": -np.inf}[form]
    p[0, 3] = zero  # a zero probability in p: contributes 0
    q[1, 5] = zero  # a zero probability in q where p > 0: +inf
    p[2, 9] = zero  # zeros in both at the same place: 0, not NaN
    q[2, 9] = zero
    q[3, 1] = np.nan
    got = fastkl.kl_div(p, q, p_form=form, q_form=form)
    with np.errstate(all="ignore"):
        ref = kl_ref(p, q, p_form=form, q_form=form)
    assert_close(got, ref, rtol=1e-5, atol=1e-7)
    assert got[1] == np.inf and np.isnan(got[3]) and np.isfinite(got[2])


@pytest.mark.parametrize("p_form", FORMS)
def test_bitwise_identical_across_thread_counts(rng, p_form):
    p = inputs(rng, (4000, 100), p_form, np.float32)
    q = inputs(rng, (4000, 100), "logits", np.float32, seed_shift=1.0)
    long_p = inputs(rng, (2, 3 * _cpu.CHUNK), p_form, np.float32)
    long_q = inputs(rng, (2, 3 * _cpu.CHUNK), "probs", np.float32)
    results = []
    for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        try:
            results.append(
                (
                    fastkl.kl_div(p, q, p_form=p_form, q_form="logits"),
                    fastkl.kl_div(p, q, p_form=p_form, q_form="logits", reduction="sum"),
                    fastkl.kl_div(long_p, long_q, p_form=p_form),
                )
            )
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


def test_bitwise_identical_across_block_sizes(rng, monkeypatch):
    # Fortran order is staged a block of rows at a time: the block size must not change bits.
    p = np.asfortranarray(random_probs(rng, (3000, 40), np.float32))
    q = np.asfortranarray(random_probs(rng, (3000, 40), np.float32))
    first = fastkl.kl_div(p, q)
    total = fastkl.kl_div(p, q, reduction="sum")
    for block in [4096, 40 * 4 * 7, 1 << 22]:
        monkeypatch.setattr(_config, "BLOCK_BYTES", block)
        assert np.array_equal(fastkl.kl_div(p, q), first)
        assert fastkl.kl_div(p, q, reduction="sum") == total
    assert np.array_equal(fastkl.kl_div(np.ascontiguousarray(p), np.ascontiguousarray(q)), first)
