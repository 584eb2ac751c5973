"""``fastkl score``: files in, values out, against the in-memory functions."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import resource
import signal
import struct
import subprocess
import sys
import termios
import time
import zipfile

import numpy as np
import pytest

import fastkl
from fastkl import cli
from fastkl.score import DIVERGENCES, score_files

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ipc = pytest.importorskip("pyarrow.ipc")

FORMS = ("probs", "log_probs", "logits")


def rows(rng, n, k, dtype=np.float32, form="probs"):
    x = rng.dirichlet(np.ones(k), n).astype(dtype)
    if form == "log_probs":
        return np.log(x)
    if form == "logits":
        return (np.log(x) + rng.normal(size=(n, 1))).astype(dtype)
    return x


def save(tmp_path, name, array):
    path = str(tmp_path / name)
    np.save(path, array)
    return path


def run_cli(*argv, cwd=None, env=None, **kwargs):
    """``fastkl ARGV`` in a subprocess: (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "fastkl.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
        **kwargs,
    )
    return done.returncode, done.stdout, done.stderr


def leftovers(folder):
    """Temporary output files left in ``folder``."""
    return [f for f in os.listdir(folder) if f.endswith(".part")]


# --- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("divergence", sorted(DIVERGENCES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_rows_equal_the_function(tmp_path, rng, divergence, dtype):
    p, q = rows(rng, 300, 24, dtype), rows(rng, 300, 24, dtype)
    p[5, :3] = 0.0  # zeros take the exact path; the file path must not change that
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", q)
    expected = DIVERGENCES[divergence](p, q)
    for chunk in (None, 1, 7, 299):
        out = str(tmp_path / f"out-{chunk}.npy")
        summary = score_files(*paths, out, divergence=divergence, chunk_rows=chunk)
        got = np.load(out)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)
        assert summary.rows == 300 and summary.output == out
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("p_form", FORMS)
@pytest.mark.parametrize("q_form", FORMS)
def test_forms_base_eps_and_one_reference_row(tmp_path, rng, p_form, q_form):
    p = rows(rng, 50, 10, np.float32, p_form)
    q = rows(rng, 1, 10, np.float64, q_form)
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", q[0])
    out = str(tmp_path / "out.npy")
    options = {"p_form": p_form, "q_form": q_form, "base": 2.0}
    if p_form == q_form == "probs":
        options["eps"] = 1e-7
    score_files(*paths, out, chunk_rows=8, **options)
    got = np.load(out)
    assert got.dtype == np.float64  # float32 P, float64 Q: float64, as the function
    np.testing.assert_array_equal(got, fastkl.kl_div(p, q[0], **options))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_equal_the_function_bit_for_bit_for_any_chunking(
    tmp_path, rng, reduction, dtype
):
    # 9,000 rows: two whole summation blocks of 4,096 and a tail, cut differently by each chunk.
    p, q = rows(rng, 9000, 8, dtype), rows(rng, 9000, 8, dtype)
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", q)
    expected = fastkl.kl_div(p, q, reduction=reduction)
    for chunk in (None, 1000, 4096, 4097, 8999):
        s = score_files(*paths, reduction=reduction, chunk_rows=chunk)
        assert s.value == float(expected), chunk
    out = str(tmp_path / "value.npy")
    score_files(*paths, out, reduction=reduction, chunk_rows=333)
    value = np.load(out)
    assert value.shape == () and value.dtype == dtype and value == expected


@pytest.fixture
def capture_json(capsys):
    def read():
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1
        return json.loads(out[0])

    return read


