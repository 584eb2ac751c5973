"""Seeded data factories shared by every benchmark module."""

from __future__ import annotations

import os

import numpy as np

SEED = 20261122

#: Fraction of the rows to generate: the test suite runs every benchmark on tiny data with
#: FASTKL_BENCH_SCALE=0.0001 so that the suite cannot rot; real runs leave it at 1.
SCALE = float(os.environ.get("FASTKL_BENCH_SCALE", "1"))

#: Row shapes: many short rows, very short rows, and long rows (LLM vocabularies).
SHAPES = {
    "1000000x64": (1_000_000, 64),
    "4000000x4": (4_000_000, 4),
    "512x32768": (512, 32_768),
}
FORMS = ["probs", "log_probs", "logits"]
DTYPES = ["float32", "float64"]


def probability_rows(shape: tuple[int, ...], dtype: str, seed: int = SEED) -> np.ndarray:
    """Rows of a flat Dirichlet, normalized along the last axis."""
    rng = np.random.default_rng(seed)
    if len(shape) > 1:
        shape = (max(2, int(shape[0] * SCALE)), *shape[1:])
    x = rng.standard_exponential(shape, dtype=np.float64 if dtype == "float64" else np.float32)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def rows_in_form(shape: tuple[int, ...], dtype: str, form: str, seed: int = SEED) -> np.ndarray:
    """Probability rows given as ``form`` (log-probabilities, or logits with a row shift)."""
    x = probability_rows(shape, dtype, seed)
    if form == "probs":
        return x
    with np.errstate(divide="ignore"):
        np.log(x, out=x)
    if form == "logits":
        x += x.dtype.type(1.5)
    return x
