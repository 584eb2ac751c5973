"""fastkl.info: the environment report behind ``fastkl info [--json]``."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import llvmlite
import numba
import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

import fastkl
from fastkl import _config, info

KEYS = {
    "versions": {
        "fastkl",
        "numba",
        "llvmlite",
        "llvm",
        "numpy",
        "python",
        "python_implementation",
        *info.PEERS,
    },
    "platform": {
        "system",
        "release",
        "machine",
        "cpu",
        "cpu_model",
        "logical_cpus",
        "usable_cpus",
        "python_executable",
    },
    "threading": {
        "layer",
        "requested",
        "num_threads",
        "numba_num_threads",
        "serialized",
        "error",
    },
    "simd": {
        "target_cpu",
        "features",
        "vector_bits",
        "float32_lanes",
        "float64_lanes",
        "overrides",
    },
    "cache": {"numba_cache_dir", "kernels", "capi"},
    "cuda": {
        "available",
        "simulator",
        "device",
        "device_count",
        "compute_capability",
        "driver_version",
        "runtime_version",
        "numba_cuda",
        "reason",
    },
    "capi": {
        "status",
        "ready",
        "marker",
        "cffi",
        "compiler",
        "compiler_path",
        "libpython",
        "build_command",
        "error",
    },
    "environment": set(),
}
DIR_KEYS = {"path", "exists", "writable", "index_files", "size_bytes"}


@pytest.fixture(scope="module")
def report() -> dict:
    return info.collect()


def _collect_in_child(tmp_path, **env: str) -> dict:
    """collect() in a fresh process (its own environment variables), plus what it imported."""
    code = (
        "import json, sys\n"
        "from fastkl.info import collect\n"
        "report = collect()\n"
        "peers = ('torch', 'dask', 'pyarrow')\n"
        "report['imported'] = sorted(m for m in peers if m in sys.modules)\n"
        "print(json.dumps(report))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # nothing beside the script shadows a module
        env=dict(os.environ, PYTHONWARNINGS="ignore", **env),
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_every_section_and_key(report):
    assert set(report) == set(KEYS)
    for section, keys in KEYS.items():
        assert keys <= set(report[section]), section
    for name in ("kernels", "capi"):
        assert DIR_KEYS <= set(report["cache"][name])


def test_json_round_trip(report):
    assert json.loads(json.dumps(report)) == report


def test_versions_match_the_imported_modules(report):
    versions = report["versions"]
    assert versions["fastkl"] == fastkl.__version__
    assert versions["numba"] == numba.__version__
    assert versions["llvmlite"] == llvmlite.__version__
    assert versions["numpy"] == np.__version__
    assert versions["python"] == platform.python_version()
    assert versions["python_implementation"] == platform.python_implementation()
    for name in info.PEERS:
        try:
            expected = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            expected = None
        assert versions[name] == expected, name
    scipy = pytest.importorskip("scipy")
    assert versions["scipy"] == scipy.__version__


def test_threading_layer_is_numbas(report):
    threading = report["threading"]
    assert threading["error"] is None
    assert threading["layer"] == numba.threading_layer()
    assert threading["num_threads"] == numba.get_num_threads()
    assert threading["numba_num_threads"] == numba.config.NUMBA_NUM_THREADS
    # what the report says is the lock's state, in this process and under workqueue
    assert threading["serialized"] is (_config._kernel_lock is not None)
    code = (
        "import json; from fastkl import _config, info; t = info._threading(); "
        "print(json.dumps([t['layer'], t['serialized'], _config._kernel_lock is not None]))"
    )
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == ["workqueue", True, True]


def test_cache_dirs_are_fastkls(report):
    kernels, capi = report["cache"]["kernels"], report["cache"]["capi"]
    assert kernels["path"] == _config.cache_dir()
    assert capi["path"] == _config.cache_dir(capi=True)
    for stats in (kernels, capi):
        assert stats["exists"] and stats["writable"]
        # Counted at collect() time; kernels compiled since by other processes may add files.
        assert stats["index_files"] <= len(glob.glob(os.path.join(stats["path"], "*.nbi")))


def test_simd_reads_numbas_cpu_features(monkeypatch):
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+sse2,+avx,+avx2,-avx512f")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+sse2,+avx,+avx2,-avx512f")
    simd = info.collect()["simd"]
    assert simd["features"] == ["sse2", "avx", "avx2"]
    assert (simd["vector_bits"], simd["float32_lanes"], simd["float64_lanes"]) == (256, 8, 4)
    assert simd["overrides"] == {"NUMBA_CPU_FEATURES": "+sse2,+avx,+avx2,-avx512f"}

    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx512f,+avx512bw,+neon")
    simd = info.collect()["simd"]
    assert (simd["vector_bits"], simd["float32_lanes"]) == (512, 16)

    monkeypatch.setattr(numba.config, "CPU_FEATURES", "-sse2")  # no vector unit: scalar code
    simd = info.collect()["simd"]
    assert (simd["features"], simd["vector_bits"], simd["float32_lanes"]) == ([], None, 1)


def test_cuda_without_a_gpu_gives_a_reason(report):
    cuda = report["cuda"]
    assert cuda["simulator"] is False
    if cuda["available"]:  # a machine with a GPU
        assert isinstance(cuda["device"], str) and cuda["device_count"] >= 1
    else:
        assert isinstance(cuda["reason"], str) and cuda["reason"]
        assert cuda["device"] is None


def test_cuda_that_fails_to_import_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # import_module raises on this
    cuda = info.collect()["cuda"]
    assert cuda["available"] is False
    assert "numba.cuda" in cuda["reason"]


def test_cuda_simulator_in_a_child(tmp_path):
    cuda = _collect_in_child(tmp_path, NUMBA_ENABLE_CUDASIM="1")["cuda"]
    assert cuda["simulator"] is True
    assert cuda["available"] is True
    assert "simulator" in cuda["device"]


def _dispatchers() -> dict[int, Dispatcher]:
    """Every numba dispatcher fastkl's modules hold, in module globals or in their tables."""
    found: dict[int, Dispatcher] = {}

    def visit(obj, depth):
        if isinstance(obj, Dispatcher):
            found[id(obj)] = obj
        elif depth < 3 and isinstance(obj, dict | list | tuple):
            for item in obj.values() if isinstance(obj, dict) else obj:
                visit(item, depth + 1)

    for name, module in list(sys.modules.items()):
        if module is not None and (name == "fastkl" or name.startswith("fastkl.")):
            visit(dict(vars(module)), 0)
    return found


