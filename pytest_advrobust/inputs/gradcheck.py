"""Does any gradient reach the model's input? Checked once, before attacks that need one.

PGD, FGSM, APGD and AdvGAN training all follow the gradient of a loss with
respect to the input. A model whose forward runs under ``torch.no_grad()``
or ``torch.inference_mode()``, detaches its input, or passes it through a
step with no useful derivative (``argmax``, ``round``, a lookup) gives these
attacks nothing to follow: they would report a robust model where there is
only a blind attack. :func:`require_input_gradient` turns that into one
sentence instead of a number.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..attack_table import facts_of, needs_gradient
from ..errors import AdvRobustError

__all__ = [
    "missing_gradient_error",
    "input_gradient_problem",
    "require_input_gradient",
]

CAUSES = (
    "usual causes are torch.no_grad() or torch.inference_mode() in forward, .detach() "
    "or a round trip through numpy, and non-differentiable steps such as argmax, round "
    "or a lookup table"
)


def missing_gradient_error(attack: str, fixture: Optional[str], reason: str) -> AdvRobustError:
    whose = f"the model from fixture {fixture!r}" if fixture else "the model"
    return AdvRobustError(
        f"attack {attack!r} needs the gradient of the loss with respect to the input, but "
        f"none reaches the input of {whose} ({reason}); "
        f"{CAUSES}: keep the evaluated forward pass differentiable"
    )


def input_gradient_problem(
    model: Callable, x: torch.Tensor, y: torch.Tensor, n: int = 32
) -> Optional[str]:
    """Why no gradient reaches the input of ``model`` on the first ``n`` samples, or None.

    ``model`` maps ``x`` (shape (N, ...)) to logits (N, classes) and is frozen
    (no parameter gradients needed). Only the structure is judged: no autograd
    path to the input, or a gradient that is exactly zero everywhere (the
    cross-entropy's gradient with respect to the logits is never zero).
    """
    xb = x[:n].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xb)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return "the output does not depend on the input through autograd"
        loss = F.cross_entropy(out.float(), y[:n], reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb, allow_unused=True)
    if grad is None:
        return "the output does not depend on the input through autograd"
    if not bool((grad != 0).any()):
        return "the input gradient is exactly zero on every sample"
    return None


def require_input_gradient(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[str],
    fixture: str,
    refine: int = 0,
) -> None:
    """Raise :class:`AdvRobustError` (one sentence) when an attack in ``attacks`` needs the
    input gradient (:mod:`pytest_advrobust.attack_table`) and none reaches the input."""
    if not needs_gradient(attacks, refine):
        return
    reason = input_gradient_problem(model, x, y)
    if reason is not None:
        name = next((a for a in attacks if facts_of(a).gradient), attacks[0])
        raise missing_gradient_error(name, fixture, reason)
