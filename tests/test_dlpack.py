"""DLPack and bfloat16: tensors of other libraries read in place, on the CPU.

The GPU side (CUDA DLPack tensors, bfloat16 on the device) is in test_cuda.py; torch's own
tensors are checked where torch is installed.
"""

from __future__ import annotations

import gc

import ml_dtypes
import numpy as np
import pytest
from reference import assert_close, random_probs

import fastkl
from fastkl import _dlpack
from fastkl.divergences import REGISTRY

BF16 = np.dtype(ml_dtypes.bfloat16)
FUNCTIONS = [spec.name for spec in REGISTRY if spec.reads_q]


class Producer:
    """An object that offers its array through DLPack only (no __array__), as a torch or JAX
    tensor does to a library that does not know it."""

    def __init__(self, array: np.ndarray, device: tuple[int, int] = (_dlpack.CPU, 0)) -> None:
        # numpy's own export where numpy has one (a real producer); bfloat16 through fastkl's
        # exporter (numpy exports no bfloat16), and so is a stand-in for another device
        own = array.dtype != BF16 and device[0] == _dlpack.CPU
        self._export = array if own else _dlpack.export(array, device)

    def __dlpack__(self, **kwargs):
        return self._export.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return tuple(self._export.__dlpack_device__())


def call(name, p, q, **kw):
    return getattr(fastkl, name)(p, q, **kw)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, BF16], ids=str)
def test_a_dlpack_tensor_is_read_in_place(rng, dtype):
    p = random_probs(rng, (7, 11)).astype(dtype)
    q = random_probs(rng, (7, 11)).astype(dtype)
    for name in FUNCTIONS:
        got = call(name, Producer(p), Producer(q))
        want = call(name, p.astype(np.float64), q.astype(np.float64))
        assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
        tol = {"rtol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-7}
        assert_close(got, want, **tol)
    # a strided view (every other column) and a reference row
    got = fastkl.kl_div(Producer(p[:, ::2]), Producer(q[0, ::2]))
    assert_close(got, fastkl.kl_div(p[:, ::2].astype(np.float64), q[0, ::2].astype(np.float64)),
                 rtol=1e-5, atol=1e-7)  # fmt: skip


def test_the_memory_is_shared_and_released(rng):
    """The imported view reads the producer's memory (no copy), and the producer's deleter
    runs once the view is gone, also for a capsule that was never consumed."""
    a = random_probs(rng, (3, 4)).astype(BF16)
    t = _dlpack.import_tensor(Producer(a), "p")
    view = t.numpy()
    assert np.shares_memory(view, a) and not view.flags.writeable
    assert len(_dlpack._exports) == 1
    del t, view
    gc.collect()
    assert len(_dlpack._exports) == 0
    capsule = Producer(a).__dlpack__()
    assert len(_dlpack._exports) == 1
    del capsule
    gc.collect()
    assert len(_dlpack._exports) == 0


def test_numpy_consumes_an_export():
    a = np.arange(12.0).reshape(3, 4)[:, 1::2]
    b = np.from_dlpack(_dlpack.export(a, (_dlpack.CPU, 0)))
    assert np.shares_memory(a, b) and (a == b).all() and b.strides == a.strides


def test_bfloat16_arrays_on_the_cpu(rng):
    """ml_dtypes' bfloat16 arrays are computed in float32, every function and option."""
    p = random_probs(rng, (5, 37)).astype(BF16)
    q = random_probs(rng, (5, 37)).astype(BF16)
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    for name in FUNCTIONS:
        got = call(name, p, q)
        assert got.dtype == np.float32
        assert_close(got, call(name, p64, q64), rtol=1e-5, atol=1e-7)
    assert_close(fastkl.entropy(p.T, axis=0), fastkl.entropy(p64), rtol=1e-5)
    assert_close(fastkl.kl_div(p, q, reduction="mean"), fastkl.kl_div(p64, q64).mean(), rtol=1e-5)
    logits = np.log(p64).astype(BF16)
    assert_close(fastkl.kl_div(logits, q, p_form="logits"),
                 fastkl.kl_div(logits.astype(np.float64), q64, p_form="logits"),
                 rtol=1e-5, atol=1e-7)  # fmt: skip


def test_bad_dlpack_inputs_are_type_errors():
    with pytest.raises(TypeError, match=r"p: expected floating-point values .* got dtype int64"):
        fastkl.kl_div(Producer(np.arange(4)), np.full(4, 0.25))

    class Broken:
        def __dlpack__(self, **kwargs):
            raise RuntimeError("Can't export tensors that require gradient")

        def __dlpack_device__(self):
            return (_dlpack.CPU, 0)

    with pytest.raises(TypeError, match="q: could not export it through __dlpack__"):
        fastkl.kl_div(np.full(4, 0.25), Broken())


def test_a_cuda_dlpack_tensor_is_never_copied_to_the_host():
    """A tensor on a CUDA device goes to the GPU path (a RuntimeError without a GPU) or, with
    device='cpu', is refused: never a silent copy."""
    from fastkl import _prepare

    gpu = Producer(np.full(4, 0.25, np.float32), device=(_dlpack.CUDA, 0))
    assert _prepare.is_cuda_array(gpu)
    with pytest.raises(ValueError, match="device: p is a CUDA array but device='cpu'"):
        fastkl.kl_div(gpu, np.full(4, 0.25), device="cpu")


def test_a_tensor_on_another_kind_of_device_is_a_type_error():
    rocm = Producer(np.full(4, 0.25, np.float32), device=(10, 0))  # kDLROCM
    with pytest.raises(TypeError, match="p: a DLPack tensor on device type 10"):
        fastkl.kl_div(rocm, np.full(4, 0.25))


def test_the_device_of_a_device_operand():
    """Where a device operand's library says which GPU it is on (DLPack, torch, CuPy), the
    driver compares it with the current device (a ValueError naming it otherwise)."""
    import types

    from fastkl import _cuda_driver

    def operand(owner=None, source=None):
        op = object.__new__(_cuda_driver._DeviceOperand)
        op.owner, op.source, op.name = owner, source, "q"
        return op

    tensor = object.__new__(_dlpack.Tensor)
    tensor.device_id = 3
    assert _cuda_driver._device_index(operand(owner=tensor)) == 3
    torch_like = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda", index=1))
    assert _cuda_driver._device_index(operand(source=torch_like)) == 1
    cupy_like = types.SimpleNamespace(device=types.SimpleNamespace(id=2))
    assert _cuda_driver._device_index(operand(source=cupy_like)) == 2
    assert _cuda_driver._device_index(operand(source=object())) is None


def test_torch_cpu_tensors_of_every_dtype(rng):
    torch = pytest.importorskip("torch")
    p = random_probs(rng, (6, 9))
    q = random_probs(rng, (6, 9))
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        tp, tq = torch.tensor(p, dtype=dtype), torch.tensor(q, dtype=dtype)
        got = fastkl.kl_div(tp, tq)
        want = fastkl.kl_div(tp.double().numpy(), tq.double().numpy())
        tol = {"rtol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
        assert_close(got, want, **tol)
