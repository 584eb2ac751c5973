"""Vectorizable log and exp for the CPU kernels (float32 and float64).

llvmlite no longer links SVML, so ``math.log`` in a numba loop is a scalar libm call that stops
the loop from vectorizing. The functions here are written with plain arithmetic on the float's
bits (split by a few tiny LLVM intrinsics) and a polynomial, so LLVM vectorizes the loops they
are inlined into: 16 float32 lanes per AVX-512 instruction.

Two layers, both without branches:

* ``log(x)`` / ``exp(x)``: every input, IEEE special values included. Zeros, subnormals, inf and
  NaN are handled with selects. ``log`` is within 2 ulp of the correctly rounded result over all
  positive normal and subnormal inputs (2.5 ulp for float32), and ``exp`` within 2 ulp wherever
  the result is normal
  (tests/test_simd.py checks this densely).
* ``log_core(x)`` / ``exp_core(x)`` / ``log_ratio_core(p, q)``: polynomials without the
  special-value selects, for the hot loops. ``log_core`` is exact for positive normal finite x.
  For zero, subnormal, inf, NaN or negative x it returns some finite or NaN value without
  raising. ``exp_core`` is exact for x <= 0 with a normal result and flushes results below the
  normal range to 0. ``log_ratio_core`` is log(p / q) from the mantissas and exponents of p and
  q, with one division and without forming the quotient (which can neither overflow nor
  underflow then); ``ratio_guard`` marks the pairs it is not exact for. The kernels that use
  them check the row (see ``_cpu.py``) and recompute the rare rows that hold such values with
  the exact path.

Every public name is a plain Python function with a math-module implementation (used when
``NUMBA_DISABLE_JIT=1``); an ``@overload`` gives numba the float32/float64 implementation.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._config import JIT_OPTIONS
from ._numba_shim import cgutils, populate_array

# Leaf functions are not inlined at the numba IR level: LLVM inlines them into the loops (and
# vectorizes those) at a fraction of the compile time that IR inlining costs.
_LEAF = dict(JIT_OPTIONS)

# (bits, mantissa bits, exponent bias, bias of a mantissa in [0.5, 1))
_LAYOUT = {types.float32: (32, 23, 127, 126), types.float64: (64, 52, 1023, 1022)}


# --- bit-level intrinsics ------------------------------------------------------------------


def _unary(x, emit):
    """Signature and codegen of a unary intrinsic on x's float type.

    ``emit(builder, value, ity, mbits, bias, half_bias, fty)`` builds the IR on the float's
    integer view ``ity``; ``fty`` is the float type.
    """
    if x not in _LAYOUT:
        return None
    width, mbits, bias, half_bias = _LAYOUT[x]

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(x)
        return emit(builder, args[0], ir.IntType(width), mbits, bias, half_bias, fty)

    return x(x), codegen


def _emit_mantissa(b, v, ity, mbits, bias, half_bias, fty):
    i = b.and_(b.bitcast(v, ity), ir.Constant(ity, (1 << mbits) - 1))
    return b.bitcast(b.or_(i, ir.Constant(ity, half_bias << mbits)), fty)


def _emit_exponent(b, v, ity, mbits, bias, half_bias, fty):
    i = b.lshr(b.bitcast(v, ity), ir.Constant(ity, mbits))
    i = b.and_(i, ir.Constant(ity, (1 << (ity.width - 1 - mbits)) - 1))
    return b.sitofp(b.sub(i, ir.Constant(ity, half_bias)), fty)


def _emit_pow2(b, v, ity, mbits, bias, half_bias, fty):
    i = b.add(b.fptosi(v, ity), ir.Constant(ity, bias))
    return b.bitcast(b.shl(i, ir.Constant(ity, mbits)), fty)


@intrinsic
def _mantissa(typingctx, x):
    """m in [0.5, 1) with x = m * 2**e, for positive normal x."""
    return _unary(x, _emit_mantissa)


@intrinsic
def _exponent(typingctx, x):
    """e, as a float of x's type, with x = m * 2**e and m in [0.5, 1), for positive normal x."""
    return _unary(x, _emit_exponent)


