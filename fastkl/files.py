"""Rows in files, for ``fastkl score``: read and written a bounded chunk of rows at a time.

Inputs are recognized by their first bytes, not their names:

- ``.npy``: memory-mapped; a chunk of rows is a view of the file, never a copy;
- ``.npz``: one member (``file.npz:name``, or the only member), streamed through the
  archive's decompressor;
- Parquet and Arrow IPC (Feather v2) files, with pyarrow (the ``parquet`` extra): one list
  column of floats (``file.parquet:column``, or the only list column), or all the numeric
  columns as the components of each row; streamed by record batch.

Outputs (``.npy``, ``.parquet``, ``.arrow``/``.feather``) are written to a temporary file
beside the destination and renamed over it only once complete, so an error, a signal or a full
disk never leaves a partial file at the destination.

Every problem with a file is a ValueError (or TypeError for a wrong dtype) whose message names
the argument (``P``, ``Q``, ``OUT``) and the file: the command line prints it as one line.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_MAGIC = {
    b"\x93NUMPY": "npy",
    b"PK\x03\x04": "npz",
    b"PK\x05\x06": "npz",  # an empty archive
    b"PAR1": "parquet",
    b"ARROW1": "arrow",
}


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"file.npz:name"`` -> ``("file.npz", "name")``; a path that exists as given is a path."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, member = spec.rsplit(":", 1)
    if os.path.exists(path) and member:
        return path, member
    return spec, None


def _check_dtype(dtype: np.dtype, label: str, where: str) -> np.dtype:
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise TypeError(
            f"{label}: {where} holds {dtype} values; expected float16, float32 or float64"
        )
    return dtype


def _read_npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from a ``.npy`` header, leaving ``f`` at the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


def _rows_shape(shape: tuple[int, ...], label: str, where: str) -> tuple[int, int]:
    """(n, k) of an array of rows: 2-d, or 1-d for a single row."""
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) != 2:
        raise ValueError(
            f"{label}: {where} has shape {shape}; expected rows of shape (n, k) or one row (k,)"
        )
    return shape[0], shape[1]


class RowSource:
    """``n`` rows of ``k`` values of ``dtype``, read in order by :meth:`next_rows`."""

    label: str
    path: str  # the file
    where: str  # the file, and the member or column read
    n: int
    k: int
    dtype: np.dtype

    def next_rows(self, m: int) -> np.ndarray:
        """The next ``m`` rows, shape (m, k)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.where}: {self.n:,} x {self.k} {self.dtype}"


class NpySource(RowSource):
    """A ``.npy`` file, memory-mapped: its rows are read by the kernel where they lie."""

    def __init__(self, path: str, label: str) -> None:
        self.label, self.path, self.where = label, path, path
        with open(path, "rb") as f:
            try:
                shape, fortran, dtype = _read_npy_header(f)
            except Exception as exc:  # the header is parsed text: tokenize, syntax, value errors
                raise ValueError(f"{label}: {path} is not a valid .npy file: {exc}") from None
            offset = f.tell()
        _check_dtype(dtype, label, path)
        self.n, self.k = _rows_shape(shape, label, path)
        self.dtype = dtype
        expected = self.n * self.k * dtype.itemsize
        actual = os.path.getsize(path) - offset
        if actual < expected:
            raise ValueError(
                f"{label}: {path} is truncated: its header says {shape} {dtype} "
                f"({expected:,} bytes of data) but it holds {actual:,}"
            )
        self._array: np.ndarray
        self._next = 0
        if expected == 0:
            self._array = np.empty((self.n, self.k), dtype)
            return
        order = "F" if fortran else "C"
        mapped = np.memmap(path, dtype, "r", offset, (self.n, self.k), order)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            mapped._mmap.madvise(mmap.MADV_SEQUENTIAL)  # read ahead: the rows go in order
        self._array = mapped

    def next_rows(self, m: int) -> np.ndarray:
        start, self._next = self._next, self._next + m
        return self._array[start : start + m]

    def close(self) -> None:
        mapped = getattr(self._array, "_mmap", None)
        self._array = np.empty((0, self.k), self.dtype)
        if mapped is not None:
            with contextlib.suppress(BufferError):  # a caller still holds a view: GC closes it
                mapped.close()


