"""Obtaining a generator in one process: this process's memo, the disk cache, or training.

:func:`look_up` is the one cache look-up, used by a single process
(:func:`obtain`), by rank 0 under torchrun (:mod:`.acquire_ranks`) and by the
fitting of generators to the evaluation inputs: under the key's lock it loads
the entry (a hit), or else finds the newest entry of the same family to
warm-start from. Facts (the report's ``training`` field) say how a generator
was obtained; a cache hit reports the facts of the training that produced
the entry, marked ``cached``.

``ctx`` is the attack context (:class:`pytest_advrobust.attacks.base.AttackContext`):
``device``, ``cache_dir``, ``retrain``, ``warn``, ``progress`` and ``quiet`` are read.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import torch

from .keys import FORMAT_VERSION
from .networks import Generator, generator_from_arch
from .train import GanConfig, train_generator

__all__ = ["MEMO", "clear_memo", "look_up", "obtain", "rebuild", "store", "train"]

#: Generators obtained in this process, by key: ``(generator, facts)``.
MEMO: Dict[str, Tuple[Generator, Dict[str, Any]]] = {}


def clear_memo() -> None:
    MEMO.clear()


def memo_facts(facts: Dict[str, Any]) -> Dict[str, Any]:
    """Facts of a generator reused in this process: its training's, marked ``cached``."""
    trained = facts.get("trained_mode", facts.get("mode"))
    return dict(facts, mode="cached", trained_mode=trained)


def warn(ctx: Any, msg: str) -> None:
    if ctx.warn is not None:
        ctx.warn(msg)


def train_facts(result, key: str) -> Dict[str, Any]:
    """How a generator was trained on the training split (counts of model passes in samples)."""
    return {
        "mode": result.mode,
        "steps": int(result.steps),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_success": float(result.holdout_success),
        "key": key,
        "forward_samples": int(result.forward_samples),
        "backward_samples": int(result.backward_samples),
        "cut_short": result.stop_reason == "max_seconds",
    }


def hit_facts(key: str, meta: Any, ctx: Any, seconds: float) -> Dict[str, Any]:
    """A cache hit reports the facts of the training that produced the entry."""
    meta = meta if isinstance(meta, dict) else {}
    if isinstance(meta.get("facts"), dict):
        facts = meta["facts"]
        return dict(
            facts, mode="cached", trained_mode=facts.get("mode"), load_seconds=seconds, key=key
        )
    return {
        "mode": "cached",
        "steps": 0,
        "seconds": seconds,
        "device": str(meta.get("device", ctx.device)),
        "holdout_success": float(meta.get("holdout_success", float("nan"))),
        "key": key,
    }


def rebuild(
    arch: Dict[str, Any], state: Dict[str, Any], ctx: Any, what: str
) -> Optional[Generator]:
    """A generator of ``arch`` with ``state`` loaded, or ``None`` (with a warning) on a misfit."""
    with torch.random.fork_rng(devices=[]):
        gen = generator_from_arch(arch)
    try:
        gen.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        warn(
            ctx,
            f"advrobust: {what} does not fit the generator architecture and is ignored "
            f"({str(exc).splitlines()[0]})",
        )
        return None
    return gen.eval()


def look_up(cache, key: str, family: str, arch: Dict[str, Any], ctx: Any):
    """:func:`pytest_advrobust.cache.protocol.look_up` for generators of ``arch``
    (call under ``cache.lock(key)``): ``(hit, warm)``, ``hit`` a ``(generator, facts)``,
    ``warm`` a ``(warm_key, generator)``."""
    from ..cache import protocol

    return protocol.look_up(
        cache,
        key,
        family,
        lambda state, what: rebuild(arch, state, ctx, what),
        lambda meta, seconds: hit_facts(key, meta, ctx, seconds),
        retrain=ctx.retrain,
    )


def store(cache, ctx: Any, key: str, state, meta: Dict[str, Any], mode: str, done="trained"):
    """Store ``state`` under ``key`` (:func:`pytest_advrobust.cache.protocol.store`);
    ``done``: what was done to the generator, and is done again next run if storing fails."""
    from ..cache import protocol

    protocol.store(cache, key, state, meta, mode, ctx.warn, (f"{done} generator", done))


def store_trained(cache, ctx, key, family, arch, gcfg: GanConfig, parts, result) -> None:
    """Store a freshly trained generator (the bare network's weights) with its facts."""
    meta = {
        "format": FORMAT_VERSION,
        "family": family,
        "arch": arch,
        "gan": gcfg.to_dict(),
        "model_class": parts["model_class"],
        "mode": result.mode,
        "steps": int(result.steps),
        "user_model_class": parts.get("user_model_class", parts["model_class"]),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_success": float(result.holdout_success),
        "created": time.time(),
        "facts": train_facts(result, key),
    }
    if getattr(result, "world_size", 1) > 1:
        from .. import distributed

        meta["distributed"] = {
            "world_size": int(result.world_size),
            "backend": distributed.backend(),
            "samples_per_rank": [int(n) for n in result.rank_samples],
        }
    gen = getattr(result.generator, "module", result.generator)  # never a wrapper's prefixed names
    state = {k: v.detach().to("cpu").contiguous() for k, v in gen.state_dict().items()}
    store(cache, ctx, key, state, meta, result.mode)


def train(
    model, train_x, train_y, gcfg: GanConfig, ctx, init_state=None, distributed=False, show=True
):
    """Train on the training split (all ranks together with ``distributed``); ``show``:
    report progress to ``ctx.progress`` (unless ``ctx.quiet``)."""
    progress = None if ctx.quiet or not show else ctx.progress
    return train_generator(
        model,
        train_x,
        train_y,
        gcfg,
        ctx.device,
        init_state=init_state,
        progress=progress,
        distributed=distributed,
    )


def obtain(model, train_x, train_y, gcfg: GanConfig, ctx, ident) -> Tuple[Generator, Dict]:
    """In one process: the memo, else the cache (hit or warm start), else a cold training.

    ``ident``: ``(arch, parts, key, family)`` from :func:`.keys.generator_id`.
    """
    arch, parts, key, family = ident
    memo = MEMO.get(key)
    if memo is not None and (not ctx.retrain or memo[1]["mode"] in ("cold", "warm")):
        return memo[0].to(ctx.device).eval(), memo_facts(memo[1])
    if ctx.cache_dir is None:
        result = train(model, train_x, train_y, gcfg, ctx)
        gen, facts = result.generator, train_facts(result, key)
    else:
        from ..cache import GanCache

        cache = GanCache(ctx.cache_dir, warn=ctx.warn)
        with cache.lock(key):
            hit, warm = look_up(cache, key, family, arch, ctx)
            if hit is not None:
                gen, facts = hit
            else:
                init = warm[1].state_dict() if warm is not None else None
                result = train(model, train_x, train_y, gcfg, ctx, init_state=init)
                store_trained(cache, ctx, key, family, arch, gcfg, parts, result)
                gen, facts = result.generator, train_facts(result, key)
    gen = gen.to(ctx.device).eval()
    MEMO[key] = (gen, dict(facts))
    return gen, facts
