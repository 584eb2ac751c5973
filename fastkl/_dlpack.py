"""DLPack, read and written in place with ctypes: no producer's library is imported.

Any object with ``__dlpack__`` (torch tensors of every float dtype bfloat16 included, JAX and
CuPy arrays, numpy arrays) can be read where it lies: :func:`import_tensor` takes its capsule,
reads the ``DLTensor`` (pointer, shape, strides, dtype, device) and keeps the capsule's
memory alive until the returned :class:`Tensor` is gone, when it calls the producer's deleter.
The CPU driver views host memory as a numpy array (:meth:`Tensor.numpy`); the CUDA driver
views device memory through a ``__cuda_array_interface__`` (:meth:`Tensor.cuda_interface`).
bfloat16 becomes ``ml_dtypes.bfloat16`` for numpy and its bits (``uint16``) for the GPU.

:func:`export` goes the other way: a CUDA or host buffer with its owner, as an object with
``__dlpack__`` and ``__dlpack_device__`` that a consumer (``jax.dlpack.from_dlpack``) takes
without a copy.

Only the unversioned protocol (capsules named ``"dltensor"``) is spoken: every producer must
still offer it when no ``max_version`` is asked for.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any

import numpy as np

# Device types (dlpack.h)
CPU = 1
CUDA = 2
CUDA_HOST = 3  # pinned host memory: readable from the host
CUDA_MANAGED = 13
HOST_DEVICES = (CPU, CUDA_HOST, CUDA_MANAGED)

# Type codes (dlpack.h)
_INT, _UINT, _FLOAT, _BFLOAT = 0, 1, 2, 4


class _Device(ctypes.Structure):
    _fields_ = (("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32))


class _DataType(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16))


class _DLTensor(ctypes.Structure):
    _fields_ = (
        ("data", ctypes.c_void_p),
        ("device", _Device),
        ("ndim", ctypes.c_int32),
        ("dtype", _DataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    )


class _Managed(ctypes.Structure):
    pass


_Deleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Managed))
_Managed._fields_ = (
    ("dl_tensor", _DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _Deleter),
)

_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = (ctypes.py_object, ctypes.c_char_p)
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = (ctypes.py_object, ctypes.c_char_p)
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
# The capsule destructor receives the capsule being destroyed: raw pointers only (a py_object
# would take a reference to an object whose count already reached zero).
_CapsuleDestructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", _api)
)
_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api)
)


def bfloat16() -> np.dtype:
    """numpy's bfloat16 (``ml_dtypes``), or a TypeError that says how to get it."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(
            "bfloat16 values need the ml_dtypes package: pip install ml_dtypes"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def _numpy_dtype(code: int, bits: int, lanes: int, name: str) -> np.dtype:
    if lanes == 1:
        if code == _FLOAT and bits in (16, 32, 64):
            return np.dtype(f"<f{bits // 8}")
        if code == _BFLOAT and bits == 16:
            return bfloat16()
        if code in (_INT, _UINT) and bits in (8, 16, 32, 64):
            return np.dtype(f"<{'i' if code == _INT else 'u'}{bits // 8}")
    raise TypeError(
        f"{name}: a DLPack tensor of type code {code}, {bits} bits, {lanes} lanes; expected "
        "floating-point values (bfloat16, float16, float32 or float64)"
    )


def device_of(x: Any, name: str) -> tuple[int, int]:
    """(DLPack device type, device id) of an object with ``__dlpack__``."""
    try:
        device = x.__dlpack_device__()
        return int(device[0]), int(device[1])
    except Exception as exc:
        raise TypeError(f"{name}: could not read its __dlpack_device__ ({exc})") from None


class Tensor:
    """A DLPack tensor taken over from its producer: its memory is valid while this lives."""

    def __init__(self, x: Any, name: str) -> None:
        self.name = name
        device_type, _ = device_of(x, name)
        try:
            # CUDA producers make the data ready on the stream we name: 1, the legacy default
            # stream, which numba's launches use (0 is not a valid DLPack stream).
            capsule = x.__dlpack__(stream=1) if device_type == CUDA else x.__dlpack__()
        except Exception as exc:  # a torch tensor that requires grad, a read-only export...
            raise TypeError(f"{name}: could not export it through __dlpack__ ({exc})") from None
        address = _api.PyCapsule_GetPointer(capsule, b"dltensor")
        managed = _Managed.from_address(address)
        # Ours from now on: the producer's capsule destructor leaves a renamed capsule alone.
        _api.PyCapsule_SetName(capsule, b"used_dltensor")
        self._finalizer = _release(self, managed)
        t = managed.dl_tensor
        self.device_type, self.device_id = t.device.device_type, t.device.device_id
        self.dtype = _numpy_dtype(t.dtype.code, t.dtype.bits, t.dtype.lanes, name)
        ndim = t.ndim
        self.shape = tuple(int(t.shape[i]) for i in range(ndim))
        item = self.dtype.itemsize
        if t.strides:
            self.strides = tuple(int(t.strides[i]) * item for i in range(ndim))
        else:  # NULL: C-contiguous
            self.strides = tuple(
                int(np.prod(self.shape[i + 1 :], dtype=np.int64)) * item for i in range(ndim)
            )
        self.ptr = (t.data or 0) + int(t.byte_offset)

    @property
    def on_host(self) -> bool:
        return self.device_type in HOST_DEVICES

    def numpy(self) -> np.ndarray:
        """The host memory as a numpy array (no copy), kept alive by this tensor."""
        bf16 = is_bfloat16(self.dtype)
        desc = self._interface("<u2" if bf16 else self.dtype.str)
        desc["data"] = (self.ptr, True)  # read only: an input is never written
        a = np.asarray(_Interface(self, "__array_interface__", desc))
        return a.view(self.dtype) if bf16 else a

    def cuda_interface(self) -> dict[str, Any]:
        """A ``__cuda_array_interface__`` of the device memory; bfloat16 as its bits
        (``uint16``), which the kernels decode."""
        typestr = "<u2" if is_bfloat16(self.dtype) else self.dtype.str
        desc = self._interface(typestr)
        desc["stream"] = None  # the producer synchronized with the stream named at export
        return desc

    def _interface(self, typestr: str) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "strides": self.strides,
            "typestr": typestr,
            "data": (self.ptr, False),
            "version": 3,
        }


