"""Scoring files of rows: the engine of ``fastkl score``.

:func:`score_files` streams P (and Q, or Q's single reference row) through a row-wise
function a chunk of rows at a time, writes each chunk's values to the output as it goes, and
keeps a running summary. Memory stays bounded by one chunk of each input (none at all for
``.npy`` inputs, which the kernels read from the memory map), one chunk of output and the
driver's fixed staging blocks, whatever the size of the files.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import _prepare, api
from .divergences import REGISTRY, lookup
from .files import NpySource, RowSink, RowSource, open_rows, open_sink, parse_output

#: ``--divergence`` names and the row-wise functions they run: every divergence of two sides
#: in the registry, by its public name (:func:`resolve` also takes the aliases).
DIVERGENCES: dict[str, Callable[..., Any]] = {
    spec.cli_name: getattr(api, spec.name) for spec in REGISTRY if spec.cli_name is not None
}


def resolve(divergence: Any) -> str:
    """The public name of ``--divergence`` ``divergence`` (a name or an alias such as "kl"),
    or a ValueError listing the names."""
    spec = None
    try:
        spec = lookup(divergence)
    except ValueError:
        pass
    if spec is None or spec.cli_name not in DIVERGENCES:
        names = ", ".join(map(repr, DIVERGENCES))
        raise ValueError(f"divergence: expected one of {names}, got {divergence!r}")
    return spec.cli_name


DEVICES = ("cpu", "cuda")

#: Bytes of P a chunk spans by default when the inputs are decoded into memory (.npz, Parquet,
#: Arrow): large enough that a call's overhead is noise, small enough to stay a few MiB.
CHUNK_BYTES = 16 << 20
#: The same for memory-mapped .npy inputs, which cost no memory however many rows a chunk
#: spans; each chunk also costs a parallel region's start and finish (about 0.3 ms on 2 cores),
#: so larger chunks are faster (2,000,000 x 64 float32: 63.5 ms in chunks of 65,536 rows,
#: 53.1 ms in chunks of 1,048,576), up to :data:`CHUNK_ROWS_MAX`.
CHUNK_BYTES_MAPPED = 256 << 20
#: At most this many rows a chunk: the output's staging (8 MiB of float64) stays bounded.
CHUNK_ROWS_MAX = 1 << 20


def default_chunk_rows(k: int, itemsize: int, mapped: bool = False) -> int:
    """Rows per chunk: :data:`CHUNK_BYTES` (or :data:`CHUNK_BYTES_MAPPED` for memory-mapped
    inputs) of rows of ``k`` values, at most :data:`CHUNK_ROWS_MAX`."""
    span = CHUNK_BYTES_MAPPED if mapped else CHUNK_BYTES
    return max(1, min(CHUNK_ROWS_MAX, span // max(1, k * itemsize)))


@dataclass
class Summary:
    """What :func:`score_files` did. ``seconds`` is the scoring time (``rows_per_s`` is from
    it), ``compile_seconds`` the time to compile or load the kernel before it (compiling
    happens once per machine). ``min``, ``mean`` and ``max`` are over the rows that are not NaN
    (``None`` if there are none); ``value`` is the reduction's result."""

    rows: int
    seconds: float
    compile_seconds: float
    rows_per_s: float
    min: float | None
    mean: float | None
    max: float | None
    inf_count: int
    nan_count: int
    output: str | None
    divergence: str
    reduction: str
    value: float | None
    dtype: str

    def to_json(self) -> str:
        """One line of JSON. Infinities and NaN, which JSON lacks, are the strings
        ``"inf"``, ``"-inf"`` and ``"nan"``."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            return v

        return json.dumps({key: clean(v) for key, v in asdict(self).items()})


class _Stats:
    """Running min, max, mean (over non-NaN rows) and inf/NaN counts of the row values."""

    def __init__(self) -> None:
        self.total = _prepare.RowSum()
        self.low = math.inf
        self.high = -math.inf
        self.inf_count = 0
        self.nan_count = 0

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        # np.minimum propagates NaN, so two passes find the range and whether a NaN is there;
        # the element-wise tests run only on the chunks that hold NaN or inf.
        low = float(np.minimum.reduce(values))
        if math.isnan(low):
            nan = np.isnan(values)
            self.nan_count += int(np.count_nonzero(nan))
            low = float(np.fmin.reduce(values))  # NaN only if every value is
            high = float(np.fmax.reduce(values))
            values = np.where(nan, 0.0, values)  # counted as rows, left out of the mean
        else:
            high = float(np.maximum.reduce(values))
        if math.isinf(low) or math.isinf(high):
            self.inf_count += int(np.count_nonzero(np.isinf(values)))
        if not math.isnan(low):
            self.low = min(self.low, low)
            self.high = max(self.high, high)
        self.total.add(values)

    def summary(self) -> tuple[float | None, float | None, float | None]:
        counted = self.total.count - self.nan_count
        if counted == 0:
            return None, None, None
        return self.low, self.total.sum() / counted, self.high


def _uniform(source: RowSource, form: str) -> np.ndarray:
    """One uniform row of ``source``'s length and dtype, as ``form``."""
    row = np.full((1, source.k), 1.0 / source.k)
    return (np.log(row) if form != "probs" else row).astype(source.dtype)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def score_files(
    p: str,
    q: str,
    out: str | None = None,
    *,
    divergence: str = "kl_div",
    p_form: str = "probs",
    q_form: str = "probs",
    base: float | None = None,
    eps: float | None = None,
    reduction: str = "none",
    chunk_rows: int | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    start: Callable[[RowSource, RowSource], None] | None = None,
) -> Summary:
    """Score every row of the file ``p`` against ``q`` and write the values to ``out``.

    Parameters
    ----------
    p, q : str
        Files of rows (see :mod:`fastkl.files`): ``.npy``, ``file.npz:member``, Parquet or
        Arrow (``file.parquet:column``). ``q`` holds as many rows as ``p``, or one reference
        row scored against every row of ``p``.
    out : str, optional
        ``.npy``, ``.parquet`` or ``.arrow`` path (``file.parquet:column`` names the column;
        the default is the function's name, e.g. ``kl_div``). Required for
        ``reduction="none"``; with a reduction it receives the single value. Written
        atomically: on any error or interruption no file appears at ``out``.
    divergence : str
        The row-wise function of two sides to run, by its name: "kl_div" (the default),
        "js_div", "js_distance", "sym_kl", "cross_entropy", "generalized_kl", ... (every
        divergence of two sides in :mod:`fastkl.divergences`; the aliases "kl", "js" and
        "sym" still work).
    p_form, q_form, base, eps, reduction
        As in the row-wise functions. Reductions are summed in float64 in a fixed order and
        equal the in-memory function's result bit for bit, whatever ``chunk_rows``.
    chunk_rows : int, optional
        Rows per chunk; the default spans 256 MiB of P for .npy inputs (memory-mapped: no
        copies) and 16 MiB otherwise, and at most 1,048,576 rows.
    device : {"cpu", "cuda"}
        Where the kernels run: "cuda" streams each chunk through the GPU (pinned buffers, two
        CUDA streams); a RuntimeError says why when no GPU is usable.
    progress : callable, optional
        Called with the number of rows after each chunk (a progress bar's ``update``).
    start : callable, optional
        Called with the opened P and Q sources once they are checked, before any work.

    Returns
    -------
    Summary
        Rows, seconds, rows/s, min/mean/max, inf and NaN counts, the output path, and the
        reduction's value.

    Raises
    ------
    ValueError, TypeError
        A missing, unreadable, truncated or corrupt file, a non-float dtype, mismatched row
        lengths or row counts, an unknown option, an unwritable output (the message names
        ``P``, ``Q``, ``OUT`` or the option).

    Examples
    --------
    >>> import os, tempfile, numpy as np, fastkl
    >>> from fastkl.score import score_files
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "p.npy"), np.array([[0.1, 0.9], [0.5, 0.5]]))
    >>> np.save(os.path.join(d, "q.npy"), np.array([0.4, 0.6]))  # one reference row
    >>> s = score_files(os.path.join(d, "p.npy"), os.path.join(d, "q.npy"),
    ...                 os.path.join(d, "kl.npy"))
    >>> np.load(os.path.join(d, "kl.npy"))
    array([0.22628916, 0.020411  ])
    >>> s.rows, s.nan_count, round(s.max, 8)
    (2, 0, 0.22628916)
    """
    divergence = resolve(divergence)
    function = DIVERGENCES[divergence]
    if device not in DEVICES:
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    reduction = _prepare.parse_reduction(reduction)
    options = {"p_form": p_form, "q_form": q_form, "eps": eps, "device": device}
    if lookup(divergence).uses_base:
        options["base"] = base
    elif base is not None:
        raise ValueError(f"base: {divergence} is not a sum of logarithms; it takes no base")
    # Check the options (and with 'cuda', the GPU) now, on a tiny row, rather than after the
    # output was opened.
    function([1.0], [1.0], **options)
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows <= 0):
        raise ValueError(f"chunk_rows: expected a positive integer, got {chunk_rows!r}")
    if reduction == "none" and out is None:
        raise ValueError("out: an output path is required with reduction 'none'")

    sources: list[RowSource] = []
    sink: RowSink | None = None
    try:
        sources.append(open_rows(p, "P"))
        sources.append(open_rows(q, "Q"))
        P, Q = sources
        if Q.k != P.k:
            raise ValueError(
                f"Q: rows of {Q.where} have k={Q.k} values but rows of {P.where} have k={P.k}"
            )
        if Q.n not in (1, P.n):
            raise ValueError(
                f"Q: {Q.where} has {Q.n:,} rows; expected {P.n:,} (one per row of P) or 1 "
                "(one reference row for every row of P)"
            )
        if out is not None:
            out_path = parse_output(out)[0]
            for source in sources:
                if _same_file(out_path, source.path):
                    raise ValueError(
                        f"OUT: {out_path} is the input {source.label}; choose another path"
                    )
        dtype = np.dtype(np.float64 if 8 in (P.dtype.itemsize, Q.dtype.itemsize) else np.float32)
        name = function.__name__
        n = P.n
        mapped = all(isinstance(source, NpySource) for source in sources)
        step = chunk_rows or default_chunk_rows(P.k, P.dtype.itemsize, mapped)
        step = min(step, max(n, 1))
        # Reductions read each row's float64 accumulation, before any rounding to float32.
        buffer = np.empty(step, np.float64 if reduction != "none" else dtype)
        # Compile (or load) the kernel the chunks run on a made-up row of the same kind (the
        # kernel depends on the dtypes, k and the options, not on the values or the rows), so
        # that compile time is not counted as scoring time.
        compiled = time.perf_counter()
        function(_uniform(P, p_form), _uniform(Q, q_form), out=buffer[:1], **options)
        compile_seconds = time.perf_counter() - compiled
        began = time.perf_counter()
        if start is not None:
            start(P, Q)
        if out is not None:
            shape = (n,) if reduction == "none" else ()
            sink = open_sink(out, shape, dtype, name)
        q_row = Q.next_rows(1)[0] if Q.n == 1 else None
        stats = _Stats()
        for first in range(0, n, step):
            m = min(step, n - first)
            values = buffer[:m]
            rows_q = q_row if q_row is not None else Q.next_rows(m)
            function(P.next_rows(m), rows_q, out=values, **options)
            stats.add(values)
            if sink is not None and reduction == "none":
                sink.write(values)
            if progress is not None:
                progress(m)
        value: float | None = None
        if reduction != "none":
            total = stats.total
            value = float(dtype.type(total.mean() if reduction == "mean" else total.sum()))
            if sink is not None:
                sink.write(np.array(value, dtype))
        if sink is not None:
            sink.commit()
            sink = None
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        for source in sources:
            source.close()
    seconds = time.perf_counter() - began
    low, mean, high = stats.summary()
    return Summary(
        rows=n,
        seconds=seconds,
        compile_seconds=compile_seconds,
        rows_per_s=n / seconds if seconds > 0 else math.inf,
        min=low,
        mean=mean,
        max=high,
        inf_count=stats.inf_count,
        nan_count=stats.nan_count,
        output=os.path.abspath(parse_output(out)[0]) if out is not None else None,
        divergence=divergence,
        reduction=reduction,
        value=value,
        dtype=str(dtype),
    )
