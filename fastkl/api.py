"""Public functions: each names its divergence's spec; ``_driver`` does the rest.

The row-wise functions share their keywords, and these are written once here: their types
(:class:`Options`, what type checkers and IDEs read), their defaults and their documentation
(:data:`KEYWORDS`). :func:`rowwise` turns a short declaration (a name, a docstring with the
function's own formula, notes and examples) into a real function with the full signature, so
``help()``, ``inspect.signature`` and the documentation see every keyword.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar, Unpack

import numpy as np
from numpy.typing import ArrayLike

from . import _driver, _prepare, _warmup
from .divergences import Divergence, lookup

_warmup.notify_slow_compiles()  # a first call that compiles says so

Form = Literal["probs", "log_probs", "logits"]
Reduction = Literal["none", "sum", "mean"]
Device = Literal["cpu", "cuda"]
Grad = Literal["p", "q", "both"]


class _Common(TypedDict, total=False):
    axis: int
    reduction: Reduction
    where: ArrayLike | None
    weights: ArrayLike | None
    temperature: float
    eps: float | None
    normalize: bool
    validate: bool
    grad: Grad | None
    grad_out: Any
    out: np.ndarray | None
    device: Device | None


class EntropyOptions(_Common, total=False):
    """The keywords of a divergence of one side (entropy)."""

    p_form: Form
    base: float | None


class DistanceOptions(_Common, total=False):
    """The keywords of a divergence of two sides without a log base (TV, Hellinger)."""

    p_form: Form
    q_form: Form


class Options(DistanceOptions, total=False):
    """The keywords of a divergence of two sides (KL, Jensen-Shannon, ...)."""

    base: float | None


class SkewedOptions(Options, total=False):
    """The keywords of Jensen-Shannon, whose mixture has a skew."""

    beta: float


@dataclass(frozen=True)
class Keyword:
    """A shared keyword: its default and its entry in the Parameters section."""

    default: Any
    doc: str


#: The shared keywords in signature order, with their defaults and documentation.
KEYWORDS: dict[str, Keyword] = {
    "p_form": Keyword(
        "probs",
        """\
p_form, q_form : {"probs", "log_probs", "logits"}
    How each side is given: probabilities, natural-log probabilities, or unnormalized
    log-scores (a log-softmax along ``axis`` is fused into the kernel, never
    materialized). Each side independently.""",
    ),
    "q_form": Keyword("probs", ""),  # documented with p_form
    "axis": Keyword(
        -1,
        """\
axis : int
    The axis along which each distribution lies.""",
    ),
    "reduction": Keyword(
        "none",
        """\
reduction : {"none", "sum", "mean"}
    "none": an array of the inputs' broadcast shape without ``axis`` (a numpy scalar when
    that shape is ``()``). "sum": the sum over all distributions. "mean": the mean over
    distributions (torch's ``reduction="batchmean"`` for 2-d inputs, Keras's
    ``"sum_over_batch_size"``); NaN for an empty batch. Reductions return a numpy scalar of
    the result dtype, summed in float64 in a fixed order (the same total for any chunking).""",
    ),
    "where": Keyword(
        None,
        """\
where : array_like of bool, optional
    The distributions that count, broadcastable to the batch shape (the result's shape with
    ``reduction="none"``): numpy's spelling of torch's ``ignore_index``. A row where it is
    False gives 0 with "none" (whatever it holds: padding, NaN) and is left out of "sum"
    and "mean"; the mean divides by the number of rows kept (NaN if none is).
    ``validate=True`` checks the kept rows only.""",
    ),
    "weights": Keyword(
        None,
        """\
weights : array_like, optional
    Finite weights >= 0 per distribution, broadcastable to the batch shape: "sum" gives
    ``sum w_i d_i`` and "mean" ``sum w_i d_i / sum w_i`` (NaN if that is 0); a row of
    weight 0 adds nothing, even where its value is inf or NaN. Not with "none".""",
    ),
    "base": Keyword(
        None,
        """\
base : float, optional
    Logarithm base: None for nats, 2 for bits, any finite base > 0 and != 1.""",
    ),
    "beta": Keyword(
        0.5,
        """\
