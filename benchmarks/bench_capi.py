"""asv suite for the C API: libfastkl's per-call overhead from C, and a large call against the
Python API (goals: <= 5 us for a 4-row call; a 1,000,000 x 64 call within 10% of Python)."""

from __future__ import annotations

import ctypes
import shutil
import tempfile

import numpy as np

import fastkl
from fastkl import bench
from fastkl.capi import _build

from .common import SCALE

ROWS = max(2, int(1_000_000 * SCALE))
K = 64
F32P = ctypes.POINTER(ctypes.c_float)


class CAPI:
    """libfastkl built once per run (``setup_cache``); every figure comes from that build."""

    timeout = 600
    unit = "seconds"

    def setup_cache(self):
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            return None
        prefix = tempfile.mkdtemp(prefix="fastkl-asv-capi-")
        library, program = bench.build_capi_bench(prefix)
        return {"prefix": prefix, "library": library, "program": program}

    def setup(self, built):
        if built is None:
            raise NotImplementedError("no C compiler")
        self.built = built
        self.fn = _build.load(built["library"]).fastkl_kl_div_f32
        self.p, self.q = bench._capi_data(ROWS, K)
        self.out = np.empty(ROWS, dtype=np.float32)
        self.args = (self.p.ctypes.data_as(F32P), self.q.ctypes.data_as(F32P), ROWS, K, K, K, 0, 0)
        self.out_ptr = self.out.ctypes.data_as(F32P)
        self.fn(*self.args, self.out_ptr)  # start the library's runtime in this process
        fastkl.kl_div(self.p, self.q, out=self.out)

    def track_c_call_4_rows(self, built):
        """Seconds per fastkl_kl_div_f32 call on 4 x 64 rows, timed inside a C program."""
        return bench.run_c_bench(built["program"], 4, K, rounds=7, calls=20_000)[
            "seconds_per_call"
        ]

    def track_c_first_call(self, built):
        """Seconds of a C program's first call: the interpreter, numba and the cfuncs load."""
        return bench.run_c_bench(built["program"], 4, K, rounds=1, calls=1)["first_call"]

    def track_ratio_library_to_python(self, built):
        """A 1,000,000 x 64 float32 call through libfastkl (ctypes) / kl_div(out=), timed in
        turn (median of 7 pairs)."""
        _, ratio = bench.paired_medians(
            [
                lambda: self.fn(*self.args, self.out_ptr),
                lambda: fastkl.kl_div(self.p, self.q, out=self.out),
            ],
            7,
        )
        return ratio

    track_ratio_library_to_python.unit = "ratio"

    def time_library_1m_x_64(self, built):
        self.fn(*self.args, self.out_ptr)

    def time_python_1m_x_64(self, built):
        fastkl.kl_div(self.p, self.q, out=self.out)