class NpzSource(RowSource):
    """One member of a ``.npz`` archive, streamed through the decompressor in row chunks."""

    def __init__(self, path: str, member: str | None, label: str) -> None:
        self.label, self.path = label, path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"{label}: {path} is not a readable .npz archive: {exc}") from None
        try:
            self._open(path, member)
        except BaseException:
            self._zip.close()
            raise

    def _open(self, path: str, member: str | None) -> None:
        label = self.label
        names = [n[:-4] if n.endswith(".npy") else n for n in self._zip.namelist()]
        if member is None:
            if len(names) != 1:
                listed = ", ".join(names) or "none"
                raise ValueError(
                    f"{label}: {path} holds {len(names)} arrays ({listed}); name one as "
                    f"{path}:NAME"
                )
            member = names[0]
        if member not in names:
            raise ValueError(
                f"{label}: {path} has no array {member!r} (it holds: {', '.join(names)})"
            )
        info = self._zip.namelist()[names.index(member)]
        self.where = f"{path}:{member}"
        try:
            self._stream = self._zip.open(info)
            shape, fortran, dtype = _read_npy_header(self._stream)
        except Exception as exc:  # as for .npy headers, plus the archive's own errors
            raise ValueError(f"{label}: {self.where} is not a valid .npy member: {exc}") from None
        _check_dtype(dtype, label, self.where)
        self.n, self.k = _rows_shape(shape, label, self.where)
        self.dtype = dtype
        if fortran and self.n > 1 and self.k > 1:
            raise ValueError(
                f"{label}: {self.where} is stored in Fortran order, which cannot be streamed "
                "by rows; save it C-ordered (np.ascontiguousarray) or as a .npy file"
            )

    def next_rows(self, m: int) -> np.ndarray:
        size = m * self.k * self.dtype.itemsize
        try:
            data = self._stream.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ValueError(f"{self.label}: {self.where} is corrupt: {exc}") from None
        if len(data) != size:
            raise ValueError(f"{self.label}: {self.where} is truncated")
        return np.frombuffer(data, self.dtype).reshape(m, self.k)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
        self._zip.close()


def _pyarrow(label: str) -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise ValueError(
            f'{label}: Parquet and Arrow files need pyarrow: pip install "fastkl[parquet]"'
        ) from None
    return pyarrow


@contextlib.contextmanager
def _arrow_errors(label: str, where: str) -> Iterator[None]:
    """pyarrow's own exceptions as the one-line ValueError every file problem is."""
    import pyarrow

    try:
        yield
    except pyarrow.ArrowException as exc:
        raise ValueError(f"{label}: {where}: {exc}") from None


