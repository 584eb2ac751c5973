"""asv suite for ``fastkl score`` (files in, values out) and ``fastkl info``.

The figure to watch is ``track_ratio_score_to_in_memory``: scoring two .npy files (memory-mapped,
chunked, the output written and renamed) against ``kl_div`` on the same rows already in memory.
Near 1 means the file path adds nothing but the output write.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import numpy as np

import fastkl
from fastkl.info import collect
from fastkl.score import score_files

from .common import probability_rows

SHAPE = (1_000_000, 64)


class Score:
    """Files written once per run (``setup_cache``) and scored from the page cache."""

    timeout = 600
    unit = "seconds"

    def setup_cache(self):
        folder = tempfile.mkdtemp(prefix="fastkl-asv-score-")
        p = probability_rows(SHAPE, "float32", seed=1)
        np.save(os.path.join(folder, "p.npy"), p)
        np.save(os.path.join(folder, "q.npy"), probability_rows(SHAPE, "float32", seed=2))
        np.save(os.path.join(folder, "q1.npy"), p[0])
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"p": list(p[:50_000])}), os.path.join(folder, "p.parquet"))
        except ImportError:
            pass
        return folder

    def setup(self, folder):
        self.p = os.path.join(folder, "p.npy")
        self.q = os.path.join(folder, "q.npy")
        self.out = os.path.join(tempfile.mkdtemp(prefix="fastkl-asv-out-"), "kl.npy")
        self.p_mem, self.q_mem = np.load(self.p), np.load(self.q)
        self.values = np.empty(self.p_mem.shape[0], np.float32)
        score_files(self.p, self.q, self.out)  # the kernels load outside the timings

    def teardown(self, folder):
        shutil.rmtree(os.path.dirname(self.out), ignore_errors=True)

    def time_score_npy(self, folder):
        score_files(self.p, self.q, self.out)

    def time_score_npy_one_reference_row(self, folder):
        score_files(self.p, os.path.join(folder, "q1.npy"), self.out)

    def time_score_npy_mean(self, folder):
        score_files(self.p, self.q, reduction="mean")

    def time_kl_div_in_memory(self, folder):
        fastkl.kl_div(self.p_mem, self.q_mem, out=self.values)

    def time_score_parquet_50k(self, folder):
        path = os.path.join(folder, "p.parquet")
        if not os.path.exists(path):
            raise NotImplementedError("pyarrow is not installed")
        score_files(path, os.path.join(folder, "q1.npy"), self.out)

    def track_ratio_score_to_in_memory(self, folder):
        """score_files on the .npy pair / kl_div(out=) on the same rows in memory, timed in
        turn (median of 7 pairs)."""
        ratios = []
        for _ in range(7):
            t0 = time.perf_counter()
            score_files(self.p, self.q, self.out)
            t1 = time.perf_counter()
            fastkl.kl_div(self.p_mem, self.q_mem, out=self.values)
            t2 = time.perf_counter()
            ratios.append((t1 - t0) / (t2 - t1))
        return statistics.median(ratios)

    track_ratio_score_to_in_memory.unit = "ratio"


class Info:
    def time_collect(self):
        collect()
