"""Build ``libfastkl``: cffi's embedding support around the numba cfuncs.

The library is a small C layer. Each exported function checks that the runtime started (one
atomic load), sets the calling thread's numba thread count if it changed, and calls the numba
cfunc through a function pointer: no Python, no GIL. The first call (or ``fastkl_init``) runs
``_fastkl_boot``, an ``extern "Python"`` function: cffi starts the embedded interpreter once,
under its own lock, and the boot (``_runtime.boot``) loads the cfuncs and stores their
addresses in the C table.

The library starts the interpreter itself, configured as the python that built it (its
executable path is baked in), so the interpreter finds that environment (a venv's
``pyvenv.cfg``, its site-packages, its editable installs) exactly as that python would: a C
program needs nothing set but the library path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable

from .. import __version__, _config
from . import _cfuncs, _decl

MODULE = "_fastkl_capi"

#: What compiling the library needs beyond fastkl's own dependencies: the ``capi`` extra.
BUILD_TOOLS = ("cffi", "setuptools")

# The C layer around the cfunc table. Names with a double underscore are static.
_PRELUDE = """\
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include "fastkl.h"

static int _fastkl_boot(void);  /* extern "Python": cffi starts the interpreter first */

static int fastkl__ready;             /* 1 once the table below is set (release/acquire) */
static int fastkl__serialize;         /* 1 under a threading layer unsafe for concurrent callers */
static int fastkl__max_threads;       /* numba's thread count at start-up */
static int fastkl__threads;           /* fastkl_set_num_threads's count; 0: all */
static __thread int fastkl__applied;  /* the count this thread last gave numba; 0: none yet */
static pthread_mutex_t fastkl__lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t fastkl__start_lock = PTHREAD_MUTEX_INITIALIZER;
static int (*fastkl__set_threads)(int);

/* This library's own path: its compiled kernels lie beside it. */
static const char *_fastkl_library_path(void)
{
    Dl_info info;
    if (dladdr((void *)&fastkl__ready, &info) && info.dli_fname != NULL)
        return info.dli_fname;
    return "";
}
"""

_RUNTIME = """\
/* Start the interpreter as the python that built the library starts: its venv, its packages.
   Left to cffi, libpython would search PATH for "python3" and take that one's prefix. */
static int fastkl__start_python(void)
{
    int status = FASTKL_OK;
    pthread_mutex_lock(&fastkl__start_lock);
    if (!Py_IsInitialized()) {
        PyConfig config;
        PyStatus st;
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0; /* the program's signals stay its own */
        config.write_bytecode = 0;          /* nothing written outside the library's DIR */
        st = PyConfig_SetBytesString(&config, &config.executable, FASTKL__PYTHON);
        if (!PyStatus_Exception(st))
            st = PyConfig_SetBytesString(&config, &config.program_name, FASTKL__PYTHON);
        if (!PyStatus_Exception(st))
            st = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(st)) {
            fprintf(stderr, "fastkl: could not start Python as %s: %s\\n", FASTKL__PYTHON,
                    st.err_msg != NULL ? st.err_msg : "exit requested");
            status = FASTKL_ERR_INIT;
        } else {
            PyEval_SaveThread(); /* cffi and the boot take the GIL when they need it */
        }
    }
    pthread_mutex_unlock(&fastkl__start_lock);
    return status;
}

static void _fastkl_set_runtime(int max_threads, int serialize)
{
    fastkl__max_threads = max_threads;
    fastkl__serialize = serialize;
    __atomic_store_n(&fastkl__ready, 1, __ATOMIC_RELEASE);
}

CFFI_DLLEXPORT int fastkl_init(void)
{
    int status;
    if (__atomic_load_n(&fastkl__ready, __ATOMIC_ACQUIRE))
        return FASTKL_OK;
    status = fastkl__start_python();
    if (status != FASTKL_OK)
        return status;
    status = _fastkl_boot();
    /* A boot that never ran (the init code failed: cffi returns 0) did not set the table. */
    if (status == FASTKL_OK && !__atomic_load_n(&fastkl__ready, __ATOMIC_ACQUIRE))
        status = FASTKL_ERR_INIT;
    return status;
}

static int fastkl__enter(void)
{
    int want;
    if (!__atomic_load_n(&fastkl__ready, __ATOMIC_ACQUIRE)) {
        int status = fastkl_init();
        if (status != FASTKL_OK)
            return status;
    }
    /* numba's thread count is per thread: give it to each thread that calls, once per change */
    want = __atomic_load_n(&fastkl__threads, __ATOMIC_RELAXED);
    if (want == 0)
        want = fastkl__max_threads;
    if (want != fastkl__applied) {
        fastkl__set_threads(want);
        fastkl__applied = want;
    }
    if (fastkl__serialize)
        pthread_mutex_lock(&fastkl__lock);
    return FASTKL_OK;
}

