"""Fitting a trained generator to the evaluation inputs themselves (transductive fine-tuning).

A generator trained on the training split alone has an amortisation gap: on
inputs it never saw it fools fewer samples than PGD, which optimises each
evaluation input directly. Fine-tuning the generator on the evaluation
inputs closes that gap, as transductive adversarial attacks do (Tramer et
al., "Adaptive Attacks for Adversarial Example Defenses", 2020, section on
attacking the evaluation set; Poursaeed et al., "Generative Adversarial
Perturbations", CVPR 2018, fine-tune per target set).

Each step is one pass over the ``N`` evaluation inputs in chunks of
``chunk`` samples with one Adam update at the end (1 forward and 1 backward
pass of the model per sample). The generator's batch-norm layers stay in
eval mode, so the output of a training pass is exactly what evaluating the
generator then gives: the number of samples fooled at step ``t`` is read
off the training pass for free and the best state is kept. The loss is the
cross-entropy of the samples that are not fooled by a margin ``kappa`` yet
(uncapped for them, zero for the others: the samples still missed keep
getting pushed, the ones already fooled stop pulling the generator),
divided by ``N``. Training stops after ``patience`` steps without a new
best or at ``max_steps``; budgets are counted in steps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .networks import input_direction
from .train import margin

__all__ = ["FitResult", "fit_to_inputs"]


@dataclass
class FitResult:
    """What :func:`fit_to_inputs` did: ``steps`` passes, best success and its step."""

    steps: int
    success: float
    best_step: int
    forward: int  # model forward passes, counted in samples
    backward: int


def fit_to_inputs(
    gen: torch.nn.Module,
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_steps: int,
    patience: int,
    lr: float,
    kappa: float,
    chunk: int = 512,
    device: Optional[torch.device] = None,
) -> FitResult:
    """Fine-tune ``gen`` in place on ``(x, y)`` and leave it at its best state, in eval mode.

    ``x``: ``(N, *sample_shape)`` evaluation inputs, ``y``: ``(N,)`` labels;
    ``model`` frozen. ``success`` is the share of samples that ``model``
    classified correctly and the generator's output fools (all samples when
    none is correct). Deterministic for a given seed, inputs and thread setting.
    """
    dev = device if device is not None else next(gen.parameters()).device
    x, y = x.to(dev), y.to(dev)
    n = x.shape[0]
    with torch.no_grad():
        clean_ok = torch.cat(
            [
                model(x[s : s + chunk]).float().argmax(1) == y[s : s + chunk]
                for s in range(0, n, chunk)
            ]
        )
    forward = n
    backward = 0
    dirs = None
    if getattr(gen, "grad_input", False):  # fixed inputs, frozen model: the directions once
        dirs = torch.cat(
            [
                input_direction(model, x[s : s + chunk], y[s : s + chunk], gen.norm)
                for s in range(0, n, chunk)
            ]
        )
        forward, backward = 2 * n, n
    denom = int(clean_ok.sum()) or n
    mask_ok = clean_ok if int(clean_ok.sum()) else torch.ones_like(clean_ok)
    gen.eval()  # batch norm uses its running statistics: training output == evaluation output
    opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    best, best_step, best_state, stale, step = -1, 0, None, 0, 0
    while True:
        opt.zero_grad(set_to_none=True)
        fooled = 0
        for s in range(0, n, chunk):
            xb, yb = x[s : s + chunk], y[s : s + chunk]
            with torch.enable_grad():
                db = dirs[s : s + chunk] if dirs is not None else None
                logits = model(gen(xb, db)).float()
                m = margin(logits, yb)
                active = (m > -kappa).float()
                loss = -(F.cross_entropy(logits, yb, reduction="none") * active).sum() / n
            if step < max_steps:
                loss.backward()
                backward += xb.shape[0]
            fooled += int(((m < 0) & mask_ok[s : s + chunk]).sum())
        forward += n
        if fooled > best:
            best, best_step, stale = fooled, step, 0
            best_state = {k: v.detach().clone() for k, v in gen.state_dict().items()}
        else:
            stale += 1
        if step >= max_steps or stale >= patience or best == denom:
            break
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"generator fine-tuning diverged at step {step + 1}")
        opt.step()
        step += 1
    gen.load_state_dict(best_state)
    gen.eval()
    return FitResult(
        steps=step, success=best / denom, best_step=best_step, forward=forward, backward=backward
    )
