"""The numba cfuncs behind the C API: argument checks, then the Python API's own kernels.

Each exported divergence is one cfunc with the C signature of ``fastkl.cdef``. It checks its
arguments (returning a status, before any memory is read), views the pointers as the 1-D
buffers with row strides that every CPU kernel takes, and calls the kernel the Python driver
would pick for the same call, with the same argument types, so the two give the same bits.

The argument types matter beyond speed: the driver hands the kernels read-only views, and a
kernel compiled for writable inputs was seen to round some float32 rows differently in the last
bit. With the driver's exact signature, the cfunc and the Python API agree bit for bit.

Compiling
---------
A cfunc links the code of the kernels it calls. Linking a kernel that this process compiled
itself re-optimizes its whole IR, about as long as compiling it (14 s against 1.1 s for four
kernels loaded from the cache, measured). So the cfuncs are compiled in a child process, after
the kernels were compiled and cached in processes of their own (``fastkl._warmup``), and every
other process loads the cfuncs from the cache (``load``). ``fastkl build-capi`` does it all into
a cache beside the library; a marker there lists the machines (CPU and features, numba's cache
key) it was compiled for, so a library copied to another kind of CPU says so and compiles once.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from typing import Any

import numba
import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from .. import _config, _cpu, _cpu_family, _numba_shim
from .._config import JIT_OPTIONS, Unbound, specialize
from .._math import PROBS
from .._numba_shim import impl_ret_borrowed
from ..divergences import REGISTRY, Divergence
from . import _decl
from ._decl import ERR_FORM, ERR_K, ERR_N, ERR_NULL, ERR_OVERFLOW, ERR_STRIDE, OK

_HELPER = dict(JIT_OPTIONS, inline="always")
_CFUNC = dict(JIT_OPTIONS, cache=_config.cache_dir(capi=True) is not None)

INT64_MAX = np.iinfo(np.int64).max
MAX_FORM = max(_decl.FORM_CODES.values())

#: the C type names of fastkl.cdef -> numba types
_C_TYPES = {
    "const float *": types.CPointer(types.float32),
    "const double *": types.CPointer(types.float64),
    "float *": types.CPointer(types.float32),
    "double *": types.CPointer(types.float64),
    "int64_t": types.int64,
    "int": types.int32,
}

# --- checks --------------------------------------------------------------------------------


@intrinsic
def _is_null(typingctx, ptr):
    """Whether a typed pointer is NULL (numba has no comparison of pointers)."""
    if not isinstance(ptr, types.CPointer):
        return None

    def codegen(context, builder, signature, args):
        return builder.icmp_unsigned("==", args[0], args[0].type(None))

    return types.boolean(ptr), codegen


@intrinsic
def _readonly(typingctx, arr):
    """The same array typed read-only: the Python driver hands the kernels read-only views of
    the inputs, so this makes the cfuncs link the very kernels the Python API compiles."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, signature.return_type, args[0])

    return arr.copy(readonly=True)(arr), codegen


