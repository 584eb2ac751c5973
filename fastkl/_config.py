"""Numba set-up shared by every fastkl kernel: compile options, the cache, the threading layer.

Everything here runs once, at import, before any kernel is decorated:

* ``JIT_OPTIONS`` / ``FASTMATH``: the options every CPU kernel is compiled with. The fastmath set
  leaves out ``nnan`` and ``ninf``: with them LLVM folds ``isnan`` to False and turns the +inf
  of a zero in q into 0 (see ../shared/design/NUMBA_NOTES.md). It also leaves out ``reassoc``,
  which lets LLVM choose the order of a sum: it chose differently in the process that compiled
  a kernel and in the processes that load it from the cache (numba links the parfor body and
  the helpers into the cached module, where LLVM optimizes them again), so a program's first
  run differed from its later runs in the last bits. The kernels write their sums as explicit
  lanes instead (``_cpu.LANES``): vectorized, in an order fixed by the source.
* A cache locator for fastkl's own files, in ``$FASTKL_CACHE_DIR`` if set, else
  ``$NUMBA_CACHE_DIR/fastkl``, the package's ``__pycache__``, the user's cache, a temporary
  directory (the first writable one). numba's cache key hashes only the file that holds the
  kernel, not the files of the functions it inlines, so editing ``_math.py`` would leave a stale
  kernel in the cache; and with no writable ``__pycache__`` (a read-only install) ``cache=True``
  fails at import. The locator below keys the cache on all of fastkl's kernel sources and falls
  back to a user or temporary directory.
* A threading layer that is safe for concurrent callers: numba's fallback layer, workqueue,
  aborts the process when two threads call a parallel kernel at once. We ask numba for a
  thread-safe layer (TBB, then OpenMP), preloading the TBB that pip installs into the
  environment, where numba does not look for it (numba issue 6108). If neither loads, kernels
  still run, serialized by a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import os
import sys
import tempfile
import threading
import types
from typing import Any

import numba

from . import _numba_shim

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn"})

#: Options for every jitted CPU function (kernels add ``parallel`` and ``cache``).
JIT_OPTIONS: dict[str, Any] = {
    "nogil": True,
    "error_model": "numpy",
    "fastmath": set(FASTMATH),
}

#: Bytes of one staged block of rows (a strided, broadcast-gathered or converted operand is
#: copied this many bytes at a time, so memory stays bounded whatever the input size).
BLOCK_BYTES = 1 << 22

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _kernel_sources() -> list[str]:
    """The modules whose code can end up in any cached kernel: the private modules (scalar
    terms, math, kernels, numba's set-up). A public module that compiles kernels of its own
    (pairwise, bench) adds its own source to its kernels' stamp; editing the pure Python glue
    (api, cli) keeps the cache, as does editing the private modules that hold no CPU kernel
    code (the CUDA modules, DLPack, the warm-up)."""
    paths = glob.glob(os.path.join(_PACKAGE_DIR, "_*.py"))
    paths.append(os.path.join(_PACKAGE_DIR, "divergences.py"))  # which terms each kernel binds
    return sorted(p for p in paths if os.path.basename(p) not in _NO_CPU_KERNELS)


#: Private modules with no code of any other module's CPU kernels: editing them keeps the
#: cache of the others (the training kernels of ``_cpu_train`` add its source to their own
#: stamp, as the public modules do).
_NO_CPU_KERNELS = frozenset(
    {"_backend_cpu.py", "_cpu_train.py", "_cuda.py", "_cuda_bench.py", "_cuda_device.py",
     "_cuda_driver.py", "_cuda_train.py", "_dlpack.py", "_driver.py", "_prepare.py",
     "_train.py", "_version.py", "_warmup.py", "__init__.py"}
)  # fmt: skip


def _capi_sources() -> list[str]:
    """What the C API's cfuncs compile: their module and the declarations (the status codes
    are compiled in). The library builder is not among them."""
    capi = os.path.join(_PACKAGE_DIR, "capi")
    return [os.path.join(capi, name) for name in ("_cfuncs.py", "_decl.py", "fastkl.cdef")]


def _source_fingerprint(paths: list[str] | None = None) -> str:
    """A hash of the kernel sources: code from several files is inlined into each kernel
    (_math, _simd, _cpu), so a change to any of them must invalidate every kernel."""
    digest = hashlib.sha256(numba.__version__.encode())
    for path in _kernel_sources() if paths is None else paths:
        digest.update(os.path.relpath(path, _PACKAGE_DIR).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _cache_dir_candidates() -> list[str]:
    candidates = []
    if os.environ.get("FASTKL_CACHE_DIR"):  # fastkl's own (libfastkl sets it to its DIR)
        candidates.append(os.environ["FASTKL_CACHE_DIR"])
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR: the user's choice for numba
        candidates.append(os.path.join(numba.config.CACHE_DIR, "fastkl"))
    candidates.append(os.path.join(_PACKAGE_DIR, "__pycache__", "numba"))
    candidates.append(os.path.join(_numba_shim.user_cache_dir(), "fastkl"))
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(os.path.join(tempfile.gettempdir(), f"fastkl-numba-cache-{uid}"))
    return candidates


class _FastklCacheLocator(_numba_shim.CacheLocator):
    """Cache locator for kernels defined in fastkl's own modules (see the module docstring).

    The C API's cfuncs (``fastkl/capi``) link the kernels, so they live in a subdirectory keyed
    by their own sources as well: editing them leaves the kernels' cache alone.
    """

    _cache_path: str | None = None
    _fingerprint: str | None = None
    _capi_fingerprint: str | None = None

    def __init__(self, py_func: Any, py_file: str, capi: bool = False) -> None:
        self._py_file = py_file  # numba's warnings name it
        self._lineno = py_func.__code__.co_firstlineno
        self._capi = capi
        name = os.path.basename(py_file)
        # a module outside the shared fingerprint (public ones, the CUDA path's) adds its own
        own = not capi and (not name.startswith("_") or name in _NO_CPU_KERNELS)
        self._own = _source_fingerprint([os.path.abspath(py_file)]) if own else ""

    @classmethod
    def _resolve(cls) -> str | None:
        if cls._cache_path is None:
            cls._fingerprint = _source_fingerprint()
            for base in _cache_dir_candidates():
                path = os.path.join(base, cls._fingerprint)
                if _writable_dir(path):
                    cls._cache_path = path
                    break
        return cls._cache_path

    @classmethod
    def _resolve_capi(cls) -> str | None:
        base = cls._resolve()
        if base is None:
            return None
        if cls._capi_fingerprint is None:
            cls._capi_fingerprint = _source_fingerprint(_capi_sources())
        path = os.path.join(base, f"capi-{cls._capi_fingerprint}")
        return path if _writable_dir(path) else None

    def ensure_cache_path(self) -> None:
        pass  # _resolve only returns a directory it could write to

    def get_cache_path(self) -> str:
        return (self._resolve_capi() if self._capi else self._resolve()) or ""

    def get_source_stamp(self) -> str | None:
        if self._capi:
            return f"{self._fingerprint}-{self._capi_fingerprint}"
        return f"{self._fingerprint}-{self._own}" if self._own else self._fingerprint

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> _FastklCacheLocator | None:
        folder = os.path.dirname(os.path.abspath(py_file))
        capi = folder == os.path.join(_PACKAGE_DIR, "capi")
        if folder != _PACKAGE_DIR and not capi:
            return None
        if (cls._resolve_capi() if capi else cls._resolve()) is None:
            return None  # nowhere writable: numba's own locators get their turn, then no cache
        return cls(py_func, py_file, capi)


def _install_cache_locator() -> None:
    if _numba_shim.install_cache_locator(_FastklCacheLocator):
        return
    if not _writable_dir(os.path.join(_PACKAGE_DIR, "__pycache__")):
        # A numba without the hook: at least keep a read-only install importable.
        numba.config.CACHE_DIR = _cache_dir_candidates()[-1]


def cache_dir(capi: bool = False) -> str | None:
    """The directory that holds fastkl's compiled kernels, or with ``capi`` the C API's
    cfuncs (None: caching is off)."""
    return _FastklCacheLocator._resolve_capi() if capi else _FastklCacheLocator._resolve()


# --- threading layer -------------------------------------------------------------------------

_layer_lock = threading.Lock()
_kernel_lock: threading.Lock | None = None
_threads_ready = False


def _preload_tbb() -> None:
    for libdir in {os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")}:
        for path in sorted(glob.glob(os.path.join(libdir, "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue


def _choose_threading_layer() -> None:
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return  # an explicit choice by the user stands
    if numba.config.THREADING_LAYER in ("default", "workqueue"):
        numba.config.THREADING_LAYER = "threadsafe"
    if sys.platform.startswith("linux"):
        _preload_tbb()


def _launch_threads() -> None:
    try:
        _numba_shim.launch_threads()
    except ValueError:
        # No thread-safe layer could be loaded: fall back to numba's default order.
        numba.config.THREADING_LAYER = "default"
        _numba_shim.launch_threads()


def ensure_threads() -> None:
    """Start numba's thread pool once and decide whether kernel calls must be serialized."""
    global _threads_ready, _kernel_lock
    if _threads_ready:
        return
    with _layer_lock:
        if _threads_ready:
            return
        _launch_threads()
        if numba.threading_layer() == "workqueue":
            _kernel_lock = threading.Lock()
        _threads_ready = True


