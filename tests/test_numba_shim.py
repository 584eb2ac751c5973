"""What fastkl relies on in numba's private API (``fastkl._numba_shim``), checked name by name.

Each case names the numba versions it holds for; a case outside the installed version's range
is skipped, so a release that moves a name fails here, in one place, with the name.
"""

from __future__ import annotations

import inspect

import numba
import pytest

from fastkl import _numba_shim

VERSION = tuple(int(part) for part in numba.__version__.split(".")[:2])


def supported(low: tuple[int, int], high: tuple[int, int] | None = None):
    """Run a case only for numba versions in [low, high)."""
    inside = VERSION >= low and (high is None or VERSION < high)
    return pytest.mark.skipif(not inside, reason=f"numba {numba.__version__} outside the range")


@supported((0, 60))
def test_cache_locator_interface():
    # fastkl's locator overrides these and numba calls them on every cached kernel
    for method in ("ensure_cache_path", "get_cache_path", "get_source_stamp",
                   "get_disambiguator", "from_function"):  # fmt: skip
        assert callable(getattr(_numba_shim.CacheLocator, method)), method
    params = list(inspect.signature(_numba_shim.CacheLocator.from_function).parameters)
    assert params[-2:] == ["py_func", "py_file"]


@supported((0, 60))
def test_the_locator_list_takes_fastkl_first():
    from numba.core import caching

    from fastkl import _config

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    assert impl._locator_classes[0] is _config._FastklCacheLocator


@supported((0, 60))
def test_thread_pool_and_machine():
    _numba_shim.launch_threads()  # idempotent once started
    assert numba.threading_layer() in ("tbb", "omp", "workqueue")
    triple, cpu, features = _numba_shim.machine()
    assert triple and cpu and isinstance(features, str)
    assert isinstance(_numba_shim.host_cpu_features(), str)
    assert isinstance(_numba_shim.user_cache_dir(), str)


@supported((0, 60))
def test_llvm_helpers_of_the_intrinsics():
    # _simd's intrinsics build arrays and vectors with these
    assert list(inspect.signature(_numba_shim.populate_array).parameters)[:2] == ["array", "data"]
    for name in ("create_struct_proxy", "alloca_once"):
        assert callable(getattr(_numba_shim.cgutils, name)), name
    assert callable(_numba_shim.impl_ret_borrowed)
    from fastkl import _simd

    assert isinstance(_simd._div_f32, _numba_shim.CPUDispatcher)
    intrinsics = [v for v in vars(_simd).values() if isinstance(v, _numba_shim.Intrinsic)]
    assert intrinsics and all(callable(i._defn) for i in intrinsics)


@supported((0, 60))
def test_compile_events():
    assert issubclass(_numba_shim.event.Listener, object)
    for name in ("install_listener", "Listener"):
        assert hasattr(_numba_shim.event, name), name
    for method in ("on_start", "on_end"):
        assert callable(getattr(_numba_shim.event.Listener, method)), method


def test_numba_cuda_names():
    pytest.importorskip("numba.cuda")
    try:
        import importlib.metadata

        importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("numba-cuda is not installed")
    cg = _numba_shim.cuda_cgutils()
    assert callable(cg.alloca_once)
    assert hasattr(_numba_shim.cuda_driver(), "get_device_count")
