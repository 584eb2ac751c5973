"""The C API: numba cfuncs, the declarations they implement, and ``libfastkl``'s builder.

C and C++ programs include ``fastkl.h`` and link ``libfastkl`` (``fastkl build-capi --outdir
DIR``). Python programs that want the same entry points as C function pointers (for numba,
ctypes or cffi code) take them from ``cfuncs()``:

>>> import ctypes, numpy as np
>>> from fastkl import capi
>>> kl = capi.cfuncs()["fastkl_kl_div_f64"]
>>> p = np.array([[0.1, 0.9], [0.5, 0.5]])
>>> q = np.array([0.4, 0.6])
>>> out = np.empty(2)
>>> ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
>>> kl.ctypes(ptr(p), ptr(q), 2, 2, 2, 0, capi.FASTKL_PROBS, capi.FASTKL_PROBS, ptr(out))
0
>>> out  # fastkl.kl_div(p, q)
array([0.22628916, 0.020411  ])
>>> capi.strerror(kl.ctypes(ptr(p), ptr(q), 2, 0, 2, 0, 0, 0, ptr(out)))
'k is smaller than 1'
"""

from __future__ import annotations

from typing import Any

from ._decl import FORM_CODES, FUNCTIONS, STATUS, header, strerror

FASTKL_PROBS = FORM_CODES["FASTKL_PROBS"]
FASTKL_LOG_PROBS = FORM_CODES["FASTKL_LOG_PROBS"]
FASTKL_LOGITS = FORM_CODES["FASTKL_LOGITS"]

__all__ = [
    "FASTKL_LOGITS",
    "FASTKL_LOG_PROBS",
    "FASTKL_PROBS",
    "FUNCTIONS",
    "STATUS",
    "build",
    "cfuncs",
    "header",
    "strerror",
]


def cfuncs() -> dict[str, Any]:
    """The numba cfunc of every C divergence function, by its C name.

    Each is a ``numba.core.ccallback.CFunc`` with the C signature of ``fastkl.h``: ``.address``
    (the function pointer as an int), ``.ctypes`` (a ctypes function), ``.cffi`` and
    ``.native_name``. They are what ``libfastkl`` calls: same checks, same statuses, the same
    kernels as the Python API.

    The first call on a machine compiles them (in child processes, a few minutes on 2 cores,
    with a line on stderr); later calls, in any process, load them from fastkl's cache.

    Returns
    -------
    dict
        ``"fastkl_kl_div_f32"`` ... ``"fastkl_entropy_f64"`` -> CFunc.

    Raises
    ------
    RuntimeError
        NUMBA_DISABLE_JIT is set, or compiling failed (the compiler's message is included).
    """
    from . import _cfuncs

    return {name: fn for name, fn in _cfuncs.load().items() if name != _cfuncs.SET_THREADS}


def __getattr__(name: str) -> Any:
    if name == "build":  # the builder imports numba and cffi: only when asked for
        from ._build import build

        return build
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