static void fastkl__leave(void)
{
    if (fastkl__serialize)
        pthread_mutex_unlock(&fastkl__lock);
}

CFFI_DLLEXPORT int fastkl_set_num_threads(int n)
{
    int status = fastkl_init();
    if (status != FASTKL_OK)
        return status;
    if (n < 0 || n > fastkl__max_threads)
        return FASTKL_ERR_THREADS;
    __atomic_store_n(&fastkl__threads, n, __ATOMIC_RELAXED);
    return FASTKL_OK;
}
"""

# What the library's Python side may call (besides the extern "Python" boot).
_CDEF = """\
extern "Python" int _fastkl_boot(void);
static const char *_fastkl_library_path(void);
static void _fastkl_set_entry(int index, uintptr_t address);
static void _fastkl_set_runtime(int max_threads, int serialize);
"""

# Runs inside the embedded interpreter when it starts; {settings} is baked in by the build.
_INIT_CODE = """\
import importlib.util
import sys

from {module} import ffi, lib

BUILD = {settings!r}

# fastkl run from a source tree that was never installed
if importlib.util.find_spec("fastkl") is None:
    sys.path.append(BUILD["package_parent"])


@ffi.def_extern(error=BUILD["err_init"])
def _fastkl_boot():
    import os

    # The kernels and cfuncs compiled by the build lie beside the library, wherever it was
    # copied: fastkl's cache is there, whatever the caller's environment says.
    # Set for the boot only (a compile it starts runs in child processes that need it too),
    # then the program's environment is as it was. A process that imported fastkl before
    # (Python loading the library) keeps the cache it has.
    here = os.path.dirname(ffi.string(lib._fastkl_library_path()).decode())
    previous = os.environ.get("FASTKL_CACHE_DIR")
    os.environ["FASTKL_CACHE_DIR"] = os.path.join(here, BUILD["cache"])
    try:
        from fastkl.capi import _runtime

        return _runtime.boot(lib, BUILD["version"])
    finally:
        if previous is None:
            del os.environ["FASTKL_CACHE_DIR"]
        else:
            os.environ["FASTKL_CACHE_DIR"] = previous
"""

#: The directory beside ``libfastkl.so`` that holds its compiled code (fastkl's numba cache).
CACHE = "fastkl-cache"


def _typedef(function: _decl.Function) -> str:
    return f"typedef {function.prototype(f'(*fastkl__{function.name[7:]}_fn)')};"


def c_source() -> str:
    """The library's C source (it includes ``fastkl.h``, so the compiler checks every exported
    definition against the header's declaration)."""
    table = _decl.DIVERGENCE_FUNCTIONS
    parts = [f"#define FASTKL__PYTHON {_c_string(sys.executable)}", _PRELUDE]
    parts += [_typedef(f) for f in table]
    parts += [f"static fastkl__{f.name[7:]}_fn fastkl__{f.name[7:]};" for f in table]
    cases = [
        f"    case {i}: fastkl__{f.name[7:]} = (fastkl__{f.name[7:]}_fn)address; break;"
        for i, f in enumerate(table)
    ]
    cases.append(f"    case {len(table)}: fastkl__set_threads = (int (*)(int))address; break;")
    parts.append(
        "\nstatic void _fastkl_set_entry(int index, uintptr_t address)\n{\n"
        "    switch (index) {\n" + "\n".join(cases) + "\n    }\n}\n"
    )
    parts.append(_RUNTIME)
    for f in table:
        args = ", ".join(p.name for p in f.params)
        parts.append(
            f"CFFI_DLLEXPORT {f.prototype()}\n{{\n"
            "    int status = fastkl__enter();\n"
            "    if (status != FASTKL_OK)\n"
            "        return status;\n"
            f"    status = fastkl__{f.name[7:]}({args});\n"
            "    fastkl__leave();\n"
            "    return status;\n}\n"
        )
    messages = "\n".join(
        f"    case {name}: return {_c_string(message)};"
        for name, (_, message) in _decl.STATUS.items()
    )
    parts.append(
        "CFFI_DLLEXPORT const char *fastkl_strerror(int status)\n{\n"
        f"    switch (status) {{\n{messages}\n"
        '    default: return "unknown fastkl status code";\n    }\n}\n'
    )
    parts.append(
        "CFFI_DLLEXPORT const char *fastkl_version(void)\n{\n"
        f"    return {_c_string(__version__)};\n}}\n"
    )
    return "\n".join(parts)


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _settings() -> dict[str, object]:
    import fastkl

    return {
        "package_parent": os.path.dirname(os.path.dirname(os.path.abspath(fastkl.__file__))),
        "version": __version__,
        "err_init": _decl.ERR_INIT,
        "cache": CACHE,
    }


