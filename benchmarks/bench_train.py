"""asv suite for the training calls: a distillation step's value and gradient in one call.

Teacher probabilities against student logits, KL's value with its gradient with respect to
the logits (``grad="q"``, into a preallocated array), with and without a temperature, and
Jensen-Shannon skewed as TRL's GKD uses it.
"""

from __future__ import annotations

import numpy as np

import fastkl

from .common import SHAPES, rows_in_form

TRAIN_CASES = {
    "kl_div grad": ("kl_div", {}),
    "kl_div grad T=2": ("kl_div", {"temperature": 2.0}),
    "js_div grad beta=0.9": ("js_div", {"beta": 0.9}),
}


class Train:
    """Value and gradient of a distillation loss on float32 rows."""

    params = (list(TRAIN_CASES), ["1000000x64", "512x32768"])
    param_names = ["case", "shape"]
    timeout = 300

    def setup(self, case, shape):
        name, options = TRAIN_CASES[case]
        n, k = SHAPES[shape]
        self.p = rows_in_form((n, k), "float32", "probs", seed=1)
        self.z = rows_in_form((n, k), "float32", "logits", seed=2)
        self.grad = np.empty_like(self.z)
        self.fn = getattr(fastkl, name)
        self.kwargs = dict(options, q_form="logits", reduction="mean", grad="q")
        self.fn(self.p[:4], self.z[:4], **self.kwargs)  # compile/load

    def time_value_and_grad(self, case, shape):
        self.fn(self.p, self.z, grad_out=self.grad, **self.kwargs)
