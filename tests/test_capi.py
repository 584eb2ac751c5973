"""The C API: declarations and header, the cfuncs, and libfastkl from C programs."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from reference import random_probs

import fastkl
from fastkl import capi
from fastkl.divergences import REGISTRY, lookup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")

STEMS = tuple(spec.name for spec in REGISTRY if spec.in_capi)
PYTHON_API = {stem: getattr(fastkl, stem) for stem in STEMS}
FORMS = {
    "probs": capi.FASTKL_PROBS,
    "log_probs": capi.FASTKL_LOG_PROBS,
    "logits": capi.FASTKL_LOGITS,
}
CTYPE = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}


# --- declarations and header ------------------------------------------------------------------


def test_committed_header_is_current():
    with open(os.path.join(ROOT, "include", "fastkl.h"), encoding="utf-8") as f:
        committed = f.read()
    assert committed == capi.header(), (
        "include/fastkl.h is out of date: run `fastkl build-capi --header-only --outdir .`"
    )


def test_declarations():
    names = [f.name for f in capi.FUNCTIONS]
    expected = [f"fastkl_{stem}_{t}" for stem in STEMS for t in ("f32", "f64")]
    expected += ["fastkl_strerror", "fastkl_version", "fastkl_init", "fastkl_set_num_threads"]
    assert names == expected
    codes = [code for code, _ in capi.STATUS.values()]
    assert codes[0] == 0 and len(set(codes)) == len(codes)
    assert all(message for _, message in capi.STATUS.values())
    kl = capi.FUNCTIONS[1]
    assert kl.prototype() == (
        "int fastkl_kl_div_f64(const double *p, const double *q, int64_t n, int64_t k, "
        "int64_t ldp, int64_t ldq, int p_form, int q_form, double *out)"
    )


@needs_cc
@pytest.mark.parametrize(
    "compiler, flags",
    [("cc", ["-x", "c", "-std=c99", "-pedantic"]), ("c++", ["-x", "c++", "-std=c++11"])],
)
def test_header_is_self_contained(tmp_path, compiler, flags):
    """The header alone compiles as strict C99 and as C++ (include guard: twice)."""
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler}")
    src = tmp_path / "use.c"
    src.write_text(
        '#include "fastkl.h"\n#include "fastkl.h"\n'
        "int main(void) {\n"
        "    int (*kl)(const double *, const double *, int64_t, int64_t, int64_t, int64_t,\n"
        "              int, int, double *) = fastkl_kl_div_f64;\n"
        "    (void)kl;\n"
        "    return FASTKL_LOGITS != 2 || FASTKL_OK != 0;\n"
        "}\n"
    )
    cmd = [compiler, *flags, "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
    subprocess.run([*cmd, "-I", os.path.join(ROOT, "include"), str(src)], check=True)


# --- the cfuncs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfuncs():
    return capi.cfuncs()


def _ptr(a, dtype):
    return a.ctypes.data_as(ctypes.POINTER(CTYPE[dtype])) if a is not None else None


def _call(fn, stem, dtype, p, q, n, k, ldp, ldq, p_form, q_form, out):
    if not lookup(stem).reads_q:
        return fn.ctypes(_ptr(p, dtype), n, k, ldp, p_form, _ptr(out, dtype))
    return fn.ctypes(
        _ptr(p, dtype), _ptr(q, dtype), n, k, ldp, ldq, p_form, q_form, _ptr(out, dtype)
    )


def _inputs(rng, n, k, form, dtype, rows=None):
    x = random_probs(rng, (rows or n, k)).astype(dtype)
    if form == "log_probs":
        x = np.log(x)
    elif form == "logits":
        x = (np.log(x) + rng.normal(size=(rows or n, 1))).astype(dtype)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize(
    "p_form, q_form",
    [
        ("probs", "probs"),
        ("probs", "logits"),
        ("log_probs", "probs"),
        ("logits", "log_probs"),
        ("logits", "logits"),
    ],
)
@pytest.mark.parametrize("n, k", [(7, 3), (50, 64), (2, 70_000)])
def test_cfunc_equals_python(cfuncs, rng, dtype, stem, p_form, q_form, n, k):
    """Same kernels, same argument types (read-only inputs, int64 forms): the cfunc gives the
    Python API's bits."""
    if not lookup(stem).reads_q and q_form != "probs":
        pytest.skip("reads p only")
    p = _inputs(rng, n, k, p_form, dtype)
    q = _inputs(rng, n, k, q_form, dtype)
    p[0, 0] = 0 if p_form == "probs" else -np.inf  # a zero: the exact path
    out = np.full(n, np.nan, dtype=dtype)
    fn = cfuncs[f"fastkl_{stem}_{np.dtype(dtype).name.replace('loat', '')}"]
    status = _call(fn, stem, dtype, p, q, n, k, k, k, FORMS[p_form], FORMS[q_form], out)
    assert status == capi.STATUS["FASTKL_OK"][0]
    if not lookup(stem).reads_q:
        want = PYTHON_API[stem](p, p_form=p_form)
    else:
        want = PYTHON_API[stem](p, q, p_form=p_form, q_form=q_form)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cfunc_strides_and_single_row(cfuncs, rng, dtype):
    n, k, ld = 40, 5, 9
    buf = random_probs(rng, (n, ld)).astype(dtype)
    p = buf[:, :k]
    q = random_probs(rng, (1, k)).astype(dtype)
    out = np.empty(n, dtype=dtype)
    fn = cfuncs[f"fastkl_kl_div_{'f32' if dtype == np.float32 else 'f64'}"]
    assert _call(fn, "kl_div", dtype, buf, q, n, k, ld, 0, 0, 0, out) == 0
    np.testing.assert_array_equal(out, fastkl.kl_div(p, q[0]))


