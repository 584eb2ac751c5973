"""Compiling ahead of the first call: ``fastkl warmup``, the C library's build, and a notice
when a call compiles.

A kernel compiles on its first call on a machine (seconds each), then loads from the cache.
:func:`warmup` compiles a chosen set ahead, in parallel processes: each process takes whole
*units* (one function, one pair of sides, one dtype), whose kernels share helpers that a
process compiles once, the next unit whenever it is free (heaviest first). A unit compiles by
calling the public function on tiny inputs that reach every kernel the unit's calls can reach
(each row-length mode, plain and statistics rows, with and without a reduction), so it compiles
exactly what real calls run.

:func:`notify_slow_compiles` makes a compile that is still running after a second say so, once
per process, as a :class:`CompileWarning` (``warnings.filterwarnings("ignore",
category=fastkl.CompileWarning)`` silences it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .divergences import REGISTRY, lookup

#: The row-wise functions a unit can name: one per set of kernels (``js_distance`` runs
#: ``js_div``'s, and names its unit), from the registry.
#: every row-wise function -> the unit that compiles its kernels (the first of its terms')
_UNIT_OF = {
    spec.name: next(s.name for s in REGISTRY if s.terms is spec.terms) for spec in REGISTRY
}
ROWWISE = tuple(dict.fromkeys(_UNIT_OF.values()))
#: The other units: argument validation, the closed forms, pairwise scoring.
OTHERS = ("validate", "bernoulli_kl", "gaussian_kl", "pairwise_kl")
#: What the C library's functions run (``fastkl build-capi`` compiles these units).
CAPI = tuple(dict.fromkeys(_UNIT_OF[spec.name] for spec in REGISTRY if spec.in_capi))
DTYPES = ("float32", "float64")
#: A row long enough for the long-row mode (``_cpu.kl_mode``: 2 chunks of 32,768).
LONG_K = 1 << 16
#: Seconds a compile runs before it says so.
NOTICE_AFTER = 1.0


class CompileWarning(UserWarning):
    """A fastkl kernel is compiling (once per machine; ``fastkl warmup`` compiles ahead)."""


@dataclass(frozen=True)
class Unit:
    """A set of kernels compiled together: ``function``'s for one pair of sides and dtype."""

    function: str
    dtype: str = "float64"
    p_log: bool = False  # p is log-probabilities or logits
    q_log: bool = False

    @property
    def label(self) -> str:
        if self.function not in ROWWISE:
            return f"{self.function} {self.dtype}"
        sides = "log" if self.p_log else "probs"
        if lookup(self.function).reads_q:
            sides += "/" + ("log" if self.q_log else "probs")
        return f"{self.function} {self.dtype} {sides}"

    def key(self) -> str:
        return f"{self.function}:{self.dtype}:{int(self.p_log)}{int(self.q_log)}"

    @classmethod
    def from_key(cls, key: str) -> Unit:
        function, dtype, logs = key.split(":")
        return cls(function, dtype, logs[0] == "1", logs[1] == "1")


def units(
    functions: Iterable[str] | None = None, dtypes: Iterable[str] | None = None
) -> list[Unit]:
    """Every unit of ``functions`` (default: all, :data:`ROWWISE` and :data:`OTHERS`) in
    ``dtypes`` (default: both), heaviest first (long-running units start early)."""
    chosen = list(ROWWISE + OTHERS) if functions is None else list(functions)
    kinds = list(DTYPES) if dtypes is None else list(dtypes)
    for name in chosen:
        if name not in ROWWISE + OTHERS and name not in _UNIT_OF:
            known = ", ".join(ROWWISE + OTHERS)
            raise ValueError(f"functions: expected names among {known}, got {name!r}")
    for kind in kinds:
        if kind not in DTYPES:
            raise ValueError(f"dtypes: expected float32 or float64, got {kind!r}")
    result = []
    for name in dict.fromkeys(_UNIT_OF.get(n, n) for n in chosen):
        for kind in kinds:
            if name not in ROWWISE:
                result.append(Unit(name, kind))
                continue
            for p_log in (False, True):
                for q_log in (False, True) if lookup(name).reads_q else (False,):
                    result.append(Unit(name, kind, p_log, q_log))
    # log sides carry more code (and KL more modes): start them first
    return sorted(result, key=lambda u: (-(u.p_log + u.q_log), not _own_kernels(u.function)))


def _own_kernels(function: str) -> bool:
    """Whether a unit's function has KL's own kernels (more modes to compile)."""
    return function in _UNIT_OF and lookup(function).terms.own_kernels


def _rows(n: int, k: int, dtype: str, log: bool) -> np.ndarray:
    x = np.full((n, k), 1.0 / k, dtype)
    return np.log(x) if log else x