@intrinsic
def _pow2(typingctx, n):
    """2**n for an integer-valued float n with a normal result (bits built directly)."""
    return _unary(n, _emit_pow2)


@intrinsic
def _ldexp(typingctx, y, n):
    """y * 2**n by adding n to y's exponent bits, for an integer-valued float n and a normal
    result. An integer add: unlike y * 2**a * 2**b, a fastmath reassoc flag could not fold it."""
    if y not in _LAYOUT or n != y:
        return None
    width, mbits, _, _ = _LAYOUT[y]

    def codegen(context, builder, sig, args):
        ity = ir.IntType(width)
        e = builder.shl(builder.fptosi(args[1], ity), ir.Constant(ity, mbits))
        i = builder.add(builder.bitcast(args[0], ity), e)
        return builder.bitcast(i, context.get_value_type(y))

    return y(y, n), codegen


def _declare_fma(builder, fty):
    return builder.module.declare_intrinsic(
        "llvm.fma", [fty], ir.FunctionType(fty, [fty, fty, fty])
    )


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding, in this order: no fastmath flag may split or regroup it."""
    if a not in _LAYOUT or not (a == b == c):
        return None

    def codegen(context, builder, sig, args):
        return builder.call(_declare_fma(builder, context.get_value_type(a)), list(args))

    return a(a, b, c), codegen


@intrinsic
def _reduce(typingctx, x, n, c_hi, c_lo):
    """(x - n * c_hi) - n * c_lo as two fused multiply-adds.

    The Cody-Waite argument reduction of exp only works in this order. Written as plain
    arithmetic, a ``reassoc`` flag would let LLVM regroup it to x - n * (c_hi + c_lo)
    and lose the low part of ln 2 (4.6 ulp measured); numba's fastmath pass flags every
    instruction, so the order is pinned with ``llvm.fma``, which no flag may split.
    """
    if x not in _LAYOUT or not (x == n == c_hi == c_lo):
        return None

    def codegen(context, builder, sig, args):
        fma = _declare_fma(builder, context.get_value_type(x))
        neg_n = builder.fneg(args[1])
        r = builder.call(fma, [neg_n, args[2], args[0]])
        return builder.call(fma, [neg_n, args[3], r])

    return x(x, n, c_hi, c_lo), codegen


def _ordered_ir(builder, value, ity):
    # Flip the magnitude bits of negative floats: signed integer order == float order.
    sign = builder.ashr(value, ir.Constant(ity, ity.width - 1))
    sign = builder.lshr(sign, ir.Constant(ity, 1))
    return builder.xor(value, sign)


@intrinsic
def _ordered_bits(typingctx, x):
    """A signed integer whose order is x's float order (NaNs land beyond +-inf).

    Integer max/min reductions vectorize where float ones do not: LLVM only vectorizes a float
    max reduction under the no-NaNs flag, which would break NaN rows.
    """
    if x not in _LAYOUT:
        return None
    width = _LAYOUT[x][0]
    ret = types.int32 if width == 32 else types.int64

    def codegen(context, builder, sig, args):
        ity = ir.IntType(width)
        return _ordered_ir(builder, builder.bitcast(args[0], ity), ity)

    return ret(x), codegen


@intrinsic
def _from_ordered_bits(typingctx, i, like):
    """The float (of ``like``'s type) whose _ordered_bits is ``i``."""
    if like not in _LAYOUT or not isinstance(i, types.Integer):
        return None
    width = _LAYOUT[like][0]

    def codegen(context, builder, sig, args):
        ity = ir.IntType(width)
        v = args[0]
        if i.bitwidth > width:
            v = builder.trunc(v, ity)
        elif i.bitwidth < width:
            v = builder.sext(v, ity)
        return builder.bitcast(_ordered_ir(builder, v, ity), context.get_value_type(like))

    return like(i, like), codegen


@intrinsic
def _split_ratio(typingctx, p, q):
    """(a, b, e) with p / q = (a / b) * 2**e: a, b the mantissas of p and q in [1, 2), e the
    difference of their exponents (a float), for positive normal p and q. The quotient itself
    is never formed, so it cannot overflow or underflow."""
    if p not in _LAYOUT or q != p:
        return None
    width, mbits, bias, _ = _LAYOUT[p]

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(p)
        ity = ir.IntType(width)
        bp = builder.bitcast(args[0], ity)
        bq = builder.bitcast(args[1], ity)
        mask = ir.Constant(ity, (1 << mbits) - 1)
        one = ir.Constant(ity, bias << mbits)
        a = builder.bitcast(builder.or_(builder.and_(bp, mask), one), fty)
        b = builder.bitcast(builder.or_(builder.and_(bq, mask), one), fty)
        shift = ir.Constant(ity, mbits)
        e = builder.sub(builder.lshr(bp, shift), builder.lshr(bq, shift))
        return context.make_tuple(builder, sig.return_type, [a, b, builder.sitofp(e, fty)])

    return types.UniTuple(p, 3)(p, q), codegen


@intrinsic
def _ratio_guard(typingctx, t, p, q):
    """The term t, made NaN unless p * log_ratio_core(p, q) is exact for (p, q): q positive,
    normal and finite, p zero or positive, normal and finite.

    The NaN sends the row to the exact path, and riding in the row's sum it costs no second
    accumulator (a second horizontal reduction per row). It is OR-ed into t's bits rather than
    selected: LLVM folds ``acc + select(bad, NaN, t)`` into a select of the accumulator, which
    is no longer a reduction it vectorizes. The test is two unsigned compares on the bits:
    ``bits - min_normal`` is below the span of the normal exponents only for positive normal
    finite values.
    """
    if t not in _LAYOUT or not (t == p == q):
        return None
    width, mbits, bias, _ = _LAYOUT[t]

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(t)
        ity = ir.IntType(width)
        bt, bp, bq = (builder.bitcast(a, ity) for a in args)
        low = ir.Constant(ity, 1 << mbits)  # the smallest normal's bits
        span = ir.Constant(ity, (2 * bias) << mbits)  # exponent fields 1 .. 2 * bias
        bad_q = builder.icmp_unsigned(">=", builder.sub(bq, low), span)
        bad_p = builder.icmp_unsigned(">=", builder.sub(bp, low), span)
        bad_p = builder.and_(bad_p, builder.icmp_unsigned("!=", bp, ir.Constant(ity, 0)))
        bad = builder.sext(builder.or_(bad_p, bad_q), ity)  # all ones where bad
        quiet_nan = ir.Constant(ity, ((1 << (width - mbits)) - 1) << (mbits - 1))
        return builder.bitcast(builder.or_(bt, builder.and_(bad, quiet_nan)), fty)

    return t(t, p, q), codegen


# --- float32 -------------------------------------------------------------------------------

_F = np.float32
_SQRT_HALF_F = _F(0.70710678118654752)
_MIN_NORMAL_F = _F(np.finfo(np.float32).tiny)


@njit(**_LEAF)
def _div_f32(x, y):
    """x / y. The GPU binds its fast division here (2 ulp for y in the ranges the callers
    give it: [1.4, 2.5) and [2, 4)); the CPU's vector division is already fast."""
    return x / y


@njit(**_LEAF)
def _log_poly_f32(m, e):
    # musl logf: log(m * 2**e) for m in [0.5, 1), reduced to log1p(f), |f| < 0.4143, then
    # log1p(f) = 2 atanh(s), s = f / (2 + f): four coefficients in s**2. The division costs
    # less than the five extra FMAs of Cephes' direct polynomial (15% faster in the kernels).
    small = m < _SQRT_HALF_F
    e = e - _F(1.0) if small else e
    f = (m + m - _F(1.0)) if small else (m - _F(1.0))
    s = _div_f32(f, _F(2.0) + f)
    z = s * s
    w = z * z
    t1 = w * (_F(0.40000972152) + w * _F(0.24279078841))
    t2 = z * (_F(0.66666662693) + w * _F(0.28498786688))
    hfsq = _F(0.5) * f * f
    # ln 2 split in two so that the exponent term stays exact
    return s * (hfsq + t2 + t1) + e * _F(-2.12194440e-4) - hfsq + f + e * _F(0.693359375)


@njit(**_LEAF)
def _log_core_f32(x):
    return _log_poly_f32(_mantissa(x), _exponent(x))


@njit(**_LEAF)
def _log_f32(x):
    sub = x < _MIN_NORMAL_F  # subnormal (and zero, negative, NaN: fixed below)
    xs = x * _F(8388608.0) if sub else x  # 2**23 brings subnormals into the normal range
    r = _log_poly_f32(_mantissa(xs), _exponent(xs) - (_F(23.0) if sub else _F(0.0)))
    r = _F(-np.inf) if x == _F(0.0) else r
    r = x if x == _F(np.inf) else r
    return r if x >= _F(0.0) else _F(np.nan)  # negative or NaN


@njit(**_LEAF)
def _log_ratio_f32(p, q):
    # log(p / q) = e ln 2 + log(a / b) with a, b in [1, 2) (no normalization: one division),
    # log(a / b) = 2 atanh(s) = 2s + s z R(z), s = (a - b) / (a + b), |s| < 1/3, z = s**2.
    # a - b is exact (Sterbenz), so s is within about 1 ulp even where p and q are close and the
    # term is small. Where p and q straddle a power of two, e ln 2 and log(a / b) cancel and
    # the error is about an ulp of 1: what rounding p / q alone costs the quotient form, and
    # what the KL term, an absolute sum weighted by p, can afford. R(z) is the near-minimax
    # fit ``mpmath.chebyfit(h, [0, 1/9], 4)`` of h(z) = (2 atanh(sqrt z) / sqrt z - 2) / z
    # (0.3 ulp of log(a / b)).
    a, b, e = _split_ratio(p, q)
    s = _div_f32(a - b, a + b)
    z = s * s
    r = _F(0.26851498022837151807)
    r = r * z + _F(0.28236619805310481437)
    r = r * z + _F(0.40007560644911205765)
    r = r * z + _F(0.66666640336699239788)
    return s * (z * r) + s * _F(2.0) + e * _F(0.69314718055994531)


_SHIFTER_F = _F(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer, in one FMA


@njit(**_LEAF)
def _exp_poly_f32(x):
    # x = n ln2 + r, |r| <= ln2 / 2; returns (exp(r), n). n = round(x / ln2) by the shifter:
    # one FMA and a subtraction, where floor() would be a rounding instruction more. (The FMA
    # would keep a reassoc flag from folding (x log2e + S) - S into x log2e.) exp(r) is
    # 1 + r + r**2 P(r), P the near-minimax fit ``mpmath.chebyfit(g, [-ln2/2, ln2/2], 5)`` of
    # g(r) = (exp(r) - 1 - r) / r**2: 1e-8 relative, a coefficient fewer than Cephes' expf.
    n = _fma(x, _F(1.44269504088896341), _SHIFTER_F) - _SHIFTER_F
    r = _reduce(x, n, _F(0.693359375), _F(-2.12194440e-4))
    y = _F(0.0013926176119935578884)
    y = y * r + _F(0.0083631730745137109028)
    y = y * r + _F(0.041666554662050533982)
    y = y * r + _F(0.1666657702559798819)
    y = y * r + _F(0.5)
    return y * r * r + r + _F(1.0), n


@njit(**_LEAF)
def _exp_core_f32(x):
    # Clamping at -87.9 makes n >= -127, and 2**-127 built from bits is exactly 0: results
    # below the normal range flush to 0 without a select. (One multiply: nothing to regroup.)
    xc = _F(-87.9) if x < _F(-87.9) else x
    y, n = _exp_poly_f32(xc)
    return y * _pow2(n)


@njit(**_LEAF)
def _exp_f32(x):
    xc = _F(-104.0) if x < _F(-104.0) else (_F(89.0) if x > _F(89.0) else x)
    y, n = _exp_poly_f32(xc)
    # Results below the normal range: scale up by 2**64 in the exponent, then one rounding
    # multiply by 2**-64 gives the correctly rounded subnormal.
    low = n < _F(0.0)
    r = _ldexp(y, n + _F(64.0)) * _F(5.421010862427522e-20) if low else _ldexp(y, n)
    r = _F(0.0) if x < _F(-103.972084) else r
    r = _F(np.inf) if x > _F(88.7228391) else r
    return x if x != x else r


# --- float64 -------------------------------------------------------------------------------

_SQRT_HALF_D = 0.7071067811865476
_MIN_NORMAL_D = float(np.finfo(np.float64).tiny)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@njit(**_LEAF)
def _log_poly_f64(m, e):
    # fdlibm/musl log: log1p(f) = 2 atanh(s), s = f / (2 + f), |s| < 0.1716.
    small = m < _SQRT_HALF_D
    e = e - 1.0 if small else e
    f = (m + m - 1.0) if small else (m - 1.0)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (
        3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01)
    )
    t2 = z * (
        6.666666666666735130e-01
        + w
        * (
            2.857142874366239149e-01
            + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)
        )
    )
    hfsq = 0.5 * f * f
    return e * _LN2_HI - ((hfsq - (s * (hfsq + t2 + t1) + e * _LN2_LO)) - f)


