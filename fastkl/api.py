"""Public functions: each describes its inputs and kernel; ``_driver`` does the rest."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _cpu, _driver

Form = Literal["probs", "log_probs", "logits"]
Reduction = Literal["none", "sum", "mean"]


def kl_div(
    p: ArrayLike,
    q: ArrayLike,
    *,
    p_form: Form = "probs",
    q_form: Form = "probs",
    axis: int = -1,
    reduction: Reduction = "none",
    base: float | None = None,
    eps: float | None = None,
    normalize: bool = False,
    validate: bool = False,
    out: np.ndarray | None = None,
) -> Any:
    r"""Kullback-Leibler divergence D(P || Q) of every distribution along ``axis``.

    .. math::

        D(P \,\|\, Q) = \sum_j p_j \log \frac{p_j}{q_j}

    with the exact conventions: a term is 0 where :math:`p_j = 0` (also where :math:`q_j = 0`
    or :math:`\log q_j = -\infty`), :math:`+\infty` where :math:`p_j > 0` and :math:`q_j = 0`,
    and a NaN anywhere in a row makes that row NaN. There is never a NaN from
    :math:`0 \log 0` or :math:`0 \cdot (-\infty)` (``torch.nn.functional.kl_div`` returns NaN
    there; this returns the true value). Negative probabilities give NaN.

    Parameters
    ----------
    p, q : array_like
        The distributions P (the reference, "target") and Q (the approximation): float16
        (computed in float32), float32 or float64 arrays, numpy memmaps or anything with
        ``__array__``. Both have the same length ``k >= 1`` along ``axis``; all other
        dimensions broadcast by numpy's rules, without copies: one reference row ``q`` of
        shape ``(k,)`` scores against every row of ``p`` of shape ``(n, k)``. Strided,
        sliced and Fortran-ordered inputs are read in place or a bounded block of rows at a
        time.
    p_form, q_form : {"probs", "log_probs", "logits"}
        How each side is given: probabilities, natural-log probabilities, or unnormalized
        log-scores (a log-softmax along ``axis`` is fused into the kernel, never
        materialized). Each side independently.
    axis : int
        The axis along which each distribution lies.
    reduction : {"none", "sum", "mean"}
        "none": an array of the inputs' broadcast shape without ``axis`` (a numpy scalar when
        that shape is ``()``). "sum": the sum over all distributions. "mean": the mean over
        distributions (torch's ``reduction="batchmean"`` for 2-d inputs, Keras's
        ``"sum_over_batch_size"``); NaN for an empty batch. Reductions return a numpy scalar of
        the result dtype, summed in float64 in a fixed order.
    base : float, optional
        Logarithm base: None for nats, 2 for bits, any finite base > 0 and != 1.
    eps : float, optional
        A float in (0, 1): clip both probabilities to ``[eps, 1]`` first, as Keras's
        ``kl_divergence`` does with ``eps=1e-7`` (for log forms, the log-probabilities are
        clipped to ``[log(eps), 0]``). None (the default) keeps the exact semantics.
    normalize : bool
        Divide each probability row by its sum first (what ``scipy.stats.entropy`` and
        torchmetrics do). For ``log_probs`` it subtracts the row's log-sum-exp (the row is then
        read as logits); logits are normalized anyway. Normalization comes before clipping.
    validate : bool
        Check the inputs first (one extra pass) and raise ValueError naming the first invalid
        row: a NaN, a negative probability, a +inf log-probability or logit, or a row whose
        total probability differs from 1 by more than ``max(1e-6, sqrt(k) * finfo(dtype).eps)``
        (``dtype`` being that input's, so about 1e-6 for float32 rows of 64 and 4e-5 for
        100,000). With ``normalize=True`` probability rows only need a positive sum.
    out : ndarray, optional
        For ``reduction="none"``: an array of the result's shape and dtype, writable and not
        overlapping the inputs, filled and returned.

    Returns
    -------
    ndarray or numpy scalar
        float64 if either input is float64, else float32. Rows accumulate in float64.

    Raises
    ------
    TypeError
        A non-floating input (integer, bool, complex, object), or an option of the wrong type.
    ValueError
        Mismatched lengths along ``axis``, shapes that do not broadcast, 0-d inputs, ``k == 0``,
        an unknown form or reduction, ``base <= 0`` or ``== 1``, ``eps`` outside (0, 1), an
        ``out`` of the wrong shape or dtype or read-only or overlapping an input, and with
        ``validate=True`` an invalid row.

    See Also
    --------
    scipy.special.rel_entr : the elementwise terms; ``rel_entr(p, q).sum(-1)`` is this.
    scipy.stats.entropy : with ``qk``, this with ``normalize=True, axis=0``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastkl
    >>> p = np.array([[0.1, 0.9], [0.5, 0.5]])
    >>> fastkl.kl_div(p, [0.4, 0.6])
    array([0.22628916, 0.020411  ])
    >>> round(float(fastkl.kl_div([1.0, 0.0], [0.8, 0.2], base=2)), 12)  # log2(1 / 0.8)
    0.321928094887
    >>> fastkl.kl_div([0.5, 0.5], [1.0, 0.0])
    np.float64(inf)
    >>> mean = fastkl.kl_div(p, np.log([0.4, 0.6]), q_form="log_probs", reduction="mean")
    >>> round(float(mean), 12)
    0.123350079223
    >>> fastkl.kl_div([[2.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]], p_form="logits", q_form="logits")
    array([0.26621671])
    """
    p_code = _driver.parse_form(p_form, "p_form")
    q_code = _driver.parse_form(q_form, "q_form")
    divisor = _driver.parse_base(base)
    eps_value = _driver.parse_eps(eps)
    normalize = _driver.parse_bool(normalize, "normalize")
    validate = _driver.parse_bool(validate, "validate")

    def kernel_call(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (pb, ldp), (qb, ldq) = rows
        mode, kernel = _cpu.kl_kernel(
            p_code, q_code, target.shape[0], k, ldp, ldq, normalize, eps_value
        )
        if mode == "flat":
            kernel(pb, qb, k, divisor, target)
        else:
            kernel(pb, ldp, qb, ldq, k, p_code, q_code, normalize, eps_value, divisor, target)

    return _driver.rowwise(
        kernel_call,
        (p, q),
        ("p", "q"),
        (p_code, q_code),
        axis=axis,
        reduction=reduction,
        normalize=normalize,
        validate=validate,
        out=out,
    )
