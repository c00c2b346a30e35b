"""What every gradient attack shares: batches, losses, the input gradient, target classes.

FGSM, PGD (:mod:`.gradient`, :mod:`.pgd_core`) and APGD (:mod:`.apgd`) take
their losses and input gradients from here, and their geometry (ascent
direction, projection, random starts, keep-the-worst) from
:mod:`pytest_advrobust.geometry`. Logits are (N, K); labels and targets are
int64 (N,); losses are float32 per sample (N,).
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from ..metrics.accuracy import margins
from .base import Model

__all__ = [
    "Run",
    "batch_slices",
    "cross_entropy",
    "loss_gradient",
    "margins",
    "ranked_wrong_classes",
    "shape_documented",
    "target_margin",
]

_SHAPE = """
    Shape:
        - x: (N, ...) float, inside ``cfg.bounds``.
        - y: (N,) int64 labels.
        - output: the shape and dtype of ``x``; ``||x_adv - x|| <= cfg.eps`` in
          ``cfg.norm`` ("linf" or "l2"; eps in input units).

    Raises:
        AdvRobustError: no gradient reaches the model's input.
        ValueError: ``cfg.norm`` is not "linf" or "l2".
"""


class Run(NamedTuple):
    """The samples of one attack run: inputs ``x`` ``(n, ...)``, labels ``y`` ``(n,)``
    int64, the points the run starts from ``start`` (shape of ``x``) and, for a targeted
    run, each sample's target class ``target`` ``(n,)`` int64 (``None``: untargeted)."""

    x: torch.Tensor
    y: torch.Tensor
    start: torch.Tensor
    target: Optional[torch.Tensor] = None

    def at(self, idx: torch.Tensor) -> "Run":
        """The run of the samples ``idx``."""
        target = self.target[idx] if self.target is not None else None
        return Run(self.x[idx], self.y[idx], self.start[idx], target)


def shape_documented(attack: Callable) -> Callable:
    """Append the Shape and Raises blocks every gradient attack shares to its docstring."""
    attack.__doc__ = (attack.__doc__ or "").rstrip() + "\n" + _SHAPE
    return attack


Loss = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def batch_slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` (at least 1) covering ``range(n)``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, target=None) -> torch.Tensor:
    """The untargeted loss: cross-entropy per sample (``target`` is ignored)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def target_margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The targeted loss ``z_target - z_y`` per sample: ascent lifts the target above the label."""
    z = logits.float()
    return (z.gather(1, target[:, None]) - z.gather(1, y[:, None])).squeeze(1)


def loss_gradient(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    target: Optional[torch.Tensor] = None,
    attack: str = "pgd",
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, loss, grad)`` at ``x``: ``grad`` is the input gradient of the summed loss.

    All three are detached; ``grad`` has the shape and dtype of ``x``. Raises
    :class:`~pytest_advrobust.errors.AdvRobustError` (naming ``attack``) when
    the model's output does not depend on its input through autograd.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        if not logits.requires_grad:  # forward under no_grad, detached, argmax, ...
            from ..inputs.gradcheck import missing_gradient_error

            raise missing_gradient_error(
                attack, None, "the output does not depend on the input through autograd"
            )
        loss = loss_fn(logits, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    return logits.detach(), loss.detach(), grad.detach()


def ranked_wrong_classes(model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, every class but the label, most likely first: int64 (n, K) whose last
    column is the label (ranked at the clean input, one forward pass)."""
    with torch.no_grad():
        z = model(x).float()
    return z.scatter(1, y[:, None], -float("inf")).argsort(dim=1, descending=True)
