"""The preparation every backend shares: everything between a public call and a kernel.

A public function names its divergence (a spec of :mod:`fastkl.divergences`) and its inputs;
``_driver`` dispatches it, and this module does the rest, once for every function and backend:

1. convert and check each input (floating dtype, at least 1-d) and each option;
2. move the distribution axis last and broadcast the other dimensions, as views;
3. present every operand to the kernel as rows ``x[i * ld : i * ld + k]`` of a 1-D buffer:
   directly when the memory already has that shape (contiguous, sliced rows, a broadcast row
   with ``ld == 0``), otherwise staged through a bounded buffer one block of rows at a time
   (Fortran order, a distribution axis that is not last, dtype conversion, broadcasts that do
   not collapse to one stride), so no input is ever copied whole;
4. validate rows when asked, run the kernel, and reduce.

Backends (``_backend_cpu``, ``_cuda_driver``) import this module; it imports no backend (the
CPU's row checks are loaded when a call validates), so there is no import cycle.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _config, _dlpack, _numba_shim
from ._math import LOG_PROBS, LOGITS, PROBS

if TYPE_CHECKING:
    from .divergences import Divergence

FORMS = {"probs": PROBS, "log_probs": LOG_PROBS, "logits": LOGITS}
REDUCTIONS = ("none", "sum", "mean")
DEVICES = ("cpu", "cuda")


# --- checking arguments ------------------------------------------------------------------


def _from_dlpack(x: Any, name: str) -> np.ndarray | None:
    """A host tensor of another library (torch, JAX) read in place through DLPack, or None
    where ``x`` offers no host DLPack export (numpy arrays keep their own path)."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return None
    if not hasattr(x, "__dlpack_device__"):
        return None
    device_type, _ = _dlpack.device_of(x, name)
    if device_type == _dlpack.CUDA:
        return None  # the CUDA driver's (is_cuda_array)
    if device_type not in _dlpack.HOST_DEVICES:
        raise TypeError(
            f"{name}: a DLPack tensor on device type {device_type}; fastkl reads host memory "
            "and NVIDIA GPUs (CUDA)"
        )
    return _dlpack.import_tensor(x, name).numpy()


def as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray (no copy of an array, nor of a host tensor that exports DLPack),
    or a ValueError naming the argument."""
    a = _from_dlpack(x, name)
    if a is not None:
        return a
    nullable = _nullable_float_dtype(x)
    if nullable is not None:
        return np.asarray(x.to_numpy(dtype=nullable, na_value=np.nan))
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged nested lists, objects whose __array__ fails
        raise ValueError(f"{name}: could not convert to an array: {exc}") from None


def _nullable_float_dtype(x: Any) -> np.dtype | None:
    """The float dtype of pandas' nullable float columns (``Float32``, ``Float64``, missing
    values ``pd.NA``), which numpy would read as objects; None for anything else. They are read
    as pandas' own ``x.to_numpy(float, na_value=np.nan)`` does, without an object copy."""
    if not hasattr(x, "to_numpy"):
        return None
    dtypes = getattr(x, "dtypes", None)
    dtypes = list(dtypes) if hasattr(dtypes, "__iter__") else [dtypes]  # a frame's columns
    numpy_dtypes = [getattr(d, "numpy_dtype", None) for d in dtypes]
    if not numpy_dtypes or not all(
        isinstance(d, np.dtype) and d.kind == "f" for d in numpy_dtypes
    ):
        return None
    return np.result_type(*numpy_dtypes)


