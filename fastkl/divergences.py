r"""The divergence registry: everything that is true of each row-wise divergence, once.

Every consumer reads these specs: the public functions of :mod:`fastkl` (their names, which
keywords they take, their docstrings' formulas), the CPU and CUDA backends (the terms their
kernels are specialized from, the post step), the C API (which entry points exist, their
names and signatures), ``fastkl score --divergence``, :mod:`fastkl.dask`, the warm-up and the
documentation's tables. Nothing compares divergence names as strings: a consumer holds a
:class:`Divergence` (or its :class:`Terms`) and reads its fields.

The scalar formulas themselves are defined once, in ``fastkl._math``; a spec points at them.
Adding a divergence is a spec here and its terms there.

Examples
--------
>>> from fastkl.divergences import REGISTRY, lookup
>>> [d.name for d in REGISTRY][:3]
['kl_div', 'js_div', 'js_distance']
>>> lookup("sym").name  # the command line's old spelling, kept as an alias
'sym_kl'
>>> lookup("js_distance").terms is lookup("js_div").terms  # one kernel, two post steps
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import _math

__all__ = ["REGISTRY", "Divergence", "Terms", "lookup"]

Post = Literal["none", "clamp", "sqrt"]

#: the kernels' codes of the post steps (``_math.finish_row``)
_POST_CODES = {"none": _math.POST_NONE, "clamp": _math.POST_CLAMP, "sqrt": _math.POST_SQRT}

#: one moment: (the side that weighs it, coefficient of log p, coefficient of log q)
Moment = tuple[int, float, float]


@dataclass(frozen=True)
class Terms:
    """What a divergence's kernels compute per element: the sum over j of a term.

    Kernels are compiled per :class:`Terms` (and form pair, dtype, ...), and cached under it:
    two divergences that differ only in their post step (``js_div`` and ``js_distance``) share
    their kernels.
    """

    #: names the compiled kernels (``fastkl-cache`` files, PTX, profiles)
    tag: str
    #: the exact term ``(p, q, log p, log q)`` in float64, every special value handled; None
    #: for KL, whose kernels bind ``_math.kl_term`` or ``kl_term_log`` per form pair
    exact: Callable[..., Any] | None
    #: the fast term ``(p, q, log p, log q, log(p / q))`` in the input's precision, NaN
    #: wherever it is not exact (the row is then computed again by ``exact``)
    fast: Callable[..., Any] | None
    #: whether the term reads q (entropy reads p only)
    reads_q: bool = True
    #: whether the exact term reads the log of a probability side (else none is taken)
    needs_log: bool = True
    #: the moments of a divergence linear in log p and log q (``_math`` explains them): one
    #: pass over log-score rows on the GPU. Empty: two passes (a side's statistics, then terms)
    moments: tuple[Moment, ...] = ()
    #: the value from the moments ``(e1, e2, mass p, mass q)``
    from_moments: Callable[..., Any] | None = None
    #: whether ``from_moments`` reads the sides' masses
    uses_masses: bool = False
    #: >= 0 between two normalized distributions (Gibbs): a rounding below 0 is clamped
    nonnegative: bool = False
    #: KL's own CPU kernels (its terms split into sums that a finish step rescales, rows of
    #: k <= 8 in one flat kernel); the others share the family's template
    own_kernels: bool = False
    #: the term and its partial derivatives ``(p, q, log p, log q, beta) -> (t, dt/dp, dt/dq,
    #: dt/dlog p, dt/dlog q)`` in float64: the training kernels (values with a gradient, a
    #: temperature or a skew) chain them through each side's form
    grad: Callable[..., Any] | None = None


@dataclass(frozen=True)
class Divergence:
    """One public row-wise function and everything true of it."""

    #: the public function (``fastkl.<name>``), the C stem (``fastkl_<name>_f64``) and the
    #: command line's ``--divergence`` spelling: one name everywhere
    name: str
    #: one line for tables and summaries
    summary: str
    #: the definition in LaTeX, ``symbol = sum``: the docstring's formula and the docs' tables
    formula: str
    terms: Terms
    #: the step after a row's sum: none, a clamp at 0 (rounding never makes it negative,
    #: NaN kept), or the clamp and a square root (a distance)
    post: Post = "none"
    #: the inputs are nonnegative measures whose totals are not checked (``validate=True``)
    measures: bool = False
    #: whether it has a ``base`` keyword (a sum of logarithms; TV and Hellinger have none)
    uses_base: bool = True
    #: whether the C library exports it
    in_capi: bool = True
    #: other spellings a caller may use (``fastkl score --divergence js``)
    aliases: tuple[str, ...] = ()
    #: what ``reduction="none"`` is bounded by for distributions (documentation)
    bounds: str = "[0, inf]"
    #: whether it has a ``beta`` keyword: the skew of a mixture (Jensen-Shannon's M)
    skewed: bool = False

    @property
    def reads_q(self) -> bool:
        return self.terms.reads_q

    @property
    def post_code(self) -> int:
        """The post step as the kernels' code (``_math.POST_*``)."""
        return _POST_CODES[self.post]

    @property
    def c_name(self) -> str | None:
        """The C functions' stem: ``<c_name>_f32`` and ``<c_name>_f64`` (None: not exported)."""
        return f"fastkl_{self.name}" if self.in_capi else None

    @property
    def cli_name(self) -> str | None:
        """``fastkl score --divergence`` (two-sided divergences only; None otherwise)."""
        return self.name if self.reads_q else None


