"""Fuzz libfastkl's C API through ctypes: random calls, each checked against an oracle.

    python tests/capi_fuzz.py LIBPATH [--calls N] [--seed S] [--verbose] [--show M]

Every call draws its arguments from a seeded numpy Generator (the same seed replays the same
calls): p, q and out NULL, a poisoned pointer (the first byte of a PROT_NONE page: any read or
write faults) or a pointer into a buffer; n, k, ldp and ldq from small valid values, 0,
negatives, INT64_MIN/MAX, values near 2**62 and 2**63, and values on either side of the
overflow limit of ``(n - 1) * ld + k`` elements; forms from 0, 1, 2 and unknown ints.

The oracle predicts the status from the rules of ``include/fastkl.h``, in the order the cfuncs
check them (``fastkl/capi/_cfuncs.py``): n < 0, k < 1, an unknown form, a stride < k (ldq 0
allowed), rows whose bytes overflow int64, then (n > 0 only) a NULL pointer. A call must
return exactly that status. When it is an error, or n == 0, out must stay untouched. When it is
FASTKL_OK, p, q and out are exactly as large as the call may read or write (p: (n-1)*ldp+k
elements; q: (n-1)*ldq+k, or k when ldq == 0; out: n), placed either between guard elements
holding a sentinel or against a PROT_NONE page (front or back), so an overrun faults or shows
in the guards; the inputs must stay unchanged, and out must equal, bit for bit, fastkl's
Python function with default options on the same rows (documented as the same kernels).
Equal values in other bits (0.0 and -0.0, NaN payloads) are counted as ``bitdiffs`` and
shown on stderr, not as mismatches.

Calls whose sizes are valid but too large to allocate (k = 2**40, a stride at the overflow
limit) get at least one NULL pointer and must answer FASTKL_ERR_NULL without reading anything.
Some calls are fastkl_set_num_threads (random ints; 0 restored at the end) and
fastkl_strerror (random ints: never NULL, the documented message for known codes).

Prints one summary line, ``capi fuzz: calls=N ok=.. errors={..} mismatches=M seconds=..``
and more counters, then exits 1 on any mismatch (0 otherwise). A crash kills the process (a
signal): replay the same seed with --verbose, which prints each call before making it.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import json
import mmap
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

import fastkl
from fastkl import capi

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT_MIN = -(2**31)
INT_MAX = 2**31 - 1

# include/fastkl.h's status codes and forms (checked against fastkl.capi at start-up)
OK = 0
ERR_NULL = 1
ERR_N = 2
ERR_K = 3
ERR_STRIDE = 4
ERR_OVERFLOW = 5
ERR_FORM = 6
ERR_THREADS = 7
ERR_INIT = 8
STATUS_NAMES = {
    OK: "OK",
    ERR_NULL: "ERR_NULL",
    ERR_N: "ERR_N",
    ERR_K: "ERR_K",
    ERR_STRIDE: "ERR_STRIDE",
    ERR_OVERFLOW: "ERR_OVERFLOW",
    ERR_FORM: "ERR_FORM",
    ERR_THREADS: "ERR_THREADS",
    ERR_INIT: "ERR_INIT",
}
FORMS = {0: "probs", 1: "log_probs", 2: "logits"}

STEMS = ("kl_div", "js_div", "sym_kl", "cross_entropy", "entropy")
PYTHON_API = {
    "kl_div": fastkl.kl_div,
    "js_div": fastkl.js_div,
    "sym_kl": fastkl.sym_kl,
    "cross_entropy": fastkl.cross_entropy,
    "entropy": fastkl.entropy,
}
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
C_FLOAT = {4: ctypes.c_float, 8: ctypes.c_double}
SUFFIX = {4: "f32", 8: "f64"}
UINT = {4: np.uint32, 8: np.uint64}
#: bits no kernel produces (a NaN with a payload): guards and out are filled with them
SENTINEL = {4: 0x7FA1B2C3, 8: 0x7FF4DEADBEEF1234}

GUARD = 8  # sentinel elements around a guarded buffer
SMALL = 16  # elements of a buffer handed to a call that must not touch it
ARENA_BYTES = 4 << 20  # each of p, q and out: the largest valid call fits (2 rows of ~70,000)
CAP = ARENA_BYTES // 8 - 2 * GUARD  # elements: larger valid calls get a NULL pointer

SPECIALS = (np.nan, np.inf, -np.inf, -1.0, -0.0, 0.0, 1e-310, 1e-40, 3e38, 1e308, 1.0, 2.0)

# --- the library -------------------------------------------------------------------------------


def declare(path: str) -> ctypes.CDLL:
    """libfastkl with every function of fastkl.h declared (argtypes, restype)."""
    lib = ctypes.CDLL(path)
    i64, cint = ctypes.c_int64, ctypes.c_int
    for itemsize, cfloat in C_FLOAT.items():
        ptr = ctypes.POINTER(cfloat)
        for stem in STEMS:
            fn = getattr(lib, f"fastkl_{stem}_{SUFFIX[itemsize]}")
            fn.restype = cint
            if stem == "entropy":
                fn.argtypes = [ptr, i64, i64, i64, cint, ptr]
            else:
                fn.argtypes = [ptr, ptr, i64, i64, i64, i64, cint, cint, ptr]
    lib.fastkl_strerror.restype = ctypes.c_char_p
    lib.fastkl_strerror.argtypes = [cint]
    lib.fastkl_version.restype = ctypes.c_char_p
    lib.fastkl_version.argtypes = []
    lib.fastkl_init.restype = cint
    lib.fastkl_init.argtypes = []
    lib.fastkl_set_num_threads.restype = cint
    lib.fastkl_set_num_threads.argtypes = [cint]
    return lib


def check_constants() -> None:
    """The codes above are the header's (fastkl.capi reads them from the same cdef)."""
    for code, name in STATUS_NAMES.items():
        assert capi.STATUS[f"FASTKL_{name}"][0] == code, name
    assert (capi.FASTKL_PROBS, capi.FASTKL_LOG_PROBS, capi.FASTKL_LOGITS) == (0, 1, 2)


