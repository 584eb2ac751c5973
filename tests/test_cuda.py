"""The CUDA backend: the row-wise functions on the GPU, against the CPU and the scipy references.

The kernels run on a GPU when one is usable, and under numba's CUDA simulator otherwise
(``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda``, which .ci/run does); without either, those tests
skip. The simulator runs each thread as a Python thread, so the shapes are tiny and the launch
sizes shrunk (``launches``): a few threads per row and per block, two blocks per launch, so that
every launch has several blocks and a grid-stride loop, and short chunks when streaming host
inputs. The PTX tests compile the GPU's own kernels (warp shuffles, which the simulator lacks)
for an H100 without a GPU.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import types
import warnings

import ml_dtypes
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, divergence_ref, random_probs

import fastkl
from fastkl.divergences import REGISTRY, lookup

SIM = bool(numba.config.ENABLE_CUDASIM)


def _no_kernels_reason() -> str | None:
    if SIM:
        return None
    from fastkl.info import cuda_status

    status = cuda_status()
    return None if status["available"] else status["reason"]


NO_KERNELS = _no_kernels_reason()
kernels = pytest.mark.skipif(
    NO_KERNELS is not None,
    reason=f"no usable GPU ({NO_KERNELS}); run `NUMBA_ENABLE_CUDASIM=1 pytest -m cuda`",
)
pytestmark = [
    pytest.mark.cuda,
    # the simulator computes with numpy scalars, which warn where a GPU returns inf or NaN
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    # a real GPU: tiny launches are reported as under-occupying it
    pytest.mark.filterwarnings("ignore:Grid size"),
]

TWO_SIDED = [spec.name for spec in REGISTRY if spec.reads_q]
FUNCTIONS = [spec.name for spec in REGISTRY]
#: public function -> its terms in tests/reference.py (the post step is the spec's)
REFERENCE = {spec.name: spec.terms.tag for spec in REGISTRY}
#: one public function per set of kernels
KERNELS = list({spec.terms: spec.name for spec in reversed(REGISTRY)}.values())[::-1]
# every form on each side (the options tests add normalized and clipped log forms)
PAIRS = [
    ("probs", "probs"),
    ("probs", "logits"),
    ("log_probs", "probs"),
    ("logits", "logits"),
    ("logits", "log_probs"),
]
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-7}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}
N, K, K_LONG = 9, 6, 19  # K rows take a group per row, K_LONG rows a block (WARP_MAX_K = 12)


def _shared_array(self, shape, dtype, alignment=None):
    """numba-cuda's ``FakeCUDAShared.array`` (0.30.4), made thread-safe.

    The simulator gives every thread of a block the shared array of one call site by looking
    it up in a dict and creating it when missing, without a lock: two threads of a block's
    first calls can both miss and each get an array of its own, and the block's reductions
    then add garbage (found by fuzzing: 3 calls in 2,065 gave a wrong row with three fuzzers
    running at once, and none in 18,000 with this lock). The caller is read from its frame
    rather than a formatted stack, which also spares each call a stat of every file on the
    stack."""
    if alignment is not None:
        raise RuntimeError("Array alignment is not supported in cudasim")
    from numba.core import types as nt
    from numba.np import numpy_support

    if isinstance(dtype, nt.Type):
        dtype = numpy_support.as_dtype(dtype)
    if shape == 0:
        count = self._dynshared_size // dtype.itemsize
        return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    with _SHARED_LOCK:
        array = self._allocations.get(caller)
        if array is None:
            array = self._allocations[caller] = np.empty(shape, dtype)
    return array


_SHARED_LOCK = threading.Lock()


@pytest.fixture(scope="module", autouse=True)
def _simulator_fixes():
    """The simulator runs each GPU thread as a Python thread, and its scheduler polls them
    while they wait at barriers: with Python's default switch interval (5 ms) a barrier
    costs milliseconds, and a 50 us interval runs the same kernels about 5x faster. Its
    shared arrays get a lock (``_shared_array``)."""
    if not SIM:
        yield
        return
    from numba.cuda.simulator import kernelapi

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernelapi.FakeCUDAShared, "array", _shared_array)
        yield
    sys.setswitchinterval(interval)


@pytest.fixture
def launches(monkeypatch):
    """Small launches (see the module docstring); the kernels' modules, for the tests."""
    from fastkl import _cuda, _cuda_driver

    if SIM:
        monkeypatch.setattr(_cuda, "THREADS", 8)
        monkeypatch.setattr(_cuda, "ROW_THREADS", 4)
        monkeypatch.setattr(_cuda, "LONG_THREADS", 8)
    else:
        monkeypatch.setattr(_cuda, "THREADS", 64)
        monkeypatch.setattr(_cuda, "LONG_THREADS", 64)
    monkeypatch.setattr(_cuda, "WARP_MAX_K", 12)
    monkeypatch.setattr(_cuda, "MAX_BLOCKS", 2)
    monkeypatch.setattr(_cuda, "UNROLL", 2)  # fewer masked slots per lane for tiny rows
    monkeypatch.setattr(_cuda, "SUM_ROWS", 4)
    monkeypatch.setattr(_cuda_driver, "STREAM_BYTES", 2 * K * 8)  # chunks of two rows
    from numba import cuda

    return types.SimpleNamespace(cuda=cuda, kernels=_cuda, driver=_cuda_driver)


def inputs(rng, form, shape, dtype=np.float64):
    """Rows in ``form``: probabilities, their logs, or their logs shifted per row (logits)."""
    p = random_probs(rng, shape)
    if form == "log_probs":
        p = np.log(p)
    elif form == "logits":
        p = np.log(p) + rng.normal(size=(*shape[:-1], 1)) * 3
    return p.astype(dtype)


def call(name, p, q, p_form="probs", q_form="probs", **kw):
    fn = getattr(fastkl, name)
    if not lookup(name).reads_q:
        return fn(p, p_form=p_form, **kw)
    return fn(p, q, p_form=p_form, q_form=q_form, **kw)


def reference(name, p, q, p_form="probs", q_form="probs", **kw):
    """The scipy reference in float64 (entropy: of p)."""
    p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
    one_sided = not lookup(name).reads_q
    forms = {"p_form": p_form, "q_form": p_form if one_sided else q_form}
    out = divergence_ref(REFERENCE[name], p64, p64 if one_sided else q64, **forms, **kw)
    if lookup(name).post != "none":
        out = np.maximum(out, 0.0)
    return np.sqrt(out) if lookup(name).post == "sqrt" else out


def host(x):
    """A device result on the host (numpy scalars pass through)."""
    return x.copy_to_host() if hasattr(x, "copy_to_host") else x


def matrix():
    for name in FUNCTIONS:
        pairs = (
            PAIRS
            if lookup(name).reads_q
            else [(f, None) for f in ("probs", "log_probs", "logits")]
        )
        for pair in pairs:
            yield name, pair


# --- every function, form and dtype, on device arrays -------------------------------------------


@kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("name", "forms"), list(matrix()), ids=lambda v: str(v))
def test_device_arrays_match_cpu_and_reference(launches, rng, name, forms, dtype):
    p_form, q_form = forms
    q_form = q_form or "probs"
    p = inputs(rng, p_form, (N, K), dtype)
    q = inputs(rng, q_form, (N, K), dtype)
    cuda = launches.cuda
    got = call(name, cuda.to_device(p), cuda.to_device(q), p_form, q_form)
    assert got.shape == (N,) and got.dtype == dtype
    assert not isinstance(got, np.ndarray)  # the rows stay on the device
    cpu64 = call(name, p.astype(np.float64), q.astype(np.float64), p_form, q_form)
    assert_close(host(got), cpu64, **TOL[dtype])
    assert_close(host(got), reference(name, p, q, p_form, q_form), **TOL[dtype])