def kernel_guard() -> contextlib.AbstractContextManager[Any]:
    """A context for one parallel kernel call: a lock only under the unsafe workqueue layer."""
    ensure_threads()
    return _kernel_lock if _kernel_lock is not None else contextlib.nullcontext()


def threading_layer() -> str:
    """The numba threading layer fastkl's kernels run on (starting the pool if needed)."""
    ensure_threads()
    return numba.threading_layer()


# --- one definition per scalar formula, compiled per target ---------------------------------


def compile_scalars(
    module: types.ModuleType, decorator: Any, overrides: dict[str, Any] | None = None
) -> types.SimpleNamespace:
    """Compile every public function of ``module`` with ``decorator``.

    Each function is rebuilt with a fresh globals dict in which its siblings are the compiled
    versions, so a formula that calls another (``kl_term_log`` calling ``log``) resolves to the
    same target. ``overrides`` replaces names for one target (e.g. a vectorizable ``log`` on
    the CPU, libdevice's on CUDA) without touching the definitions, public defaults included
    (``log_ratio_core``).
    """
    overrides = overrides or {}
    namespace: dict[str, Any] = dict(vars(module))
    namespace.update(overrides)
    compiled = {}
    for name in module.__all__:
        if name in overrides:  # the target's own version of a portable default
            compiled[name] = overrides[name]
            continue
        fn = getattr(module, name)
        rebuilt = types.FunctionType(
            fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__
        )
        rebuilt.__module__ = module.__name__
        rebuilt.__qualname__ = fn.__qualname__
        rebuilt.__doc__ = fn.__doc__
        compiled[name] = decorator(rebuilt)
    namespace.update(compiled)
    return types.SimpleNamespace(**compiled)


