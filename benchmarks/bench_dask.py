"""asv suite for fastkl.dask: kl_div over a row-chunked dask array, on dask's default (threaded)
scheduler.

The figure to watch is ``track_ratio_to_numpy``: building the graph and computing it, against
``fastkl.kl_div`` on the same rows in one call. Near 1 means dask's overhead (a task per block,
the threads' hand-offs) costs next to nothing next to the kernels. Skipped without dask.
"""

from __future__ import annotations

import fastkl
from fastkl.bench import paired_medians

from .common import probability_rows

try:
    import dask.array as da

    import fastkl.dask as fkd
except ImportError:  # the optional extra is not installed
    fkd = None

SHAPE = (200_000, 64)
CHUNKS = 4  # row chunks: one task per core on a small machine, a few per core on a large one


class DaskKLDiv:
    """fastkl.dask.kl_div(p, q).compute() on 200,000 x 64 float32 rows in 4 row chunks."""

    params = (["none", "mean"],)
    param_names = ["reduction"]

    def setup(self, reduction):
        if fkd is None:
            raise NotImplementedError("dask is not installed")
        self.p = probability_rows(SHAPE, "float32", seed=1)
        self.q = probability_rows(SHAPE, "float32", seed=2)
        rows = -(-len(self.p) // CHUNKS)
        self.dp = da.from_array(self.p, chunks=(rows, SHAPE[1]))
        self.dq = da.from_array(self.q, chunks=(rows, SHAPE[1]))
        self.time_kl_div(reduction)  # compile or load, start the scheduler's threads

    def time_kl_div(self, reduction):
        fkd.kl_div(self.dp, self.dq, reduction=reduction).compute()

    def track_ratio_to_numpy(self, reduction):
        """The dask call and compute / fastkl.kl_div on the same numpy rows, timed in turn
        (median of 7 pairs)."""
        _, ratio = paired_medians(
            [
                lambda: self.time_kl_div(reduction),
                lambda: fastkl.kl_div(self.p, self.q, reduction=reduction),
            ],
            repeat=7,
        )
        return ratio

    track_ratio_to_numpy.unit = "ratio"
