"""``fastkl.torch`` (autograd through fastkl's fused gradients) and the TRL drop-in, against
torch's own losses and autograd. Runs wherever torch is installed."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastkl.torch as fkt  # noqa: E402
from fastkl.compat import trl_generalized_jsd_loss  # noqa: E402
from fastkl.divergences import REGISTRY  # noqa: E402


def make(rng, shape, form, dtype=torch.float64, grad=True):
    z = rng.normal(size=shape)
    if form == "logits":
        x = z + 1.0
    else:
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        x = lp if form == "log_probs" else np.exp(lp)
    return torch.tensor(x, dtype=dtype, requires_grad=grad)


def reference_log_probs(x, form):
    if form == "logits":
        return F.log_softmax(x, -1)
    return x if form == "log_probs" else x.log()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    ("p_form", "q_form"),
    [("probs", "logits"), ("log_probs", "probs"), ("logits", "log_probs"), ("logits", "logits"),
     ("probs", "probs")],
)  # every form on each side, against torch's own loss  # fmt: skip
def test_kl_div_values_and_grads_equal_torch(rng, p_form, q_form, reduction):
    p, q = make(rng, (4, 7), p_form), make(rng, (4, 7), q_form)
    got = fkt.kl_div(p, q, p_form=p_form, q_form=q_form, reduction=reduction)
    weights = torch.tensor(rng.random(got.shape) if got.ndim else 1.0)
    (got * weights).sum().backward()
    gp, gq = p.grad.clone(), q.grad.clone()
    p.grad = q.grad = None
    lp, lq = reference_log_probs(p, p_form), reference_log_probs(q, q_form)
    rows = F.kl_div(lq, lp, reduction="none", log_target=True).sum(-1)
    expected = {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]
    (expected * weights).sum().backward()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gp, p.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gq, q.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", [spec.name for spec in REGISTRY])
def test_gradcheck_every_function(rng, name):
    fn = getattr(fkt, name)
    p = make(rng, (3, 5), "probs")
    args = (p, make(rng, (3, 5), "logits")) if fn.__name__ != "entropy" else (p,)
    kw = {"reduction": "none"}
    if len(args) == 2:
        kw["q_form"] = "logits"
    assert torch.autograd.gradcheck(lambda *a: fn(*a, **kw), args, eps=1e-6, atol=1e-6)


def test_cross_entropy_with_temperature_equals_torch(rng):
    teacher = make(rng, (6, 10), "logits", grad=False)
    student = make(rng, (6, 10), "logits")
    t = 2.5
    got = fkt.cross_entropy(teacher, student, p_form="logits", q_form="logits", temperature=t,
                            reduction="mean")  # fmt: skip
    got.backward()
    g = student.grad.clone()
    student.grad = None
    expected = F.cross_entropy(student / t, F.softmax(teacher / t, -1))
    expected.backward()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(g, student.grad, rtol=1e-10, atol=1e-14)


def test_broadcast_input_and_half_precision(rng):
    p = make(rng, (5, 8), "probs", grad=False)
    q = make(rng, (8,), "logits")  # one reference row for the batch
    got = fkt.kl_div(p, q, q_form="logits")
    got.sum().backward()
    g = q.grad.clone()
    q.grad = None
    F.kl_div(F.log_softmax(q, -1).expand(5, 8), p, reduction="sum").backward()
    torch.testing.assert_close(g, q.grad, rtol=1e-10, atol=1e-14)
    for dtype in (torch.float16, torch.bfloat16):
        z = make(rng, (5, 8), "logits", dtype=dtype)
        fkt.kl_div(p.to(dtype), z, q_form="logits", reduction="sum").backward()
        assert z.grad.dtype == dtype
        z64 = z.detach().double().requires_grad_(True)
        F.kl_div(F.log_softmax(z64, -1), p, reduction="sum").backward()
        torch.testing.assert_close(z.grad.double(), z64.grad, rtol=2e-2, atol=2e-3)


def test_adapter_refuses_grad_and_out(rng):
    p = make(rng, (2, 3), "probs")
    with pytest.raises(TypeError, match=r"grad: not an argument of fastkl\.torch"):
        fkt.kl_div(p, p, grad="p")


def trl_reference(s, t, labels=None, beta=0.5, temperature=1.0, reduction="batchmean"):
    """TRL's GKD loss written from its definition: per-element KL terms, -100 masked."""
    ls = F.log_softmax(s / temperature, -1)
    lt = F.log_softmax(t / temperature, -1)
    if beta == 0:
        terms = lt.exp() * (lt - ls)
    elif beta == 1:
        terms = ls.exp() * (ls - lt)
    else:
        m = torch.log(beta * lt.exp() + (1 - beta) * ls.exp())
        terms = beta * lt.exp() * (lt - m) + (1 - beta) * ls.exp() * (ls - m)
    if labels is not None:
        terms = terms[labels != -100]
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        return terms.mean()
    tokens = (labels != -100).sum() if labels is not None else terms.shape[0] * terms.shape[1]
    return terms.sum() / tokens


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
def test_trl_generalized_jsd_loss(rng, beta, reduction):
    s = make(rng, (2, 5, 9), "logits")
    t = make(rng, (2, 5, 9), "logits", grad=False)
    labels = torch.tensor(rng.integers(0, 3, size=(2, 5)))
    labels[0, :2] = -100
    for lab in (None, labels):
        got = trl_generalized_jsd_loss(s, t, lab, beta=beta, temperature=2.0, reduction=reduction)
        got.backward()
        g = s.grad.clone()
        s.grad = None
        expected = trl_reference(s, t, lab, beta, 2.0, reduction)
        expected.backward()
        torch.testing.assert_close(got, expected.detach(), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(g, s.grad, rtol=1e-9, atol=1e-15)
        s.grad = None
        # the numpy drop-in gives the same number
        on_numpy = trl_generalized_jsd_loss(s.detach().numpy(), t.numpy(),
                                            None if lab is None else lab.numpy(), beta=beta,
                                            temperature=2.0, reduction=reduction)  # fmt: skip
        np.testing.assert_allclose(on_numpy, got.item(), rtol=1e-14)
