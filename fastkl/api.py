"""Public functions: each describes its inputs and kernel; ``_driver`` does the rest."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _cpu, _cpu_family, _driver, _warmup

_warmup.notify_slow_compiles()  # a first call that compiles says so

Form = Literal["probs", "log_probs", "logits"]
Reduction = Literal["none", "sum", "mean"]
Device = Literal["cpu", "cuda"]

# Documentation shared by the row-wise functions (kl_div's wording, which is theirs too).
_ROWWISE_PARAMS = """\
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
        the result dtype, summed in float64 in a fixed order (the same total for any chunking).
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
        overlapping the inputs, filled and returned (on the GPU: any CUDA array).
    device : {None, "cpu", "cuda"}
        Where to compute. None (the default): on the GPU when an input or ``out`` exposes
        ``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA tensors),
        read in place, with the rows returned as a numba device array; else on the CPU.
        "cuda" with numpy inputs streams them through the GPU in row chunks (inputs larger
        than the GPU's memory work) and returns numpy results. Reductions return a numpy
        scalar either way. Needs the ``cuda`` extra and an NVIDIA GPU (RuntimeError
        otherwise).

"""
_ROWWISE_RETURNS = """\
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

"""


def _doc(fn: Any) -> Any:
    """Fill in the shared sections of a row-wise function's docstring."""
    doc = fn.__doc__.replace("%(rowwise_params)s", _ROWWISE_PARAMS.strip())
    fn.__doc__ = doc.replace("%(rowwise_returns)s", _ROWWISE_RETURNS.strip())
    return fn


@_doc
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
    device: Device | None = None,
) -> Any:
    r"""Kullback-Leibler divergence D(P || Q) of every distribution along ``axis``.

    .. math::

        D(P \,\|\, Q) = \sum_j p_j \log \frac{p_j}{q_j}

    with the exact conventions: a term is 0 where :math:`p_j = 0` (also where :math:`q_j = 0`
    or :math:`\log q_j = -\infty`), :math:`+\infty` where :math:`p_j > 0` and :math:`q_j = 0`,
    and a NaN anywhere in a row makes that row NaN. There is never a NaN from
    :math:`0 \log 0` or :math:`0 \cdot (-\infty)` (``torch.nn.functional.kl_div`` returns NaN
    there; this returns the true value). Negative probabilities give NaN.

    %(rowwise_params)s

    %(rowwise_returns)s

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
            kernel(pb, ldp, qb, ldq, k, divisor, target)
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
        device=device,
        divergence=_driver.Divergence(
            "kl", p_code, q_code, eps_value, divisor, _cpu_family.POST_NONE
        ),
    )


# --- the divergence family ------------------------------------------------------------------


def _family(
    name: str,
    arrays: tuple[Any, ...],
    options: dict[str, Any],
    post: int = _cpu_family.POST_NONE,
) -> Any:
    """The common call of the family: parse the options (a public function's keyword
    arguments, as its ``locals()``), pick the kernel, run the driver."""
    p_code = _driver.parse_form(options["p_form"], "p_form")
    q_code = _driver.parse_form(options["q_form"], "q_form") if len(arrays) == 2 else p_code
    divisor = _driver.parse_base(options["base"])
    eps_value = _driver.parse_eps(options["eps"])
    normalize = _driver.parse_bool(options["normalize"], "normalize")
    validate = _driver.parse_bool(options["validate"], "validate")
    kernel = _cpu_family.family_kernel(name, p_code != _cpu.PROBS, q_code != _cpu.PROBS)

    def kernel_call(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (pb, ldp), (qb, ldq) = rows if len(rows) == 2 else rows * 2  # entropy reads p only
        kernel(pb, ldp, qb, ldq, k, p_code, q_code, normalize, eps_value, divisor, post, target)

    names = ("p", "q")[: len(arrays)]
    return _driver.rowwise(
        kernel_call,
        arrays,
        names,
        (p_code, q_code)[: len(arrays)],
        axis=options["axis"],
        reduction=options["reduction"],
        normalize=normalize,
        validate=validate,
        out=options["out"],
        measures=name == "generalized_kl",
        device=options["device"],
        divergence=_driver.Divergence(name, p_code, q_code, eps_value, divisor, post),
    )


@_doc
def js_div(
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
    device: Device | None = None,
) -> Any:
    r"""Jensen-Shannon divergence of every pair of distributions along ``axis``.

    .. math::

        \mathrm{JS}(P, Q) = \tfrac12 D(P \,\|\, M) + \tfrac12 D(Q \,\|\, M),
        \qquad M = \tfrac12 (P + Q)

    in one pass: M is never formed. Symmetric, bounded by :math:`\log 2` (1 with ``base=2``)
    for distributions, and finite whatever the zeros: a term is 0 where its weight is 0. A
    NaN in a row makes the row NaN; negative probabilities give NaN. Rounding never makes a
    row negative (it is clamped at 0, NaN kept).

    %(rowwise_params)s

    %(rowwise_returns)s

    See Also
    --------
    js_distance : its square root, a metric.

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.js_div([1.0, 0.0], [0.0, 1.0], base=2)), 12)  # disjoint: 1 bit
    1.0
    >>> fastkl.js_div([[0.1, 0.9], [0.5, 0.5]], [0.4, 0.6])
    array([0.06328782, 0.00505939])
    """
    return _family("js", (p, q), locals(), _cpu_family.POST_CLAMP)


@_doc
def js_distance(
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
    device: Device | None = None,
) -> Any:
    r"""Jensen-Shannon distance: the square root of :func:`js_div`, a metric.

    .. math::

        \sqrt{\mathrm{JS}(P, Q)}

    The divergence is clamped at 0 before the root, so rounding never gives NaN on
    near-identical rows (``scipy.spatial.distance.jensenshannon`` can: scipy issues 20083
    and 20779). ``base`` applies to the divergence, as in scipy. Reductions average or sum
    the distances.

    %(rowwise_params)s

    %(rowwise_returns)s

    Examples
    --------
    >>> import fastkl
    >>> fastkl.js_distance([0.1, 0.2, 0.7], [0.1, 0.2, 0.7])
    np.float64(0.0)
    >>> round(float(fastkl.js_distance([1.0, 0.0], [0.0, 1.0], base=2)), 12)
    1.0
    """
    return _family("js", (p, q), locals(), _cpu_family.POST_SQRT)


@_doc
def sym_kl(
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
    device: Device | None = None,
) -> Any:
    r"""Symmetric (Jeffreys) divergence D(P || Q) + D(Q || P), in one pass.

    .. math::

        J(P, Q) = \sum_j (p_j - q_j) \log \frac{p_j}{q_j}

    A term is 0 where both :math:`p_j` and :math:`q_j` are 0 and :math:`+\infty` where
    exactly one of them is; a NaN in a row makes the row NaN.

    %(rowwise_params)s

    %(rowwise_returns)s

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.sym_kl([0.1, 0.9], [0.4, 0.6])), 12)  # 0.226289 + 0.311239
    0.537527840768
    >>> fastkl.sym_kl([0.5, 0.5, 0.0], [0.5, 0.0, 0.5])
    np.float64(inf)
    """
    return _family("sym_kl", (p, q), locals())


@_doc
def cross_entropy(
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
    device: Device | None = None,
) -> Any:
    r"""Cross-entropy H(P, Q) of every pair of distributions along ``axis``.

    .. math::

        H(P, Q) = -\sum_j p_j \log q_j = H(P) + D(P \,\|\, Q)

    A term is 0 where :math:`p_j = 0` (whatever :math:`q_j`) and :math:`+\infty` where
    :math:`p_j > 0` and :math:`q_j = 0`. With ``q_form="logits"`` this is the softmax
    cross-entropy loss against soft (or one-hot) targets P, fused.

    %(rowwise_params)s

    %(rowwise_returns)s

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.cross_entropy([0.0, 1.0], [0.2, 0.8])), 12)  # -log 0.8
    0.223143551314
    >>> fastkl.cross_entropy([[1.0, 0.0, 0.0]], [[2.0, 1.0, 0.1]], q_form="logits")
    array([0.41703002])
    """
    return _family("cross_entropy", (p, q), locals())


def entropy(
    p: ArrayLike,
    *,
    p_form: Form = "probs",
    axis: int = -1,
    reduction: Reduction = "none",
    base: float | None = None,
    eps: float | None = None,
    normalize: bool = False,
    validate: bool = False,
    out: np.ndarray | None = None,
    device: Device | None = None,
) -> Any:
    r"""Shannon entropy H(P) of every distribution along ``axis``.

    .. math::

        H(P) = -\sum_j p_j \log p_j

    with :math:`0 \log 0 = 0`; a NaN in a row makes the row NaN, a negative probability
    gives NaN.

    Parameters
    ----------
    p : array_like
        The distributions: float16 (computed in float32), float32 or float64, any layout.
    p_form : {"probs", "log_probs", "logits"}
        How P is given (a log-softmax of logits is fused).
    axis, reduction, base, eps, normalize, validate, out, device
        As for :func:`kl_div`.

    %(rowwise_returns)s

    See Also
    --------
    scipy.stats.entropy : this with ``normalize=True`` (and its ``axis=0`` default).

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.entropy([0.5, 0.5], base=2)), 12)
    1.0
    >>> fastkl.entropy([[1.0, 0.0], [0.25, 0.75]])
    array([0.        , 0.56233514])
    """
    return _family("entropy", (p,), locals())


entropy = _doc(entropy)


@_doc
def generalized_kl(
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
    device: Device | None = None,
) -> Any:
    r"""Generalized KL divergence of nonnegative measures that need not sum to 1.

    .. math::

        D_g(P \,\|\, Q) = \sum_j \Big( p_j \log \frac{p_j}{q_j} - p_j + q_j \Big)

    the row sum of ``scipy.special.kl_div`` and optax's ``generalized_kl_divergence``; it is
    :func:`kl_div` when both rows sum to 1, and >= 0 for any measures. A term is
    :math:`q_j` where :math:`p_j = 0`, :math:`+\infty` where :math:`p_j > 0` and
    :math:`q_j = 0`. ``validate=True`` checks signs and NaN but not the totals. (``base``
    divides the whole sum by :math:`\log` base.)

    %(rowwise_params)s

    %(rowwise_returns)s

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.generalized_kl([2.0, 0.0], [1.0, 3.0])), 12)  # 2 log 2 - 2 + 4
    3.38629436112
    """
    return _family("generalized_kl", (p, q), locals())


# --- closed forms -----------------------------------------------------------------------------


def _closed_form(
    kernel_call: Any, arrays: tuple[Any, ...], names: tuple[str, ...], axis: Any, reduction: Any
) -> Any:
    """Run a closed form's row kernel: its terms summed along ``axis`` (elementwise for None).

    The parameters broadcast fully, the summed axis included (a scalar target activation
    against a layer's activations), as views. Integer parameters (a mean of 0, a standard
    deviation of 1) are read as float64.
    """
    converted = []
    for x, name in zip(arrays, names, strict=True):
        a = _driver.as_array(x, name)
        converted.append(a.astype(np.float64) if a.dtype.kind in "iu" else a)
    try:
        converted = np.broadcast_arrays(*converted)
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, converted, strict=True))
        raise ValueError(f"{', '.join(names)}: the shapes do not broadcast ({shapes})") from None
    if axis is None:
        converted = [a[..., np.newaxis] for a in converted]
    return _driver.rowwise(
        kernel_call,
        converted,
        names,
        (_cpu.PROBS,) * len(arrays),
        axis=-1 if axis is None else axis,
        reduction=reduction,
        normalize=False,
        validate=False,
        out=None,
    )


def bernoulli_kl(
    p: ArrayLike,
    q: ArrayLike,
    *,
    axis: int | None = None,
    reduction: Reduction = "none",
    base: float | None = None,
) -> Any:
    r"""KL divergence between Bernoulli distributions, elementwise or summed along ``axis``.

    .. math::

        D(\mathrm{B}(p) \,\|\, \mathrm{B}(q)) = p \log \frac{p}{q}
            + (1 - p) \log \frac{1 - p}{1 - q}

    The sparse-autoencoder regularizer: p the target activation :math:`\rho`, q the mean
    activation :math:`\hat\rho` of each hidden unit. Exact at the ends: 0 where p == q is 0 or
    1, +inf where q is 0 or 1 and p differs; NaN outside [0, 1].

    Parameters
    ----------
    p, q : array_like
        Probabilities in [0, 1] (floating or integer), broadcast against each other.
    axis : int, optional
        None: one value per element (the broadcast shape). An integer: the terms summed along
        that axis (the penalty of a layer, per sample).
    reduction : {"none", "sum", "mean"}
        As for :func:`kl_div`: "sum" and "mean" over the values that "none" returns.
    base : float, optional
        Logarithm base (None for nats).

    Returns
    -------
    ndarray or numpy scalar
        float64 if either input is float64 (or integer), else float32; computed in float64.

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.bernoulli_kl(0.1, 0.4)), 15)
    0.226289161185359
    >>> fastkl.bernoulli_kl(0.05, [0.05, 0.2, 1.0])
    array([0.        , 0.09394303,        inf])
    >>> round(float(fastkl.bernoulli_kl([0.1, 0.1], [0.4, 0.4], axis=-1)), 12)
    0.452578322371
    """
    divisor = _driver.parse_base(base)

    def kernel_call(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (pb, ldp), (qb, ldq) = rows
        _cpu_family.CLOSED_KERNELS["bernoulli"](pb, ldp, qb, ldq, k, divisor, target)

    return _closed_form(kernel_call, (p, q), ("p", "q"), axis, reduction)


def gaussian_kl(
    mu_p: ArrayLike,
    sigma_p: ArrayLike,
    mu_q: ArrayLike,
    sigma_q: ArrayLike,
    *,
    axis: int | None = -1,
    reduction: Reduction = "none",
) -> Any:
    r"""KL divergence between diagonal Gaussians, summed along ``axis``.

    .. math::

        D(\mathcal N(\mu_p, \sigma_p^2) \,\|\, \mathcal N(\mu_q, \sigma_q^2)) = \sum_j
            \log \frac{\sigma_{q,j}}{\sigma_{p,j}}
            + \frac{\sigma_{p,j}^2 + (\mu_{p,j} - \mu_{q,j})^2}{2 \sigma_{q,j}^2} - \frac12

    (TFP's ``MultivariateNormalDiag`` and torch's ``Independent(Normal, 1)`` KL). A negative
    or NaN sigma gives NaN; a zero sigma_p (a point mass) gives +inf, and so does a zero
    sigma_q with sigma_p > 0 (both zero: NaN) or an infinite sigma_p with a finite sigma_q.

    Parameters
    ----------
    mu_p, sigma_p, mu_q, sigma_q : array_like
        Means and standard deviations (not variances), broadcast together.
    axis : int or None
        The axis of the dimensions (default the last); None for univariate Normals,
        elementwise.
    reduction : {"none", "sum", "mean"}
        As for :func:`kl_div`.

    Returns
    -------
    ndarray or numpy scalar
        float64 if any input is float64 (or integer), else float32; computed in float64.

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.gaussian_kl(1.0, 1.0, 2.0, 0.5, axis=None)), 14)
    2.80685281944005
    >>> round(float(fastkl.gaussian_kl([0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0])), 12)
    0.5
    """

    def kernel_call(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (a, lda), (b, ldb), (c, ldc), (d, ldd) = rows
        _cpu_family.CLOSED_KERNELS["gaussian"](a, lda, b, ldb, c, ldc, d, ldd, k, target)

    return _closed_form(
        kernel_call,
        (mu_p, sigma_p, mu_q, sigma_q),
        ("mu_p", "sigma_p", "mu_q", "sigma_q"),
        axis,
        reduction,
    )


def vae_kl(
    mu: ArrayLike,
    logvar: ArrayLike,
    *,
    axis: int | None = -1,
    reduction: Reduction = "none",
) -> Any:
    r"""The VAE regularizer KL(N(mu, exp(logvar)) || N(0, I)), summed along ``axis``.

    .. math::

        -\frac12 \sum_j \left(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\right)

    computed as :math:`\frac12 \sum_j (\mu_j^2 + \mathrm{expm1}(\log\sigma_j^2)
    - \log\sigma_j^2)`, which keeps its precision where the posterior is close to the prior.

    Parameters
    ----------
    mu, logvar : array_like
        The encoder's means and log-variances, broadcast together.
    axis : int or None
        The latent axis (default the last); None for elementwise terms.
    reduction : {"none", "sum", "mean"}
        As for :func:`kl_div` ("mean" over samples: the usual batch loss).

    Returns
    -------
    ndarray or numpy scalar
        float64 if either input is float64 (or integer), else float32; computed in float64.

    Examples
    --------
    >>> import fastkl
    >>> fastkl.vae_kl([[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
    array([0. , 0.5])
    """

    def kernel_call(rows: list[tuple[np.ndarray, int]], k: int, target: np.ndarray) -> None:
        (a, lda), (b, ldb) = rows
        _cpu_family.CLOSED_KERNELS["vae"](a, lda, b, ldb, k, 1.0, target)

    return _closed_form(kernel_call, (mu, logvar), ("mu", "logvar"), axis, reduction)