@njit(**_HELPER)
def _span(n, k, ld, itemsize):
    """Elements spanned by n >= 1 rows of k at stride ld, or -1 if their bytes overflow int64."""
    limit = INT64_MAX // itemsize
    if k > limit or (n > 1 and ld > (limit - k) // (n - 1)):
        return -1
    return (n - 1) * ld + k


@njit(**_HELPER)
def _check(n, k, ldp, ldq, p_form, q_form, itemsize):
    """The status of a call's sizes, strides and forms (the pointers are checked after)."""
    if n < 0:
        return ERR_N
    if k < 1:
        return ERR_K
    if p_form < PROBS or p_form > MAX_FORM or q_form < PROBS or q_form > MAX_FORM:
        return ERR_FORM
    if ldp < k or (ldq != 0 and ldq < k):
        return ERR_STRIDE
    if n > 0 and (_span(n, k, ldp, itemsize) < 0 or _span(n, k, ldq, itemsize) < 0):
        return ERR_OVERFLOW
    return OK


# --- which kernel: the Python driver's choice, made in nopython code ----------------------------

# Placeholders of the runners, bound per divergence and form pair.
FLAT = Unbound("KL's flat kernel (probabilities on both sides), or _flat_none")
SPLIT = Unbound("KL's kernel that splits long rows across threads")
PLAIN = Unbound("KL's kernel of rows without statistics")
ROWS = Unbound("KL's kernel of rows")
KERNEL = Unbound("the family's kernel of the divergence's terms")
POST = Unbound("the divergence's post step (_math.POST_*)")
PP = Unbound("the runner of probabilities against probabilities")
PL = Unbound("the runner of probabilities against log-scores")
LP = Unbound("the runner of log-scores against probabilities")
LL = Unbound("the runner of log-scores against log-scores")
RUN = Unbound("the divergence's runner (_t_pairs specialized)")
ITEMSIZE = Unbound("the bytes of an element: 4 or 8")


@njit(**_HELPER)
def _flat_none(p, ldp, q, ldq, k, divisor, out):
    pass  # only probabilities on both sides reach the flat mode


def _t_kl_pair(p, ldp, q, ldq, k, p_form, q_form, out):
    """KL for one form pair: the mode of ``_cpu.kl_mode`` with the Python API's defaults."""
    # np.bool_: a literal False would type as Literal[bool] and compile other kernels than
    # the Python driver's (bool, float64) ones.
    normalize = np.bool_(False)
    mode = _cpu.kl_mode(p_form, q_form, k, normalize, 0.0)
    if mode == _cpu.MODE_FLAT:
        FLAT(p, ldp, q, ldq, k, 1.0, out)
    elif mode == _cpu.MODE_SPLIT:
        SPLIT(p, ldp, q, ldq, k, p_form, q_form, normalize, 0.0, 1.0, out)
    elif mode == _cpu.MODE_PLAIN:
        PLAIN(p, ldp, q, ldq, k, p_form, q_form, normalize, 0.0, 1.0, out)
    else:
        ROWS(p, ldp, q, ldq, k, p_form, q_form, normalize, 0.0, 1.0, out)


def _t_family_pair(p, ldp, q, ldq, k, p_form, q_form, out):
    post = np.int64(POST)  # typed as the driver's: not a literal
    KERNEL(p, ldp, q, ldq, k, p_form, q_form, np.bool_(False), 0.0, 1.0, post, out)


def _t_pairs(p, ldp, q, ldq, k, p_form, q_form, out):
    if p_form == PROBS:
        if q_form == PROBS:
            PP(p, ldp, q, ldq, k, p_form, q_form, out)
        else:
            PL(p, ldp, q, ldq, k, p_form, q_form, out)
    elif q_form == PROBS:
        LP(p, ldp, q, ldq, k, p_form, q_form, out)
    else:
        LL(p, ldp, q, ldq, k, p_form, q_form, out)


_PAIRS = ((False, False), (False, True), (True, False), (True, True))

#: the C functions' stem (``fastkl_js_div``) -> the divergence's spec
EXPORTED = {spec.c_name: spec for spec in REGISTRY if spec.c_name is not None}


@functools.cache  # one set of runners per divergence, shared by both dtypes and the warm-up
def _pair_kernels(spec: Divergence) -> dict[tuple[bool, bool], dict[str, Any]]:
    """(log_p, log_q) -> the kernels that score that pair, by their role in the runners."""
    if spec.terms.own_kernels:
        return {
            pair: {
                "FLAT": _cpu.kl_rows_flat if pair == (False, False) else _flat_none,
                "SPLIT": _cpu.KL_KERNELS[pair]["_t_kl_rows_split"],
                "PLAIN": _cpu.KL_KERNELS[pair]["_t_kl_rows_plain"],
                "ROWS": _cpu.KL_KERNELS[pair]["_t_kl_rows"],
            }
            for pair in _PAIRS
        }
    return {pair: {"KERNEL": _cpu_family.family_kernel(spec.terms, *pair)} for pair in _PAIRS}


@functools.cache
def _rows_runner(spec: Divergence):
    """The nopython dispatch of divergence ``spec`` over the form pair and the mode."""
    template = _t_kl_pair if spec.terms.own_kernels else _t_family_pair
    stem = spec.name
    bindings = {}
    for (log_p, log_q), kernels in _pair_kernels(spec).items():
        tag = f"{'l' if log_p else 'p'}{'l' if log_q else 'p'}"
        runner = specialize(template, f"{stem}_{tag}_capi", {**kernels, "POST": spec.post_code})
        bindings[tag.upper()] = njit(**_HELPER)(runner)
    return njit(**_HELPER)(specialize(_t_pairs, f"{stem}_pairs_capi", bindings))


# --- the cfuncs -------------------------------------------------------------------------------


def _t_cfunc_pq(p, q, n, k, ldp, ldq, p_form, q_form, out):
    status = _check(n, k, ldp, ldq, p_form, q_form, ITEMSIZE)
    if status != OK or n == 0:
        return status
    if _is_null(p) or _is_null(q) or _is_null(out):
        return ERR_NULL
    if n == 1:  # one row: the Python driver sees a contiguous (1, k) view, ld == k
        ldp = k
        ldq = k
    # The kernels' argument types are the Python driver's (int64 forms), so both link the
    # same compiled kernels.
    RUN(
        _readonly(carray(p, _span(n, k, ldp, ITEMSIZE))),
        ldp,
        _readonly(carray(q, _span(n, k, ldq, ITEMSIZE))),
        ldq,
        k,
        np.int64(p_form),
        np.int64(q_form),
        carray(out, n),
    )
    return OK


def _t_cfunc_p(p, n, k, ldp, p_form, out):
    status = _check(n, k, ldp, ldp, p_form, p_form, ITEMSIZE)
    if status != OK or n == 0:
        return status
    if _is_null(p) or _is_null(out):
        return ERR_NULL
    rows = _readonly(carray(p, _span(n, k, ldp, ITEMSIZE)))
    form = np.int64(p_form)
    RUN(rows, ldp, rows, ldp, k, form, form, carray(out, n))  # entropy reads p only
    return OK


def _set_threads(n):
    """Give numba's thread count for the calling thread (the C side checked the range)."""
    numba.set_num_threads(n)
    return OK


#: the set-threads cfunc's name (internal: the library calls it; it is not in the header)
SET_THREADS = "_fastkl_set_threads"


def signature(function: _decl.Function) -> Any:
    """The numba signature of a C declaration."""
    return _C_TYPES[function.restype](*(_C_TYPES[p.ctype] for p in function.params))


def _pyfunc(function: _decl.Function):
    """The Python function compiled as the cfunc of a declared divergence."""
    spec, dtype = EXPORTED[function.name[:-4]], function.name[-3:]
    bindings = {"RUN": _rows_runner(spec), "ITEMSIZE": 4 if dtype == "f32" else 8}
    template = _t_cfunc_pq if spec.reads_q else _t_cfunc_p
    return specialize(template, f"{function.name}_cfunc", bindings)


def _specs() -> dict[str, tuple[Any, Any]]:
    """name -> (python function, numba signature) of the cached cfuncs."""
    return {f.name: (_pyfunc(f), signature(f)) for f in _decl.FUNCTIONS if f.is_divergence}


def _set_threads_cfunc():
    # Not cached: numba.set_num_threads calls the threading layer through a pointer known only
    # at run time. It is small; compiling it takes a fraction of a second.
    return numba.cfunc(types.int32(types.int32), **JIT_OPTIONS)(_set_threads)


# --- compile, load ------------------------------------------------------------------------------


def _machine() -> list[str]:
    """What numba's cache keys compiled code on: the target triple, the CPU and its features."""
    return _numba_shim.machine()


def _ready_marker() -> str | None:
    cache = _config.cache_dir(capi=True)
    return None if cache is None else os.path.join(cache, "capi.ready")


def _ready_machines(marker: str) -> list[list[str]]:
    try:
        with open(marker, encoding="utf-8") as f:
            machines = json.load(f)
    except (OSError, ValueError):
        return []
    return machines if isinstance(machines, list) else []


def compile_kernels(env: dict[str, str] | None = None, log: Any = None) -> None:
    """Compile (or load) every kernel the cfuncs link, in parallel processes (``_warmup``);
    ``log(line)`` hears of each unit."""
    from .. import _warmup

    selected = _warmup.units(_warmup.CAPI)

    def report(label: str, seconds: float, done: int, total: int) -> None:
        if log is not None:
            log(f"  {label}: {seconds:.1f} s ({done}/{total})")

    _warmup.warmup(selected, reductions=False, env=env, report=report)


def _compile_share(share: int, shares: int) -> None:
    _config.ensure_threads()
    for i, (pyfunc, sig) in enumerate(_specs().values()):
        if i % shares == share:
            numba.cfunc(sig, **_CFUNC)(pyfunc)


def compile_cfuncs(shares: int = 2) -> None:
    """Compile the cfuncs (their kernels are cached by then), ``shares`` processes side by side
    (this one and children), and mark the cache ready for this machine."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "fastkl.capi._cfuncs", "share", str(i), str(shares)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(1, shares)
    ]
    _compile_share(0, shares)
    for child in children:
        err = child.communicate()[1]
        if child.returncode != 0:
            raise RuntimeError(f"compiling fastkl's C API failed:\n{err[-4000:]}")
    marker = _ready_marker()
    if marker is not None:
        machines = _ready_machines(marker)
        if _machine() not in machines:
            machines.append(_machine())
        tmp = f"{marker}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(machines, f)
        os.replace(tmp, marker)


def compile_in_child(env: dict[str, str] | None = None, what: str = "compile") -> None:
    """Run ``python -m fastkl.capi._cfuncs compile`` (kernels and cfuncs) or ``cfuncs``."""
    result = subprocess.run(
        [sys.executable, "-m", "fastkl.capi._cfuncs", what],
        capture_output=True,
        text=True,
        check=False,
        env=dict(env if env is not None else os.environ, PYTHONWARNINGS="ignore"),
    )
    if result.returncode != 0:
        raise RuntimeError(f"compiling fastkl's C API failed:\n{result.stderr[-4000:]}")


_lock = threading.Lock()
_loaded: dict[str, Any] | None = None


def load() -> dict[str, Any]:
    """Every cfunc by name, loaded from the cache; compiled first (in child processes, with a
    line on stderr) where the cache holds none for this machine."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        if numba.config.DISABLE_JIT:
            raise RuntimeError("fastkl's C API needs numba's JIT: unset NUMBA_DISABLE_JIT")
        marker = _ready_marker()
        if marker is not None and _machine() not in _ready_machines(marker):
            where = os.path.dirname(os.path.dirname(marker))
            why = (
                "was compiled for another CPU"
                if os.path.exists(marker)
                else "is not compiled (run `fastkl build-capi`)"
            )
            print(
                f"fastkl: the C API's code in {where} {why}: compiling it for this machine, "
                "once (minutes)",
                file=sys.stderr,
                flush=True,
            )
            compile_in_child()
        # A cached cfunc that calls parallel code needs the thread pool's symbols first.
        _config.ensure_threads()
        _loaded = {
            name: numba.cfunc(sig, **_CFUNC)(pyfunc) for name, (pyfunc, sig) in _specs().items()
        }
        _loaded[SET_THREADS] = _set_threads_cfunc()
        return _loaded


if __name__ == "__main__":
    if sys.argv[1] == "compile":  # the kernels, then the cfuncs
        compile_kernels()
        compile_cfuncs()
    elif sys.argv[1] == "cfuncs":  # the cfuncs alone (the build compiled the kernels)
        compile_cfuncs()
    elif sys.argv[1] == "share":  # one share of the cfuncs, beside compile_cfuncs
        _compile_share(int(sys.argv[2]), int(sys.argv[3]))
