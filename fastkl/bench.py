"""``fastkl bench``: fastkl against the read roofline and the peers, measured in one process.

The roofline of a case is a numba ``prange`` loop that only streams the same inputs (it adds
them up, so nothing can be skipped): the time it takes to read the bytes once, the physical
limit of a streaming computation. Every time is the median of ``repeat`` runs, and ratios are
taken within one run of this process, so a noisy machine shifts them together.

Pairwise cases (``fastkl.pairwise.pairwise_kl``, every row of P against every row of Q) are
compute-bound: their yardstick is one BLAS product ``np.dot(P, Q.T)`` of the same shapes,
and the Python loop of one ``kl_div(P[i], Q[j])`` call per pair that they replace (timed on a
sample of pairs and extrapolated per pair). They are reported under their own JSON key,
``"pairwise"``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange

from . import _config
from ._config import JIT_OPTIONS
from ._warmup import ROWWISE
from .divergences import lookup

# The roofline kernels only read: their sums are thrown away, so they may be added in any
# order, and ``reassoc`` lets LLVM vectorize them (the scoring kernels add in a fixed order).
_ROOFLINE = dict(JIT_OPTIONS, parallel=True, cache=_config.CACHE)
_ROOFLINE["fastmath"] = set(JIT_OPTIONS["fastmath"]) | {"reassoc"}


@njit(**_ROOFLINE)
def _stream_rows(p, ldp, q, ldq, k, out):
    """Read every row of p and q once (ld == 0: q is one row), as the kernels do."""
    for i in prange(out.shape[0]):
        pr = p[i * ldp : i * ldp + k]
        qr = q[i * ldq : i * ldq + k]
        acc = pr[0] - pr[0]
        for j in range(k):
            acc += pr[j] + qr[j]
        out[i] = acc


@njit(**_ROOFLINE)
def _stream_p(p, k, out):
    """Read every row of p once (the roofline of scoring against one cached q row)."""
    for i in prange(out.shape[0]):
        pr = p[i * k : i * k + k]
        acc = pr[0] - pr[0]
        for j in range(k):
            acc += pr[j]
        out[i] = acc


@dataclass
class Case:
    name: str
    n: int
    k: int
    dtype: str
    form: str  # "probs" or "logits" (both sides)
    one_q_row: bool = False
    targets: dict[str, float] = field(default_factory=dict)


CASES = [
    Case(
        "probs f32 1,000,000 x 64",
        1_000_000,
        64,
        "float32",
        "probs",
        targets={"roofline": 1.25, "numpy": 8.0, "torch": 15.0},
    ),
    Case("probs f64 500,000 x 64", 500_000, 64, "float64", "probs", targets={"roofline": 1.5}),
    Case(
        "logits f32 1,000,000 x 64",
        1_000_000,
        64,
        "float32",
        "logits",
        targets={"roofline": 2.0, "torch": 10.0},
    ),
    Case("probs f32 4,000,000 x 4", 4_000_000, 4, "float32", "probs", targets={"roofline": 2.0}),
    Case(
        "logits f32 2,048 x 32,768", 2_048, 32_768, "float32", "logits", targets={"roofline": 2.0}
    ),
    Case(
        "one q row vs 1,000,000 x 64 f32",
        1_000_000,
        64,
        "float32",
        "probs",
        one_q_row=True,
        targets={"roofline": 1.25},
    ),
]


@dataclass
class PairwiseCase:
    name: str
    n: int  # rows of P and of Q
    k: int
    dtype: str
    loop_pairs: int = 2_000  # kl_div calls timed for the per-pair loop figure
    targets: dict[str, float] = field(default_factory=dict)


PAIRWISE_CASES = [
    PairwiseCase(
        "pairwise f32 10k x 10k x 64",
        10_000,
        64,
        "float32",
        targets={"dot": 2.0, "loop": 50.0},
    ),
]


@dataclass
class FamilyCase:
    """A family function on the data of the kl_div case of the same forms (1,000,000 x 64
    float32): its yardstick is kl_div on those inputs, timed in turn."""

    function: str
    form: str  # "probs" or "logits" for both sides ("probs-logits": P probs, Q logits)

    @property
    def name(self) -> str:
        return f"{self.function} {self.form} f32 1M x 64"


FAMILY_CASES = [
    FamilyCase("js_div", "probs"),
    FamilyCase("js_div", "logits"),
    FamilyCase("sym_kl", "probs"),
    FamilyCase("cross_entropy", "probs"),
    FamilyCase("cross_entropy", "probs-logits"),
    FamilyCase("entropy", "probs"),
    FamilyCase("entropy", "logits"),
    FamilyCase("generalized_kl", "probs"),
]
# every other divergence of the family's kernels, on probabilities (new specs included)
FAMILY_CASES += [
    FamilyCase(name, "probs")
    for name in ROWWISE
    if not lookup(name).terms.own_kernels and name not in {c.function for c in FAMILY_CASES}
]


def run_family_case(case: FamilyCase, repeat: int, scale: float) -> dict:
    import fastkl

    k = 64
    p_form, q_form = (case.form.split("-") * 2)[:2]
    p, _, n = _data(Case("", 1_000_000, k, "float32", p_form), scale, seed=1)
    _, q, _ = _data(Case("", 1_000_000, k, "float32", q_form), scale, seed=2)
    out = np.empty(n, np.float32)
    forms = {"p_form": p_form, "q_form": q_form}
    fn = getattr(fastkl, case.function)
    if not lookup(case.function).reads_q:
        call = lambda: fn(p, p_form=p_form, out=out)  # noqa: E731
    else:
        call = lambda: fn(p, q, out=out, **forms)  # noqa: E731
    roof = np.empty(n, np.float32)
    flat_p, flat_q = p.reshape(-1), q.reshape(-1)
    (t, t_kl, t_roof), ratio = paired_medians(
        [
            call,
            lambda: fastkl.kl_div(p, q, out=out, **forms),
            lambda: _stream_rows(flat_p, k, flat_q, k, k, roof),
        ],
        repeat,
    )
    return {
        "case": _scaled(case.name, n),
        "scaled": scale != 1.0,
        "fastkl_s": t,
        "kl_div_s": t_kl,
        "roofline_s": t_roof,
        "ratio_to_kl_div": ratio,
        "ratio_to_roofline": t / t_roof,
    }


def median_seconds(fn: Callable[[], object], repeat: int, warm: bool = True) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` (after one untimed call if ``warm``)."""
    return paired_medians([fn], repeat, warm)[0][0]