def test_json_summary(tmp_path, rng, capture_json):
    p, q = rows(rng, 10, 4, np.float64), rows(rng, 10, 4, np.float64)
    q[2, 0] = 0.0  # p > 0 where q = 0: +inf
    p[3, 1] = np.nan  # a NaN row
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", q)
    out = str(tmp_path / "o.npy")
    assert cli.main(["score", *paths, "-o", out, "--json", "--chunk-rows", "3"]) == 0
    doc = capture_json()
    values = np.load(out)
    ok = values[~np.isnan(values) & ~np.isinf(values)]
    assert doc["rows"] == 10 and doc["inf_count"] == 1 and doc["nan_count"] == 1
    assert doc["min"] == float(ok.min()) and doc["max"] == "inf" and doc["mean"] == "inf"
    assert doc["output"] == out
    # the summary's fields are present and consistent (their values are timings: not checked)
    assert {"seconds", "rows_per_s"} <= doc.keys()
    assert doc["divergence"] == "kl_div" and doc["reduction"] == "none" and doc["value"] is None

    q[2, 0] = 0.5
    np.save(paths[1], q)
    assert cli.main(["score", *paths, "-o", out, "--json"]) == 0
    doc = capture_json()
    values = np.load(out)
    assert doc["mean"] == pytest.approx(float(np.nanmean(values)), rel=1e-12)
    assert doc["max"] == float(np.nanmax(values))


def test_empty_input(tmp_path, capture_json):
    paths = save(tmp_path, "p.npy", np.empty((0, 5))), save(tmp_path, "q.npy", np.ones(5) / 5)
    out = str(tmp_path / "o.npy")
    assert cli.main(["score", *paths, "-o", out, "--json"]) == 0
    doc = capture_json()
    assert doc["rows"] == 0 and doc["min"] is None and doc["mean"] is None
    assert np.load(out).shape == (0,)
    assert cli.main(["score", *paths, "--reduction", "mean", "--json"]) == 0
    assert capture_json()["value"] == "nan"


def test_layouts_fortran_big_endian_float16(tmp_path, rng):
    p, q = rows(rng, 40, 6, np.float64), rows(rng, 40, 6, np.float64)
    cases = {
        "fortran": (np.asfortranarray(p), q),
        "big-endian": (p.astype(">f8"), q.astype(">f4")),
        "float16": (p.astype(np.float16), q.astype(np.float16)),
    }
    for name, (a, b) in cases.items():
        paths = save(tmp_path, f"p-{name}.npy", a), save(tmp_path, f"q-{name}.npy", b)
        out = str(tmp_path / f"o-{name}.npy")
        score_files(*paths, out, chunk_rows=9)
        np.testing.assert_array_equal(np.load(out), fastkl.kl_div(a, b), err_msg=name)


# --- .npz, Parquet and Arrow ------------------------------------------------------------------


def test_npz_members_stored_and_compressed(tmp_path, rng):
    p, q = rows(rng, 100, 12), rows(rng, 100, 12)
    expected = fastkl.kl_div(p, q)
    np.savez(tmp_path / "stored.npz", p=p, q=q)
    np.savez_compressed(tmp_path / "packed.npz", p=p, q=q)
    np.savez_compressed(tmp_path / "single.npz", q[:1])
    for archive in ("stored.npz", "packed.npz"):
        a = str(tmp_path / archive)
        out = str(tmp_path / "o.npy")
        score_files(f"{a}:p", f"{a}:q", out, chunk_rows=13)
        np.testing.assert_array_equal(np.load(out), expected)
    score_files(f"{tmp_path / 'packed.npz'}:p", str(tmp_path / "single.npz"), out)
    np.testing.assert_array_equal(np.load(out), fastkl.kl_div(p, q[0]))


def test_parquet_and_arrow_inputs_and_outputs(tmp_path, rng):
    p, q = rows(rng, 500, 6), rows(rng, 500, 6, np.float64)
    expected = fastkl.kl_div(p, q)
    # P as a list column in small row groups (batches that do not line up with the chunks),
    # Q as one numeric column per component, and as a fixed-size list in an Arrow file.
    pq.write_table(
        pa.table({"id": np.arange(500), "probs": list(p)}),
        tmp_path / "p.parquet",
        row_group_size=77,
    )
    pq.write_table(pa.table({f"c{j}": q[:, j] for j in range(6)}), tmp_path / "q.parquet")
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(q.reshape(-1)), 6)
    with ipc.new_file(str(tmp_path / "q.arrow"), pa.schema([("q", fixed.type)])) as w:
        for first in range(0, 500, 120):
            w.write_batch(pa.record_batch([fixed[first : first + 120]], names=["q"]))
    P = str(tmp_path / "p.parquet")
    for q_spec in ("q.parquet", "q.arrow", "q.arrow:q"):
        for out_name, column in (("o.parquet", "kl_div"), ("o.arrow:score", "score")):
            score_files(P, str(tmp_path / q_spec), str(tmp_path / out_name), chunk_rows=64)
            path = str(tmp_path / out_name.split(":")[0])
            if path.endswith(".parquet"):
                table = pq.read_table(path)
            else:
                table = ipc.open_file(path).read_all()
            assert table.column_names == [column]
            np.testing.assert_array_equal(table[column].to_numpy(), expected)


