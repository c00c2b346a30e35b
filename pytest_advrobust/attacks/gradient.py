"""Gradient attacks: FGSM and PGD (L-inf and L2), batched and seeded.

PGD stops attacking a sample as soon as its verdict is final: at its first
misclassification, or when its iterate repeats an earlier one exactly (see
:mod:`.pgd_core`), so the robust accuracy does not change while the cost
falls. Restarts keep, per sample, the first successful perturbation, else
the iterate with the lowest margin ``z_y - max_{j != y} z_j`` of any step
(:class:`~pytest_advrobust.geometry.KeepWorst`).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..geometry import KeepWorst, ascent_direction, bound, uniform_ball_noise
from .base import AttackConfig, AttackContext, Model
from .pgd_core import pgd_run
from .steps import (
    Run,
    batch_slices,
    cross_entropy,
    loss_gradient,
    ranked_wrong_classes,
    shape_documented,
)

__all__ = ["fgsm", "pgd", "pgd_from", "random_start"]

Tensor = torch.Tensor


def random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """A uniformly random point of the eps-ball around each sample (not clipped).

    Noise is drawn on the CPU from ``generator`` so the same seed gives the
    same start on every device.
    """
    noise = uniform_ball_noise(x.shape, eps, norm, generator)
    return x + noise.to(device=x.device, dtype=x.dtype)


@shape_documented
def fgsm(
    model: Model, x: Tensor, y: Tensor, cfg: AttackConfig, ctx: Optional[AttackContext] = None
) -> Tensor:
    """FGSM: one ascent step of the cross-entropy, projected onto the eps-ball and clipped.

    Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR
    2015 (L2: the gradient normalised per sample). The step is
    ``cfg.step_size``, default ``cfg.eps``; eps and the step are in input units.
    """
    step = cfg.step_size if cfg.step_size is not None else cfg.eps
    out = torch.empty_like(x)
    for sl in batch_slices(x.shape[0], cfg.batch_size):
        xb = x[sl]
        _, _, grad = loss_gradient(model, xb, y[sl], cross_entropy, attack="fgsm")
        adv = xb + step * ascent_direction(grad, cfg.norm)
        out[sl] = bound(xb, adv, cfg.eps, cfg.norm, cfg.bounds).detach()
    return out


def _run(model: Model, run: Run, best: KeepWorst, cfg: AttackConfig, steps: int, step) -> bool:
    """One PGD run on the samples ``best`` has not seen fooled; False when none is left."""
    idx = best.open()
    if idx.numel() == 0:
        return False
    adv, fooled, margin = pgd_run(model, run.at(idx), cfg, steps, step)
    best.offer(idx, adv, fooled, -margin)
    return True


def pgd_from(
    model: Model,
    x: Tensor,
    y: Tensor,
    x_start: Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
    steps: Optional[int] = None,
) -> Tensor:
    """PGD steps started at ``x_start`` (no restarts, no random start).

    ``x_start`` has the shape of ``x``; ``steps`` defaults to ``cfg.refine``
    when it is positive, else ``cfg.steps``; the step size defaults to
    ``2.5 * eps / steps``. Shapes, bound and errors as in :func:`pgd`.
    """
    if steps is None:
        steps = cfg.refine if cfg.refine > 0 else cfg.steps
    step = cfg.step_size if cfg.step_size is not None else 2.5 * cfg.eps / max(steps, 1)
    out = torch.empty_like(x)
    for sl in batch_slices(x.shape[0], cfg.batch_size):
        out[sl] = pgd_run(model, Run(x[sl], y[sl], x_start[sl]), cfg, steps, step)[0]
    return out


@shape_documented
def pgd(
    model: Model, x: Tensor, y: Tensor, cfg: AttackConfig, ctx: Optional[AttackContext] = None
) -> Tensor:
    """PGD with optional random start, restarts and targeted runs.

    Madry et al., "Towards deep learning models resistant to adversarial
    attacks", ICLR 2018: ``cfg.steps`` steps of size ``cfg.step_size``
    (default ``2.5 * eps / steps``) up the cross-entropy, each projected onto
    the ``cfg.eps`` ball of ``cfg.norm`` (eps in input units) and clipped into
    ``cfg.bounds``. Each restart after the first starts at a random point of
    the ball (the first one does too when ``cfg.random_start``). Then, with
    ``cfg.targets=k``, one run up the margin ``z_t - z_y`` for each of the k
    most likely wrong classes (ranked at the clean input) attacks the samples
    still standing. Per sample, the first run that fools the model wins;
    otherwise the lowest margin of any step. Seeded by ``cfg.seed``.
    """
    step = cfg.resolved_step_size()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    out = torch.empty_like(x)
    for sl in batch_slices(x.shape[0], cfg.batch_size):
        xb, yb = x[sl], y[sl]
        best = KeepWorst(xb)
        for r in range(max(1, cfg.restarts)):
            start = random_start(xb, cfg.eps, cfg.norm, gen) if (cfg.random_start or r > 0) else xb
            if not _run(model, Run(xb, yb, start), best, cfg, cfg.steps, step):
                break
        if cfg.targets > 0:
            ranked = ranked_wrong_classes(model, xb, yb)
            for t in range(min(cfg.targets, ranked.shape[1] - 1)):
                if not _run(model, Run(xb, yb, xb, ranked[:, t]), best, cfg, cfg.steps, step):
                    break
        out[sl] = best.x
    return out
