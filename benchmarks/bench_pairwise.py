"""asv suite for pairwise scoring: pairwise_kl and nearest_kl against one BLAS product."""

from __future__ import annotations

import numpy as np

from fastkl.pairwise import nearest_kl, pairwise_kl

from .common import DTYPES, rows_in_form

#: P and Q both have N rows (scaled by FASTKL_BENCH_SCALE, at least 2) of K categories.
N = 10_000
K = 64


def _rows(seed: int, dtype: str, form: str = "probs") -> np.ndarray:
    return rows_in_form((N, K), dtype, form, seed=seed)


class PairwiseKL:
    """The (n, n) matrix of KL(P_i || Q_j), next to np.dot(P, Q.T) of the same shapes: the
    product that does most of its work, and its yardstick (within 2x)."""

    params = (DTYPES, ["probs", "logits"])
    param_names = ["dtype", "q_form"]
    timeout = 300

    def setup(self, dtype, q_form):
        self.p = _rows(1, dtype)
        self.q = _rows(2, dtype, q_form)
        self.out = np.empty((len(self.p), len(self.q)), dtype)
        pairwise_kl(self.p[:4], self.q[:4], q_form=q_form)  # warm up (no numba kernel here)

    def time_pairwise_kl(self, dtype, q_form):
        pairwise_kl(self.p, self.q, q_form=q_form, out=self.out)

    def time_np_dot(self, dtype, q_form):
        np.dot(self.p, self.q.T, out=self.out)

    def peakmem_pairwise_kl(self, dtype, q_form):
        pairwise_kl(self.p, self.q, q_form=q_form, out=self.out)


class PairwiseKLZeros:
    """Q with zeros in 1 row out of 8: the +inf indicator product runs on those rows only."""

    def setup(self):
        self.p = _rows(1, "float32")
        self.q = _rows(2, "float32")
        self.q[::8, ::5] = 0.0
        self.out = np.empty((len(self.p), len(self.q)), np.float32)
        pairwise_kl(self.p[:4], self.q[:4])

    def time_pairwise_kl(self):
        pairwise_kl(self.p, self.q, out=self.out)


class NearestKL:
    """The k nearest rows of Q for every row of P, in blocks: memory O(n k), never O(n m)."""

    params = ([1, 10],)
    param_names = ["k"]
    timeout = 300

    def setup(self, k):
        self.p = _rows(1, "float32")
        self.q = _rows(2, "float32")
        self.k = min(k, len(self.q))
        nearest_kl(self.p[:4], self.q[:4], 1)  # compile or load the merge kernel

    def time_nearest_kl(self, k):
        nearest_kl(self.p, self.q, self.k)

    def peakmem_nearest_kl(self, k):
        nearest_kl(self.p, self.q, self.k)
