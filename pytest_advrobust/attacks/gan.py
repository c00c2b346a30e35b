"""The ``gan`` attack: an amortised generator as the start of a short gradient cascade.

1. **The prior.** An AdvGAN-style generator (Xiao et al., IJCAI 2018), conditioned
   on eps, trained once per model family on the training split
   (:func:`obtain_generator`; :mod:`pytest_advrobust.gan.acquire`) and reused
   unchanged on the next commits' models. It costs no model pass to apply.
2. **The cascade** (:class:`.cascade.Cascade`): the clean logits, the generator's
   output, then on the samples still standing only a short APGD-CE stage started
   at that output and a short targeted-APGD stage against the most likely wrong
   classes. Per sample the first success, else the point of lowest margin.
3. **Retraining on evidence.** When the generator was trained against other
   weights (an earlier commit) and its one-shot success on this model falls
   clearly below what it reached when it was trained (:func:`reuse_decision`),
   it is trained further (warm start) before the gradient stages, and the
   report says why. ``--advrobust-retrain`` retrains it on request; the strength
   check of the sanity stage can ask for it too.

The report's ``training`` field holds the generator's facts (how it was obtained,
its training cost, the reuse decision); ``ctx.facts["cascade"]`` the cascade's
(the generator-alone accuracy and each stage's passes per sample), and
``ctx.facts["cascade_passes"]`` the passes of every sample (an ``(N, 2)`` int64
tensor: forward, backward).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import torch

from ..gan import acquire, acquire_ranks
from ..gan.holdout import success_at
from ..gan.keys import FORMAT_VERSION, PriorIdentity, generator_id, hash_parts
from ..gan.networks import Generator
from ..gan.train import GanConfig
from .base import AttackConfig, AttackContext, Model
from .cascade import DEFAULT_BUDGET, Cascade, CascadeBudget
from .counting import counting, uncounted

__all__ = [
    "FORMAT_VERSION",
    "RETRAIN_ALPHA",
    "RETRAIN_DROP",
    "attack_id",
    "clear_memo",
    "default_eps_range",
    "default_gan_config",
    "gan_attack",
    "identity",
    "obtain_generator",
    "retrain_generator",
    "reuse_decision",
]

name = "gan"

#: A reused generator is retrained when its one-shot success fell by more than this ...
RETRAIN_DROP = 0.10
#: ... and a one-sided exact binomial test says so at this level.
RETRAIN_ALPHA = 0.01


def clear_memo() -> None:
    """Forget the generators (and data digests) memoised in this process; the disk cache stays."""
    from ..gan import keys

    acquire.clear_memo()
    keys.clear_digests()


def default_eps_range(norm: str, bounds, train_x: torch.Tensor) -> Tuple[float, float]:
    """The budgets one generator is trained for: six octaves of a scale of the data.

    The scale is the width of ``bounds`` (for unbounded features the mean standard
    deviation of a feature of ``train_x``), times ``sqrt(D)`` for L2 (``D`` values per
    sample). L-inf: ``(scale / 128, scale / 2)`` (``[0.0078, 0.5]`` on ``[0, 1]``
    pixels, which holds 8/255 and 0.3); L2: ``(scale / 256, scale / 4)``.
    """
    if bounds is not None:
        width = float(bounds[1]) - float(bounds[0])
    else:
        flat = train_x.detach().reshape(train_x.shape[0], -1).double()
        width = float(flat.std(dim=0).mean()) if flat.shape[0] > 1 else 1.0
        width = width if math.isfinite(width) and width > 0 else 1.0
    if norm == "linf":
        return width / 128, width / 2
    scale = width * math.sqrt(train_x[0].numel())
    return scale / 256, scale / 4


def default_gan_config(cfg: AttackConfig, train_x: torch.Tensor) -> GanConfig:
    """GAN settings for an attack config and its training samples ``train_x``.

    Budgets are counted in steps and do not depend on the data set's size or on
    ``cfg.eps`` (one generator serves every eps of :func:`default_eps_range`): 600
    generator steps (batch 64, smaller below 1,024 samples; a held-out evaluation
    every 50 steps, stopping after 4 without progress), C&W margin loss, no
    discriminator (``gan_weight=0``: on every model we measured it only weakened the
    attack). A retraining on evidence runs a quarter of the budget from the cached
    weights. ``cfg.gan_steps`` (``--advrobust-gan-steps``) replaces the step budget;
    ``cfg.gan_seconds`` is a safety net only (default one hour): when it cuts a
    training short the result is marked ``cut_short`` and a warning says so.
    """
    n_train = int(train_x.shape[0])
    batch = 64 if n_train >= 1024 else max(8, min(64, n_train // 8))
    max_steps = 600 if cfg.gan_steps is None else int(cfg.gan_steps)
    max_seconds = float(cfg.gan_seconds) if cfg.gan_seconds is not None else 3600.0
    return GanConfig(
        eps_range=default_eps_range(cfg.norm, cfg.bounds, train_x),
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
        warm_fraction=0.25,
    )


def attack_id(gcfg: GanConfig, ident: PriorIdentity, budget: CascadeBudget) -> str:
    """What the attack is, whatever the model: format, GAN settings, architecture, budget."""
    return hash_parts(
        {"format": FORMAT_VERSION, "gan": gcfg.to_dict(), "arch": ident.arch, **budget.to_dict()}
    )


# --------------------------------------------------------------------------- the generator
def identity(
    model: Model, cfg: AttackConfig, ctx: AttackContext, gan_cfg: Optional[GanConfig] = None
) -> acquire.Job:
    """The :class:`~pytest_advrobust.gan.acquire.Job` of the generator for ``model``.

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
    gcfg = gan_cfg if gan_cfg is not None else default_gan_config(cfg, train_x)
    ident = generator_id(uncounted(model), train_x, train_y, gcfg, ctx.device)
    return acquire.Job(model, train_x, train_y, gcfg, ident, ctx)