# --- the oracle --------------------------------------------------------------------------------


def size_status(n: int, k: int, ldp: int, ldq: int, p_form: int, q_form: int, item: int) -> int:
    """The status the header's rules give a call's sizes and forms (pointers aside)."""
    if n < 0:
        return ERR_N
    if k < 1:
        return ERR_K
    if not (0 <= p_form <= 2 and 0 <= q_form <= 2):
        return ERR_FORM
    if ldp < k or (ldq != 0 and ldq < k):
        return ERR_STRIDE
    if n > 0 and any(((n - 1) * ld + k) * item > INT64_MAX for ld in (ldp, ldq)):
        return ERR_OVERFLOW  # Python ints: the exact bytes spanned, no wrap-around
    return OK


def expected_status(sizes: int, n: int, null: bool) -> int:
    if sizes != OK or n == 0:
        return sizes
    return ERR_NULL if null else OK


# --- memory ------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int


class Arena:
    """A data area between two PROT_NONE pages: a read or write past either end faults."""

    def __init__(self, nbytes: int) -> None:
        page = mmap.PAGESIZE
        self.size = -(-nbytes // page) * page
        self._map = mmap.mmap(-1, self.size + 2 * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        for addr in (base, base + page + self.size):
            if _libc.mprotect(addr, page, 0) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
        self.lo = base + page
        self.hi = self.lo + self.size  # the first byte of the upper fence: the poison pointer
        self.bytes = np.frombuffer((ctypes.c_char * self.size).from_address(self.lo), np.uint8)

    def view(self, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        return self.bytes[offset : offset + count * dtype.itemsize].view(dtype)


class Buf:
    """One pointer argument: NULL, poison, or `data` (with sentinel `guards` around it)."""

    def __init__(self, kind: str, addr: int | None = None, data=None, guards=()) -> None:
        self.kind, self.addr, self.data, self.guards = kind, addr, data, list(guards)

    @property
    def real(self) -> bool:
        return self.data is not None


def fill_sentinel(a: np.ndarray) -> None:
    a.view(UINT[a.itemsize])[:] = SENTINEL[a.itemsize]


def is_sentinel(a: np.ndarray) -> np.ndarray:
    return a.view(UINT[a.itemsize]) == SENTINEL[a.itemsize]


def place(kind: str, arena: Arena, count: int, dtype: np.dtype) -> Buf:
    """A buffer of exactly `count` elements: "guard" (sentinels on both sides), "front" (a
    PROT_NONE page right before it) or "back" (one right after); "null"; "poison"."""
    if kind == "null":
        return Buf(kind)
    if kind == "poison":
        return Buf(kind, arena.hi)
    if kind == "guard":
        mem = np.empty(count + 2 * GUARD, dtype)
        fill_sentinel(mem)
        data = mem[GUARD : GUARD + count]
        guards = (mem[:GUARD], mem[GUARD + count :])
    elif kind == "front":
        mem = arena.view(0, count + GUARD, dtype)
        fill_sentinel(mem)
        data, guards = mem[:count], (mem[count:],)
    else:  # back
        mem = arena.view(arena.size - (count + GUARD) * dtype.itemsize, count + GUARD, dtype)
        fill_sentinel(mem)
        data, guards = mem[GUARD:], (mem[:GUARD],)
    return Buf(kind, data.ctypes.data, data, guards)


# --- inputs ------------------------------------------------------------------------------------


def rows(rng: np.random.Generator, m: int, k: int, form: int, dtype: np.dtype) -> np.ndarray:
    """m rows of k values in a form: mostly well-formed, sometimes with zeros or specials."""
    x = rng.random((m, k)) ** rng.choice([1, 3, 12])
    if rng.random() < 0.3:
        x[rng.random((m, k)) < rng.choice([0.1, 0.5, 0.97])] = 0.0
    if rng.random() < 0.9:
        s = x.sum(axis=1, keepdims=True)
        x = np.divide(x, s, out=np.zeros_like(x), where=s > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if form == 1:
            x = np.log(x)
        elif form == 2:
            if rng.random() < 0.5:
                x = np.log(x) + rng.normal(scale=20.0, size=(m, 1))
            else:
                x = rng.normal(scale=rng.choice([1.0, 50.0]), size=(m, k))
        if rng.random() < 0.2:
            hits = rng.integers(1, 4)
            x.reshape(-1)[rng.integers(0, x.size, hits)] = rng.choice(SPECIALS, hits)
        with np.errstate(over="ignore"):
            return x.astype(dtype)


def fill_rows(
    rng: np.random.Generator, data: np.ndarray, m: int, k: int, ld: int, form: int
) -> np.ndarray:
    """Writes m rows of k at stride ld into data (padding: garbage); returns the (m, k) view."""
    with np.errstate(over="ignore"):
        if rng.random() < 0.5:
            data[:] = np.nan
        else:
            data[:] = rng.choice(SPECIALS, data.size)
    strides = ((ld if m > 1 else k) * data.itemsize, data.itemsize)  # one row: any ld
    view = as_strided(data, (m, k), strides)
    view[:] = rows(rng, m, k, form, data.dtype)
    return as_strided(data, (m, k), strides, writeable=False)


# --- argument draws ------------------------------------------------------------------------------


def pick(rng: np.random.Generator, values):
    """One of values (Python ints stay Python ints: no int64 wrap-around in the oracle)."""
    return values[rng.integers(len(values))]


def clip64(v: int) -> int:
    return min(max(int(v), INT64_MIN), INT64_MAX)


def hostile_int64(rng: np.random.Generator) -> int:
    pool = (
        0,
        -1,
        -2,
        INT64_MIN,
        INT64_MIN + 1,
        INT64_MAX,
        INT64_MAX - 1,
        2**62,
        2**62 - 1,
        2**62 + 1,
        -(2**62),
        2**63 - 2,
        INT64_MAX // 2,
        INT64_MAX // 4,
        INT64_MAX // 4 + 1,
        INT64_MAX // 8,
        INT64_MAX // 8 + 1,
        2**31 - 1,
        2**31,
        2**32,
        2**32 + 1,
        2**40,
        -(2**31),
    )
    r = rng.random()
    if r < 0.7:
        return pool[rng.integers(len(pool))]
    if r < 0.8:
        return -int(rng.integers(1, 2**62))
    if r < 0.9:
        return int(rng.integers(2**20, 2**62))
    return int(rng.integers(51, 2**20))


def hostile_form(rng: np.random.Generator) -> int:
    pool = (-1, 3, 4, 255, INT_MAX, INT_MIN, INT_MAX - 1, INT_MIN + 1, -2)
    if rng.random() < 0.8:
        return pool[rng.integers(len(pool))]
    v = int(rng.integers(INT_MIN, INT_MAX + 1))
    return v if not 0 <= v <= 2 else 3


def valid_k(rng: np.random.Generator) -> int:
    r = rng.random()
    if r < 0.4:
        return int(rng.integers(1, 9))  # the flat kernels
    if r < 0.985:
        return int(rng.integers(9, 301))
    # long rows: the split mode starts at 2 * CHUNK = 65,536
    return int(rng.choice([65535, 65536, 70000, 70001]) + rng.integers(0, 3))


def valid_n(rng: np.random.Generator, k: int) -> int:
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.2 or k > 60_000:
        return int(rng.integers(1, 3))
    return int(rng.integers(2, 51))


def valid_ld(rng: np.random.Generator, k: int, q: bool) -> int:
    r = rng.random()
    if q and r < 0.2:
        return 0
    if r < 0.7:
        return k
    return k + int(rng.integers(1, 17))


def draw_args(rng: np.random.Generator, item: int) -> tuple[int, ...]:
    """n, k, ldp, ldq, p_form, q_form: valid, or with some of them hostile."""
    k = valid_k(rng)
    n = valid_n(rng, k)
    ldp, ldq = valid_ld(rng, k, False), valid_ld(rng, k, True)
    p_form, q_form = (int(f) for f in rng.integers(0, 3, 2))
    if rng.random() < 0.45:
        return n, k, ldp, ldq, p_form, q_form
    hostile = rng.random(6) < (0.35, 0.35, 0.35, 0.35, 0.12, 0.12)  # n k ldp ldq forms
    if not hostile.any():
        hostile[rng.integers(6)] = True
    if hostile[1]:
        k = hostile_int64(rng)
        if rng.random() < 0.5:  # strides that follow k (valid or just below)
            ldp = clip64(k + int(rng.choice([0, 0, 1, -1])))
            ldq = clip64(k + int(rng.choice([0, 0, 1, -1]))) if ldq else 0
    if hostile[0]:
        n = hostile_int64(rng)
    if hostile[2]:
        ldp = pick(rng, [clip64(k - 1), clip64(k - int(rng.integers(1, 100))), hostile_int64(rng)])
    if hostile[3]:
        ldq = pick(rng, [clip64(k - 1), 0, hostile_int64(rng)])
    if hostile[4]:
        p_form = hostile_form(rng)
    if hostile[5]:
        q_form = hostile_form(rng)
    if rng.random() < 0.3:  # on either side of the overflow limit
        limit = INT64_MAX // item
        if 1 <= k <= limit:
            side = int(rng.choice([-1, 0, 1, 2]))
            which = rng.integers(3)
            if which == 2 and ldp > 0:
                n = clip64((limit - k) // ldp + 1 + side)
            elif n > 1:
                ld = clip64((limit - k) // (n - 1) + side)
                if which == 0:
                    ldp = ld
                else:
                    ldq = ld
    return int(n), int(k), int(ldp), int(ldq), int(p_form), int(q_form)


# --- the fuzzer ----------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, lib: ctypes.CDLL, seed: int, verbose: bool, show: int = 20) -> None:
        import numba

        self.lib = lib
        self.rng = np.random.default_rng(seed)
        self.verbose = verbose
        self.show = show
        self.max_threads = numba.config.NUMBA_NUM_THREADS
        self.arenas = {name: Arena(ARENA_BYTES) for name in ("p", "q", "out")}
        self.statuses: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()
        self.mismatches: list[str] = []
        self.messages = dict(capi.STATUS.values())

    def fail(self, what: str) -> None:
        self.mismatches.append(what)
        if len(self.mismatches) <= self.show:
            print(f"MISMATCH {what}", file=sys.stderr, flush=True)

    # one call of each kind

    def threads_call(self, i: int) -> None:
        rng = self.rng
        if rng.random() < 0.6:
            v = int(rng.integers(0, self.max_threads + 1))
        else:
            pool = (-1, self.max_threads + 1, INT_MAX, INT_MIN, 1 << 20)
            v = pool[rng.integers(len(pool))] if rng.random() < 0.7 else int(rng.integers(-99, 0))
        want = OK if 0 <= v <= self.max_threads else ERR_THREADS
        if self.verbose:
            print(f"{i} fastkl_set_num_threads({v})", flush=True)
        got = self.lib.fastkl_set_num_threads(v)
        self.statuses[got] += 1
        self.counts["set_num_threads"] += 1
        if got != want:
            self.fail(f"call {i}: fastkl_set_num_threads({v}) = {got}, expected {want}")

    def strerror_call(self, i: int) -> None:
        rng = self.rng
        if rng.random() < 0.6:
            code = int(rng.integers(-3, 12))
        else:
            code = int(rng.integers(INT_MIN, INT_MAX + 1))
        if self.verbose:
            print(f"{i} fastkl_strerror({code})", flush=True)
        got = self.lib.fastkl_strerror(code)
        self.counts["strerror"] += 1
        known = self.messages
        if got is None:
            self.fail(f"call {i}: fastkl_strerror({code}) returned NULL")
        elif code in known and got.decode() != known[code]:
            self.fail(f"call {i}: fastkl_strerror({code}) = {got!r}, expected {known[code]!r}")
        elif not got:
            self.fail(f"call {i}: fastkl_strerror({code}) is empty")

    def divergence_call(self, i: int) -> None:
        rng = self.rng
        stem = STEMS[rng.integers(len(STEMS))]
        dtype = DTYPES[rng.integers(2)]
        item = dtype.itemsize
        n, k, ldp, ldq, p_form, q_form = draw_args(rng, item)
        has_q = stem != "entropy"
        if not has_q:
            ldq, q_form = ldp, p_form  # what the cfunc checks for entropy
        sizes = size_status(n, k, ldp, ldq, p_form, q_form, item)
        names = ("p", "q", "out") if has_q else ("p", "out")
        if sizes == OK and n > 0:
            need = {"p": (n - 1) * ldp + k, "q": (n - 1) * ldq + k, "out": n}
            small = n <= CAP and max(need.values()) <= CAP
            kinds = {name: str(rng.choice(["guard", "front", "back"])) for name in names}
            if not small or rng.random() < 0.1:
                nulls = [name for name in names if rng.random() < 0.5]
                nulls = nulls or [names[rng.integers(len(names))]]
                for name in names:
                    if name in nulls:
                        kinds[name] = "null"
                    elif not small or rng.random() < 0.5:
                        kinds[name] = "poison"
            counts = need
        else:  # an error, or n == 0: no pointer may be read
            kinds = {name: str(rng.choice(["null", "poison", "guard"])) for name in names}
            counts = dict.fromkeys(names, SMALL if n != 0 or rng.random() < 0.5 else 0)
        want = expected_status(sizes, n, any(kind == "null" for kind in kinds.values()))
        bufs = {name: place(kinds[name], self.arenas[name], counts[name], dtype) for name in names}
        valid = want == OK and n > 0
        inputs = {}
        if valid:
            p2d = fill_rows(rng, bufs["p"].data, n, k, ldp, p_form)
            inputs["p"] = p2d
            if has_q:
                if ldq == 0:
                    fill_rows(rng, bufs["q"].data, 1, k, k, q_form)
                    inputs["q"] = bufs["q"].data[:k]
                else:
                    inputs["q"] = fill_rows(rng, bufs["q"].data, n, k, ldq, q_form)
        else:
            for name in names:
                if name != "out" and bufs[name].real:
                    bufs[name].data[:] = rng.random(bufs[name].data.size)
        before = {
            name: bufs[name].data.copy() for name in names if name != "out" and bufs[name].real
        }

        fn = getattr(self.lib, f"fastkl_{stem}_{SUFFIX[item]}")
        ptr = ctypes.POINTER(C_FLOAT[item])
        a = {
            name: None if b.addr is None else ctypes.cast(b.addr, ptr) for name, b in bufs.items()
        }
        desc = (
            f"fastkl_{stem}_{SUFFIX[item]}(p={kinds['p']}, "
            + (f"q={kinds['q']}, " if has_q else "")
            + f"n={n}, k={k}, ldp={ldp}, "
            + (f"ldq={ldq}, " if has_q else "")
            + f"p_form={p_form}, "
            + (f"q_form={q_form}, " if has_q else "")
            + f"out={kinds['out']})"
        )
        if self.verbose:
            print(f"{i} {desc} expecting {want}", flush=True)
        if has_q:
            got = fn(a["p"], a["q"], n, k, ldp, ldq, p_form, q_form, a["out"])
        else:
            got = fn(a["p"], n, k, ldp, p_form, a["out"])
        self.statuses[got] += 1
        self.counts[f"{stem}_{SUFFIX[item]}"] += 1
        if got != want:
            self.fail(f"call {i}: {desc} = {got}, expected {want}")
        for name, b in bufs.items():
            if b.real and not all(is_sentinel(g).all() for g in b.guards):
                self.fail(f"call {i}: {desc} wrote into the guard elements of {name}")
        for name, old in before.items():
            if not np.array_equal(bufs[name].data.view(UINT[item]), old.view(UINT[item])):
                self.fail(f"call {i}: {desc} changed its input {name}")
        out = bufs["out"]
        if not valid:
            if out.real and not is_sentinel(out.data).all():
                self.fail(f"call {i}: {desc} wrote out but returned {got}")
            return
        if got != OK:
            return
        self.counts["compared"] += 1
        kwargs = {"p_form": FORMS[p_form]}
        if has_q:
            kwargs["q_form"] = FORMS[q_form]
            ref = PYTHON_API[stem](inputs["p"], inputs["q"], **kwargs)
        else:
            ref = PYTHON_API[stem](inputs["p"], **kwargs)
        ref = np.asarray(ref)
        res = out.data
        if ref.dtype != res.dtype or ref.shape != res.shape:
            self.fail(f"call {i}: {desc}: Python gives {ref.dtype}{ref.shape}")
        elif is_sentinel(res).any():
            self.fail(f"call {i}: {desc} left out[{np.flatnonzero(is_sentinel(res))[:5]}]")
        elif not np.array_equal(res.view(UINT[item]), ref.view(UINT[item])):
            if np.array_equal(res, ref, equal_nan=True):
                self.counts["bitdiffs"] += 1  # equal values, other bits (0.0 and -0.0, NaNs)
                if self.counts["bitdiffs"] <= 5:
                    j = np.flatnonzero(res.view(UINT[item]) != ref.view(UINT[item]))[0]
                    print(
                        f"BITDIFF call {i}: {desc}: out[{j}] = {res[j]!r} "
                        f"({res[j : j + 1].view(UINT[item])[0]:#x}), fastkl.{stem} gives "
                        f"{ref[j]!r} ({ref[j : j + 1].view(UINT[item])[0]:#x})",
                        file=sys.stderr,
                        flush=True,
                    )
            else:
                bad = np.flatnonzero(~((res == ref) | (np.isnan(res) & np.isnan(ref))))
                self.fail(
                    f"call {i}: {desc}: out differs from fastkl.{stem} at rows {bad[:5]}: "
                    f"{res[bad[:3]].tolist()} != {ref[bad[:3]].tolist()}"
                )

    def run(self, calls: int) -> None:
        for i in range(calls):
            r = self.rng.random()
            if r < 0.01:
                self.threads_call(i)
            elif r < 0.02:
                self.strerror_call(i)
            else:
                self.divergence_call(i)
        got = self.lib.fastkl_set_num_threads(0)
        if got != OK:
            self.fail(f"fastkl_set_num_threads(0) at the end = {got}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", help="path of libfastkl.so")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print each call before it")
    parser.add_argument("--show", type=int, default=20, help="mismatches printed (stderr)")
    args = parser.parse_args(argv)
    faulthandler.enable()
    check_constants()

    lib = declare(args.library)
    status = lib.fastkl_init()
    if status != OK:
        print(f"capi fuzz: fastkl_init() = {status}", file=sys.stderr)
        return 2
    version = lib.fastkl_version()
    if version is None or version.decode() != fastkl.__version__:
        print(f"capi fuzz: fastkl_version() = {version!r}", file=sys.stderr)
        return 2

    fuzzer = Fuzzer(lib, args.seed, args.verbose, args.show)
    start = time.perf_counter()
    fuzzer.run(args.calls)
    seconds = time.perf_counter() - start

    errors = {STATUS_NAMES.get(s, str(s)): c for s, c in sorted(fuzzer.statuses.items()) if s}
    extra: dict[str, Any] = {
        "compared": fuzzer.counts["compared"],
        "bitdiffs": fuzzer.counts["bitdiffs"],
        "strerror": fuzzer.counts["strerror"],
        "set_num_threads": fuzzer.counts["set_num_threads"],
        "seed": args.seed,
    }
    print(
        f"capi fuzz: calls={args.calls} ok={fuzzer.statuses[OK]} "
        f"errors={json.dumps(errors, separators=(',', ':'))} "
        f"mismatches={len(fuzzer.mismatches)} seconds={seconds:.1f} "
        + " ".join(f"{key}={value}" for key, value in extra.items()),
        flush=True,
    )
    return 1 if fuzzer.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