beta : float
    The skew, in [0, 1]: the divergence is :math:`\\beta D(P \\| M) + (1 - \\beta) D(Q \\| M)`
    with :math:`M = \\beta P + (1 - \\beta) Q` (0.5, the default, is the symmetric
    divergence). Continuous at both ends, where it is 0 (M is then Q or P). TRL's and
    Liger-Kernel's generalized JSD instead take beta = 0 as forward and beta = 1 as reverse
    KL, with P the teacher: :func:`fastkl.compat.trl_generalized_jsd_loss` reproduces it.""",
    ),
    "temperature": Keyword(
        1.0,
        """\
temperature : float
    A finite T > 0: every side is read as ``softmax(log(side) / T)`` (logits are divided by
    T before their log-softmax, log-probabilities divided by T and renormalized,
    probabilities raised to ``1 / T`` and renormalized), fused, never materialized. No
    :math:`T^2` factor: Hinton's distillation loss multiplies the result by ``T ** 2``
    (which scales its gradient too).""",
    ),
    "eps": Keyword(
        None,
        """\
eps : float, optional
    A float in (0, 1): clip both probabilities to ``[eps, 1]`` first, as Keras's
    ``kl_divergence`` does with ``eps=1e-7`` (for log forms, the log-probabilities are
    clipped to ``[log(eps), 0]``). None (the default) keeps the exact semantics.""",
    ),
    "normalize": Keyword(
        False,
        """\
normalize : bool
    Divide each probability row by its sum first (what ``scipy.stats.entropy`` and
    torchmetrics do). For ``log_probs`` it subtracts the row's log-sum-exp (the row is then
    read as logits); logits are normalized anyway. Normalization comes before clipping.""",
    ),
    "validate": Keyword(
        False,
        """\
validate : bool
    Check the inputs first (one extra pass) and raise ValueError naming the first invalid
    row: a NaN, a negative probability, a +inf log-probability or logit, or a row whose
    total probability differs from 1 by more than ``max(1e-6, sqrt(k) * finfo(dtype).eps)``
    (``dtype`` being that input's, so about 1e-6 for float32 rows of 64 and 4e-5 for
    100,000). With ``normalize=True`` probability rows only need a positive sum.""",
    ),
    "grad": Keyword(
        None,
        """\
grad : {None, "p", "q", "both"}
    Also return the gradient of the returned value (with ``reduction="none"``, of the sum of
    the rows) with respect to that input as given, computed in the same pass: ``(value,
    grad)``, or ``(value, grad_p, grad_q)`` for "both". For logits, the gradient with
    respect to the logits (through ``temperature``); for log-probabilities or
    probabilities, with respect to their entries as free coordinates (through
    ``normalize`` and ``eps``, 0 where ``eps`` clips). Each has its input's shape and dtype
    (a broadcast input's is summed over the broadcast, as autograd does); ``where`` and
    ``weights`` apply (a row left out has 0). See the guide "Training with fastkl" for the
    values at zeros and infinities.""",
    ),
    "grad_out": Keyword(
        None,
        """\
grad_out : ndarray or (ndarray, ndarray), optional
    Preallocated gradient arrays (a pair for ``grad="both"``) of each input's shape and
    dtype, filled and returned; the input itself is allowed (its gradient overwrites it, as
    Liger-Kernel does, which saves an array of the inputs' size).""",
    ),
    "out": Keyword(
        None,
        """\
out : ndarray, optional
    For ``reduction="none"``: an array of the result's shape and dtype, writable and not
    overlapping the inputs, filled and returned (on the GPU: any CUDA array).""",
    ),
    "device": Keyword(
        None,
        """\
device : {None, "cpu", "cuda"}
    Where to compute. None (the default): on the GPU when an input or ``out`` exposes
    ``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA tensors),
    read in place, with the rows returned as a numba device array; else on the CPU.
    "cuda" with numpy inputs streams them through the GPU in row chunks (inputs larger
    than the GPU's memory work) and returns numpy results. Reductions return a numpy
    scalar either way. Needs the ``cuda`` extra and an NVIDIA GPU (RuntimeError
    otherwise).""",
    ),
}

_ARRAYS_DOC = {
    ("p", "q"): """\
p, q : array_like
    The distributions P (the reference, "target") and Q (the approximation): float16
    (computed in float32), float32 or float64 arrays, numpy memmaps or anything with
    ``__array__``. Both have the same length ``k >= 1`` along ``axis``; all other
    dimensions broadcast by numpy's rules, without copies: one reference row ``q`` of
    shape ``(k,)`` scores against every row of ``p`` of shape ``(n, k)``. Strided,
    sliced and Fortran-ordered inputs are read in place or a bounded block of rows at a
    time.""",
    ("p",): """\
p : array_like
    The distributions: float16 (computed in float32), float32 or float64 arrays, any
    layout, the same inputs as :func:`kl_div` takes.""",
}