@kernels
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("forms", [("probs", "probs"), ("logits", "logits")], ids=str)
def test_long_rows_take_a_block_each(launches, rng, name, forms):
    p = inputs(rng, forms[0], (5, K_LONG))
    q = inputs(rng, forms[1], (5, K_LONG))
    cuda = launches.cuda
    got = host(call(name, cuda.to_device(p), cuda.to_device(q), *forms))
    assert_close(got, reference(name, p, q, *forms), **TOL[np.float64])


# --- the fast kernel: every input dtype, vectors and single elements ---------------------------

BF16 = np.dtype(ml_dtypes.bfloat16)
#: input dtype -> (numpy dtype, tolerance of its compute precision against float64)
DTYPES = {
    "f16": (np.float16, TOL[np.float32]),
    "bf16": (BF16, TOL[np.float32]),
    "f32": (np.float32, TOL[np.float32]),
    "f64": (np.float64, TOL[np.float64]),
}
FAST_PAIRS = [("probs", "probs"), ("probs", "logits"), ("logits", "logits")]


@pytest.fixture
def widths(launches, monkeypatch):
    """The vector widths the driver chose, call by call."""
    seen = []
    real = launches.driver.vector_width

    def spy(rows, k):
        seen.append(real(rows, k))
        return seen[-1]

    monkeypatch.setattr(launches.driver, "vector_width", spy)
    return seen


#: row length -> (the path it takes with the test launches, whether its rows load as vectors)
ROW_CASES = {8: "group-vectors", 16: "block-vectors", 7: "group-elements", 13: "block-elements"}


@kernels
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("k", list(ROW_CASES), ids=list(ROW_CASES.values()))
def test_every_input_dtype_against_float64(launches, widths, rng, dtype, k):
    """Each function on device rows of every input dtype, a group of lanes per row (k <= 12
    here) or a block (longer), read 16 bytes at a time where rows allow (k = 8 and 16: rows of
    16 and 32 bytes of f16/bf16, 32 and 64 of f32, 64 and 128 of f64) and element by element
    where they do not (k = 7 and 13), against the float64 result of the same values."""
    np_dtype, tol = DTYPES[dtype]
    vectors = ROW_CASES[k].endswith("vectors")
    for name in FUNCTIONS:
        pairs = FAST_PAIRS if vectors else FAST_PAIRS[1:2]
        for p_form, q_form in pairs if lookup(name).reads_q else [("logits", "probs")]:
            p = inputs(rng, p_form, (N, k)).astype(np_dtype)
            q = inputs(rng, q_form, (N, k)).astype(np_dtype)
            got = call(
                name, launches.cuda.to_device(p), launches.cuda.to_device(q), p_form, q_form
            )
            assert got.dtype == (np.float64 if dtype == "f64" else np.float32)
            want = call(name, p.astype(np.float64), q.astype(np.float64), p_form, q_form)
            assert_close(host(got), want, **tol)
    assert set(widths) == {16 // np.dtype(np_dtype).itemsize if vectors else 1}


def special_rows(dtype):
    """Rows the fast kernel cannot score exactly (each flagged), and two it can, in dtype."""
    tiny = np.finfo(dtype).smallest_subnormal * 4
    p = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],  # ordinary
            [0.0, 0.5, 0.5, 0.0],  # zeros in q below: flagged for the fast terms' logs
            [0.5, 0.5, 0.0, 0.0],  # p > 0 where q == 0: +inf
            [np.nan, 0.5, 0.25, 0.25],  # NaN: the row is NaN
            [tiny, 0.5, 0.5 - tiny, 0.0],  # a subnormal
            [0.1, 0.2, 0.3, 0.4],  # ordinary
        ],
        dtype,
    )
    q = np.array(
        [
            [0.4, 0.3, 0.2, 0.1],
            [0.0, 0.5, 0.25, 0.25],
            [0.25, 0.0, 0.75, 0.0],
            [0.25, 0.25, 0.25, 0.25],
            [0.5, tiny, 0.5, 0.0],
            [0.25, 0.25, 0.25, 0.25],
        ],
        dtype,
    )
    return p, q, [0, 5]


@kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_the_fast_kernel_flags_what_it_cannot_score_exactly(launches, monkeypatch, dtype):
    """The fast kernel alone leaves exactly the special rows non-finite (and scores the
    others); the exact kernel then gives those rows the exact semantics."""
    cuda, kernels_ = launches.cuda, launches.kernels
    p, q, ordinary = special_rows(dtype)
    dp, dq = cuda.to_device(p), cuda.to_device(q)
    n, k = p.shape
    width = launches.driver.vector_width([(dp, 1), (dq, 1)], k)
    kernel, _, block = kernels_.fast_kernel(
        lookup("kl_div").terms, 0, 0, False, False, dtype == np.float32, k, width
    )
    out = cuda.device_array(n, dtype)
    flags = cuda.to_device(np.zeros(n + 1, np.int64))
    kernel[2, block](dp, 1, dq, 1, k, 0.0, 1.0, 0, out, flags)
    fast = out.copy_to_host()
    flagged = [i for i in range(n) if i not in ordinary]
    assert np.isfinite(fast[ordinary]).all() and not np.isfinite(fast[flagged]).any()
    listed = flags.copy_to_host()
    assert listed[0] == len(flagged) and sorted(listed[1 : 1 + len(flagged)]) == flagged
    want = fastkl.kl_div(p.astype(np.float64), q.astype(np.float64))
    assert_close(fast[ordinary], want[ordinary], **TOL[dtype])
    got = host(fastkl.kl_div(dp, dq))
    assert_close(got, want, **TOL[dtype])
    assert got[2] == np.inf and np.isnan(got[3]) and np.isfinite(got[[1, 4]]).all()
    # more flagged rows than the list holds: the exact kernel checks every row's value instead
    monkeypatch.setattr(launches.driver, "FLAGGED_ROWS", 2)
    monkeypatch.setattr(launches.driver, "_scratch", threading.local())
    assert_close(host(fastkl.kl_div(dp, dq)), want, **TOL[dtype])


@kernels
@pytest.mark.parametrize(
    ("name", "forms", "passes"),
    [
        ("kl_div", ("logits", "logits"), 1),
        ("cross_entropy", ("probs", "logits"), 1),
        ("sym_kl", ("logits", "log_probs"), 1),
        ("entropy", ("logits", "probs"), 1),
        ("js_div", ("logits", "logits"), 2),
    ],
    ids=str,
)
def test_log_scores_are_read_once(launches, rng, monkeypatch, name, forms, passes):
    """Every element of a logits row is loaded once (one pass: the online log-sum-exp and the
    moments together); Jensen-Shannon, whose log mixes both sides, takes two passes. The exact
    kernel loads nothing of rows the fast one scored."""
    kernels_ = launches.kernels
    loaded = []
    for width, load in list(kernels_.LOADS.items()):

        def counted(x, i, j, like, load=load, width=width):
            loaded.append(width)  # a list append is atomic under the GIL
            return load(x, i, j, like)

        monkeypatch.setitem(kernels_.LOADS, width, counted)
    monkeypatch.setattr(kernels_, "_KERNELS", {})
    n, k = 5, 10
    p = inputs(rng, forms[0], (n, k))
    q = inputs(rng, forms[1], (n, k))
    cuda = launches.cuda
    got = call(name, cuda.to_device(p), cuda.to_device(q), *forms)
    assert_close(host(got), call(name, p, q, *forms), **TOL[np.float64])
    sides = 1 if not lookup(name).reads_q else 2
    assert sum(loaded) == passes * sides * n * k


