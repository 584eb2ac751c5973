"""libfastkl fuzzed through ctypes: ``tests/capi_fuzz.py`` in a subprocess, on a fresh build.

The script makes random calls (NULL, poisoned and exactly sized pointers; negative, zero, huge
and int64-overflowing n, k, ldp, ldq; unknown forms; fastkl_set_num_threads and
fastkl_strerror with random ints) and checks each against the header's rules and, for valid
calls, against fastkl's Python functions bit for bit. A crash is a negative return code here.

    pytest tests/test_capi_fuzz.py               # 20,000 calls (CI)
    pytest -m slow tests/test_capi_fuzz.py       # 200,000 calls
    python tests/capi_fuzz.py LIB --calls N --seed S [--verbose]   # by hand; --verbose
                                                 # prints each call first (replay a crash)

Valgrind (memcheck), by hand, not in CI: ``tests/c/fuzz.c`` makes random calls with exactly
sized malloc'd buffers; memcheck instruments the JIT-compiled kernels too, so a read past a
buffer is an "Invalid read". Valgrind 3.19 decodes no AVX-512, so the kernels are compiled
for haswell (AVX2) into a cache of their own, once, natively (numba keys its cache on the CPU
name and features: set both, or everything compiles again under valgrind, for hours)::

    export NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma,+bmi,+bmi2,+popcnt,+f16c
    export NUMBA_CACHE_DIR=/tmp/fastkl-vg/cache
    fastkl build-capi --outdir /tmp/fastkl-vg
    cc -std=gnu99 -O1 -g tests/c/fuzz.c -I/tmp/fastkl-vg/include -L/tmp/fastkl-vg/lib \\
        -Wl,-rpath,/tmp/fastkl-vg/lib -lfastkl -lm -o /tmp/fastkl-vg/fuzz
    PYTHONMALLOC=malloc valgrind --error-exitcode=99 --num-callers=40 --error-limit=no \\
        /tmp/fastkl-vg/fuzz 100000 3       # calls, seed[, thread cap]: ~10 min

The program prints ``fuzz: calls=... mismatches=0`` (statuses against its own oracle) and
valgrind its ERROR SUMMARY. Expected noise, all from fastkl_init (the embedded interpreter
starting): CPython's "uninitialised value" reports (no suppression file) and glibc's dlopen
(``is_dst``: an 8-byte strncmp read). Errors in JIT code have no symbols and garbage stacks
(no frame pointers): place them with ``fprintf(stderr, ...)`` markers around the calls and
``--log-fd=2``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from test_capi import CC, ROOT, _build_capi

SCRIPT = os.path.join(ROOT, "tests", "capi_fuzz.py")
SUMMARY = re.compile(
    r"^capi fuzz: calls=(?P<calls>\d+) ok=(?P<ok>\d+) errors=(?P<errors>\{.*?\}) "
    r"mismatches=(?P<mismatches>\d+) seconds=(?P<seconds>[\d.]+) .*strerror=(?P<strerror>\d+)",
    re.MULTILINE,
)
ERRORS = {"ERR_NULL", "ERR_N", "ERR_K", "ERR_STRIDE", "ERR_OVERFLOW", "ERR_FORM", "ERR_THREADS"}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """``fastkl build-capi`` into a fresh prefix (seconds once numba's cache is warm)."""
    if CC is None:
        pytest.skip("no C compiler on this machine")
    prefix = tmp_path_factory.mktemp("capi-fuzz")
    run = _build_capi("--outdir", str(prefix))
    assert run.returncode == 0, run.stderr
    return prefix / "lib" / "libfastkl.so"


def _fuzz(library, calls: int, seed: int, timeout: int) -> dict:
    cmd = [sys.executable, SCRIPT, str(library), "--calls", str(calls), "--seed", str(seed)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    replay = f"replay: {' '.join(cmd)} --verbose"
    if run.returncode < 0:
        pytest.fail(
            f"the fuzzer crashed: {signal.Signals(-run.returncode).name}; {replay}\n"
            f"{run.stdout[-2000:]}{run.stderr[-4000:]}"
        )
    m = SUMMARY.search(run.stdout)
    assert m is not None, run.stdout[-2000:] + run.stderr[-4000:]
    print(m.group(0))
    assert int(m["mismatches"]) == 0 and run.returncode == 0, (
        f"{m.group(0)}\n{run.stderr[-6000:]}\n{replay}"
    )
    errors = json.loads(m["errors"])
    summary = {
        "calls": int(m["calls"]),
        "ok": int(m["ok"]),
        "errors": errors,
        "strerror": int(m["strerror"]),
    }
    assert summary["calls"] == calls
    assert summary["ok"] + sum(errors.values()) + summary["strerror"] == calls
    assert set(errors) <= ERRORS, errors  # never ERR_INIT, never an undocumented code
    return summary


def test_fuzz(library):
    """20,000 random calls: every status as predicted, every valid call Python's bits."""
    summary = _fuzz(library, 20_000, seed=20261122, timeout=300)
    assert set(summary["errors"]) == ERRORS  # each error status was reached
    assert summary["ok"] > 5_000


@pytest.mark.slow
def test_fuzz_long(library):
    """200,000 random calls (pytest -m slow)."""
    summary = _fuzz(library, 200_000, seed=7, timeout=1800)
    assert set(summary["errors"]) == ERRORS
