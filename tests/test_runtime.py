"""The numba runtime around the kernels: threads, concurrency, the cache, the GIL."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from reference import assert_close, kl_ref, random_probs

import fastkl
from fastkl import _config

ROOT = Path(fastkl.__file__).resolve().parent


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_threading_layer_is_safe_for_concurrent_callers():
    # numba's fallback layer, workqueue, aborts the process when two threads call a kernel at
    # once. The tbb dependency (linux x86_64) is there so that it never comes to that: where
    # TBB is installed, the kernels must run on a thread-safe layer, without the lock.
    if os.environ.get("NUMBA_THREADING_LAYER"):
        pytest.skip("NUMBA_THREADING_LAYER chooses the layer")
    if not _installed("tbb"):
        pytest.skip("TBB is not installed (fastkl depends on it on linux x86_64 only)")
    layer = _config.threading_layer()
    if sys.platform.startswith("linux"):
        # fastkl preloads pip's TBB from the environment's lib/, where numba does not look:
        # OpenMP here would mean the preload failed
        assert layer == "tbb", f"TBB is installed, yet the kernels run on {layer}"
    else:
        assert layer in ("tbb", "omp")
    assert _config._kernel_lock is None


def test_workqueue_layer_serializes_concurrent_callers():
    # Where no thread-safe layer loads, workqueue runs the kernels: every call takes the lock
    # (a call waits while it is held), and concurrent callers get the serial bits instead of
    # workqueue's abort.
    code = """
        import threading
        import numpy as np
        import fastkl
        from fastkl import _config

        rng = np.random.default_rng(7)
        p, q = rng.random((2, 20_000, 32))
        p /= p.sum(axis=1, keepdims=True)
        expected = fastkl.kl_div(p, q, normalize=True)
        assert _config.threading_layer() == "workqueue", _config.threading_layer()
        assert _config._kernel_lock is not None

        done = threading.Event()
        def one_call():
            fastkl.kl_div(p, q, normalize=True)
            done.set()
        waiting = threading.Thread(target=one_call)
        with _config._kernel_lock:
            waiting.start()
            assert not done.wait(2.0), "a kernel call ran without taking the lock"
        waiting.join()
        assert done.is_set()

        results, errors = [], []
        barrier = threading.Barrier(4)
        def work():
            try:
                barrier.wait()
                results.extend(fastkl.kl_div(p, q, normalize=True) for _ in range(10))
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(results) == 40
        assert all(np.array_equal(r, expected) for r in results)
        print("serialized")
    """
    run = _run_python(code, env=dict(os.environ, NUMBA_THREADING_LAYER="workqueue"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "serialized"


def test_four_threads_at_once(rng):
    # Concurrent callers from several Python threads get the bits of serial calls, on the
    # layer fastkl chose (TBB where installed; the workqueue case is above).
    p = random_probs(rng, (20_000, 32))
    q = random_probs(rng, (20_000, 32))
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    expected = fastkl.kl_div(p, q)
    expected32 = fastkl.kl_div(p32, q32)
    assert_close(expected, kl_ref(p, q), rtol=1e-12, atol=1e-15)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(tid: int) -> None:
        try:
            barrier.wait()
            for i in range(25):
                if (tid + i) % 2:
                    assert np.array_equal(fastkl.kl_div(p, q), expected)
                else:
                    out = np.empty(len(p), np.float32)
                    fastkl.kl_div(p32, q32, out=out)
                    assert np.array_equal(out, expected32)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _run_python(
    code: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    # cwd matters: `python -c` puts it first on sys.path, ahead of PYTHONPATH
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=os.environ if env is None else env,
        timeout=300,
        cwd=cwd,
    )


def test_read_only_install_still_imports_and_runs(tmp_path):
    # A copy of the package in a read-only directory, with no NUMBA_CACHE_DIR: the cache falls
    # back to a writable directory, and a second process loads from it.
    site = tmp_path / "site"
    shutil.copytree(ROOT, site / "fastkl", ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    # chmod does not stop root; a file where __pycache__/ would go stops everyone.
    (site / "fastkl" / "__pycache__").write_text("")
    for path in [site / "fastkl", site]:
        path.chmod(0o555)
    try:
        code = f"""
            import numpy as np, fastkl
            from fastkl import _config
            assert fastkl.__file__.startswith({str(site)!r}), fastkl.__file__
            p = np.array([[0.1, 0.9]]); q = np.array([0.4, 0.6])
            print(repr(float(fastkl.kl_div(p, q)[0])))
            print(_config.cache_dir())
        """
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        env.update(PYTHONPATH=str(site), HOME=str(home), XDG_CACHE_HOME=str(home / "c"))
        first = _run_python(code, env, cwd=home)
        assert first.returncode == 0, first.stderr
        value, cache = first.stdout.split()
        assert abs(float(value) - 0.226289161185359) < 1e-15
        assert not cache.startswith(str(site))
        assert os.listdir(cache), "nothing was cached"
        second = _run_python(code, env, cwd=home)
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout
    finally:
        for path in [site, site / "fastkl"]:
            path.chmod(0o755)


@pytest.mark.parametrize("module", ["_math.py", "_simd.py", "_cpu.py", "_cpu_family.py"])
def test_cache_key_covers_inlined_modules(monkeypatch, tmp_path, module):
    # numba alone keys a kernel on its own file; ours hashes every module whose code a kernel
    # inlines (the scalar terms, log and exp), so editing one never leaves a stale kernel.
    copy = tmp_path / "fastkl"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_config, "_PACKAGE_DIR", str(copy))
    before = _config._source_fingerprint()
    path = copy / module
    path.write_text(path.read_text() + "\n# changed\n")
    assert _config._source_fingerprint() != before
    # the pure Python glue does not key the kernels
    after = _config._source_fingerprint()
    for glue in ("api.py", "cli.py", "capi/_build.py"):
        (copy / glue).write_text((copy / glue).read_text() + "\n# changed\n")
    assert _config._source_fingerprint() == after


@pytest.mark.parametrize("module", ["bench.py", "pairwise.py", "capi/_cfuncs.py"])
def test_cache_key_of_modules_with_their_own_kernels(monkeypatch, tmp_path, module):
    # A public module's kernels (and the C API's cfuncs) are keyed on their own source too,
    # while editing it leaves every other kernel's cache alone.
    copy = tmp_path / "fastkl"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_config, "_PACKAGE_DIR", str(copy))
    path = copy / module

    def stamps():
        if module.startswith("capi/"):
            own = _config._source_fingerprint(_config._capi_sources())
        else:
            own = _config._FastklCacheLocator(test_kernels_release_the_gil, str(path))._own
        return _config._source_fingerprint(), own

    core, own = stamps()
    path.write_text(path.read_text() + "\n# changed\n")
    assert stamps() == (core, stamps()[1]) and stamps()[1] != own


def test_kernels_release_the_gil(rng):
    # While one thread scores a large input, another Python thread keeps running.
    p = random_probs(rng, (400_000, 64)).astype(np.float32)
    q = random_probs(rng, (400_000, 64)).astype(np.float32)
    fastkl.kl_div(p[:10], q[:10])
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    sys_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        t = threading.Thread(target=count)
        t.start()
        ticks_before = ticks
        for _ in range(3):
            fastkl.kl_div(p, q)
        ticks_during = ticks - ticks_before
        done.set()
        t.join()
    finally:
        sys.setswitchinterval(sys_interval)
    assert ticks_during > 0