def _bad_cases():
    ok = {"n": 2, "k": 4, "ldp": 4, "ldq": 4, "p_form": 0, "q_form": 0}
    big = np.iinfo(np.int64).max
    status = {name: code for name, (code, _) in capi.STATUS.items()}
    cases = [
        ("n", -1, "FASTKL_ERR_N"),
        ("n", -(2**62), "FASTKL_ERR_N"),
        ("k", 0, "FASTKL_ERR_K"),
        ("k", -3, "FASTKL_ERR_K"),
        ("ldp", 3, "FASTKL_ERR_STRIDE"),
        ("ldp", 0, "FASTKL_ERR_STRIDE"),
        ("ldq", 3, "FASTKL_ERR_STRIDE"),
        ("ldq", -4, "FASTKL_ERR_STRIDE"),
        ("ldp", big // 2, "FASTKL_ERR_OVERFLOW"),
        ("ldp", big // 8, "FASTKL_ERR_OVERFLOW"),  # the elements fit, their bytes do not
        ("k", big, "FASTKL_ERR_STRIDE"),  # ld < k comes first
        ("p_form", 3, "FASTKL_ERR_FORM"),
        ("p_form", -1, "FASTKL_ERR_FORM"),
        ("q_form", 99, "FASTKL_ERR_FORM"),
    ]
    for key, value, name in cases:
        yield pytest.param({**ok, key: value}, None, status[name], id=f"{key}={value}")
    for missing in ("p", "q", "out"):
        yield pytest.param(ok, missing, status["FASTKL_ERR_NULL"], id=f"null-{missing}")
    yield pytest.param({**ok, "n": 0}, "p", 0, id="n=0-null-ok")
    yield pytest.param({**ok, "ldq": 0}, None, 0, id="ldq=0-ok")


@pytest.mark.parametrize("stem", ["kl_div", "js_div", "entropy"])
@pytest.mark.parametrize("args, null, expected", list(_bad_cases()))
def test_cfunc_bad_arguments(cfuncs, stem, args, null, expected):
    p = np.full(8, 0.25)
    out = np.full(2, -7.0)
    arrays = {"p": p, "q": p, "out": out}
    if null:
        arrays[null] = None
    if stem == "entropy" and (null == "q" or ("ldq" in str(args) and args["ldq"] != 4)):
        pytest.skip("entropy has no q")
    if stem == "entropy" and args["q_form"] != 0:
        pytest.skip("entropy has no q")
    fn = cfuncs[f"fastkl_{stem}_f64"]
    got = _call(fn, stem, np.float64, arrays["p"], arrays["q"], *args.values(), arrays["out"])
    assert got == expected, capi.strerror(got)
    if expected != 0:
        assert np.all(out == -7.0)  # nothing written


def test_cfunc_objects(cfuncs):
    assert sorted(cfuncs) == sorted(f.name for f in capi.FUNCTIONS if f.is_divergence)
    for fn in cfuncs.values():
        assert isinstance(fn.address, int) and fn.address != 0
        assert callable(fn.ctypes)


def test_strerror_messages():
    for name, (code, message) in capi.STATUS.items():
        assert capi.strerror(code) == message, name
    assert capi.strerror(12345) == "unknown fastkl status code"


def test_cfuncs_need_the_jit():
    code = "from fastkl import capi\ncapi.cfuncs()"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "NUMBA_DISABLE_JIT" in run.stderr


# --- libfastkl ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def libfastkl(tmp_path_factory):
    """``fastkl build-capi`` into a fresh prefix, as a user runs it."""
    if CC is None:
        pytest.skip("no C compiler on this machine")
    prefix = tmp_path_factory.mktemp("capi")
    run = _build_capi("--outdir", str(prefix))
    assert run.returncode == 0, run.stderr
    return prefix


def _build_capi(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fastkl.cli", "build-capi", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def _clean_env() -> dict[str, str]:
    """Nothing but a PATH: the library must find its Python environment by itself."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}


def _run(*cmd, timeout: int = 300, env=None, cwd=None) -> subprocess.CompletedProcess:
    """A C program, with the clean environment."""
    cmd = [str(c) for c in cmd]
    env = env or _clean_env()
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _compile(prefix, source, exe, extra=(), rpath=True):
    cmd = [CC, "-std=gnu99", "-O2", "-Wall", "-Wextra", "-Werror", str(source), "-o", str(exe)]
    cmd += [f"-I{prefix}/include", f"-L{prefix}/lib", "-lfastkl"]
    cmd += [f"-Wl,-rpath,{prefix}/lib"] if rpath else []
    subprocess.run([*cmd, *extra], check=True)
    return exe


def test_build_layout(libfastkl):
    lib = libfastkl / "lib" / "libfastkl.so"
    assert lib.exists()
    assert (libfastkl / "include" / "fastkl.h").read_text() == capi.header()
    pc = (libfastkl / "lib" / "pkgconfig" / "fastkl.pc").read_text()
    assert (
        f"prefix={libfastkl}" in pc and "-lfastkl" in pc and f"Version: {fastkl.__version__}" in pc
    )


def test_library_exports_the_header(libfastkl):
    if shutil.which("nm") is None:
        pytest.skip("no nm")
    lib = libfastkl / "lib" / "libfastkl.so"
    nm = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True)
    exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    public = {f.name for f in capi.FUNCTIONS}
    assert public <= exported
    assert {s for s in exported if "fastkl" in s.lower()} - public <= {"PyInit__fastkl_capi"}


@needs_cc
def test_example_program(libfastkl, tmp_path, rng):
    """examples/c/kl_example.c, built with pkg-config as the README shows, agrees with kl_div."""
    exe = tmp_path / "kl_example"
    flags = []
    if shutil.which("pkg-config"):
        env = dict(os.environ, PKG_CONFIG_PATH=str(libfastkl / "lib" / "pkgconfig"))
        pc = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "fastkl"], env=env, capture_output=True, text=True
        )
        assert pc.returncode == 0, pc.stderr
        flags = pc.stdout.split()
    _compile(libfastkl, os.path.join(ROOT, "examples", "c", "kl_example.c"), exe, flags)

    run = _run(exe)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"fastkl {fastkl.__version__}"
    teacher = np.array([[0.1, 0.2, 0.3, 0.4], [0.25] * 4])
    student = np.array([[0.0, 1.0, 2.0, 3.0], [1.0] * 4])
    kl = fastkl.kl_div(teacher, student, q_form="logits")
    js = fastkl.js_div(teacher, [0.25] * 4)
    assert lines[1] == f"KL(teacher || softmax(student)): {kl[0]:.9f} {kl[1]:.9f}"
    assert lines[2] == f"JS(teacher || uniform): {js[0]:.9f} {js[1]:.9f}"
    stride = capi.STATUS["FASTKL_ERR_STRIDE"]
    assert lines[3] == f"entropy with ldp < k: status {stride[0]} ({stride[1]})"

    # without an rpath, the library path alone (LD_LIBRARY_PATH) is enough
    bare = _compile(
        libfastkl, os.path.join(ROOT, "examples", "c", "kl_example.c"), tmp_path / "b", rpath=False
    )
    env = dict(_clean_env(), LD_LIBRARY_PATH=str(libfastkl / "lib"))
    assert _run(bare, env=env).stdout == run.stdout

    for q_rows in (300, 1):
        p = random_probs(rng, (300, 33))
        q = random_probs(rng, (q_rows, 33))
        p[3, :5] = 0.0
        q[0, 7] = 0.0  # p > 0 there: +inf
        p.tofile(tmp_path / "p.bin")
        q.tofile(tmp_path / "q.bin")
        run = _run(exe, tmp_path / "p.bin", tmp_path / "q.bin", 33)
        assert run.returncode == 0, run.stderr
        got = np.array([float(v) for v in run.stdout.split()])
        want = fastkl.kl_div(p, q if q_rows > 1 else q[0])
        np.testing.assert_array_equal(got, want)  # %.17g round-trips a double exactly


@needs_cc
def test_bad_arguments_through_the_library(libfastkl, tmp_path):
    exe = _compile(libfastkl, os.path.join(ROOT, "tests", "c", "check.c"), tmp_path / "check")
    run = _run(exe)
    assert run.returncode == 0, run.stderr
    got = {}
    messages = {}
    for line in run.stdout.splitlines():
        label, rest = line.split(" ", 1)
        if label == "strerror":
            code, message = rest.split(" ", 1)
            messages[int(code)] = message
        else:
            got[label] = rest
    s = {name[len("FASTKL_") :]: str(code) for name, (code, _) in capi.STATUS.items()}
    expected = {
        "ok": s["OK"],
        "null_p": s["ERR_NULL"],
        "null_q": s["ERR_NULL"],
        "null_out": s["ERR_NULL"],
        "null_entropy": s["ERR_NULL"],
        "null_n0": s["OK"],
        "n_negative": s["ERR_N"],
        "k_zero": s["ERR_K"],
        "k_negative": s["ERR_K"],
        "ldp_small": s["ERR_STRIDE"],
        "ldq_small": s["ERR_STRIDE"],
        "ldq_zero": s["OK"],
        "overflow": s["ERR_OVERFLOW"],
        "overflow_bytes": s["ERR_OVERFLOW"],
        "form_p": s["ERR_FORM"],
        "form_q": s["ERR_FORM"],
        "form_entropy": s["ERR_FORM"],
        "threads_negative": s["ERR_THREADS"],
        "threads_huge": s["ERR_THREADS"],
        "threads_one": s["OK"],
        "after_threads_one": s["OK"],
        "threads_all": s["OK"],
        "init_again": s["OK"],
        "version": fastkl.__version__,
    }
    assert {key: got.get(key) for key in expected} == expected
    p = np.array([[0.25] * 4, [0.5, 0.5, 0, 0]])
    assert got["value"] == " ".join(f"{v:.17g}" for v in fastkl.kl_div(p, p))
    assert messages == {code: capi.strerror(code) for code in range(-1, 10)}


@needs_cc
def test_eight_threads(libfastkl, tmp_path):
    """8 pthreads, from the library's first call on: every result equals the call made alone."""
    exe = _compile(
        libfastkl,
        os.path.join(ROOT, "tests", "c", "threads.c"),
        tmp_path / "threads",
        ["-pthread"],
    )
    run = _run(exe, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.match(r"threads ok 8 threads", run.stdout), run.stdout
    assert "workqueue" not in run.stderr  # the thread-safe layer loaded: no serialized calls


@needs_cc
def test_version_mismatch_is_a_status(libfastkl, tmp_path):
    """A library built from another fastkl refuses to start: FASTKL_ERR_INIT, not a crash."""
    # the same library, told it was built from another version (the baked string is patched)
    blob = (libfastkl / "lib" / "libfastkl.so").read_bytes()
    settings = f"'version': '{fastkl.__version__}'".encode()
    assert settings in blob
    other = blob.replace(settings, f"'version': '{'9' * len(fastkl.__version__)}'".encode())
    lib = tmp_path / "lib" / "libfastkl.so"
    lib.parent.mkdir()
    lib.write_bytes(other)
    (tmp_path / "include").mkdir()
    shutil.copy(libfastkl / "include" / "fastkl.h", tmp_path / "include")
    exe = _compile(tmp_path, os.path.join(ROOT, "tests", "c", "check.c"), tmp_path / "check")
    run = _run(exe)
    assert run.returncode == 0
    assert f"ok {capi.STATUS['FASTKL_ERR_INIT'][0]}" in run.stdout
    assert "rebuild it with `fastkl build-capi`" in run.stderr


def test_build_capi_header_only(tmp_path):
    run = _build_capi("--header-only", "--outdir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "include" / "fastkl.h").read_text() == capi.header()
    assert not (tmp_path / "lib").exists()


def test_build_capi_unwritable_outdir(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    run = _build_capi("--header-only", "--outdir", str(target))
    assert run.returncode == 1
    assert run.stderr.startswith("fastkl build-capi: error:") and len(run.stderr.splitlines()) == 1


def _listing(folder) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


@needs_cc
def test_the_library_is_ready_when_built(libfastkl, tmp_path):
    """The build leaves the compiled code beside the library; a fresh process whose
    environment points numba and fastkl elsewhere compiles nothing, writes nothing, says
    nothing (issue 20: a first call recompiled for ten minutes)."""
    cache = libfastkl / "lib" / "fastkl-cache"
    ready = list(cache.rglob("capi.ready"))
    assert len(ready) == 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = _compile(libfastkl, os.path.join(ROOT, "examples", "c", "kl_example.c"), tmp_path / "e")
    before = _listing(cache)
    env = dict(
        _clean_env(),
        NUMBA_CACHE_DIR=str(elsewhere / "numba"),
        FASTKL_CACHE_DIR=str(elsewhere / "fastkl"),
    )
    run = _run(exe, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert _listing(cache) == before
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "e",
        "elsewhere",
    ]


@needs_cc
def test_the_first_call_leaves_the_environment_as_it_was(libfastkl):
    """The library points fastkl's cache at its own for its boot only: a program (here a
    Python one, which shares its environment with the embedded interpreter) sees no change."""
    code = (
        "import ctypes, os, sys; lib = ctypes.CDLL(sys.argv[1]); "
        "assert lib.fastkl_init() == 0; print(os.environ.get('FASTKL_CACHE_DIR'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTKL_CACHE_DIR"}
    lib = libfastkl / "lib" / "libfastkl.so"
    run = subprocess.run(
        [sys.executable, "-c", code, str(lib)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None"


def test_loading_into_a_python_that_touched_the_capsule_type(libfastkl):
    """cffi starts an embedded library's Python behind a spin lock on the capsule type's
    version tag (before Python 3.12), which any attribute lookup on a capsule's type sets
    (importing torch does): ``capi._build.load`` resets it, where a plain ctypes load of the
    library would spin forever at its first call."""
    code = (
        "import ctypes, sys\n"
        "new = ctypes.pythonapi.PyCapsule_New\n"
        "new.restype = ctypes.py_object\n"
        "new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]\n"
        "getattr(type(new(1, None, None)), 'no_such_attribute', None)  # tags the type\n"
        "from fastkl.capi import _build\n"
        "lib = _build.load(sys.argv[1])\n"
        "print(lib.fastkl_kl_div_f64.__name__)\n"
    )
    lib = libfastkl / "lib" / "libfastkl.so"
    run = subprocess.run(
        [sys.executable, "-c", code, str(lib)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "fastkl_kl_div_f64"


def test_code_for_another_cpu_says_so_and_compiles(monkeypatch, tmp_path, capsys):
    """A cache compiled on another kind of CPU: one line on stderr, then a compile (stubbed
    here: the real one takes minutes)."""
    from fastkl.capi import _cfuncs

    marker = tmp_path / "capi.ready"
    marker.write_text(json.dumps([["x86_64-unknown-linux-gnu", "other-cpu", "+sse2"]]))
    monkeypatch.setattr(_cfuncs, "_ready_marker", lambda: str(marker))
    monkeypatch.setattr(_cfuncs, "_loaded", None)

    class Compiled(Exception):
        pass

    def compile_in_child(env=None, what="compile"):
        raise Compiled

    monkeypatch.setattr(_cfuncs, "compile_in_child", compile_in_child)
    with pytest.raises(Compiled):
        _cfuncs.load()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "compiled for another CPU" in err[0] and "once" in err[0]
    # a cache marked for this machine loads without compiling
    marker.write_text(json.dumps([_cfuncs._machine()]))
    assert set(_cfuncs.load()) >= {f.name for f in capi.FUNCTIONS if f.is_divergence}


def test_the_build_shares_its_kernels_without_breaking_an_index(tmp_path):
    """What the build compiled goes into the environment's cache, a kernel's index and data
    files together, and never beside files of the same kernel already there."""
    from fastkl.capi import _build

    source, target = tmp_path / "built", tmp_path / "mine"
    (source / "capi-x").mkdir(parents=True)
    target.mkdir()
    for name in ["a.py311.1.nbc", "a.py311.nbi", "b.py311.1.nbc", "b.py311.nbi", "capi-x/c.nbi"]:
        (source / name).write_text("built")
    (target / "a.py311.2.nbc").write_text("mine")  # kernel a compiled here: its files stay
    assert _build._copy_cache(str(source), str(target), replace=False, capi=False) == 2
    assert sorted(p.name for p in target.iterdir()) == [
        "a.py311.2.nbc",
        "b.py311.1.nbc",
        "b.py311.nbi",
    ]