def is_float_dtype(dtype: np.dtype) -> bool:
    """float16/32/64, or bfloat16 (``ml_dtypes``; computed in float32)."""
    return (dtype.kind == "f" and dtype.itemsize in (2, 4, 8)) or _dlpack.is_bfloat16(dtype)


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray of bfloat16 or float16/32/64 with at least one dimension, without
    copying arrays."""
    a = as_array(x, name)
    if not is_float_dtype(a.dtype):
        raise TypeError(
            f"{name}: expected floating-point values (bfloat16, float16, float32 or float64), "
            f"got dtype {a.dtype}"
        )
    if a.ndim == 0:
        raise ValueError(
            f"{name}: expected an array with a distribution axis, got a 0-d (scalar) array"
        )
    return a


def parse_form(form: Any, name: str) -> int:
    if not isinstance(form, str) or form not in FORMS:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, FORMS))}, got {form!r}")
    return FORMS[form]


def parse_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction: expected one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}"
        )
    return reduction


def parse_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _parse_real(value: Any, name: str, expected: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name}: expected {expected}, got {value!r}") from None


def parse_base(base: Any) -> float:
    """The divisor log(base) that converts nats to the requested unit (1.0 for nats)."""
    if base is None:
        return 1.0
    b = _parse_real(base, "base", "None or a real number > 0 and != 1")
    if not (math.isfinite(b) and b > 0.0 and b != 1.0):
        raise ValueError(f"base: expected a finite number > 0 and != 1, got {base!r}")
    return math.log(b)


def parse_eps(eps: Any) -> float:
    """eps as a float in (0, 1), or 0.0 for None (exact semantics)."""
    if eps is None:
        return 0.0
    e = _parse_real(eps, "eps", "None or a float in (0, 1)")
    if not 0.0 < e < 1.0:
        raise ValueError(f"eps: expected None or a float in (0, 1), got {eps!r}")
    return e


def parse_temperature(temperature: Any) -> float:
    """A temperature: a finite float > 0."""
    t = _parse_real(temperature, "temperature", "a finite float > 0")
    if not (math.isfinite(t) and t > 0.0 and math.isfinite(1.0 / t)):
        raise ValueError(f"temperature: expected a finite float > 0, got {temperature!r}")
    return t


def parse_beta(beta: Any) -> float:
    """A mixture's skew: a float in [0, 1]."""
    b = _parse_real(beta, "beta", "a float in [0, 1]")
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta: expected a float in [0, 1], got {beta!r}")
    return b


#: grad= -> the sides it asks for (bit 0 p, bit 1 q)
GRADS = {None: 0, "p": 1, "q": 2, "both": 3}


def parse_grad(grad: Any, names: Sequence[str]) -> int:
    """The sides ``grad`` asks for, as bits; a divergence of p only takes None or "p"."""
    allowed = [g for g in GRADS if g is None or len(names) == 2 or g == "p"]
    if not (grad is None or isinstance(grad, str)) or grad not in allowed:
        raise ValueError(f"grad: expected one of {', '.join(map(repr, allowed))}, got {grad!r}")
    return GRADS[grad]


def parse_device(device: Any) -> str | None:
    """'cpu', 'cuda', or None (where the inputs are)."""
    if device is None:
        return None
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device: expected None, 'cpu' or 'cuda', got {device!r}")
    return device


def is_cuda_array(x: Any) -> bool:
    """Whether ``x`` lives on a GPU: it exposes ``__cuda_array_interface__`` (numba device
    arrays, CuPy arrays, PyTorch CUDA tensors), a DLPack export on a CUDA device (torch
    bfloat16 tensors, JAX arrays), or it is a device array of numba's CUDA simulator (which
    has neither). Nothing is imported."""
    if isinstance(x, np.ndarray):
        return False
    try:
        if hasattr(x, "__cuda_array_interface__"):
            return True
    except Exception:  # on the GPU but not exportable (a torch tensor that requires grad, or
        return True  # of a dtype the interface lacks: bfloat16)
    sim = _numba_shim.simulator_array_type()
    if sim is not None and isinstance(x, sim):
        return True
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        try:
            return int(x.__dlpack_device__()[0]) == _dlpack.CUDA
        except Exception:
            return False
    return False


def choose_device(device: Any, arrays: Sequence[Any], names: Sequence[str], out: Any) -> str:
    """The device a call runs on: ``device``, or with None 'cuda' when an input or ``out`` is
    a CUDA array. A CUDA array is never copied to the host behind the caller's back."""
    dev = parse_device(device)
    candidates = zip((*arrays, out), (*names, "out"), strict=True)
    on_gpu = [name for x, name in candidates if is_cuda_array(x)]
    if dev is None:
        return "cuda" if on_gpu else "cpu"
    if dev == "cpu" and on_gpu:
        raise ValueError(
            f"device: {on_gpu[0]} is a CUDA array but device='cpu'; pass device='cuda' (or "
            "None), or copy it to the host first"
        )
    return dev


