"""What a new user meets first (issue 20): the CLI's start, compile notices, ``fastkl warmup``,
``fastkl score``'s report, the demo's data, and the rough edges of the peers' drop-ins."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import fastkl
from fastkl import _warmup, bench, cli, compat


def _save(tmp_path, name, a):
    path = str(tmp_path / name)
    np.save(path, a)
    return path


def _probs(rng, n, k):
    x = rng.random((n, k)) + 0.01
    return x / x.sum(1, keepdims=True)


# --- the command line ------------------------------------------------------------------------


def test_import_and_the_cli_start_without_numba():
    """Ctrl-C at start-up met numba's import: the package now loads its names on first use."""
    code = "import sys, fastkl, fastkl.cli; print('numba' in sys.modules, fastkl.__version__)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", fastkl.__version__]


def test_lazy_names_resolve_and_unknown_ones_raise():
    assert fastkl.kl_div is fastkl.api.kl_div and fastkl.compat is compat
    assert set(fastkl.__all__) <= set(dir(fastkl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastkl.nope  # noqa: B018


def test_interrupt_during_a_command_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "info", interrupted)
    assert cli.main(["info"]) == 130
    err = capsys.readouterr().err
    assert err == "fastkl info: interrupted\n"


def test_score_reports_compile_time_apart(tmp_path, rng, capsys):
    paths = (
        _save(tmp_path, "p.npy", _probs(rng, 20, 6)),
        _save(tmp_path, "q.npy", _probs(rng, 1, 6)),
    )
    out = str(tmp_path / "o.npy")
    assert cli.main(["score", *paths, "-o", out, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["compile_seconds"] >= 0 and doc["seconds"] >= 0 and doc["rows"] == 20
    assert cli.main(["score", *paths, "-o", out]) == 0
    assert "kernel ready in" in capsys.readouterr().out


@pytest.mark.parametrize("quiet", [False, True])
def test_score_reduction_without_output_prints_the_value_alone(tmp_path, rng, capsys, quiet):
    p, q = _probs(rng, 20, 6), _probs(rng, 20, 6)
    paths = _save(tmp_path, "p.npy", p), _save(tmp_path, "q.npy", q)
    argv = ["score", *paths, "--reduction", "mean"] + ["--quiet"] * quiet
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 and float(lines[0]) == float(fastkl.kl_div(p, q, reduction="mean"))
    assert (captured.err == "") == quiet  # the report goes to stderr, unless --quiet


def test_warmup_compiles_the_chosen_units(capsys):
    assert cli.main(["warmup", "entropy", "--dtype", "float64", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "entropy float64 probs:" in out and "entropy float64 log:" in out
    assert "(2/2)" in out and "done in" in out


def test_warmup_bad_name_is_one_line(capsys):
    assert cli.main(["warmup", "kl_divergence"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "kl_divergence" in err


def test_units_cover_every_pair_and_name_js_distance():
    units = _warmup.units(["js_distance", "entropy"], ["float32"])
    labels = sorted(u.label for u in units)
    assert labels == [
        "entropy float32 log",
        "entropy float32 probs",
        "js_div float32 log/log",
        "js_div float32 log/probs",
        "js_div float32 probs/log",
        "js_div float32 probs/probs",
    ]
    assert all(_warmup.Unit.from_key(u.key()) == u for u in units)
    with pytest.raises(ValueError, match="dtypes"):
        _warmup.units(None, ["float16"])


def test_a_slow_compile_warns_once(monkeypatch):
    """A fastkl function that compiles past the threshold warns, the first time only."""
    from numba import njit

    monkeypatch.setattr(_warmup, "NOTICE_AFTER", 0.0)
    monkeypatch.setattr(_warmup, "_warned", False)
    _warmup.notify_slow_compiles()
    seen = []

    def slow(x):
        return x + 1

    slow.__module__ = "fastkl.test_only"
    compiled = njit(slow)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import time

        compiled(1)
        time.sleep(0.2)  # the notice comes from a timer thread
        compiled(1.5)
        time.sleep(0.2)
        seen = [w for w in caught if issubclass(w.category, fastkl.CompileWarning)]
    assert len(seen) == 1 and "fastkl warmup" in str(seen[0].message)


# --- the demo and the benchmark ----------------------------------------------------------------


def test_demo_rows_have_no_zeros():
    """A float32 exponential draw is sometimes exactly 0; the demo's Q rows never hold one."""

    class Zeros:
        def standard_exponential(self, shape, dtype):
            x = np.ones(shape, dtype)
            x[0, 0] = 0.0
            return x

    rows = cli.random_probability_rows(Zeros(), 3, 4)
    assert rows.dtype == np.float32 and np.all(rows > 0)
    np.testing.assert_allclose(rows.sum(1), 1.0, rtol=1e-6)


def test_bench_names_are_scaled_and_targets_only_at_full_size():
    assert bench._scaled("probs f32 1,000,000 x 64", 20_000) == "probs f32 20,000 x 64"
    assert bench._scaled("logits f32 64 x 100,000", 1) == "logits f32 1 x 100,000"
    r = {"targets": {"roofline": 1.25}, "ratio_to_roofline": 2.0, "peers": {}}
    assert bench._verdicts(r) == "roofline <= 1.25: missed"
    assert bench._verdicts({**r, "scaled": True}) == ""


def test_bench_scaled_table_has_no_target_lines(capsys):
    assert cli.main(["bench", "--scale", "0.0005", "--repeat", "1", "--case", "4,000,000"]) == 0
    out = capsys.readouterr().out
    assert "probs f32 2,000 x 4" in out and "4,000,000" not in out and "target" not in out


# --- drop-ins and inputs -------------------------------------------------------------------------


def test_keras_casts_integer_labels_to_the_prediction_dtype():
    got = compat.keras_kl_divergence([[1, 0]], np.array([[0.6, 0.4]], np.float32))
    assert got.dtype == np.float32
    want = compat.keras_kl_divergence(np.array([[1.0, 0.0]], np.float32), [[0.6, 0.4]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    ("pk", "qk", "want"),
    [
        ([-1.0, 2.0], None, -np.inf),
        ([1.0, -3.0], None, -np.inf),
        ([-1.0, 2.0], [1.0, 1.0], np.inf),
        ([1.0, 2.0], [1.0, -2.0], np.inf),
        ([0.0, 2.0], [-1.0, 2.0], np.inf),
        ([np.nan, -1.0, 2.0], None, np.nan),
        ([], None, 0.0),
        ([], [], 0.0),
    ],
)
def test_scipy_entropy_negative_and_empty_as_scipy(pk, qk, want):
    got = compat.scipy_entropy(pk, qk)
    assert np.array_equal(got, want, equal_nan=True)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert np.array_equal(got, scipy_stats.entropy(pk, qk), equal_nan=True)


def test_scipy_entropy_negative_rows_along_an_axis(rng):
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = rng.normal(size=(6, 5)), rng.random((6, 5))
    for axis in (0, 1):
        np.testing.assert_allclose(
            compat.scipy_entropy(x, axis=axis), scipy_stats.entropy(x, axis=axis), rtol=1e-12
        )
        np.testing.assert_allclose(
            compat.scipy_entropy(x, y, axis=axis), scipy_stats.entropy(x, y, axis=axis), rtol=1e-12
        )


def test_length_mismatch_names_the_shapes_as_given(rng):
    with pytest.raises(ValueError, match=r"got p \(4, 15\) and q \(14,\)"):
        fastkl.kl_div(_probs(rng, 4, 15), np.ones(14) / 14)


class _NullableFrame:
    """What numpy sees of a pandas frame of nullable ``Float32`` columns: objects."""

    def __init__(self, values):
        self.values = values
        self.dtypes = [types.SimpleNamespace(numpy_dtype=np.dtype(np.float32))] * values.shape[1]

    def __array__(self, dtype=None, copy=None):
        return self.values.astype(object)

    def to_numpy(self, dtype, na_value):
        return np.where(np.isnan(self.values), na_value, self.values).astype(dtype)


def test_nullable_float_columns_read_as_floats(rng):
    p = _probs(rng, 3, 4).astype(np.float32)
    p[1, 2] = np.nan
    got = fastkl.kl_div(_NullableFrame(p), p)
    assert got.dtype == np.float32 and np.isnan(got[1]) and got[0] == 0.0 and got[2] == 0.0


def test_pandas_nullable_frame(rng):
    pd = pytest.importorskip("pandas")
    p = _probs(rng, 4, 5)
    frame = pd.DataFrame(p).astype("Float64")
    frame.iloc[2, 1] = pd.NA
    want = fastkl.kl_div(frame.to_numpy(float, na_value=np.nan), p)
    np.testing.assert_array_equal(fastkl.kl_div(frame, p), want)


def test_dask_messages_name_the_function_and_the_given_shapes(rng):
    fd = pytest.importorskip("fastkl.dask")
    p = _probs(rng, 4, 15)
    with pytest.raises(ValueError, match=r"q \(14,\)"):
        fd.kl_div(p, np.ones(14) / 14)
    with pytest.raises(TypeError, match=r"^kl_div\(\) got an unexpected keyword argument 'bogus'"):
        fd.kl_div(p, p, bogus=1)