class ArrowSource(RowSource):
    """Rows from the record batches of a Parquet or Arrow IPC file.

    A row is one entry of a list column of floats, or one record of the numeric columns.
    """

    def __init__(self, path: str, member: str | None, label: str, kind: str) -> None:
        pa = _pyarrow(label)
        self.label, self.path = label, path
        self.where = f"{path}:{member}" if member else path
        self._pending: list[np.ndarray] = []
        self._held = 0  # rows in _pending
        self._read = 0  # rows taken from the file so far (for error messages)
        with _arrow_errors(label, path):
            if kind == "parquet":
                self._file = pa.parquet.ParquetFile(path, memory_map=True)
                schema, self.n = self._file.schema_arrow, self._file.metadata.num_rows
            else:
                self._file = pa.ipc.open_file(pa.memory_map(path, "r"))
                schema = self._file.schema
                self.n = sum(
                    self._file.get_batch(i).num_rows for i in range(self._file.num_record_batches)
                )
        self._kind = kind
        self._columns = self._choose_columns(pa, schema, member, path)
        self._batches = self._iter_batches()
        self._is_list = len(self._columns) == 1 and self._list_type(
            pa, schema.field(self._columns[0]).type
        )
        if self._is_list:
            value_type = schema.field(self._columns[0]).type.value_type
            self.dtype = _check_dtype(
                np.dtype(value_type.to_pandas_dtype()), label, f"{self.where} (list values)"
            )
            self.k = self._list_length(pa, schema)
        else:
            dtypes = [np.dtype(schema.field(c).type.to_pandas_dtype()) for c in self._columns]
            self.dtype = np.result_type(*dtypes)
            self.k = len(self._columns)

    @staticmethod
    def _list_type(pa: Any, t: Any) -> bool:
        return bool(
            pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        )

    def _choose_columns(self, pa: Any, schema: Any, member: str | None, path: str) -> list[str]:
        label = self.label
        if member is not None:
            if member not in schema.names:
                raise ValueError(
                    f"{label}: {path} has no column {member!r} (it has: {', '.join(schema.names)})"
                )
            t = schema.field(member).type
            if not (self._list_type(pa, t) or pa.types.is_floating(t)):
                raise TypeError(
                    f"{label}: column {member!r} of {path} is {t}; expected a list of floats"
                )
            return [member]
        lists = [f.name for f in schema if self._list_type(pa, f.type)]
        if len(lists) == 1:
            return lists
        if lists:
            raise ValueError(
                f"{label}: {path} has {len(lists)} list columns ({', '.join(lists)}); "
                f"name one as {path}:COLUMN"
            )
        numeric = [f.name for f in schema if pa.types.is_integer(f.type) or _float(pa, f.type)]
        if not numeric:
            raise ValueError(
                f"{label}: {path} has no list column and no numeric columns "
                f"(it has: {', '.join(schema.names) or 'no columns'})"
            )
        for name in numeric:
            t = schema.field(name).type
            if not _float(pa, t):
                raise TypeError(
                    f"{label}: column {name!r} of {path} is {t}; expected float16, float32 "
                    "or float64 columns (or one list column of floats)"
                )
        return numeric

    def _iter_batches(self, batch_size: int = 65536) -> Iterator[Any]:
        if self._kind == "parquet":
            yield from self._file.iter_batches(batch_size=batch_size, columns=self._columns)
        else:
            for i in range(self._file.num_record_batches):
                yield self._file.get_batch(i).select(self._columns)

    def _list_length(self, pa: Any, schema: Any) -> int:
        t = schema.field(self._columns[0]).type
        if pa.types.is_fixed_size_list(t):
            return int(t.list_size)
        with _arrow_errors(self.label, self.where):
            # small batches: only the rows up to the first non-null one are decoded
            for batch in self._iter_batches(batch_size=64):
                lengths = pa.compute.list_value_length(batch.column(0)).drop_null()
                if len(lengths):
                    return int(lengths[0].as_py())
        return 1  # no rows: any k would do

    def _to_rows(self, batch: Any) -> np.ndarray:
        pa = _pyarrow(self.label)
        m = batch.num_rows
        if not self._is_list:
            columns = [c.to_numpy(zero_copy_only=False) for c in batch.columns]
            return np.column_stack(columns).astype(self.dtype, copy=False).reshape(m, self.k)
        column = batch.column(0)
        if column.null_count:
            raise ValueError(
                f"{self.label}: {self.where} has a null row "
                f"(row {self._read + column.is_null().index(True).as_py()})"
            )
        lengths = pa.compute.list_value_length(column).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != self.k)
        if bad.size:
            raise ValueError(
                f"{self.label}: row {self._read + int(bad[0])} of {self.where} has "
                f"{int(lengths[bad[0]])} values; its first row has k={self.k}"
            )
        values = column.flatten().to_numpy(zero_copy_only=False)  # nulls inside rows: NaN
        return values.astype(self.dtype, copy=False).reshape(m, self.k)

    def next_rows(self, m: int) -> np.ndarray:
        with _arrow_errors(self.label, self.where):
            while self._held < m:
                batch = next(self._batches, None)
                if batch is None:
                    raise ValueError(f"{self.label}: {self.where} ended early")
                rows = self._to_rows(batch)
                self._read += batch.num_rows
                self._pending.append(rows)
                self._held += rows.shape[0]
        joined = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        head, rest = joined[:m], joined[m:]
        self._pending = [rest] if rest.shape[0] else []
        self._held = rest.shape[0]
        return head

    def close(self) -> None:
        self._batches.close()
        with contextlib.suppress(Exception):
            self._file.close()


def _float(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_floating(t))


def open_rows(spec: str, label: str) -> RowSource:
    """Open ``spec`` (a path, or ``path:member``) as a :class:`RowSource`."""
    path, member = split_spec(spec)
    if not os.path.exists(path):
        raise ValueError(f"{label}: no such file: {spec}")
    if os.path.isdir(path):
        raise ValueError(f"{label}: {spec} is a directory; expected a file")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ValueError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    if kind is None:
        raise ValueError(
            f"{label}: {path} is not a .npy, .npz, Parquet or Arrow file (it starts with {head!r})"
        )
    if kind == "npy":
        if member is not None:
            raise ValueError(f"{label}: {path} is a .npy file; it has no member {member!r}")
        return NpySource(path, label)
    if kind == "npz":
        return NpzSource(path, member, label)
    return ArrowSource(path, member, label, kind)


# --- outputs ---------------------------------------------------------------------------------

OUTPUT_SUFFIXES = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}
OUTPUT_SUFFIXES |= {".arrow": "arrow", ".feather": "arrow"}