def parse_axis(axis: Any, ndim: int) -> int:
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis: expected an integer, got {axis!r}") from None
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis: {axis} is out of bounds for inputs with {ndim} dimension(s)")
    return ax % ndim


# --- rows of a stack of distributions ----------------------------------------------------


def collapsed_stride(shape: Sequence[int], strides: Sequence[int]) -> int | None:
    """The one stride s such that flat index i lies at byte offset i * s, or None.

    Size-1 dimensions are ignored; a broadcast (all strides 0) gives 0.
    """
    dims = [(n, s) for n, s in zip(shape, strides, strict=True) if n != 1]
    if not dims:
        return 0
    for (_, s_outer), (n_inner, s_inner) in itertools.pairwise(dims):
        if s_outer != s_inner * n_inner:
            return None
    return dims[-1][1]


def block_rows(k: int, dtype: np.dtype) -> int:
    """Rows of length k in one staged block (BLOCK_BYTES)."""
    return max(1, _config.BLOCK_BYTES // (k * dtype.itemsize))


class Rows:
    """``n`` distributions of length ``k`` (a view of shape ``batch + (k,)``), as kernel rows."""

    def __init__(self, view: np.ndarray, dtype: np.dtype) -> None:
        self.view = view
        self.batch = view.shape[:-1]
        self.k = view.shape[-1]
        self.n = math.prod(self.batch)
        self.dtype = dtype
        self._buffer: np.ndarray | None = None
        if view.flags.c_contiguous and view.flags.aligned and view.dtype == dtype and self.n > 0:
            # The common case, in a fraction of as_strided's time (which dominates small calls).
            flat = view.reshape(-1)
            flat.flags.writeable = False  # one numba type (read-only) for every operand
            self.flat, self.ld = flat, self.k
            self._rows2d = flat.reshape(self.n, self.k)
            return
        item = view.itemsize
        if (
            self.n > 0
            and view.dtype == dtype
            and view.flags.aligned
            and not any(view.strides[:-1])
            and (self.k == 1 or view.strides[-1] == item)
        ):
            # One row repeated (a broadcast reference row): read in place, ld == 0.
            row = view[(0,) * len(self.batch)]
            row.flags.writeable = False
            self.flat, self.ld, self._rows2d = row, 0, None
            return
        row_stride = collapsed_stride(self.batch, view.strides[:-1])
        inner = view.strides[-1] if self.k > 1 else item
        # (n, k) as a strided view when the batch collapses to one stride: slicing rows from it
        # is cheap; otherwise rows are gathered by index.
        self._rows2d = None
        if row_stride is not None and self.n > 0:
            self._rows2d = as_strided(view, (self.n, self.k), (row_stride, inner), writeable=False)
        self.flat: np.ndarray | None = None
        self.ld = 0
        if (
            self._rows2d is not None
            and view.dtype == dtype
            and inner == item
            and row_stride is not None
            and row_stride >= 0
            and row_stride % item == 0
            and view.flags.aligned
        ):
            self.ld = row_stride // item
            self.flat = as_strided(
                view, ((self.n - 1) * self.ld + self.k,), (item,), writeable=False
            )

    @property
    def direct(self) -> bool:
        return self.flat is not None

    def block_rows(self) -> int:
        return block_rows(self.k, self.dtype)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, int]:
        """Rows ``start:stop`` as (1-D buffer, ld): a view if direct, else a staged copy."""
        if self.flat is not None:
            if self.ld == 0:
                return self.flat, 0
            return self.flat[start * self.ld : (stop - 1) * self.ld + self.k], self.ld
        m = stop - start
        if self._buffer is None:
            self._buffer = np.empty((min(self.block_rows(), self.n), self.k), self.dtype)
        dest = self._buffer[:m]
        if self._rows2d is not None:
            np.copyto(dest, self._rows2d[start:stop])
        else:
            index = np.unravel_index(np.arange(start, stop), self.batch)
            np.copyto(dest, self.view[index])
        staged = dest.reshape(-1)
        staged.flags.writeable = False  # one numba type (read-only) for every operand
        return staged, self.k

    def row_index(self, i: int) -> int | tuple[int, ...]:
        """Row ``i`` in the operand's own batch coordinates, for error messages."""
        if len(self.batch) == 1:
            return i
        return tuple(int(j) for j in np.unravel_index(i, self.batch))


