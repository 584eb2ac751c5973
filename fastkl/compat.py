"""Drop-ins for the peer libraries: the peer's argument order, names, defaults and numbers.

Each function here reproduces one peer function (torch, Keras, MXNet, scipy, optax,
torchmetrics) on numpy arrays and returns the numbers that peer returns, computed by the
fastkl kernels. Where the peer's arithmetic gives a NaN that is not a property of the inputs
(``0 * log 0`` taken as ``0 * (-inf)``) the drop-in returns the true value instead; each
docstring lists its differences from the peer. The native spelling of each call, with
keywords, is in the README's "Coming from" section.

Arguments are checked under the peer's names (``input``, ``target``, ``y_true`` ...), so an
error names what the caller passed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _prepare, api

__all__ = [
    "keras_kl_divergence",
    "mxnet_kl_div_loss",
    "optax_kl_divergence",
    "optax_kl_divergence_with_log_targets",
    "scipy_entropy",
    "scipy_jensenshannon",
    "torch_kl_div",
    "torchmetrics_kl_divergence",
    "trl_generalized_jsd_loss",
]

#: Keras's ``backend.epsilon()`` as Keras applies it: cast to float32 (1.0000000116860974e-07),
#: also for float64 tensors. With a float64 1e-7 clipped rows differ by about 6e-9.
KERAS_EPSILON = np.float32(1e-7)

#: What MXNet's KLDivLoss adds inside the log of the label: ``log(label + 1e-12)``.
MXNET_LABEL_EPS = 1e-12


# --- arguments under the peer's names -------------------------------------------------------


def _array(
    x: Any, name: str, *, ints_as: np.dtype | type | None = None, allow_0d: bool = False
) -> np.ndarray:
    """``x`` as a float array, errors naming ``name``.

    ``ints_as``: integer and bool arrays become this float dtype (scipy's counts: float64;
    Keras's one-hot labels: the predictions' dtype); None: they are a TypeError.
    ``allow_0d``: a 0-d array passes (torch's elementwise loss accepts scalars).
    """
    try:
        a = np.asarray(x)
    except Exception:
        return _prepare.as_float_array(x, name)  # raises the driver's error under ``name``
    if ints_as is not None and a.dtype.kind in "biu":
        a = a.astype(ints_as)
    if allow_0d and a.ndim == 0:
        _prepare.as_float_array(a.reshape(1), name)  # the dtype check alone
        return a
    return _prepare.as_float_array(a, name)


def _check_rows(arrays: Sequence[np.ndarray], names: Sequence[str], axis: Any) -> None:
    """The driver's shape checks (same length along ``axis``, broadcastable), under the peer's
    names; the arrays are then handed to ``api`` as they are."""
    _prepare.prepare(arrays, names, axis)


def _choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _keepdims(result: Any, axis: int, ndim: int, keepdims: Any) -> Any:
    if not _prepare.parse_bool(keepdims, "keepdims"):
        return result
    return np.expand_dims(result, _prepare.parse_axis(axis, ndim))


# --- torch ----------------------------------------------------------------------------------


@functools.cache
def _torch_terms_ufunc(log_target: bool) -> Any:
    """The elementwise KL term as a numpy ufunc over (target, input), compiled on first use.

    It calls ``kl_term_log``, the scalar definition that the CPU kernels use, so the terms and
    the row sums share one formula.
    """
    import numba

    from ._cpu import kl_term_log

    if log_target:

        def term(log_p: float, log_q: float) -> float:
            return kl_term_log(math.exp(log_p), log_p, log_q)

    else:

        def term(p: float, log_q: float) -> float:
            return kl_term_log(p, math.log(p), log_q)

    return numba.vectorize(["float32(float32, float32)", "float64(float64, float64)"])(term)


def torch_kl_div(
    input: ArrayLike,
    target: ArrayLike,
    reduction: Literal["mean", "batchmean", "sum", "none"] = "mean",
    log_target: bool = False,
) -> Any:
    r"""``torch.nn.functional.kl_div(input, target, reduction, log_target)`` on numpy arrays.

    ``input`` holds :math:`\log Q` and ``target`` holds :math:`P` (or :math:`\log P` with
    ``log_target=True``): note the order, the approximation first. The elementwise loss is

    .. math::

        \ell_j = p_j (\log p_j - \log q_j)

    and ``reduction`` reduces it as torch does: "none" returns every :math:`\ell_j` (the
    broadcast shape of the inputs), "sum" their total, "mean" the total divided by the number
    of ELEMENTS (not a KL divergence: torch warns about it), "batchmean" the total divided by
    ``input.shape[0]`` (the mean KL over rows for 2-d inputs; for a 1-d input torch divides by
    its length, for a 0-d input by 1, and so does this). The distributions lie along the
    last axis.

    Parameters
    ----------
    input : array_like
        Log-probabilities :math:`\log Q` (float16, float32 or float64; 0-d allowed). They are
        not checked for normalization, as in torch.
    target : array_like
        Probabilities :math:`P`, or :math:`\log P` with ``log_target=True``. Broadcasts with
        ``input``.
    reduction : {"mean", "batchmean", "sum", "none"}
        torch's default is "mean"; "batchmean" is the KL divergence per row, averaged.
    log_target : bool
        ``target`` holds log-probabilities.

    Returns
    -------
    ndarray or numpy scalar
        float64 if either input is float64, else float32 (torch keeps float16 as float16).

    Notes
    -----
    Differences from torch:

    * A term with :math:`p_j = 0` is 0 even where ``input`` is -inf; torch returns NaN there
      (``0 * -inf``), and with ``log_target=True`` it returns NaN wherever ``target`` is
      -inf, whatever ``input`` is. A NaN in ``input`` or ``target`` still gives NaN.
    * "sum", "mean" and "batchmean" add the row sums in float64 (``fastkl.kl_div`` with
      ``reduction="sum"``, no elementwise temporary); torch adds in the input's precision.
    * No ``size_average``/``reduce`` (deprecated in torch) and no gradients.

    The KL divergence per row, with keywords: ``fastkl.kl_div(target, input,
    q_form="log_probs")`` (``p_form="log_probs"`` for a log target); torch's "batchmean" of
    2-d inputs is that with ``reduction="mean"``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import torch_kl_div
    >>> p = np.array([[0.1, 0.9], [0.5, 0.5]])
    >>> log_q = np.log([[0.4, 0.6], [0.4, 0.6]])
    >>> round(float(torch_kl_div(log_q, p, reduction="batchmean")), 12)  # mean KL of rows
    0.123350079223
    >>> round(float(torch_kl_div(log_q, p)), 12)  # torch's default: divided by 4 elements
    0.061675039611
    >>> log_q = np.array([-np.inf, np.log(0.25), np.log(0.75)])
    >>> torch_kl_div(log_q, np.array([0.0, 0.5, 0.5]), "none")  # torch: [nan, ...]
    array([ 0.        ,  0.34657359, -0.20273255])
    """
    reduction = _choice(reduction, "reduction", ("mean", "batchmean", "sum", "none"))
    log_target = _prepare.parse_bool(log_target, "log_target")
    x = _array(input, "input", allow_0d=True)
    t = _array(target, "target", allow_0d=True)
    try:
        shape = np.broadcast_shapes(x.shape, t.shape)
    except ValueError:
        raise ValueError(
            f"input and target: shapes {x.shape} and {t.shape} do not broadcast"
        ) from None
    if reduction == "none":
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0 is part of the definition
            return _torch_terms_ufunc(log_target)(t, x)

    xr, tr = np.atleast_1d(x), np.atleast_1d(t)
    if xr.shape[-1] != tr.shape[-1]:  # a length-1 last axis broadcast: views, no copies
        xr, tr = np.broadcast_arrays(xr, tr)
    p_form = "log_probs" if log_target else "probs"
    total = api.kl_div(tr, xr, p_form=p_form, q_form="log_probs", reduction="sum")
    if reduction == "sum":
        return total
    divisor = math.prod(shape) if reduction == "mean" else (x.shape[0] if x.ndim else 1)
    # divided in float64; an empty input gives torch's 0 / 0 = NaN
    return total.dtype.type(float(total) / divisor if divisor else math.nan)


# --- keras ----------------------------------------------------------------------------------


def keras_kl_divergence(y_true: ArrayLike, y_pred: ArrayLike) -> Any:
    r"""``keras.losses.kl_divergence(y_true, y_pred)`` (alias ``kld``) on numpy arrays.

    Both sides are clipped to :math:`[\epsilon, 1]` with Keras's epsilon
    (:data:`KERAS_EPSILON`, 1e-7 as a float32) and each sample is reduced along the last
    axis:

    .. math::

        \ell = \sum_j t_j \log \frac{t_j}{y_j}, \quad
        t = \mathrm{clip}(y_{true}, \epsilon, 1),\ y = \mathrm{clip}(y_{pred}, \epsilon, 1)

    Parameters
    ----------
    y_true : array_like
        The target distributions P.
    y_pred : array_like
        The predicted distributions Q, same length along the last axis; broadcasts with
        ``y_true``.

    Returns
    -------
    ndarray or numpy scalar
        One loss per sample: the broadcast shape without the last axis.

    Notes
    -----
    The loss object ``keras.losses.KLDivergence()`` reduces these per-sample values with its
    default ``reduction="sum_over_batch_size"``: their mean over every sample. That is
    ``fastkl.kl_div(y_true, y_pred, eps=KERAS_EPSILON, reduction="mean")`` (or
    ``keras_kl_divergence(y_true, y_pred).mean()``); the loss object's ``sample_weight`` is
    not covered.

    Differences from Keras: the clipping removes zeros and infinities, so the results agree;
    integer and bool ``y_true`` (one-hot labels) are cast to ``y_pred``'s dtype, as Keras
    casts; Keras also converts float ``y_true`` to ``y_pred``'s dtype and Python lists to its
    floatx (float32),
    while here the result is float64 if either input is float64 (lists are float64), and
    the sum runs in float64. A NaN stays NaN in both.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import keras_kl_divergence
    >>> y_true = np.array([[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
    >>> y_pred = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    >>> keras_kl_divergence(y_true, y_pred)  # exact: 0.25541281 and inf
    array([0.25541136, 7.36590064])
    """
    y = _array(y_pred, "y_pred")
    t = _array(y_true, "y_true", ints_as=y.dtype)  # Keras casts labels to y_pred's dtype
    _check_rows((t, y), ("y_true", "y_pred"), -1)
    return api.kl_div(t, y, eps=KERAS_EPSILON)


# --- MXNet ----------------------------------------------------------------------------------


def mxnet_kl_div_loss(
    pred: ArrayLike,
    label: ArrayLike,
    from_logits: bool = True,
    axis: int = -1,
    weight: float | None = None,
    *,
    mean_over_classes: bool = False,
) -> Any:
    r"""``mxnet.gluon.loss.KLDivLoss(from_logits, axis, weight)(pred, label)`` on numpy arrays.

    ``pred`` is :math:`\log Q` (``from_logits=True``, MXNet's default) or logits, turned into
    :math:`\log Q` by a log-softmax along ``axis`` (``from_logits=False``); ``label`` is
    :math:`P`. MXNet 1.9.1 computes, per sample,

    .. math::

        \ell = w \sum_j p_j \left(\log(p_j + 10^{-12}) - \log q_j\right)

    which is the KL divergence plus :math:`10^{-12}` for each positive :math:`p_j` (to first
    order; this adds exactly that, so float64 results agree with MXNet's to 1e-15 relative).

    Parameters
    ----------
    pred : array_like
        Log-probabilities, or logits with ``from_logits=False``.
    label : array_like
        Probabilities P, the same length along ``axis``; broadcasts with ``pred``.
    from_logits : bool
        MXNet's name, which means the opposite of what it says: True (the default) when
        ``pred`` already holds log-probabilities, False when it holds logits.
    axis : int
        The class axis (MXNet uses it only for the log-softmax; the sum runs over it too).
    weight : float, optional
        MXNet's global scalar weight: the loss is multiplied by it.
    mean_over_classes : bool
        Reproduce MXNet releases before 1.8 (before PR 18423, "fix misbehave of KLDivLoss"),
        which averaged the terms instead of adding them: the result divided by the number of
        classes ``k``. The MXNet KL divergence tutorial describes that behaviour.

    Returns
    -------
    ndarray or numpy scalar
        One loss per distribution: the broadcast shape without ``axis``. For 2-d inputs
        (batch, classes), MXNet's output of shape (batch,).

    Notes
    -----
    Differences from MXNet:

    * Where a label is 0 and ``pred`` is -inf (a class with probability 0 on both sides) the
      term is 0; MXNet returns NaN (``0 * inf``).
    * MXNet's Loss averages every dimension other than ``batch_axis``; for inputs of more than
      two dimensions take the mean of this result over the dimensions between batch and class
      (only 2-d inputs were compared with MXNet 1.9.1). ``sample_weight`` is not covered.
    * Results are float64 for float64 inputs (MXNet arrays default to float32).

    The KL divergence alone, with keywords: ``fastkl.kl_div(label, pred, q_form="log_probs")``
    (``q_form="logits"`` for ``from_logits=False``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import mxnet_kl_div_loss
    >>> p = np.array([[0.2, 0.5, 0.2, 0.1]])
    >>> log_q = np.log([[0.3, 0.4, 0.1, 0.2]])
    >>> mxnet_kl_div_loss(log_q, p)  # KL(P || Q) = 0.09979347 (+ 4e-12)
    array([0.09979347])
    >>> mxnet_kl_div_loss(log_q, p, mean_over_classes=True)  # MXNet < 1.8: KL / 4
    array([0.02494837])
    """
    from_logits = _prepare.parse_bool(from_logits, "from_logits")
    mean_over_classes = _prepare.parse_bool(mean_over_classes, "mean_over_classes")
    if weight is not None and (
        isinstance(weight, (bool, np.bool_)) or not isinstance(weight, (int, float, np.number))
    ):
        raise TypeError(f"weight: expected None or a number, got {weight!r}")
    x = _array(pred, "pred")
    t = _array(label, "label")
    _check_rows((x, t), ("pred", "label"), axis)
    q_form = "log_probs" if from_logits else "logits"
    loss = api.kl_div(t, x, q_form=q_form, axis=axis)
    # log(label + 1e-12) - log(label) = 1e-12 / label to first order: 1e-12 per positive label
    ndim = max(x.ndim, t.ndim)
    ax = _prepare.parse_axis(axis, ndim)
    t = t[(np.newaxis,) * (ndim - t.ndim)]  # axis counts the same dimensions as in ``loss``
    loss = loss + np.count_nonzero(t > 0, axis=ax) * loss.dtype.type(MXNET_LABEL_EPS)
    if mean_over_classes:
        loss = loss / loss.dtype.type(t.shape[ax])
    if weight is not None:
        loss = loss * loss.dtype.type(weight)
    return loss


# --- scipy ----------------------------------------------------------------------------------


def scipy_entropy(
    pk: ArrayLike,
    qk: ArrayLike | None = None,
    base: float | None = None,
    axis: int = 0,
    *,
    keepdims: bool = False,
) -> Any:
    r"""``scipy.stats.entropy(pk, qk, base, axis, keepdims=keepdims)``.

    Normalizes ``pk`` (and ``qk``) along ``axis`` to sum to 1, then returns the entropy

    .. math::

        H(P) = -\sum_j p_j \log p_j

    or, with ``qk``, the KL divergence :math:`D(P \| Q) = \sum_j p_j \log(p_j / q_j)`.
    Like scipy, the default ``axis=0`` reads COLUMNS as distributions: for rows pass
    ``axis=1`` (or -1).

    Parameters
    ----------
    pk : array_like
        Probabilities or unnormalized weights (integer counts allowed: they become float64).
    qk : array_like, optional
        The second distribution, same length along ``axis``; broadcasts with ``pk``.
    base : float, optional
        Logarithm base; None for nats.
    axis : int
        The axis along which each distribution lies (scipy's default, 0).
    keepdims : bool
        Keep ``axis`` as a dimension of length 1.

    Returns
    -------
    ndarray or numpy scalar

    Notes
    -----
    Differences from scipy: ``base`` must be > 0 and != 1 (scipy divides by ``log(1) = 0``);
    ``nan_policy`` is not offered (NaNs propagate, scipy's default). Zero entries, zero-mass
    distributions (NaN), ``p > 0`` with ``q = 0`` (inf), negative entries (-inf for the
    entropy, inf for the divergence, as scipy's ``entr`` and ``rel_entr`` give) and empty
    distributions (0.0) agree with scipy.

    With keywords: ``fastkl.kl_div(pk, qk, normalize=True, axis=0, base=base)`` and
    ``fastkl.entropy(pk, normalize=True, axis=0, base=base)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import scipy_entropy
    >>> round(float(scipy_entropy([1, 1])), 12)  # log 2
    0.69314718056
    >>> round(float(scipy_entropy([9, 1], [1, 1], base=2)), 12)  # 1 - H2(0.9)
    0.531004406411
    >>> scipy_entropy(np.array([[1.0, 1.0], [3.0, 1.0]]), axis=1)
    array([0.69314718, 0.56233514])
    """
    p = _array(pk, "pk", ints_as=np.float64)
    arrays = (p,) if qk is None else (p, _array(qk, "qk", ints_as=np.float64))
    names = ("pk", "qk")[: len(arrays)]
    ndim = max(a.ndim for a in arrays)
    ax = _prepare.parse_axis(axis, max(ndim, 1))
    aligned = [a[(np.newaxis,) * (ndim - a.ndim)] for a in arrays]
    if ndim > 0 and any(a.shape[ax] == 0 for a in aligned):
        # no entries: scipy sums nothing, 0.0 per distribution
        shape = np.broadcast_shapes(*(np.delete(a.shape, ax) for a in aligned))
        result = np.zeros(shape, np.result_type(*arrays))
        return _keepdims(result[()], axis, ndim, keepdims)
    _check_rows(arrays, names, axis)
    if qk is None:
        result = api.entropy(p, axis=axis, base=base, normalize=True)
    else:
        result = api.kl_div(p, arrays[1], axis=axis, base=base, normalize=True)
    if any(bool(np.any(a < 0)) for a in arrays):
        result = _scipy_negative(arrays, axis, base, result)
    return _keepdims(result, axis, ndim, keepdims)


def _scipy_negative(
    arrays: tuple[np.ndarray, ...], axis: int, base: float | None, result: Any
) -> Any:
    """scipy's value for the distributions with a negative entry (after normalizing), where
    fastkl gives NaN: ``entr`` is -inf there (the entropy is -inf), ``rel_entr`` +inf (the
    divergence is +inf); a NaN stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        normed = [a / a.sum(axis=axis, keepdims=True) for a in arrays]
        if len(normed) == 1:
            x = normed[0]
            terms = np.where(x > 0, -x * np.log(np.where(x > 0, x, 1.0)), 0.0)
            terms = np.where(x < 0, -np.inf, terms)
        else:
            x, y = np.broadcast_arrays(*normed)
            ok = (x > 0) & (y > 0)
            terms = np.where(ok, x * np.log(np.where(ok, x / np.where(ok, y, 1.0), 1.0)), 0.0)
            terms = np.where(~ok & ~((x == 0) & (y >= 0)), np.inf, terms)
        terms = np.where(np.isnan(x) | np.isnan(normed[-1]), np.nan, terms)
        value = terms.sum(axis=axis)
        if base is not None:
            value = value / np.log(base)
    parts = np.broadcast_arrays(*normed)
    negative = np.any(np.logical_or.reduce([n < 0 for n in parts]), axis=axis)
    fixed = np.where(negative & ~np.isnan(value), value, result)
    return np.asarray(fixed, dtype=np.result_type(result))[()]


def scipy_jensenshannon(
    p: ArrayLike,
    q: ArrayLike,
    base: float | None = None,
    *,
    axis: int = 0,
    keepdims: bool = False,
) -> Any:
    r"""``scipy.spatial.distance.jensenshannon(p, q, base, axis=axis, keepdims=keepdims)``.

    Normalizes ``p`` and ``q`` along ``axis``, then returns the Jensen-Shannon DISTANCE, the
    square root of the divergence:

    .. math::

        \sqrt{\frac{D(P \| M) + D(Q \| M)}{2}}, \quad M = \frac{P + Q}{2}

    As in scipy, the default ``axis=0`` reads COLUMNS as distributions.

    Parameters
    ----------
    p, q : array_like
        Probabilities or unnormalized weights (integer counts allowed), the same length along
        ``axis``; they broadcast.
    base : float, optional
        Logarithm base of the divergence under the root; None for nats.
    axis : int
        The axis along which each distribution lies (scipy's default, 0).
    keepdims : bool
        Keep ``axis`` as a dimension of length 1.

    Returns
    -------
    ndarray or numpy scalar

    Notes
    -----
    Differences from scipy: for near-identical distributions rounding can make the divergence
    slightly negative, and scipy then returns NaN (scipy issues 20083 and 20779); this clamps
    the divergence at 0 first and returns 0. ``base`` must be > 0 and != 1. Negative entries
    give NaN.

    With keywords: ``fastkl.js_distance(p, q, normalize=True, axis=0, base=base)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import scipy_jensenshannon
    >>> round(float(scipy_jensenshannon([1.0, 0.0], [0.0, 1.0], base=2)), 12)
    1.0
    >>> round(float(scipy_jensenshannon([1.0, 0.0, 0.0], [0.5, 0.5, 0.0])), 12)
    0.464501404022
    """
    pa = _array(p, "p", ints_as=np.float64)
    qa = _array(q, "q", ints_as=np.float64)
    _check_rows((pa, qa), ("p", "q"), axis)
    result = api.js_distance(pa, qa, axis=axis, base=base, normalize=True)
    return _keepdims(result, axis, max(pa.ndim, qa.ndim), keepdims)


# --- optax ----------------------------------------------------------------------------------


def optax_kl_divergence(log_predictions: ArrayLike, targets: ArrayLike, axis: int = -1) -> Any:
    r"""``optax.losses.kl_divergence(log_predictions, targets, axis)`` on numpy arrays.

    .. math::

        \ell = \sum_j t_j (\log t_j - \log q_j)

    along ``axis``, with :math:`\log Q` first (``log_predictions``) and the target
    probabilities second.

    Parameters
    ----------
    log_predictions : array_like
        :math:`\log Q`.
    targets : array_like
        :math:`P`, the same length along ``axis``; broadcasts.
    axis : int
        One axis (optax also takes a tuple of axes, or None; ``where=`` is not offered).

    Returns
    -------
    ndarray or numpy scalar
        The broadcast shape without ``axis``.

    Notes
    -----
    optax replaces :math:`\log t_j` by 0 where :math:`t_j = 0`, so a zero target with a
    finite log-prediction contributes 0, as here; but with ``log_predictions = -inf`` it
    computes ``0 * inf`` = NaN where this returns 0. JAX computes in float32 unless x64 is
    enabled; here float64 inputs give float64 results.

    With keywords: ``fastkl.kl_div(targets, log_predictions, q_form="log_probs", axis=axis)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import optax_kl_divergence
    >>> optax_kl_divergence(np.log([[0.4, 0.6], [0.4, 0.6]]), np.array([[0.1, 0.9], [0.0, 1.0]]))
    array([0.22628916, 0.51082562])
    """
    x = _array(log_predictions, "log_predictions")
    t = _array(targets, "targets")
    _check_rows((x, t), ("log_predictions", "targets"), axis)
    return api.kl_div(t, x, q_form="log_probs", axis=axis)


def optax_kl_divergence_with_log_targets(
    log_predictions: ArrayLike, log_targets: ArrayLike, axis: int = -1
) -> Any:
    r"""``optax.losses.kl_divergence_with_log_targets(log_predictions, log_targets, axis)``.

    .. math::

        \ell = \sum_j e^{\log t_j} (\log t_j - \log q_j)

    Parameters
    ----------
    log_predictions : array_like
        :math:`\log Q`.
    log_targets : array_like
        :math:`\log P`, the same length along ``axis``; broadcasts.
    axis : int
        One axis (optax also takes a tuple of axes, or None; ``where=`` is not offered).

    Returns
    -------
    ndarray or numpy scalar
        The broadcast shape without ``axis``.

    Notes
    -----
    Where ``log_targets`` is -inf (a zero target) optax computes ``0 * -inf`` = NaN; this
    returns 0 for that term. float64 inputs give float64 results (JAX: float32 unless x64).

    With keywords: ``fastkl.kl_div(log_targets, log_predictions, p_form="log_probs",
    q_form="log_probs", axis=axis)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import optax_kl_divergence_with_log_targets
    >>> kl = optax_kl_divergence_with_log_targets(np.log([0.4, 0.6]), np.array([-np.inf, 0.0]))
    >>> round(float(kl), 12)  # log(1 / 0.6); optax: NaN
    0.510825623766
    """
    x = _array(log_predictions, "log_predictions")
    t = _array(log_targets, "log_targets")
    _check_rows((x, t), ("log_predictions", "log_targets"), axis)
    return api.kl_div(t, x, p_form="log_probs", q_form="log_probs", axis=axis)


# --- torchmetrics ---------------------------------------------------------------------------


def torchmetrics_kl_divergence(
    p: ArrayLike,
    q: ArrayLike,
    log_prob: bool = False,
    reduction: Literal["mean", "sum", "none"] | None = "mean",
) -> Any:
    r"""``torchmetrics.functional.kl_divergence(p, q, log_prob, reduction)`` on numpy arrays.

    P first. ``p`` and ``q`` are 2-d, of the same shape ``(N, d)``, one distribution per row:

    .. math::

        D(P_i \| Q_i) = \sum_j p_{ij} \log \frac{p_{ij}}{q_{ij}}

    With ``log_prob=False`` (the default) each row of ``p`` and ``q`` is first divided by its
    sum; with ``log_prob=True`` both hold log-probabilities, used as they are (not
    normalized). ``reduction``: "mean" (the default) over the N rows, "sum", or "none"/None
    for one value per row.

    Parameters
    ----------
    p, q : array_like
        2-d arrays of the same shape.
    log_prob : bool
        Inputs are log-probabilities.
    reduction : {"mean", "sum", "none", None}

    Returns
    -------
    ndarray or numpy scalar

    Notes
    -----
    This follows torchmetrics >= 0.9, where ``0 log 0 = 0`` (``_safe_xlogy``) and rows with
    ``p = -inf`` contribute 0 in log space. Releases before 0.9 clamped the normalized
    ``q`` at 1e-6 (torchmetrics issue 1029). torchmetrics reduces an unknown ``reduction``
    string as "mean"; this raises ValueError. Where ``p == 0`` and ``q`` is NaN the term is NaN
    here (torchmetrics: 0).

    With keywords: ``fastkl.kl_div(p, q, normalize=True, reduction="mean")``, or
    ``p_form="log_probs", q_form="log_probs"`` for ``log_prob=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import torchmetrics_kl_divergence
    >>> p = np.array([[0.36, 0.48, 0.16]])
    >>> q = np.array([[1 / 3, 1 / 3, 1 / 3]])
    >>> round(float(torchmetrics_kl_divergence(p, q)), 12)
    0.085299601318
    >>> counts_p, counts_q = np.array([[2.0, 6.0]]), np.array([[1.0, 1.0]])
    >>> torchmetrics_kl_divergence(counts_p, counts_q, reduction="none")  # rows normalized
    array([0.13081204])
    """
    log_prob = _prepare.parse_bool(log_prob, "log_prob")
    reduction = _choice(reduction, "reduction", ("mean", "sum", "none", None))
    pa = _array(p, "p")
    qa = _array(q, "q")
    if pa.ndim != 2 or qa.ndim != 2 or pa.shape != qa.shape:
        raise ValueError(
            f"p and q: expected two 2-d arrays of the same shape (N, d), got {pa.shape} and "
            f"{qa.shape}"
        )
    _check_rows((pa, qa), ("p", "q"), -1)
    reduction = "none" if reduction is None else reduction
    if log_prob:
        return api.kl_div(pa, qa, p_form="log_probs", q_form="log_probs", reduction=reduction)
    return api.kl_div(pa, qa, normalize=True, reduction=reduction)


# --- TRL ----------------------------------------------------------------------------------------


def trl_generalized_jsd_loss(
    student_logits: Any,
    teacher_logits: Any,
    labels: Any = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: Literal["batchmean", "sum", "mean"] = "batchmean",
) -> Any:
    r"""TRL's ``GKDTrainer.generalized_jsd_loss``: the generalized Jensen-Shannon divergence of
    on-policy distillation, on numpy arrays or torch tensors (differentiable).

    With T the temperature, :math:`P_T = \mathrm{softmax}(z_{\mathrm{teacher}} / T)` and
    :math:`P_S = \mathrm{softmax}(z_{\mathrm{student}} / T)` per token:

    .. math::

        \mathrm{GJSD}_\beta = \beta D(P_T \| M) + (1 - \beta) D(P_S \| M),
        \qquad M = \beta P_T + (1 - \beta) P_S

    for 0 < beta < 1, and, as TRL defines its ends, the forward KL :math:`D(P_T \| P_S)` at
    beta = 0 and the reverse KL :math:`D(P_S \| P_T)` at beta = 1 (the mixture itself would
    be 0 there: :func:`fastkl.js_div` with ``beta``).

    Parameters
    ----------
    student_logits, teacher_logits : array_like or torch.Tensor
        (batch, sequence, vocabulary) or (tokens, vocabulary) logits.
    labels : array_like or torch.Tensor, optional
        (batch, sequence) token ids; tokens whose label is -100 are left out.
    beta : float
        In [0, 1].
    temperature : float
        Both sides' logits are divided by it (TRL applies no :math:`T^2` factor either).
    reduction : {"batchmean", "sum", "mean"}
        "batchmean": the sum over tokens divided by the number of tokens kept with
        ``labels``, else by the product of the first two dimensions (TRL's ``jsd.size(0) *
        jsd.size(1)``: the tokens of (batch, sequence, vocabulary) logits; TRL's first
        versions divided by ``jsd.size(0)``, the batch size, alone); "sum"; "mean": the sum
        divided by the number of elements (tokens kept times the vocabulary), as TRL's
        ``jsd.mean()``. TRL's "none" returns elementwise
        terms (tokens x vocabulary), which fastkl never forms: use ``fastkl.js_div(teacher,
        student, beta=beta, ...)`` for per-token values.

    Returns
    -------
    numpy scalar, or a 0-d tensor that autograd differentiates (through the student's and,
    where it requires a gradient, the teacher's logits) for torch inputs.

    Notes
    -----
    The values are TRL's mathematically; TRL computes in the logits' precision (its mixture
    through ``logsumexp`` of stacked log-probabilities, a (2, tokens, vocabulary) temporary),
    fastkl in float64 per element, so float32 results agree to rounding, not bitwise. No
    token kept gives NaN for "batchmean" and "mean" (TRL divides 0 by 0 too).

    Examples
    --------
    >>> import numpy as np
    >>> from fastkl.compat import trl_generalized_jsd_loss
    >>> student = np.array([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    >>> teacher = np.array([[[2.0, 0.0, -2.0], [0.0, 0.0, 0.0]]])
    >>> round(float(trl_generalized_jsd_loss(student, teacher, labels=[[7, -100]])), 10)
    0.0324333814
    >>> round(float(trl_generalized_jsd_loss(student, teacher, beta=0.0)), 10)  # forward KL
    0.0708429471
    """
    _choice(reduction, "reduction", ("batchmean", "sum", "mean"))
    beta = _prepare.parse_beta(beta)
    _prepare.parse_temperature(temperature)
    torch_inputs = type(student_logits).__module__.startswith("torch")
    if torch_inputs:
        from . import torch as module
    else:
        module = api  # type: ignore[assignment]
        student_logits = _array(student_logits, "student_logits")
        teacher_logits = _array(teacher_logits, "teacher_logits")
        _check_rows((student_logits, teacher_logits), ("student_logits", "teacher_logits"), -1)
    shape = tuple(student_logits.shape)
    where = None
    if labels is not None:
        lab = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
        if lab.shape != shape[:-1]:
            raise ValueError(f"labels: expected shape {shape[:-1]}, got {lab.shape}")
        where = lab != -100
    options = {"p_form": "logits", "q_form": "logits", "temperature": temperature,
               "where": where, "reduction": "sum"}  # fmt: skip
    if beta == 0.0:
        total = module.kl_div(teacher_logits, student_logits, **options)
    elif beta == 1.0:
        total = module.kl_div(student_logits, teacher_logits, **options)
    else:
        total = module.js_div(teacher_logits, student_logits, beta=beta, **options)
    tokens = int(where.sum()) if where is not None else math.prod(shape[:-1])
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        count = tokens if where is not None else shape[0] * shape[1]
    else:
        count = tokens * shape[-1]
    if count == 0:
        return total * math.nan
    return total / count