class _Interface:
    """An array interface whose owner keeps the DLPack memory alive."""

    def __init__(self, owner: Any, attribute: str, desc: dict[str, Any]) -> None:
        self.owner = owner
        setattr(self, attribute, desc)


def _release(owner: Any, managed: _Managed) -> Any:
    import weakref

    deleter = managed.deleter
    address = ctypes.addressof(managed)

    def release() -> None:
        if deleter:
            deleter(ctypes.cast(address, ctypes.POINTER(_Managed)))

    return weakref.finalize(owner, release)


def import_tensor(x: Any, name: str) -> Tensor:
    """Take over ``x``'s DLPack capsule (see the module docstring)."""
    return Tensor(x, name)


# --- export -------------------------------------------------------------------------------------

_exports: dict[int, tuple[Any, ...]] = {}  # id -> what an exported capsule keeps alive
_exports_lock = threading.Lock()
_ids = itertools.count(1)


def _forget(ident: int) -> None:
    with _exports_lock:
        _exports.pop(ident, None)


@_Deleter
def _delete_managed(managed: Any) -> None:
    _forget(int(managed.contents.manager_ctx or 0))


@_CapsuleDestructor
def _delete_capsule(capsule: int) -> None:
    # A consumer renames the capsule to "used_dltensor" and calls the deleter itself; a capsule
    # that was never consumed still owns its tensor.
    if _IsValid(capsule, b"dltensor"):
        managed = _GetPointer(capsule, b"dltensor")
        _delete_managed(ctypes.cast(managed, ctypes.POINTER(_Managed)))


class Exported:
    """A buffer offered through ``__dlpack__`` (one capsule per call), e.g. to JAX."""

    def __init__(
        self,
        ptr: int,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        dtype: np.dtype,
        device: tuple[int, int],
        owner: Any,
    ) -> None:
        if np.dtype(dtype).kind != "f" and not is_bfloat16(np.dtype(dtype)):
            raise TypeError(f"export: floating-point buffers only, not {dtype}")
        self.ptr, self.shape, self.strides = ptr, tuple(shape), tuple(strides)
        self.dtype, self.device, self.owner = np.dtype(dtype), device, owner

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device

    def __dlpack__(self, *, stream: Any = None, **_: Any) -> Any:
        item = self.dtype.itemsize
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(ndim, 1))(*(s // item for s in self.strides))
        managed = _Managed()
        t = managed.dl_tensor
        t.data = self.ptr
        t.device = _Device(*self.device)
        t.ndim = ndim
        t.dtype = _DataType(_BFLOAT if is_bfloat16(self.dtype) else _FLOAT, item * 8, 1)
        t.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
        t.strides = ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64))
        t.byte_offset = 0
        ident = next(_ids)
        managed.manager_ctx = ident
        managed.deleter = _delete_managed
        with _exports_lock:
            _exports[ident] = (managed, shape, strides, self.owner)
        return _api.PyCapsule_New(ctypes.addressof(managed), b"dltensor", _delete_capsule)


def export(array: Any, device: tuple[int, int]) -> Exported:
    """A numba device array (or any object with a ``__cuda_array_interface__`` or an
    ``__array_interface__``) as a DLPack producer on ``device``; it keeps ``array`` alive."""
    desc = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    dtype = np.dtype(getattr(array, "dtype", None) or desc["typestr"])
    shape = tuple(desc["shape"])
    strides = desc.get("strides")
    if strides is None:
        strides = tuple(
            int(np.prod(shape[i + 1 :], dtype=np.int64)) * dtype.itemsize
            for i in range(len(shape))
        )
    return Exported(desc["data"][0], shape, tuple(strides), dtype, device, array)
