"""The boot of ``libfastkl``: runs once in the library's Python, on its first call."""

from __future__ import annotations

import sys
import threading
from typing import Any

from . import _cfuncs, _decl

_lock = threading.Lock()
_booted = False


def boot(lib: Any, built_version: str) -> int:
    """Load the cfuncs and hand their addresses to the C table; returns a status.

    Threads that call at once all come here (cffi runs each under the GIL, one at a time); the
    lock covers the moments a boot releases the GIL (a child process compiling).
    """
    global _booted
    with _lock:
        if _booted:
            return _decl.OK
        from .. import __version__, _config

        if __version__ != built_version:
            print(
                f"fastkl: libfastkl was built from fastkl {built_version}, but this environment "
                f"has fastkl {__version__}: rebuild it with `fastkl build-capi`",
                file=sys.stderr,
            )
            return _decl.ERR_INIT
        table = _cfuncs.load()  # kept alive in _cfuncs: their machine code must stay mapped
        for index, function in enumerate(_decl.DIVERGENCE_FUNCTIONS):
            lib._fastkl_set_entry(index, table[function.name].address)
        lib._fastkl_set_entry(len(_decl.DIVERGENCE_FUNCTIONS), table[_cfuncs.SET_THREADS].address)
        import numba

        serialize = _config.threading_layer() == "workqueue"
        if serialize:
            print(
                "fastkl: only numba's workqueue threading layer loaded (it aborts on concurrent "
                "callers): libfastkl serializes its calls",
                file=sys.stderr,
            )
        lib._fastkl_set_runtime(numba.config.NUMBA_NUM_THREADS, int(serialize))
        _booted = True
        return _decl.OK
