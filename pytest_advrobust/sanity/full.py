"""The full sanity checks: weaker attacks that beat the strongest one, a huge eps that
leaves accuracy above chance, and PGD that has not converged."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch

from ..attack_table import reference_order
from ..attacks.base import AttackConfig, AttackContext
from ..geometry import clip_bounds, project
from .flags import (
    ACC_TOL,
    FLAG_LARGE_EPS,
    FLAG_NOT_CONVERGED,
    FLAG_WEAK_BEATS_STRONG,
    LARGE_EPS_FACTOR,
    LARGE_EPS_MIN_STEPS,
    accuracy,
    make_flag,
    tolerance,
)


def _noise(x: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """Random perturbation with the full eps norm, seeded and drawn on the CPU."""
    gen = torch.Generator().manual_seed(int(cfg.seed) + 7919)
    if cfg.norm == "linf":
        signs = torch.randint(0, 2, x.shape, generator=gen, dtype=torch.int64) * 2 - 1
        delta = signs.to(torch.float64) * cfg.eps
    else:
        direction = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        norms = direction.reshape(x.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
        delta = direction / norms.view(-1, *([1] * (x.dim() - 1))) * cfg.eps
    delta = delta.to(device=x.device, dtype=x.dtype)
    return clip_bounds(x + project(delta, cfg.eps, cfg.norm), cfg.bounds).detach()


def _large_eps(cfg: AttackConfig, x: torch.Tensor) -> float:
    if cfg.bounds is None:
        return LARGE_EPS_FACTOR * float(cfg.eps)
    width = float(cfg.bounds[1]) - float(cfg.bounds[0])
    if cfg.norm == "linf":
        return width
    dim = int(x[0].numel()) if x.shape[0] else 1
    return width * math.sqrt(dim)


class SubBatch(NamedTuple):
    """The sub-batch the full checks attack, with the model and the attack context."""

    model: Callable
    xs: torch.Tensor
    ys: torch.Tensor
    ctx: AttackContext

    def accuracy_under(self, attack: Callable, cfg: AttackConfig) -> float:
        x_adv = attack(self.model, self.xs, self.ys, cfg, self.ctx)
        return self.accuracy_on(x_adv, cfg)

    def accuracy_on(self, x_adv: torch.Tensor, cfg: AttackConfig) -> float:
        return accuracy(self.model, x_adv, self.ys, cfg.batch_size)


def full_checks(
    batch: SubBatch,
    cfg: AttackConfig,
    num_classes: int,
    evaluated: Dict[str, torch.Tensor],
    configured: Sequence[str] = (),
) -> List[dict]:
    """The ``weak_beats_strong``, ``large_eps`` and ``not_converged`` flags raised on the
    sub-batch ``batch.xs (n, ...)``, ``batch.ys (n,)``; ``evaluated`` maps attacks under
    test to their adversarial sub-batch, ``configured`` names the attacks that pick the
    strongest one."""
    from ..attacks import strongest_attack

    if batch.xs.shape[0] == 0:
        return []
    strong_name, strong = strongest_attack(configured)
    acc_strong = batch.accuracy_under(strong, cfg)
    found = [
        _weak_beats_strong(batch, cfg, evaluated, strong_name, acc_strong),
        _large_eps_check(batch, cfg, num_classes),
        _not_converged(batch, cfg, acc_strong),
    ]
    return [f for f in found if f is not None]


def _weak_beats_strong(
    batch: SubBatch, cfg: AttackConfig, evaluated, strong_name: str, acc_strong: float
) -> Optional[dict]:
    """FGSM, noise, and any non-gradient attack under test against the strongest attack."""
    from ..attacks.gradient import fgsm

    n = batch.xs.shape[0]
    label = (
        f"PGD ({cfg.steps} steps, step size {cfg.resolved_step_size():.3g}, "
        f"{cfg.restarts} restart(s))"
        if strong_name == "pgd"
        else f"{strong_name.upper()} ({cfg.steps} iterations, {cfg.restarts} restart(s))"
    )
    fgsm_cfg = replace(cfg, steps=1, step_size=None, restarts=1, random_start=False)
    weak = {
        "FGSM": batch.accuracy_under(fgsm, fgsm_cfg),
        "random noise of the same norm": batch.accuracy_on(_noise(batch.xs, cfg), cfg),
    }
    for name, adv in evaluated.items():
        if name in reference_order():
            continue
        weak[f"the {name} attack"] = batch.accuracy_on(adv, cfg)
    worst_name = min(weak, key=lambda k: weak[k])
    if weak[worst_name] >= acc_strong - tolerance(n):
        return None
    return make_flag(
        FLAG_WEAK_BEATS_STRONG,
        f"With {cfg.norm} eps={cfg.eps:g}, {worst_name} brings accuracy to "
        f"{weak[worst_name]:.3f} but {label} only to {acc_strong:.3f} on {n} samples.",
        "A strong gradient attack should never lose to a weaker attack: either its "
        "settings are too weak (too few steps or too small a step size) or the "
        "gradients are masked; raise "
        "steps and step size, add restarts, and check the gradients flag.",
    )


def _large_eps_check(batch: SubBatch, cfg: AttackConfig, num_classes: int) -> Optional[dict]:
    """An attack with an unbounded budget must reach chance or below."""
    from ..attacks.gradient import pgd

    big = _large_eps(cfg, batch.xs)
    big_cfg = replace(
        cfg,
        eps=big,
        step_size=None,
        steps=max(cfg.steps, LARGE_EPS_MIN_STEPS),
        restarts=1,
        random_start=False,
    )
    acc_big = batch.accuracy_under(pgd, big_cfg)
    chance = 1.0 / max(num_classes, 1)
    if acc_big <= chance + 1e-9:
        return None
    return make_flag(
        FLAG_LARGE_EPS,
        f"PGD with a huge {cfg.norm} eps={big:g} still leaves accuracy at {acc_big:.3f} "
        f"on {batch.xs.shape[0]} samples, above chance {chance:.3f} for {num_classes} classes.",
        "An attack whose budget covers the whole input range must fool the model; "
        "failing that points to gradient masking or a broken attack rather than "
        "robustness; check the gradients flag and use a gradient-free attack such as "
        "gan or a differentiable approximation of the masking step.",
    )


def _not_converged(batch: SubBatch, cfg: AttackConfig, acc_pgd: float) -> Optional[dict]:
    """Twice the steps or twice the restarts must not matter."""
    from ..attacks.gradient import pgd

    n = batch.xs.shape[0]
    variants = {
        f"{2 * cfg.steps} steps": replace(cfg, steps=2 * cfg.steps),
        f"{2 * max(cfg.restarts, 1)} restarts": replace(cfg, restarts=2 * max(cfg.restarts, 1)),
    }
    changes = {label: batch.accuracy_under(pgd, vcfg) for label, vcfg in variants.items()}
    label = max(changes, key=lambda k: abs(changes[k] - acc_pgd))
    # One extra restart moves a few samples of an ordinary model; only a
    # clear shift (3 points and 3 samples) says the attack has not converged.
    if abs(changes[label] - acc_pgd) <= max(3 * ACC_TOL, 3.0 / max(n, 1)):
        return None
    return make_flag(
        FLAG_NOT_CONVERGED,
        f"PGD with {label} gives adversarial accuracy {changes[label]:.3f} instead of "
        f"{acc_pgd:.3f} with {cfg.steps} steps and {cfg.restarts} restart(s) on {n} "
        f"samples.",
        "The attack has not converged, so the measured robustness depends on the "
        "attack budget and is likely too optimistic; raise steps and restarts (or use "
        "a random start) until the number stops moving.",
    )
