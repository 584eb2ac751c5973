"""The ``fastkl`` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .divergences import REGISTRY, lookup

#: ``fastkl score --divergence``: the divergences of two sides, by their public names
_SCORED = tuple(spec.cli_name for spec in REGISTRY if spec.cli_name is not None)


def _divergence(text: str) -> str:
    """``--divergence``'s value as the function's public name (aliases accepted)."""
    try:
        name = lookup(text).cli_name
    except ValueError:
        name = None
    if name is None:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(_SCORED)}, got {text!r}")
    return name


if TYPE_CHECKING:
    import numpy as np


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanups run as for Ctrl-C (a BaseException,
    like KeyboardInterrupt, so that no `except Exception` on the way can swallow it)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def random_probability_rows(
    rng: np.random.Generator, n: int, k: int, dtype: type | None = None
) -> np.ndarray:
    """``n`` random probability rows of length ``k`` (flat Dirichlet draws), built in place,
    every value > 0: a float32 exponential draw is exactly 0 about once in 2**24 values, and
    one zero in Q makes that row's KL +inf, and the demo's mean with it."""
    import numpy as np

    dtype = dtype or np.float32
    x = rng.standard_exponential((n, k), dtype=dtype)
    np.maximum(x, np.finfo(dtype).smallest_normal, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def _reference_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL in float64 with numpy only: the obviously-correct reference."""
    import numpy as np

    p64 = p.astype(np.float64)
    q64 = q.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p64 > 0, p64 * np.log(p64 / q64), 0.0)
    return terms.sum(axis=1)