def test_parquet_errors(tmp_path, rng):
    p = rows(rng, 20, 4)
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"a": list(p), "b": list(p)}), two)
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"a": np.arange(20), "b": np.arange(20)}), ints)
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"a": [[0.5, 0.5]] * 30 + [[1.0]]}), ragged, row_group_size=7)
    good = save(tmp_path, "q.npy", p)
    with pytest.raises(ValueError, match=r"P: .*two.parquet has 2 list columns \(a, b\)"):
        score_files(str(two), good, str(tmp_path / "o.npy"))
    with pytest.raises(TypeError, match=r"P: column 'a' of .*ints.parquet is int64"):
        score_files(str(ints), good, str(tmp_path / "o.npy"))
    with pytest.raises(ValueError, match=r"P: .* has no column 'c'"):
        score_files(f"{two}:c", good, str(tmp_path / "o.npy"))
    # A bad row found after chunks were written: still no output file.
    q2 = save(tmp_path, "q2.npy", np.full(2, 0.5))
    with pytest.raises(ValueError, match=r"row 30 of .*ragged.parquet has 1 values; .* k=2"):
        score_files(str(ragged), q2, str(tmp_path / "late.npy"), chunk_rows=4)
    assert not (tmp_path / "late.npy").exists() and leftovers(tmp_path) == []


# --- errors: one line, non-zero exit, no output -----------------------------------------------


def _bad_files(tmp_path, rng):
    p, q = rows(rng, 30, 5), rows(rng, 30, 5)
    good_p, good_q = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", q)
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(open(good_p, "rb").read()[:-40])
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage" + b"\0" * 64)
    text = tmp_path / "text.csv"
    text.write_text("0.5,0.5\n")
    broken_zip = tmp_path / "broken.npz"
    np.savez_compressed(broken_zip, p=p)
    broken_zip.write_bytes(broken_zip.read_bytes()[:60])
    return {
        "good_p": good_p,
        "good_q": good_q,
        "ints": save(tmp_path, "ints.npy", np.ones((30, 5), np.int64)),
        "k6": save(tmp_path, "k6.npy", rows(rng, 30, 6)),
        "rows29": save(tmp_path, "rows29.npy", q[:29]),
        "cube": save(tmp_path, "cube.npy", np.ones((2, 3, 5))),
        "truncated": str(truncated),
        "corrupt": str(corrupt),
        "text": str(text),
        "broken_zip": str(broken_zip),
    }


ERROR_CASES = [
    # (argv built from the files, the message's expected fragment)
    (["missing.npy", "{good_q}"], "P: no such file: missing.npy"),
    (["{good_p}", "{truncated}"], "Q: {truncated} is truncated"),
    (["{corrupt}", "{good_q}"], "P: {corrupt} is not a valid .npy file"),
    (["{text}", "{good_q}"], "is not a .npy, .npz, Parquet or Arrow file"),
    (["{broken_zip}:p", "{good_q}"], "is not a readable .npz archive"),
    (["{ints}", "{good_q}"], "P: {ints} holds int64 values; expected float16, float32"),
    (["{good_p}", "{k6}"], "Q: rows of {k6} have k=6 values but rows of {good_p} have k=5"),
    (["{good_p}", "{rows29}"], "Q: {rows29} has 29 rows; expected 30"),
    (["{cube}", "{good_q}"], "expected rows of shape (n, k) or one row (k,)"),
    (["{good_p}", "{good_q}", "--base", "1"], "base: expected a finite number > 0 and != 1"),
    (["{good_p}", "{good_q}", "--divergence", "hellinger", "--base", "2"], "it takes no base"),
    (["{good_p}", "{good_q}", "--eps", "2"], "eps: expected None or a float in (0, 1)"),
    (["{good_p}", "{good_q}", "--threads", "999"], "--threads: expected 1 to"),
]