@kernels
@pytest.mark.parametrize("name", ["kl_div", "entropy", "cross_entropy"])
def test_normalized_counts_in_float32(launches, rng, name):
    """Counts normalized on the device (sums of 1e6): a normalized probability side is read
    in two passes, its mass first; one pass would hold log p unshifted and subtract log of
    the mass at the end, cancelling about 1e-6 of an entropy of 1e-28 (found by fuzzing). A
    zero in a normalized q facing p > 0 is +inf (it was finite, unguarded, in the two-pass
    KL)."""
    p = np.array([[1e6, 1.0, 0.0, 0.0], [3e5, 2e5, 5e5, 0.0], [0.1, 2.0, 3.0, 4.0]], np.float32)
    z = np.array([[0.5, -1.0, 2.0, 0.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    cuda = launches.cuda
    for a, b, forms in ((p, p[::-1].copy(), ("probs", "probs")), (z, p, ("logits", "probs"))):
        got = host(call(name, cuda.to_device(a), cuda.to_device(b), *forms, normalize=True))
        want = call(name, a.astype(np.float64), b.astype(np.float64), *forms, normalize=True)
        assert_close(got, want, **TOL[np.float32])
    assert host(fastkl.kl_div(cuda.to_device(z), cuda.to_device(p), q_form="probs",
                              p_form="logits", normalize=True))[0] == np.inf  # fmt: skip


@kernels
@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["f32", "bf16"])
def test_masked_and_huge_logits_in_float32(launches, dtype):
    """-inf logits (a masked vocabulary, on both sides or one), ties at a huge logit, and a
    NaN, in the float32 fast path: the exact semantics of the CPU's float64 result."""
    z = np.array(
        [
            [-np.inf, 1.0, 2.0, -np.inf, 0.5, 3.0],  # the same entries masked on both sides
            [0.3, -2.0, 1e3, 999.0, 0.0, -1.0],
            [-1.0, 2e17, 0.5, 2e17, 3.0, 0.0],  # two tied huge logits
            [0.5, np.nan, 0.1, 0.2, 0.3, 0.4],
        ]
    ).astype(dtype)
    y = np.array(
        [
            [-np.inf, 0.0, 1.0, -np.inf, 0.2, 2.5],
            [0.1, -1.0, 999.5, 999.0, 0.5, -0.5],
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ]
    ).astype(dtype)
    cuda = launches.cuda
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    for name in FUNCTIONS:
        got = host(call(name, cuda.to_device(z), cuda.to_device(y), "logits", "logits"))
        want = call(name, z64, y64, "logits", "logits")
        assert_close(got, want, **TOL[np.float32])
        assert np.isnan(got[3])


@kernels
def test_float16_and_bfloat16_from_the_host(launches, rng):
    """A host bfloat16 (ml_dtypes) or float16 reference row beside device rows is sent over
    in its own dtype; numpy bfloat16 inputs with device='cuda' are streamed."""
    cuda = launches.cuda
    p = random_probs(rng, (N, 8)).astype(BF16)
    row = random_probs(rng, (8,)).astype(BF16)
    got = host(fastkl.kl_div(cuda.to_device(p), row))
    want = fastkl.kl_div(p.astype(np.float64), row.astype(np.float64))
    assert_close(got, want, **TOL[np.float32])
    streamed = fastkl.js_div(p, row, device="cuda")
    assert streamed.dtype == np.float32
    assert_close(streamed, fastkl.js_div(p.astype(np.float64), row.astype(np.float64)),
                 **TOL[np.float32])  # fmt: skip


def test_results_come_back_in_the_callers_library(monkeypatch):
    """torch inputs give a torch tensor, CuPy inputs a CuPy array (each wrapping the device
    rows, no copy); anything else the numba device array. (JAX's goes through
    ``_dlpack.export``, tested in test_dlpack.py.)"""
    from fastkl import _cuda_driver

    calls = []

    def library(name, **functions):
        module = types.ModuleType(name)
        for attr, fn in functions.items():
            setattr(module, attr, fn)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    library("torch", as_tensor=lambda rows, device: calls.append(("torch", rows, device)) or 1)
    library("cupy", asarray=lambda rows: calls.append(("cupy", rows)) or 2)

    def device_array(module):
        cls = type("Array", (), {"__cuda_array_interface__": {}, "device": "cuda:0"})
        cls.__module__ = module
        return cls()

    rows = object()
    assert _cuda_driver._caller_result(rows, [np.ones(3), device_array("torch")]) == 1
    assert calls[-1] == ("torch", rows, "cuda:0")
    assert _cuda_driver._caller_result(rows, [device_array("cupy._core")]) == 2
    assert calls[-1] == ("cupy", rows)
    assert _cuda_driver._caller_result(rows, [device_array("numba.cuda")]) is rows
    assert len(calls) == 2


# --- exact semantics -----------------------------------------------------------------------------

SPECIAL_P = np.array(
    [
        [0.0, 0.5, 0.5, 0.0],  # zeros in p: they weigh nothing
        [0.5, 0.5, 0.0, 0.0],  # p > 0 where q == 0: +inf for KL
        [0.0, 0.0, 1.0, 0.0],  # p == q, one-hot: 0
        [np.nan, 0.5, 0.25, 0.25],  # NaN: the row is NaN
        [0.25, 0.25, 0.25, 0.25],
        [1e-320, 0.5, 0.5 - 1e-320, 0.0],  # subnormals
    ]
)
SPECIAL_Q = np.array(
    [
        [0.0, 0.5, 0.25, 0.25],
        [0.25, 0.0, 0.75, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.25, 0.25, 0.25, 0.25],
        [0.0, 0.0, 0.5, 0.5],
        [0.5, 1e-310, 0.5, 0.0],
    ]
)


@kernels
@pytest.mark.parametrize("name", FUNCTIONS)
def test_zeros_infinities_and_nan_as_on_the_cpu(launches, name):
    cuda = launches.cuda
    got = host(call(name, cuda.to_device(SPECIAL_P), cuda.to_device(SPECIAL_Q)))
    assert_close(got, call(name, SPECIAL_P, SPECIAL_Q), **TOL[np.float64])
    # logits with -inf (a zero probability) and a NaN
    lp = np.log(SPECIAL_P[[0, 1, 2, 3, 4]])
    lq = np.log(SPECIAL_Q[[0, 1, 2, 3, 4]])
    got = host(call(name, cuda.to_device(lp), cuda.to_device(lq), "logits", "logits"))
    assert_close(got, call(name, lp, lq, "logits", "logits"), **TOL[np.float64])


@kernels
def test_kl_exact_values_on_the_device(launches):
    """The semantics themselves, not only agreement with the CPU."""
    got = host(fastkl.kl_div(launches.cuda.to_device(SPECIAL_P), SPECIAL_Q))
    assert got[1] == np.inf and got[2] == 0.0 and np.isnan(got[3]) and np.isfinite(got[0])


# --- options and layouts -------------------------------------------------------------------------


@kernels
@pytest.mark.parametrize("name", ["kl_div", "js_div", "entropy"])
@pytest.mark.parametrize(
    "options",
    [
        {"base": 2.0},
        {"eps": 1e-3},
        {"normalize": True},
        {"eps": 1e-2, "p_form": "logits", "q_form": "log_probs"},
        {"normalize": True, "p_form": "log_probs", "q_form": "logits"},
    ],
    ids=str,
)
def test_options(launches, rng, name, options):
    options = dict(options)
    p_form, q_form = options.pop("p_form", "probs"), options.pop("q_form", "probs")
    p = inputs(rng, p_form, (N, K))
    q = inputs(rng, q_form, (N, K))
    if options.get("normalize") and p_form == "probs":
        p, q = p * 3.0, q * 0.5  # unnormalized measures
    cuda = launches.cuda
    got = host(call(name, cuda.to_device(p), cuda.to_device(q), p_form, q_form, **options))
    assert_close(got, call(name, p, q, p_form, q_form, **options), **TOL[np.float64])


@kernels
@pytest.mark.parametrize("name", ["kl_div", "js_div", "entropy"])
def test_normalize_divides_by_a_subnormal_mass(launches, name):
    """Rows whose total is subnormal: 1 / total overflows, so the device must divide."""
    p = np.array([[3e-320, 1e-320, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    q = np.array([[1e-320, 1e-320, 1e-320, 1e-320], [4e-320, 1e-320, 2e-320, 1e-320]])
    cuda = launches.cuda
    got = host(call(name, cuda.to_device(p), cuda.to_device(q), normalize=True))
    want = call(name, p, q, normalize=True)
    assert np.all(np.isfinite(want))
    assert_close(got, want, **TOL[np.float64])


@kernels
@pytest.mark.parametrize("name", FUNCTIONS)
def test_huge_logits_keep_the_log_of_their_mass(launches, name):
    """Two logits tie at 2e17: each is -log 2 (``m + log s`` as one number rounds it to 0)."""
    z = np.array([[-1.0, 2e17, 0.5, 2e17, 3.0], [0.3, -2.0, 1e3, 999.0, 0.0]])
    x = np.array([[0.1, 0.2, 0.3, 0.15, 0.25]] * 2)
    cuda = launches.cuda
    got = host(call(name, cuda.to_device(z), cuda.to_device(x), "logits", "probs"))
    want = call(name, z, x, "logits", "probs")
    assert np.all(np.isfinite(want))
    assert_close(got, want, **TOL[np.float64])


@kernels
def test_layouts_axis_and_broadcasting(launches, rng):
    cuda = launches.cuda
    p = random_probs(rng, (2, 3, K))
    q = random_probs(rng, (2, 3, K))
    want = fastkl.kl_div(p, q)
    # a 3-d batch
    assert_close(host(fastkl.kl_div(cuda.to_device(p), cuda.to_device(q))), want, rtol=1e-12)
    # the distribution axis first (a transposed copy), and Fortran order
    pt, qt = (
        np.ascontiguousarray(np.moveaxis(p, -1, 0)),
        np.ascontiguousarray(np.moveaxis(q, -1, 0)),
    )
    got = fastkl.kl_div(cuda.to_device(pt), cuda.to_device(qt), axis=0)
    assert_close(host(got), want, rtol=1e-12)
    pf = cuda.to_device(np.asfortranarray(p.reshape(6, K)))
    assert_close(host(fastkl.kl_div(pf, q.reshape(6, K))), want.reshape(6), rtol=1e-12)
    # one reference row, on the device or on the host, never expanded
    row = q[0, 0]
    want_row = fastkl.kl_div(p, row)
    assert_close(host(fastkl.kl_div(cuda.to_device(p), cuda.to_device(row))), want_row, rtol=1e-12)
    assert_close(host(fastkl.kl_div(cuda.to_device(p), row)), want_row, rtol=1e-12)
    assert_close(host(fastkl.kl_div(row, cuda.to_device(p))), fastkl.kl_div(row, p), rtol=1e-12)


@kernels
def test_float16_and_mixed_dtypes(launches, rng):
    cuda = launches.cuda
    p = random_probs(rng, (N, K)).astype(np.float16)
    q = random_probs(rng, (N, K))
    got = fastkl.js_div(cuda.to_device(p), cuda.to_device(q.astype(np.float32)))
    assert got.dtype == np.float32
    want = fastkl.js_div(p.astype(np.float64), q.astype(np.float32).astype(np.float64))
    assert_close(host(got), want, rtol=1e-5, atol=1e-7)
    assert fastkl.kl_div(cuda.to_device(p), cuda.to_device(q)).dtype == np.float64


@kernels
def test_one_row_gives_a_scalar_and_no_rows_an_empty_array(launches, rng):
    cuda = launches.cuda
    p, q = random_probs(rng, (K,)), random_probs(rng, (K,))
    got = fastkl.kl_div(cuda.to_device(p), cuda.to_device(q))
    assert isinstance(got, np.float64)
    assert_close(got, fastkl.kl_div(p, q), rtol=1e-12)
    empty = fastkl.kl_div(cuda.to_device(np.ones((0, K))), cuda.to_device(np.ones((0, K))))
    assert empty.shape == (0,)


# --- reductions and out= -------------------------------------------------------------------------


@kernels
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions(launches, rng, reduction):
    cuda = launches.cuda
    p, q = random_probs(rng, (N, K)), random_probs(rng, (N, K))
    got = fastkl.sym_kl(cuda.to_device(p), cuda.to_device(q), reduction=reduction)
    assert isinstance(got, np.float64)
    assert_close(got, fastkl.sym_kl(p, q, reduction=reduction), rtol=1e-12)
    again = fastkl.sym_kl(cuda.to_device(p), cuda.to_device(q), reduction=reduction)
    assert got == again  # a fixed order: the same total on every run
    f32 = fastkl.kl_div(
        cuda.to_device(p.astype(np.float32)), q.astype(np.float32), reduction=reduction
    )
    assert isinstance(f32, np.float32)
    none = fastkl.kl_div(cuda.to_device(np.ones((0, K))), np.ones(K), reduction=reduction)
    assert (none == 0.0) if reduction == "sum" else np.isnan(none)


@kernels
def test_out_on_the_device_and_on_the_host(launches, rng):
    cuda = launches.cuda
    p, q = random_probs(rng, (N, K)), random_probs(rng, (N, K))
    want = fastkl.kl_div(p, q)
    dp, dq = cuda.to_device(p), cuda.to_device(q)
    out = cuda.device_array(N, np.float64)
    assert fastkl.kl_div(dp, dq, out=out) is out
    assert_close(out.copy_to_host(), want, rtol=1e-12)
    # float64 out for float32 inputs: the unrounded rows
    out = cuda.device_array(N, np.float64)
    fastkl.kl_div(cuda.to_device(p.astype(np.float32)), dq, out=out)
    assert_close(out.copy_to_host(), fastkl.kl_div(p.astype(np.float32), q), rtol=1e-12)
    # a strided device out: every other element
    wide = cuda.to_device(np.zeros(2 * N))
    fastkl.kl_div(dp, dq, out=wide[::2])
    assert_close(wide.copy_to_host()[::2], want, rtol=1e-12)
    assert not wide.copy_to_host()[1::2].any()
    # numpy out with device inputs: the rows come back into it
    host_out = np.empty(N)
    assert fastkl.kl_div(dp, dq, out=host_out) is host_out
    assert_close(host_out, want, rtol=1e-12)
    # out alone on the device: the host inputs are sent over
    out = cuda.device_array(N, np.float64)
    fastkl.kl_div(p, q, out=out)
    assert_close(out.copy_to_host(), want, rtol=1e-12)


@kernels
def test_bad_out_on_the_device(launches, rng):
    cuda = launches.cuda
    p, q = random_probs(rng, (N, K)), random_probs(rng, (N, K))
    dp, dq = cuda.to_device(p), cuda.to_device(q)
    with pytest.raises(ValueError, match=r"out: expected shape \(9,\)"):
        fastkl.kl_div(dp, dq, out=cuda.device_array(N + 1))
    with pytest.raises(ValueError, match="out: expected dtype float64"):
        fastkl.kl_div(dp, dq, out=cuda.device_array(N, np.float32))
    with pytest.raises(ValueError, match="out: overlaps an input"):
        fastkl.kl_div(dp, dq, out=dp[:, 0])
    with pytest.raises(ValueError, match="out: only supported with reduction='none'"):
        fastkl.kl_div(dp, dq, out=cuda.device_array(N), reduction="sum")


# --- validation and errors -----------------------------------------------------------------------


@kernels
def test_validate_names_the_row_on_the_device(launches, rng, monkeypatch):
    cuda = launches.cuda
    # rows are checked on the host three at a time
    monkeypatch.setattr(fastkl._prepare._config, "BLOCK_BYTES", 3 * K * 8)
    p, q = random_probs(rng, (2, 5, K)), random_probs(rng, (2, 5, K))
    assert_close(
        host(fastkl.kl_div(cuda.to_device(p), cuda.to_device(q), validate=True)),
        fastkl.kl_div(p, q),
        rtol=1e-12,
    )
    p[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"p: row \(1, 2\) contains NaN"):
        fastkl.kl_div(cuda.to_device(p), cuda.to_device(q), validate=True)
    q[0, 4] *= 2
    with pytest.raises(ValueError, match=r"q: row \(0, 4\) sums to (2|1\.99)"):
        fastkl.js_div(
            cuda.to_device(random_probs(rng, (2, 5, K))), cuda.to_device(q), validate=True
        )


@kernels
def test_device_errors(launches, rng):
    cuda = launches.cuda
    p = cuda.to_device(random_probs(rng, (2, 3, K)))
    with pytest.raises(ValueError, match="device: p is a CUDA array but device='cpu'"):
        fastkl.kl_div(p, np.ones(K) / K, device="cpu")
    q = cuda.to_device(random_probs(rng, (2, 1, K)))
    with pytest.raises(ValueError, match="q: on the GPU the dimensions other than"):
        fastkl.kl_div(p, q)
    with pytest.raises(TypeError, match="p: expected floating-point values"):
        fastkl.kl_div(cuda.to_device(np.ones((2, K), np.int64)), np.ones(K))
    with pytest.raises(ValueError, match="p and q must have the same length"):
        fastkl.kl_div(p, np.ones(K + 1))


# --- host inputs, streamed -----------------------------------------------------------------------


@kernels
@pytest.mark.parametrize("name", ["kl_div", "js_distance", "entropy"])
def test_host_inputs_are_streamed_in_chunks(launches, rng, name):
    p, q = random_probs(rng, (N, K)), random_probs(rng, (N, K))
    got = call(name, p, q, device="cuda")
    assert isinstance(got, np.ndarray)  # host inputs: host results
    assert_close(got, call(name, p, q), **TOL[np.float64])
    # one reference row (sent once), float32, Fortran order (staged a block at a time)
    assert_close(call(name, p, q[0], device="cuda"), call(name, p, q[0]), rtol=1e-12)
    p32 = np.asfortranarray(p.astype(np.float32))
    got = call(name, p32, q.astype(np.float32), device="cuda")
    assert got.dtype == np.float32
    assert_close(got, call(name, p32.astype(np.float64), q.astype(np.float32)), **TOL[np.float32])
    # reductions and out=
    total = call(name, p, q, device="cuda", reduction="mean")
    assert_close(total, call(name, p, q, reduction="mean"), rtol=1e-12)
    out = np.empty(N)
    assert call(name, p, q, device="cuda", out=out) is out
    assert_close(out, call(name, p, q), rtol=1e-12)


@kernels
def test_streaming_uses_two_streams_and_small_chunks(launches, rng, monkeypatch):
    """Chunks alternate between two streams, each with its own pinned staging."""
    seen = []
    real = launches.driver._launch

    def spy(call, p, ps, q, qs, out, stream=0):
        seen.append((id(stream), out.shape[0]))
        real(call, p, ps, q, qs, out, stream)

    monkeypatch.setattr(launches.driver, "_launch", spy)
    p, q = random_probs(rng, (N, K)), random_probs(rng, (N, K))
    assert_close(fastkl.kl_div(p, q, device="cuda"), fastkl.kl_div(p, q), rtol=1e-12)
    assert [rows for _, rows in seen] == [2, 2, 2, 2, 1]
    assert len({s for s, _ in seen}) == 2 and seen[0][0] != seen[1][0]


class _OutOfMemory(RuntimeError):
    """What numba-cuda raises when cuMemAlloc fails (CudaAPIError: the CUresult as code)."""

    code = 2  # CUDA_ERROR_OUT_OF_MEMORY


def _small_gpu(monkeypatch, cuda, rows_that_fit):
    """Device allocations of more than ``rows_that_fit`` rows fail as on a full GPU."""
    real = cuda.device_array

    def device_array(shape, dtype=np.float64, *args, **kwargs):
        if np.atleast_1d(shape)[0] > rows_that_fit:
            raise _OutOfMemory("[CUDA_ERROR_OUT_OF_MEMORY] out of memory")
        return real(shape, dtype, *args, **kwargs)

    monkeypatch.setattr(cuda, "device_array", device_array)


@kernels
def test_streaming_out_of_memory_falls_back_to_smaller_chunks(launches, rng, monkeypatch):
    """A GPU without room for a chunk's staging gets half the rows, until they fit."""
    monkeypatch.setattr(launches.driver, "STREAM_BYTES", 16 * K * 8)  # chunks of 9 rows at first
    monkeypatch.setattr(launches.driver, "_pool", [])
    _small_gpu(monkeypatch, launches.cuda, rows_that_fit=3)
    p, q = random_probs(rng, (N, K)), random_probs(rng, (N, K))
    assert_close(fastkl.kl_div(p, q, device="cuda"), fastkl.kl_div(p, q), rtol=1e-12)
    _small_gpu(monkeypatch, launches.cuda, rows_that_fit=0)  # not even one row
    monkeypatch.setattr(launches.driver, "_pool", [])
    with pytest.raises(MemoryError, match=r"GPU is out of memory .* one row .*device='cpu'"):
        fastkl.kl_div(p, q, device="cuda")


@kernels
def test_device_out_of_memory_is_a_clear_error(launches, rng, monkeypatch):
    d = launches.cuda.to_device(random_probs(rng, (N, K)))
    _small_gpu(monkeypatch, launches.cuda, rows_that_fit=N - 1)
    with pytest.raises(MemoryError, match=r"out of memory for the result \(0\.0 MiB\)"):
        fastkl.kl_div(d, d)
    with pytest.raises(MemoryError, match="the row values of a reduction"):
        fastkl.kl_div(d, d, reduction="sum")
    # any other error from the driver is not taken for one
    monkeypatch.setattr(
        launches.cuda, "device_array", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
    )
    with pytest.raises(RuntimeError, match=r"^x$"):
        fastkl.kl_div(d, d)


# --- properties ----------------------------------------------------------------------------------


OPTIONS = [{}, {"normalize": True}, {"eps": 1e-3}, {"base": 2.0}]
#: Values salted into the inputs: zeros of both signs, infinities, NaN, float32 and float64
#: subnormals, a negative, and numbers far from 1 (counts to normalize, huge logits).
SALT = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 1e-310, -0.3, 1e30, 3.0]


@kernels
@settings(max_examples=int(os.environ.get("FASTKL_FUZZ_EXAMPLES", 40)), deadline=None)
@given(
    n=st.integers(1, 6),
    k=st.integers(1, 40),
    name=st.sampled_from(FUNCTIONS),
    forms=st.sampled_from(PAIRS),
    dtype=st.sampled_from(list(DTYPES)),
    options=st.sampled_from(OPTIONS),
    warp_max_k=st.sampled_from([12, 2048]),
    salt=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_gpu_equals_cpu_property(n, k, name, forms, dtype, options, warp_max_k, salt, seed):
    """Any shape, function, forms, input dtype and option, a group or a block per row, and
    inputs salted with special values: the float64 result of the same values within the
    compute precision's tolerance, the same infinities and NaN (a float32 result that
    overflows is inf on the CPU too). ``FASTKL_FUZZ_EXAMPLES`` sets the examples."""
    from numba import cuda

    from fastkl import _cuda

    if "base" in options and not lookup(name).uses_base:
        options = {key: value for key, value in options.items() if key != "base"}
    names = ("THREADS", "ROW_THREADS", "LONG_THREADS", "MAX_BLOCKS", "WARP_MAX_K", "UNROLL")
    saved = {attr: getattr(_cuda, attr) for attr in names}
    small = dict(zip(names, (8, 4, 8, 2, warp_max_k, 2), strict=True))
    try:
        for attr, value in (small if SIM else {"WARP_MAX_K": warp_max_k}).items():
            setattr(_cuda, attr, value)
        np_dtype, tol = DTYPES[dtype]
        rng = np.random.default_rng(seed)
        sides = []
        for form in forms:
            x = inputs(rng, form, (n, k))
            salted = rng.random(x.shape) < salt
            x[salted] = rng.choice(SALT, size=int(salted.sum()))
            sides.append(x.astype(np_dtype))
        p, q = sides
        got = host(call(name, cuda.to_device(p), cuda.to_device(q), *forms, **options))
        want = call(name, p.astype(np.float64), q.astype(np.float64), *forms, **options)
        if dtype != "f64":  # a float32 result: what overflows float32 is inf, as on the CPU
            cpu = call(name, p, q, *forms, **options).astype(np.float64)
            want = np.where(np.isinf(cpu) & np.isfinite(want), cpu, want)
        if lookup(name).post == "sqrt":  # the sum: a square root amplifies float32 rounding
            got, want = np.square(got.astype(np.float64)), np.square(want)
        assert_close(got, want, **(tol if dtype != "f64" else {"rtol": 1e-10, "atol": 1e-13}))
    finally:
        for attr, value in saved.items():
            setattr(_cuda, attr, value)


# --- without a GPU -------------------------------------------------------------------------------


def test_device_argument_is_checked():
    with pytest.raises(ValueError, match="device: expected None, 'cpu' or 'cuda', got 'gpu'"):
        fastkl.kl_div([0.5, 0.5], [0.5, 0.5], device="gpu")
    assert fastkl.entropy([0.5, 0.5], device="cpu") == pytest.approx(np.log(2))


@pytest.mark.skipif(NO_KERNELS is None, reason="a GPU (or the simulator) is usable here")
def test_device_cuda_without_a_gpu_says_why():
    with pytest.raises(RuntimeError, match=r"device='cuda': no usable CUDA GPU \(.+\)"):
        fastkl.kl_div([0.5, 0.5], [0.5, 0.5], device="cuda")


def test_importing_fastkl_never_loads_cuda():
    code = (
        "import sys, fastkl, numpy as np\n"
        "fastkl.kl_div(np.ones((3, 4)) / 4, np.ones(4) / 4)\n"
        "fastkl.js_div(np.ones((3, 4)) / 4, np.ones(4) / 4, device='cpu')\n"
        "assert 'numba.cuda' not in sys.modules, 'numba.cuda was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the GPU's kernels, compiled for an H100 ----------------------------------------------------

PTX_CASES = [(name, lp, lq, "warp") for name in KERNELS for lp in (0, 1) for lq in (0, 1)]
PTX_CASES = [*PTX_CASES, ("kl_div", 1, 1, "block"), ("js_div", 0, 0, "block")]


@pytest.fixture(scope="module")
def ptx(request):
    """compile(kernel, dtype) -> PTX for sm_90, without a GPU (NVVM from the toolkit wheels)."""
    if SIM:
        pytest.skip("the simulator compiles nothing")
    from numba import cuda
    from numba.core import types as nt

    import fastkl._cuda as _cuda

    dispatcher = importlib.import_module("numba.cuda.dispatcher")
    mp = pytest.MonkeyPatch()
    # device functions ask the current GPU for its compute capability: answer for it
    mp.setattr(
        dispatcher, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(9, 0))
    )
    request.addfinalizer(mp.undo)

    def compile_(kernel, dtype):
        arr = nt.Array(dtype, 2, "A", readonly=True)
        sig = (arr, nt.int64, arr, nt.int64, nt.int64, nt.int64, nt.int64, nt.boolean,
               nt.float64, nt.float64, nt.int64, nt.Array(dtype, 1, "C"),
               nt.Array(nt.int64, 1, "C"))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))[0]

    def compile_fast(name, p_form, q_form, dtype, k, width, normalize=False, clip=False):
        single = dtype != nt.float64
        kernel, _, _ = _cuda.fast_kernel(
            lookup(name).terms, p_form, q_form, normalize, clip, single, k, width
        )
        arr = nt.Array(dtype, 2, "A", readonly=True)
        out = nt.Array(nt.float32 if single else nt.float64, 1, "A")
        flags = nt.Array(nt.int64, 1, "C")
        sig = (arr, nt.int64, arr, nt.int64, nt.int64, nt.float64, nt.float64, nt.int64, out,
               flags)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))[0]

    def compile_device(fn, precision):
        sig = (precision,) * fn.py_func.__code__.co_argcount
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = cuda.compile_ptx(fn.py_func, sig, cc=(9, 0), device=True)[0]
        return code[code.index("{") :]  # the body: its parameters are not instructions

    try:  # a small kernel first: is NVVM there at all?
        rows = nt.Array(nt.float32, 2, "A")
        sig = (rows, nt.int64, nt.int64, rows)
        cuda.compile_ptx(_cuda.gather_kernel().py_func, sig, cc=(9, 0))
    except Exception as exc:
        if os.environ.get("CI"):  # the test extra installs the compilers: CI must not skip
            raise
        pytest.skip(f"no CUDA compiler ({exc}); install the `test` or `cuda` extra")
    return types.SimpleNamespace(
        compile=compile_, compile_fast=compile_fast, compile_device=compile_device,
        cuda=_cuda, types=nt,
    )  # fmt: skip


@pytest.mark.parametrize(("name", "log_p", "log_q", "shape"), PTX_CASES, ids=str)
def test_gpu_kernels_compile_for_an_h100(ptx, name, log_p, log_q, shape):
    k = 100 if shape == "warp" else 100_000
    kernel, group, block = ptx.cuda.rows_kernel(lookup(name).terms, bool(log_p), bool(log_q), k)
    assert (group, block) == ((32, 256) if shape == "warp" else (512, 512))
    code = ptx.compile(kernel, ptx.types.float32)
    assert "shfl.sync.bfly" in code  # warp shuffles: the reduction the simulator cannot run
    assert ("bar.sync" in code) == (shape == "block")  # barriers only across a block's warps
    assert ".target sm_90" in code


@pytest.mark.parametrize(
    ("name", "p_form", "q_form", "dtype", "options"),
    [("kl", 0, 0, "float32", {"normalize": True}), ("js", 0, 0, "float32", {"clip": True}),
     ("kl", 0, 0, "float32", {"clip": True}), ("sym_kl", 2, 2, "float64", {}),
     ("cross_entropy", 0, 2, "float32", {"normalize": True})],
    ids=str,
)  # fmt: skip
def test_every_mode_of_the_fast_kernel_compiles(ptx, name, p_form, q_form, dtype, options):
    """Two passes for normalized probabilities, clipping, float64 logits: compiled for an H100
    (the simulator types nothing)."""
    width = 4 if dtype == "float32" else 2
    code = ptx.compile_fast(name, p_form, q_form, getattr(ptx.types, dtype), 64, width, **options)
    assert ".target sm_90" in code and "ld.global.nc.v" in code


def test_the_reduction_and_copy_kernels_compile(ptx):
    """The device reduction's block sums and the benchmark's copy baseline (16-byte stores)."""
    from numba import cuda

    from fastkl import _cuda_bench

    nt = ptx.types
    values = nt.Array(nt.float64, 1, "C")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sums = cuda.compile_ptx(ptx.cuda.block_sums_kernel().py_func, (values, values), cc=(9, 0))
        words = (nt.Array(nt.float32, 2, "C"), nt.Array(nt.float32, 1, "C"))
        copy = cuda.compile_ptx(_cuda_bench._copy_kernel().py_func, words, cc=(9, 0))
    assert "bar.sync" in sums[0]
    assert "st.global.v4.f32" in copy[0] and "ld.global.nc.v4.f32" in copy[0]


@pytest.mark.parametrize("shape", ["warp", "block"])
def test_the_exact_kernel_that_redoes_flagged_rows_compiles(ptx, shape):
    """The exact kernel as it runs after a fast one: the flagged rows' list, and a block-wide
    vote (``bar.red.or``) where it checks every row's value instead."""
    k = 100 if shape == "warp" else 100_000
    kernel, _, _ = ptx.cuda.rows_kernel(lookup("kl_div").terms, True, True, k, redo=True)
    code = ptx.compile(kernel, ptx.types.float32)
    assert "bar.red.or" in code and ".target sm_90" in code


def _ptx_ops(code):
    """The instructions of a PTX text (guards and labels dropped)."""
    ops = []
    for line in code.splitlines():
        line = line.strip()
        if not line or line.startswith(("//", ".", "{", "}", "$")):
            continue
        if line.startswith("@"):
            line = line.split(None, 1)[1]
        ops.append(line.split()[0])
    return ops


FAST_PTX = [
    (name, p, q) for name in KERNELS for p, q in ((0, 0), (2, 2))
] + [("kl_div", 0, 2), ("cross_entropy", 0, 2), ("kl_div", 2, 0)]  # fmt: skip


@pytest.mark.parametrize(("name", "p_form", "q_form"), FAST_PTX, ids=str)
def test_float32_kernels_load_16_bytes_and_compute_in_float32(ptx, name, p_form, q_form):
    """The fast kernel of float32 rows of 128 compiled for an H100: 16-byte vector loads
    (``ld.global.nc.v4``), nothing in local memory, and a per-element function (the moments
    or the terms, and the statistics of a second pass) without one float64 instruction: the
    float64 left is per batch of 16 elements and per row."""
    code = ptx.compile_fast(name, p_form, q_form, ptx.types.float32, 128, 4)
    ops = _ptx_ops(code)
    assert any(op.startswith("ld.global.nc.v4") for op in ops)
    assert not any(".local" in op for op in ops)
    parts = ptx.cuda.fast_parts(lookup(name).terms, p_form, q_form, False, False, True, 128, 4)
    for part in ("ELEMENT", "STATS_ELEMENT"):
        if part in parts:
            element = ptx.compile_device(parts[part], ptx.types.float32)
            assert element and not [op for op in _ptx_ops(element) if ".f64" in op]


def test_the_float32_check_can_fail(ptx):
    """The float64 kernels' per-element functions are float64: the check above sees them."""
    parts = ptx.cuda.fast_parts(lookup("kl_div").terms, 2, 2, False, False, False, 64, 2)
    element = ptx.compile_device(parts["ELEMENT"], ptx.types.float64)
    assert [op for op in _ptx_ops(element) if ".f64" in op]


@pytest.mark.parametrize(
    ("dtype", "k", "width", "load"),
    [("float16", 128, 8, "ld.global.nc.v4.u32"), ("uint16", 128, 8, "ld.global.nc.v4.u32"),
     ("float64", 64, 2, "ld.global.nc.v2.f64"), ("float32", 131_072, 4, "ld.global.nc.v4")],
    ids=["f16", "bf16", "f64", "f32-long-rows"],
)  # fmt: skip
def test_every_dtype_loads_16_bytes(ptx, dtype, k, width, load):
    code = ptx.compile_fast("kl", 2, 2, getattr(ptx.types, dtype), k, width)
    ops = _ptx_ops(code)
    assert any(op.startswith(load) for op in ops)
    assert not any(".local" in op for op in ops)
    if k > 2048:  # a block per row: warps merge through shared memory
        assert "bar.sync" in ops and any(op.startswith("shfl.sync.bfly") for op in ops)


# --- fastkl score --device cuda --------------------------------------------------------------


@kernels
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_score_files_on_the_gpu(launches, rng, tmp_path, reduction):
    from fastkl.score import score_files

    p, q = random_probs(rng, (N, K)), random_probs(rng, (1, K))
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    out = str(tmp_path / "js.npy")
    args = (str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), out)
    summary = score_files(*args, divergence="js", reduction=reduction, chunk_rows=4, device="cuda")
    want = fastkl.js_div(p, q[0], reduction=reduction)
    assert_close(np.load(out), want, rtol=1e-12)
    assert summary.rows == N


