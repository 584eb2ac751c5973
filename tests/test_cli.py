"""The fastkl command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastkl import cli
from fastkl.divergences import REGISTRY


def test_demo_small(capsys, tmp_path):
    argv = ["demo", "--rows", "5000", "--cols", "16", "--repeat", "2", "--workdir", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "5,000 x 16 float32" in out
    assert "fastkl score P.npy Q.npy -o kl.npy" in out
    assert "rows/s" in out and "speedup over numpy" in out
    assert ": OK" in out
    # The demo's files are what it says: P and Q as .npy, and kl.npy scored from them.
    import fastkl

    p, q = np.load(tmp_path / "P.npy"), np.load(tmp_path / "Q.npy")
    assert p.shape == q.shape == (5000, 16) and p.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "kl.npy"), fastkl.kl_div(p, q))


def test_demo_cleans_up_its_temporary_files(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert cli.main(["demo", "--rows", "1000", "--cols", "8", "--repeat", "1"]) == 0
    assert os.listdir(tmp_path) == []


def test_demo_checks_against_the_reference(capsys, monkeypatch):
    # A wrong kernel result must fail the demo's check, not pass silently.
    from fastkl import score

    real = score.DIVERGENCES["kl_div"]

    def off_by_a_bit(p, q, **kwargs):
        result = real(p, q, **kwargs)
        result *= 1.001
        return result

    monkeypatch.setitem(score.DIVERGENCES, "kl_div", off_by_a_bit)
    assert cli.main(["demo", "--rows", "2000", "--cols", "8", "--repeat", "1"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_info_text_and_json(capsys):
    import json

    import numba

    import fastkl

    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"fastkl                : {fastkl.__version__}" in text or fastkl.__version__ in text
    assert "numba" in text and "CUDA" in text and "build-capi" in text
    assert cli.main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["versions"]["numba"] == numba.__version__
    assert doc["threading"]["num_threads"] == numba.get_num_threads()


def test_console_script_and_bad_option():
    run = subprocess.run(
        [sys.executable, "-m", "fastkl.cli", "demo", "--rows", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "expected a positive integer" in run.stderr
    assert "Traceback" not in run.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("fastkl ")


def test_bench_json_smoke(capsys):
    import json

    from fastkl import bench

    assert cli.main(["bench", "--scale", "0.0005", "--repeat", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [r["case"] for r in doc["results"]]
    assert len(names) == 6 and any("one q row" in n for n in names)
    for r in doc["results"]:
        assert r["fastkl_s"] > 0 and r["roofline_s"] > 0 and r["ratio_to_roofline"] > 0
        assert "numpy" in r["peers"]
    (pair,) = doc["pairwise"]
    assert pair["fastkl_s"] > 0 and pair["dot_s"] > 0 and pair["speedup_over_loop"] > 0
    family = {r["case"].split()[0] for r in doc["family"]}
    # one function per set of the family's kernels, from the registry
    expected = {s.name for s in REGISTRY if not s.terms.own_kernels and s.name != "js_distance"}
    assert family == expected and {"js_div", "entropy", "tv_distance"} <= family
    for r in doc["family"]:
        assert r["fastkl_s"] > 0 and r["kl_div_s"] > 0 and r["ratio_to_kl_div"] > 0
    # the names carry the rows as run (--scale): 2,000,000 x 0.0005
    assert [r["case"] for r in doc["score"]] == [
        bench._scaled(c.name, 1_000) for c in bench.SCORE_CASES
    ]
    for r in doc["score"]:
        assert r["score_s"] > 0 and r["in_memory_s"] > 0 and r["ratio_to_in_memory"] > 0


def test_bench_table_and_bad_scale(capsys):
    assert cli.main(["bench", "--scale", "0.0005", "--repeat", "1", "--case", "4,000,000"]) == 0
    out = capsys.readouterr().out
    assert "probs f32 2,000 x 4" in out and "roofline" in out  # the rows as run
    assert cli.main(["bench", "--scale", "2"]) == 1
    assert "--scale" in capsys.readouterr().err
