"""Device functions of the CUDA kernels: loads, conversions and the fast float math.

Everything here exists twice, once per target, under one name:

* on a GPU, numba-cuda device functions and LLVM intrinsics;
* under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), plain Python on numpy scalars,
  with IEEE special values, so that the same kernel templates run in CI without a GPU.

Nothing here defines a formula. The scalar terms are ``_math``'s, compiled once per compute
precision (:data:`FAST32`, :data:`FAST64`, and :data:`EXACT` for the float64 exact path), and
the polynomial log of the fast terms is the CPU's (``_simd``), ported: its bit-level LLVM
intrinsics are registered again for the CUDA target and its functions rebuilt around them, so
the CPU and the GPU share one definition of ``log_ratio_core`` and ``log_core``.

Error analysis of the float32 fast path (why the hardware's approximate functions are enough
where they are used, and where they are not):

* ``log(p / q)`` of two probabilities is ``_simd._log_ratio_f32``: the mantissas' quotient as
  ``2 atanh((a - b) / (a + b))``, about an ulp of the *result* however close p and q are. A fast
  log of the quotient (``lg2.approx``) has an absolute error of about 2**-22 instead, which the
  weights p (summing to 1) turn into an absolute error of about 1e-7 in KL: too much where KL
  is itself small (near-equal rows), so it is not used.
* ``log p`` of a probability (entropy, cross-entropy and the mixed forms) is
  ``_simd._log_core_f32``: an ulp of the result near p = 1, where a fast log would again leave
  an absolute error of 1e-7 on a small entropy.
* ``exp`` of a shifted log-score is ``ex2.approx.ftz`` of ``x * log2(e)`` (``fast_expf``): 2 ulp,
  plus the rounding of the product, relative ``|x| 2**-24``. An exponential only weighs the
  terms (and sums into the mass); its relative error moves a row's value by about
  ``eps * E_p|log p|``, the same order as rounding the float32 log-probabilities themselves,
  which any float32 computation pays. Results below the normal range flush to 0, which
  changes a mass of at least 1 (the maximum's own term) by less than 1e-38.
* Sums: each lane adds a batch of at most 16 terms in float32, then into float64; masses,
  moments and the merges of lanes are float64, so the sums add no error beyond a few ulp of
  float32 per batch.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numba
import numpy as np
from numba import cuda

from . import _math, _simd
from ._config import compile_scalars

#: Whether kernels run in numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def device(fn: Any) -> Any:
    """A device function of plain arithmetic (left as Python in the simulator)."""
    return fn if SIMULATOR else cuda.jit(device=True, forceinline=True)(fn)


def device_sync(fn: Any) -> Any:
    """A device function that calls ``cuda.*`` (barriers, shuffles): a device function in the
    simulator too, which is how the simulator gives it the running block's ``cuda``."""
    return cuda.jit(device=True)(fn) if SIMULATOR else cuda.jit(device=True, forceinline=True)(fn)


# --- IEEE log and exp in the simulator (math.log raises where a GPU returns -inf or NaN) -------


def _sim_log(x: Any) -> float:
    x = float(x)
    if x > 0.0:
        return math.log(x) if x < math.inf else x
    return -math.inf if x == 0.0 else math.nan


def _sim_exp(x: Any) -> float:
    try:
        return math.exp(float(x))
    except OverflowError:
        return math.inf


def _sim_log1p(x: Any) -> float:
    x = float(x)
    if x > -1.0:
        return math.log1p(x)
    return -math.inf if x == -1.0 else math.nan


def _sim_expm1(x: Any) -> float:
    try:
        return math.expm1(float(x))
    except OverflowError:
        return math.inf


# --- loads ---------------------------------------------------------------------------------
#
# ``LOADS[width](x, i, j, like)``: elements j, j + 1, ..., j + width - 1 of row i of the 2-d
# array x, as a tuple of ``like``'s float type. x holds float16, float32, float64, or the bits
# of bfloat16 as uint16. The elements are read with one vector load (``ld.global.nc.v4`` for
# 16 bytes): x must be contiguous along the row, and the address of element (i, j) aligned to
# ``width * itemsize`` bytes (the driver checks). The data is read-only for the whole launch, so
# the load is marked invariant (the non-coherent path).