@pytest.mark.skipif(NO_KERNELS is None, reason="a GPU (or the simulator) is usable here")
def test_score_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    from fastkl import cli

    np.save(tmp_path / "p.npy", np.full((3, 4), 0.25))
    out = tmp_path / "out.npy"
    p = str(tmp_path / "p.npy")
    code = cli.main(["score", p, p, "-o", str(out), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert err.count("\n") == 1 and "device='cuda': no usable CUDA GPU" in err


@kernels
def test_bench_device_cuda_runs_every_case(launches, capsys, monkeypatch):
    """The GPU benchmark's code path, on a sliver of each case (timings are for a GPU)."""
    from fastkl import _cuda_bench, cli

    monkeypatch.setattr(_cuda_bench, "COPY_THREADS", 8)
    assert cli.main(["bench", "--device", "cuda", "--scale", "1e-6", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for case in ("probs f32 10 x 128", "logits f32 1 x 131,072", "probs f64 10 x 64",
                 "family probs f32", "host probs f32 4 x 128", "train f32 1 x 64",
                 "train f32 1 x 32,768"):  # fmt: skip
        assert case in out
    assert "copy" in out and "r+w" in out and "share" in out and "pinned H2D copy" in out
    assert "copies: fastkl kernel" in out
    for name in _cuda_bench.FAMILY:
        assert f"{name} " in out and "kl_div's time" in out


@kernels
def test_the_copy_baseline_copies(launches, monkeypatch):
    """The copy kernel the GPU benchmark is measured against moves every byte."""
    from fastkl import _cuda_bench

    monkeypatch.setattr(_cuda_bench, "COPY_THREADS", 8)
    cuda = launches.cuda
    p = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    q = -p
    dp, dq = cuda.to_device(p), cuda.to_device(q)
    scratch = cuda.device_array(p.shape, p.dtype)
    fns = _cuda_bench._copies(dp, dq, scratch, cuda)
    fns["fastkl kernel"]()
    assert (scratch.copy_to_host() == q).all()  # p, then q, into the scratch


def test_numpy_25_with_numba_cuda_030_is_refused_in_one_line(monkeypatch):
    """numba-cuda 0.30 cannot compile any kernel with numpy 2.5 (numpy.row_stack is gone):
    device='cuda' says so in one RuntimeError naming both versions and what to install, and
    fastkl info reports it, instead of a traceback from inside numba-cuda."""
    from fastkl import info

    message = info.cuda_compatibility("2.5.2", "0.30.4", has_row_stack=False)
    assert "numba-cuda 0.30.4" in message and "numpy 2.5.2" in message
    assert "pip install 'numpy<2.5'" in message
    assert info.cuda_compatibility("2.4.6", "0.30.4", has_row_stack=True) is None
    assert info.cuda_compatibility("2.5.2", "0.31.0", has_row_stack=False) is None
    monkeypatch.setattr(info, "cuda_compatibility", lambda: message)
    status = info.cuda_status()
    assert not status["available"] and status["reason"] == message
    if SIM:
        return  # the simulator compiles nothing: it needs no check
    from fastkl import _cuda_driver

    monkeypatch.setattr(_cuda_driver, "_gpu_ready", False)
    with pytest.raises(RuntimeError, match=r"^device='cuda': numba-cuda 0\.30\.4 cannot"):
        fastkl.kl_div([0.5, 0.5], [0.5, 0.5], device="cuda")


class _RequiresGrad:
    """What a torch CUDA tensor that requires grad does when asked for its interface."""

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")


@kernels
def test_an_unexportable_cuda_tensor_is_a_type_error(launches):
    with pytest.raises(TypeError, match="p: could not read its __cuda_array_interface__"):
        fastkl.kl_div(_RequiresGrad(), np.full(4, 0.25))


def test_device_cuda_without_numba_cuda_says_how_to_install():
    code = (
        "import importlib.metadata as md\n"
        "real = md.version\n"
        "def version(name):\n"
        "    if name == 'numba-cuda':\n"
        "        raise md.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "md.version = version\n"
        "import fastkl\n"
        "try:\n"
        "    fastkl.kl_div([0.5, 0.5], [0.5, 0.5], device='cuda')\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "device='cuda': the CUDA backend needs NVIDIA's numba-cuda" in run.stdout
    assert "pip install 'fastkl[cuda]'" in run.stdout


# --- training calls: values and gradients (fastkl/_cuda_train.py) ------------------------------

TRAIN_CASES = [
    # (name, p_form, q_form, options): every divergence, every side mode, clipping, skew (the
    # CPU's kernels they are compared with are those the CPU's tests compile)
    ("kl_div", "probs", "logits", {}),
    ("kl_div", "log_probs", "probs", {}),
    ("kl_div", "logits", "log_probs", {}),
    ("kl_div", "logits", "logits", {"temperature": 2.0}),
    ("kl_div", "probs", "log_probs", {"temperature": 0.5}),
    ("kl_div", "probs", "probs", {"normalize": True, "eps": 1e-3}),
    ("kl_div", "probs", "log_probs", {"eps": 1e-3}),
    ("js_div", "logits", "logits", {"beta": 0.2}),
    ("js_distance", "probs", "logits", {}),
    ("sym_kl", "probs", "logits", {}),
    ("cross_entropy", "logits", "logits", {}),
    ("entropy", "probs", "probs", {}),
    ("generalized_kl", "probs", "logits", {}),
    ("tv_distance", "probs", "logits", {}),
    ("hellinger", "probs", "logits", {}),
]


#: a group of lanes per row (K) for every case; a block per row (K_LONG) for a few
TRAIN_RUNS = [(K, *case) for case in TRAIN_CASES] + [
    (K_LONG, *TRAIN_CASES[i])
    for i in (0, 5, 7, 11)  # KL, clipped, skewed JS, entropy
]


@kernels
@pytest.mark.parametrize(("k", "name", "p_form", "q_form", "options"), TRAIN_RUNS, ids=str)
def test_training_kernels_equal_the_cpu(launches, rng, name, p_form, q_form, options, k):
    p = inputs(rng, p_form, (7, k))
    q = inputs(rng, q_form, (7, k))
    grad = "both" if lookup(name).reads_q else "p"
    where = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    weights = rng.random(7)
    for extra in (
        {"reduction": "none"},
        {"reduction": "mean", "where": where, "weights": weights},
    ):
        kw = {**options, **extra, "grad": grad}
        d_p, d_q = launches.cuda.to_device(p), launches.cuda.to_device(q)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # on the device: no host copy warned
            got = call(name, d_p, d_q, p_form, q_form, **kw)
        want = call(name, p, q, p_form, q_form, **kw)
        got = [g.copy_to_host() if hasattr(g, "copy_to_host") else g for g in got]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@kernels
def test_training_on_the_device_in_place_and_streamed(launches, rng):
    p = inputs(rng, "probs", (5, K))
    z = inputs(rng, "logits", (5, K), np.float32)
    d_z = launches.cuda.to_device(z)
    value, g = fastkl.kl_div(launches.cuda.to_device(p), d_z, q_form="logits", grad="q",
                             grad_out=d_z, reduction="mean")  # fmt: skip
    want_value, want = fastkl.kl_div(p, z, q_form="logits", grad="q", reduction="mean")
    assert g is d_z and g.copy_to_host().dtype == np.float32
    np.testing.assert_allclose(d_z.copy_to_host(), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    # numpy inputs with device="cuda": uploaded, computed there, numpy results
    v, gp = fastkl.js_div(p, z, q_form="logits", grad="p", beta=0.7, device="cuda")
    assert isinstance(gp, np.ndarray) and gp.dtype == p.dtype
    want_v, want_gp = fastkl.js_div(p, z, q_form="logits", grad="p", beta=0.7)
    np.testing.assert_allclose(gp, want_gp, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(v, want_v, rtol=1e-6)


@kernels
def test_training_with_a_broadcast_side_runs_on_the_host(launches, rng):
    from fastkl import _cuda_driver

    p = inputs(rng, "probs", (5, K))
    z = inputs(rng, "logits", (K,))
    _cuda_driver._warned_host_training = False
    with pytest.warns(UserWarning, match="computed by the CPU's kernels"):
        v, g = fastkl.kl_div(launches.cuda.to_device(p), launches.cuda.to_device(z),
                             q_form="logits", grad="q")  # fmt: skip
    want_v, want_g = fastkl.kl_div(p, z, q_form="logits", grad="q")
    np.testing.assert_array_equal(g.copy_to_host(), want_g)
    np.testing.assert_array_equal(v.copy_to_host(), want_v)


@pytest.mark.parametrize("shape", ["warp", "block"])
def test_training_kernels_compile_for_an_h100(ptx, shape):
    """The training kernel of KL (probabilities against logits) in both group shapes, and a
    skewed Jensen-Shannon under a temperature: compiled for sm_90."""
    from numba import cuda
    from numba.core import types as nt

    from fastkl import _cuda_train

    k = 100 if shape == "warp" else 100_000
    for name, modes in (("kl_div", (_cuda_train.PROB, _cuda_train.SOFT_LOGIN)),
                        ("js_div", (_cuda_train.SOFT_PROB, _cuda_train.LOG))):  # fmt: skip
        kernel, group, block = _cuda_train.train_kernel(lookup(name).terms, *modes, False, k)
        assert (group, block) == ((32, 256) if shape == "warp" else (512, 512))
        rows = nt.Array(nt.float32, 2, "A", readonly=True)
        grads = nt.Array(nt.float32, 2, "C")
        f64, i64 = nt.float64, nt.int64
        sig = (rows, i64, rows, i64, i64, nt.boolean, f64, f64, f64, f64, i64, i64, grads, grads,
               nt.Array(f64, 1, "C"), i64, nt.Array(nt.float32, 1, "C"))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))[0]
        assert ".target sm_90" in code and "shfl.sync.bfly" in code
        assert ("bar.sync" in code) == (shape == "block")
        assert ".local" not in code  # no spill to local memory


@kernels
def test_training_arguments_on_the_device_are_checked(launches, rng):
    cuda = launches.cuda
    p = inputs(rng, "probs", (5, K))
    z = inputs(rng, "logits", (5, K))
    d_p, d_z = cuda.to_device(p), cuda.to_device(z)
    a = cuda.device_array((5, K))
    with pytest.raises(ValueError, match=r"grad_out \(p\): overlaps grad_out \(q\)"):
        fastkl.kl_div(d_p, d_z, q_form="logits", grad="both", grad_out=(a, a))
    with pytest.raises(TypeError, match="grad_out: expected GPU arrays for GPU inputs"):
        fastkl.kl_div(d_p, d_z, q_form="logits", grad="both", grad_out=(a, np.empty((5, K))))
    with pytest.raises(ValueError, match=r"grad_out \(q\): overlaps p "):
        fastkl.kl_div(d_p, d_z, q_form="logits", grad="q", grad_out=d_p)
    out = cuda.device_array(5)
    with pytest.raises(ValueError, match="out: only supported with reduction='none'"):
        fastkl.kl_div(d_p, cuda.to_device(z[0]), q_form="logits", grad="q", out=out,
                      reduction="sum")  # fmt: skip
