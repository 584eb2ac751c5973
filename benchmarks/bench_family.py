"""asv suite for the divergence family and the closed forms.

The (function, forms) cases are the ones people run: every function on probabilities, and the
distillation cases on logits. ``KLDiv`` in bench_kl_div.py is the yardstick: the same shapes.
"""

from __future__ import annotations

import numpy as np

import fastkl

from .common import SHAPES, probability_rows, rows_in_form

FAMILY_CASES = {
    "js_div probs": ("js_div", "probs", "probs"),
    "js_div logits": ("js_div", "logits", "logits"),
    "js_distance probs": ("js_distance", "probs", "probs"),
    "sym_kl probs": ("sym_kl", "probs", "probs"),
    "cross_entropy probs": ("cross_entropy", "probs", "probs"),
    "cross_entropy probs-logits": ("cross_entropy", "probs", "logits"),
    "entropy probs": ("entropy", "probs", None),
    "entropy logits": ("entropy", "logits", None),
    "generalized_kl probs": ("generalized_kl", "probs", "probs"),
}


class Family:
    """Row-wise family functions on two same-shape float32 inputs."""

    params = (list(FAMILY_CASES), ["1000000x64", "512x32768"])
    param_names = ["case", "shape"]
    timeout = 180

    def setup(self, case, shape):
        name, p_form, q_form = FAMILY_CASES[case]
        n, k = SHAPES[shape]
        self.p = rows_in_form((n, k), "float32", p_form, seed=1)
        self.fn = getattr(fastkl, name)
        if q_form is None:
            self.args, self.kwargs = (self.p,), {"p_form": p_form}
        else:
            self.q = rows_in_form((n, k), "float32", q_form, seed=2)
            self.args, self.kwargs = (self.p, self.q), {"p_form": p_form, "q_form": q_form}
        self.fn(*(a[:4] for a in self.args), **self.kwargs)  # compile/load

    def time_family(self, case, shape):
        self.fn(*self.args, **self.kwargs)


class ClosedForms:
    """Closed forms over 100,000 x 64 float32 parameters, summed per row."""

    params = (["bernoulli_kl", "gaussian_kl", "vae_kl"],)
    param_names = ["function"]

    def setup(self, function):
        rng = np.random.default_rng(3)
        a = probability_rows((100_000, 64), "float32", seed=4) * np.float32(32)  # in (0, 1)
        shape = a.shape  # rows scaled by FASTKL_BENCH_SCALE
        b = rng.uniform(0.01, 0.99, size=shape).astype(np.float32)
        if function == "bernoulli_kl":
            self.args = (a, b)
        elif function == "gaussian_kl":
            s = rng.uniform(0.5, 2.0, size=shape).astype(np.float32)
            self.args = (b, s, a, s[::-1].copy())
        else:
            self.args = (b, rng.normal(size=shape).astype(np.float32))
        self.fn = getattr(fastkl, function)
        self.fn(*(x[:4] for x in self.args), axis=-1)

    def time_closed_form(self, function):
        self.fn(*self.args, axis=-1)
