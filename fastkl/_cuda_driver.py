"""The CUDA backend: row-wise calls on an NVIDIA GPU (``device="cuda"``, or inputs that
expose ``__cuda_array_interface__``), behind ``_driver``'s backend interface.

It shares the parsing, shapes, checks and reductions of every backend (``_prepare``) and
differs only in how rows reach a kernel:

* **Device inputs** (numba device arrays, CuPy arrays, PyTorch CUDA tensors) are read in
  place. Their shape and strides go through the same ``prepare`` as numpy inputs, on a numpy
  stand-in of the same layout (no data), and each operand becomes a device view of
  ``(rows, k)`` with any strides: a broadcast reference row is one row read by every group,
  never expanded. The rows stay on the device (a numba device array, or ``out=`` any CUDA
  array); a reduction sums them on the device in fixed blocks and returns a numpy scalar.
* **Host inputs** are streamed: row chunks are copied (on every core) into pinned staging
  buffers, sent on two CUDA streams in turn (one chunk's copies overlap the other's kernel),
  scored, and the rows copied back, so inputs larger than the GPU's memory work. The shared
  ``finish`` owns the result (``out=``, the reductions), as for the CPU's kernels.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import cuda, njit, prange
from numpy.lib.stride_tricks import as_strided

from . import _config, _cuda, _cuda_train, _dlpack, _numba_shim, _prepare, _train
from ._config import JIT_OPTIONS
from ._math import PROBS
from ._prepare import Call

_STAGE = dict(JIT_OPTIONS, parallel=True, cache=_config.CACHE)

#: Bytes of one operand's chunk when streaming host inputs (two chunks in flight per operand).
STREAM_BYTES = 1 << 25

_OUT_OF_MEMORY = 2  # CUresult CUDA_ERROR_OUT_OF_MEMORY


def _is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the driver's out-of-memory error (numba-cuda raises CudaAPIError
    with the CUresult as ``code``, an int or an enum member, after freeing what it could)."""
    try:
        if int(getattr(exc, "code", -1)) == _OUT_OF_MEMORY:
            return True
    except (TypeError, ValueError):
        pass
    return "OUT_OF_MEMORY" in str(exc).upper()


def _memory_error(what: str, nbytes: int) -> MemoryError:
    return MemoryError(
        f"device='cuda': the GPU is out of memory for {what} ({nbytes / 2**20:.1f} MiB); "
        "free GPU memory, score fewer rows per call, or use device='cpu'"
    )


def _alloc(what: str, nbytes: int, make: Callable[[], Any]) -> Any:
    """``make()``, with the driver's out-of-memory error turned into a MemoryError that says
    what did not fit."""
    try:
        return make()
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise _memory_error(what, nbytes) from exc
        raise


def _device_empty(shape: Any, dtype: Any, what: str) -> Any:
    nbytes = math.prod(np.atleast_1d(shape)) * np.dtype(dtype).itemsize
    return _alloc(what, int(nbytes), lambda: cuda.device_array(shape, dtype))


_gpu_ready = False


def require_gpu() -> None:
    """Raise RuntimeError, saying why, unless kernels can run (a GPU, or the simulator)."""
    global _gpu_ready
    if _gpu_ready or _cuda.SIMULATOR:
        return
    from .info import cuda_compatibility, cuda_status

    problem = cuda_compatibility()
    if problem is not None:
        raise RuntimeError(f"device='cuda': {problem}")
    status = cuda_status()
    _gpu_ready = bool(status["available"])
    if not _gpu_ready:
        raise RuntimeError(
            f"device='cuda': no usable CUDA GPU ({status['reason']}); fastkl's CUDA backend "
            "needs an NVIDIA GPU and `pip install 'fastkl[cuda]'`"
        )


# --- device operands --------------------------------------------------------------------------