_RETURNS = """\
Returns
-------
ndarray or numpy scalar
    float64 if either input is float64, else float32. Rows accumulate in float64.
grad, grad_p, grad_q : ndarray
    With ``grad``: the value and the gradient(s) as a tuple (see ``grad``).

Raises
------
TypeError
    A non-floating input (integer, bool, complex, object), an option of the wrong type, a
    ``where`` that is not boolean or ``weights`` that are not real numbers.
ValueError
    Mismatched lengths along ``axis``, shapes that do not broadcast, 0-d inputs, ``k == 0``,
    an unknown form or reduction, %(base)s``eps`` outside (0, 1), a ``temperature`` that
    is not finite and > 0, %(beta)san unknown ``grad``, a ``grad_out`` of the wrong shape
    or dtype or read-only or overlapping another array, an ``out`` of the wrong shape or
    dtype or read-only or overlapping an input, a ``where`` or ``weights`` that does not
    broadcast to the batch shape, negative or non-finite ``weights``, ``weights`` with
    ``reduction="none"``, and with ``validate=True`` an invalid row."""


def keywords(spec: Divergence) -> list[str]:
    """The shared keywords that ``spec``'s function takes, in signature order."""
    return [
        name
        for name in KEYWORDS
        if (name != "q_form" or spec.reads_q)
        and (name != "base" or spec.uses_base)
        and (name != "beta" or spec.skewed)
    ]


def _indent(text: str) -> str:
    return "\n".join(("    " + line) if line else line for line in text.splitlines())


def _returns(spec: Divergence) -> str:
    """The Returns and Raises sections of ``spec``'s function."""
    base = "``base <= 0`` or ``== 1``, " if spec.uses_base else ""
    beta = "a ``beta`` outside [0, 1], " if spec.skewed else ""
    return _RETURNS.replace("%(base)s", base).replace("%(beta)s", beta)


def _docstring(spec: Divergence, doc: str, arrays: tuple[str, ...]) -> str:
    entries = [_ARRAYS_DOC[arrays]]
    for name in keywords(spec):
        if name == "p_form" and not spec.reads_q:
            entries.append(
                'p_form : {"probs", "log_probs", "logits"}\n'
                "    How P is given (a log-softmax of logits is fused)."
            )
        elif KEYWORDS[name].doc:
            entries.append(KEYWORDS[name].doc)
    parameters = "Parameters\n----------\n" + "\n".join(entries)
    formula = f".. math::\n\n    {spec.formula}"
    return doc % {
        "formula": _indent(formula).lstrip(),
        "parameters": _indent(parameters).lstrip(),
        "returns": _indent(_returns(spec)).lstrip(),
    }


F = TypeVar("F", bound=Callable[..., Any])


def rowwise(name: str) -> Callable[[F], F]:
    """Make the declared function ``name`` a row-wise function of the registry's spec.

    The declaration gives the positional arrays and the docstring (with ``%(formula)s``,
    ``%(parameters)s`` and ``%(returns)s`` filled from the spec and :data:`KEYWORDS`); the
    result is a new function with the full keyword signature that calls the driver.
    """
    spec = lookup(name)

    def make(declared: F) -> F:
        arrays = ("p", "q") if spec.reads_q else ("p",)
        kws = keywords(spec)
        params = ", ".join(arrays) + ", *, " + ", ".join(f"{k}=_D[{k!r}]" for k in kws)
        options = ", ".join(f"{k!r}: {k}" for k in kws)
        source = (
            "def make(_D, _SPEC, _rowwise):\n"
            f"    def {name}({params}):\n"
            f"        return _rowwise(_SPEC, ({', '.join(arrays)},), {{{options}}})\n"
            f"    return {name}\n"
        )
        factory: dict[str, Any] = {}
        # a real function whose signature is the keywords' own, and whose globals are the
        # declaring module's (type hints resolve there)
        exec(compile(source, f"<fastkl.api.{name}>", "exec"), declared.__globals__, factory)
        defaults = {k: KEYWORDS[k].default for k in kws}
        fn = factory["make"](defaults, spec, _driver.rowwise)
        hints = {**SkewedOptions.__annotations__, **EntropyOptions.__annotations__}
        fn.__annotations__ = {
            **dict.fromkeys(arrays, "ArrayLike"),
            **{k: getattr(hints[k], "__forward_arg__", hints[k]) for k in kws},
            "return": "Any",
        }
        fn.__module__ = declared.__module__
        fn.__qualname__ = declared.__qualname__
        fn.__doc__ = _docstring(spec, declared.__doc__ or "", arrays)
        fn.spec = spec  # the registry's entry, for the backends' and the docs' readers
        fn.__signature__ = inspect.signature(fn)  # stops inspect at the full signature
        fn.__wrapped__ = declared  # the source a reader (or Sphinx) is sent to
        return fn

    return make