@njit(**_LEAF)
def _log_core_f64(x):
    return _log_poly_f64(_mantissa(x), _exponent(x))


@njit(**_LEAF)
def _log_f64(x):
    sub = x < _MIN_NORMAL_D
    xs = x * 18014398509481984.0 if sub else x  # 2**54
    r = _log_poly_f64(_mantissa(xs), _exponent(xs) - (54.0 if sub else 0.0))
    r = -np.inf if x == 0.0 else r
    r = x if x == np.inf else r
    return r if x >= 0.0 else np.nan


@njit(**_LEAF)
def _log_ratio_f64(p, q):
    # As _log_ratio_f32, with the degree-9 fit ``chebyfit(h, [0, 1/9], 10)`` (0.05 ulp).
    a, b, e = _split_ratio(p, q)
    s = (a - b) / (a + b)
    z = s * s
    r = 0.16164045611943532221
    r = r * z + 0.088007384861446738822
    r = r * z + 0.12001072809590712535
    r = r * z + 0.1331414420965493615
    r = r * z + 0.15385570064958623103
    r = r * z + 0.18181789436132858169
    r = r * z + 0.22222222717427862989
    r = r * z + 0.28571428567108757162
    r = r * z + 0.40000000000014582673
    r = r * z + 0.66666666666666658561
    return s * (z * r) + s * 2.0 + e * 0.69314718055994531


