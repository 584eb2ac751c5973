"""The row-wise functions over dask arrays: lazy, one block of whole rows per task.

The data path: a function here checks its arguments now (with the numpy API's own messages),
moves the distribution axis last, gives it a single chunk, and maps :func:`_score_block` over
the blocks; each task calls the numpy function of :mod:`fastkl.api` on its block (the same
driver and kernels, so ``reduction="none"`` gives the numpy values bitwise). ``"sum"`` and
``"mean"`` reduce the blocks' float64 row values with dask's own tree reduction.

:func:`from_npy` builds one lazy array from ``.npy`` shards; each block is read on the worker
that scores it, so the client reads only the files' headers.

Installed with the optional extra: ``pip install "fastkl[dask]"``. ``import fastkl`` does not
import this module (nor dask).
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import math
import operator
import os
from collections.abc import Callable, Sequence
from glob import glob
from typing import Any

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
    from dask.utils import parse_bytes
except ImportError as exc:
    raise ImportError(
        'fastkl.dask needs dask (with dask.array): pip install "fastkl[dask]"'
    ) from exc

from . import _prepare, api
from .divergences import REGISTRY

__all__ = sorted(["from_npy", *(spec.name for spec in REGISTRY)])

# --- the common path ---------------------------------------------------------------------------


def _score_block(
    *blocks: np.ndarray,
    fn: Callable[..., Any],
    options: dict[str, Any],
    out_dtype: np.dtype,
    masked: bool = False,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """One task: the rows of a block (distribution axis last) scored by the numpy function,
    with the distribution axis kept at length 1. ``masked``: the last block is ``where``'s
    (with a distribution axis of length 1)."""
    keep = None
    if masked:
        keep, blocks = blocks[-1][..., 0], blocks[:-1]
    # ``out`` keeps a 0-d block an array, and in float64 it receives the unrounded row values
    # that the reductions sum.
    out = np.empty(np.broadcast_shapes(*(b.shape[:-1] for b in blocks)), out_dtype)
    try:
        rows = fn(*blocks, **options, axis=-1, reduction="none", where=keep, out=out)
        return rows[..., np.newaxis]
    except ValueError as exc:  # only validate=True fails here: say which block
        if block_info is None:
            raise
        batch = block_info[None]["array-location"][:-1]
        where = ", ".join(f"{lo}:{hi}" for lo, hi in batch)
        raise ValueError(f"{exc} (row indices count within the block [{where}])") from exc


def _as_array(x: Any, name: str) -> Any:
    """A dask array as it is; anything else as a numpy array (chunked once the axis is known)."""
    if isinstance(x, da.Array):
        return x
    return _prepare.as_array(x, name)


def _shape_stand_in(x: Any) -> np.ndarray:
    """A zero-stride numpy array of ``x``'s shape and dtype, for the driver's shape checks.

    A dimension of unknown length (NaN: rows filtered by a condition) stands as 1, which
    broadcasts against anything; the blocks carry the real lengths.
    """
    shape = tuple(1 if math.isnan(d) else d for d in x.shape)
    return np.broadcast_to(np.empty((), x.dtype), shape)


def _rowwise(
    fn: Callable[..., Any], arrays: Sequence[Any], names: Sequence[str], options: dict[str, Any]
) -> da.Array:
    """The lazy version of ``fn(*arrays, **options)``: the work of every public function."""
    axis = options.pop("axis")
    where, weights = options.pop("where", None), options.pop("weights", None)
    # Every check runs now, with the numpy API's messages: the options through one call on an
    # empty batch (which runs no kernel), the dtypes and shapes through the driver itself.
    probe = np.empty((0, 1))
    fn(*[probe] * len(arrays), **options)
    arrays = [_as_array(x, name) for x, name in zip(arrays, names, strict=True)]
    prep = _prepare.prepare([_shape_stand_in(x) for x in arrays], names, axis)
    chosen = _selection(where, weights, arrays, prep.batch, options["reduction"])
    ndim = max(x.ndim for x in arrays)
    ax = _prepare.parse_axis(axis, ndim)

    blocks = []
    for x, name in zip(arrays, names, strict=True):
        x = x[(np.newaxis,) * (ndim - x.ndim)]  # align dimensions from the right, as numpy
        if math.isnan(x.shape[ax]):
            raise ValueError(
                f"{name}: unknown length along axis {axis}; call compute_chunk_sizes() first"
            )
        if isinstance(x, np.ndarray):
            # Rows in dask's default block size, the distribution axis whole; a random name,
            # where dask would hash the data (a pass over it, longer than the kernels').
            layout = tuple(-1 if d == ax else "auto" for d in range(ndim))
            x = da.asarray(x, chunks=layout, name=False)
        x = da.moveaxis(x, ax, -1)
        if x.numblocks[-1] > 1:
            # A block must hold whole distributions; the rows keep the caller's chunking.
            x = x.rechunk({ndim - 1: -1})
        blocks.append(x)
    # Common chunks along the batch dimensions; dimensions of length 1 broadcast, so one
    # reference row meets every block of rows as it is (the driver reads it in place).
    index = tuple(range(ndim))
    chunks, blocks = da.unify_chunks(*[a for x in blocks for a in (x, index)])

    reduction = options.pop("reduction")
    dtype = prep.result if reduction == "none" else np.dtype(np.float64)
    mask = None if chosen.mask is None else chosen.mask.reshape(prep.batch)
    if mask is not None:  # scored with the blocks: left-out rows are 0 and not validated
        layout = (*(chunks[i] for i in index[:-1]), (1,))
        keep = da.from_array(mask[..., np.newaxis], chunks=layout, name=False)
        blocks = [*blocks, keep]
    # The distribution axis stays (length 1, then indexed away): dropping it in map_blocks
    # would pass every block through np.concatenate, a copy of the inputs.
    rows = da.map_blocks(
        _score_block,
        *blocks,
        chunks=(*(chunks[i] for i in index[:-1]), (1,)),  # map_blocks would take p's, unbroadcast
        dtype=dtype,
        meta=np.empty((0,) * ndim, dtype),
        token=f"fastkl-{fn.__name__}",
        fn=fn,
        options=options,
        out_dtype=dtype,
        masked=mask is not None,
    )[..., 0]
    if chosen.everything:
        if reduction == "none":
            return rows
        total = rows.sum() if reduction == "sum" else rows.mean()
        return total.astype(prep.result)
    if reduction == "none":
        return rows
    w = chosen.row_weights(reduction).reshape(prep.batch)  # the numpy API's weights
    weigh = da.from_array(w, chunks=rows.chunks, name=False)
    meta = np.empty((0,) * rows.ndim, np.float64)
    total = da.map_blocks(chosen.weigh, weigh, rows, dtype=np.float64, meta=meta).sum()
    if reduction == "mean":
        mass = float(w.sum())  # known now: the weights (or the kept rows' count)
        total = total / mass if mass > 0.0 else da.full((), np.nan)
    return total.astype(prep.result)


def _selection(
    where: Any, weights: Any, arrays: Sequence[Any], batch: tuple[int, ...], reduction: Any
) -> _prepare.Selection:
    """``where`` and ``weights`` as numpy arrays over the batch, checked now."""
    for value, name in ((where, "where"), (weights, "weights")):
        if isinstance(value, da.Array):
            raise TypeError(
                f"{name}: expected a numpy array or array_like, got a dask array (mask or weigh "
                "the lazy rows with dask's own operations)"
            )
    if (where is not None or weights is not None) and any(
        math.isnan(d) for x in arrays for d in x.shape
    ):
        raise ValueError(
            "where, weights: the rows' chunk sizes are unknown; call compute_chunk_sizes() first"
        )
    return _prepare.parse_selection(where, weights, batch, _prepare.parse_reduction(reduction))


# --- the public functions: the numpy API's row-wise functions, lazy -----------------------------

_DOC = """\
{summary}

