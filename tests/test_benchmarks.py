"""Every asv benchmark runs (on tiny data): the suite cannot rot between benchmark runs."""

from __future__ import annotations

import importlib
import inspect
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark_modules():
    return sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setenv("FASTKL_BENCH_SCALE", "0.0001")
    monkeypatch.syspath_prepend(str(ROOT))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("module", _benchmark_modules())
def test_benchmarks_run(tiny, module):
    mod = importlib.import_module(f"benchmarks.{module}")
    classes = [
        c for _, c in inspect.getmembers(mod, inspect.isclass) if c.__module__ == mod.__name__
    ]
    ran = skipped = 0
    for cls in classes:
        params = getattr(cls, "params", ())
        if params and not isinstance(params[0], list):
            params = (params,)
        # asv passes setup_cache's result first to setup and to every benchmark
        cached = (cls().setup_cache(),) if hasattr(cls, "setup_cache") else ()
        for combo in itertools.product(*params) if params else [()]:
            combo = (*cached, *combo)
            bench = cls()
            try:
                if hasattr(bench, "setup"):
                    bench.setup(*combo)
            except NotImplementedError:
                skipped += 1
                continue
            for name in dir(bench):
                if name.startswith(("time_", "peakmem_", "track_", "mem_")):
                    getattr(bench, name)(*combo)
                    ran += 1
    if module == "bench_cuda" and ran == 0 and skipped:
        pytest.skip("the GPU suite skips without a CUDA GPU")
    assert ran > 0


@pytest.mark.skipif(shutil.which("asv") is None, reason="asv is not installed")
def test_asv_discovers_the_suite():
    run = subprocess.run(
        ["asv", "check", "--python=same"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