def _gpu_load(width: int) -> Any:
    from llvmlite import ir
    from numba.core import types as nt
    from numba.cuda.extending import intrinsic

    from ._numba_shim import cuda_cgutils

    cgutils = cuda_cgutils()

    sources = (nt.float16, nt.float32, nt.float64, nt.uint16)
    i16, i32 = ir.IntType(16), ir.IntType(32)

    def decode16(builder, h, bf16):
        """A 16-bit float's bits as a float32: bfloat16 is the high half of a float32;
        float16 converts (``cvt.f32.f16``)."""
        if bf16:
            bits = builder.shl(builder.zext(h, i32), ir.Constant(i32, 16))
            return builder.bitcast(bits, ir.FloatType())
        fnty = ir.FunctionType(ir.FloatType(), [i16])
        return builder.call(ir.InlineAsm(fnty, "cvt.f32.f16 $0, $1;", "=f,h"), [h])

    @intrinsic
    def load(typingctx, x, i, j, like):
        if not (isinstance(x, nt.Array) and x.ndim == 2 and x.dtype in sources):
            return None
        if like not in (nt.float32, nt.float64) or (x.dtype == nt.float64 != like):
            return None
        sig = nt.UniTuple(like, width)(x, i, j, like)

        def codegen(context, builder, sig, args):
            arrty = sig.args[0]
            array = context.make_array(arrty)(context, builder, value=args[0])
            index = [
                context.cast(builder, args[1], sig.args[1], nt.intp),
                context.cast(builder, args[2], sig.args[2], nt.intp),
            ]
            ptr = cgutils.get_item_pointer(context, builder, arrty, array, index)
            out = context.get_value_type(like)
            i8 = ir.IntType(8)
            glob = builder.addrspacecast(builder.bitcast(ptr, i8.as_pointer()), i8.as_pointer(1))
            half = arrty.dtype in (nt.float16, nt.uint16)
            # 16-bit elements travel as 32-bit words, two to a word (one i16 alone)
            if half and width > 1:
                words, elty = width // 2, i32
            else:
                words, elty = width, (i16 if half else context.get_value_type(arrty.dtype))
            vty = ir.VectorType(elty, words)
            item = 2 if half else context.get_abi_sizeof(elty)
            value = builder.load(builder.bitcast(glob, vty.as_pointer(1)), align=width * item)
            value.set_metadata("invariant.load", builder.module.add_metadata([]))
            parts = [builder.extract_element(value, ir.Constant(i32, t)) for t in range(words)]
            elements = []
            for t in range(width):
                if not half:
                    e = parts[t]
                elif width == 1:
                    e = decode16(builder, parts[0], arrty.dtype == nt.uint16)
                else:  # the low half of a word first (little-endian)
                    word = parts[t // 2]
                    if t % 2:
                        word = builder.lshr(word, ir.Constant(i32, 16))
                    e = decode16(builder, builder.trunc(word, i16), arrty.dtype == nt.uint16)
                elements.append(e if e.type == out else builder.fpext(e, out))
            return context.make_tuple(builder, sig.return_type, elements)

        return sig, codegen

    return load


def _bf16_bits_to_float(bits: Any) -> np.float32:
    return np.array([int(bits) << 16], np.uint32).view(np.float32)[0]


def _sim_load(width: int) -> Any:
    def load(x, i, j, like):
        kind = type(like)
        if x.dtype == np.uint16:
            return tuple(kind(_bf16_bits_to_float(x[i, j + t])) for t in range(width))
        return tuple(kind(x[i, j + t]) for t in range(width))

    return load


#: Vector widths in elements: 16 bytes of bfloat16/float16 (8), float32 (4), float64 (2), and
#: single elements (1) for any layout.
WIDTHS = (1, 2, 4, 8)
LOADS = {w: (_sim_load(w) if SIMULATOR else _gpu_load(w)) for w in WIDTHS}


def _gpu_store4() -> Any:
    """``store4(x, i, a, b, c, d)``: four float32 into x[i:i + 4] with one 16-byte store (x
    16-byte aligned at i): the copy baseline of ``fastkl bench --device cuda``."""
    from llvmlite import ir
    from numba.core import types as nt
    from numba.cuda.extending import intrinsic

    from ._numba_shim import cuda_cgutils

    cgutils = cuda_cgutils()

    @intrinsic
    def store4(typingctx, x, i, a, b, c, d):
        if not (isinstance(x, nt.Array) and x.ndim == 1 and x.dtype == nt.float32):
            return None
        sig = nt.void(x, i, nt.float32, nt.float32, nt.float32, nt.float32)

        def codegen(context, builder, sig, args):
            array = context.make_array(sig.args[0])(context, builder, value=args[0])
            index = [context.cast(builder, args[1], sig.args[1], nt.intp)]
            ptr = cgutils.get_item_pointer(context, builder, sig.args[0], array, index)
            vty = ir.VectorType(ir.FloatType(), 4)
            v = ir.Constant(vty, ir.Undefined)
            for t in range(4):
                v = builder.insert_element(v, args[2 + t], ir.Constant(ir.IntType(32), t))
            i8 = ir.IntType(8)
            glob = builder.addrspacecast(builder.bitcast(ptr, i8.as_pointer()), i8.as_pointer(1))
            builder.store(v, builder.bitcast(glob, vty.as_pointer(1)), align=16)
            return context.get_dummy_value()

        return sig, codegen

    return store4


def _sim_store4(x, i, a, b, c, d):
    x[i], x[i + 1], x[i + 2], x[i + 3] = a, b, c, d


STORE4 = _sim_store4 if SIMULATOR else _gpu_store4()


# --- the CPU's polynomial log, ported --------------------------------------------------------


def _port_simd() -> dict[str, Any]:
    """``_simd``'s namespace with every bit-level intrinsic registered for CUDA and every
    jitted function rebuilt as a device function over them (compiled on first use)."""
    from numba.cuda.extending import intrinsic

    from ._numba_shim import CPUDispatcher
    from ._numba_shim import Intrinsic as _Intrinsic

    namespace: dict[str, Any] = dict(vars(_simd))
    for name, obj in vars(_simd).items():
        if isinstance(obj, _Intrinsic):
            namespace[name] = intrinsic(obj._defn)
    namespace["_div_f32"] = device(_fast_fdividef)
    for name, obj in vars(_simd).items():
        if isinstance(obj, CPUDispatcher) and name != "_div_f32":
            fn = obj.py_func
            rebuilt = types.FunctionType(
                fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__
            )
            namespace[name] = device(rebuilt)
    return namespace


if not SIMULATOR:
    from numba.cuda import libdevice


def _fast_fdividef(x, y):
    """x / y within 2 ulp for |y| in [2**-126, 2**126] (``div.approx``)."""
    return libdevice.fast_fdividef(x, y)


def _fast_expf(x):
    """exp(x) as ``ex2.approx.ftz(x * log2(e))`` (see the module docstring)."""
    return libdevice.fast_expf(x)


def _fast(precision: Any) -> types.SimpleNamespace:
    """The fast path's functions for one compute precision (numba.float32 or float64)."""
    single = precision is numba.float32
    if SIMULATOR:
        kind = np.float32 if single else np.float64

        def like(x, value):
            return kind(value)

        def log_core(x):
            # finite for any input, as the GPU's polynomial: the guards decide, not a NaN here
            return kind(math.log(x)) if 0 < x < math.inf else kind(-87.0)

        def log_ratio_core(p, q):
            return kind(_simd.log_ratio_core(float(p), float(q)))

        def ratio_guard(t, p, q):
            return kind(_simd.ratio_guard(t, kind(p), kind(q)))

        def exp(x):
            return kind(_sim_exp(x))

        ns = types.SimpleNamespace(F=kind)
    else:
        simd = _PORTED
        suffix = "f32" if single else "f64"
        log_core = simd[f"_log_core_{suffix}"]
        log_ratio_core = simd[f"_log_ratio_{suffix}"]
        ratio_guard = simd["_ratio_guard"]
        exp = device(_fast_expf) if single else math.exp

        def _like(x, value):
            return precision(value)

        like = device(_like)
        ns = types.SimpleNamespace(F=precision)
    overrides = {
        "like": like,
        "log_core": log_core,
        "log_ratio_core": log_ratio_core,
        "ratio_guard": ratio_guard,
        "exp": exp,
    }
    if SIMULATOR:
        overrides.update({"log": _sim_log, "expm1": _sim_expm1, "log1p": _sim_log1p})
    terms = compile_scalars(_math, device, overrides)
    ns.__dict__.update(vars(terms))
    ns.exp = exp
    ns.log_core = log_core
    return ns


_PORTED: dict[str, Any] = {} if SIMULATOR else _port_simd()

#: The fast path's functions in float32 (inputs of float32, float16 and bfloat16) and float64.
FAST32 = _fast(numba.float32)
FAST64 = _fast(numba.float64)

#: The exact terms of ``_math``, float64 (libdevice's accurate log and exp; IEEE in the
#: simulator).
if SIMULATOR:
    EXACT = compile_scalars(
        _math,
        lambda fn: fn,
        {"log": _sim_log, "exp": _sim_exp, "expm1": _sim_expm1, "log1p": _sim_log1p},
    )
    log, exp, f64 = _sim_log, _sim_exp, np.float64
else:
    EXACT = compile_scalars(_math, device)
    log, exp, f64 = math.log, math.exp, numba.float64