def test_collect_compiles_nothing_here():
    dispatchers = _dispatchers()
    assert dispatchers  # the search sees fastkl's kernels
    before = {key: len(d.overloads) for key, d in dispatchers.items()}
    info.collect()
    assert {key: len(d.overloads) for key, d in dispatchers.items()} == before


def test_collect_with_an_empty_cache_writes_no_kernel(tmp_path):
    cache = tmp_path / "numba-cache"
    report = _collect_in_child(tmp_path, NUMBA_CACHE_DIR=str(cache))
    assert report["cache"]["numba_cache_dir"] == str(cache)
    kernels, capi = report["cache"]["kernels"], report["cache"]["capi"]
    assert kernels["path"].startswith(str(cache))
    assert capi["path"].startswith(kernels["path"])
    assert kernels["index_files"] == capi["index_files"] == 0
    assert report["capi"]["ready"] is False
    written = [p for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert written == []
    assert report["environment"]["NUMBA_CACHE_DIR"] == str(cache)
    assert report["imported"] == []  # peers are read from their metadata, never imported


def test_capi_status(report):
    from fastkl.capi import _cfuncs

    capi = report["capi"]
    assert capi["ready"] == os.path.exists(_cfuncs._ready_marker())
    assert capi["build_command"] == "fastkl build-capi --outdir DIR"
    assert capi["cffi"] == report["versions"]["cffi"]
    assert capi["status"].split(":")[0] in ("ready", "buildable", "cannot build")


def test_capi_without_a_compiler(monkeypatch):
    monkeypatch.setenv("CC", "no-such-cc-fastkl -O2")
    capi = info.collect()["capi"]
    assert (capi["compiler"], capi["compiler_path"]) == ("no-such-cc-fastkl", None)
    assert capi["status"].startswith("cannot build:")
    assert "no-such-cc-fastkl" in capi["status"]


def test_format_text(report):
    text = info.format_text(report)
    assert text.startswith(f"fastkl {fastkl.__version__} on ")
    for title in ("Versions", "Platform", "Threading", "SIMD", "Numba cache", "CUDA", "C API"):
        assert f"\n{title}" in text
    lines = text.splitlines()
    for name, version in report["versions"].items():
        assert any(line.split() == [name, ":", version or "-"] for line in lines), name
    assert f"layer             : {report['threading']['layer']}" in text
    # The same text from the JSON, as a bug report's attachment would be read back.
    assert info.format_text(json.loads(json.dumps(report))) == text


def test_format_text_values():
    text = info.format_text(
        {
            "cache": {
                "kernels": {"path": "/c", "exists": True, "size_bytes": 3 * 2**20},
                "capi": {},
            },
            "cuda": {"available": False, "reason": None, "features": ["a", "b"]},
        }
    )
    assert text.splitlines() == [
        "fastkl ?",
        "",
        "Numba cache",
        "  kernels",
        "    path       : /c",
        "    exists     : yes",
        "    size_bytes : 3.0 MiB",
        "  capi    : -",
        "",
        "CUDA",
        "  available : no",
        "  features  : a, b",
    ]