def run_blocks(
    operands: Sequence[Rows],
    n: int,
    body: Callable[[list[tuple[np.ndarray, int]], int, int], None],
) -> None:
    """Call ``body(rows, start, stop)`` once if every operand is direct, else per block."""
    if n == 0:
        return
    if all(op.direct for op in operands):
        body([op.rows(0, n) for op in operands], 0, n)
        return
    step = min(op.block_rows() for op in operands if not op.direct)
    for start in range(0, n, step):
        stop = min(start + step, n)
        body([op.rows(start, stop) for op in operands], start, stop)


# --- validation --------------------------------------------------------------------------


def _sum_tolerance(dtype: np.dtype, k: int) -> float:
    """How far a row's total may stray from 1: 1e-6, or sqrt(k) ulps of the input dtype."""
    return max(1e-6, math.sqrt(k) * float(np.finfo(dtype).eps))


def validate_rows(
    x: np.ndarray,
    name: str,
    form: int,
    normalize: bool,
    compute: np.dtype,
    measures: bool = False,
    label: Callable[[int], Any] | None = None,
    mask: np.ndarray | None = None,
) -> None:
    """Raise ValueError naming the first invalid row of ``x`` (distribution axis last).

    ``measures``: rows are nonnegative measures, whose totals are not checked. ``label``: the
    name of row ``i`` of ``x`` in the message, when ``x`` is a block of a larger batch (by
    default its own batch coordinates). ``mask``: the rows to check (flat over ``x``'s batch;
    the others, padding left out by ``where``, may hold anything).
    """
    rows = Rows(x, compute)
    if rows.n == 0:
        return
    from . import _cpu  # the row checks are CPU kernels, compiled for the calls that validate

    messages = {
        _cpu.ROW_NAN: "contains NaN",
        _cpu.ROW_NEGATIVE: "has a negative probability",
        _cpu.ROW_POS_INF: "contains +inf",
    }
    if measures and not normalize:
        sum_check = _cpu.SUM_UNCHECKED
    elif normalize:
        # probabilities must have positive mass; log forms are normalized whatever they sum to
        sum_check = _cpu.SUM_POSITIVE if form == PROBS else _cpu.SUM_UNCHECKED
    else:
        sum_check = _cpu.SUM_IS_ONE if form != LOGITS else _cpu.SUM_UNCHECKED
    tol = _sum_tolerance(x.dtype, rows.k)
    status = np.empty(rows.n, np.int8)

    def body(bufs: list[tuple[np.ndarray, int]], start: int, stop: int) -> None:
        (buf, ld) = bufs[0]
        with _config.kernel_guard():
            _cpu.check_rows(buf, ld, rows.k, form, sum_check, tol, status[start:stop])

    run_blocks([rows], rows.n, body)
    bad = np.flatnonzero(status if mask is None else status * mask)
    if bad.size == 0:
        return
    i = int(bad[0])
    code = int(status[i])
    where = f"{name}: row {rows.row_index(i) if label is None else label(i)}"
    if code in messages:
        raise ValueError(f"{where} {messages[code]}")
    row = rows._rows2d[i] if rows._rows2d is not None else x[np.unravel_index(i, rows.batch)]
    row = row.astype(np.float64)
    if form == PROBS:
        total = float(row.sum())
    else:
        total = float(np.exp(np.logaddexp.reduce(row)))
    if sum_check == _cpu.SUM_POSITIVE:
        raise ValueError(f"{where} sums to {total!r}: cannot normalize a row without mass")
    raise ValueError(
        f"{where} sums to {total!r}, not 1 (tolerance {tol:.3g}); "
        "pass normalize=True to divide each row by its sum"
    )