# --- the row-wise functions ------------------------------------------------------------------


@rowwise("kl_div")
def kl_div(p: ArrayLike, q: ArrayLike, **options: Unpack[Options]) -> Any:
    r"""Kullback-Leibler divergence D(P || Q) of every distribution along ``axis``.

    %(formula)s

    with the exact conventions: a term is 0 where :math:`p_j = 0` (also where :math:`q_j = 0`
    or :math:`\log q_j = -\infty`), :math:`+\infty` where :math:`p_j > 0` and :math:`q_j = 0`,
    and a NaN anywhere in a row makes that row NaN. There is never a NaN from
    :math:`0 \log 0` or :math:`0 \cdot (-\infty)` (``torch.nn.functional.kl_div`` returns NaN
    there; this returns the true value). Negative probabilities give NaN.

    %(parameters)s

    %(returns)s

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


@rowwise("js_div")
def js_div(p: ArrayLike, q: ArrayLike, **options: Unpack[SkewedOptions]) -> Any:
    r"""Jensen-Shannon divergence of every pair of distributions along ``axis``.

    %(formula)s

    in one pass: M is never formed. Symmetric, bounded by :math:`\log 2` (1 with ``base=2``)
    for distributions, and finite whatever the zeros: a term is 0 where its weight is 0. A
    NaN in a row makes the row NaN; negative probabilities give NaN. Rounding never makes a
    row negative (it is clamped at 0, NaN kept).

    %(parameters)s

    %(returns)s

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


@rowwise("js_distance")
def js_distance(p: ArrayLike, q: ArrayLike, **options: Unpack[SkewedOptions]) -> Any:
    r"""Jensen-Shannon distance: the square root of :func:`js_div`, a metric.

    %(formula)s

    The divergence is clamped at 0 before the root, so rounding never gives NaN on
    near-identical rows (``scipy.spatial.distance.jensenshannon`` can: scipy issues 20083
    and 20779). ``base`` applies to the divergence, as in scipy. Reductions average or sum
    the distances.

    %(parameters)s

    %(returns)s

    Examples
    --------
    >>> import fastkl
    >>> fastkl.js_distance([0.1, 0.2, 0.7], [0.1, 0.2, 0.7])
    np.float64(0.0)
    >>> round(float(fastkl.js_distance([1.0, 0.0], [0.0, 1.0], base=2)), 12)
    1.0
    """


@rowwise("sym_kl")
def sym_kl(p: ArrayLike, q: ArrayLike, **options: Unpack[Options]) -> Any:
    r"""Symmetric (Jeffreys) divergence D(P || Q) + D(Q || P), in one pass.

    %(formula)s

    A term is 0 where both :math:`p_j` and :math:`q_j` are 0 and :math:`+\infty` where
    exactly one of them is; a NaN in a row makes the row NaN.

    %(parameters)s

    %(returns)s

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.sym_kl([0.1, 0.9], [0.4, 0.6])), 12)  # 0.226289 + 0.311239
    0.537527840768
    >>> fastkl.sym_kl([0.5, 0.5, 0.0], [0.5, 0.0, 0.5])
    np.float64(inf)
    """


@rowwise("cross_entropy")
def cross_entropy(p: ArrayLike, q: ArrayLike, **options: Unpack[Options]) -> Any:
    r"""Cross-entropy H(P, Q) of every pair of distributions along ``axis``.

    %(formula)s

    A term is 0 where :math:`p_j = 0` (whatever :math:`q_j`) and :math:`+\infty` where
    :math:`p_j > 0` and :math:`q_j = 0`. With ``q_form="logits"`` this is the softmax
    cross-entropy loss against soft (or one-hot) targets P, fused.

    %(parameters)s

    %(returns)s

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.cross_entropy([0.0, 1.0], [0.2, 0.8])), 12)  # -log 0.8
    0.223143551314
    >>> fastkl.cross_entropy([[1.0, 0.0, 0.0]], [[2.0, 1.0, 0.1]], q_form="logits")
    array([0.41703002])
    """