class Unbound:
    """A template's placeholder: a global name each specialization binds (``specialize``).

    Declared beside the templates that read it, with what it means. A template whose
    placeholder was left unbound raises, in ``specialize`` and if ever run: it never computes
    with a stand-in value.
    """

    def __init__(self, meaning: str) -> None:
        self.meaning = meaning

    def __repr__(self) -> str:
        return f"Unbound({self.meaning!r})"

    def __bool__(self) -> bool:
        raise TypeError(f"an unbound template placeholder ({self.meaning}) was read")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"an unbound template placeholder ({self.meaning}) was called")


def specialize(template: Any, name: str, bindings: dict[str, Any]) -> Any:
    """A copy of the plain function ``template`` whose global names ``bindings`` are replaced.

    Kernels are written once as templates over a few placeholders (:class:`Unbound`: the form
    pair's flags, the divergence's terms, the helpers compiled for the same specialization)
    and specialized per spec and form pair: each variant compiles only its own code, lazily,
    and caches under its own name. A placeholder the template reads and ``bindings`` leaves
    unbound is a TypeError here, before anything compiles.
    """
    namespace = dict(template.__globals__)
    namespace.update(bindings)
    unbound = [n for n in template.__code__.co_names if isinstance(namespace.get(n), Unbound)]
    if unbound:
        raise TypeError(f"{name}: template {template.__name__} leaves {unbound} unbound")
    fn = types.FunctionType(
        template.__code__, namespace, name, template.__defaults__, template.__closure__
    )
    fn.__module__ = template.__module__
    fn.__qualname__ = name
    fn.__doc__ = template.__doc__
    return fn


_install_cache_locator()
_choose_threading_layer()

#: ``cache`` for every kernel: False where no candidate directory is writable (a read-only
#: install, and no writable cache, home or temporary directory), where numba's ``cache=True``
#: would fail at import. The kernels then compile in memory, once per process.
CACHE = cache_dir() is not None