def validate_call(call: Call, prep: Prepared, chosen: Selection) -> None:
    """``validate=True``: check every input's rows that ``chosen`` keeps."""
    if not call.validate:
        return
    full = (*prep.batch, prep.k)
    for view, name, form in zip(prep.views, call.names, call.forms, strict=True):
        if chosen.mask is not None:  # rows left out (padding) may hold anything
            view = np.broadcast_to(view, full)
        validate_rows(
            view, name, form, call.normalize, prep.compute, call.measures, mask=chosen.mask
        )


# --- the call ----------------------------------------------------------------------------


@dataclass
class Prepared:
    """Inputs brought to a common shape: distribution axis last, batch dims broadcast."""

    views: list[np.ndarray]  # each: own batch dims (broadcastable) + (k,)
    batch: tuple[int, ...]
    k: int
    compute: np.dtype  # float32 or float64: what the kernel reads
    result: np.dtype  # dtype of the result
    inputs: list[np.ndarray] | None = None  # the arrays as given (converted, not copied)
    ax: int = -1  # the distribution axis after aligning every input to the same ndim

    def view_of(self, x: np.ndarray) -> np.ndarray:
        """``x`` (of an input's shape) as that input's view: aligned, axis last."""
        ndim = self.views[0].ndim
        x = x if x.ndim == ndim else x[(np.newaxis,) * (ndim - x.ndim)]
        return x if self.ax == ndim - 1 else np.moveaxis(x, self.ax, -1)


def prepare(arrays: Sequence[Any], names: Sequence[str], axis: Any) -> Prepared:
    arrs = inputs = [as_float_array(a, name) for a, name in zip(arrays, names, strict=True)]
    ndim = max(a.ndim for a in arrs)
    ax = parse_axis(axis, ndim)
    given = [a.shape for a in arrs]  # for messages: the shapes the caller passed
    # Align dimensions from the right as numpy does; the new leading dims are views.
    arrs = [a if a.ndim == ndim else a[(np.newaxis,) * (ndim - a.ndim)] for a in arrs]
    lengths = [a.shape[ax] for a in arrs]
    if len(set(lengths)) > 1:
        shapes = " and ".join(f"{name} {shape}" for name, shape in zip(names, given, strict=True))
        raise ValueError(
            f"{' and '.join(names)} must have the same length along axis {axis}: got {shapes}"
        )
    k = lengths[0]
    if k == 0:
        raise ValueError(
            f"{', '.join(names)}: zero-length distributions along axis {axis} (k == 0)"
        )
    views = [a if ax == ndim - 1 else np.moveaxis(a, ax, -1) for a in arrs]
    try:
        shapes = {v.shape[:-1] for v in views}
        batch = shapes.pop() if len(shapes) == 1 else np.broadcast_shapes(*shapes)
    except ValueError:
        shapes = ", ".join(f"{name} {v.shape[:-1]}" for name, v in zip(names, views, strict=True))
        raise ValueError(
            f"{', '.join(names)}: the dimensions other than axis {axis} do not broadcast "
            f"({shapes})"
        ) from None
    any64 = any(a.dtype.itemsize == 8 for a in arrs)
    dtype = np.dtype(np.float64 if any64 else np.float32)
    return Prepared(views, tuple(batch), k, dtype, dtype, inputs, ax)


