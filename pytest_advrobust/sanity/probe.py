"""The probe behind ``gan_weaker_than_pgd``: PGD against the GAN attack on a seeded
sub-batch, compared by an exact sign test."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from ..attacks.base import AttackConfig, AttackContext
from .flags import FLAG_GAN_WEAKER, PROBE_ALPHA, PROBE_SIZE, make_flag, pct, predict_labels


def _sign_test(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(b, n + 1)) / 2.0**n


def gan_probe(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    x_gan: torch.Tensor,
    cfg: AttackConfig,
    ctx: AttackContext,
) -> Tuple[dict, Optional[dict]]:
    """PGD against the GAN attack on a seeded probe of the evaluation batch.

    ``x``, ``y``: the evaluation batch ``(N, ...)``, ``(N,)``; ``x_gan``: the
    ``gan`` attack's adversarial batch for it. The probe is
    ``min(N, PROBE_SIZE)`` samples drawn with ``cfg.seed``; PGD runs with
    ``cfg`` (the test's own eps, norm, steps). Returns ``(probe, flag)``:
    ``probe`` holds the sample count, both attack success rates (shares of the
    probe's correctly classified samples fooled), the samples only PGD fools
    (``pgd_only``) and only the GAN fools (``gan_only``) and the sign test's
    ``p_value``; ``flag`` is the ``gan_weaker_than_pgd`` flag or ``None``.
    """
    from ..attacks.gradient import pgd

    n = x.shape[0]
    k = min(n, PROBE_SIZE)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    idx = torch.randperm(n, generator=gen)[:k].sort().values.to(x.device)
    xs, ys = x[idx].detach(), y[idx].detach()
    bs = cfg.batch_size
    ok = predict_labels(model, xs, bs) == ys
    gan_fooled = ok & (predict_labels(model, x_gan[idx].detach(), bs) != ys)
    pgd_fooled = ok & (predict_labels(model, pgd(model, xs, ys, cfg, ctx), bs) != ys)
    b = int((pgd_fooled & ~gan_fooled).sum())
    c = int((gan_fooled & ~pgd_fooled).sum())
    n_ok = int(ok.sum())

    def rate(m):
        return int(m.sum()) / n_ok if n_ok else 0.0

    probe = {
        "n": int(k),
        "seed": int(cfg.seed),
        "clean_correct": n_ok,
        "pgd_steps": int(cfg.steps),
        "pgd_success": rate(pgd_fooled),
        "gan_success": rate(gan_fooled),
        "pgd_only": b,
        "gan_only": c,
        "p_value": _sign_test(b, c),
    }
    return probe, _flag_if_weaker(probe, cfg)


def _flag_if_weaker(probe: dict, cfg: AttackConfig) -> Optional[dict]:
    """The ``gan_weaker_than_pgd`` flag when PGD alone fools significantly more samples."""
    b, c = probe["pgd_only"], probe["gan_only"]
    if not (b > c and probe["p_value"] < PROBE_ALPHA):
        return None
    return make_flag(
        FLAG_GAN_WEAKER,
        f"On a seeded probe of {probe['n']} samples ({probe['clean_correct']} classified "
        f"correctly), PGD ({cfg.steps} steps, {cfg.norm} eps={cfg.eps:g}) fools "
        f"{pct(probe['pgd_success'])} but the GAN generator only {pct(probe['gan_success'])} "
        f"({b} samples only PGD fools, {c} only the GAN; sign test p={probe['p_value']:.3g}).",
        "The generator is weaker than PGD here, so the GAN's robust accuracy is too "
        "optimistic: raise --advrobust-gan-steps (or leave it at its default), clear the "
        'cache with --advrobust-retrain, or gate on attack="pgd" or ["gan", "pgd"].',
    )