@rowwise("entropy")
def entropy(p: ArrayLike, **options: Unpack[EntropyOptions]) -> Any:
    r"""Shannon entropy H(P) of every distribution along ``axis``.

    %(formula)s

    with :math:`0 \log 0 = 0`; a NaN in a row makes the row NaN, a negative probability
    gives NaN.

    %(parameters)s

    %(returns)s

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


@rowwise("generalized_kl")
def generalized_kl(p: ArrayLike, q: ArrayLike, **options: Unpack[Options]) -> Any:
    r"""Generalized KL divergence of nonnegative measures that need not sum to 1.

    %(formula)s

    the row sum of ``scipy.special.kl_div`` and optax's ``generalized_kl_divergence``; it is
    :func:`kl_div` when both rows sum to 1, and >= 0 for any measures. A term is
    :math:`q_j` where :math:`p_j = 0`, :math:`+\infty` where :math:`p_j > 0` and
    :math:`q_j = 0`. ``validate=True`` checks signs and NaN but not the totals. (``base``
    divides the whole sum by :math:`\log` base.)

    %(parameters)s

    %(returns)s

    Examples
    --------
    >>> import fastkl
    >>> round(float(fastkl.generalized_kl([2.0, 0.0], [1.0, 3.0])), 12)  # 2 log 2 - 2 + 4
    3.38629436112
    """


@rowwise("tv_distance")
def tv_distance(p: ArrayLike, q: ArrayLike, **options: Unpack[DistanceOptions]) -> Any:
    r"""Total variation distance of every pair of distributions along ``axis``.

    %(formula)s

    The largest difference between the probabilities that P and Q assign to one event; a metric, in
    [0, 1] for distributions (1 for disjoint supports), what drift monitoring compares
    histograms with beside KL, JS and PSI. Zeros need no care (no logarithm is taken); a
    negative probability or a NaN in a row makes the row NaN. Log-score sides are read as
    their softmax (fused), so it also compares two models' logits. No ``base``: it is not
    a sum of logarithms.

    %(parameters)s

    %(returns)s

    See Also
    --------
    hellinger : a distance that weighs small probabilities more.

    Examples
    --------
    >>> import fastkl
    >>> fastkl.tv_distance([[0.1, 0.9], [0.5, 0.5]], [0.4, 0.6])
    array([0.3, 0.1])
    >>> float(fastkl.tv_distance([1.0, 0.0], [0.0, 1.0]))  # disjoint supports
    1.0
    """


@rowwise("hellinger")
def hellinger(p: ArrayLike, q: ArrayLike, **options: Unpack[DistanceOptions]) -> Any:
    r"""Hellinger distance of every pair of distributions along ``axis``.

    %(formula)s

    A metric in [0, 1] for distributions (1 for disjoint supports); its square is
    :math:`1 - \sum_j \sqrt{p_j q_j}`, one minus the Bhattacharyya coefficient. Each term
    is computed as :math:`\big((p_j - q_j) / (\sqrt{p_j} + \sqrt{q_j})\big)^2`, so
    near-identical rows keep their precision (the difference of square roots would cancel).
    Zeros need no care; a negative probability or a NaN in a row makes the row NaN. The sum
    is clamped at 0 before the square root. No ``base``: it is not a sum of logarithms.

    %(parameters)s

    %(returns)s

    See Also
    --------
    tv_distance : total variation, which it bounds: :math:`H^2 \le \delta \le \sqrt2 H`.

    Examples
    --------
    >>> import fastkl
    >>> fastkl.hellinger([[0.1, 0.9], [0.5, 0.5]], [0.4, 0.6])
    array([0.25525101, 0.07116071])
    >>> float(fastkl.hellinger([1.0, 0.0], [0.0, 1.0]))  # disjoint supports
    1.0
    """


# --- closed forms -----------------------------------------------------------------------------


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
    divisor = _prepare.parse_base(base)
    return _driver.closed_form("bernoulli", (p, q), ("p", "q"), axis, reduction, divisor)


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
    arrays = (mu_p, sigma_p, mu_q, sigma_q)
    names = ("mu_p", "sigma_p", "mu_q", "sigma_q")
    return _driver.closed_form("gaussian", arrays, names, axis, reduction)


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
    return _driver.closed_form("vae", (mu, logvar), ("mu", "logvar"), axis, reduction)