class _DeviceOperand:
    """A CUDA array and a numpy stand-in with its layout: the stand-in goes through the
    driver's shape logic, and views of it map back to views of the device memory.

    Device memory is read through ``__cuda_array_interface__`` where the object offers one,
    else through DLPack (bfloat16 torch tensors, JAX arrays): in place either way. A bfloat16
    operand's stand-in has ml_dtypes' bfloat16 (for the driver's checks) and its device views
    hold the bits as uint16, which the kernels decode."""

    def __init__(self, x: Any, name: str) -> None:
        self.name = name
        self.source = x
        self.owner: Any = None  # what keeps imported DLPack memory alive
        if not _prepare.is_cuda_array(x):  # a host operand beside device ones: uploaded once
            host = np.ascontiguousarray(_prepare.as_float_array(x, name))
            as_bits = _dlpack.is_bfloat16(host.dtype) and not _cuda.SIMULATOR
            bits = host.view(np.uint16) if as_bits else host
            x = _alloc(f"{name} (a host array sent to the GPU)", host.nbytes,
                       lambda: cuda.to_device(bits))  # fmt: skip
            self.owner = x
            if bits is not host:
                self._from_interface(x, x.__cuda_array_interface__, host.dtype)
                return
        self.array = x
        sim = _numba_shim.simulator_array_type()
        if sim is not None and isinstance(x, sim):
            self.stand_in = x._ary  # the simulator's device memory is a numpy array
            self.interface = None
            return
        try:
            cai = x.__cuda_array_interface__
        except Exception as exc:  # torch: "Can't get __cuda_array_interface__ on Variable that
            # requires grad"; a bfloat16 tensor has none either: DLPack then
            if not hasattr(x, "__dlpack__"):
                raise TypeError(
                    f"{name}: could not read its __cuda_array_interface__ ({exc}); a torch "
                    "tensor that requires grad needs .detach()"
                ) from None
            cai = None
        if _cuda.SIMULATOR:
            raise TypeError(
                f"{name}: the CUDA simulator reads its own device arrays only (cuda.to_device), "
                f"not {type(x).__name__}"
            )
        if cai is None:
            self._from_dlpack(x)
        else:
            self._from_interface(x, cai, getattr(x, "dtype", None))

    def _from_dlpack(self, x: Any) -> None:
        tensor = _dlpack.import_tensor(x, self.name)
        if tensor.device_type != _dlpack.CUDA:
            raise ValueError(f"{self.name}: a DLPack tensor on device type {tensor.device_type}, "
                             "not a CUDA GPU")  # fmt: skip
        self.owner = tensor
        self._from_interface(tensor, tensor.cuda_interface(), tensor.dtype)

    def _from_interface(self, x: Any, cai: dict[str, Any], dtype: Any) -> None:
        self.array = x
        typed = dtype if isinstance(dtype, np.dtype) and _dlpack.is_bfloat16(dtype) else None
        dtype = typed if typed is not None else np.dtype(cai["typestr"])
        shape = tuple(cai["shape"])
        strides = cai.get("strides")
        if strides is None:  # C-contiguous
            strides = tuple(int(s) * dtype.itemsize for s in _c_strides(shape))
        if any(s < 0 for s in strides):
            raise ValueError(f"{self.name}: negative strides are not supported on the GPU")
        self.interface = cai
        # Never read or written: only the layout (and whether it is writable) matters.
        writeable = not cai["data"][1]
        self.stand_in = as_strided(np.zeros(1, dtype), shape, strides, writeable=writeable)

    @property
    def bf16(self) -> bool:
        return _dlpack.is_bfloat16(self.stand_in.dtype)

    def view(self, layout: np.ndarray) -> Any:
        """The device array with ``layout``'s shape and strides (a view of the stand-in);
        bfloat16 as its bits."""
        if _cuda.SIMULATOR:
            fake = _numba_shim.simulator_array_type()
            return fake(layout)  # the stand-in is the memory itself
        cai = self.interface
        offset = (
            layout.__array_interface__["data"][0] - self.stand_in.__array_interface__["data"][0]
        )
        desc = {
            "shape": layout.shape,
            "strides": layout.strides,
            "typestr": "<u2" if self.bf16 else layout.dtype.str,
            "data": (cai["data"][0] + offset, cai["data"][1]),
            "version": 3,
        }
        if cai.get("stream") is not None:
            desc["stream"] = cai["stream"]  # numba waits on the producer's stream
        owner = self.owner if self.owner is not None else self.array
        return cuda.from_cuda_array_interface(desc, owner=owner, sync=True)

    def span(self) -> tuple[int, int]:
        """[first byte, last byte + 1) of the memory this array can touch (for overlaps)."""
        a = self.stand_in
        lo = a.__array_interface__["data"][0]
        extent = sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True)) if a.size else 0
        base = self.interface["data"][0] if self.interface is not None else lo
        return base, base + extent + a.itemsize


def _device_index(op: _DeviceOperand) -> int | None:
    """The CUDA device an operand lives on, where its library says (a DLPack tensor, a torch
    tensor, a CuPy array); None where it does not (numba's arrays: the current device)."""
    tensor = op.owner if isinstance(op.owner, _dlpack.Tensor) else None
    if tensor is not None:
        return int(tensor.device_id)
    device = getattr(op.source, "device", None)
    for attr in ("index", "id"):  # torch.device.index, cupy.cuda.Device.id
        value = getattr(device, attr, None)
        if isinstance(value, int):
            return value
    return None


