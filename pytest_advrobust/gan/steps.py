"""One AdvGAN training step: the generator's, then the discriminator's.

Each sample of a batch gets its own budget, drawn log-uniformly from
``cfg.eps_range``, so that one generator learns every eps of the range.

The generator minimises ``adv_weight * mean(max(margin, -kappa)) + gan_weight
* mean((D(x_adv) - 1) ** 2)`` (:func:`margin`: the Carlini-Wagner margin
against the frozen model, Carlini & Wagner 2017), the discriminator the
least-squares GAN loss ``0.5 * (mean((D(x) - 1) ** 2) + mean(D(x_adv) ** 2))``
(Mao et al., 2017). Under DDP each rank's loss is weighted by its share of the
global batch, so that the all-reduced gradient is the global batch's.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ..metrics.accuracy import margins as margin
from .training_run import TrainingRun

__all__ = ["margin", "train_step"]


def _log_uniform(u: torch.Tensor, eps_range) -> torch.Tensor:
    """Uniform draws ``u`` in [0, 1) mapped log-uniformly onto ``eps_range``."""
    lo, hi = (math.log(e) for e in eps_range)
    return torch.exp(lo + (hi - lo) * u)


def _next_batch(run: TrainingRun) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """This rank's next inputs, labels and budgets (eps per sample, drawn log-uniformly from
    ``eps_range``) on the device, and its share of the global batch."""
    if run.pos + run.batch > run.order.numel():
        perm = torch.randperm(run.train_idx.numel(), generator=run.g_order)
        run.order, run.pos = run.train_idx[perm], 0
    idx = run.order[run.pos : run.pos + run.batch]
    run.pos += run.batch
    eps = _log_uniform(torch.rand(idx.numel(), generator=run.g_eps), run.cfg.eps_range)
    share, sync = 1.0, run.sync
    if sync.active:  # this rank's slice; its loss weighted so that the DDP mean is the global mean
        n_global = idx.numel()
        idx = idx.tensor_split(sync.world)[sync.rank]
        eps = eps.tensor_split(sync.world)[sync.rank]
        share = idx.numel() * sync.world / n_global
    run.samples += idx.numel()
    xb = run.x_src[idx.to(run.x_src.device)].to(run.dev, non_blocking=True)
    yb = run.y_src[idx.to(run.y_src.device)].to(run.dev, non_blocking=True)
    if run.image:
        xb = xb.contiguous(memory_format=run.mem_fmt)
    return xb, yb, eps.to(run.dev), share


def train_step(run: TrainingRun) -> None:
    """One training step: the generator, then the discriminator, then the finiteness check."""
    xb, yb, eps, share = _next_batch(run)
    lr = run.lr_at(run.step)
    for opt in (run.opt_g, run.opt_d):
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = lr
    loss, x_adv = _generator_step(run, xb, yb, eps, share)
    if run.disc is not None:
        _discriminator_step(run, xb, x_adv.detach(), share)
    bad, sync = not bool(torch.isfinite(loss.detach())), run.sync
    if sync.active:
        clock = sync.rank == 0 and run.elapsed() >= run.budget_seconds
        bad, run.clock_up = sync.any_flags([bad, clock])
    if bad:
        raise FloatingPointError(
            f"GAN training diverged at step {run.step + 1} (loss is not finite)"
        )
    run.step += 1


def _generator_step(
    run: TrainingRun, xb, yb, eps, share: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The generator's step (the discriminator frozen meanwhile); ``(loss, x_adv)``."""
    cfg, disc = run.cfg, run.disc
    if disc is not None:
        disc.requires_grad_(False)
    with run.autocast():
        x_adv = run.gen_step(xb, eps)
        loss = cfg.adv_weight * margin(run.model(x_adv), yb).clamp(min=-cfg.kappa).mean()
        if disc is not None:  # the bare discriminator: its DDP wrapper reduces only in its step
            loss = loss + cfg.gan_weight * ((disc(x_adv).float() - 1) ** 2).mean()
    run.opt_g.zero_grad(set_to_none=True)
    (loss * share if run.sync.active else loss).backward()
    run.opt_g.step()
    return loss, x_adv


def _discriminator_step(run: TrainingRun, xb, fake_x, share: float) -> None:
    """The discriminator's least-squares step on the real and the (detached) generated batch."""
    disc = run.disc
    disc.requires_grad_(True)
    with run.autocast():
        if run.sync.active:  # one forward per backward under DDP: real and fake in one batch
            scores = run.disc_step(torch.cat([xb, fake_x])).float()
            real, fake = scores[: xb.shape[0]], scores[xb.shape[0] :]
            d_loss = 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean()) * share
        else:
            d_loss = 0.5 * (
                ((disc(xb).float() - 1) ** 2).mean() + (disc(fake_x).float() ** 2).mean()
            )
    run.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    run.opt_d.step()