def check_out(
    out: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    inputs: Sequence[Any],
    widen: bool = False,
) -> None:
    """Check a caller's ``out``. ``widen``: float64 is accepted for a float32 result too."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    if out.dtype != dtype and not (widen and out.dtype == np.float64):
        also = " (or float64)" if widen and dtype != np.float64 else ""
        raise ValueError(f"out: expected dtype {dtype}{also}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out: the array is read-only")
    for x in inputs:
        if isinstance(x, np.ndarray):
            try:
                overlaps = np.shares_memory(out, x, max_work=10**6)
            except np.exceptions.TooHardError:
                overlaps = True
            if overlaps:
                raise ValueError("out: overlaps an input; pass a separate array")


def exact_sum(parts: Sequence[float]) -> float:
    """The correctly rounded sum of block sums (whatever their order), or numpy's where that
    is undefined (inf - inf) or overflows."""
    try:
        return math.fsum(parts)
    except (ValueError, OverflowError):
        return float(np.sum(parts))


class RowSum:
    """The sum of float64 row values fed in chunks of any sizes: bitwise the same total for
    every chunking, so a reduction streamed over a file (``fastkl score``) equals the in-memory
    one.

    Rows are summed in aligned blocks of ``BLOCK`` (numpy's pairwise sum within a block, always
    over the same rows) and the block sums are added exactly (``math.fsum``), so the order in
    which blocks arrive does not matter either.
    """

    BLOCK = 4096

    def __init__(self) -> None:
        self.count = 0
        self._partials: list[float] = []
        self._tail = np.empty(self.BLOCK, np.float64)
        self._fill = 0

    def _blocks(self, values: np.ndarray) -> None:
        # Every full block goes through this one expression, whatever the chunking.
        self._partials.extend(values.reshape(-1, self.BLOCK).sum(axis=1).tolist())

    def add(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        self.count += values.size
        if self._fill:
            take = min(self.BLOCK - self._fill, values.size)
            self._tail[self._fill : self._fill + take] = values[:take]
            self._fill += take
            values = values[take:]
            if self._fill < self.BLOCK:
                return
            self._blocks(self._tail)
            self._fill = 0
        whole = values.size - values.size % self.BLOCK
        if whole:
            self._blocks(values[:whole])
        rest = values.size - whole
        self._tail[:rest] = values[whole:]
        self._fill = rest

    def sum(self) -> float:
        parts = self._partials + ([float(self._tail[: self._fill].sum())] if self._fill else [])
        return exact_sum(parts)

    def mean(self) -> float:
        """The mean (NaN for no rows)."""
        return self.sum() / self.count if self.count else math.nan


@dataclass(slots=True)
class Selection:
    """The rows a call keeps (``where``) and their weights (``weights``), flat over the batch;
    None for all rows, weighing 1."""

    mask: np.ndarray | None = None
    weights: np.ndarray | None = None

    @property
    def everything(self) -> bool:
        return self.mask is None and self.weights is None

    def zero_excluded(self, values: np.ndarray) -> None:
        """Set the rows ``where`` leaves out to 0, in place (``reduction="none"``)."""
        if self.mask is not None:
            values[~self.mask] = 0.0

    def reduce(self, values: np.ndarray, reduction: str) -> float:
        """The sum or mean of float64 row values: ``sum w_i d_i`` over the kept rows, and for
        the mean divided by ``sum w_i`` (the count of kept rows without weights); NaN where
        that is 0. A row left out, or of weight 0, adds nothing, even where it is inf or NaN.
        Sums go through :class:`RowSum`: the same total for any chunking."""
        total = RowSum()
        if self.everything:
            total.add(values)
            return total.mean() if reduction == "mean" else total.sum()
        w = self.row_weights(reduction)
        total.add(self.weigh(w, values))
        if reduction == "sum":
            return total.sum()
        mass = RowSum()
        mass.add(w)
        denominator = mass.sum()
        return total.sum() / denominator if denominator > 0.0 else math.nan

    def row_weights(self, reduction: str) -> np.ndarray:
        """Each row's weight in a reduction: its weight (1 without ``weights``), 0 where
        ``where`` leaves it out; for the mean scaled to at most 1, which does not change the
        mean and keeps the total from overflowing and the products from underflowing."""
        if self.weights is None:
            assert self.mask is not None
            return self.mask.astype(np.float64)
        w = self.weights if self.mask is None else np.where(self.mask, self.weights, 0.0)
        top = float(w.max()) if w.size else 0.0
        return w / top if reduction == "mean" and top > 0.0 else w

    @staticmethod
    def weigh(w: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``w * values``, and 0 where w is 0 (whatever the row holds: padding, inf, NaN)."""
        return np.multiply(w, values, out=np.zeros(values.shape), where=w > 0.0)


def selection(call: Call, batch: tuple[int, ...]) -> Selection:
    """``where`` and ``weights`` of a call, checked against the batch shape (the result's shape
    with ``reduction="none"``), before any kernel runs."""
    return parse_selection(call.where, call.weights, batch, call.reduction)