def paired_medians(
    fns: list[Callable[[], object]], repeat: int, warm: bool = True
) -> tuple[list[float], float]:
    """Medians of ``repeat`` rounds that each time every fn once, in turn; and the median over
    rounds of the first fn's time divided by the second's.

    Interleaving matters on a shared machine: the load drifts over seconds, and a ratio of two
    times taken side by side moves far less than a ratio of two medians taken apart.
    """
    if warm:
        for fn in fns:
            fn()  # compile or load, fault the pages in
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    ratio = (
        statistics.median(a / b for a, b in zip(times[0], times[1], strict=True))
        if len(fns) > 1
        else 1.0
    )
    return [statistics.median(ts) for ts in times], ratio


#: Input bytes of the slice whose repeated scoring, from cache, gives a case's compute time:
#: one core's L2 on the development machine (1 MiB), so that it stays in cache across calls.
CACHE_BYTES = 1 << 20


def compute_seconds(score: Callable[[int], object], n: int, row_bytes: int, repeat: int) -> float:
    """Time to score n rows on all threads when memory is not the limit.

    ``score(m)`` scores the first m rows, about 1 MiB: on one thread they stay in that core's
    L2 across calls. The time of a 1-row call (the call's fixed cost) is subtracted, and the
    rest is scaled to n rows spread over the threads. A kernel whose compute time is above the
    read roofline is compute-bound there, whatever the memory does.
    """
    import numba

    threads = numba.get_num_threads()
    m = max(1, min(n, CACHE_BYTES // max(row_bytes, 1)))
    numba.set_num_threads(1)  # thread-local: this thread's kernel calls only
    try:
        (t_m, t_1), _ = paired_medians([lambda: score(m), lambda: score(1)], max(25, 5 * repeat))
    finally:
        numba.set_num_threads(threads)
    return max(t_m - t_1, 0.0) * n / m / threads


def _data(case: Case, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    n = max(2, int(case.n * scale))
    dt = np.dtype(case.dtype)
    shape_q = (case.k,) if case.one_q_row else (n, case.k)
    if case.form == "probs":
        p = rng.standard_exponential((n, case.k), dtype=dt)
        p /= p.sum(axis=1, keepdims=True)
        q = rng.standard_exponential(shape_q, dtype=dt)
        q /= q.sum(axis=-1, keepdims=True)
    else:
        p = (rng.standard_normal((n, case.k), dtype=dt) * dt.type(3)).astype(dt)
        q = (rng.standard_normal(shape_q, dtype=dt) * dt.type(3)).astype(dt)
    return p, q, n


def _peers(case: Case, p: np.ndarray, q: np.ndarray) -> dict[str, Callable[[], object]]:
    peers: dict[str, Callable[[], object]] = {}
    logits = case.form == "logits"

    def numpy_expr() -> object:
        with np.errstate(divide="ignore", invalid="ignore"):
            if logits:
                lp = p - p.max(axis=1, keepdims=True)
                lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
                lq = q - q.max(axis=-1, keepdims=True)
                lq -= np.log(np.exp(lq).sum(axis=-1, keepdims=True))
                return (np.exp(lp) * (lp - lq)).sum(1)
            return (p * np.log(p / q)).sum(1)

    peers["numpy"] = numpy_expr
    if importlib.util.find_spec("scipy") is not None:
        from scipy.special import rel_entr, softmax

        def scipy_expr() -> object:
            if logits:
                return rel_entr(softmax(p, axis=1), softmax(q, axis=-1)).sum(1)
            return rel_entr(p, q).sum(1)

        peers["scipy"] = scipy_expr
    if importlib.util.find_spec("torch") is not None:
        import torch
        import torch.nn.functional as F

        tp = torch.from_numpy(p)
        tq = torch.from_numpy(q)

        def torch_expr() -> object:
            with torch.no_grad():
                if logits:
                    # the peer's idiom: log_softmax both sides, kl_div(log Q, log P, log_target)
                    lq, lp = F.log_softmax(tq, dim=-1), F.log_softmax(tp, dim=-1)
                    return F.kl_div(lq, lp, reduction="none", log_target=True).sum(1)
                return F.kl_div(torch.log(tq), tp, reduction="none").sum(1)

        peers["torch"] = torch_expr
    return peers


def run_case(case: Case, repeat: int, scale: float, peers: bool) -> dict:
    from . import kl_div

    p, q, n = _data(case, scale)
    out = np.empty(n, p.dtype)
    form = case.form
    sink = np.empty(n, p.dtype)
    pf = p.reshape(-1)

    def fast() -> object:
        return kl_div(p, q, p_form=form, q_form=form, out=out)

    if case.one_q_row:

        def roof() -> object:
            return _stream_p(pf, case.k, sink)

        roof_what = "read p"
    else:
        qf = q.reshape(-1)

        def roof() -> object:
            return _stream_rows(pf, case.k, qf, case.k, case.k, sink)

        roof_what = "read p and q"
    (t_fast, t_roof), ratio = paired_medians([fast, roof], repeat)

    def score_first(m: int) -> object:
        qm = q if case.one_q_row else q[:m]
        return kl_div(p[:m], qm, p_form=form, q_form=form, out=out[:m])

    row_bytes = p.itemsize * case.k * (1 if case.one_q_row else 2)
    t_compute = compute_seconds(score_first, n, row_bytes, repeat)
    result = {
        "case": _scaled(case.name, n),
        "scaled": scale != 1.0,
        "n": n,
        "k": case.k,
        "dtype": case.dtype,
        "form": form,
        "one_q_row": case.one_q_row,
        "fastkl_s": t_fast,
        "roofline_s": t_roof,
        "roofline": roof_what,
        "ratio_to_roofline": ratio,
        "compute_s": t_compute,
        "compute_to_roofline": t_compute / t_roof,
        "bytes": p.nbytes + (0 if case.one_q_row else q.nbytes),
        "rows_per_s": n / t_fast,
        "peers": {},
        "targets": case.targets,
    }
    if peers:
        for name, fn in _peers(case, p, q).items():
            t = median_seconds(fn, repeat)
            result["peers"][name] = {"s": t, "speedup": t / t_fast}
    return result


def run_pairwise_case(case: PairwiseCase, repeat: int, scale: float) -> dict:
    from . import kl_div
    from .pairwise import pairwise_kl

    rng = np.random.default_rng(0)
    n = max(2, int(case.n * scale))
    dt = np.dtype(case.dtype)
    p = rng.standard_exponential((n, case.k), dtype=dt)
    p /= p.sum(axis=1, keepdims=True)
    q = rng.standard_exponential((n, case.k), dtype=dt)
    q /= q.sum(axis=1, keepdims=True)

    # Both allocate their (n, n) result, as a caller would.
    (t_fast, t_dot), ratio = paired_medians(
        [lambda: pairwise_kl(p, q), lambda: np.dot(p, q.T)], repeat
    )
    pairs = min(case.loop_pairs, n * n)
    ii, jj = np.divmod(np.arange(pairs), n)
    rows = [(p[i], q[j]) for i, j in zip(ii, jj, strict=True)]

    def loop() -> object:
        return [kl_div(a, b) for a, b in rows]

    t_loop_pair = median_seconds(loop, max(1, min(repeat, 3))) / pairs
    t_loop = t_loop_pair * n * n
    return {
        "case": _scaled(case.name, n),
        "scaled": scale != 1.0,
        "n": n,
        "m": n,
        "k": case.k,
        "dtype": case.dtype,
        "fastkl_s": t_fast,
        "dot_s": t_dot,
        "ratio_to_dot": ratio,
        "loop_pair_s": t_loop_pair,
        "loop_s": t_loop,
        "loop_pairs_timed": pairs,
        "speedup_over_loop": t_loop / t_fast,
        "pairs_per_s": n * n / t_fast,
        "targets": case.targets,
    }


def _pairwise_verdicts(r: dict) -> str:
    if r.get("scaled"):
        return ""
    notes = []
    for what, target in r["targets"].items():
        if what == "dot":
            ok = r["ratio_to_dot"] <= target
            notes.append(f"np.dot <= {target:g}x: {'met' if ok else 'missed'}")
        elif what == "loop":
            ok = r["speedup_over_loop"] >= target
            notes.append(f"kl_div loop >= {target:g}x: {'met' if ok else 'missed'}")
    return "; ".join(notes)


def _scaled(name: str, n: int) -> str:
    """A case's name with its row count as run (``--scale`` runs fewer rows)."""
    return re.sub(r"\b\d{1,3}(,\d{3})+\b|\b\d+(?= x )", f"{n:,}", name, count=1)


def _verdicts(r: dict) -> str:
    if r.get("scaled"):
        return ""  # the targets are for the full-size cases
    notes = []
    for what, target in r["targets"].items():
        if what == "roofline":
            ok = r["ratio_to_roofline"] <= target
            notes.append(f"roofline <= {target}: {'met' if ok else 'missed'}")
        elif what in r["peers"]:
            ok = r["peers"][what]["speedup"] >= target
            notes.append(f"{what} >= {target:g}x: {'met' if ok else 'missed'}")
    return "; ".join(notes)


@njit(**_ROOFLINE)
def _stream_rows_write(p, q, g):
    """Read every row of p and q once and write one row: a gradient's traffic."""
    for i in prange(g.shape[0]):
        for j in range(g.shape[1]):
            g[i, j] = q[i, j] - p[i, j]


@dataclass
class TrainCase:
    """A distillation step: teacher probabilities against student logits, KL's value and its
    gradient with respect to the logits, against torch's forward plus backward."""

    name: str
    n: int
    k: int
    targets: dict[str, float] = field(default_factory=dict)


TRAIN_CASES = [
    TrainCase("train f32 1,000,000 x 64", 1_000_000, 64, {"roofline": 1.5, "torch": 5.0}),
    TrainCase("train f32 4,096 x 32,768", 4_096, 32_768, {"roofline": 1.5, "torch": 5.0}),
]


def run_train_case(case: TrainCase, repeat: int, scale: float, peers: bool) -> dict:
    from . import kl_div

    p, _, n = _data(Case("", case.n, case.k, "float32", "probs"), scale, seed=1)
    _, z, _ = _data(Case("", case.n, case.k, "float32", "logits"), scale, seed=2)
    grad = np.empty_like(z)

    def fast() -> object:
        return kl_div(p, z, q_form="logits", reduction="mean", grad="q", grad_out=grad)

    def roof() -> object:
        return _stream_rows_write(p, z, grad)

    (t_fast, t_roof), ratio = paired_medians([fast, roof], repeat)
    result = {
        "case": _scaled(case.name, n),
        "scaled": scale != 1.0,
        "n": n,
        "k": case.k,
        "fastkl_s": t_fast,
        "roofline_s": t_roof,
        "ratio_to_roofline": ratio,
        "peers": {},
        "targets": case.targets,
    }
    if peers and importlib.util.find_spec("torch") is not None:
        import torch
        import torch.nn.functional as F

        tp, tz = torch.from_numpy(p), torch.from_numpy(z)

        def torch_step() -> object:
            leaf = tz.detach().requires_grad_(True)
            F.kl_div(F.log_softmax(leaf, dim=-1), tp, reduction="batchmean").backward()
            return leaf.grad

        t = median_seconds(torch_step, repeat)
        result["peers"]["torch"] = {"s": t, "speedup": t / t_fast}
    return result


def _train_line(r: dict) -> str:
    line = (
        f"{r['case']:34s} fastkl {r['fastkl_s'] * 1e3:8.2f} ms  "
        f"roofline {r['roofline_s'] * 1e3:7.2f} ms  ratio {r['ratio_to_roofline']:5.2f}"
    )
    for name, v in r["peers"].items():
        line += f"  {name} fwd+bwd {v['s'] * 1e3:8.1f} ms ({v['speedup']:5.2f}x)"
    verdict = _verdicts(r)
    return line + (f"\n{'':34s} target {verdict}" if verdict else "")


#: The C API's cases: (name, rows, k). Timed through libfastkl from C (the bench program)
#: and, for a paired ratio to the Python API, through the same library loaded with ctypes.
SCORE_CASES = [
    Case("score probs f32 2,000,000 x 64", 2_000_000, 64, "float32", "probs"),
    Case("score probs f32 2,000,000 x 64 one q", 2_000_000, 64, "float32", "probs", True),
]


def numpy_score_files(p_path: str, q_path: str, step: int, out: np.ndarray) -> np.ndarray:
    """The job of ``fastkl score`` done with numpy's ``(p * np.log(p / q)).sum(1)``, on memory
    maps of the same .npy files in chunks of ``step`` rows (Q: as many rows, or one row)."""
    p = np.load(p_path, mmap_mode="r")
    q = np.load(q_path, mmap_mode="r")
    with np.errstate(divide="ignore", invalid="ignore"):
        for first in range(0, p.shape[0], step):
            a = p[first : first + step]
            b = q if q.ndim == 1 else q[first : first + step]
            out[first : first + step] = (a * np.log(a / b)).sum(axis=1)
    return out


def run_score_case(case: Case, repeat: int, scale: float) -> dict:
    """``fastkl score`` on .npy files (page-cached, as a second run finds them) against
    ``kl_div`` on the same rows in memory, the read roofline, and numpy in the same chunks."""
    from . import kl_div
    from .score import default_chunk_rows, score_files

    p, q, n = _data(case, scale)
    folder = tempfile.mkdtemp(prefix="fastkl-bench-score-")
    try:
        p_path, q_path = os.path.join(folder, "p.npy"), os.path.join(folder, "q.npy")
        out_path = os.path.join(folder, "kl.npy")
        np.save(p_path, p)
        np.save(q_path, q)
        out = np.empty(n, p.dtype)
        sink = np.empty(n, p.dtype)
        pf, qf = p.reshape(-1), q.reshape(-1)
        ldq = 0 if case.one_q_row else case.k
        step = default_chunk_rows(case.k, p.itemsize, mapped=True)

        (t_score, t_memory, t_roof, t_numpy), ratio = paired_medians(
            [
                lambda: score_files(p_path, q_path, out_path),
                lambda: kl_div(p, q, out=out),
                lambda: _stream_rows(pf, case.k, qf, ldq, case.k, sink),
                lambda: numpy_score_files(p_path, q_path, step, out),
            ],
            repeat,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "case": _scaled(case.name, n),
        "scaled": scale != 1.0,
        "n": n,
        "k": case.k,
        "score_s": t_score,
        "in_memory_s": t_memory,
        "roofline_s": t_roof,
        "numpy_chunks_s": t_numpy,
        "ratio_to_in_memory": ratio,
        "ratio_to_roofline": t_score / t_roof,
        "speedup_over_numpy": t_numpy / t_score,
        "rows_per_s": n / t_score,
    }


CAPI_CASES = [
    ("kl_div probs f32 4 x 64 (per call)", 4, 64),
    ("kl_div probs f32 1M x 64", 1_000_000, 64),
]


def _capi_data(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """bench.c's rows: fixed integer patterns, normalized (the same values as the C program)."""
    i = np.arange(n, dtype=np.int64)[:, None]
    j = np.arange(k, dtype=np.int64)[None, :]
    p = ((i * 131 + j * 71) % 97 + 1).astype(np.float32)
    q = ((i * 37 + j * 53) % 89 + 1).astype(np.float32)
    return p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)


def build_capi_bench(prefix: str) -> tuple[str, str]:
    """Build libfastkl under ``prefix`` and the C bench program against it: (library, program)."""
    import subprocess

    from . import capi

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the C API benchmark needs a C compiler (cc)")
    paths = capi.build(prefix)
    exe = os.path.join(prefix, "bench")
    source = os.path.join(os.path.dirname(capi.__file__), "bench.c")
    lib = os.path.dirname(paths["library"])
    cmd = [cc, "-std=c99", "-O2", source, f"-I{prefix}/include", f"-L{lib}", f"-Wl,-rpath,{lib}"]
    subprocess.run([*cmd, "-lfastkl", "-o", exe], check=True)
    return paths["library"], exe


def run_c_bench(exe: str, n: int, k: int, rounds: int, calls: int) -> dict[str, float]:
    """The C program's figures for one shape (it starts its own runtime: a fresh process)."""
    import subprocess

    run = subprocess.run(
        [exe, str(n), str(k), str(rounds), str(calls)], capture_output=True, text=True, check=True
    )
    return {key: float(v) for key, v in (line.split() for line in run.stdout.splitlines())}


def run_capi_cases(repeat: int, scale: float) -> list[dict]:
    import ctypes

    from . import kl_div
    from .capi import _build

    results = []
    with tempfile.TemporaryDirectory(prefix="fastkl-bench-capi-") as prefix:
        lib_path, exe = build_capi_bench(prefix)
        fn = _build.load(lib_path).fastkl_kl_div_f32
        f32p = ctypes.POINTER(ctypes.c_float)
        for name, rows, k in CAPI_CASES:
            n = max(1, int(rows * scale)) if rows > 4 else rows
            calls = max(1, min(20_000, 2_000_000 // (n * k)))
            c = run_c_bench(exe, n, k, rounds=max(repeat, 5), calls=calls)
            p, q = _capi_data(n, k)
            out = np.empty(n, dtype=np.float32)
            args = (p.ctypes.data_as(f32p), q.ctypes.data_as(f32p), n, k, k, k, 0, 0)
            out_ptr = out.ctypes.data_as(f32p)

            def through_lib(args=args, out_ptr=out_ptr, calls=calls):
                for _ in range(calls):
                    fn(*args, out_ptr)

            def python(p=p, q=q, out=out, calls=calls):
                for _ in range(calls):
                    kl_div(p, q, out=out)

            (lib_s, py_s), ratio = paired_medians([through_lib, python], repeat)
            if not np.array_equal(out, kl_div(p, q)):
                raise RuntimeError("libfastkl and kl_div disagree on the benchmark rows")
            results.append(
                {
                    "case": _scaled(name, n),
                    "scaled": scale != 1.0,
                    "rows": n,
                    "k": k,
                    "c_call_s": c["seconds_per_call"],
                    "c_first_call_s": c["first_call"],
                    "ctypes_call_s": lib_s / calls,
                    "python_call_s": py_s / calls,
                    "ratio_to_python": ratio,
                }
            )
    return results


def _section(
    cases: list[Any], run: Callable[[Any], dict], line: Callable[[dict], str], as_json: bool
) -> list[dict]:
    """Run each case, printing its line as it finishes (unless the output is JSON)."""
    results = []
    for case in cases:
        results.append(run(case))
        if not as_json:
            print(line(results[-1]))
    return results


def _pairwise_line(r: dict) -> str:
    line = (
        f"{r['case']:34s} fastkl {r['fastkl_s'] * 1e3:8.2f} ms "
        f"({r['pairs_per_s'] / 1e9:5.2f} G pairs/s)  np.dot {r['dot_s'] * 1e3:7.2f} ms  "
        f"ratio {r['ratio_to_dot']:5.2f}  kl_div loop {r['loop_s']:9.1f} s "
        f"({r['loop_pair_s'] * 1e6:.1f} us/pair, {r['speedup_over_loop']:,.0f}x)"
    )
    verdict = _pairwise_verdicts(r)
    return f"{line}\n{'':34s} target {verdict}" if verdict else line


def _family_line(r: dict) -> str:
    return (
        f"{r['case']:34s} fastkl {r['fastkl_s'] * 1e3:8.2f} ms  "
        f"kl_div {r['kl_div_s'] * 1e3:7.2f} ms  "
        f"ratio to kl_div {r['ratio_to_kl_div']:5.2f}  "
        f"to roofline {r['ratio_to_roofline']:5.2f}"
    )


def _score_line(r: dict) -> str:
    return (
        f"{r['case']:34s} files {r['score_s'] * 1e3:8.2f} ms  "
        f"in memory {r['in_memory_s'] * 1e3:7.2f} ms  "
        f"ratio {r['ratio_to_in_memory']:5.2f}  "
        f"to roofline {r['ratio_to_roofline']:5.2f}  "
        f"numpy {r['numpy_chunks_s'] * 1e3:8.1f} ms ({r['speedup_over_numpy']:5.1f}x)"
    )


def main(
    repeat: int = 5,
    scale: float = 1.0,
    peers: bool = True,
    as_json: bool = False,
    only: str | None = None,
    capi: bool = False,
) -> int:
    import numba

    from . import __version__, _config

    cases = [c for c in CASES if only is None or only.lower() in c.name.lower()]
    pairwise_cases = [c for c in PAIRWISE_CASES if only is None or only.lower() in c.name.lower()]
    family_cases = [c for c in FAMILY_CASES if only is None or only.lower() in c.name.lower()]
    score_cases = [c for c in SCORE_CASES if only is None or only.lower() in c.name.lower()]
    train_cases = [c for c in TRAIN_CASES if only is None or only.lower() in c.name.lower()]
    header = {
        "fastkl": __version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "threads": numba.get_num_threads(),
        "threading_layer": _config.threading_layer(),
        "repeat": repeat,
        "scale": scale,
    }
    results = []
    for case in cases:
        r = run_case(case, repeat, scale, peers)
        results.append(r)
        if not as_json:
            gbs = r["bytes"] / r["fastkl_s"] / 1e9
            line = (
                f"{r['case']:34s} fastkl {r['fastkl_s'] * 1e3:8.2f} ms ({gbs:5.1f} GB/s)  "
                f"roofline {r['roofline_s'] * 1e3:7.2f} ms  ratio {r['ratio_to_roofline']:5.2f}  "
                f"from cache {r['compute_to_roofline']:4.2f}"
            )
            for name, v in r["peers"].items():
                line += f"  {name} {v['s'] * 1e3:8.1f} ms ({v['speedup']:5.1f}x)"
            print(line)
            verdict = _verdicts(r)
            if verdict:
                print(f"{'':34s} target {verdict}")
    pairwise = _section(
        pairwise_cases, lambda c: run_pairwise_case(c, repeat, scale), _pairwise_line, as_json
    )
    family = _section(
        family_cases, lambda c: run_family_case(c, repeat, scale), _family_line, as_json
    )
    scoring = _section(
        score_cases, lambda c: run_score_case(c, repeat, scale), _score_line, as_json
    )
    training = _section(
        train_cases, lambda c: run_train_case(c, repeat, scale, peers), _train_line, as_json
    )
    capi_results = run_capi_cases(repeat, scale) if capi else []
    for r in capi_results:
        if not as_json:
            print(
                f"{'C API ' + r['case']:34s} from C {r['c_call_s'] * 1e6:10.1f} us  "
                f"through ctypes {r['ctypes_call_s'] * 1e6:10.1f} us  "
                f"Python API {r['python_call_s'] * 1e6:10.1f} us  "
                f"ratio (ctypes / Python) {r['ratio_to_python']:5.2f}  "
                f"first C call {r['c_first_call_s']:.2f} s"
            )
    if as_json:
        print(
            json.dumps(
                {
                    "header": header,
                    "results": results,
                    "pairwise": pairwise,
                    "family": family,
                    "score": scoring,
                    "train": training,
                    "capi": capi_results,
                }
            )
        )
    elif results:
        print(
            f"(medians of {repeat} runs; {header['threads']} threads, "
            f"{header['threading_layer']} layer; ratio = median over runs of fastkl time / "
            "roofline time, timed in turn; from cache = fastkl's time from L2 on one thread, "
            "spread over the threads (the arithmetic alone) / roofline time: above 1, a case is "
            "compute-bound)"
        )
    if pairwise and not as_json:
        print(
            f"(pairwise: medians of {repeat} runs; ratio = median over runs of pairwise_kl time "
            "/ np.dot(P, Q.T) time, timed in turn, both allocating their result; kl_div loop = "
            "one kl_div(P[i], Q[j]) call per pair, timed on a sample of pairs and extrapolated "
            "to all)"
        )
    if family and not as_json:
        print(
            f"(family: medians of {repeat} runs; ratio to kl_div = median over runs of the "
            "function's time / kl_div's on the same inputs and forms, timed in turn)"
        )
    if scoring and not as_json:
        print(
            f"(score: medians of {repeat} runs; fastkl score on .npy files in the page cache, "
            "output written and renamed; ratio = median over runs of its time / kl_div(p, q, "
            "out=)'s on the same rows in memory, timed in turn; numpy = (p * np.log(p / q))"
            ".sum(1) over the same memory maps in the same chunks)"
        )
    if training and not as_json:
        print(
            f"(train: medians of {repeat} runs; kl_div(teacher probabilities, student logits, "
            "reduction='mean', grad='q') into a preallocated gradient; ratio = median over runs "
            "of its time / the time to read both inputs and write one array of their size, timed "
            "in turn; torch fwd+bwd = kl_div(log_softmax(z), p, 'batchmean').backward())"
        )
    if capi_results and not as_json:
        print(
            "(C API: from C = the median per-call time in a C program linked to libfastkl; "
            "ratio = median over runs of the time through libfastkl (loaded with ctypes) / "
            "kl_div(p, q, out=out)'s, timed in turn on the same rows)"
        )
    return 0