@pytest.mark.parametrize(("argv", "fragment"), ERROR_CASES)
def test_errors_are_one_line_without_output(tmp_path, rng, capsys, argv, fragment):
    files = _bad_files(tmp_path, rng)
    out = str(tmp_path / "out.npy")
    argv = [a.format(**files) for a in argv]
    code = cli.main(["score", *argv, "-o", out])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("fastkl score: error: ")
    assert fragment.format(**files) in err
    assert not os.path.exists(out) and leftovers(tmp_path) == []


def test_output_errors(tmp_path, rng, capsys):
    files = _bad_files(tmp_path, rng)
    cases = [
        ([str(tmp_path / "no" / "such" / "dir.npy")], "OUT: cannot write"),
        ([str(tmp_path / "out.csv")], "OUT: expected a path ending in .npy, .parquet"),
        ([str(tmp_path)], "is a directory"),
        ([files["good_p"]], "is the input P; choose another path"),
        ([], "out: an output path is required"),
    ]
    for out_argv, fragment in cases:
        argv = ["score", files["good_p"], files["good_q"]]
        code = cli.main([*argv, *(["-o", *out_argv] if out_argv else [])])
        err = capsys.readouterr().err
        assert code == 1 and fragment in err and err.count("\n") == 1, (out_argv, err)
    np.testing.assert_array_equal(np.load(files["good_p"]).shape, (30, 5))  # input intact
    assert leftovers(tmp_path) == []


def test_unknown_option_value_is_one_line(tmp_path):
    code, out, err = run_cli("score", "p.npy", "q.npy", "-o", "o.npy", "--divergence", "xx")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--divergence: expected one of kl_div, js_div" in err and "got 'xx'" in err


def test_full_disk_leaves_no_output(tmp_path, rng):
    # A file-size limit stands in for a full disk: writes fail with EFBIG as with ENOSPC.
    p = rows(rng, 20_000, 16)
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", p)
    out = tmp_path / "o.npy"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    code, _, err = run_cli("score", *paths, "-o", str(out), preexec_fn=limit)
    assert code == 1 and "OUT: writing" in err and "failed" in err and err.count("\n") == 1
    assert not out.exists() and leftovers(tmp_path) == []