def parse_selection(
    where: Any, weights_: Any, batch: tuple[int, ...], reduction: str
) -> Selection:
    """:class:`Selection` of ``where`` and ``weights`` for rows of shape ``batch``, or a
    TypeError or ValueError naming the argument."""
    mask = weights = None
    if weights_ is not None and reduction == "none":
        raise ValueError(
            "weights: only with reduction='sum' or 'mean' (with 'none', multiply the rows)"
        )
    if where is not None:
        w = _row_values(where, "where")
        if w.dtype != np.bool_:
            raise TypeError(f"where: expected a boolean array, got dtype {w.dtype}")
        mask = _broadcast_rows(w, batch, "where")
    if weights_ is not None:
        w = _row_values(weights_, "weights")
        if w.dtype.kind not in "fiu" or w.dtype.itemsize > 8:
            raise TypeError(f"weights: expected real numbers, got dtype {w.dtype}")
        weights = np.asarray(_broadcast_rows(w, batch, "weights"), dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0.0)))
        if bad.size:
            i = int(bad[0])
            where = tuple(int(j) for j in np.unravel_index(i, batch)) if len(batch) > 1 else i
            raise ValueError(
                f"weights: expected finite values >= 0, got {float(weights[i])!r} at row {where}"
            )
    return Selection(mask, weights)


def _row_values(x: Any, name: str) -> np.ndarray:
    """A value per row (a mask, weights) as a host ndarray: numpy's conversion first, which
    takes host tensors of any dtype (a torch bool mask), then the inputs' own."""
    if is_cuda_array(x):
        raise TypeError(
            f"{name}: expected a host array (one value per row); copy a GPU array to the host "
            "first"
        )
    try:
        return np.asarray(x)
    except Exception:
        return as_array(x, name)


def _broadcast_rows(x: np.ndarray, batch: tuple[int, ...], name: str) -> np.ndarray:
    try:
        full = np.broadcast_to(x, batch)
    except ValueError:
        raise ValueError(
            f"{name}: shape {x.shape} does not broadcast to the batch shape {batch} (the "
            "result's shape with reduction='none')"
        ) from None
    return full.reshape(-1)  # a copy of one value per row at most


class RowValues:
    """Where a call's row values go, and the value the call returns from them.

    For a reduction, float64 rows (summed in a fixed order); else the result array, or
    ``out`` (checked: a float64 ``out`` for float32 inputs receives the rows' float64
    accumulations unrounded, what the reductions sum: ``fastkl score`` streams reductions
    through it), written in place where its layout allows.
    """

    def __init__(self, prep: Prepared, reduction: str, out: Any, inputs: Sequence[Any]) -> None:
        n = math.prod(prep.batch)
        self.prep, self.reduction, self.out = prep, reduction, out
        self.result: np.ndarray | None = None
        self.direct = True
        if reduction != "none":
            if out is not None:
                raise ValueError("out: only supported with reduction='none'")
            self.target = np.empty(n, np.float64)
            return
        if out is not None:
            check_out(out, prep.batch, prep.result, inputs, widen=True)
            self.result = out
        else:
            self.result = np.empty(prep.batch, prep.result)
        self.direct = self.result.flags.c_contiguous and self.result.flags.aligned
        self.target = self.result.reshape(-1) if self.direct else np.empty(n, self.result.dtype)

    def value(self, chosen: Selection) -> Any:
        """The call's value once every row is in ``target``: the reduction, or the rows (those
        ``where`` leaves out set to 0; a numpy scalar for a 0-d result)."""
        if self.result is None:
            return self.prep.result.type(chosen.reduce(self.target, self.reduction))
        chosen.zero_excluded(self.target)
        if not self.direct:
            self.result[...] = self.target.reshape(self.prep.batch)
        if self.out is None and self.result.ndim == 0:
            return self.result[()]
        return self.result


def finish(
    prep: Prepared,
    operands: Sequence[Rows],
    kernel_call: Callable[[list[tuple[np.ndarray, int]], int, np.ndarray], None],
    reduction: str,
    out: Any,
    inputs: Sequence[Any],
    chosen: Selection | None = None,
) -> Any:
    """Run ``kernel_call(rows, k, out_rows)`` over all rows and shape the result (``chosen``:
    the rows ``where`` keeps and their ``weights``)."""
    values = RowValues(prep, reduction, out, inputs)

    def body(bufs: list[tuple[np.ndarray, int]], start: int, stop: int) -> None:
        with _config.kernel_guard():
            kernel_call(bufs, prep.k, values.target[start:stop])

    run_blocks(operands, math.prod(prep.batch), body)
    return values.value(chosen if chosen is not None else Selection())


