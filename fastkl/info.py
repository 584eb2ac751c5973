"""What fastkl runs on, for bug reports (``fastkl info [--json]``).

``collect()`` gathers the versions, the platform, the threading layer, the SIMD features LLVM
compiles the kernels for, numba's cache, CUDA and the C API's build status into a JSON-ready
dict; ``format_text()`` lays it out for pasting into an issue. Neither compiles a kernel: they
read the configuration, the cache directories and package metadata only, so they work (and stay
fast) on a machine whose cache is empty.

>>> import fastkl
>>> from fastkl.info import collect, format_text
>>> info = collect()
>>> info["versions"]["fastkl"] == fastkl.__version__
True
>>> sorted(info)
['cache', 'capi', 'cuda', 'environment', 'platform', 'simd', 'threading', 'versions']
>>> print(format_text(info).splitlines()[2])
Versions
"""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
import os
import platform
import shlex
import shutil
import sys
import sysconfig
import warnings
from typing import Any

import llvmlite
import llvmlite.binding as llvm
import numba
import numpy as np

from . import _config
from ._version import __version__

__all__ = ["collect", "format_text"]

#: Packages fastkl works with, reported by their installed metadata: importing them would cost
#: time and could have side effects (dask and pyarrow start machinery; torch is never touched).
PEERS = ("scipy", "cffi", "tbb", "dask", "pyarrow")

#: LLVM feature names worth showing, in order (x86, then ARM, then POWER).
SIMD_FEATURES = (
    "sse2",
    "sse4.1",
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "neon",
    "asimd",
    "sve",
    "sve2",
    "altivec",
    "vsx",
)

# Widest float vector each feature gives, widest first. Plain AVX already has 256-bit float
# arithmetic; SVE is left at NEON's 128 bits because LLVM vectorizes fixed-width loops with NEON.
_VECTOR_BITS = (
    ("avx512f", 512),
    ("avx", 256),
    ("sse2", 128),
    ("neon", 128),
    ("asimd", 128),
    ("altivec", 128),
    ("vsx", 128),
)

BUILD_COMMAND = "fastkl build-capi --outdir DIR"

_TITLES = {
    "versions": "Versions",
    "platform": "Platform",
    "threading": "Threading",
    "simd": "SIMD",
    "cache": "Numba cache",
    "cuda": "CUDA",
    "capi": "C API (libfastkl)",
    "environment": "Environment (NUMBA_*)",
}

# Keys shown in the text only when set: an empty "reason" line is noise in a report.
_ONLY_IF_SET = frozenset({"reason", "error", "note"})


def _error(exc: BaseException) -> str:
    """An exception as one line (numba's CUDA errors span several), short enough to paste."""
    # numba's driver errors end in a stray ":"
    text = " ".join(str(exc).split()).rstrip(" :") or "no message"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- sections ----------------------------------------------------------------------------------


