"""The scalar definitions: every divergence formula of fastkl, written once.

These are plain Python functions on scalars. No decorator: each target compiles them
(``fastkl._config.compile_scalars``): the CPU kernels as plain ``njit`` functions that LLVM
inlines into the vectorized loops, the C API through the same CPU kernels, CUDA as device
functions. The names ``log``, ``exp``, ``log_core`` and ``log_ratio_core`` are resolved per
target too, so a target can substitute its own implementation (a vectorizable log on the CPU,
libdevice's on the GPU) without a second copy of any formula.

Exact semantics, shared by every path:

* ``0 * log(0 / q) = 0`` for any q (a zero probability contributes nothing), but a NaN
  anywhere still propagates;
* ``p * log(p / 0) = +inf`` for p > 0;
* never a NaN from ``0 * log 0`` or ``0 * (-inf)``.
"""

from math import exp, expm1, inf, log, log1p, nan, sqrt  # noqa: F401  (exp, log: per target)

# ``log_core`` is a log that only needs to be right for positive normal finite inputs (the CPU
# binds a vectorizable polynomial without special-value handling); by default the full log.
log_core = log

__all__ = [
    "bernoulli_term",
    "clip",
    "cross_entropy_from_moments",
    "cross_entropy_grad",
    "cross_entropy_term",
    "cross_entropy_term_fast",
    "entropy_from_moments",
    "entropy_grad",
    "entropy_term",
    "entropy_term_fast",
    "exact_div",
    "finish_row",
    "gaussian_term",
    "generalized_kl_from_moments",
    "generalized_kl_grad",
    "generalized_kl_term",
    "generalized_kl_term_fast",
    "hellinger_grad",
    "hellinger_term",
    "hellinger_term_fast",
    "js_grad",
    "js_skew_term",
    "js_term",
    "js_term_fast",
    "kl_from_moments",
    "kl_grad",
    "kl_term",
    "kl_term_fast",
    "kl_term_log",
    "kl_term_log_fast",
    "like",
    "log_ratio_core",
    "max_nan",
    "post_slope",
    "ratio_guard",
    "sym_kl_from_moments",
    "sym_kl_grad",
    "sym_kl_term",
    "sym_kl_term_fast",
    "tv_grad",
    "tv_term",
    "tv_term_fast",
    "vae_term",
]

# Input forms, shared with the C API's FASTKL_PROBS / FASTKL_LOG_PROBS / FASTKL_LOGITS.
PROBS = 0
LOG_PROBS = 1
LOGITS = 2


