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

from typing import Tuple

import torch

from ..geometry import KeepWorst, ascent_direction, bound
from .base import AttackConfig, Model
from .steps import Run, cross_entropy, loss_gradient, margins, target_margin

__all__ = ["Run", "margins", "pgd_run", "iterate_hashes"]

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


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


class _Seen:
    """The hashes of every iterate so far: (steps + 1, n, 2) int64, one row per step."""

    def __init__(self, x: torch.Tensor, steps: int):
        n = x.shape[0]
        self.coeffs = _coefficients(x[0].numel(), x.device) if n else None
        self.hashes = torch.empty((steps + 1, n, 2), dtype=torch.int64, device=x.device)

    def repeats(self, t: int, idx: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
        """Record step ``t``'s iterates ``xa`` of samples ``idx``; True where one repeats."""
        h = iterate_hashes(xa, self.coeffs)
        if t:
            cycled = (self.hashes[:t, idx] == h).all(dim=2).any(dim=0)
        else:
            cycled = torch.zeros(idx.shape[0], dtype=torch.bool, device=xa.device)
        self.hashes[t, idx] = h
        return cycled


def _offer(best: KeepWorst, idx, xa, logits, y) -> torch.Tensor:
    """Offer iterates ``xa`` of samples ``idx`` (loss: minus the margin); return fooled."""
    fooled = logits.argmax(dim=1) != y
    best.offer(idx, xa, fooled, -margins(logits, y))
    return fooled


def pgd_run(model: Model, run: Run, cfg: AttackConfig, steps: int, step: float):
    """PGD on one batch from ``run.start``; return (x_best, fooled, margin) per sample.

    ``run.x`` (n, ...) any float dtype; ``run.y`` and ``run.target`` (n,) int64 (:class:`
    ~.steps.Run`). The loss is the cross-entropy, or with a target the margin
    ``z_target - z_y``. ``steps`` steps of size ``step`` within ``cfg.eps`` in
    ``cfg.norm``, inside ``cfg.bounds``. With ``cfg.early_stop`` a sample stops at its
    first success or at a repeated iterate (see the module docstring); without it every
    sample runs all ``steps``. ``x_best`` lies in the eps-ball and in the bounds;
    ``margin`` (float32) is ``z_y - max_{j != y} z_j`` at ``x_best``. Raises
    AdvRobustError when no gradient reaches the model's input and ValueError for an
    unknown norm.
    """
    x, y, target = run.x, run.y, run.target
    eps, norm, bounds = cfg.eps, cfg.norm, cfg.bounds
    x_adv = bound(x, run.start, eps, norm, bounds).detach()
    best = KeepWorst(x_adv)
    active = torch.arange(x.shape[0], device=x.device)
    seen = _Seen(x, steps) if cfg.early_stop else None
    loss_fn = cross_entropy if target is None else target_margin
    for t in range(steps):
        if active.numel() == 0:
            break
        xa, ya = x_adv[active], y[active]
        ta = target[active] if target is not None else None
        logits, _, grad = loss_gradient(model, xa, ya, loss_fn, ta, "pgd")
        fooled = _offer(best, active, xa, logits, ya)
        if seen is not None:
            keep = ~(fooled | seen.repeats(t, active, xa))
            if not bool(keep.all()):
                active, xa, grad = active[keep], xa[keep], grad[keep]
                if active.numel() == 0:
                    break
        moved = xa + step * ascent_direction(grad, norm)
        x_adv[active] = bound(x[active], moved, eps, norm, bounds).detach()
    if active.numel():
        with torch.no_grad():
            _offer(best, active, x_adv[active], model(x_adv[active]), y[active])
    return best.x, best.fooled, -best.loss