def _versions() -> dict[str, Any]:
    versions: dict[str, Any] = {
        "fastkl": __version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "llvm": ".".join(map(str, llvm.llvm_version_info)),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
    for name in PEERS:
        versions[name] = _dist_version(name)
    return versions


def _cpu_model() -> str | None:
    """The CPU's marketing name (LLVM's name is its microarchitecture)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _platform() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = os.cpu_count()
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu": llvm.get_host_cpu_name(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,  # what numba sizes its pool by (affinity, cgroups' cpusets)
        "python_executable": sys.executable,
    }


def _threading() -> dict[str, Any]:
    section: dict[str, Any] = {
        "layer": None,
        "requested": numba.config.THREADING_LAYER,
        "num_threads": None,
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "serialized": None,
        "error": None,
    }
    try:
        # Starts numba's thread pool exactly as a kernel call would: the layer is only known
        # once it is loaded. No kernel is compiled.
        section["layer"] = _config.threading_layer()
        section["num_threads"] = numba.get_num_threads()
        section["serialized"] = _config._kernel_lock is not None
    except Exception as exc:  # a layer that fails to load must not hide the rest of the report
        section["error"] = _error(exc)
    return section


def _parse_features(flat: str) -> dict[str, bool]:
    """LLVM's "+avx,-sse4a" form as name -> enabled."""
    features = {}
    for item in flat.split(","):
        item = item.strip()
        if item[:1] in "+-" and len(item) > 1:
            features[item[1:]] = item[0] == "+"
    return features


def _target_features() -> str:
    """The feature string numba hands LLVM for CPU code: its own override, else the host's
    (minus AVX when numba disables it, which numba's helper applies)."""
    from ._numba_shim import host_cpu_features

    return host_cpu_features()


def _simd() -> dict[str, Any]:
    features = _parse_features(_target_features())
    enabled = [name for name in SIMD_FEATURES if features.get(name)]
    bits = next((b for name, b in _VECTOR_BITS if features.get(name)), None)
    overrides = {
        name: os.environ[name]
        for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_ENABLE_AVX")
        if name in os.environ
    }
    return {
        "target_cpu": numba.config.CPU_NAME or llvm.get_host_cpu_name(),
        "features": enabled,
        "vector_bits": bits,
        "float32_lanes": bits // 32 if bits else 1,
        "float64_lanes": bits // 64 if bits else 1,
        "overrides": overrides,
    }


def _dir_stats(path: str | None) -> dict[str, Any]:
    """A cache directory's state; its files only (the C API's directory sits inside the
    kernels' one and is counted on its own)."""
    stats: dict[str, Any] = {
        "path": path,
        "exists": False,
        "writable": False,
        "index_files": 0,
        "size_bytes": 0,
    }
    if path is None or not os.path.isdir(path):
        return stats
    stats["exists"] = True
    stats["writable"] = os.access(path, os.W_OK)
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    stats["size_bytes"] += entry.stat(follow_symlinks=False).st_size
                    stats["index_files"] += int(entry.name.endswith(".nbi"))
    except OSError as exc:
        stats["error"] = _error(exc)
    return stats


def _cache() -> dict[str, Any]:
    section: dict[str, Any] = {"numba_cache_dir": numba.config.CACHE_DIR or None}
    for name, capi in (("kernels", False), ("capi", True)):
        try:
            section[name] = _dir_stats(_config.cache_dir(capi=capi))
        except Exception as exc:
            section[name] = dict(_dir_stats(None), error=_error(exc))
    return section


def _cuda_device_info(cuda: Any, section: dict[str, Any]) -> None:
    """Fill in the devices and versions from a CUDA driver that loaded. Each query on its own:
    a missing runtime library must not hide the device name."""
    from ._numba_shim import cuda_driver

    drv = cuda_driver()
    section["device_count"] = drv.get_device_count()
    if section["device_count"]:
        device = drv.get_device(0)  # no context is created: the GPU's memory is left alone
        name = device.name
        section["device"] = name.decode() if isinstance(name, bytes) else str(name)
        section["compute_capability"] = ".".join(map(str, device.compute_capability))
    try:
        section["driver_version"] = ".".join(map(str, drv.get_version()))
    except Exception:
        pass
    try:
        section["runtime_version"] = ".".join(map(str, cuda.runtime.get_version()))
    except Exception:
        pass


def _release(version: str | None) -> tuple[int, ...]:
    """The leading numbers of a version string ("0.30.4" -> (0, 30, 4))."""
    parts = []
    for piece in (version or "").split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


#: The newest numba-cuda release known not to compile any kernel with numpy 2.5 (it calls
#: numpy.row_stack, which numpy 2.5 removed); checked 2026-12-04 with 0.30.4.
NUMBA_CUDA_WITHOUT_NUMPY_25 = (0, 30, 4)


def cuda_compatibility(
    numpy_version: str | None = None,
    numba_cuda_version: str | None = None,
    has_row_stack: bool | None = None,
) -> str | None:
    """Why the installed numba-cuda cannot compile kernels with the installed numpy, as one
    sentence saying what to install; None where the pair works (or numba-cuda is absent).
    The arguments override what is installed (for tests)."""
    numpy_version = numpy_version or np.__version__
    if numba_cuda_version is None:
        numba_cuda_version = _dist_version("numba-cuda")
    if numba_cuda_version is None:
        return None
    if has_row_stack is None:
        has_row_stack = hasattr(np, "row_stack")
    too_old = _release(numba_cuda_version) <= NUMBA_CUDA_WITHOUT_NUMPY_25
    if not has_row_stack and too_old:
        return (
            f"numba-cuda {numba_cuda_version} cannot compile kernels with numpy "
            f"{numpy_version} (it calls numpy.row_stack, removed in numpy 2.5): install "
            "'numpy<2.5' (pip install 'numpy<2.5', or reinstall 'fastkl[cuda]'), or a "
            "numba-cuda release that supports numpy 2.5"
        )
    return None


def cuda_status() -> dict[str, Any]:
    """The CUDA section of :func:`collect`: whether a GPU is usable, and if not, why."""
    section: dict[str, Any] = {
        "available": False,
        "simulator": bool(numba.config.ENABLE_CUDASIM),
        "device": None,
        "device_count": 0,
        "compute_capability": None,
        "driver_version": None,
        "runtime_version": None,
        "numba_cuda": _dist_version("numba-cuda"),  # NVIDIA's package; None: numba's built-in
        "reason": None,
    }
    problem = cuda_compatibility()
    if problem is not None:
        section["reason"] = problem
        return section
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's built-in CUDA target warns it is deprecated
            cuda = importlib.import_module("numba.cuda")
            if section["simulator"]:
                devices = cuda.list_devices()
                section["available"] = True
                section["device"] = "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
                section["device_count"] = len(devices)
                section["compute_capability"] = ".".join(map(str, devices[0].compute_capability))
                return section
            section["available"] = bool(cuda.is_available())
            try:
                _cuda_device_info(cuda, section)
            except Exception as exc:  # is_available() swallows the driver's reason: ask again
                section["reason"] = _error(exc)
    except Exception as exc:
        section["available"] = False
        section["reason"] = _error(exc)
        return section
    if not section["available"] and section["reason"] is None:
        section["reason"] = (
            "no CUDA device found"
            if not section["device_count"]
            else "the CUDA driver loads but NVVM (libnvvm) was not found"
        )
    return section


def _compiler() -> tuple[str | None, str | None]:
    """The C compiler cffi would run: $CC first (setuptools honours it), else Python's own."""
    command = os.environ.get("CC") or sysconfig.get_config_var("CC")
    if not command:
        return None, None
    try:
        name = shlex.split(command)[0]
    except (ValueError, IndexError):
        return command, None
    return name, shutil.which(name)


def _capi() -> dict[str, Any]:
    cffi_version = _dist_version("cffi")
    compiler, compiler_path = _compiler()
    section: dict[str, Any] = {
        "status": "",
        "ready": False,
        "marker": None,
        "cffi": cffi_version,
        "compiler": compiler,
        "compiler_path": compiler_path,
        "libpython": None,
        "build_command": BUILD_COMMAND,
        "error": None,
    }
    problems = []
    try:
        from .capi import _build, _cfuncs

        marker = _cfuncs._ready_marker()
        section["marker"] = marker
        section["ready"] = marker is not None and os.path.exists(marker)
        try:
            libdir = _build._libpython_dir()
            section["libpython"] = os.path.join(libdir, sysconfig.get_config_var("LDLIBRARY"))
        except RuntimeError:
            problems.append("no shared libpython (Python built without --enable-shared)")
    except Exception as exc:
        section["error"] = _error(exc)
        problems.append("the C API modules failed to import")
    if numba.config.DISABLE_JIT:
        problems.insert(0, "NUMBA_DISABLE_JIT is set")
    if cffi_version is None:
        problems.append('cffi is not installed (pip install "fastkl[capi]")')
    if compiler_path is None:
        problems.append(f"no C compiler ({compiler or 'CC'} not found)")
    if problems:
        section["status"] = "cannot build: " + "; ".join(problems)
    elif section["ready"]:
        section["status"] = "ready: the cfuncs are compiled and cached"
    else:
        section["status"] = (
            "buildable: `fastkl build-capi` compiles the kernels and entry points into its DIR "
            "(a few minutes on 2 cores; less for what this environment compiled already)"
        )
    return section


def _environment() -> dict[str, str]:
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith(("NUMBA_", "FASTKL_"))
    }