def _check_devices(operands: Sequence[_DeviceOperand]) -> None:
    """A ValueError naming the first operand on another GPU than the current one (the kernels
    run there, and a copy between GPUs would be a silent copy of a whole input)."""
    if _cuda.SIMULATOR:
        return
    current = cuda.get_current_device().id
    for op in operands:
        index = _device_index(op)
        if index is not None and index != current:
            raise ValueError(
                f"{op.name}: on CUDA device {index}, but fastkl runs on the current device "
                f"{current}; move it, or select its device first (numba.cuda.select_device, "
                "torch.cuda.device)"
            )


def _c_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return strides[::-1]


def _rows_layout(view: np.ndarray, full: tuple[int, ...], name: str) -> tuple[np.ndarray, int]:
    """A stand-in view broadcast to ``full`` as (rows, k) and its row step: (1, k) and 0 for
    one row repeated, else (n, k) and 1."""
    b = view if view.shape == full else np.broadcast_to(view, full)
    batch, k = full[:-1], full[-1]
    n = math.prod(batch)
    inner = b.strides[-1] if k > 1 else b.itemsize
    row_stride = _prepare.collapsed_stride(batch, b.strides[:-1])
    if row_stride is None:
        raise ValueError(
            f"{name}: on the GPU the dimensions other than the distribution axis must collapse "
            f"to one stride (got shape {b.shape}, strides {b.strides}); pass a contiguous array"
        )
    if row_stride == 0 or n <= 1:
        return as_strided(b, (1, k), (k * inner, inner), writeable=False), 0
    return as_strided(b, (n, k), (row_stride, inner), writeable=False), 1


# --- launching --------------------------------------------------------------------------------


def _address(a: Any) -> int:
    """A device array's address (the simulator's: its numpy memory's)."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    return int(a._ary.__array_interface__["data"][0])


def vector_width(rows: Sequence[tuple[Any, int]], k: int) -> int:
    """Elements per vector load for these operands (device rows (n, k) and their row steps):
    16 bytes of the widest dtype where every operand allows it (contiguous along the row, each
    row's start aligned to the vector's bytes), else 1."""
    width = _cuda.VECTOR_BYTES // max(a.dtype.itemsize for a, _ in rows)
    if k < width:
        return 1
    for a, step in rows:
        vector = width * a.dtype.itemsize
        if k > 1 and a.strides[1] != a.dtype.itemsize:
            return 1
        if _address(a) % vector:
            return 1
        if step and a.shape[0] > 1 and a.strides[0] % vector:
            return 1
    return width


def _launch(
    call: Call,
    p: Any,
    p_step: int,
    q: Any,
    q_step: int,
    out: Any,
    stream: Any = 0,
) -> None:
    """Score rows: out[i] = D(p[i * p_step] || q[i * q_step]) (device arrays). The fast
    kernel first, then the exact kernel over the rows it left non-finite (it skips the others);
    or the exact kernel alone for the calls the fast one does not take."""
    n, k = out.shape[0], p.shape[1]
    if n == 0:
        return
    terms, normalize, eps, divisor = call.spec.terms, call.normalize, call.eps, call.divisor
    p_form, q_form, post = call.p_form, call.q_form, call.spec.post_code
    log_p, log_q = p_form != PROBS, q_form != PROBS
    pl = _cuda.plan(terms, p_form, q_form, normalize, eps)
    flags = _flags(stream, n)
    if pl.mode != "exact":
        width = vector_width([(p, p_step), (q, q_step)] if pl.has_q else [(p, p_step)], k)
        single = p.dtype.itemsize < 8 and q.dtype.itemsize < 8
        fast, group, block = _cuda.fast_kernel(
            terms, p_form, q_form, normalize, eps > 0.0, single, k, width
        )
        grid = min(-(-n // (block // group)), _cuda.max_blocks(block))
        flags[:1].copy_to_device(_ZERO, stream=stream)
        fast[grid, block, stream](p, p_step, q, q_step, k, eps, divisor, post, out, flags)
    kernel, group, block = _cuda.rows_kernel(terms, log_p, log_q, k, redo=pl.mode != "exact")
    grid = min(-(-n // (block // group)), _cuda.max_blocks(block))
    kernel[grid, block, stream](
        p, p_step, q, q_step, k, p_form, q_form, normalize, eps, divisor, post, out, flags,
    )  # fmt: skip


#: Rows of one launch the fast kernel lists for the exact kernel at most; with more flagged,
#: the exact kernel checks every row's value instead.
FLAGGED_ROWS = 1 << 14
_ZERO = np.zeros(1, np.int64)
_scratch = threading.local()


def _flags(stream: Any, n: int) -> Any:
    """This thread's count and list of flagged rows for ``stream`` (see ``_cuda``), room for
    min(n, FLAGGED_ROWS) rows; kept for the next launch."""
    cache = _scratch.__dict__.setdefault("flags", {})
    key = id(stream) if stream else 0
    size = min(n, FLAGGED_ROWS) + 1
    flags = cache.get(key)
    if flags is None or flags.shape[0] < size:
        flags = _device_empty(size, np.int64, "the list of flagged rows")
        cache[key] = flags
    return flags


def _caller_result(rows: Any, inputs: Sequence[Any]) -> Any:
    """Device rows in the library of the first device input: a torch tensor, a CuPy array, a
    JAX array (all without a copy), else the numba device array."""
    for x in inputs:
        if not _prepare.is_cuda_array(x):
            continue
        library = type(x).__module__.split(".")[0]
        if library == "torch":
            import torch

            return torch.as_tensor(rows, device=x.device)
        if library == "cupy":
            import cupy

            return cupy.asarray(rows)
        if library in ("jax", "jaxlib"):
            import jax.dlpack

            device = (_dlpack.CUDA, cuda.get_current_device().id)
            return jax.dlpack.from_dlpack(_dlpack.export(rows, device))
        return rows
    return rows


def _device_sum(values: Any) -> float:
    """The sum of device row values: fixed blocks of SUM_ROWS summed on the device, the block
    sums added exactly on the host (the same total on every run)."""
    n = values.shape[0]
    if n == 0:
        return 0.0
    blocks = -(-n // _cuda.SUM_ROWS)
    sums = _device_empty(blocks, np.float64, "the block sums of a reduction")
    _cuda.block_sums_kernel()[blocks, _cuda.THREADS](values, sums)
    return _prepare.exact_sum(sums.copy_to_host().tolist())


def _validate_device(
    rows: Any, step: int, batch: tuple[int, ...], name: str, form: int, normalize: bool,
    compute: np.dtype, measures: bool, bf16: bool = False, mask: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The driver's row checks on device rows, copied to the host a bounded block at a time
    (``mask``: the rows ``where`` keeps, flat over ``batch``)."""
    count, k = math.prod(batch), rows.shape[1]
    if not step:  # a repeated row is checked once, if any row keeps it
        count = min(count, 1) if mask is None or mask.any() else 0
        mask = None
    block = _prepare.block_rows(k, rows.dtype)
    staging = _device_empty((min(block, count), k), rows.dtype, f"validating {name}")
    for start in range(0, count, block):
        m = min(block, count - start)
        grid = min(m, _cuda.max_blocks())
        _cuda.gather_kernel()[grid, _cuda.THREADS](rows, step, start, staging[:m])
        host = staging[:m].copy_to_host()
        if bf16:
            host = host.view(_dlpack.bfloat16())

        def label(i: int, start: int = start) -> Any:
            index = np.unravel_index(start + i, batch) if batch else ()
            return int(index[0]) if len(batch) == 1 else tuple(int(j) for j in index)

        part = None if mask is None else mask[start : start + m]
        _prepare.validate_rows(
            host, name, form, normalize, compute, measures, label=label, mask=part
        )


