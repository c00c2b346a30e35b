"""The PGD loop with exact per-sample stops and the best iterate.

A sample leaves the loop as soon as its verdict is final:

* **success**: the model misclassifies the current iterate (the first
  success is kept);
* **cycle**: the current iterate equals, bit for bit, an earlier iterate of
  the same sample. A PGD step with a fixed step size is a deterministic
  function of the iterate (sign of the gradient for L-inf, the normalised
  gradient for L2, then projection and clipping), so every later iterate
  repeats one already seen and already found not to fool the model: the
  sample stays robust to the end of the budget (cycle-detection PGD,
  CVPR 2025). With a fixed step on the L-inf lattice such cycles are common
  on robust samples.

The verdict per sample therefore equals the plain loop's that runs every
sample for every step, for a model whose output on a sample does not depend
on the other samples of the batch. Iterates are compared through two
independent 64-bit multiplicative hashes of their bytes (a false match needs
both to collide). Per sample, the result is the first successful iterate,
else the iterate of lowest margin ``z_y - max_{j != y} z_j`` seen at any step.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .base import Model, clip_bounds, project

__all__ = ["margins", "pgd_run", "iterate_hashes"]

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample (float32, shape (n,)); negative: fooled."""
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], -float("inf")).amax(dim=1)
    return zy - other


def _coefficients(d: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0x5EED)
    a = torch.randint(1, 2**62, (2, d), generator=g, dtype=torch.int64) | 1
    return a[0].to(device), a[1].to(device)


def iterate_hashes(x: torch.Tensor, coeffs) -> torch.Tensor:
    """Two 64-bit hashes of each sample's bytes, shape (n, 2) int64.

    Equal iterates give equal hashes; different iterates collide in both
    only with a chance of about 2^-64 per comparison each.
    """
    flat = x.reshape(x.shape[0], -1).contiguous()
    bits = flat.view(_INT_OF_SIZE[flat.element_size()]).to(torch.int64)
    return torch.stack([(bits * coeffs[0]).sum(1), (bits * coeffs[1]).sum(1)], dim=1)


def _step_loss(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]):
    z = logits.float()
    if target is None:
        return F.cross_entropy(z, y, reduction="sum")
    return (z.gather(1, target[:, None]) - z.gather(1, y[:, None])).sum()


def _ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / flat.view(-1, *([1] * (grad.dim() - 1)))


class _Best:
    """Per sample: fooled yet, lowest margin so far, and the iterate that had it."""

    def __init__(self, x: torch.Tensor):
        n = x.shape[0]
        self.x = x.clone()
        self.fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.margin = torch.full((n,), float("inf"), device=x.device)

    def update(
        self, idx: torch.Tensor, xa: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Record the iterates ``xa`` of samples ``idx``; return their fooled mask."""
        m = margins(logits, y)
        fooled = logits.argmax(dim=1) != y
        open_ = ~self.fooled[idx]  # a first success is never replaced
        better = open_ & (fooled | (m < self.margin[idx]))
        take = idx[better]
        self.x[take] = xa[better]
        self.margin[take] = m[better]
        self.fooled[idx[fooled]] = True
        return fooled


def pgd_run(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    x_start: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    step: float,
    bounds,
    early_stop: bool = True,
    target: Optional[torch.Tensor] = None,
):
    """PGD on one batch from ``x_start``; return (x_best, fooled, margin) per sample.

    ``x`` (n, ...) any float dtype; ``y`` and ``target`` (n,) int64. The loss is
    the cross-entropy, or with ``target`` the margin ``z_target - z_y``. With
    ``early_stop`` a sample stops at its first success or at a repeated
    iterate (see the module docstring); without it every sample runs all
    ``steps``. ``x_best`` lies in the eps-ball (``norm``) and in ``bounds``;
    ``margin`` (float32) is ``z_y - max_{j != y} z_j`` at ``x_best``.
    """
    x_adv = clip_bounds(x + project(x_start - x, eps, norm), bounds).detach()
    n = x.shape[0]
    best = _Best(x_adv)
    active = torch.arange(n, device=x.device)
    coeffs = _coefficients(x[0].numel(), x.device) if early_stop and n else None
    seen = (
        torch.empty((steps + 1, n, 2), dtype=torch.int64, device=x.device)
        if coeffs is not None
        else None
    )
    for t in range(steps):
        if active.numel() == 0:
            break
        xa, ya = x_adv[active], y[active]
        ta = target[active] if target is not None else None
        xg = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            (grad,) = torch.autograd.grad(_step_loss(logits, ya, ta), xg)
        fooled = best.update(active, xa, logits.detach(), ya)
        if early_stop:
            h = iterate_hashes(xa, coeffs)
            cycled = (
                (seen[:t, active] == h).all(dim=2).any(dim=0) if t else torch.zeros_like(fooled)
            )
            seen[t, active] = h
            keep = ~(fooled | cycled)
            if not bool(keep.all()):
                active, xa, grad = active[keep], xa[keep], grad[keep]
                if active.numel() == 0:
                    break
        moved = xa + step * _ascent(grad, norm)
        x0 = x[active]
        x_adv[active] = clip_bounds(x0 + project(moved - x0, eps, norm), bounds).detach()
    if active.numel():
        with torch.no_grad():
            best.update(active, x_adv[active], model(x_adv[active]), y[active])
    return best.x, best.fooled, best.margin
