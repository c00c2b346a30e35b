"""The default GAN attack's generator: trained on the training split, then fitted to the inputs.

Two stages (see :func:`fitted_generator`):

1. :func:`pytest_advrobust.attacks.gan.obtain_generator` trains a generator
   on the training split (cached per model, warm-started per family);
2. :func:`pytest_advrobust.gan.transductive.fit_to_inputs` fine-tunes it on
   the evaluation inputs themselves, as PGD optimises each of them.

The fitted generator is cached under a key over the first stage's key, the
evaluation inputs and labels, and the fitting settings. Its *family* (the
same without the model weights) gives the per-commit refresh: when the model
changed but an entry of the family exists (the same test on the previous
commit's model), that generator is fine-tuned directly with
``warm_fraction`` of both stages' step budgets together, and the first
stage is skipped. The fitting also fills each generator's per-input memory:
one offset per evaluation input, found again by exact match of the input
(:mod:`pytest_advrobust.gan.transductive`); a warm start begins from the
previous commit's offsets.

Facts (the report's ``training`` field): ``mode`` (``cold``, ``warm`` or
``cached``; a cached entry keeps the facts of the training that produced
it, with ``trained_mode``), ``steps`` (optimizer steps of both stages),
``seconds``, ``train_steps``/``fit_steps`` per stage, ``attack_id`` (a
hash of the format version, settings and generator architecture: what the
attack is, whatever the model), ``eval_success``
(share of the correctly classified evaluation samples the generator fools),
``cost`` (model forward and backward passes per evaluation sample, and
seconds, of the training), ``cut_short`` (a wall-clock cap ended it).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..gan import acquire
from ..gan.keys import FORMAT_VERSION, data_digest, hash_parts, qualname, user_model_class
from ..gan.networks import Generator
from ..gan.transductive import fit_to_inputs
from ..model import frozen
from .base import AttackConfig, AttackContext, Model

__all__ = ["fitted_generator", "fitted_heads"]

_MEMO: Dict[str, Tuple[Generator, Dict[str, Any]]] = {}


def clear_memo() -> None:
    _MEMO.clear()


def fitted_heads(
    model: Model, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, ctx: AttackContext
) -> Tuple[List[Generator], Dict[str, Any]]:
    """The default attack's two generators for ``(x, y)`` and their combined facts.

    One takes the input gradient's direction (``grad_input``), one does not;
    the attack keeps, per sample, the output of the one that fools the model
    (best of k=2 outputs). The second is fitted after the first, on the samples
    the first does not fool. Facts add up both trainings (``heads`` has each one's).
    """
    from . import gan as g

    base = g.default_gan_config(cfg, _n_train(ctx))
    first, first_facts = fitted_generator(model, x, y, cfg, ctx, base.replace(grad_input=True))

    def done():  # the samples the first head fools: the second head works on the others
        return _fooled_by(model, first, x, y, cfg.norm)

    second, second_facts = fitted_generator(
        model, x, y, cfg, ctx, base.replace(grad_input=False), after=(first_facts["key"], done)
    )
    return [first, second], _combine([first_facts, second_facts])


def _fooled_by(model: Model, gen: Generator, x: torch.Tensor, y: torch.Tensor, norm: str):
    """``(N,)`` bool: the samples ``gen``'s output fools, with ``(forward, backward)`` passes."""
    from ..gan.networks import input_direction

    fooled = []
    with frozen(model):
        for s in range(0, x.shape[0], 512):  # in chunks, as the fitting itself
            xs, ys = x[s : s + 512], y[s : s + 512]
            direction = input_direction(model, xs, ys, norm) if gen.grad_input else None
            with torch.no_grad():
                fooled.append(model(gen(xs, direction)).argmax(1) != ys)
    fooled = torch.cat(fooled)
    n = int(x.shape[0])
    return fooled, (2 * n if gen.grad_input else n, n if gen.grad_input else 0)


def _n_train(ctx: AttackContext) -> int:
    return int(ctx.train_x.shape[0]) if ctx.train_x is not None else 0


def _combine(heads: List[Dict[str, Any]]) -> Dict[str, Any]:
    first = heads[0]
    modes = sorted({h["mode"] for h in heads})
    out = dict(first)
    out.update(
        mode=modes[0] if len(modes) == 1 else "+".join(modes),
        steps=sum(int(h.get("steps", 0)) for h in heads),
        seconds=sum(float(h.get("seconds", 0.0)) for h in heads),
        train_steps=sum(int(h.get("train_steps", 0)) for h in heads),
        fit_steps=sum(int(h.get("fit_steps", 0)) for h in heads),
        cut_short=any(h.get("cut_short") for h in heads),
        key=hash_parts({"heads": [h.get("key") for h in heads]}),
        attack_id=hash_parts({"heads": [h.get("attack_id") for h in heads]}),
        eval_forward_per_sample=len(heads) + 1,
        eval_backward_per_sample=1,
        heads=[
            {
                k: h.get(k)
                for k in (
                    "mode",
                    "trained_mode",
                    "steps",
                    "train_steps",
                    "fit_steps",
                    "seconds",
                    "eval_success",
                    "key",
                )
            }
            for h in heads
        ],
    )
    if any("trained_mode" in h for h in heads):
        trained = {str(h.get("trained_mode", h["mode"])) for h in heads}
        out["trained_mode"] = "+".join(sorted(trained))
    cost = [h.get("cost") or {} for h in heads]
    out["cost"] = {
        k: sum(float(c.get(k, 0.0)) for c in cost)
        for k in ("forward_per_sample", "backward_per_sample", "seconds")
    }
    out.pop("fit_best_step", None)
    return out


def fitted_generator(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    ctx: AttackContext,
    gan_cfg=None,
    after=None,
) -> Tuple[Generator, Dict[str, Any]]:
    """The generator for ``model`` fitted to ``(x, y)`` (``(N, *shape)``, ``(N,)``) and its facts.

    ``gan_cfg`` overrides :func:`~pytest_advrobust.attacks.gan.default_gan_config`.
    ``after``: ``(key, done)`` of an earlier head; ``done()`` gives the samples it
    fools and the passes that cost, called only when this head is fitted.
    """
    from . import gan as g

    train_x, train_y, gcfg, arch, parts, key_a, family_a = g.identity(model, cfg, ctx, gan_cfg)
    if gcfg.fit_steps == 0:
        return g.obtain_generator(model, cfg, ctx, gcfg)
    key, family = _fit_ids(x, y, gcfg, key_a, family_a, after)
    attack_id = hash_parts({"format": FORMAT_VERSION, "gan": gcfg.to_dict(), "arch": arch})
    memo = _MEMO.get(key)  # --advrobust-retrain fits once per session, as the first stage
    if memo is not None and (not ctx.retrain or memo[1]["mode"] in ("cold", "warm")):
        return memo[0].to(ctx.device).eval(), acquire.memo_facts(memo[1])
    cache = None
    if ctx.cache_dir is not None:
        from ..cache import GanCache

        cache = GanCache(ctx.cache_dir, warn=ctx.warn)
    with cache.lock(key) if cache is not None else contextlib.nullcontext():
        hit, warm = acquire.look_up(cache, key, family, arch, ctx) if cache else (None, None)
        if hit is not None:
            gen, facts = hit
        else:
            gen, facts = _fit(model, x, y, cfg, ctx, gcfg, arch, key, warm, after)
            if cache is not None:
                acquire.store(
                    cache,
                    ctx,
                    key,
                    _state(gen),
                    _meta(model, gcfg, arch, family, facts, ctx),
                    facts["mode"],
                    "fitted",
                )
    facts["attack_id"] = attack_id
    gen = gen.to(ctx.device).eval()
    _MEMO[key] = (gen, dict(facts))
    return gen, facts


def _fit_ids(x, y, gcfg, key_a: str, family_a: str, after) -> Tuple[str, str]:
    """The fitted generator's key and family: the first stage's, the inputs and the settings."""
    fit = {
        "steps": gcfg.fit_steps,
        "patience": gcfg.fit_patience,
        "lr": gcfg.fit_lr,
        "kappa": gcfg.fit_kappa,
        "memory_lr": gcfg.fit_memory_lr,
        "warm_fraction": gcfg.warm_fraction,
    }
    eval_digest = data_digest(x.detach().cpu(), y.detach().cpu())
    family = hash_parts({"stage": "fit", "family": family_a, "eval": eval_digest, "fit": fit})
    after_key = after[0] if after is not None else None  # model-specific: not in the family
    key = hash_parts(
        {"stage": "fit", "key": key_a, "eval": eval_digest, "fit": fit, "after": after_key}
    )
    return key, family


def _state(gen: Generator) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in gen.state_dict().items()}


