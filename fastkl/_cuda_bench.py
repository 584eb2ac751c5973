"""``fastkl bench --device cuda``: the GPU cases, timed against copies of the same bytes.

Each case is timed in turn with its baselines inside one run (CUDA events; medians of
``repeat`` runs), so the ratios compare like with like on whatever GPU this is:

* device-resident inputs: fastkl's kernel against a device-to-device copy of both inputs (the
  memory roofline: a copy reads and writes each byte, fastkl reads each once), and against
  ``torch.nn.functional.kl_div`` on the same tensors when torch has CUDA;
* host inputs streamed through the GPU (``device="cuda"`` on numpy arrays) against a pinned
  host-to-device copy of the same bytes (the PCIe roofline).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import fastkl


@dataclass(frozen=True)
class GpuCase:
    name: str
    n: int
    k: int
    form: str  # both sides: "probs" or "logits"
    resident: bool = True  # False: numpy inputs streamed through the GPU


GPU_CASES = [
    GpuCase("probs f32 10,000,000 x 128", 10_000_000, 128, "probs"),
    GpuCase("logits f32 10,000,000 x 128", 10_000_000, 128, "logits"),
    GpuCase("logits f32 2,048 x 131,072", 2_048, 131_072, "logits"),
    GpuCase("host probs f32 4,000,000 x 128", 4_000_000, 128, "probs", resident=False),
]
TARGETS = {"probs": 0.85, "logits": 0.70}  # share of the copy's bandwidth (the targets)


def _rows(rng: np.random.Generator, n: int, k: int, form: str) -> np.ndarray:
    x = rng.standard_normal((n, k), dtype=np.float32)
    if form == "logits":
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _data(case: GpuCase, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 inputs, built in slabs (a 10,000,000-row case is 5 GB a side)."""
    n = max(1, int(case.n * scale))
    rng = np.random.default_rng(0)
    p = np.empty((n, case.k), np.float32)
    q = np.empty((n, case.k), np.float32)
    slab = max(1, (1 << 26) // case.k)
    for s in range(0, n, slab):
        e = min(s + slab, n)
        p[s:e] = _rows(rng, e - s, case.k, case.form)
        q[s:e] = _rows(rng, e - s, case.k, case.form)
    return p, q


def _timer(cuda: Any) -> Callable[[Callable[[], object]], float]:
    def seconds(fn: Callable[[], object]) -> float:
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3  # milliseconds

    return seconds


def _medians(fns: dict[str, Callable[[], object]], repeat: int, timer: Any) -> dict[str, float]:
    """Each function timed in turn, ``repeat`` rounds after a warm-up round; the medians."""
    for fn in fns.values():
        timer(fn)  # compile, allocate, warm the caches
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(timer(fn))
    return {name: float(np.median(t)) for name, t in times.items()}


def _torch_kl(form: str) -> tuple[Any, Callable[..., Any]] | None:
    """torch and its KL of the rows, when torch can run on this GPU."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None

    def kl(p: Any, q: Any) -> Any:
        if form == "logits":
            lp, lq = F.log_softmax(p, dim=1), F.log_softmax(q, dim=1)
            return F.kl_div(lq, lp, reduction="none", log_target=True).sum(1)
        return F.kl_div(q.log(), p, reduction="none").sum(1)  # what a torch user writes

    return torch, kl


def _streamed(case: GpuCase, p: np.ndarray, q: np.ndarray, repeat: int, timer: Any) -> dict:
    """numpy inputs through the GPU against pinned host-to-device copies of the same bytes."""
    from numba import cuda

    forms = {"p_form": case.form, "q_form": case.form}
    out = np.empty(p.shape[0], np.float32)
    pinned = cuda.pinned_array(p.shape, p.dtype)
    pinned[...] = p
    scratch = cuda.device_array(p.shape, p.dtype)
    fns = {
        "fastkl": lambda: fastkl.kl_div(p, q, out=out, device="cuda", **forms),
        "h2d": lambda: (scratch.copy_to_device(pinned), scratch.copy_to_device(pinned)),
    }
    t = _medians(fns, repeat, timer)
    nbytes = p.nbytes + q.nbytes
    return {
        "fastkl_s": t["fastkl"],
        "h2d_copy_s": t["h2d"],
        "gb_per_s": nbytes / t["fastkl"] / 1e9,
        "h2d_gb_per_s": nbytes / t["h2d"] / 1e9,
        "ratio_to_h2d": t["h2d"] / t["fastkl"],
    }


def _resident(case: GpuCase, dp: Any, dq: Any, repeat: int, timer: Any, peers: bool) -> dict:
    """Device arrays against device-to-device copies of the same bytes, and torch."""
    from numba import cuda

    forms = {"p_form": case.form, "q_form": case.form}
    n, k = dp.shape
    out = cuda.device_array(n, np.float32)
    copy = cuda.device_array((n, k), np.float32)
    fns = {
        "fastkl": lambda: fastkl.kl_div(dp, dq, out=out, **forms),
        "copy": lambda: (copy.copy_to_device(dp), copy.copy_to_device(dq)),
    }
    r: dict[str, Any] = {}
    torch_kl = _torch_kl(case.form) if peers else None
    if torch_kl is not None:
        torch, kl = torch_kl
        tp, tq = torch.as_tensor(dp, device="cuda"), torch.as_tensor(dq, device="cuda")
        fns["torch"] = lambda: kl(tp, tq)
        got = torch.as_tensor(fastkl.kl_div(dp, dq, **forms), device="cuda")
        r["max_abs_diff_vs_torch"] = float((got - kl(tp, tq)).abs().max())
    t = _medians(fns, repeat, timer)
    nbytes = 2 * n * k * 4
    r.update(fastkl_s=t["fastkl"], copy_s=t["copy"])
    r["gb_per_s"] = nbytes / t["fastkl"] / 1e9
    r["copy_gb_per_s"] = nbytes / t["copy"] / 1e9  # bytes copied per second (each read once)
    r["ratio_to_copy"] = t["copy"] / t["fastkl"]
    r["target"] = TARGETS[case.form]
    if "torch" in t:
        r["torch_s"] = t["torch"]
        r["speedup_over_torch"] = t["torch"] / t["fastkl"]
    return r


def run_gpu_case(case: GpuCase, repeat: int, scale: float, peers: bool) -> dict:
    from numba import cuda

    timer = _timer(cuda)
    p, q = _data(case, scale)
    r: dict[str, Any] = {"case": case.name, "rows": p.shape[0], "k": case.k}
    r["bytes"] = p.nbytes + q.nbytes
    if not case.resident:
        r.update(_streamed(case, p, q, repeat, timer))
    else:
        dp, dq = cuda.to_device(p), cuda.to_device(q)
        p = q = np.empty(0)  # the host copies are not needed any more (5 GB a side at full size)
        r.update(_resident(case, dp, dq, repeat, timer, peers))
    return r


def _line(r: dict) -> str:
    head = f"{r['case']:34s} fastkl {r['fastkl_s'] * 1e3:8.2f} ms ({r['gb_per_s']:6.1f} GB/s)"
    if "h2d_copy_s" in r:
        return (
            f"{head}  pinned H2D copy {r['h2d_gb_per_s']:6.1f} GB/s  "
            f"ratio {r['ratio_to_h2d']:5.2f}"
        )
    line = (
        f"{head}  D2D copy {r['copy_gb_per_s']:7.1f} GB/s  ratio {r['ratio_to_copy']:5.2f} "
        f"(target {r['target']:.2f})"
    )
    if "torch_s" in r:
        line += f"  torch {r['torch_s'] * 1e3:8.2f} ms ({r['speedup_over_torch']:5.1f}x)"
    return line


def main(repeat: int, scale: float, peers: bool, as_json: bool, only: str | None) -> int:
    from . import _cuda_driver
    from .info import cuda_status

    _cuda_driver.require_gpu()
    status = cuda_status()
    header = {
        "device": status["device"],
        "compute_capability": status["compute_capability"],
        "driver": status["driver_version"],
        "repeat": repeat,
        "scale": scale,
    }
    cases = [c for c in GPU_CASES if only is None or only.lower() in c.name.lower()]
    if not as_json:
        print(f"GPU: {header['device']} (compute capability {header['compute_capability']})")
        if status["simulator"]:
            print("(the CUDA simulator runs no GPU: these times mean nothing)")
    results = []
    for case in cases:
        results.append(run_gpu_case(case, repeat, scale, peers))
        if not as_json:
            print(_line(results[-1]))
    if as_json:
        print(json.dumps({"header": header, "gpu": results}, default=_finite))
    elif results:
        print(
            f"(GPU: medians of {repeat} runs, CUDA events; ratio = median D2D copy time of both "
            "inputs / fastkl's time on them (device-resident; 1.0 = reading at the copy's "
            "bandwidth), or pinned host-to-device copy time / fastkl's time on the same numpy "
            "inputs (streamed); torch = F.kl_div(...).sum(1) on the same tensors)"
        )
    return 0


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else str(x)
