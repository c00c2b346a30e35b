"""The ``gan`` attack: two generators fitted to the evaluation inputs, best of both per sample.

:func:`gan_attack` gets the pair from :func:`.gan_fit.fitted_heads` (each head
trained on the training split by :func:`obtain_generator` below, then
fine-tuned on the evaluation inputs) and keeps, per sample, the output that
fools the model: one forward and one backward pass for the input gradient's
direction, then one forward pass per head. ``cfg.refine > 0`` adds that many
PGD steps started at the generators' output.

:func:`obtain_generator` checks the training data, derives the GAN settings
and the generator's key (:mod:`pytest_advrobust.gan.keys`) and hands over to
:mod:`pytest_advrobust.gan.acquire` (one process: the memo, the disk cache
under a per-key lock, a warm start from the newest generator of the same
family, or a cold training) or, under ``torchrun``, to
:mod:`pytest_advrobust.gan.acquire_ranks` (rank 0 looks up, all ranks train
together).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..gan import acquire, acquire_ranks
from ..gan.keys import FORMAT_VERSION, generator_id, user_model_class
from ..gan.networks import Generator
from ..gan.train import GanConfig
from ..model import frozen
from .base import AttackConfig, AttackContext, Model, bound

__all__ = [
    "FORMAT_VERSION",
    "FittedPair",
    "clear_memo",
    "default_gan_config",
    "gan_attack",
    "identity",
    "obtain_generator",
    "user_model_class",
]

name = "gan"


def clear_memo() -> None:
    """Forget the generators (and data digests) memoised in this process; the disk cache stays."""
    from ..gan import keys
    from .gan_fit import clear_memo as clear_fitted

    acquire.clear_memo()
    keys.clear_digests()
    clear_fitted()


def default_gan_config(cfg: AttackConfig, n_train: int) -> GanConfig:
    """GAN settings for an attack config and a training set of ``n_train`` samples.

    Budgets are counted in steps and do not depend on the data set's size:
    300 generator steps on the training split (batch 64, smaller below 1,024
    samples; evaluations every 50 steps) and then up to 200 fine-tuning
    passes over the evaluation inputs (:mod:`pytest_advrobust.gan.transductive`,
    fitting the weights and one remembered offset per input, Adam lr 0.1;
    stopping after 40 passes without a better one); a warm start runs only the
    fine-tuning, with 15% of both budgets together (75 steps). No discriminator (``gan_weight=0``):
    on every model we measured it only weakened the attack. The generator
    takes the input gradient's direction as a second input (``grad_input``):
    evaluation costs one forward and one backward pass of the model per
    sample, then the generator's forward. ``cfg.gan_steps``
    (``--advrobust-gan-steps``) replaces the step budget of both stages
    (the fine-tuning gets at most 200). ``cfg.gan_seconds`` is a safety net
    only (default one hour): when it cuts a training short the result is
    marked ``cut_short`` and a warning says so.
    """
    n_train = int(n_train)
    batch = 64 if n_train >= 1024 else max(8, min(64, n_train // 8))
    max_steps = 300 if cfg.gan_steps is None else int(cfg.gan_steps)
    fit_steps = 200 if cfg.gan_steps is None else min(200, int(cfg.gan_steps))
    max_seconds = float(cfg.gan_seconds) if cfg.gan_seconds is not None else 3600.0
    return GanConfig(
        eps=float(cfg.eps),
        norm=cfg.norm,
        bounds=tuple(cfg.bounds) if cfg.bounds is not None else None,
        seed=int(cfg.seed),
        max_steps=max_steps,
        max_seconds=max_seconds,
        batch_size=batch,
        holdout_max=1000,
        eval_every=max(10, min(50, max_steps)),
        patience=4,
        gan_weight=0.0,
        fit_steps=fit_steps,
        fit_memory_lr=0.1,
        warm_fraction=0.15,
        grad_input=True,
    )


# --------------------------------------------------------------------------- obtaining a generator
def identity(
    model: Model, cfg: AttackConfig, ctx: AttackContext, gan_cfg: Optional[GanConfig] = None
):
    """``(train_x, train_y, gan_cfg, arch, parts, key, family)`` of the generator for ``model``.

    ``key`` hashes ``parts`` (model weights, training data, settings, architecture);
    ``family`` the same without the model weights (:func:`pytest_advrobust.gan.keys.generator_id`).
    Raises ``ValueError`` when ``ctx`` has no usable training data.
    """
    train_x, train_y = ctx.train_x, ctx.train_y
    if train_x is None or train_y is None:
        raise ValueError(
            "the gan attack needs training data: ctx.train_x and ctx.train_y are not set"
        )
    train_x = train_x if isinstance(train_x, torch.Tensor) else torch.as_tensor(train_x)
    train_y = train_y if isinstance(train_y, torch.Tensor) else torch.as_tensor(train_y)
    if train_x.shape[0] != train_y.shape[0]:
        raise ValueError(
            f"ctx.train_x has {train_x.shape[0]} samples but ctx.train_y has {train_y.shape[0]}"
        )
    if train_x.shape[0] < 2:
        raise ValueError("the gan attack needs at least 2 training samples")
    gcfg = gan_cfg if gan_cfg is not None else default_gan_config(cfg, train_x.shape[0])
    arch, parts, key, family = generator_id(model, train_x, train_y, gcfg, ctx.device)
    return train_x, train_y, gcfg, arch, parts, key, family


def obtain_generator(
    model: Model, cfg: AttackConfig, ctx: AttackContext, gan_cfg: Optional[GanConfig] = None
) -> Tuple[Generator, Dict[str, Any]]:
    """The generator for ``model`` trained on ``ctx.train_x``/``ctx.train_y``; how it was obtained.

    Returns ``(generator, facts)``: the generator in eval mode on
    ``ctx.device`` and ``{"mode": "cold"|"warm"|"cached", "steps", "seconds",
    "device", "holdout_success", "key", ...}``. ``gan_cfg`` overrides the
    settings derived from ``cfg`` by :func:`default_gan_config`.
    """
    from .. import distributed

    train_x, train_y, gcfg, *ident = identity(model, cfg, ctx, gan_cfg)
    how = acquire_ranks if distributed.is_distributed() else acquire
    return how.obtain(model, train_x, train_y, gcfg, ctx, tuple(ident))


# --------------------------------------------------------------------------- the attack
def gan_attack(
    model: Model, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, ctx: AttackContext
) -> torch.Tensor:
    """Adversarial inputs from the (cached or freshly trained) generators, optionally PGD-refined.

    ``x``: ``(N, *sample_shape)`` on ``ctx.device``; ``y``: ``(N,)``. Returns
    ``x_adv`` with the shape and dtype of ``x``, within ``cfg.eps`` in
    ``cfg.norm`` and inside ``cfg.bounds``. ``ctx.facts["training"]`` gets
    how the generator was obtained. Without ``ctx.train_x`` the generator is
    trained on ``x, y`` themselves.
    """
    if ctx.train_x is None or ctx.train_y is None:
        ctx = dataclasses.replace(ctx, train_x=x.detach().cpu(), train_y=y.detach().cpu())
    from .gan_fit import fitted_heads

    heads, facts = fitted_heads(model, x, y, cfg, ctx)
    ctx.facts["training"] = facts
    for gen in heads:
        if tuple(x.shape[1:]) != gen.sample_shape:
            raise ValueError(
                f"the generator was trained on samples of shape {gen.sample_shape}, "
                f"but the evaluation inputs have shape {tuple(x.shape[1:])}"
            )
    out = torch.empty_like(x)
    bs = max(1, int(cfg.batch_size))
    for s in range(0, x.shape[0], bs):
        out[s : s + bs] = _best_of(model, heads, x[s : s + bs], y[s : s + bs], cfg)
    if cfg.refine > 0:
        from .gradient import pgd_from

        out = pgd_from(model, x, y, out, cfg, ctx)
    return out


def _best_of(
    model: Model, heads, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig
) -> torch.Tensor:
    """Per sample, the first head's output that the model misclassifies, else the lowest margin.

    Costs one forward and one backward pass (the gradient direction) and one
    forward pass per head.
    """
    from ..gan.networks import input_direction
    from ..gan.train import margin

    direction = None
    if any(h.grad_input for h in heads):
        direction = input_direction(model, x, y, cfg.norm)
    best, best_m = None, None
    with torch.no_grad():
        for h in heads:
            cand = bound(
                x, h(x, direction if h.grad_input else None), cfg.eps, cfg.norm, cfg.bounds
            )
            m = margin(model(cand), y)
            m = torch.where(m < 0, torch.full_like(m, -1.0), m)  # fooled is fooled: first one wins
            if best is None:
                best, best_m = cand, m
            else:
                take = m < best_m
                best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), cand, best)
                best_m = torch.minimum(best_m, m)
    return best


gan_attack.name = "gan"  # type: ignore[attr-defined]


class FittedPair(nn.Module):
    """The default attack's two fitted generators as one module (the ``gan_generator`` fixture).

    ``pair(x)`` with ``x`` of shape ``(N, *sample_shape)`` returns ``x_adv`` of the shape and
    dtype of ``x``, inside ``cfg.eps`` (``cfg.norm``) and ``cfg.bounds``: per sample, the first
    generator's output that ``model`` misclassifies, else the one of lowest margin, at the
    labels ``y`` (``(N,)``) or, without them, at the model's own predicted labels. On the
    evaluation samples the pair was fitted to, with their labels, it is exactly the ``gan``
    attack's output (before any ``refine`` steps). Costs one forward and one backward pass
    of the model (the gradient direction) and one forward pass per generator, plus one
    forward without ``y``.
    """

    def __init__(self, heads, model: Model, cfg: AttackConfig):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        object.__setattr__(self, "_model", model)  # not a submodule: never saved or moved
        object.__setattr__(self, "_cfg", cfg)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        model = self._model
        with frozen(model):
            if y is None:
                with torch.no_grad():
                    y = model(x).argmax(1)
            return _best_of(model, list(self.heads), x, y, self._cfg)
