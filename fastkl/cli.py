"""The ``fastkl`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def random_probability_rows(
    rng: np.random.Generator, n: int, k: int, dtype: type = np.float32
) -> np.ndarray:
    """``n`` random probability rows of length ``k`` (flat Dirichlet draws), built in place."""
    x = rng.standard_exponential((n, k), dtype=dtype)
    x /= x.sum(axis=1, keepdims=True)
    return x


def _reference_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL in float64 with numpy only: the obviously-correct reference."""
    p64 = p.astype(np.float64)
    q64 = q.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p64 > 0, p64 * np.log(p64 / q64), 0.0)
    return terms.sum(axis=1)


def demo(args: argparse.Namespace) -> int:
    from . import _config, kl_div
    from .bench import median_seconds

    n, k = args.rows, args.cols
    rng = np.random.default_rng(args.seed)
    print(f"fastkl {__version__} demo: {n:,} x {k} float32 probability rows vs a reference set")
    start = time.perf_counter()
    p = random_probability_rows(rng, n, k)
    q = random_probability_rows(rng, n, k)
    gib = (p.nbytes + q.nbytes) / 2**30
    print(f"  generated P and Q ({gib:.2f} GiB) in {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    kl_div(p[:2], q[:2])  # load (or compile) the kernel once, outside the timings
    layer = _config.threading_layer()
    import numba

    print(
        f"  kernel ready in {time.perf_counter() - start:.2f} s "
        f"({numba.get_num_threads()} threads, {layer} layer)"
    )

    out = np.empty(n, np.float32)
    t_fast = median_seconds(lambda: kl_div(p, q, out=out), args.repeat, warm=False)

    def numpy_expression() -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (p * np.log(p / q)).sum(axis=1)

    t_numpy = median_seconds(numpy_expression, max(1, min(3, args.repeat)), warm=False)
    gbs = (p.nbytes + q.nbytes) / t_fast / 1e9
    print(
        f"  fastkl.kl_div : {t_fast * 1e3:9.1f} ms  {n / t_fast:14,.0f} rows/s  {gbs:6.1f} GB/s"
        f"  (median of {args.repeat})"
    )
    print(f"  numpy         : {t_numpy * 1e3:9.1f} ms  {n / t_numpy:14,.0f} rows/s")
    print(f"  speedup over numpy's (p * np.log(p / q)).sum(1): {t_numpy / t_fast:.1f}x")

    m = min(args.check_rows, n)
    idx = np.sort(rng.choice(n, size=m, replace=False))
    ref = _reference_kl(p[idx], q[idx])
    got = out[idx].astype(np.float64)
    # A zero in a generated q row makes that row's KL +inf in both: equal is agreement.
    same = got == ref
    finite = np.isfinite(ref) & ~same
    err = np.abs(got[finite] - ref[finite])
    ok = bool(np.all(same | np.isfinite(ref)) and np.all(err <= 1e-5 * np.abs(ref[finite]) + 1e-7))
    rel = float(np.max(err / np.abs(ref[finite]), initial=0.0))
    verdict = "OK" if ok else "FAILED"
    print(
        f"  check: {m:,} sampled rows against a float64 numpy reference: "
        f"max relative error {rel:.2e} (tolerance 1e-5 + 1e-7 absolute), "
        f"{int(np.sum(np.isinf(ref)))} infinite rows agree: {verdict}"
    )
    return 0 if ok else 1


def bench(args: argparse.Namespace) -> int:
    from . import bench as _bench

    if not 0.0 < args.scale <= 1.0:
        raise ValueError(f"--scale: expected a number in (0, 1], got {args.scale}")
    return _bench.main(
        repeat=args.repeat,
        scale=args.scale,
        peers=not args.no_peers,
        as_json=args.json,
        only=args.case,
        capi=args.capi,
    )


def build_capi(args: argparse.Namespace) -> int:
    from . import capi

    paths = capi.build(args.outdir, header_only=args.header_only, verbose=args.verbose)
    for what in ("library", "header", "pkgconfig"):
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
    parser = argparse.ArgumentParser(
        prog="fastkl", description="Kullback-Leibler divergence, row by row, at memory speed."
    )
    parser.add_argument("--version", action="version", version=f"fastkl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_demo = sub.add_parser(
        "demo",
        help="score 2,000,000 x 128 random float32 rows; print rows/s and the speedup over numpy",
    )
    p_demo.add_argument("--rows", type=_positive_int, default=2_000_000, help="rows (2,000,000)")
    p_demo.add_argument("--cols", type=_positive_int, default=128, help="row length k (128)")
    p_demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p_demo.add_argument("--repeat", type=_positive_int, default=5, help="timed runs (5)")
    p_demo.add_argument(
        "--check-rows", type=_positive_int, default=10_000, help="rows checked (10,000)"
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
        "--capi",
        action="store_true",
        help="also build libfastkl in a temp dir and time it against the Python API",
    )
    p_bench.set_defaults(func=bench)

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
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("fastkl: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"fastkl {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
