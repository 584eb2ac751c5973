"""asv suite for the speed targets: the cases of ``fastkl bench`` and their read rooflines."""

from __future__ import annotations

import numpy as np

import fastkl
from fastkl import bench

from .common import SCALE

CASES = {c.name: c for c in bench.CASES}


class Speed:
    """fastkl.kl_div on each case of ``fastkl bench`` (track_ratio: time / read roofline)."""

    params = (list(CASES),)
    param_names = ["case"]
    timeout = 300

    def setup(self, name):
        case = CASES[name]
        self.case = case
        self.p, self.q, n = bench._data(case, SCALE)
        self.out = np.empty(n, self.p.dtype)
        self.sink = np.empty(n, self.p.dtype)
        self.time_kl_div(name)  # compile or load
        self.time_roofline(name)

    def time_kl_div(self, name):
        form = self.case.form
        fastkl.kl_div(self.p, self.q, p_form=form, q_form=form, out=self.out)

    def time_roofline(self, name):
        k = self.case.k
        if self.case.one_q_row:
            bench._stream_p(self.p.reshape(-1), k, self.sink)
        else:
            bench._stream_rows(self.p.reshape(-1), k, self.q.reshape(-1), k, k, self.sink)

    def track_ratio_to_roofline(self, name):
        return _measured(name)["ratio_to_roofline"]

    track_ratio_to_roofline.unit = "x roofline"

    def track_compute_to_roofline(self, name):
        """The arithmetic alone (from cache) over the roofline: above 1, compute-bound."""
        return _measured(name)["compute_to_roofline"]

    track_compute_to_roofline.unit = "x roofline"


_MEASURED: dict[str, dict] = {}


def _measured(name: str) -> dict:
    """One ``fastkl bench`` measurement of a case, shared by the track_* benchmarks."""
    if name not in _MEASURED:
        _MEASURED[name] = bench.run_case(CASES[name], repeat=5, scale=SCALE, peers=False)
    return _MEASURED[name]