def _write_random_npy(path: str, rng: np.random.Generator, n: int, k: int) -> None:
    """An ``n`` x ``k`` float32 .npy file of random probability rows, written in chunks."""
    import numpy as np

    from .files import NpySink

    sink = NpySink(path, (n, k), np.dtype(np.float32), "demo")
    try:
        step = max(1, (8 << 20) // (4 * k))
        for first in range(0, n, step):
            sink.write(random_probability_rows(rng, min(step, n - first), k))
        sink.commit()
    except BaseException:
        sink.abort()
        raise


def demo(args: argparse.Namespace) -> int:
    import numpy as np

    from . import _config, kl_div
    from .bench import median_seconds, numpy_score_files
    from .score import default_chunk_rows, score_files

    n, k = args.rows, args.cols
    rng = np.random.default_rng(args.seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="fastkl-demo-")
    os.makedirs(workdir, exist_ok=True)
    p_path, q_path, out_path = (os.path.join(workdir, f) for f in ("P.npy", "Q.npy", "kl.npy"))
    need = 2 * n * k * 4 + n * 4
    free = shutil.disk_usage(workdir).free
    if free < need * 1.05:
        raise ValueError(
            f"--workdir: the demo writes {need / 2**30:.2f} GiB to {workdir}, which has "
            f"{free / 2**30:.2f} GiB free; use --workdir or fewer --rows"
        )
    print(f"fastkl {__version__} demo: {n:,} x {k} float32 probability rows vs a reference set")
    try:
        start = time.perf_counter()
        _write_random_npy(p_path, rng, n, k)
        _write_random_npy(q_path, rng, n, k)
        print(
            f"  wrote P.npy and Q.npy ({need / 2**30:.2f} GiB) to {workdir} in "
            f"{time.perf_counter() - start:.2f} s"
        )
        start = time.perf_counter()
        kl_div(np.load(p_path, mmap_mode="r")[:2], np.load(q_path, mmap_mode="r")[:2])
        import numba

        print(
            f"  kernel ready in {time.perf_counter() - start:.2f} s "
            f"({numba.get_num_threads()} threads, {_config.threading_layer()} layer)"
        )
        runs = [score_files(p_path, q_path, out_path) for _ in range(args.repeat)]
        summary = sorted(runs, key=lambda s: s.seconds)[len(runs) // 2]
        t_fast = summary.seconds
        step = default_chunk_rows(k, 4, mapped=True)
        values = np.empty(n, np.float32)
        t_numpy = median_seconds(
            lambda: numpy_score_files(p_path, q_path, step, values),
            max(1, min(3, args.repeat)),
            warm=False,
        )
        gbs = need / t_fast / 1e9
        print(f"  fastkl score P.npy Q.npy -o kl.npy   (median of {args.repeat})")
        print(
            f"    {t_fast * 1e3:9.1f} ms  {n / t_fast:14,.0f} rows/s  {gbs:6.1f} GB/s read  "
            f"min {summary.min:.4g}  mean {summary.mean:.4g}  max {summary.max:.4g}  "
            f"inf {summary.inf_count}  NaN {summary.nan_count}"
        )
        print(
            f"  numpy, same files and chunks: {t_numpy * 1e3:9.1f} ms  {n / t_numpy:14,.0f} rows/s"
        )
        print(f"  speedup over numpy's (p * np.log(p / q)).sum(1): {t_numpy / t_fast:.1f}x")

        p = np.load(p_path, mmap_mode="r")
        q = np.load(q_path, mmap_mode="r")
        written = np.load(out_path, mmap_mode="r")
        m = min(args.check_rows, n)
        idx = np.sort(rng.choice(n, size=m, replace=False))
        ref = _reference_kl(p[idx], q[idx])
        got = np.asarray(written[idx], np.float64)
        del p, q, written
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    # A zero in a generated q row makes that row's KL +inf in both: equal is agreement.
    same = got == ref
    finite = np.isfinite(ref) & ~same
    err = np.abs(got[finite] - ref[finite])
    ok = bool(np.all(same | np.isfinite(ref)) and np.all(err <= 1e-5 * np.abs(ref[finite]) + 1e-7))
    rel = float(np.max(err / np.abs(ref[finite]), initial=0.0))
    verdict = "OK" if ok else "FAILED"
    print(
        f"  check: {m:,} sampled rows of kl.npy against a float64 numpy reference: "
        f"max relative error {rel:.2e} (tolerance 1e-5 + 1e-7 absolute), "
        f"{int(np.sum(np.isinf(ref)))} infinite rows agree: {verdict}"
    )
    return 0 if ok else 1


def score(args: argparse.Namespace) -> int:
    from .score import score_files

    if args.threads is not None:
        _set_threads(args.threads)
    bar: Any = None

    def start(p: Any, q: Any) -> None:
        nonlocal bar
        if not args.quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # the progress extra: no bar without it
                return
            bar = tqdm(
                total=p.n, unit="rows", unit_scale=True, dynamic_ncols=True, file=sys.stderr
            )

    try:
        summary = score_files(
            args.p,
            args.q,
            args.output,
            divergence=args.divergence,
            p_form=args.p_form,
            q_form=args.q_form,
            base=args.base,
            eps=args.eps,
            reduction=args.reduction,
            chunk_rows=args.chunk_rows,
            device=args.device,
            progress=lambda m: bar.update(m) if bar is not None else None,
            start=start,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(summary.to_json())
        return 0
    s = summary
    # A reduction without -o: its value is the result, alone on stdout; the rest is a report.
    value_only = s.value is not None and s.output is None
    report = sys.stderr if value_only else sys.stdout
    if not args.quiet:
        print(
            f"{s.divergence}: {s.rows:,} rows in {s.seconds:.3f} s ({s.rows_per_s:,.0f} rows/s; "
            f"kernel ready in {s.compile_seconds:.2f} s before); {s.dtype}",
            file=report,
        )
        if s.min is not None:
            print(
                f"  min {s.min:.6g}  mean {s.mean:.6g}  max {s.max:.6g}  "
                f"inf {s.inf_count}  NaN {s.nan_count}",
                file=report,
            )
        if s.value is not None and not value_only:
            print(f"  {s.reduction}: {s.value:.17g}", file=report)
        if s.output is not None:
            print(f"  wrote {s.output}", file=report)
    if value_only:
        print(f"{s.value:.17g}")
    return 0


def _set_threads(threads: int) -> None:
    import numba

    from . import _config

    _config.ensure_threads()
    most = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= most:
        raise ValueError(
            f"--threads: expected 1 to {most} (the threads numba started with), got {threads}"
        )
    numba.set_num_threads(threads)


def info(args: argparse.Namespace) -> int:
    from .info import collect, format_text

    report = collect()
    print(json.dumps(report) if args.json else format_text(report))
    return 0


def bench(args: argparse.Namespace) -> int:
    from . import bench as _bench

    if not 0.0 < args.scale <= 1.0:
        raise ValueError(f"--scale: expected a number in (0, 1], got {args.scale}")
    options = {
        "repeat": args.repeat,
        "scale": args.scale,
        "peers": not args.no_peers,
        "as_json": args.json,
        "only": args.case,
    }
    if args.device == "cuda":
        from . import _cuda_bench

        return _cuda_bench.main(**options)
    return _bench.main(**options, capi=args.capi)


def warmup(args: argparse.Namespace) -> int:
    from . import _warmup

    selected = _warmup.units(args.functions or None, args.dtype and [args.dtype])
    jobs = min(args.jobs or os.cpu_count() or 1, len(selected))
    if not args.quiet:
        print(f"fastkl warmup: compiling {len(selected)} sets of kernels in {jobs} processes")

    def report(label: str, seconds: float, done: int, total: int) -> None:
        if not args.quiet:
            print(f"  {label}: {seconds:.1f} s ({done}/{total})", flush=True)

    seconds = _warmup.warmup(selected, jobs=jobs, report=report)
    if not args.quiet:
        from . import _config

        print(f"done in {seconds:.1f} s; the kernels are cached in {_config.cache_dir()}")
    return 0


def build_capi(args: argparse.Namespace) -> int:
    from . import capi

    paths = capi.build(
        args.outdir,
        header_only=args.header_only,
        verbose=args.verbose,
        log=lambda line: print(line, flush=True),
    )
    for what in ("library", "header", "pkgconfig", "cache"):
        if what in paths:
            print(f"{what}: {paths[what]}")
    if "library" in paths:
        prefix = os.path.abspath(args.outdir)
        print(
            f"compile a program with: cc prog.c -I{prefix}/include -L{prefix}/lib "
            f"-Wl,-rpath,{prefix}/lib -lfastkl   (or: pkg-config --cflags --libs fastkl, with "
            f"PKG_CONFIG_PATH={prefix}/lib/pkgconfig)"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastkl", description="Kullback-Leibler divergence, row by row, at memory speed."
    )
    parser.add_argument("--version", action="version", version=f"fastkl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_score = sub.add_parser(
        "score",
        help="score every row of the file P against Q (its rows, or one reference row)",
        description=(
            "Score every row of P against the matching row of Q (or Q's single row) and write "
            "one value per row to OUT. P and Q: .npy (memory-mapped), FILE.npz:NAME, "
            "Parquet or Arrow files (a list column, FILE.parquet:COLUMN, or numeric columns). "
            "OUT: .npy, .parquet or .arrow, written atomically."
        ),
    )
    p_score.add_argument("p", metavar="P", help="rows P: .npy, FILE.npz[:NAME], Parquet, Arrow")
    p_score.add_argument("q", metavar="Q", help="rows Q, as many as P, or one reference row")
    p_score.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output .npy, .parquet or .arrow (required unless --reduction sum or mean)",
    )
    forms = ("probs", "log_probs", "logits")
    p_score.add_argument("--p-form", choices=forms, default="probs", help="how P is given")
    p_score.add_argument("--q-form", choices=forms, default="probs", help="how Q is given")
    p_score.add_argument(
        "--divergence",
        type=_divergence,
        default="kl_div",
        metavar="NAME",
        help=f"{', '.join(_SCORED)} (default kl_div; kl, js and sym still work)",
    )
    p_score.add_argument("--base", type=float, default=None, help="log base (default: nats)")
    p_score.add_argument("--eps", type=float, default=None, help="clip probabilities to [eps, 1]")
    p_score.add_argument(
        "--reduction",
        choices=("none", "sum", "mean"),
        default="none",
        help="none: a value per row (default); sum or mean: one value",
    )
    p_score.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=None,
        help="rows per chunk (256 MiB of .npy P, 16 MiB of other P; at most 1,048,576)",
    )
    p_score.add_argument("--threads", type=_positive_int, default=None, help="threads to use")
    p_score.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu or cuda")
    p_score.add_argument("--json", action="store_true", help="print one JSON summary line")
    p_score.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p_score.set_defaults(func=score)

    p_info = sub.add_parser(
        "info",
        help="versions, threading, SIMD, cache, CUDA and C library status (for bug reports)",
    )
    p_info.add_argument("--json", action="store_true", help="one JSON document")
    p_info.set_defaults(func=info)

    p_demo = sub.add_parser(
        "demo",
        help="write 2,000,000 x 128 random float32 rows to P.npy and Q.npy, fastkl score them; "
        "print rows/s and the speedup over numpy",
    )
    p_demo.add_argument("--rows", type=_positive_int, default=2_000_000, help="rows (2,000,000)")
    p_demo.add_argument("--cols", type=_positive_int, default=128, help="row length k (128)")
    p_demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p_demo.add_argument("--repeat", type=_positive_int, default=5, help="timed runs (5)")
    p_demo.add_argument(
        "--check-rows", type=_positive_int, default=10_000, help="rows checked (10,000)"
    )
    p_demo.add_argument(
        "--workdir", default=None, help="keep the files in this directory (default: a temp dir)"
    )
    p_demo.set_defaults(func=demo)

    p_bench = sub.add_parser(
        "bench",
        help="time fastkl against the read roofline, numpy, scipy and torch (if installed)",
    )
    p_bench.add_argument("--repeat", type=_positive_int, default=5, help="timed runs (5)")
    p_bench.add_argument(
        "--scale", type=float, default=1.0, help="fraction of each case's rows (1.0)"
    )
    p_bench.add_argument("--case", default=None, help="only cases whose name contains this")
    p_bench.add_argument("--no-peers", action="store_true", help="skip numpy, scipy and torch")
    p_bench.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p_bench.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (the default) or cuda: the GPU cases against copies and torch",
    )
    p_bench.add_argument(
        "--capi",
        action="store_true",
        help="also build libfastkl in a temp dir and time it against the Python API",
    )
    p_bench.set_defaults(func=bench)

    p_warm = sub.add_parser(
        "warmup",
        help="compile kernels ahead of their first call (for container images and CI)",
        description=(
            "Compile fastkl's kernels into its cache (see `fastkl info`) in parallel processes, "
            "so that no later call compiles: all of them, or the FUNCTIONs named, for both "
            "dtypes or --dtype."
        ),
    )
    p_warm.add_argument(
        "functions",
        nargs="*",
        metavar="FUNCTION",
        help=f"{', '.join(spec.name for spec in REGISTRY)}, validate, bernoulli_kl, "
        "gaussian_kl, pairwise_kl (default: all)",
    )
    p_warm.add_argument("--dtype", choices=("float32", "float64"), default=None, help="one dtype")
    p_warm.add_argument("--jobs", type=_positive_int, default=None, help="processes (cores)")
    p_warm.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p_warm.set_defaults(func=warmup)

    p_capi = sub.add_parser(
        "build-capi",
        help="build the C library: DIR/lib/libfastkl.so, DIR/include/fastkl.h, DIR/lib/pkgconfig",
    )
    p_capi.add_argument("--outdir", required=True, help="install prefix DIR (created if needed)")
    p_capi.add_argument(
        "--header-only", action="store_true", help="write only DIR/include/fastkl.h"
    )
    p_capi.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    p_capi.set_defaults(func=build_capi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    where = f"fastkl {args.command}"
    unfinished = "; no output was written" if args.command in ("score", "demo") else ""
    previous = None
    if threading_main():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{where}: interrupted{unfinished}", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{where}: terminated (SIGTERM){unfinished}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (MemoryError, OSError, ValueError, TypeError, RuntimeError) as exc:
        message = str(exc) if not isinstance(exc, MemoryError) else "out of memory"
        if isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        print(f"{where}: error: {message}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