def obtain_generator(
    model: Model, cfg: AttackConfig, ctx: AttackContext, gan_cfg: Optional[GanConfig] = None
) -> Tuple[Generator, Dict[str, Any]]:
    """The generator for ``model``'s family trained on ``ctx.train_x``/``ctx.train_y``.

    Returns ``(generator, facts)``: the generator in eval mode on ``ctx.device`` and
    how it was obtained (:mod:`pytest_advrobust.gan.acquire`). Under torchrun every
    rank trains together (:mod:`pytest_advrobust.gan.acquire_ranks`).
    """
    return _obtain(identity(model, cfg, ctx, gan_cfg))


def _obtain(job: acquire.Job):
    from ..gan import distributed

    how = acquire_ranks if distributed.is_distributed() else acquire
    gen, facts = how.obtain(job)
    return gen, dict(facts, same_model=facts.get("trained_against") == job.ident.model_digest)


def reuse_decision(
    facts: Dict[str, Any], ident: PriorIdentity, success: float, n: int, eps: float
) -> Dict[str, Any]:
    """Whether a generator obtained with ``facts`` may stay as it is for this model.

    ``success``: the share of the ``n`` evaluation samples the model misclassifies at the
    generator's output at ``eps`` (its one-shot success, clean errors included). A
    generator trained now, or trained against these very weights, stays. One trained
    against other weights is retrained when ``success`` lies more than
    :data:`RETRAIN_DROP` below what it reached on its held-out split when it was trained,
    ``expected = (1 - a) + a * s`` (``a``: the model's held-out clean accuracy, ``s``: the
    generator's held-out success at ``eps``, read from ``success_curve``), and a one-sided
    exact binomial test puts that at p < :data:`RETRAIN_ALPHA`. Returns ``{"decision":
    "trained"|"kept"|"retrain", "reason", "success", "expected", "p_value"}`` (the last
    two where a test was made).
    """
    out: Dict[str, Any] = {"success": success}
    if facts.get("mode") in ("cold", "warm"):
        return dict(out, decision="trained", reason=str(facts.get("reason", "")))
    if facts.get("trained_against") == ident.model_digest:
        return dict(out, decision="kept", reason="trained against these very weights")
    curve, acc = facts.get("success_curve") or [], facts.get("holdout_accuracy")
    if not curve or n == 0 or not isinstance(acc, (int, float)) or not math.isfinite(acc):
        return dict(out, decision="kept", reason="nothing to compare its success with")
    from scipy.stats import binom

    expected = (1 - acc) + acc * success_at(curve, eps)
    floor = max(expected - RETRAIN_DROP, 0.0)
    k = int(round(success * n))
    p = float(binom.cdf(k, n, floor)) if floor > 0 else 1.0
    out.update(expected=expected, p_value=p)
    said = (
        f"its one-shot success on this model is {success:.3f} on {n} samples against "
        f"{expected:.3f} when it was trained (p={p:.2g} for a fall of more than {RETRAIN_DROP})"
    )
    if success < floor and p < RETRAIN_ALPHA:
        return dict(out, decision="retrain", reason=f"trained against other weights, and {said}")
    return dict(out, decision="kept", reason=f"trained against other weights; {said}")


