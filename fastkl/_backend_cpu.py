"""The CPU backend: the kernels of ``_cpu`` (KL) and ``_cpu_family`` for a parsed call.

``_driver`` prepares the rows; this module only picks the kernel a call's spec and form pair
need and calls it over the rows it is given (see ``_driver`` for the interface).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _cpu, _cpu_family, _cpu_train
from ._prepare import Call

KernelCall = Callable[[list[tuple[np.ndarray, int]], int, np.ndarray], None]


def kernel_call(call: Call, compute: np.dtype) -> KernelCall:
    """Score host rows for ``call``: its spec's kernels, specialized on first use."""
    p_form, q_form, eps, divisor = call.p_form, call.q_form, call.eps, call.divisor
    normalize, post = call.normalize, call.spec.post_code

    if call.spec.terms.own_kernels:

        def kl_rows(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
            (pb, ldp), (qb, ldq) = rows
            mode, kernel = _cpu.kl_kernel(p_form, q_form, target.shape[0], k, ldp, ldq,
                                          normalize, eps)  # fmt: skip
            if mode == "flat":
                kernel(pb, ldp, qb, ldq, k, divisor, target)
            else:
                kernel(pb, ldp, qb, ldq, k, p_form, q_form, normalize, eps, divisor, target)

        return kl_rows

    kernel = _cpu_family.family_kernel(call.spec.terms, p_form != _cpu.PROBS, q_form != _cpu.PROBS)

    def family_rows(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (pb, ldp), (qb, ldq) = rows if len(rows) == 2 else rows * 2  # entropy reads p only
        kernel(pb, ldp, qb, ldq, k, p_form, q_form, normalize, eps, divisor, post, target)

    return family_rows


def closed_call(name: str, divisor: float) -> KernelCall:
    """Score host rows of closed form ``name`` ("bernoulli", "vae" or "gaussian")."""
    kernel = _cpu_family.CLOSED_KERNELS[name]

    def two(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (a, lda), (b, ldb) = rows
        kernel(a, lda, b, ldb, k, divisor, target)

    def four(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (a, lda), (b, ldb), (c, ldc), (d, ldd) = rows
        kernel(a, lda, b, ldb, c, ldc, d, ldd, k, target)

    return four if name == "gaussian" else two


def train_call(call: Call, compute: np.dtype):
    """Score host rows for a training call (``_train``): values and gradients in one kernel."""
    mode_p = _cpu_train.side_mode(call.p_form, call.normalize, call.inv_t)
    mode_q = _cpu_train.side_mode(call.q_form, call.normalize, call.inv_t)
    kernel = _cpu_train.train_kernel(call.spec.terms, mode_p, mode_q, call.eps > 0.0)
    post, which = call.spec.post_code, call.which

    def rows_fn(rows, grads, scale, k, target):
        (pb, ldp), (qb, ldq) = rows if len(rows) == 2 else rows * 2  # entropy reads p only
        gp, gq = [*grads, None][:2]
        (gpb, ldgp) = gp if gp is not None else (_NO_GRAD[compute.char], 0)
        (gqb, ldgq) = gq if gq is not None else (_NO_GRAD[compute.char], 0)
        sb, lds = scale
        options = (call.normalize, call.eps, call.inv_t, call.beta, call.divisor, post, which)
        kernel(pb, ldp, qb, ldq, k, *options, gpb, ldgp, gqb, ldgq, sb, lds, target)

    return rows_fn


#: a gradient buffer that is never written (a side not asked for): one numba type per dtype
_NO_GRAD = {"f": np.zeros(1, np.float32), "d": np.zeros(1, np.float64)}
