"""The dispatcher: a public call, parsed and prepared once, handed to a backend.

Every row-wise function comes here with its spec (:mod:`fastkl.divergences`) and its keyword
arguments. The driver parses them (``_prepare.parse_call``), picks the backend (the CPU, or
CUDA where an input lives on a GPU or ``device="cuda"``), prepares the operands (layout,
broadcast, validation, ``out``) and runs the backend's kernel over them, then reduces.

A backend is a module with two functions:

* ``kernel_call(call, compute)``: a function ``(rows, k, target)`` that scores host rows
  (each operand a 1-D buffer and its row stride) into ``target``;
* ``on_device(call, arrays)`` (CUDA only): the whole call for operands that live on a GPU,
  which the host cannot read.

Backends are imported on a call's first use (importing fastkl never imports numba.cuda), and
they import ``_prepare``, never this module: there is no import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from . import _prepare, _train
from .divergences import Divergence

#: device -> the module of its backend
BACKENDS = {"cpu": "fastkl._backend_cpu", "cuda": "fastkl._cuda_driver"}


def backend(device: str) -> ModuleType:
    """The backend module of ``device`` ("cpu" or "cuda"), imported on first use; a
    RuntimeError when that backend cannot load (numba-cuda missing)."""
    module = _LOADED.get(device)
    if module is not None:
        return module
    try:
        module = _LOADED[device] = importlib.import_module(BACKENDS[device])
    except ImportError as exc:
        raise RuntimeError(f"device={device!r}: {exc}") from None
    return module


_LOADED: dict[str, ModuleType] = {}


def rowwise(spec: Divergence, arrays: Sequence[Any], options: dict[str, Any]) -> Any:
    """The common path of every row-wise function (see the module docstring)."""
    call = _prepare.parse_call(spec, options)
    device = _prepare.choose_device(call.device, arrays, call.names, call.out)
    chosen = backend(device)
    if device == "cuda":
        chosen.require_gpu()
        if call.training:
            return chosen.train_on_device(call, arrays, _training_on_cpu)
        if any(_prepare.is_cuda_array(x) for x in (*arrays, call.out)):
            return chosen.on_device(call, arrays)
    if call.training:
        return _training_on_cpu(call, arrays)
    prep = _prepare.prepare(arrays, call.names, call.axis)
    rows = _prepare.selection(call, prep.batch)
    _prepare.validate_call(call, prep, rows)
    kernel_call = chosen.kernel_call(call, prep.compute)
    return _prepare.finish(
        prep, _prepare.operands(prep), kernel_call, call.reduction, call.out, arrays, rows
    )


def _training_on_cpu(call: _prepare.Call, arrays: Sequence[Any]) -> Any:
    """A training call on host arrays, on the CPU (also the CUDA backend's stand-in for the
    sides it cannot hold on the device)."""
    prep = _prepare.prepare(arrays, call.names, call.axis)
    return _train.run(call, prep, _prepare.selection(call, prep.batch), backend("cpu").train_call)


def closed_form(
    name: str,
    arrays: Sequence[Any],
    names: Sequence[str],
    axis: Any,
    reduction: Any,
    divisor: float = 1.0,
) -> Any:
    """A closed form's terms summed along ``axis`` (elementwise for None), on the CPU.

    The parameters broadcast fully, the summed axis included (a scalar target activation
    against a layer's activations), as views. Integer parameters (a mean of 0, a standard
    deviation of 1) are read as float64.
    """
    reduction = _prepare.parse_reduction(reduction)
    converted = []
    for x, arg in zip(arrays, names, strict=True):
        a = _prepare.as_array(x, arg)
        converted.append(a.astype(np.float64) if a.dtype.kind in "iu" else a)
    try:
        converted = np.broadcast_arrays(*converted)
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, converted, strict=True))
        raise ValueError(f"{', '.join(names)}: the shapes do not broadcast ({shapes})") from None
    if axis is None:
        converted = [a[..., np.newaxis] for a in converted]
    prep = _prepare.prepare(converted, names, -1 if axis is None else axis)
    kernel_call: Callable[..., None] = backend("cpu").closed_call(name, divisor)
    return _prepare.finish(prep, _prepare.operands(prep), kernel_call, reduction, None, arrays)