def on_device(call: Call, arrays: Sequence[Any]) -> Any:
    """The whole call for inputs (or ``out``) that live on a GPU, read in place (the
    backend interface of ``_driver``); host inputs beside them are uploaded once."""
    names, forms, reduction, out = call.names, call.forms, call.reduction, call.out
    operands = [_DeviceOperand(x, name) for x, name in zip(arrays, names, strict=True)]
    target = _DeviceOperand(out, "out") if _prepare.is_cuda_array(out) else None
    _check_devices(operands if target is None else [*operands, target])
    prep = _prepare.prepare([op.stand_in for op in operands], names, call.axis)
    chosen = _prepare.selection(call, prep.batch)
    full = (*prep.batch, prep.k)
    n = math.prod(prep.batch)
    rows = []
    for op, view, form in zip(operands, prep.views, forms, strict=True):
        layout, step = _rows_layout(view, full, op.name)
        dev = op.view(layout)
        if call.validate:
            _validate_device(
                dev,
                step,
                prep.batch,
                op.name,
                form,
                call.normalize,
                prep.compute,
                call.measures,
                op.bf16 and not _cuda.SIMULATOR,
                chosen.mask,
            )
        rows.append((dev, step))
    if len(rows) == 1:  # entropy reads p only
        rows.append(rows[0])
    (p, ps), (q, qs) = rows

    if reduction != "none":
        if out is not None:
            raise ValueError("out: only supported with reduction='none'")
        values = _device_empty(n, np.float64, "the row values of a reduction")
        _launch(call, p, ps, q, qs, values)
        if not chosen.everything:  # the row values (8 bytes a row) reduced on the host
            return prep.result.type(chosen.reduce(values.copy_to_host(), reduction))
        total = _device_sum(values)
        if reduction == "mean":
            total = total / n if n else math.nan
        return prep.result.type(total)

    if out is None:
        flat = _device_empty(n, prep.result, "the result")
        _launch(call, p, ps, q, qs, flat)
        _zero_left_out(flat, chosen)
        if not prep.batch:  # one distribution: a numpy scalar, as on the CPU
            return flat.copy_to_host()[0]
        return _caller_result(flat.reshape(prep.batch), arrays)
    if not _prepare.is_cuda_array(out):
        # host out: the rows come back into it (the CPU driver checks it)
        _prepare.check_out(out, prep.batch, prep.result, arrays, widen=True)
        flat = _device_empty(n, out.dtype, "the rows for out")
        _launch(call, p, ps, q, qs, flat)
        _zero_left_out(flat, chosen)
        out[...] = flat.copy_to_host().reshape(prep.batch)
        return out
    assert target is not None  # out is a CUDA array here
    rows_out = _device_out_rows(target, prep, operands)
    if rows_out is not None:
        _launch(call, p, ps, q, qs, rows_out)
        _zero_left_out(rows_out, chosen)
    return out