@njit(**_LEAF)
def _exp_poly_f64(x):
    # fdlibm exp: x = n ln2 + r, exp(r) = 1 + 2r / (2 - R(r)) with a degree-5 R (one division)
    n = np.floor(x * 1.44269504088896338700e00 + 0.5)
    hi = _reduce(x, n, _LN2_HI, 0.0)
    lo = n * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (
        1.66666666666666019037e-01
        + t
        * (
            -2.77777777770155933842e-03
            + t
            * (
                6.61375632143793436117e-05
                + t * (-1.65339022054652515390e-06 + t * 4.13813679705723846039e-08)
            )
        )
    )
    return 1.0 - ((lo - (r * c) / (2.0 - c)) - hi), n


@njit(**_LEAF)
def _exp_core_f64(x):
    xc = -708.0 if x < -708.0 else x
    y, n = _exp_poly_f64(xc)
    return 0.0 if x < -708.3964185322641 else _ldexp(y, n)


@njit(**_LEAF)
def _exp_f64(x):
    xc = -746.0 if x < -746.0 else (710.0 if x > 710.0 else x)
    y, n = _exp_poly_f64(xc)
    low = n < 0.0
    r = _ldexp(y, n + 128.0) * 2.938735877055719e-39 if low else _ldexp(y, n)  # 2**-128
    r = 0.0 if x < -745.1332191019412 else r
    r = np.inf if x > 709.782712893384 else r
    return x if x != x else r