def _meta(model, gcfg, arch, family: str, facts: Dict[str, Any], ctx) -> Dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "family": family,
        "arch": arch,
        "gan": gcfg.to_dict(),
        "model_class": qualname(model),
        "user_model_class": user_model_class(model),
        "mode": facts["mode"],
        "steps": facts["steps"],
        "seconds": facts["seconds"],
        "device": str(ctx.device),
        "holdout_success": facts["holdout_success"],
        "created": time.time(),
        "facts": facts,
    }


def _fit(model, x, y, cfg, ctx, gcfg, arch, key, warm, after):
    """Fit a copy of the first stage's generator (cold) or the family's entry (warm) to ``x``."""
    from . import gan as g

    if warm is None:
        mode, (gen, first) = "cold", g.obtain_generator(model, cfg, ctx, gcfg)
        gen = _copy(gen, arch)
        budget, patience = gcfg.fit_steps, gcfg.fit_patience
    else:
        mode, gen, first = "warm", warm[1].to(ctx.device), None
        budget = max(1, int(math.ceil((gcfg.max_steps + gcfg.fit_steps) * gcfg.warm_fraction)))
        patience = min(gcfg.fit_patience, budget)
    t1 = time.perf_counter()
    done, done_cost = after[1]() if after is not None else (None, (0, 0))
    with frozen(model):
        res = fit_to_inputs(
            gen,
            model,
            x,
            y,
            max_steps=budget,
            patience=patience,
            lr=gcfg.fit_lr,
            kappa=gcfg.fit_kappa,
            memory_lr=gcfg.fit_memory_lr,
            done=done,
            device=torch.device(ctx.device),
        )
    res.forward += done_cost[0]
    res.backward += done_cost[1]
    facts = _facts(first, res, mode, key, x.shape[0], time.perf_counter() - t1, ctx)
    if facts["cut_short"]:
        acquire.warn(
            ctx,
            "advrobust: the GAN training was cut short by --advrobust-gan-seconds "
            f"after {facts['train_steps']} steps; its numbers depend on machine speed "
            "(raise --advrobust-gan-seconds)",
        )
    return gen, facts