# --- public ------------------------------------------------------------------------------------


def collect() -> dict[str, Any]:
    """Describe fastkl's environment: versions, platform, threads, SIMD, cache, CUDA, C API.

    Nothing is compiled: the report reads configuration, package metadata and the cache
    directories, so it works on a machine whose numba cache is empty. It starts numba's thread
    pool (the threading layer is only known once loaded) and may create fastkl's (empty) cache
    directories, as the first kernel call would. Every probe that can fail (a threading layer,
    the CUDA driver, the C API's modules) reports its error in its section instead of raising.

    Returns
    -------
    dict
        A JSON-serializable dict of sections, each a dict:

        ``versions``
            fastkl, numba, llvmlite, llvm, numpy, python, python_implementation and the
            installed peers (scipy, cffi, tbb, dask, pyarrow; None when not installed).
        ``platform``
            system, release, machine, cpu (LLVM's name), cpu_model, logical_cpus,
            usable_cpus, python_executable.
        ``threading``
            layer (numba's, as fastkl runs on it), requested, num_threads,
            numba_num_threads, serialized (calls take a lock: only the workqueue layer
            loaded), error.
        ``simd``
            target_cpu, features (the relevant enabled ones), vector_bits (the widest
            vectors they allow; LLVM may use narrower ones on CPUs it tunes for 256 bits,
            such as Skylake-X) and the float32_lanes / float64_lanes those hold, overrides
            (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES, NUMBA_ENABLE_AVX when set).
        ``cache``
            numba_cache_dir (NUMBA_CACHE_DIR), then ``kernels`` and ``capi``: path, exists,
            writable, index_files (``*.nbi``: one per cached function), size_bytes.
        ``cuda``
            available, simulator, device (device 0), device_count, compute_capability,
            driver_version, runtime_version, numba_cuda (its version, None when numba's
            built-in target is used), reason (why not available).
        ``capi``
            status (a one-line summary), ready (cfuncs compiled and cached), marker, cffi,
            compiler, compiler_path, libpython, build_command, error.
        ``environment``
            The NUMBA_* environment variables that are set.

    Examples
    --------
    >>> info = collect()
    >>> info["simd"]["float32_lanes"] * 32 == (info["simd"]["vector_bits"] or 32)
    True
    """
    return {
        "versions": _versions(),
        "platform": _platform(),
        "threading": _threading(),
        "simd": _simd(),
        "cache": _cache(),
        "cuda": cuda_status(),
        "capi": _capi(),
        "environment": _environment(),
    }


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, int) and key.endswith("_bytes"):
        return _size(value)
    return str(value)