class AtomicFile:
    """A temporary file beside ``path``, renamed over it by :meth:`commit`, removed by
    :meth:`abort`: readers of ``path`` only ever see a complete file."""

    def __init__(self, path: str, label: str) -> None:
        self.path, self.label = path, label
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"{label}: cannot write {path}: no such directory {folder}")
        try:
            fd, self.temp = tempfile.mkstemp(
                prefix=f".{os.path.basename(path)}.", suffix=".part", dir=folder
            )
        except OSError as exc:
            raise ValueError(f"{label}: cannot write {path}: {exc.strerror or exc}") from None
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # the permissions a plain open() would have given
        self.file = os.fdopen(fd, "wb")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """OSError (a full disk, a quota, an I/O error) as a ValueError naming the output."""
        try:
            yield
        except OSError as exc:
            raise ValueError(
                f"{self.label}: writing {self.path} failed: {exc.strerror or exc}"
            ) from None

    def reserve(self, size: int) -> None:
        """Allocate ``size`` bytes now, so a disk too small fails before any work is done."""
        if size <= 0 or not hasattr(os, "posix_fallocate"):
            return
        try:
            os.posix_fallocate(self.file.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (95, 22):  # EOPNOTSUPP, EINVAL: the filesystem cannot say
                return
            raise

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


class RowSink:
    """Values written in order to a file that appears at its path only when complete."""

    def write(self, values: np.ndarray) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class NpySink(RowSink):
    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype, label: str) -> None:
        self._file = AtomicFile(path, label)
        try:
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": shape,
            }
            with self._file.writing():
                self._file.reserve(128 + math.prod(shape) * dtype.itemsize)
                np.lib.format.write_array_header_1_0(self._file.file, header)
        except BaseException:
            self._file.abort()
            raise
        self._dtype = dtype

    def write(self, values: np.ndarray) -> None:
        with self._file.writing():
            self._file.file.write(np.ascontiguousarray(values, self._dtype).data)

    def commit(self) -> None:
        with self._file.writing():
            self._file.commit()

    def abort(self) -> None:
        self._file.abort()


class ArrowSink(RowSink):
    """One column in a Parquet or Arrow IPC file."""

    def __init__(self, path: str, column: str, dtype: np.dtype, kind: str, label: str) -> None:
        pa = _pyarrow(label)
        self._pa, self._column, self._dtype = pa, column, dtype
        self._schema = pa.schema([(column, pa.from_numpy_dtype(dtype))])
        self._file = AtomicFile(path, label)
        try:
            with _arrow_errors(label, path):
                if kind == "parquet":
                    self._writer = pa.parquet.ParquetWriter(self._file.file, self._schema)
                else:
                    self._writer = pa.ipc.new_file(self._file.file, self._schema)
        except BaseException:
            self._file.abort()
            raise
        self._kind = kind

    def write(self, values: np.ndarray) -> None:
        table = self._pa.table({self._column: np.asarray(values, self._dtype)})
        with _arrow_errors(self._file.label, self._file.path), self._file.writing():
            self._writer.write_table(table)

    def commit(self) -> None:
        with _arrow_errors(self._file.label, self._file.path), self._file.writing():
            self._writer.close()
            self._file.commit()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._file.abort()


def parse_output(spec: str, label: str = "OUT") -> tuple[str, str | None, str]:
    """``spec`` as (path, column or None, kind), the kind chosen by the path's suffix."""
    if os.path.isdir(spec):
        raise ValueError(f"{label}: {spec} is a directory; expected a file path")
    path, name = spec, None
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in OUTPUT_SUFFIXES and ":" in spec:
        path, name = spec.rsplit(":", 1)
        suffix = os.path.splitext(path)[1].lower()
    kind = OUTPUT_SUFFIXES.get(suffix)
    if kind is None:
        raise ValueError(
            f"{label}: expected a path ending in .npy, .parquet or .arrow/.feather, got {spec!r}"
        )
    if kind == "npy" and name is not None:
        raise ValueError(f"{label}: a .npy file has no columns; got {spec!r}")
    return path, name, kind


def open_sink(
    spec: str, shape: tuple[int, ...], dtype: np.dtype, column: str, label: str = "OUT"
) -> RowSink:
    """A sink for ``shape`` values of ``dtype`` at ``spec`` (``path``, or ``path:column`` for
    Parquet and Arrow; ``column`` is the default name)."""
    path, name, kind = parse_output(spec, label)
    if kind == "npy":
        return NpySink(path, shape, dtype, label)
    return ArrowSink(path, name or column, dtype, kind, label)
