"""asv suite for the CUDA backend: every row-wise function on device arrays, a device-to-device
copy of the same bytes (the roofline the kernels are judged against), and numpy inputs
streamed through the GPU. Every benchmark skips (NotImplementedError) without a usable GPU:
the simulator's times mean nothing."""

from __future__ import annotations

import numpy as np

import fastkl

from .common import rows_in_form

FUNCTIONS = "kl_div js_div js_distance sym_kl cross_entropy entropy generalized_kl".split()
#: (rows, k): many short rows, and long rows (LLM vocabularies)
GPU_SHAPES = {"1000000x128": (1_000_000, 128), "256x131072": (256, 131_072)}


def _cuda():
    """numba.cuda, or NotImplementedError when no GPU can run the kernels."""
    from fastkl.info import cuda_status

    status = cuda_status()
    if not status["available"] or status["simulator"]:
        raise NotImplementedError(f"no CUDA GPU ({status['reason'] or 'simulator'})")
    from numba import cuda

    return cuda


def _call(name, p, q, form, **kw):
    fn = getattr(fastkl, name)
    if name == "entropy":
        return fn(p, p_form=form, **kw)
    return fn(p, q, p_form=form, q_form=form, **kw)


class CudaRowwise:
    """A row-wise function on device-resident rows (result into a device ``out``)."""

    params = (FUNCTIONS, ["probs", "logits"], list(GPU_SHAPES), ["float16", "float32", "float64"])
    param_names = ["function", "form", "shape", "dtype"]
    timeout = 300

    def setup(self, function, form, shape, dtype):
        self.cuda = _cuda()
        n, k = GPU_SHAPES[shape]
        self.p = self.cuda.to_device(rows_in_form((n, k), "float32", form, seed=1).astype(dtype))
        self.q = self.cuda.to_device(rows_in_form((n, k), "float32", form, seed=2).astype(dtype))
        out = np.float64 if dtype == "float64" else np.float32
        self.out = self.cuda.device_array(self.p.shape[0], out)
        self.time_rowwise(function, form, shape, dtype)  # compile

    def time_rowwise(self, function, form, shape, dtype):
        _call(function, self.p, self.q, form, out=self.out)
        self.cuda.synchronize()  # launches are asynchronous


class CudaCopy:
    """The roofline: a device-to-device copy of the bytes CudaRowwise reads (both inputs), by
    fastkl's vectorized copy kernel and by numba's memcpy (``fastkl bench --device cuda``'s
    baselines)."""

    params = (list(GPU_SHAPES), ["fastkl kernel", "numba memcpy"])
    param_names = ["shape", "copy"]

    def setup(self, shape, copy):
        from fastkl import _cuda_bench

        self.cuda = _cuda()
        n, k = GPU_SHAPES[shape]
        self.p = self.cuda.to_device(rows_in_form((n, k), "float32", "probs", seed=1))
        self.q = self.cuda.to_device(rows_in_form((n, k), "float32", "probs", seed=2))
        self.dst = self.cuda.device_array_like(self.p)
        self.copy = _cuda_bench._copies(self.p, self.q, self.dst, self.cuda)[copy]
        self.time_copy(shape, copy)  # compile

    def time_copy(self, shape, copy):
        self.copy()
        self.cuda.synchronize()


class CudaStreamed:
    """numpy inputs through the GPU in chunks (pinned staging, two streams), numpy result."""

    params = (["kl_div", "js_div"],)
    param_names = ["function"]
    timeout = 300

    def setup(self, function):
        _cuda()
        self.p = rows_in_form((1_000_000, 128), "float32", "probs", seed=1)
        self.q = rows_in_form((1_000_000, 128), "float32", "probs", seed=2)
        self.out = np.empty(len(self.p), np.float32)
        _call(function, self.p[:4], self.q[:4], "probs", device="cuda")

    def time_streamed(self, function):
        _call(function, self.p, self.q, "probs", out=self.out, device="cuda")
