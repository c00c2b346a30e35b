"""Gradient attacks: FGSM and PGD (L-inf and L2), batched and seeded.

PGD stops attacking a sample as soon as its verdict is final: at its first
misclassification, or when its iterate repeats an earlier one exactly (see
:mod:`.pgd_core`), so the robust accuracy does not change while the cost
falls. Restarts keep, per sample, the first successful perturbation, else
the iterate with the lowest margin ``z_y - max_{j != y} z_j`` of any step.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .base import AttackConfig, AttackContext, Model, clip_bounds, project
from .pgd_core import pgd_run

__all__ = ["fgsm", "pgd", "pgd_from", "random_start"]


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def _input_grad(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None
):
    """Logits at ``x`` and the gradient w.r.t. ``x`` of the summed loss.

    The loss is the cross-entropy, or with ``target`` the margin
    ``z_target - z_y`` (ascent pushes the target class above the label).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if not logits.requires_grad:  # forward under no_grad, detached, argmax, ...
            from ..gradcheck import missing_gradient_error

            raise missing_gradient_error(
                "pgd/fgsm", None, "the output does not depend on the input through autograd"
            )
        z = logits.float()
        if target is None:
            loss = F.cross_entropy(z, y, reduction="sum")
        else:
            loss = (z.gather(1, target[:, None]) - z.gather(1, y[:, None])).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return logits.detach(), grad.detach()


def _ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / _view(flat, grad)


def random_start(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator
) -> torch.Tensor:
    """A uniformly random point of the eps-ball around each sample (not clipped).

    Noise is drawn on the CPU from ``generator`` so the same seed gives the
    same start on every device.
    """
    shape = x.shape
    if norm == "linf":
        noise = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator, dtype=torch.float64)
        flat = direction.reshape(shape[0], -1)
        direction = direction / flat.norm(p=2, dim=1).clamp_min(1e-12).view(
            -1, *([1] * (len(shape) - 1))
        )
        d = flat.shape[1]
        radius = torch.rand(shape[0], generator=generator, dtype=torch.float64) ** (1.0 / d) * eps
        noise = direction * radius.view(-1, *([1] * (len(shape) - 1)))
    return x + noise.to(device=x.device, dtype=x.dtype)


def _batches(n: int, size: int):
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
) -> torch.Tensor:
    """One gradient step of size ``step_size`` (default ``eps``), projected and clipped."""
    step = cfg.step_size if cfg.step_size is not None else cfg.eps
    out = torch.empty_like(x)
    for sl in _batches(x.shape[0], cfg.batch_size):
        xb, yb = x[sl], y[sl]
        _, grad = _input_grad(model, xb, yb)
        adv = xb + step * _ascent_direction(grad, cfg.norm)
        out[sl] = clip_bounds(xb + project(adv - xb, cfg.eps, cfg.norm), cfg.bounds).detach()
    return out


def pgd_from(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    x_start: torch.Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
    steps: Optional[int] = None,
) -> torch.Tensor:
    """PGD steps started at ``x_start`` (no restarts, no random start).

    ``steps`` defaults to ``cfg.refine`` when it is positive, else ``cfg.steps``;
    the step size defaults to ``2.5 * eps / steps``.
    """
    if steps is None:
        steps = cfg.refine if cfg.refine > 0 else cfg.steps
    step = cfg.step_size if cfg.step_size is not None else 2.5 * cfg.eps / max(steps, 1)
    out = torch.empty_like(x)
    for sl in _batches(x.shape[0], cfg.batch_size):
        adv, _, _ = pgd_run(
            model,
            x[sl],
            y[sl],
            x_start[sl],
            cfg.eps,
            cfg.norm,
            steps,
            step,
            cfg.bounds,
            cfg.early_stop,
        )
        out[sl] = adv
    return out


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
) -> torch.Tensor:
    """Projected gradient descent with optional random start and restarts.

    Each restart after the first starts at a random point of the ball (the
    first one does too when ``cfg.random_start``). Then, with ``cfg.targets=k``,
    one targeted run per each of the k most likely wrong classes (ranked at the
    clean input) attacks the samples still standing. Per sample, the first run
    that fools the model wins; otherwise the lowest margin of any step wins.
    """
    step = cfg.resolved_step_size()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    out = torch.empty_like(x)
    for sl in _batches(x.shape[0], cfg.batch_size):
        xb, yb = x[sl], y[sl]
        best = xb.clone()
        best_fooled = torch.zeros(xb.shape[0], dtype=torch.bool, device=xb.device)
        best_margin = torch.full((xb.shape[0],), float("inf"), device=xb.device)
        for r in range(max(1, cfg.restarts)):
            start = random_start(xb, cfg.eps, cfg.norm, gen) if (cfg.random_start or r > 0) else xb
            todo = ~best_fooled
            if not bool(todo.any()):
                break
            idx = todo.nonzero(as_tuple=True)[0]
            adv, fooled, margin = pgd_run(
                model,
                xb[idx],
                yb[idx],
                start[idx],
                cfg.eps,
                cfg.norm,
                cfg.steps,
                step,
                cfg.bounds,
                cfg.early_stop,
            )
            better = fooled | (margin < best_margin[idx])
            take = idx[better]
            best[take] = adv[better]
            best_margin[take] = margin[better]
            best_fooled[idx[fooled]] = True
        if cfg.targets > 0:
            with torch.no_grad():
                z = model(xb).float()
            z.scatter_(1, yb[:, None], -float("inf"))
            ranked = z.argsort(dim=1, descending=True)
            for t in range(min(cfg.targets, z.shape[1] - 1)):
                todo = ~best_fooled
                if not bool(todo.any()):
                    break
                idx = todo.nonzero(as_tuple=True)[0]
                adv, fooled, margin = pgd_run(
                    model,
                    xb[idx],
                    yb[idx],
                    xb[idx],
                    cfg.eps,
                    cfg.norm,
                    cfg.steps,
                    step,
                    cfg.bounds,
                    cfg.early_stop,
                    target=ranked[idx, t],
                )
                better = fooled | (margin < best_margin[idx])
                take = idx[better]
                best[take] = adv[better]
                best_margin[take] = margin[better]
                best_fooled[idx[fooled]] = True
        out[sl] = best
    return out