def _device_out_rows(
    target: _DeviceOperand, prep: _prepare.Prepared, others: Sequence[_DeviceOperand]
) -> Any:
    """A device ``out``, checked, as one device row value per row (None for no rows): shape,
    dtype and read-only as for a numpy out (the stand-in has out's layout and flags); overlap
    with ``others`` by the device addresses, which the stand-ins do not share."""
    stand_in = target.stand_in
    _prepare.check_out(stand_in, prep.batch, prep.result, (), widen=True)
    lo, hi = target.span()
    for op in others:
        a, b = op.span()
        if a < hi and lo < b:
            raise ValueError("out: overlaps an input; pass a separate array")
    n = math.prod(prep.batch)
    if not n:
        return None
    batch_stride = _prepare.collapsed_stride(prep.batch, stand_in.strides)
    if batch_stride is None:
        raise ValueError(
            f"out: on the GPU it must collapse to one stride (got strides "
            f"{stand_in.strides}); pass a contiguous array"
        )
    return target.view(as_strided(stand_in, (n,), (batch_stride,)))


def _zero_left_out(values: Any, chosen: _prepare.Selection) -> None:
    """Zero the device rows ``where`` leaves out (the mask, one byte a row, uploaded)."""
    if chosen.mask is None or values.shape[0] == 0:
        return
    keep = cuda.to_device(np.ascontiguousarray(chosen.mask))
    grid = min(-(-values.shape[0] // _cuda.THREADS), _cuda.max_blocks())
    _cuda.zero_left_out_kernel()[grid, _cuda.THREADS](values, keep)


# --- streaming host inputs --------------------------------------------------------------------


#: Elements of one task of a contiguous staging copy (256 KiB of float32).
STAGE_BLOCK = 1 << 16


@njit(**_STAGE)
def _stage_rows(src, ld, k, dst):
    """dst[r] = src[r * ld : r * ld + k]: host rows into pinned staging on every core (one
    thread's memcpy is slower than a PCIe link, and would be the pipeline's bottleneck).
    Slice assignments, which LLVM turns into memcpy: an element loop copied 2 to 7 times
    slower. Contiguous rows (ld == k) are one run, copied in blocks of STAGE_BLOCK."""
    m = dst.shape[0]
    if ld == k:
        flat = dst.reshape(m * k)
        total = m * k
        for b in prange((total + STAGE_BLOCK - 1) // STAGE_BLOCK):
            start = b * STAGE_BLOCK
            stop = min(start + STAGE_BLOCK, total)
            flat[start:stop] = src[start:stop]
        return
    for r in prange(m):
        dst[r, :] = src[r * ld : r * ld + k]


class _Slot:
    """One stream's staging: pinned host buffers, device buffers, and the chunk in flight."""

    def __init__(self, nbuf: int, rows: int, k: int, dtype: np.dtype, out_dtype: np.dtype) -> None:
        self.stream = cuda.stream()
        self.pinned = [cuda.pinned_array((rows, k), dtype) for _ in range(nbuf)]
        self.device = [cuda.device_array((rows, k), dtype) for _ in range(nbuf)]
        self.out_pinned = cuda.pinned_array(rows, out_dtype)
        self.out_device = cuda.device_array(rows, out_dtype)
        self.pending: tuple[np.ndarray, int, int] | None = None

    def deliver(self) -> None:
        """Wait for the chunk in flight and hand its rows over."""
        if self.pending is not None:
            target, start, stop = self.pending
            self.stream.synchronize()
            target[start:stop] = self.out_pinned[: stop - start]
            self.pending = None


_pool: list[list[_Slot]] = []  # idle staging, kept for the next call (pinning memory is slow)
_pool_lock = threading.Lock()
POOL_SIZE = 2  # staging sets kept at most


def _take_slots(nbuf: int, rows: int, k: int, dtype: np.dtype, out_dtype: np.dtype) -> list[_Slot]:
    """Two slots that fit (from the pool, or new): each call streams on its own slots."""
    with _pool_lock:
        for i, slots in enumerate(_pool):
            s = slots[0]
            if (
                len(s.pinned) == nbuf
                and s.pinned[0].shape[0] >= rows
                and s.pinned[0].shape[1] == k
                and s.pinned[0].dtype == dtype
                and s.out_pinned.dtype == out_dtype
            ):
                return _pool.pop(i)
    return [_Slot(nbuf, rows, k, dtype, out_dtype) for _ in range(2)]


def _give_back(slots: list[_Slot]) -> None:
    with _pool_lock:
        _pool.insert(0, slots)
        del _pool[POOL_SIZE:]


class _Streamer:
    """A ``kernel_call`` for ``_prepare.finish``: the rows it is given, through the GPU in
    chunks on two streams (see the module docstring)."""

    def __init__(self, call: Call, dtype: np.dtype) -> None:
        self.call = call
        self.dtype = dtype

    def __call__(self, bufs: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        m_all = target.shape[0]
        item = self.dtype.itemsize
        chunk = max(1, min(m_all, STREAM_BYTES // (k * item)))
        streamed = [i for i, (_, ld) in enumerate(bufs) if ld != 0]
        while True:
            # A GPU without room for the staging gets half the rows per chunk, down to one
            # row; the pooled staging of earlier calls is freed first.
            try:
                slots = _take_slots(max(1, len(streamed)), chunk, k, self.dtype, target.dtype)
                break
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                with _pool_lock:
                    _pool.clear()
                if chunk == 1:
                    need = 2 * (max(1, len(streamed)) * k * item + target.dtype.itemsize)
                    raise _memory_error("the staging of one row per stream", need) from exc
                chunk = max(1, chunk // 2)
        # a repeated row (ld == 0) is sent once
        fixed = {
            i: _alloc(
                "a repeated row",
                k * item,
                lambda buf=buf: cuda.to_device(np.ascontiguousarray(buf[:k]).reshape(1, k)),
            )
            for i, (buf, ld) in enumerate(bufs)
            if ld == 0
        }
        try:
            for c, start in enumerate(range(0, m_all, chunk)):
                slot = slots[c % 2]
                slot.deliver()  # its previous chunk is done before its buffers are reused
                stop = min(start + chunk, m_all)
                m = stop - start
                args = []
                for i, (buf, ld) in enumerate(bufs):
                    if ld == 0:
                        args.append((fixed[i], 0))
                        continue
                    b = streamed.index(i)
                    _stage_rows(buf[start * ld :], ld, k, slot.pinned[b][:m])
                    dev = slot.device[b][:m]
                    dev.copy_to_device(slot.pinned[b][:m], stream=slot.stream)
                    args.append((dev, 1))
                if len(args) == 1:
                    args.append(args[0])
                (p, ps), (q, qs) = args
                out = slot.out_device[:m]
                _launch(self.call, p, ps, q, qs, out, slot.stream)
                out.copy_to_host(slot.out_pinned[:m], stream=slot.stream)
                slot.pending = (target, start, stop)
        finally:
            for slot in slots:  # no copy may land in a buffer after an error either
                slot.deliver()
        _give_back(slots)  # only after a clean run


# --- the call ---------------------------------------------------------------------------------


def kernel_call(call: Call, compute: np.dtype) -> Callable[..., None]:
    """Score host rows through the GPU (the backend interface of ``_driver``): chunks
    staged into pinned buffers, on two streams."""
    return _Streamer(call, compute)


def train_on_device(call: Call, arrays: Sequence[Any], on_cpu: Any) -> Any:
    """A training call (a gradient, a temperature or a skew) with ``device="cuda"`` or GPU
    arrays, by the CUDA training kernels (``_cuda_train``): device inputs read in place, host
    inputs uploaded once, the value and the gradients (device arrays of each input's shape and
    dtype, or ``grad_out``) in one launch; results come back to the host for host inputs.

    A gradient is written row by row on the device, so the side it is taken of must hold its
    own rows there (float32 or float64, not broadcast, its distribution axis last and
    contiguous); for any other layout the call runs on the host (``on_cpu``), with a warning.
    """
    names, forms = call.names, call.forms
    operands = [_DeviceOperand(x, name) for x, name in zip(arrays, names, strict=True)]
    target = _DeviceOperand(call.out, "out") if _prepare.is_cuda_array(call.out) else None
    _check_devices(operands if target is None else [*operands, target])
    prep = _prepare.prepare([op.stand_in for op in operands], names, call.axis)
    full = (*prep.batch, prep.k)
    n, k = math.prod(prep.batch), prep.k
    sides = call.sides
    given = call.grad_outs()
    own_rows = all(
        prep.views[i].shape == full
        and prep.ax == len(full) - 1
        and operands[i].stand_in.flags.c_contiguous
        and operands[i].stand_in.dtype in (np.float32, np.float64)
        for i in sides
    )
    on_gpu = any(_prepare.is_cuda_array(x) for x in arrays)
    if call.grad_out is not None:
        on_device = [_prepare.is_cuda_array(g) for g in given]
        if any(on_device) != all(on_device) or any(on_device) != on_gpu:
            raise TypeError(
                "grad_out: expected GPU arrays for GPU inputs, numpy arrays for numpy inputs "
                "(not a mix)"
            )
    if not own_rows or (call.grad_out is not None and not on_gpu):
        return _train_via_host(call, arrays, on_cpu)
    chosen = _prepare.selection(call, prep.batch)
    rows = []
    for op, view, form in zip(operands, prep.views, forms, strict=True):
        layout, step = _rows_layout(view, full, op.name)
        dev = op.view(layout)
        if call.validate:
            bits = op.bf16 and not _cuda.SIMULATOR
            _validate_device(dev, step, prep.batch, op.name, form, call.normalize, prep.compute,
                             call.measures, bits, chosen.mask)  # fmt: skip
        rows.append((dev, step))
    if len(rows) == 1:  # entropy reads p only
        rows.append(rows[0])
    (p, ps), (q, qs) = rows
    grads = _device_grads(call, operands, sides, given, prep, n, k, target)
    factors = cuda.to_device(np.ascontiguousarray(_train.row_factors(chosen, call.reduction, n)))
    dummy = _device_empty((1, 1), np.float64, "a placeholder")
    gp = grads.get(0, (dummy, None))[0]
    gq = grads.get(1, (dummy, None))[0]
    if call.reduction != "none":
        if call.out is not None:
            raise ValueError("out: only supported with reduction='none'")
        values = _device_empty(n, np.float64, "the row values of a reduction")
    elif target is not None:
        values = _device_out_rows(target, prep, operands)
    else:
        values = _device_empty(n, prep.result, "the result")
    if n:
        mode_p = _cuda_train.side_mode(call.p_form, call.normalize, call.inv_t)
        mode_q = _cuda_train.side_mode(call.q_form, call.normalize, call.inv_t)
        kernel, group, block = _cuda_train.train_kernel(
            call.spec.terms, mode_p, mode_q, call.eps > 0.0, k
        )
        grid = min(-(-n // (block // group)), _cuda.max_blocks(block))
        kernel[grid, block](p, ps, q, qs, k, call.normalize, call.eps, call.inv_t, call.beta,
                            call.divisor, call.spec.post_code, call.which, gp, gq, factors,
                            0 if factors.shape[0] == 1 else 1, values)  # fmt: skip
    results: list[Any] = []
    if call.reduction != "none":
        results.append(prep.result.type(chosen.reduce(values.copy_to_host(), call.reduction)))
    else:
        if values is not None:
            _zero_left_out(values, chosen)
        if target is not None:
            results.append(call.out)
        elif not prep.batch:
            results.append(values.copy_to_host()[0])
        elif on_gpu:
            results.append(_caller_result(values.reshape(prep.batch), arrays))
        else:
            results.append(values.copy_to_host().reshape(prep.batch))
    for i in sides:
        dev, caller = grads[i]
        if caller is not None:
            results.append(caller)
        elif on_gpu and _prepare.is_cuda_array(arrays[i]):
            results.append(_caller_result(dev.reshape(operands[i].stand_in.shape), arrays))
        else:
            results.append(dev.copy_to_host().reshape(operands[i].stand_in.shape))
    return tuple(results) if sides else results[0]


def _device_grads(
    call: Call,
    operands: list[_DeviceOperand],
    sides: list[int],
    given: list[Any],
    prep: _prepare.Prepared,
    n: int,
    k: int,
    target: _DeviceOperand | None,
) -> dict[int, tuple[Any, Any]]:
    """side -> (its gradient as device rows (n, k), the caller's grad_out or None), each
    ``grad_out`` checked: shape, dtype, writable, C-contiguous, and overlapping nothing but
    its own input (which it may be)."""
    out: dict[int, tuple[Any, Any]] = {}
    outs = []
    if call.grad_out is not None:
        outs = [
            _DeviceOperand(g, f"grad_out ({call.names[i]})")
            for g, i in zip(given, sides, strict=True)
        ]
    for slot, i in enumerate(sides):
        op = operands[i]
        name = call.names[i]
        if call.grad_out is None:
            dev = _device_empty((n, k), op.stand_in.dtype, f"the gradient of {name}")
            out[i] = (dev, None)
            continue
        g = outs[slot]
        label = g.name
        if g.stand_in.shape != op.stand_in.shape:
            raise ValueError(f"{label}: expected {name}'s shape {op.stand_in.shape}, got "
                             f"{g.stand_in.shape}")  # fmt: skip
        if g.stand_in.dtype != op.stand_in.dtype:
            raise ValueError(f"{label}: expected {name}'s dtype {op.stand_in.dtype}, got "
                             f"{g.stand_in.dtype}")  # fmt: skip
        if not g.stand_in.flags.c_contiguous:
            raise ValueError(f"{label}: on the GPU it must be C-contiguous")
        if not g.stand_in.flags.writeable:
            raise ValueError(f"{label}: the array is read-only")
        lo, hi = g.span()
        others = [(j == i, other) for j, other in enumerate(operands)]
        others += [(False, h) for other_slot, h in enumerate(outs) if other_slot != slot]
        others += [(False, target)] if target is not None else []
        for own, other in others:
            a, b = other.span()
            itself = own and (a, b) == (lo, hi)
            if a < hi and lo < b and not itself:
                raise ValueError(f"{label}: overlaps {other.name} (only {name} itself may be "
                                 "overwritten by its gradient)")  # fmt: skip
        out[i] = (g.view(g.stand_in.reshape(n, k)), given[slot])
    return out


def _train_via_host(call: Call, arrays: Sequence[Any], on_cpu: Any) -> Any:
    """A training call whose gradient cannot be written on the device: the inputs are copied
    to the host, computed by the CPU's training kernels, and the results copied back to the
    GPU where the inputs lived, in the caller's library (once per process, a UserWarning says
    so)."""
    _warn_host_training()
    on_gpu = any(_prepare.is_cuda_array(x) for x in arrays)
    if any(_prepare.is_cuda_array(g) for g in call.grad_outs()):
        raise TypeError(
            "grad_out: a GPU array needs each input's own rows on the GPU (float32 or float64, "
            "not broadcast, the distribution axis last and contiguous)"
        )
    target = _DeviceOperand(call.out, "out") if _prepare.is_cuda_array(call.out) else None
    if target is not None and call.reduction != "none":
        raise ValueError("out: only supported with reduction='none'")
    host = [
        _copy_to_host(x, name) if _prepare.is_cuda_array(x) else x
        for x, name in zip(arrays, call.names, strict=True)
    ]
    if target is not None:
        call.out = None  # computed on the host, then copied into the device out
    result = on_cpu(call, host)
    parts = list(result) if isinstance(result, tuple) else [result]
    value = parts[0]
    if target is not None:
        if not target.stand_in.flags.c_contiguous:
            raise ValueError("out: on the GPU it must be C-contiguous for this call")
        value = np.asarray(value)
        _prepare.check_out(target.stand_in, value.shape, value.dtype, (), widen=True)
        host_out = np.ascontiguousarray(value, dtype=target.stand_in.dtype)
        if target.interface is None:  # the simulator's device memory is a numpy array
            target.stand_in[...] = host_out
        else:
            device_out = cuda.from_cuda_array_interface(target.interface, owner=target.source)
            device_out.copy_to_device(host_out)
        parts[0] = target.source
    elif on_gpu and isinstance(value, np.ndarray):
        parts[0] = _caller_result(cuda.to_device(value), arrays)
    if on_gpu and call.grad_out is None:
        parts[1:] = [_caller_result(cuda.to_device(g), arrays) for g in parts[1:]]
    return tuple(parts) if isinstance(result, tuple) else parts[0]


def _copy_to_host(x: Any, name: str) -> np.ndarray:
    op = _DeviceOperand(x, name)
    if op.interface is None:  # the simulator's device memory is a numpy array
        return np.array(op.stand_in)
    return cuda.from_cuda_array_interface(op.interface, owner=op.owner or x).copy_to_host()


_warned_host_training = False


def _warn_host_training() -> None:
    global _warned_host_training
    if not _warned_host_training:
        _warned_host_training = True
        warnings.warn(
            "fastkl: this gradient is computed by the CPU's kernels (GPU arrays copied to the "
            "host and back): on the GPU a side's gradient needs its own rows there (float32 "
            "or float64, not broadcast, the distribution axis last and contiguous)",
            UserWarning,
            stacklevel=4,
        )