# --- the public, dtype-generic names -------------------------------------------------------


def _generic(name, f32, f64):
    """Register an overload of ``name`` (a plain Python function) for float32 and float64."""

    def typer(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    overload(name, jit_options=JIT_OPTIONS)(typer)


def log(x):
    """Natural log; vectorizable in numba loops (see the module docstring)."""
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def exp(x):
    """e**x; vectorizable in numba loops (see the module docstring)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def log_core(x):
    """log for positive normal finite x only, without special-value handling."""
    return math.log(x) if x > 0 else math.nan


def exp_core(x):
    """exp for x <= 0 with results in the normal range (smaller ones flush to 0)."""
    return math.exp(x)


def log_ratio_core(p, q):
    """log(p / q) for positive normal finite p and q, without forming the quotient.

    For any other input it returns some value without raising (``ratio_guard`` tells which).
    """
    if p == 0:
        return 0.0  # as the compiled version: finite, so that the term p * log(p / q) is 0
    if not (p > 0 and q > 0 and p < math.inf and q < math.inf):
        return math.nan
    r = float(p) / float(q)
    return math.log(r) if 1e-300 <= r < math.inf else math.log(p) - math.log(q)


def ratio_guard(t, p, q):
    """t if q is positive, normal and finite and p is 0 or so; NaN otherwise."""
    kind = type(p) if isinstance(p, np.floating) else np.float64
    tiny, huge = float(np.finfo(kind).tiny), float(np.finfo(kind).max)

    def normal(x):
        return tiny <= x <= huge

    positive_zero = p == 0 and math.copysign(1.0, p) > 0  # -0.0 goes the exact way too
    return t if normal(q) and (positive_zero or normal(p)) else math.nan


def _generic2(name, f32, f64):
    """As _generic, for a function of two arguments of one float type."""

    def typer(p, q):
        if p == q == types.float32:
            return lambda p, q: f32(p, q)
        if p == q == types.float64:
            return lambda p, q: f64(p, q)
        return None

    overload(name, jit_options=JIT_OPTIONS)(typer)


_generic(log, _log_f32, _log_f64)
_generic(exp, _exp_f32, _exp_f64)
_generic(log_core, _log_core_f32, _log_core_f64)
_generic(exp_core, _exp_core_f32, _exp_core_f64)
_generic2(log_ratio_core, _log_ratio_f32, _log_ratio_f64)


@overload(ratio_guard, jit_options=JIT_OPTIONS)
def _ratio_guard_overload(t, p, q):
    if t in _LAYOUT and t == p == q:
        return lambda t, p, q: _ratio_guard(t, p, q)
    return None


def ordered_bits(x):
    """An integer with x's float order (for the vectorizable max reduction in the kernels)."""
    (i,) = struct.unpack("<q", struct.pack("<d", float(x)))
    return i ^ ((i >> 63) & 0x7FFFFFFFFFFFFFFF)


def from_ordered_bits(i, like):
    """Inverse of :func:`ordered_bits`, as a float of ``like``'s type."""
    i = int(i) ^ ((int(i) >> 63) & 0x7FFFFFFFFFFFFFFF)
    (x,) = struct.unpack("<d", struct.pack("<q", i))
    return type(like)(x)


@overload(ordered_bits, jit_options=JIT_OPTIONS)
def _ordered_bits_overload(x):
    if x in _LAYOUT:
        return lambda x: _ordered_bits(x)
    return None


@overload(from_ordered_bits, jit_options=JIT_OPTIONS)
def _from_ordered_bits_overload(i, like):
    if like in _LAYOUT:
        return lambda i, like: _from_ordered_bits(i, like)
    return None


def lowest_ordered(like):
    """The smallest value ordered_bits can take for ``like``'s type (a max reduction's start)."""
    return -(2**63) + 1


@overload(lowest_ordered, jit_options=JIT_OPTIONS)
def _lowest_ordered_overload(like):
    if like == types.float32:
        return lambda like: np.int32(-2147483647)
    if like == types.float64:
        return lambda like: np.int64(-9223372036854775807)
    return None


def like(x, value):
    """``value`` as a scalar of x's type (a float literal alone would promote float32 math)."""
    return type(x)(value)


@overload(like, inline="always", jit_options=JIT_OPTIONS)
def _like_overload(x, value):
    if x == types.float32:
        return lambda x, value: np.float32(value)
    if x == types.float64:
        return lambda x, value: np.float64(value)
    return None


# --- sums in explicit lanes ----------------------------------------------------------------
#
# The kernels are compiled without ``reassoc`` (see _config), so LLVM adds a sum in the order
# the source gives, and the result cannot depend on how a build inlined or vectorized it. A
# sum that is to vectorize then names its order: LANES partial sums, term j into lane
# j % LANES, and the lanes added by halves (lane i + half into lane i, down to two).

#: The partial sums of a vectorized sum: one AVX-512 register of float32, two of float64.
LANES = 16


def _halves(a):
    """The lanes of ``a`` added by halves in their precision, as a float (the order of both
    compiled sums below)."""
    a = np.array(a)
    while a.shape[0] > 1:
        half = a.shape[0] // 2
        a = a[:half] + a[half:]
    return float(a[0])


def lanes(x):
    """LANES zeros of x's type: the partial sums of a sum in explicit lanes.

    A loop adds term j into lane j % LANES; the kernels then add the lanes by halves. Compiled,
    this is an array on the stack of the function it is inlined into, zeroed where it is
    called: no allocation, and LLVM keeps it in registers since nothing else can point into
    it. It must not outlive that function (the kernels use it within one sum).
    """
    return np.zeros(LANES, type(x))


def lane_sum(x):
    """The sum of a 1-D contiguous float array in LANES lanes, added by halves, as a float64.

    Compiled, an explicit vector loop: a plain loop over ``lanes`` would be fully unrolled
    before LLVM's loop vectorizer sees it, and the 16 scalar sums left are not vectorized.
    """
    a = np.zeros(LANES, x.dtype)
    full = x.shape[0] - x.shape[0] % LANES
    for j0 in range(0, full, LANES):
        a += x[j0 : j0 + LANES]
    a[: x.shape[0] - full] += x[full:]
    return _halves(a)


@intrinsic
def _stack_zeros(typingctx, x):
    if x not in _LAYOUT:
        return None
    array_type = types.Array(x, 1, "C")

    def codegen(context, builder, sig, args):
        lty = context.get_value_type(x)
        block = ir.ArrayType(lty, LANES)
        slot = cgutils.alloca_once(builder, block)  # in the entry block: one per call site
        builder.store(ir.Constant(block, None), slot)  # zeroed at each call
        zero = ir.Constant(ir.IntType(32), 0)
        data = builder.gep(slot, [zero, zero], inbounds=True)
        array = context.make_array(array_type)(context, builder)
        size = context.get_abi_sizeof(lty)
        intp = context.get_value_type(types.intp)
        populate_array(
            array,
            data=data,
            shape=(intp(LANES),),
            strides=(intp(size),),
            itemsize=intp(size),
            meminfo=None,
        )
        return array._getvalue()

    return array_type(x), codegen


@overload(lanes, inline="always", jit_options=JIT_OPTIONS)
def _lanes_overload(x):
    # inlined at the numba IR level, so the stack slot belongs to the caller's frame
    if x in _LAYOUT:
        return lambda x: _stack_zeros(x)
    return None


def _emit_halves(builder, v, width):
    """The lanes of vector v added by halves (as ``_halves``), a scalar of v's element type."""
    while width > 1:
        half = width // 2
        lo = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half)))
        )
        hi = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half, width)))
        )
        v = builder.fadd(lo, hi)
        width = half
    return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))


