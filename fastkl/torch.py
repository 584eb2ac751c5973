"""fastkl's row-wise functions as differentiable PyTorch operations.

``fastkl.torch.kl_div``, ``js_div``, ``cross_entropy``, ... take the keywords of their
:mod:`fastkl` namesakes and tensors (CPU or CUDA; float32, float64, float16, bfloat16) and
return tensors that autograd differentiates through fastkl's fused gradient: the forward pass
computes the value and the gradient of the inputs that require one in one call, keeps that
gradient (not the inputs), and the backward pass scales it by the incoming gradient.

* ``reduction="sum"`` or ``"mean"``: the kept gradient times the incoming scalar.
* ``reduction="none"``: row i's gradient times the incoming gradient of row i (the rows are
  independent). An input broadcast against the others that requires a gradient is expanded
  first (a copy of the full shape), and autograd sums its gradient over the broadcast.
* float16 and bfloat16 inputs are read as float32 (a copy, made by autograd's own cast, which
  also casts the gradient back); arrays that are not tensors keep their own dtype.
* The backward pass is differentiable once: a second derivative (``create_graph=True``
  through it) raises an error rather than silently dropping a term.

Needs the ``torch`` extra (``pip install "fastkl[torch]"``).

Examples
--------
>>> import torch
>>> import fastkl.torch as fkt
>>> teacher = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
>>> student = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
>>> loss = fkt.kl_div(teacher, student, q_form="logits", reduction="mean")
>>> loss.backward()
>>> student.grad  # softmax(student) - teacher
tensor([[ 0.1333, -0.1667,  0.0333]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import api
from .divergences import REGISTRY, Divergence

__all__ = [spec.name for spec in REGISTRY]

_WIDEN = (torch.float16, torch.bfloat16)


def _as_input(x: Any, like: torch.Tensor | None) -> torch.Tensor:
    """A tensor of ``x``: a non-tensor keeps its own dtype (a float64 numpy teacher beside a
    float16 student is not rounded to float16) on the device of the first tensor."""
    if not isinstance(x, torch.Tensor):
        device = like.device if like is not None else None
        x = torch.as_tensor(np.asarray(x), device=device)
    return x.float() if x.dtype in _WIDEN else x


def _array(x: torch.Tensor) -> Any:
    """What fastkl reads: a numpy view of a CPU tensor, the CUDA tensor itself."""
    x = x.detach()
    return x if x.is_cuda else x.numpy()


def _tensor(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray | np.generic):
        return torch.from_numpy(np.asarray(x)).to(device)
    return torch.as_tensor(x, device=device)  # a numba device array (CUDA array interface)


class _Divergence(torch.autograd.Function):
    """value = fastkl.<spec>(*inputs, **options), with the gradient fastkl fuses into it."""

    @staticmethod
    def forward(ctx: Any, spec: Divergence, options: dict[str, Any], *inputs: torch.Tensor) -> Any:
        wants = [ctx.needs_input_grad[2 + i] for i in range(len(inputs))]
        grad = {(True, True): "both", (True, False): "p", (False, True): "q"}.get(tuple(wants))
        if len(inputs) == 1:
            grad = "p" if wants[0] else None
        fn = getattr(api, spec.name)
        result = fn(*(_array(x) for x in inputs), grad=grad, **options)
        device = inputs[0].device
        value, grads = (result[0], result[1:]) if grad else (result, ())
        ctx.reduction = options.get("reduction", "none")
        ctx.axis = options.get("axis", -1)
        kept = iter(grads)
        ctx.grads = [_tensor(next(kept), device) if w else None for w in wants]
        return _tensor(value, device)

    @staticmethod
    @once_differentiable  # the kept gradient is a constant: no second derivative
    def backward(ctx: Any, incoming: torch.Tensor) -> Any:
        out: list[torch.Tensor | None] = []
        for g in ctx.grads:
            if g is None:
                out.append(None)
            elif ctx.reduction == "none":
                out.append((g * incoming.unsqueeze(ctx.axis)).to(g.dtype))
            else:
                out.append((g * incoming).to(g.dtype))
        return (None, None, *out)


def _make(spec: Divergence) -> Any:
    fn = getattr(api, spec.name)

    def function(*arrays: Any, **options: Any) -> torch.Tensor:
        for key in ("grad", "grad_out", "out"):
            if options.get(key) is not None:
                raise TypeError(f"{key}: not an argument of fastkl.torch (autograd keeps it)")
        options = {k: v for k, v in options.items() if k not in ("grad", "grad_out", "out")}
        first = next((x for x in arrays if isinstance(x, torch.Tensor)), None)
        tensors = [_as_input(x, first) for x in arrays]
        if options.get("reduction", "none") == "none" and len(tensors) == 2:
            shapes = [t.shape for t in tensors]
            if shapes[0] != shapes[1] and any(t.requires_grad for t in tensors):
                full = torch.broadcast_shapes(*shapes)
                tensors = [t.expand(full).contiguous() if t.shape != full else t for t in tensors]
        return _Divergence.apply(spec, options, *tensors)

    function.__name__ = function.__qualname__ = spec.name
    function.__doc__ = (
        f"{spec.summary}, differentiable: :func:`fastkl.{spec.name}` on tensors (see "
        ":mod:`fastkl.torch`).\n\nTakes the keywords of :func:`fastkl."
        f"{spec.name}` but ``grad``, ``grad_out`` and ``out``; returns a tensor."
    )
    function.__signature__ = fn.__signature__.replace(  # type: ignore[attr-defined]
        parameters=[
            p
            for name, p in fn.__signature__.parameters.items()  # type: ignore[attr-defined]
            if name not in ("grad", "grad_out", "out")
        ]
    )
    return function


for _spec in REGISTRY:
    globals()[_spec.name] = _make(_spec)
del _spec