Lazy, over dask arrays: each block of whole rows is scored in its task by
:func:`fastkl.{name}` (the same kernels, so ``reduction="none"`` gives its values bitwise;
see it for the formula and the exact semantics).

Parameters
----------
{arrays} : dask.array.Array or array_like
    Distributions along ``axis``, chunked along the other (batch) dimensions. The
    distribution axis is rechunked to a single chunk when it has more (the row chunks are
    kept: a block holds whole rows, so choose them to fit a worker's memory). numpy arrays
    and array-likes are converted with :func:`dask.array.asarray`, whole along ``axis``.{broadcast}
{forms}, axis, base, eps, normalize
    As for :func:`fastkl.{name}`.
reduction : {{"none", "sum", "mean"}}
    "none": a lazy array of the batch shape. "sum", "mean": a lazy 0-d array; the float64 row
    values are reduced by dask's tree reduction (the last digits may differ from the numpy
    function's fixed-order sum), then cast to the result dtype. The mean of an empty batch is
    NaN.
validate : bool
    Check every block as it is scored: the ValueError comes from ``compute()``, its row index
    counting within the block it names.

Returns
-------
dask.array.Array
    float64 if either input is float64, else float32. Nothing is computed before
    ``compute()`` (or ``persist()``, ``dask.compute``), on whatever scheduler is active: a
    ``dask.distributed`` client runs the blocks on its workers.

Raises
------
TypeError, ValueError
    At the call, not at ``compute()``, with the numpy function's messages: a bad option,
    dtype, shape or axis (an ``out`` is not accepted: the result is a dask array).
    ``where`` and ``weights`` are numpy arrays (or array_likes), checked at the call.

Examples
--------
>>> import numpy as np
>>> import dask.array as da
>>> import fastkl.dask
>>> p = da.from_array(np.array([[0.1, 0.9], [0.5, 0.5], [1.0, 0.0]]), chunks=2)
{example}
"""

_BROADCAST = """
    The batch dimensions broadcast as in numpy: one reference row ``q`` of shape ``(k,)``
    meets every block of ``p`` and is read in place."""

_EXAMPLES = {
    "kl_div": """\
>>> d = fastkl.dask.kl_div(p, [0.4, 0.6])  # a graph: nothing is computed yet
>>> d.chunks
((2, 1),)
>>> d.compute()
array([0.22628916, 0.020411  , 0.91629073])
>>> round(float(fastkl.dask.kl_div(p, [0.4, 0.6], reduction="mean").compute()), 12)
0.387663630107""",
    "js_div": """\
>>> fastkl.dask.js_div(p, [0.4, 0.6]).compute()
array([0.06328782, 0.00505939, 0.27435847])""",
    "js_distance": """\
>>> fastkl.dask.js_distance(p, [0.4, 0.6]).compute()
array([0.25157071, 0.07112939, 0.52379239])""",
    "sym_kl": """\
>>> fastkl.dask.sym_kl(p, [0.4, 0.6]).compute()
array([0.53752784, 0.04054651,        inf])""",
    "cross_entropy": """\
>>> fastkl.dask.cross_entropy(p, np.log([0.4, 0.6]), q_form="log_probs").compute()
array([0.55137213, 0.71355818, 0.91629073])""",
    "generalized_kl": """\
>>> fastkl.dask.generalized_kl(2 * p, [0.8, 1.2]).compute()
array([0.45257832, 0.04082199, 1.83258146])""",
    "entropy": """\
>>> fastkl.dask.entropy(p, base=2).compute()
array([0.46899559, 1.        , 0.        ])""",
}


#: the example of a function without its own: the numpy function's values, bit for bit
_SAME_AS_NUMPY = """\
>>> lazy = fastkl.dask.{name}(p, [0.4, 0.6])
>>> bool(np.array_equal(lazy.compute(), fastkl.{name}(p.compute(), [0.4, 0.6])))
True"""


def _lazy(fn: Callable[..., Any]) -> Callable[..., da.Array]:
    """The lazy counterpart of a row-wise numpy function: its signature without ``out`` and
    the gradient's keywords (``grad``, ``grad_out``: values only, lazily)."""
    signature = inspect.signature(fn)
    params = signature.parameters.values()
    names = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    signature = signature.replace(
        parameters=[
            p.replace(annotation="ArrayLike | da.Array") if p.name in names else p
            for p in params
            if p.name not in ("out", "grad", "grad_out")
        ],
        return_annotation="da.Array",
    )

    def rowwise(*args: Any, **kwargs: Any) -> da.Array:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:  # name the function, as Python does for a plain call
            raise TypeError(f"{fn.__name__}() {exc}") from None
        bound.apply_defaults()
        options = dict(bound.arguments)
        return _rowwise(fn, [options.pop(name) for name in names], names, options)

    rowwise.__name__ = rowwise.__qualname__ = fn.__name__
    rowwise.__signature__ = signature  # type: ignore[attr-defined]
    rowwise.__annotations__ = {
        **{p.name: p.annotation for p in signature.parameters.values()},
        "return": signature.return_annotation,
    }
    rowwise.__doc__ = _DOC.format(
        summary=fn.__doc__.split("\n", 1)[0],
        name=fn.__name__,
        arrays=", ".join(names),
        forms=", ".join(f"{name}_form" for name in names),
        broadcast=_BROADCAST if len(names) == 2 else "",
        example=_EXAMPLES.get(fn.__name__, _SAME_AS_NUMPY.format(name=fn.__name__)),
    )
    return rowwise


# One lazy function per row-wise function of the registry.
globals().update({spec.name: _lazy(getattr(api, spec.name)) for spec in REGISTRY})


# --- .npy shards -------------------------------------------------------------------------------


class _NpyRows:
    """The rows of ``.npy`` files end to end, read on demand: what ``da.from_array`` slices,
    one block per task, on the worker that runs it. It holds only paths and row counts, so it
    travels to the workers in a few bytes."""

    def __init__(
        self,
        paths: list[str],
        counts: list[int],
        shape: tuple[int, ...],
        dtype: np.dtype,
        mmap: bool,
    ) -> None:
        self.paths = paths
        self.starts = [0, *itertools.accumulate(counts)]
        self.shape = shape
        self.ndim = len(shape)
        self.dtype = dtype
        self.mmap = mmap

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        # from_array asks for one chunk's slices (fancy=False), and no chunk spans two files:
        # the file that holds row ``start`` holds them all.
        start, stop, _ = index[0].indices(self.shape[0])
        i = min(bisect.bisect_right(self.starts, start), len(self.paths)) - 1
        rows = slice(start - self.starts[i], stop - self.starts[i])
        block = np.load(self.paths[i], mmap_mode="r")[(rows, *index[1:])]
        return block if self.mmap else np.array(block)


def _shard_paths(
    paths_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[str]:
    """The files, as absolute paths (the workers' working directory may differ)."""
    if isinstance(paths_or_glob, (str, os.PathLike)):
        pattern = os.fspath(paths_or_glob)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*.npy")
        if any(c in pattern for c in "*?["):
            paths = sorted(glob(pattern))
            if not paths:
                raise ValueError(f"from_npy: no files match {pattern!r}")
        else:
            paths = [pattern]
    else:
        paths = [os.fspath(p) for p in paths_or_glob]
        if not paths:
            raise ValueError("from_npy: no paths given")
    return [os.path.abspath(p) for p in paths]


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """A ``.npy`` file's shape and dtype, from its header alone (the data is mapped, not read)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as exc:
        raise ValueError(f"{path}: not a .npy array file ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: not a .npy array file (an .npz archive?)")
    if array.ndim < 2:
        raise ValueError(
            f"{path}: expected an array of rows (at least 2-d), got shape {array.shape}"
        )
    return array.shape, array.dtype


def _stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def from_npy(
    paths_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    chunk_rows: int | None = None,
    mmap: bool = True,
) -> da.Array:
    """One lazy dask array of the rows of one or many ``.npy`` files, end to end.

    The client reads only the files' headers. Each block is read by the task that uses it,
    from ``np.load(path, mmap_mode="r")[a:b]``, so the files must be visible to the workers
    under the same path (a shared filesystem); relative paths are made absolute here.

    Parameters
    ----------
    paths_or_glob : str, path, or sequence of them
        A glob pattern (``"shards/*.npy"``, matches sorted by name: pad the numbers,
        ``part-0007.npy``), a directory (its ``*.npy`` files, sorted), one file, or a
        sequence of files, taken in the order given. Every file holds an array of rows (at
        least 2-d); all share the shape of a row (``k``, the distribution length) and the
        dtype.
    chunk_rows : int, optional
        Rows per block. None: as many as fit dask's ``array.chunk-size`` (128 MiB by default).
        Blocks never span two files.
    mmap : bool
        True: a block is a read-only view of the file's memory map (no copy; pages are read
        as the kernels reach them). False: a block is copied into the worker's memory as it
        is read.

    Returns
    -------
    dask.array.Array
        Shape ``(total rows, *row shape)``, the files' dtype, one chunk along every dimension
        but the first.

    Raises
    ------
    ValueError
        No file matches, a file is missing or is not a ``.npy`` array, or a file's row shape
        or dtype differs from the first file's (each message names the file).
    TypeError
        ``chunk_rows`` that is not an integer.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import fastkl.dask
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     np.save(os.path.join(folder, f"part-{i:04d}.npy"), np.full((4, 2), 0.5))
    >>> p = fastkl.dask.from_npy(os.path.join(folder, "part-*.npy"), chunk_rows=3)
    >>> p.shape, p.chunks[0]
    ((12, 2), (3, 1, 3, 1, 3, 1))
    >>> float(fastkl.dask.kl_div(p, [0.5, 0.5], reduction="sum").compute())
    0.0
    """
    if chunk_rows is not None:
        try:
            chunk_rows = operator.index(chunk_rows)
        except TypeError:
            raise TypeError(
                f"chunk_rows: expected None or a positive integer, got {chunk_rows!r}"
            ) from None
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows: expected a positive integer, got {chunk_rows}")
    mmap = _prepare.parse_bool(mmap, "mmap")
    paths = _shard_paths(paths_or_glob)
    headers = [_npy_header(path) for path in paths]
    first_shape, dtype = headers[0]
    row_shape = first_shape[1:]
    for path, (file_shape, file_dtype) in zip(paths, headers, strict=True):
        if file_shape[1:] != row_shape:
            raise ValueError(
                f"{path}: rows of shape {file_shape[1:]}, but {paths[0]} has rows of shape "
                f"{row_shape}: every file must have the same k"
            )
        if file_dtype != dtype:
            raise ValueError(
                f"{path}: dtype {file_dtype}, but {paths[0]} has dtype {dtype}: every file "
                "must have the same dtype"
            )
    counts = [shape[0] for shape, _ in headers]
    if chunk_rows is None:
        row_bytes = max(1, math.prod(row_shape) * dtype.itemsize)
        chunk_rows = max(1, parse_bytes(dask.config.get("array.chunk-size")) // row_bytes)
    row_chunks = [
        min(chunk_rows, count - start) for count in counts for start in range(0, count, chunk_rows)
    ]
    shape = (sum(counts), *row_shape)
    rows = _NpyRows(paths, counts, shape, dtype, mmap)
    return da.from_array(
        rows,
        chunks=(tuple(row_chunks) or (0,), *((d,) for d in row_shape)),
        # the files' times and sizes in the name: a rewritten shard makes a new graph
        name="from-npy-" + tokenize(paths, [_stamp(path) for path in paths], chunk_rows, mmap),
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * len(shape), dtype),
    )