def _tmpfs_allowed() -> bool:
    try:
        run = subprocess.run(
            ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


@pytest.mark.skipif(not _tmpfs_allowed(), reason="needs `unshare --mount` and tmpfs (root)")
@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_really_full_disk_leaves_no_output(tmp_path, rng, suffix):
    """A real full disk: a 64 KiB tmpfs, mounted in a private mount namespace (nothing leaks
    to the machine), that the output does not fit in (ENOSPC)."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    p = rows(rng, 30_000, 8)
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", p[::-1].copy())
    disk = tmp_path / "disk"
    disk.mkdir()
    score = [sys.executable, "-m", "fastkl.cli", "score", *paths, "-o", f"{disk}/kl{suffix}"]
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {disk} && "
        f'{{ {" ".join(score)}; echo "exit $?"; ls -A {disk}; }}'
    )
    run = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    err = run.stderr.strip()
    assert run.stdout.splitlines() == ["exit 1"], (run.stdout, err)  # nothing left on the disk
    assert err.count("\n") == 0 and "No space left on device" in err, err
    assert err.startswith("fastkl score: error: OUT: writing"), err


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(2, 130, "interrupted"), (15, 143, "SIGTERM")]
)
def test_signals_leave_no_output(tmp_path, rng, signum, code, word):
    p = rows(rng, 1_000_000, 4)  # a run of several seconds: the signal lands mid-run
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", p[0])
    out = tmp_path / "o.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastkl.cli", "score", *paths, "-o", str(out), "--chunk-rows", "1"],
        # a shell's background job (CI run with &) ignores SIGINT, and so would the child
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert leftovers(tmp_path), "the run never started writing"
    # well into the run: a SIGINT sent 0.2 s after the output appeared was lost (the run
    # finished with 0), which is open (README Roadmap); this test covers mid-run signals
    time.sleep(1.0)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert word in err and "no output was written" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_progress_bar_on_a_terminal_and_quiet(tmp_path, rng):
    p = rows(rng, 5000, 4)
    paths = save(tmp_path, "p.npy", p), save(tmp_path, "q.npy", p)
    leader, follower = pty.openpty()
    # A terminal 100 columns wide (a fresh pty has none, and tqdm draws nothing in 0 columns).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fastkl.cli", "score", *paths, "-o", str(tmp_path / "o.npy")],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=300,
        )
        os.close(follower)
        err = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"rows/s" in err and b"5.00k/5.00k" in err  # tqdm's bar: rows done, rate
    code, out, err_text = run_cli("score", *paths, "-o", str(tmp_path / "o.npy"), "--quiet")
    assert code == 0 and out == "" and err_text == ""  # not a terminal, and quiet


# --- memory -----------------------------------------------------------------------------------


def _peak_anon(argv, env=None):
    """Peak anonymous memory (RssAnon, MiB) of ``fastkl ARGV``, sampled every 2 ms."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastkl.cli", *argv], stdout=subprocess.DEVNULL, env=env
    )
    peak = 0
    status = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    assert proc.returncode == 0
    return peak / 1024


def write_rows_file(path, n, k, seed):
    """A float32 .npy file of ``n`` random probability rows, written in chunks."""
    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, k))
    for first in range(0, n, 65536):
        block = rng.random((min(65536, n - first), k), np.float32) + 0.01
        arr[first : first + block.shape[0]] = block / block.sum(1, keepdims=True)
    arr.flush()
    del arr


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_stays_bounded_by_a_chunk(tmp_path):
    # 2 x 128 MiB of input: a whole-file copy would add 128 MiB or more of anonymous memory.
    n, k = 524_288, 64
    write_rows_file(tmp_path / "p.npy", n, k, 1)
    write_rows_file(tmp_path / "q.npy", n, k, 2)
    small = [str(tmp_path / "p.npy") + "x", str(tmp_path / "q.npy") + "x"]
    write_rows_file(small[0], 1000, k, 3)
    write_rows_file(small[1], 1000, k, 4)
    base = _peak_anon(["score", *small, "-o", str(tmp_path / "s.npy")])
    big = _peak_anon(
        ["score", str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), "-o", str(tmp_path / "o.npy")]
    )
    assert big - base < 48, (base, big)  # a chunk of output staging (2 MiB here) at most
    assert np.load(tmp_path / "o.npy", mmap_mode="r").shape == (n,)


@pytest.mark.slow
def test_memory_for_a_pair_of_one_gib_files(tmp_path):
    """The issue's figure: a pair of 1 GiB .npy files in under 512 MiB of anonymous memory."""
    n, k = 4_194_304, 64
    write_rows_file(tmp_path / "p.npy", n, k, 1)
    write_rows_file(tmp_path / "q.npy", n, k, 2)
    peak = _peak_anon(
        ["score", str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), "-o", str(tmp_path / "o.npy")]
    )
    print(f"peak anonymous memory scoring 2 x 1 GiB: {peak:.0f} MiB")
    assert peak < 512


def test_zip_member_listing(tmp_path, rng):
    # An archive with several members and no name given says which there are.
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as z:
        for name in ("x", "y"):
            with z.open(f"{name}.npy", "w") as f:
                np.save(f, rows(rng, 3, 2))
    with pytest.raises(ValueError, match=r"holds 2 arrays \(x, y\); name one as"):
        score_files(str(tmp_path / "a.npz"), str(tmp_path / "a.npz:y"), str(tmp_path / "o.npy"))