def _lines(section: dict[str, Any], indent: str) -> list[str]:
    shown = {k: v for k, v in section.items() if not (k in _ONLY_IF_SET and v is None)}
    if not shown:
        return [f"{indent}(none)"]
    width = max(len(k) for k in shown)
    lines = []
    for key, value in shown.items():
        if isinstance(value, dict):
            if value:
                lines.append(f"{indent}{key}")
                lines += _lines(value, indent + "  ")
            else:
                lines.append(f"{indent}{key:<{width}} : -")
        else:
            lines.append(f"{indent}{key:<{width}} : {_value(key, value)}")
    return lines


def format_text(info: dict[str, Any]) -> str:
    """``collect()``'s report as aligned text for a bug report: one heading per section, one
    ``key : value`` line per entry (None shows as ``-``, sizes in KiB/MiB).

    Parameters
    ----------
    info : dict
        What ``collect()`` returned (or its JSON, loaded back).

    Returns
    -------
    str
        The report, without a trailing newline.

    Examples
    --------
    >>> report = format_text({"versions": {"fastkl": "1.0", "scipy": None}})
    >>> print(report)
    fastkl 1.0
    <BLANKLINE>
    Versions
      fastkl : 1.0
      scipy  : -
    """
    versions = info.get("versions", {})
    plat = info.get("platform", {})
    head = f"fastkl {versions.get('fastkl', '?')}"
    if plat:
        head += (
            f" on {plat.get('system')} {plat.get('machine')}"
            f" ({versions.get('python_implementation')} {versions.get('python')})"
        )
    lines = [head]
    for name, section in info.items():
        lines += ["", _TITLES.get(name, name.title())]
        lines += _lines(section, "  ") if isinstance(section, dict) else [f"  {section}"]
    return "\n".join(lines)
