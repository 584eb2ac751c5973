"""Every piece of numba's private API that fastkl relies on, in one place.

numba's public API covers the kernels; a few things it does not cover are reached through
numba's internals: where compiled kernels are cached, how the thread pool starts, the LLVM
helpers of the SIMD intrinsics, what numba keys its cache on, compile events, and the pieces
of numba-cuda that port those intrinsics to the GPU. They are imported here and only here, so
that a numba release that moves one breaks this module (and ``tests/test_numba_shim.py``, which
checks each name for the supported versions) rather than code across the package.

Supported: numba >= 0.60 (CPU) and numba-cuda >= 0.30 (GPU, imported on first use).
"""

from __future__ import annotations

import sys
from typing import Any

import numba
from numba.core import caching as _caching
from numba.core import cgutils, event
from numba.core.extending import _Intrinsic
from numba.core.imputils import impl_ret_borrowed
from numba.core.registry import CPUDispatcher
from numba.np.arrayobj import populate_array

__all__ = [
    "CPUDispatcher",
    "CacheLocator",
    "Intrinsic",
    "cgutils",
    "event",
    "host_cpu_features",
    "impl_ret_borrowed",
    "install_cache_locator",
    "launch_threads",
    "machine",
    "populate_array",
    "user_cache_dir",
]

#: numba's base class of cache locators (``ensure_cache_path``, ``get_cache_path``,
#: ``get_source_stamp``, ``get_disambiguator``, ``from_function``)
CacheLocator = _caching._CacheLocator
#: the class of functions that ``numba.extending.intrinsic`` returns
Intrinsic = _Intrinsic


def install_cache_locator(locator: type) -> bool:
    """Put ``locator`` first in the list numba asks for a kernel's cache; False where this
    numba has no such list."""
    impl = getattr(_caching, "CacheImpl", None) or getattr(_caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):
        return False
    if locator not in classes:
        classes.insert(0, locator)
    return True


def user_cache_dir() -> str:
    """numba's per-user cache directory (its own AppDirs)."""
    from numba.misc.appdirs import AppDirs

    return AppDirs(appname="numba", appauthor=False).user_cache_dir


def launch_threads() -> None:
    """Start numba's thread pool on the configured threading layer (a ValueError where no
    layer of the configured kind loads)."""
    from numba.np.ufunc import parallel

    parallel._launch_threads()


def machine() -> list[str]:
    """What numba's cache keys compiled code on: the target triple, the CPU and its features."""
    from numba.core.registry import cpu_target

    return [str(part) for part in cpu_target.target_context.codegen().magic_tuple()]


def host_cpu_features() -> str:
    """The feature string numba hands LLVM for CPU code: its own override, else the host's
    (minus AVX when numba disables it, which numba's helper applies)."""
    if numba.config.CPU_FEATURES is not None:
        return numba.config.CPU_FEATURES
    try:
        from numba.core.codegen import get_host_cpu_features

        return get_host_cpu_features()
    except ImportError:  # a numba that moved the helper: the host's, unfiltered
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_features().flatten()


# --- numba-cuda (imported by the CUDA modules only) --------------------------------------------


def cuda_cgutils() -> Any:
    """numba-cuda's LLVM helpers (the GPU's vector loads)."""
    from numba.cuda import cgutils as cuda_cg

    return cuda_cg


def simulator_array_type() -> type | None:
    """The device array class of numba-cuda's simulator, if the simulator is loaded."""
    module = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return None if module is None else module.FakeCUDAArray


def cuda_driver() -> Any:
    """numba-cuda's driver object (device count and properties without a context)."""
    import importlib

    return importlib.import_module("numba.cuda.cudadrv.driver").driver