def lanes_total(a):
    """The LANES partial sums in ``a`` (from ``lanes``) added by halves, as a float64."""
    return _halves(a)


@intrinsic
def _lanes_total(typingctx, a):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype in _LAYOUT):
        return None

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(a.dtype)
        vty = ir.VectorType(fty, LANES)
        data = context.make_array(a)(context, builder, args[0]).data
        v = builder.load(
            builder.bitcast(data, vty.as_pointer()), align=context.get_abi_sizeof(fty)
        )
        total = _emit_halves(builder, v, LANES)
        if a.dtype == types.float32:
            total = builder.fpext(total, ir.DoubleType())
        return total

    return types.float64(a), codegen


@overload(lanes_total, inline="always", jit_options=JIT_OPTIONS)
def _lanes_total_overload(a):
    if isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype in _LAYOUT:
        return lambda a: _lanes_total(a)
    return None


@intrinsic
def _lane_sum(typingctx, x):
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and x.dtype in _LAYOUT):
        return None

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(x.dtype)
        vty = ir.VectorType(fty, LANES)
        intp = context.get_value_type(types.intp)
        array = context.make_array(x)(context, builder, args[0])
        n = builder.extract_value(array.shape, 0)
        data = array.data
        full = builder.sub(n, builder.srem(n, intp(LANES)))
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, None))
        align = context.get_abi_sizeof(fty)
        with cgutils.for_range_slice(builder, intp(0), full, intp(LANES), intp) as (j, _):
            ptr = builder.bitcast(builder.gep(data, [j], inbounds=True), vty.as_pointer())
            builder.store(builder.fadd(builder.load(acc), builder.load(ptr, align=align)), acc)
        # The last n % LANES elements into the first lanes: a masked load (the lanes past
        # the end read nothing) and a select, so that the other lanes keep their bits.
        i32 = ir.IntType(32)
        rest = builder.trunc(builder.sub(n, full), i32)
        lane_ids = ir.Constant(ir.VectorType(i32, LANES), list(range(LANES)))
        splat = builder.insert_element(ir.Constant(ir.VectorType(i32, LANES), None), rest, i32(0))
        splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(i32, LANES), None))
        mask = builder.icmp_unsigned("<", lane_ids, splat)
        name = f"llvm.masked.load.v{LANES}{'f32' if x.dtype == types.float32 else 'f64'}.p0"
        fnty = ir.FunctionType(vty, [vty.as_pointer(), i32, mask.type, vty])
        masked_load = cgutils.get_or_insert_function(builder.module, fnty, name)
        ptr = builder.bitcast(builder.gep(data, [full], inbounds=True), vty.as_pointer())
        tail = builder.call(masked_load, [ptr, i32(align), mask, ir.Constant(vty, None)])
        v = builder.load(acc)
        total = _emit_halves(builder, builder.select(mask, builder.fadd(v, tail), v), LANES)
        if x.dtype == types.float32:
            total = builder.fpext(total, ir.DoubleType())
        return total

    return types.float64(x), codegen


@overload(lane_sum, jit_options=JIT_OPTIONS)
def _lane_sum_overload(x):
    if isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and x.dtype in _LAYOUT:
        return lambda x: _lane_sum(x)
    return None
