"""Fitting a trained generator to the evaluation inputs themselves (transductive fine-tuning).

A generator trained on the training split alone has an amortisation gap: on
inputs it never saw it fools fewer samples than PGD, which optimises each
evaluation input directly. Fine-tuning on the evaluation inputs closes that
gap, as transductive adversarial attacks do (Tramer et al., "On Adaptive
Attacks to Adversarial Example Defenses", NeurIPS 2020, attacking the
evaluation set itself; Poursaeed et al., "Generative Adversarial
Perturbations", CVPR 2018, fine-tune per target set).

Two sets of parameters are fitted together: the generator's weights (Adam,
``lr``) and one raw-space offset per evaluation input (Adam, ``memory_lr``;
``0`` fits the weights only), kept in the generator's per-input memory
(:meth:`~.networks.Generator.remember`). The weights carry what holds for
all inputs; the offsets let each evaluation input move on its own, as PGD's
iterates do, which the shared weights alone cannot: on a BatchNorm CNN of
sklearn's digits the weights alone stopped 3 points short of PGD-40.

Each step is one pass over the ``N`` evaluation inputs in chunks of
``chunk`` samples with one Adam update at the end (1 forward and 1 backward
pass of the model per sample). The generator's batch-norm layers stay in
eval mode, so the output of a training pass is exactly what evaluating the
generator then gives: the number of samples fooled at step ``t`` is read off
the training pass for free and the best state is kept. The loss is PGD's,
the cross-entropy, summed over the samples that are not fooled by a margin
``kappa`` yet (``done`` samples, fooled by an earlier head, do not count),
divided by ``N``; each offset has its own Adam step size, so a sample the
model is very sure of moves as fast as any other. (The DLR loss of Croce and
Hein, 2020, moved the weights further but locked linear models onto the
wrong class: on a 3-class linear model it missed samples that the closed
form proves fragile, which the cross-entropy finds.) Training stops after
``patience`` steps without a new best or at ``max_steps``; budgets are
counted in steps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

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


def _chunks(n: int, chunk: int) -> List[slice]:
    return [slice(s, s + chunk) for s in range(0, n, chunk)]


def _clean_correct(model, x, y, parts) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[p]).float().argmax(1) == y[p] for p in parts])


def _directions(gen, model, x, y, parts) -> Optional[torch.Tensor]:
    """Fixed inputs, frozen model: the gradient directions once, if ``gen`` takes them."""
    if not getattr(gen, "grad_input", False):
        return None
    return torch.cat([input_direction(model, x[p], y[p], gen.norm) for p in parts])


def _optimiser(gen, x: torch.Tensor, lr: float, memory_lr: float):
    """The per-input offsets (from what ``gen`` remembers of ``x``) and Adam over both."""
    start = gen.recalled(x) if hasattr(gen, "recalled") else None
    offsets = torch.zeros_like(x, dtype=torch.float32) if start is None else start.clone()
    offsets.requires_grad_(memory_lr > 0)
    groups = [{"params": list(gen.parameters()), "lr": lr}]
    if memory_lr > 0:
        groups.append({"params": [offsets], "lr": memory_lr})
    return offsets, torch.optim.Adam(groups, betas=(0.5, 0.999))


def _pass(gen, model, x, y, dirs, offsets, parts, done, kappa: float, learn: bool):
    """One pass over the inputs: the fooled mask and the last chunk's loss; with ``learn``,
    the gradients of minus the cross-entropy of the samples still to fool, over ``N``."""
    n = x.shape[0]
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    for p in parts:
        with torch.enable_grad():
            logits = model(gen(x[p], dirs[p] if dirs is not None else None, offsets[p]))
            m = margin(logits, y[p])
            active = ((m > -kappa) & ~done[p]).float()
            loss = -(F.cross_entropy(logits.float(), y[p], reduction="none") * active).sum() / n
        if learn:
            loss.backward()
        fooled[p] = m.detach() < 0
    return fooled, loss


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
    memory_lr: float = 0.0,
    done: Optional[torch.Tensor] = None,
    chunk: int = 512,
    device: Optional[torch.device] = None,
) -> FitResult:
    """Fine-tune ``gen`` in place on ``(x, y)`` and leave it at its best state, in eval mode.

    ``x``: ``(N, *sample_shape)`` evaluation inputs, ``y``: ``(N,)`` labels;
    ``model`` frozen. ``memory_lr > 0`` also fits one offset per input and
    leaves them in ``gen``'s memory (starting from what it remembers of
    ``x``, as a warm start does). ``done``: ``(N,)`` bool, samples already
    fooled by another head: left out of the loss and counted as fooled.
    ``success`` is the share of samples that ``model`` classified correctly
    and the generator's output (or ``done``) fools (all samples when none is
    correct). Deterministic for a given seed, inputs and thread setting.
    """
    dev = device if device is not None else next(gen.parameters()).device
    x, y = x.to(dev), y.to(dev)
    n = x.shape[0]
    parts = _chunks(n, chunk)
    counted = _clean_correct(model, x, y, parts)  # all samples when none is correct
    counted = counted if bool(counted.any()) else torch.ones_like(counted)
    denom = int(counted.sum())
    dirs = _directions(gen, model, x, y, parts)
    forward, backward = (2 * n, n) if dirs is not None else (n, 0)
    done = torch.zeros(n, dtype=torch.bool, device=dev) if done is None else done.to(dev)
    gen.eval()  # batch norm uses its running statistics: training output == evaluation output
    offsets, opt = _optimiser(gen, x, lr, memory_lr)
    best, best_step, best_state, stale, step = -1, 0, None, 0, 0
    while True:
        opt.zero_grad(set_to_none=True)
        fooled, loss = _pass(gen, model, x, y, dirs, offsets, parts, done, kappa, step < max_steps)
        forward, backward = forward + n, backward + (n if step < max_steps else 0)
        score = int(((fooled | done) & counted).sum())
        if score > best:
            best, best_step, stale = score, step, 0
            best_state = {k: v.detach().clone() for k, v in gen.state_dict().items()}
            best_offsets = offsets.detach().clone()
        else:
            stale += 1
        if step >= max_steps or stale >= patience or best == denom:
            break
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"generator fine-tuning diverged at step {step + 1}")
        opt.step()
        step += 1
    gen.load_state_dict(best_state)
    if memory_lr > 0:
        gen.remember(x, best_offsets)
    return FitResult(step, best / denom, best_step, forward, backward)