def compile_unit(unit: Unit, *, reductions: bool = True) -> None:
    """Compile (or load from the cache) every kernel of ``unit``, in this process.

    ``reductions=False`` leaves out the kernels that only reductions run (their rows sum in
    float64, so float32 inputs write float64 rows): the C library has no reductions.
    """
    import fastkl

    from . import _cpu

    kind = unit.dtype
    if unit.function == "validate":
        for form in ("probs", "log_probs", "logits"):
            fastkl.kl_div(_rows(1, 4, kind, form != "probs"), _rows(1, 4, kind, False),
                          p_form=form, validate=True)  # fmt: skip
        fastkl.generalized_kl(_rows(1, 4, kind, False), _rows(1, 4, kind, False), validate=True)
        return
    if unit.function in ("bernoulli_kl", "gaussian_kl"):
        one = np.full(3, 0.5, kind)
        args = (one, one) if unit.function == "bernoulli_kl" else (one, one, one, one)
        for axis in (None, -1):
            getattr(fastkl, unit.function)(*args, axis=axis)
        return
    if unit.function == "pairwise_kl":
        rows = _rows(4, 3, kind, False)
        fastkl.pairwise_kl(rows, rows)
        fastkl.nearest_kl(rows, rows, 2)
        return
    function = getattr(fastkl, unit.function)
    p_forms = ("log_probs", "logits") if unit.p_log else ("probs",)
    q_forms = ("log_probs", "logits") if unit.q_log else ("probs",)
    lengths = [16, LONG_K]
    if _own_kernels(unit.function) and not (unit.p_log or unit.q_log):
        lengths.append(_cpu.FLAT_MAX_K)  # the short rows' kernel (it holds every such k)
    options: list[dict[str, Any]] = [{}]
    if not (unit.p_log or unit.q_log):
        options.append({"normalize": True})  # probabilities with statistics: another mode
    if reductions:
        options += [dict(o, reduction="sum") for o in options]
    for k in lengths:
        n = 1 if k == LONG_K else 2
        for p_form in p_forms:
            for q_form in q_forms:
                p = _rows(n, k, kind, unit.p_log)
                q = _rows(n, k, kind, unit.q_log)
                for extra in options:
                    if not lookup(unit.function).reads_q:
                        function(p, p_form=p_form, **extra)
                    else:
                        function(p, q, p_form=p_form, q_form=q_form, **extra)


def warmup(
    selected: list[Unit],
    *,
    jobs: int | None = None,
    reductions: bool = True,
    env: dict[str, str] | None = None,
    report: Callable[[str, float, int, int], None] | None = None,
) -> float:
    """Compile ``selected`` units in ``jobs`` processes (default: one per core, at most the
    units); returns the seconds it took. ``report(label, seconds, done, total)`` is called as
    each unit finishes; ``env`` is the processes' environment (default: this one's).

    Raises
    ------
    RuntimeError
        A process failed (its last lines of stderr are in the message).
    """
    began = time.perf_counter()
    total = len(selected)
    if total == 0:
        return 0.0
    jobs = max(1, min(jobs or os.cpu_count() or 1, total))
    command = [sys.executable, "-m", "fastkl._warmup"] + (["--no-reductions"] * (not reductions))
    children = [
        subprocess.Popen(
            command,
            env=dict(env if env is not None else os.environ, PYTHONWARNINGS="ignore"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(jobs)
    ]
    pending = list(reversed(selected))  # heaviest first; each process takes the next when free
    done = 0
    lock = threading.Lock()
    errors: list[str] = ["" for _ in children]

    def feed(child: subprocess.Popen[str]) -> None:
        assert child.stdin is not None
        with lock:
            unit = pending.pop() if pending else None
        if unit is None:
            child.stdin.close()
        else:
            child.stdin.write(unit.key() + "\n")
            child.stdin.flush()

    def follow(i: int, child: subprocess.Popen[str]) -> None:
        nonlocal done
        assert child.stdout is not None and child.stderr is not None
        try:
            feed(child)
            for line in child.stdout:
                key, _, seconds = line.strip().partition(" ")
                with lock:
                    done += 1
                    if report is not None:
                        report(Unit.from_key(key).label, float(seconds), done, total)
                feed(child)
        except (BrokenPipeError, OSError):
            pass  # the process died: its stderr says why
        errors[i] = child.stderr.read()

    threads = [threading.Thread(target=follow, args=(i, c)) for i, c in enumerate(children)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for child in children:
            child.wait()
    except BaseException:
        for child in children:
            child.kill()
        raise
    for child, err in zip(children, errors, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"compiling fastkl's kernels failed:\n{err[-4000:]}")
    return time.perf_counter() - began


# --- telling the user about a slow compile ---------------------------------------------------

_state = threading.local()
_installed = False


def _fastkl_dispatcher(ev: Any) -> bool:
    dispatcher = ev.data.get("dispatcher")
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module == "fastkl" or module.startswith("fastkl.")


_warned = False


def _notice() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn_explicit(
        "compiling kernels for this call: once per machine, they are cached after "
        "(`fastkl warmup` compiles them ahead)",
        CompileWarning,
        "fastkl",
        0,
        module="fastkl",
    )


def notify_slow_compiles() -> None:
    """Install the listener (idempotent): the outermost compile of a fastkl function that runs
    past :data:`NOTICE_AFTER` seconds warns, the first time in a process."""
    global _installed
    if _installed:
        return
    from ._numba_shim import event

    class _Listener(event.Listener):
        def on_start(self, ev: Any) -> None:
            depth = getattr(_state, "depth", 0)
            _state.depth = depth + 1
            if depth == 0 and _fastkl_dispatcher(ev):
                _state.timer = threading.Timer(NOTICE_AFTER, _notice)
                _state.timer.daemon = True
                _state.timer.start()

        def on_end(self, ev: Any) -> None:
            _state.depth = getattr(_state, "depth", 1) - 1
            timer = getattr(_state, "timer", None)
            if _state.depth == 0 and timer is not None:
                timer.cancel()
                _state.timer = None

    event.register("numba:compile", _Listener())
    _installed = True


def _main(argv: list[str]) -> int:
    """Compile the units named on the command line, or else one per line of stdin, printing
    ``key seconds`` as each is done."""
    reductions = "--no-reductions" not in argv
    keys = [a for a in argv if not a.startswith("--")]
    for key in keys or (line.strip() for line in sys.stdin):
        began = time.perf_counter()
        compile_unit(Unit.from_key(key), reductions=reductions)
        print(f"{key} {time.perf_counter() - began:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
