"""asv suite for fastkl.kl_div: forms x dtypes x row shapes, broadcasting, options."""

from __future__ import annotations

import numpy as np

import fastkl

from .common import DTYPES, FORMS, SHAPES, probability_rows, rows_in_form


class KLDiv:
    """Row-wise KL of two same-shape inputs, each side in the same form."""

    params = (FORMS, DTYPES, list(SHAPES))
    param_names = ["form", "dtype", "shape"]
    timeout = 180

    def setup(self, form, dtype, shape):
        n, k = SHAPES[shape]
        self.p = rows_in_form((n, k), dtype, form, seed=1)
        self.q = rows_in_form((n, k), dtype, form, seed=2)
        self.out = np.empty(len(self.p), dtype)
        self.kwargs = {"p_form": form, "q_form": form, "out": self.out}
        fastkl.kl_div(self.p[:4], self.q[:4], p_form=form, q_form=form)  # compile/load

    def time_kl_div(self, form, dtype, shape):
        fastkl.kl_div(self.p, self.q, **self.kwargs)

    def peakmem_kl_div(self, form, dtype, shape):
        fastkl.kl_div(self.p, self.q, **self.kwargs)


class KLDivOneReferenceRow:
    """Every row of p against one reference row q of shape (k,): q is never broadcast."""

    params = (DTYPES,)
    param_names = ["dtype"]

    def setup(self, dtype):
        self.p = probability_rows((1_000_000, 64), dtype, seed=1)
        self.q = probability_rows((64,), dtype, seed=2)
        fastkl.kl_div(self.p[:4], self.q)

    def time_kl_div(self, dtype):
        fastkl.kl_div(self.p, self.q)

    def peakmem_kl_div(self, dtype):
        fastkl.kl_div(self.p, self.q)


class KLDivCallOverhead:
    """A call on 4 rows of 64: the fixed cost a training loop pays per batch (argument handling,
    dispatch, the parallel launch), for the common layouts."""

    params = (["same shape", "out", "one q row", "logits"],)
    param_names = ["call"]

    def setup(self, call):
        rng = np.random.default_rng(1)  # 4 rows whatever FASTKL_BENCH_SCALE: a fixed cost
        self.p = rng.dirichlet(np.ones(64), 4).astype(np.float32)
        self.q = rng.dirichlet(np.ones(64), 4).astype(np.float32)
        self.out = np.empty(4, np.float32)
        self.time_kl_div(call)  # compile or load

    def time_kl_div(self, call):
        if call == "same shape":
            fastkl.kl_div(self.p, self.q)
        elif call == "out":
            fastkl.kl_div(self.p, self.q, out=self.out)
        elif call == "one q row":
            fastkl.kl_div(self.p, self.q[0])
        else:
            fastkl.kl_div(self.p, self.q, p_form="logits", q_form="logits")


class KLDivOptions:
    """The options that add work: reductions, validation, normalization, clipping, strides."""

    params = (["mean", "validate", "normalize", "eps", "fortran", "axis0"],)
    param_names = ["option"]

    def setup(self, option):
        p = probability_rows((500_000, 64), "float32", seed=1)
        q = probability_rows((500_000, 64), "float32", seed=2)
        self.kwargs = {
            "mean": {"reduction": "mean"},
            "validate": {"validate": True},
            "normalize": {"normalize": True},
            "eps": {"eps": 1e-7},
            "fortran": {},
            "axis0": {"axis": 0},
        }[option]
        if option == "fortran":
            p, q = np.asfortranarray(p), np.asfortranarray(q)
        elif option == "axis0":
            p, q = np.ascontiguousarray(p.T), np.ascontiguousarray(q.T)
        self.p, self.q = p, q
        fastkl.kl_div(self.p, self.q, **self.kwargs)

    def time_kl_div(self, option):
        fastkl.kl_div(self.p, self.q, **self.kwargs)

    def peakmem_kl_div(self, option):
        fastkl.kl_div(self.p, self.q, **self.kwargs)


class ColdStart:
    """Import plus the first call in a fresh process (the numba cache loaded, not compiled)."""

    timeout = 300

    def setup(self):
        import subprocess
        import sys

        self.cmd = [
            sys.executable,
            "-c",
            "import numpy as np, fastkl; fastkl.kl_div(np.full((2, 4), 0.25), np.full(4, 0.25))",
        ]
        subprocess.run(self.cmd, check=True)  # fill the cache

    def time_import_and_first_call(self):
        import subprocess

        subprocess.run(self.cmd, check=True)