# --------------------------------------------------------------------------- the attack
def _generate(gen: Generator, x: torch.Tensor, eps: float, batch_size: int) -> torch.Tensor:
    out = torch.empty_like(x)
    with torch.no_grad():
        for s in range(0, x.shape[0], max(1, int(batch_size))):
            out[s : s + batch_size] = gen(x[s : s + batch_size], eps).to(x)
    return out


def _train_counted(fn, model, ctx: AttackContext):
    """``fn(model)`` with its model passes and seconds added to
    ``ctx.facts["training_passes"]`` (``(forward, backward, seconds)``)."""
    with counting(model) as (m, count):
        out = fn(m)
    f, b, sec = ctx.facts.get("training_passes", (0, 0, 0.0))
    ctx.facts["training_passes"] = (f + count.forward, b + count.backward, sec + count.seconds)
    return out


def retrain_generator(model: Model, cfg: AttackConfig, ctx: AttackContext, reason: str) -> Dict:
    """Train the generator of ``model``'s family further (a warm start) and replace its cache
    entry, for ``reason`` (one sentence); returns the training's facts."""
    job = identity(model, cfg, ctx)
    gen, _ = _obtain(job)
    return acquire.retrain(job, gen, reason)[1]


def gan_attack(
    model: Model, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, ctx: AttackContext
) -> torch.Tensor:
    """Adversarial inputs from the generator prior and the cascade after it.

    ``x``: ``(N, *sample_shape)`` float on ``ctx.device``, inside ``cfg.bounds``; ``y``:
    ``(N,)`` int64. Returns ``x_adv`` with the shape and dtype of ``x``, within
    ``cfg.eps`` in ``cfg.norm`` and inside ``cfg.bounds``. Without ``ctx.train_x`` the
    generator is trained on ``x, y`` themselves. ``cfg.refine > 0`` adds that many PGD
    steps from the cascade's result. Fills ``ctx.facts`` (see the module docstring);
    model passes spent training the generator go to ``ctx.facts["training_passes"]``.
    Raises ValueError when the generator's sample shape differs from ``x``'s.
    """
    if ctx.train_x is None or ctx.train_y is None:
        ctx = dataclasses.replace(ctx, train_x=x.detach().cpu(), train_y=y.detach().cpu())
    job = identity(model, cfg, ctx)
    gen, facts = _train_counted(lambda m: _obtain(dataclasses.replace(job, model=m)), model, ctx)
    if tuple(x.shape[1:]) != gen.sample_shape:
        raise ValueError(
            f"the generator was trained on samples of shape {gen.sample_shape}, "
            f"but the evaluation inputs have shape {tuple(x.shape[1:])}"
        )
    cascade = Cascade(model, x, y, cfg, DEFAULT_BUDGET)
    success = cascade.start(_generate(gen, x, cfg.eps, cfg.batch_size))
    reuse = reuse_decision(facts, job.ident, success, int(x.shape[0]), cfg.eps)
    if reuse["decision"] == "retrain":
        gen, facts = _train_counted(
            lambda m: acquire.retrain(dataclasses.replace(job, model=m), gen, reuse["reason"]),
            model,
            ctx,
        )
        again = cascade.start(_generate(gen, x, cfg.eps, cfg.batch_size))
        reuse.update(decision="retrained", success_after=again)
    cascade.gradient_stages()
    out = cascade.x_adv
    if cfg.refine > 0:
        from .gradient import pgd_from

        out = pgd_from(model, x, y, out, cfg, ctx)
    n = max(int(x.shape[0]), 1)
    ctx.facts["training"] = dict(
        facts, reuse=reuse, attack_id=attack_id(job.gcfg, job.ident, DEFAULT_BUDGET)
    )
    ctx.facts["cascade"] = {
        "budget": DEFAULT_BUDGET.to_dict(),
        "generator_success": success,
        "generator_alone_accuracy": cascade.generator_alone_robust() / n,
        "stages": cascade.tally.per_sample(n),
    }
    ctx.facts["cascade_passes"] = torch.stack(
        [cascade.tally.forward, cascade.tally.backward], dim=1
    ).cpu()
    return out


gan_attack.name = "gan"  # type: ignore[attr-defined]