def operands(prep: Prepared) -> list[Rows]:
    """Each prepared input as kernel rows over the whole batch (broadcasts read in place)."""
    full = (*prep.batch, prep.k)
    return [
        Rows(v if v.shape == full else np.broadcast_to(v, full), prep.compute) for v in prep.views
    ]


# --- a parsed call ------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """A row-wise call with its options parsed: what a backend needs besides the rows (built
    once per call, on the small calls' critical path: slots, not frozen)."""

    spec: Divergence
    names: tuple[str, ...]  # ("p", "q"), or ("p",) for a divergence that reads p only
    forms: tuple[int, ...]  # each side's form code, in the order of ``names``
    eps: float  # 0.0: no clipping
    divisor: float  # log(base), 1.0 for nats (and for divergences without a base)
    normalize: bool
    validate: bool
    reduction: str
    axis: Any
    out: Any
    device: Any  # as given: None, "cpu" or "cuda"
    where: Any = None  # as given: checked against the batch shape by ``selection``
    weights: Any = None
    inv_t: float = 1.0  # 1 / temperature
    beta: float = 0.5  # the skew of a mixture (Jensen-Shannon's M)
    which: int = 0  # the gradients asked for: bit 0 p, bit 1 q
    grad_out: Any = None  # as given: checked against the inputs by ``_train``

    @property
    def sides(self) -> list[int]:
        """The inputs whose gradient is asked for (indices into ``names``)."""
        return [i for i in range(len(self.names)) if self.which & (1 << i)]

    def grad_outs(self) -> list[Any]:
        """``grad_out`` as one array per side asked for (a TypeError for grad='both' without
        a pair); empty without ``grad_out``."""
        given = self.grad_out
        if given is None:
            return []
        if len(self.sides) == 2:
            if not (isinstance(given, (tuple, list)) and len(given) == 2):
                raise TypeError(
                    "grad_out: expected a pair of arrays (grad_p, grad_q) for grad='both', got "
                    f"{type(given).__name__}"
                )
            return list(given)
        return [given]

    @property
    def training(self) -> bool:
        """Whether the call needs the training kernels (a gradient, a temperature or a skew)."""
        return self.which != 0 or self.inv_t != 1.0 or self.beta != 0.5

    @property
    def p_form(self) -> int:
        return self.forms[0]

    @property
    def q_form(self) -> int:
        """q's form (p's for a divergence that reads p only: both kernel operands are p)."""
        return self.forms[-1]

    @property
    def measures(self) -> bool:
        return self.spec.measures


def parse_call(spec: Divergence, options: dict[str, Any]) -> Call:
    """The options of a call to ``spec``'s public function (its keyword arguments), checked
    before anything is read; the arrays are checked by :func:`prepare`."""
    p_form = parse_form(options["p_form"], "p_form")
    reduction = parse_reduction(options["reduction"])
    if spec.reads_q:
        names, forms = ("p", "q"), (p_form, parse_form(options["q_form"], "q_form"))
    else:
        names, forms = ("p",), (p_form,)
    which = parse_grad(options.get("grad"), names)
    if options.get("grad_out") is not None and not which:
        raise ValueError("grad_out: only with grad='p', 'q' or 'both' (there is no gradient)")
    return Call(
        spec=spec,
        names=names,
        forms=forms,
        eps=parse_eps(options["eps"]),
        divisor=parse_base(options.get("base")),
        normalize=parse_bool(options["normalize"], "normalize"),
        validate=parse_bool(options["validate"], "validate"),
        reduction=reduction,
        axis=options["axis"],
        out=options["out"],
        device=options["device"],
        where=options.get("where"),
        weights=options.get("weights"),
        inv_t=1.0 / parse_temperature(options.get("temperature", 1.0)),
        beta=parse_beta(options.get("beta", 0.5)),
        which=which,
        grad_out=options.get("grad_out"),
    )