def _libpython_dir() -> str:
    """The directory of the shared libpython the library links, or a RuntimeError."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    if not (
        sysconfig.get_config_var("Py_ENABLE_SHARED") and os.path.exists(os.path.join(libdir, name))
    ):
        raise RuntimeError(
            "build-capi needs a Python built with a shared libpython (--enable-shared); "
            f"{sys.executable} has none"
        )
    return libdir


_CTYPES = {
    "const float *": ctypes.POINTER(ctypes.c_float),
    "const double *": ctypes.POINTER(ctypes.c_double),
    "float *": ctypes.POINTER(ctypes.c_float),
    "double *": ctypes.POINTER(ctypes.c_double),
    "const char *": ctypes.c_char_p,
    "int64_t": ctypes.c_int64,
    "int": ctypes.c_int,
}


def load(path: str) -> ctypes.CDLL:
    """A built libfastkl loaded with ctypes into this Python process, every declared function
    typed from fastkl.cdef, its runtime started (``fastkl_init``).

    cffi's embedded libraries start Python behind a spin lock on a field of the capsule type
    (``PyCapsule_Type.tp_version_tag`` before Python 3.12), which they expect to be 0; in a
    running interpreter any attribute lookup on a capsule's type sets it (importing torch
    does), and the first call would then spin forever. ``PyType_Modified`` resets it (it only
    empties the type's attribute cache) just before the library starts.
    """
    lib = ctypes.CDLL(path)
    for function in _decl.FUNCTIONS:
        fn = getattr(lib, function.name)
        fn.restype = _CTYPES[function.restype]
        fn.argtypes = [_CTYPES[p.ctype] for p in function.params]
    if sys.version_info < (3, 12):
        modified = ctypes.pythonapi.PyType_Modified
        modified.argtypes = [ctypes.py_object]
        modified.restype = None
        modified(_CAPSULE_TYPE)
    status = lib.fastkl_init()
    if status != 0:
        raise RuntimeError(f"{path}: fastkl_init failed with status {status}")
    return lib


def _capsule_type() -> type:
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return type(new(1, None, None))


_CAPSULE_TYPE = _capsule_type()


def _pkgconfig(prefix: str) -> str:
    return (
        f"prefix={prefix}\n"
        "libdir=${prefix}/lib\n"
        "includedir=${prefix}/include\n"
        "\n"
        "Name: fastkl\n"
        "Description: Row-wise KL divergence and its family (numba kernels behind a C API)\n"
        f"Version: {__version__}\n"
        "Libs: -L${libdir} -Wl,-rpath,${libdir} -lfastkl\n"
        "Cflags: -I${includedir}\n"
    )


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _copy_cache(source: str, target: str, *, replace: bool, capi: bool) -> int:
    """Copy numba's cache files from ``source`` to ``target`` (the same fingerprint folder),
    data files before the indexes that name them; with ``capi``, a C API folder too once it is
    complete; with ``replace=False``, only files ``target`` lacks. Returns the files copied."""
    copied = 0
    for folder, _, files in os.walk(source):
        rel = os.path.relpath(folder, source)
        if rel != "." and not (capi and os.path.exists(os.path.join(folder, "capi.ready"))):
            continue
        into = os.path.join(target, rel)
        os.makedirs(into, exist_ok=True)
        # a kernel's index ("stem.nbi") names its data files ("stem.N.nbc"): they go together
        present = {_stem(f) for f in os.listdir(into)} if not replace else set()
        for suffix in (".nbc", ".nbi", ".ready"):
            for name in sorted(f for f in files if f.endswith(suffix)):
                if _stem(name) not in present:
                    shutil.copy2(os.path.join(folder, name), os.path.join(into, name))
                    copied += 1
    return copied


def _stem(name: str) -> str:
    """A cache file's kernel: ``stem`` of ``stem.nbi`` and ``stem.N.nbc``."""
    if name.endswith(".nbc"):
        return name[: -len(".nbc")].rsplit(".", 1)[0]
    return name.rsplit(".", 1)[0]


def _seed(cache: str) -> int:
    """Copy this environment's compiled kernels (and the C API's cfuncs, where this machine has
    them) into ``cache``, so the build compiles only what was never compiled here."""
    source = _config.cache_dir()
    if source is None or not os.path.isdir(source):
        return 0
    return _copy_cache(
        source, os.path.join(cache, os.path.basename(source)), replace=True, capi=True
    )


def _share(cache: str) -> int:
    """The kernels the build compiled, into this environment's cache where it has none of them
    (its own indexes stay): Python calls then load what the build compiled."""
    target = _config.cache_dir()
    if target is None:
        return 0
    source = os.path.join(cache, os.path.basename(target))
    if not os.path.isdir(source):
        return 0
    return _copy_cache(source, target, replace=False, capi=False)


def _require_build_tools() -> None:
    """Refuse in one line that names the extra, before anything is written or compiled."""
    missing = [name for name in BUILD_TOOLS if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(
            f"building libfastkl needs {' and '.join(missing)}, which the capi extra "
            'installs: pip install "fastkl[capi]"'
        )


def build(
    outdir: str,
    *,
    header_only: bool = False,
    verbose: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Build ``libfastkl``: ``outdir/lib/libfastkl.so``, ``outdir/include/fastkl.h``,
    ``outdir/lib/pkgconfig/fastkl.pc`` and ``outdir/lib/fastkl-cache``, the compiled kernels
    and entry points the library loads, so that a program's first call compiles nothing (the
    command line's ``fastkl build-capi``).

    ``outdir`` can be copied to another machine of the same kind with the same Python
    environment at the same path (a container image); on another CPU, the library's first call
    says so on stderr and compiles once, into ``outdir/lib/fastkl-cache``.

    Parameters
    ----------
    outdir : str
        The install prefix; created if needed.
    header_only : bool
        Write only ``outdir/include/fastkl.h`` (no compiler needed).
    verbose : bool
        Show the C compiler's commands.
    log : callable, optional
        Called with a line for each step (the command line prints them).

    Returns
    -------
    dict
        ``"library"``, ``"header"``, ``"pkgconfig"``, ``"cache"`` -> the paths written.

    Raises
    ------
    RuntimeError
        cffi or setuptools is missing (``pip install "fastkl[capi]"``; nothing is written), or
        compiling failed.
    """
    if not header_only:
        _require_build_tools()
    say = log if log is not None else (lambda line: None)
    prefix = os.path.abspath(outdir)
    paths = {"header": os.path.join(prefix, "include", "fastkl.h")}
    _write(paths["header"], _decl.header())
    if header_only:
        return paths

    import cffi

    libdir = _libpython_dir()
    # Compile the kernels and cfuncs into the cache beside the library, so that a program's
    # first call only loads them, whatever its environment.
    paths["cache"] = os.path.join(prefix, "lib", CACHE)
    env = dict(os.environ, FASTKL_CACHE_DIR=paths["cache"])
    began = time.perf_counter()
    seeded = _seed(paths["cache"])
    if seeded:
        say(f"copied {seeded} compiled files from {_config.cache_dir()}")
    say(f"compiling the kernels into {paths['cache']} (parallel processes)")
    _cfuncs.compile_kernels(env, say)
    say(f"  kernels ready in {time.perf_counter() - began:.1f} s; compiling the C entry points")
    _share(paths["cache"])
    _cfuncs.compile_in_child(env, "cfuncs")
    say(f"  entry points ready at {time.perf_counter() - began:.1f} s; compiling libfastkl.so")
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(_CDEF)
    with tempfile.TemporaryDirectory(prefix="fastkl-capi-") as tmp:
        _write(os.path.join(tmp, "include", "fastkl.h"), _decl.header())
        ffibuilder.set_source(
            MODULE,
            c_source(),
            include_dirs=[os.path.join(tmp, "include")],
            extra_compile_args=["-fvisibility=hidden", "-pthread"],
            extra_link_args=[
                "-pthread",
                f"-Wl,-rpath,{libdir}",  # libpython, for programs that know only our path
                "-Wl,-soname,libfastkl.so",
            ],
        )
        ffibuilder.embedding_init_code(_INIT_CODE.format(module=MODULE, settings=_settings()))
        try:
            built = ffibuilder.compile(tmpdir=tmp, target="libfastkl.so", verbose=verbose)
        except Exception as exc:  # distutils' CompileError, cffi's VerificationError
            raise RuntimeError(
                f"compiling libfastkl failed (is a C compiler installed?): {exc}"
            ) from None
        paths["library"] = os.path.join(prefix, "lib", "libfastkl.so")
        os.makedirs(os.path.dirname(paths["library"]), exist_ok=True)
        staged = f"{paths['library']}.tmp{os.getpid()}"
        shutil.copyfile(built, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, paths["library"])  # a program running the old one keeps its copy
    paths["pkgconfig"] = os.path.join(prefix, "lib", "pkgconfig", "fastkl.pc")
    _write(paths["pkgconfig"], _pkgconfig(prefix))
    say(f"  built in {time.perf_counter() - began:.1f} s")
    return paths
