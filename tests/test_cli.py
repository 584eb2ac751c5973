"""The fastkl command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastkl import cli


def test_demo_small(capsys):
    assert cli.main(["demo", "--rows", "5000", "--cols", "16", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "5,000 x 16 float32" in out
    assert "rows/s" in out and "speedup over numpy" in out
    assert ": OK" in out


def test_demo_checks_against_the_reference(capsys, monkeypatch):
    # A wrong kernel result must fail the demo's check, not pass silently.
    import fastkl

    real = fastkl.kl_div

    def off_by_a_bit(p, q, **kwargs):
        result = real(p, q, **kwargs)
        result *= 1.001
        return result

    monkeypatch.setattr(fastkl, "kl_div", off_by_a_bit)
    assert cli.main(["demo", "--rows", "2000", "--cols", "8", "--repeat", "1"]) == 1
    assert "FAILED" in capsys.readouterr().out


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