KL = Terms(
    "kl",
    None,
    None,
    moments=((_math.MOMENT_P, 1.0, -1.0),),
    from_moments=_math.kl_from_moments,
    nonnegative=True,
    own_kernels=True,
    grad=_math.kl_grad,
)
JS = Terms("js", _math.js_term, _math.js_term_fast, needs_log=False, grad=_math.js_grad)
SYM_KL = Terms(
    "sym_kl",
    _math.sym_kl_term,
    _math.sym_kl_term_fast,
    moments=((_math.MOMENT_P, 1.0, -1.0), (_math.MOMENT_Q, 1.0, -1.0)),
    from_moments=_math.sym_kl_from_moments,
    nonnegative=True,
    grad=_math.sym_kl_grad,
)
CROSS_ENTROPY = Terms(
    "cross_entropy",
    _math.cross_entropy_term,
    _math.cross_entropy_term_fast,
    moments=((_math.MOMENT_P, 0.0, 1.0),),
    from_moments=_math.cross_entropy_from_moments,
    grad=_math.cross_entropy_grad,
)
ENTROPY = Terms(
    "entropy",
    _math.entropy_term,
    _math.entropy_term_fast,
    reads_q=False,
    moments=((_math.MOMENT_P, 1.0, 0.0),),
    from_moments=_math.entropy_from_moments,
    grad=_math.entropy_grad,
)
TV = Terms("tv", _math.tv_term, _math.tv_term_fast, needs_log=False, grad=_math.tv_grad)
HELLINGER = Terms(
    "hellinger",
    _math.hellinger_term,
    _math.hellinger_term_fast,
    needs_log=False,
    grad=_math.hellinger_grad,
)
GENERALIZED_KL = Terms(
    "generalized_kl",
    _math.generalized_kl_term,
    _math.generalized_kl_term_fast,
    moments=((_math.MOMENT_P, 1.0, -1.0),),
    from_moments=_math.generalized_kl_from_moments,
    uses_masses=True,
    nonnegative=True,
    grad=_math.generalized_kl_grad,
)

#: Every row-wise divergence, in the order of the documentation's tables.
REGISTRY: tuple[Divergence, ...] = (
    Divergence(
        "kl_div",
        "Kullback-Leibler divergence D(P || Q)",
        r"D(P \,\|\, Q) = \sum_j p_j \log \frac{p_j}{q_j}",
        KL,
        aliases=("kl",),
    ),
    Divergence(
        "js_div",
        "Jensen-Shannon divergence",
        r"\mathrm{JS}(P, Q) = \tfrac12 D(P \,\|\, M) + \tfrac12 D(Q \,\|\, M),"
        r" \qquad M = \tfrac12 (P + Q)",
        JS,
        post="clamp",
        aliases=("js",),
        bounds="[0, log 2]",
        skewed=True,
    ),
    Divergence(
        "js_distance",
        "Jensen-Shannon distance, the square root of js_div (a metric)",
        r"d_{\mathrm{JS}}(P, Q) = \sqrt{\mathrm{JS}(P, Q)}",
        JS,
        post="sqrt",
        in_capi=False,
        bounds="[0, sqrt(log 2)]",
        skewed=True,
    ),
    Divergence(
        "sym_kl",
        "Jeffreys divergence D(P || Q) + D(Q || P)",
        r"J(P, Q) = \sum_j (p_j - q_j) \log \frac{p_j}{q_j}",
        SYM_KL,
        aliases=("sym",),
    ),
    Divergence(
        "cross_entropy",
        "Cross-entropy H(P, Q) = H(P) + D(P || Q)",
        r"H(P, Q) = -\sum_j p_j \log q_j = H(P) + D(P \,\|\, Q)",
        CROSS_ENTROPY,
    ),
    Divergence(
        "entropy",
        "Shannon entropy H(P)",
        r"H(P) = -\sum_j p_j \log p_j",
        ENTROPY,
        bounds="[0, log k]",
    ),
    Divergence(
        "generalized_kl",
        "Generalized KL divergence of nonnegative measures",
        r"D_g(P \,\|\, Q) = \sum_j \Big( p_j \log \frac{p_j}{q_j} - p_j + q_j \Big)",
        GENERALIZED_KL,
        measures=True,
        in_capi=False,
    ),
    Divergence(
        "tv_distance",
        "Total variation distance, half the L1 distance (a metric)",
        r"\delta(P, Q) = \tfrac12 \sum_j |p_j - q_j|",
        TV,
        uses_base=False,
        bounds="[0, 1]",
    ),
    Divergence(
        "hellinger",
        "Hellinger distance (a metric)",
        r"H(P, Q) = \sqrt{\tfrac12 \sum_j \big(\sqrt{p_j} - \sqrt{q_j}\big)^2}",
        HELLINGER,
        post="sqrt",
        uses_base=False,
        bounds="[0, 1]",
    ),
)

_BY_NAME = {alias: d for d in REGISTRY for alias in (d.name, *d.aliases)}


def lookup(name: str) -> Divergence:
    """The spec of divergence ``name`` (its public name or an alias), or a ValueError that
    lists the names."""
    spec = _BY_NAME.get(name) if isinstance(name, str) else None
    if spec is None:
        names = ", ".join(repr(d.name) for d in REGISTRY)
        raise ValueError(f"divergence: expected one of {names}, got {name!r}")
    return spec