def clip(x, lo, hi):
    """``x`` clipped to ``[lo, hi]``, NaN kept (``min``/``max`` would drop it)."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def max_nan(a, b):
    """The larger of ``a`` and ``b``; NaN if ``a`` is NaN (so a NaN row stays NaN)."""
    return a if (a >= b or a != a) else b


def like(x, value):
    """``value`` in x's floating type. A target binds its own (on the CPU a float literal
    would otherwise promote float32 arithmetic to float64 and halve the vector width)."""
    return value


def exact_div(x, a):
    """``x / a`` as one IEEE division. A target whose compiler may multiply by ``1 / a``
    instead (fastmath's ``arcp``: inf for a subnormal ``a``, and 0 * inf = NaN) binds a
    version compiled without that licence."""
    return x / a


def ratio_guard(t, p, q):
    """``t`` where the fast terms are exact for (p, q), NaN elsewhere.

    The fast terms (``*_fast``) assume q positive, normal and finite and p zero or so: no
    special-value branch in a vector loop. A NaN here sends the row to the exact terms. The
    CPU binds a branch-free version on the floats' bits (``_simd.ratio_guard``).
    """
    tiny = 2.2250738585072014e-308  # float64's smallest normal (float32 rows are converted)
    q_ok = q >= tiny and q < inf
    p_ok = p == 0.0 or (p >= tiny and p < inf)
    return t if (q_ok and p_ok) else nan


def log_ratio_core(p, q):
    """``log(p / q)`` for positive normal finite p and q.

    A target may bind a form that never forms the quotient (the CPU's splits both floats into
    mantissa and exponent: one division, no overflow); this is the portable default.
    """
    return log_core(p / q)


def kl_term_fast(p, q):
    """``p * log(p / q)`` for positive normal finite p and q (or p == 0, where the CPU's
    ``log_ratio_core`` stays finite): the hot-loop form of :func:`kl_term`.

    No special cases: the fast kernels check every pair (``_simd.ratio_unsafe``) and recompute
    rows that hold any other value with :func:`kl_term`.
    """
    return p * log_ratio_core(p, q)


def kl_term(p, q):
    """``p * log(p / q)``: one term of KL(P||Q) from two probabilities, exactly.

    0 where p == 0, +inf where p > 0 and q == 0, NaN if p or q is NaN or negative (also
    where p == 0: a negative q is not a probability). Where the quotient under- or overflows
    although p and q are positive and finite (a subnormal q, or measures larger than 1), the
    logs are taken apart instead.
    """
    if not (p >= 0.0 and q >= 0.0):
        return nan  # a negative or NaN probability on either side, even where p == 0
    if p == 0.0:
        return p  # 0 whatever q is
    if q == 0.0:
        return inf  # also for q == -0.0, where p / q would be -inf and its log NaN
    r = p / q
    if r >= 1e-300 and r < inf:
        return p * log(r)  # the quotient keeps the precision of near-equal p and q
    if p > 0.0 and q > 0.0 and q < inf:
        return p * (log(p) - log(q))  # the quotient under- or overflowed
    return p * log(r)  # q == inf: -inf


def kl_term_log_fast(p, logp, logq):
    """``p * (log p - log q)``: the hot-loop form of :func:`kl_term_log` (p > 0, finite logs)."""
    return p * (logp - logq)


def kl_term_log(p, logp, logq):
    """``p * (log p - log q)``: one term of KL(P||Q) from p, its log, and the log of q.

    Same semantics as :func:`kl_term`: 0 where p == 0 (even where log q == -inf) unless log q is
    NaN; +inf where p > 0 and log q == -inf.
    """
    return kl_term_log_fast(p, logp, logq) if (p != 0.0 or logq != logq) else p


# --- the divergence family ------------------------------------------------------------------
#
# Each divergence has one exact term, on float64 probabilities and their logs ``(p, q, lp,
# lq)``, and one fast term for the vector loops, which also takes ``lr = log(p / q)`` (the
# CPU computes it from the quotient's mantissas for two probability inputs, as ``lp - lq``
# for log inputs) and guards itself: it is NaN wherever it is not exact, and the kernels then
# use the exact term for that row. The unused arguments cost nothing: the terms inline.


def js_term(p, q, lp, lq):
    """Jensen-Shannon: ``(p log(p / m) + q log(q / m)) / 2`` with ``m = (p + q) / 2``.

    Each half is 0 where its weight is 0, so the term is finite for any p, q >= 0; a negative
    or NaN input gives NaN.
    """
    m = 0.5 * p + 0.5 * q  # no overflow for huge measures
    if m < 2.2250738585072014e-308:
        # m subnormal or 0: the halving may have rounded p and q away (js of 0 and the
        # smallest subnormal gave q log(q / 0) = inf). The term is homogeneous in (p, q):
        # scale by 2**600 and back, both exact.
        p, q = p * 4.149515568880993e180, q * 4.149515568880993e180
        m = 0.5 * p + 0.5 * q
        return 0.5 * (kl_term(p, m) + kl_term(q, m)) * 2.409919865102884e-181
    return 0.5 * (kl_term(p, m) + kl_term(q, m))


def js_term_fast(p, q, lp, lq, lr):
    """:func:`js_term` for the vector loop. ``log(p / m) = log(2p / (p + q))``: the doubling
    is exact and the quotient form keeps near-equal p and q precise."""
    s = p + q
    s1 = s if s > like(s, 0.0) else like(s, 1.0)  # p == q == 0: two finite logs times 0
    t = p * log_ratio_core(p + p, s1) + q * log_ratio_core(q + q, s1)
    return ratio_guard(ratio_guard(t * like(t, 0.5), p + p, s1), q + q, s1)


def sym_kl_term(p, q, lp, lq):
    """Jeffreys: ``p log(p / q) + q log(q / p)``: 0 where p == q == 0, +inf where exactly one
    of them is 0."""
    return kl_term_log(p, lp, lq) + kl_term_log(q, lq, lp)


def sym_kl_term_fast(p, q, lp, lq, lr):
    """:func:`sym_kl_term` as ``(p - q) log(p / q)`` (both p and q positive)."""
    return ratio_guard(ratio_guard((p - q) * lr, p, q), q, p)


def cross_entropy_term(p, q, lp, lq):
    """``-p log q``: 0 where p == 0 (unless log q is NaN), +inf where p > 0 and q == 0, NaN
    for a negative or NaN p (whose log ``lp`` is NaN)."""
    if lp != lp:
        return lp
    return -(p * lq) if (p != 0.0 or lq != lq) else 0.0


def cross_entropy_term_fast(p, q, lp, lq, lr):
    """:func:`cross_entropy_term` for the vector loop."""
    return ratio_guard(-(p * lq), p, q)


def entropy_term(p, q, lp, lq):
    """``-p log p``: 0 where p == 0. (q is not read.)"""
    return -(p * lp) if p != 0.0 else p


def entropy_term_fast(p, q, lp, lq, lr):
    """:func:`entropy_term` for the vector loop."""
    return ratio_guard(-(p * lp), p, like(p, 1.0))


def generalized_kl_term(p, q, lp, lq):
    """``p log(p / q) - p + q`` for nonnegative measures (``scipy.special.kl_div``)."""
    return kl_term_log(p, lp, lq) - p + q


def generalized_kl_term_fast(p, q, lp, lq, lr):
    """:func:`generalized_kl_term` for the vector loop."""
    return ratio_guard(p * lr - p + q, p, q)


def tv_term(p, q, lp, lq):
    """Total variation: ``|p - q| / 2``. NaN where p or q is negative or NaN (their logs are
    not read)."""
    if not (p >= 0.0 and q >= 0.0):
        return nan
    return 0.5 * abs(p - q)


def tv_term_fast(p, q, lp, lq, lr):
    """:func:`tv_term` for the vector loop: NaN for a negative side (the exact path decides),
    zeros included (no logarithm is taken)."""
    t = abs(p - q) * like(p, 0.5)
    return t if (p >= like(p, 0.0) and q >= like(q, 0.0)) else like(t, nan)


def hellinger_term(p, q, lp, lq):
    """Squared Hellinger: ``(sqrt p - sqrt q)^2 / 2``, computed as
    ``((p - q) / (sqrt p + sqrt q))^2 / 2``: near-equal p and q keep their precision (the
    difference of the roots cancels, p - q does not). 0 where p == q == 0; NaN where p or q
    is negative or NaN; +inf where one side is +inf."""
    if not (p >= 0.0 and q >= 0.0):
        return nan
    s = sqrt(p) + sqrt(q)
    if s == 0.0:
        return 0.0
    if s == inf:
        d = sqrt(p) - sqrt(q)  # +inf, or NaN for inf against inf
        return 0.5 * d * d
    r = exact_div(p - q, s)
    return 0.5 * r * r


def hellinger_term_fast(p, q, lp, lq, lr):
    """:func:`hellinger_term` for the vector loop: NaN where it is not exact (a negative or
    infinite side: the exact path decides)."""
    nan_ = like(p, nan)
    s = sqrt(p if p >= like(p, 0.0) else nan_) + sqrt(q if q >= like(q, 0.0) else nan_)
    s1 = like(s, 1.0) if s == like(s, 0.0) else s  # p == q == 0: 0 / 1 (a NaN s stays NaN)
    r = (p - q) / s1
    return r * r * like(r, 0.5)


# --- moments: the divergences that are linear in the logs, for one pass over log-scores ------
#
# Every divergence of the family but Jensen-Shannon is a sum over j of a weight (p_j or q_j)
# times ``a log p_j + b log q_j``, plus the sides' masses. A log-score side is normalized by its
# log-sum-exp, known only at the end of a row; with its unnormalized weights w_j (the
# exponentials of its shifted logs l_j = x_j - m), its mass S = sum w_j and C = log S, each
# such sum is
#
#     e = sum_j (w_j / S) (a lp_j + b lq_j)
#       = (sum_j w_j (a l_pj + b l_qj) - (a C_p + b C_q) sum_j w_j) / S,
#
# so a single pass can accumulate sum w_j (a l_pj + b l_qj) and sum w_j as the row goes
# (rescaling both when a running maximum grows: the GPU's one-pass kernels). A probability
# side has w_j = p_j and l_j = log p_j, with S = sum p_j when it is normalized, else S = 1 and
# C = 0. A divergence's spec lists its moments as (weight side, a, b) (``Terms.moments`` in
# ``fastkl.divergences``); ``<name>_from_moments``
# gives its value from the moments' values e1, e2 and the sides' masses mp, mq (1 for a
# normalized side).

MOMENT_P = 0  # the moment is weighted by p
MOMENT_Q = 1  # by q


def kl_from_moments(e1, e2, mp, mq):
    """KL from its moment ``e1 = sum p (log p - log q)``."""
    return e1


def sym_kl_from_moments(e1, e2, mp, mq):
    """Jeffreys from ``e1 = sum p (log p - log q)`` and ``e2 = sum q (log p - log q)``."""
    return e1 - e2


def cross_entropy_from_moments(e1, e2, mp, mq):
    """Cross-entropy from ``e1 = sum p log q``."""
    return -e1


def entropy_from_moments(e1, e2, mp, mq):
    """Entropy from ``e1 = sum p log p``."""
    return -e1


def generalized_kl_from_moments(e1, e2, mp, mq):
    """Generalized KL from ``e1 = sum p (log p - log q)`` and the masses."""
    return e1 - mp + mq


# --- gradients: each divergence's term and its partial derivatives ---------------------------
#
# ``<name>_grad(p, q, lp, lq, beta)`` gives, in float64, the term t of ``<name>_term`` at
# probabilities p, q with logs lp, lq, and its partial derivatives: ``dt/dp``, ``dt/dq`` (the
# probabilities as free coordinates) and ``dt/dlog p = p dt/dp``, ``dt/dlog q = q dt/dq`` (the
# coordinates of a log-score side), the latter with their limits at a zero probability (0
# where the term is 0 along that side, never 0 * inf = NaN). ``beta`` is the skew of
# Jensen-Shannon; the others do not read it. The training kernels chain these through each
# side's form (softmax, normalization, clipping, temperature).


def js_skew_term(p, q, beta):
    """Skewed Jensen-Shannon: ``beta p log(p / m) + (1 - beta) q log(q / m)`` with
    ``m = beta p + (1 - beta) q``. 0 for beta 0 and 1 (m is then q or p), finite for any
    p, q >= 0; a negative or NaN input gives NaN. :func:`js_term` at beta = 1/2."""
    a = 1.0 - beta
    if beta == 0.0 or a == 0.0:
        # M is Q or P: 0 for any nonnegative p and q (beta p log(p / m) would be 0 * inf
        # where the supports differ)
        return 0.0 if (p >= 0.0 and q >= 0.0) else nan
    m = beta * p + a * q
    if m < 2.2250738585072014e-308 and m > 0.0:
        # as js_term: a subnormal m may have lost p or q to rounding; the term is homogeneous
        p, q = p * 4.149515568880993e180, q * 4.149515568880993e180
        m = beta * p + a * q
        return (beta * kl_term(p, m) + a * kl_term(q, m)) * 2.409919865102884e-181
    return beta * kl_term(p, m) + a * kl_term(q, m)


def kl_grad(p, q, lp, lq, beta):
    """KL's term ``p log(p / q)`` and its derivatives: ``log(p / q) + 1``, ``-p / q`` (0 where
    p is 0, -inf where p > 0 and q is 0), ``p (log(p / q) + 1)`` and ``-p``."""
    t = kl_term_log(p, lp, lq)
    dp = -inf if p == 0.0 else (lp - lq) + 1.0
    dq = 0.0 if p == 0.0 else -exact_div(p, q) if q != 0.0 else -inf
    return t, dp, dq, t + p, -p


def js_grad(p, q, lp, lq, beta):
    """Skewed Jensen-Shannon's term (:func:`js_skew_term`) and its derivatives
    ``beta log(p / m)`` and ``(1 - beta) log(q / m)``; in log coordinates its two halves,
    ``beta p log(p / m)`` and ``(1 - beta) q log(q / m)``. All 0 for beta 0 and 1 (the term
    is 0 for every p and q); at p = q = 0 the one-sided partials ``-beta log beta`` and
    ``-(1 - beta) log(1 - beta)``."""
    a = 1.0 - beta
    if beta == 0.0 or a == 0.0:
        # M is Q or P: the divergence is 0 for every p and q
        return js_skew_term(p, q, beta), 0.0, 0.0, 0.0, 0.0
    m = beta * p + a * q
    if m == 0.0:
        # p = q = 0: the one-sided partials, -beta log beta and -(1 - beta) log(1 - beta)
        return js_skew_term(p, q, beta), -beta * log(beta), -a * log(a), 0.0 * p, 0.0 * q
    hp = beta * kl_term(p, m)
    hq = a * kl_term(q, m)
    # the term is its two halves (js_skew_term's own sum), but where m is subnormal
    t = hp + hq if m >= 2.2250738585072014e-308 else js_skew_term(p, q, beta)
    lm = log(m)
    dp = -inf if p == 0.0 else beta * (lp - lm)
    dq = -inf if q == 0.0 else a * (lq - lm)
    return t, dp, dq, hp, hq


def sym_kl_grad(p, q, lp, lq, beta):
    """Jeffreys' term ``(p - q) log(p / q)`` and its derivatives ``log(p / q) + 1 - q / p``
    and ``log(q / p) + 1 - p / q``; in log coordinates ``p log(p / q) + p - q`` and
    ``q log(q / p) + q - p``."""
    hp = kl_term_log(p, lp, lq) + (p - q)
    hq = kl_term_log(q, lq, lp) + (q - p)
    dp = exact_div(hp, p) if p != 0.0 else (0.0 if q == 0.0 else -inf)
    dq = exact_div(hq, q) if q != 0.0 else (0.0 if p == 0.0 else -inf)
    return sym_kl_term(p, q, lp, lq), dp, dq, hp, hq


def cross_entropy_grad(p, q, lp, lq, beta):
    """Cross-entropy's term ``-p log q`` and its derivatives ``-log q`` and ``-p / q`` (0
    where p is 0); in log coordinates ``-p log q`` and ``-p``."""
    t = cross_entropy_term(p, q, lp, lq)
    dq = 0.0 if p == 0.0 else -exact_div(p, q) if q != 0.0 else -inf
    return t, -lq, dq, t, -p


def entropy_grad(p, q, lp, lq, beta):
    """Entropy's term ``-p log p`` and its derivatives ``-(log p + 1)`` (+inf at p = 0) and,
    in log coordinates, ``-p (log p + 1)``; none along q."""
    t = entropy_term(p, q, lp, lq)
    dp = inf if p == 0.0 else -(lp + 1.0)
    return t, dp, 0.0, t - p, 0.0


def generalized_kl_grad(p, q, lp, lq, beta):
    """Generalized KL's term ``p log(p / q) - p + q`` and its derivatives ``log(p / q)`` and
    ``1 - p / q``; in log coordinates ``p log(p / q)`` and ``q - p``."""
    kl = kl_term_log(p, lp, lq)
    dp = -inf if p == 0.0 else lp - lq
    dq = 1.0 if p == 0.0 else (1.0 - exact_div(p, q) if q != 0.0 else -inf)
    return kl - p + q, dp, dq, kl, q - p


def tv_grad(p, q, lp, lq, beta):
    """Total variation's term ``|p - q| / 2`` and its derivatives ``sign(p - q) / 2`` and its
    negative (0 where p == q); in log coordinates those times p and q."""
    s = 0.5 if p > q else (-0.5 if p < q else 0.0)
    return tv_term(p, q, lp, lq), s, -s, s * p, -s * q


def hellinger_grad(p, q, lp, lq, beta):
    """Squared Hellinger's term ``(sqrt p - sqrt q)^2 / 2`` and its derivatives
    ``(1 - sqrt(q / p)) / 2`` and ``(1 - sqrt(p / q)) / 2``; in log coordinates
    ``sqrt p (sqrt p - sqrt q) / 2`` and ``sqrt q (sqrt q - sqrt p) / 2``."""
    sp = sqrt(p)
    sq = sqrt(q)
    d = sp - sq
    dp = exact_div(0.5 * d, sp) if p != 0.0 else (0.0 if q == 0.0 else -inf)
    dq = exact_div(-0.5 * d, sq) if q != 0.0 else (0.0 if p == 0.0 else -inf)
    return hellinger_term(p, q, lp, lq), dp, dq, 0.5 * sp * d, -0.5 * sq * d


def post_slope(v, post):
    """The derivative of :func:`finish_row` at a row's value ``v``: 1, except for a distance,
    ``1 / (2 sqrt v)``, taken as 0 at v == 0 (its minimum, where the root's slope is
    infinite but the distance cannot decrease)."""
    if post == POST_SQRT:
        return 0.5 / sqrt(v) if v > 0.0 else 0.0
    return 1.0


# Row post-processing codes of the family (the argument ``post`` of every target's kernels).
POST_NONE = 0
POST_CLAMP = 1  # max(value, 0), NaN kept: Jensen-Shannon is >= 0 for any nonnegative measures
POST_SQRT = 2  # sqrt of the clamped value: the Jensen-Shannon distance


def finish_row(v, post):
    """A row's value after ``post``: rounding below 0 clamped (NaN stays NaN), then the square
    root for a distance."""
    if post != POST_NONE:
        v = 0.0 if v < 0.0 else v
        if post == POST_SQRT:
            v = sqrt(v)
    return v


# --- closed forms -----------------------------------------------------------------------------


def bernoulli_term(p, q):
    """KL(Bernoulli(p) || Bernoulli(q)) = ``p log(p / q) + (1 - p) log((1 - p) / (1 - q))``.

    NaN unless both p and q lie in [0, 1]; +inf where q is 0 or 1 and p is not q. The second
    term's logs are ``log1p(-p)`` and ``log1p(-q)``: ``1 - q`` rounds to 1 for q below half an
    ulp of 1, where ``log(1 - q)`` would drop a divergence of about q (KL(0 || 1e-300) is
    1e-300, not 0).
    """
    if not (p >= 0.0 and p <= 1.0 and q >= 0.0 and q <= 1.0):
        return nan
    return kl_term(p, q) + kl_term_log(1.0 - p, log1p(-p), log1p(-q))


def gaussian_term(mu_p, sigma_p, mu_q, sigma_q):
    """KL(N(mu_p, sigma_p^2) || N(mu_q, sigma_q^2)) =
    ``log(sigma_q / sigma_p) + (sigma_p^2 + (mu_p - mu_q)^2) / (2 sigma_q^2) - 1/2``.

    sigma is the standard deviation. A negative sigma (-inf included) or a NaN gives NaN;
    sigma_p == 0 (a point mass) gives +inf, and so does sigma_q == 0 unless sigma_p is 0 too
    (NaN: the ratio is undefined); an infinite sigma_p against a finite sigma_q gives +inf
    (the limit, where the formula would give inf - inf).
    """
    if not (sigma_p >= 0.0 and sigma_q >= 0.0) or mu_p != mu_p or mu_q != mu_q:
        return nan
    if sigma_q == 0.0 and sigma_p > 0.0:
        return inf
    if sigma_p == inf and sigma_q < inf:
        return inf
    r = exact_div(sigma_p, sigma_q)  # a subnormal sigma_q: no reciprocal
    d = exact_div(mu_p - mu_q, sigma_q)
    if r == inf:
        return inf  # sigma_p / sigma_q overflowed: r * r / 2 outgrows log r
    return 0.5 * (r * r + d * d - 1.0) - log(r)


def vae_term(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) = ``(mu^2 + exp(logvar) - 1 - logvar) / 2``,
    with ``exp(logvar) - 1`` as ``expm1`` so that logvar near 0 keeps its precision."""
    return 0.5 * (mu * mu + (expm1(logvar) - logvar))
