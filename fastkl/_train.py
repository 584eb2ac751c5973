"""Host side of the training calls: a value with its gradient, a temperature or a skew.

``_driver`` sends here every call whose options need the training kernels
(``Call.training``). This module owns what is true of a gradient whatever the backend:

* its arrays: one per side asked for, of that input's shape and dtype as given (or the
  caller's ``grad_out``, checked here, the input itself allowed), written through the same
  view as the input (axis last, aligned), directly where the layout allows, else through a
  staging block per chunk of rows;
* a broadcast input's gradient: summed over the rows that share it, in float64, chunk by
  chunk in a fixed order;
* the rows' factors: the weight of each row in the reduction (1 for "sum" and "none", 1 / n
  for "mean", ``w_i / sum w`` with ``weights``, 0 for a row ``where`` leaves out).

The backend gives ``train_call(call, compute)``: a function ``(rows, grads, scale, k,
target)`` that scores host rows (each operand a 1-D buffer and its row stride) into
``target`` and writes the gradient rows (buffer and stride, None for a side not asked for)
times the rows' factors ``scale`` (a buffer and its stride: 0 for one factor for all).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _config, _prepare
from ._prepare import Call, Prepared, Selection

Buffer = tuple[np.ndarray, int]
TrainCall = Callable[[list[Buffer], list[Buffer | None], Buffer, int, np.ndarray], None]


def row_factors(chosen: Selection, reduction: str, n: int) -> np.ndarray:
    """Each row's factor in the gradient of the returned value: its weight in the reduction
    (a single value where all rows weigh the same)."""
    if chosen.everything:
        return np.array([1.0 / n if (reduction == "mean" and n) else 1.0])
    w = chosen.row_weights("sum" if reduction == "none" else reduction)
    if reduction == "mean":
        total = _prepare.exact_sum(w.tolist()) if w.size else 0.0
        return w / total if total > 0.0 else np.zeros_like(w)
    return np.ascontiguousarray(w, np.float64)


class GradRows:
    """The gradient of one input, written row block by row block through the input's view."""

    def __init__(self, prep: Prepared, target: np.ndarray) -> None:
        self.array = target  # what the caller receives
        self.k = prep.k
        full = (*prep.batch, prep.k)
        view = prep.view_of(target)
        self.broadcast = view.shape != full
        self.compute = prep.compute
        self._staged: np.ndarray | None = None
        self.flat: np.ndarray | None = None
        if not self.broadcast and view.flags.c_contiguous and view.dtype == prep.compute:
            self.flat = view.reshape(-1)  # rows written in place
            self.view = view
            return
        self.view = view
        if self.broadcast:
            # the sum over the rows that share an entry, in float64
            self._total = np.zeros(view.shape, np.float64)
            self._own = view.shape[:-1]

    @property
    def direct(self) -> bool:
        return self.flat is not None

    def rows(self, start: int, stop: int) -> Buffer:
        if self.flat is not None:
            return self.flat[start * self.k : stop * self.k], self.k
        if self._staged is None or self._staged.shape[0] < stop - start:
            self._staged = np.empty((stop - start, self.k), self.compute)
        return self._staged[: stop - start].reshape(-1), self.k

    def commit(self, start: int, stop: int, batch: tuple[int, ...]) -> None:
        """After the kernel: the staged rows start:stop into the gradient."""
        if self.flat is not None:
            return
        staged = self._staged[: stop - start]
        index = np.unravel_index(np.arange(start, stop), batch)
        if not self.broadcast:
            self.view[index] = staged
            return
        own = tuple(
            i if size > 1 else np.zeros_like(i) for i, size in zip(index, self._own, strict=True)
        )
        np.add.at(self._total, own, staged)

    def finish(self) -> np.ndarray:
        if self.broadcast:
            self.view[...] = self._total
        return self.array


def _gradient_targets(call: Call, prep: Prepared) -> list[np.ndarray]:
    """The arrays the gradients go to: the caller's ``grad_out``, checked, or new arrays of
    each input's shape and dtype."""
    assert prep.inputs is not None
    if call.grad_out is None:
        return [np.empty_like(prep.inputs[i], order="C") for i in call.sides]
    given = call.grad_outs()
    for slot, (i, g) in enumerate(zip(call.sides, given, strict=True)):
        name, x = call.names[i], prep.inputs[i]
        label = f"grad_out ({name})"
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{label}: expected a numpy array, got {type(g).__name__}")
        if g.shape != x.shape:
            raise ValueError(f"{label}: expected {name}'s shape {x.shape}, got {g.shape}")
        if g.dtype != x.dtype:
            raise ValueError(f"{label}: expected {name}'s dtype {x.dtype}, got {g.dtype}")
        if not g.flags.writeable:
            raise ValueError(f"{label}: the array is read-only")
        itself = _same_memory(g, x)
        if itself and prep.view_of(x).shape != (*prep.batch, prep.k):
            raise ValueError(f"{label}: {name} is broadcast; its gradient cannot overwrite it")
        others = [a for j, a in enumerate(prep.inputs) if not (j == i and itself)]
        others += [h for other, h in enumerate(given) if other != slot]  # (a, a) included
        if isinstance(call.out, np.ndarray):
            others.append(call.out)
        if any(np.may_share_memory(g, other) for other in others):
            raise ValueError(
                f"{label}: overlaps another input or output (only {name} itself may be "
                "overwritten by its gradient)"
            )
    return given


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b are the same array (the same memory, shape and strides)."""
    return a is b or (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
    )


def run(
    call: Call, prep: Prepared, chosen: Selection, train_call: Callable[..., TrainCall]
) -> Any:
    """A training call on host inputs: the value as the value path returns it, and the
    gradients asked for (``(value, grad)`` or ``(value, grad_p, grad_q)``)."""
    targets = _gradient_targets(call, prep) if call.which else []
    _prepare.validate_call(call, prep, chosen)
    n = math.prod(prep.batch)
    k = prep.k
    operands = _prepare.operands(prep)
    grads = [GradRows(prep, t) for t in targets]
    factors = row_factors(chosen, call.reduction, n)
    kernel = train_call(call, prep.compute)

    values = _prepare.RowValues(prep, call.reduction, call.out, prep.inputs or [])

    by_side: list[GradRows | None] = [None] * len(call.names)
    for i, g in zip(call.sides, grads, strict=True):
        by_side[i] = g
    everything_direct = all(op.direct for op in operands) and all(g.direct for g in grads)
    step = n if everything_direct else _prepare.block_rows(k, prep.compute)
    for start in range(0, n, max(step, 1)):
        stop = min(start + step, n)
        bufs = [op.rows(start, stop) for op in operands]
        gbufs = [g.rows(start, stop) if g is not None else None for g in by_side]
        scale = (factors, 0) if factors.size == 1 else (factors[start:stop], 1)
        with _config.kernel_guard():
            kernel(bufs, gbufs, scale, k, values.target[start:stop])
        for g in grads:
            g.commit(start, stop, prep.batch)
    out_grads = [g.finish() for g in grads]

    value = values.value(chosen)
    return (value, *out_grads) if out_grads else value