def _copy(gen: Generator, arch: Dict[str, Any]) -> Generator:
    """A private copy, so the fine-tuning never changes the first stage's cached generator."""
    from ..gan.networks import generator_from_arch

    with torch.random.fork_rng(devices=[]):
        twin = generator_from_arch(arch)
    twin.load_state_dict(gen.state_dict())
    return twin.to(next(gen.parameters()).device)


def _facts(
    first: Optional[Dict[str, Any]],
    res,
    mode: str,
    key: str,
    n: int,
    fit_seconds: float,
    ctx: AttackContext,
) -> Dict[str, Any]:
    first = first or {}
    trained_now = first.get("mode") in ("cold", "warm")  # the first stage ran in this call
    t_steps = int(first.get("steps", 0)) if trained_now else 0
    t_seconds = float(first.get("seconds", 0.0)) if trained_now else 0.0
    fwd = (int(first.get("forward_samples", 0)) if trained_now else 0) + res.forward
    bwd = (int(first.get("backward_samples", 0)) if trained_now else 0) + res.backward
    seconds = t_seconds + fit_seconds
    return {
        "mode": mode,
        "steps": t_steps + res.steps,
        "seconds": seconds,
        "train_steps": t_steps,
        "fit_steps": int(res.steps),
        "fit_best_step": int(res.best_step),
        "device": str(ctx.device),
        "key": key,
        "holdout_success": float(first.get("holdout_success", float("nan"))),
        "eval_success": float(res.success),
        "cut_short": bool(first.get("cut_short", False)) if trained_now else False,
        "cost": {
            "forward_per_sample": fwd / max(n, 1),
            "backward_per_sample": bwd / max(n, 1),
            "seconds": seconds,
        },
        "eval_forward_per_sample": 1,
    }
