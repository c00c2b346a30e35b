"""Obtaining the generator prior in one process: this process's memo, the disk cache, training.

One generator serves a model family (:mod:`.keys`): the next commit's model finds
the entry its predecessor trained and reuses it unchanged. :func:`obtain` is the
one path: the memo, else the cache entry under the key's lock (a hit), else a
cold training that is stored. :func:`retrain` trains an existing generator
further (a warm start with ``warm_fraction`` of the budget) and replaces the
entry; it runs only on evidence (the attack's one-shot success fell, the
strength check found the attack weak, or ``--advrobust-retrain``), and the
facts say why.

Facts (the report's ``training`` field) say how the generator was obtained:
``mode`` (``cold``, ``warm``: trained now; ``cached``: loaded, with
``trained_mode``), ``steps`` and ``budget``, ``seconds``, ``holdout_success``
and ``success_curve`` (held-out success at budgets over the eps range, against
the model it was trained on), ``trained_against`` (that model's weights digest),
``reason`` (why it was trained) and ``cost`` (the training's model passes).

``ctx`` is the attack context (:class:`pytest_advrobust.attacks.base.AttackContext`):
``device``, ``cache_dir``, ``retrain``, ``warn``, ``progress`` and ``quiet`` are read.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional, Tuple

import torch

from .keys import FORMAT_VERSION, PriorIdentity
from .networks import Generator, generator_from_arch
from .train import GanConfig, TrainResult, train_generator

__all__ = ["MEMO", "clear_memo", "look_up", "obtain", "rebuild", "retrain", "store_trained"]

#: Generators obtained in this process, by key: ``(generator, facts)``.
MEMO: Dict[str, Tuple[Generator, Dict[str, Any]]] = {}

COLD_REASON = "no cached generator for this model family, data and settings"
ASKED_REASON = "--advrobust-retrain"


def clear_memo() -> None:
    MEMO.clear()


def memo_facts(facts: Dict[str, Any]) -> Dict[str, Any]:
    """Facts of a generator reused in this process: its training's, marked ``cached``."""
    trained = facts.get("trained_mode", facts.get("mode"))
    return dict(facts, mode="cached", trained_mode=trained)


def warn(ctx: Any, msg: str) -> None:
    if ctx.warn is not None:
        ctx.warn(msg)


def train_facts(result: TrainResult, ident: PriorIdentity, reason: str, budget: int) -> Dict:
    """How a generator was trained (model passes counted in samples, per training sample)."""
    n = max(int(result.forward_samples), 0)
    return {
        "mode": result.mode,
        "steps": int(result.steps),
        "budget": int(budget),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_success": float(result.holdout_success),
        "holdout_accuracy": float(result.holdout_accuracy),
        "success_curve": [[float(e), float(s)] for e, s in result.success_curve],
        "key": ident.key,
        "trained_against": ident.model_digest,
        "reason": reason,
        "stop_reason": result.stop_reason,
        "cut_short": result.stop_reason == "max_seconds",
        "cost": {
            "forward_passes": n,
            "backward_passes": int(result.backward_samples),
            "seconds": float(result.seconds),
        },
    }


def hit_facts(key: str, meta: Any, seconds: float) -> Dict[str, Any]:
    """A cache hit reports the facts of the training that produced the entry."""
    meta = meta if isinstance(meta, dict) else {}
    facts = meta.get("facts") if isinstance(meta.get("facts"), dict) else {}
    return dict(facts, mode="cached", trained_mode=facts.get("mode"), load_seconds=seconds, key=key)


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


def look_up(cache, ident: PriorIdentity, ctx: Any):
    """The entry of ``ident.key`` as ``(generator, facts)``, or ``None`` (call under
    ``cache.lock(ident.key)``; :func:`pytest_advrobust.cache.protocol.look_up`). Under
    ``ctx.retrain`` the entry is read to be trained further, and no hit is recorded."""
    from ..cache import protocol

    hit, _ = protocol.look_up(
        cache,
        ident.key,
        ident.key,
        lambda state, what: rebuild(ident.arch, state, ctx, what),
        lambda meta, seconds: hit_facts(ident.key, meta, seconds),
        warm=False,
        record=not ctx.retrain,
    )
    return hit


def store_trained(cache, ctx: Any, ident: PriorIdentity, gcfg: GanConfig, result, facts) -> None:
    """Store a trained generator (the bare network's weights) with its facts, replacing any
    entry of its key; a full or read-only disk costs one warning."""
    from ..cache import protocol

    meta = {
        "format": FORMAT_VERSION,
        "family": ident.key,
        "arch": ident.arch,
        "gan": gcfg.to_dict(),
        "model_class": ident.parts["model_class"],
        "user_model_class": ident.parts.get("user_model_class", ident.parts["model_class"]),
        "mode": result.mode,
        "steps": int(result.steps),
        "budget": int(facts["budget"]),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_success": float(result.holdout_success),
        "trained_against": ident.model_digest,
        "created": time.time(),
        "facts": facts,
    }
    if getattr(result, "world_size", 1) > 1:
        from . import distributed

        meta["distributed"] = {
            "world_size": int(result.world_size),
            "backend": distributed.backend(),
            "samples_per_rank": [int(n) for n in result.rank_samples],
        }
    gen = getattr(result.generator, "module", result.generator)  # never a wrapper's prefixed names
    state = {k: v.detach().to("cpu").contiguous() for k, v in gen.state_dict().items()}
    protocol.store(
        cache, ident.key, state, meta, result.mode, ctx.warn, ("trained generator", "trained")
    )


def warm_budget(gcfg: GanConfig) -> int:
    """Steps of a warm start: ``warm_fraction`` of the cold budget, at least one."""
    return max(1, int(math.ceil(gcfg.max_steps * gcfg.warm_fraction)))


def train(
    model, train_x, train_y, gcfg: GanConfig, ctx, init_state=None, distributed=False, show=True
) -> TrainResult:
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


def _trained(model, train_x, train_y, gcfg, ctx, ident, init: Optional[Generator], reason: str):
    """Train (warm from ``init`` when given), store when there is a cache; ``(gen, facts)``."""
    state = init.state_dict() if init is not None else None
    if init is not None and ctx.progress is not None and not ctx.quiet:
        ctx.progress(f"advrobust gan: retraining the generator {ident.key[:12]}: {reason}")
    result = train(model, train_x, train_y, gcfg, ctx, init_state=state)
    budget = warm_budget(gcfg) if init is not None else gcfg.max_steps
    facts = train_facts(result, ident, reason, budget)
    if ctx.cache_dir is not None:
        from ..cache import GanCache

        store_trained(GanCache(ctx.cache_dir, warn=ctx.warn), ctx, ident, gcfg, result, facts)
    return result.generator, facts


def obtain(
    model, train_x, train_y, gcfg: GanConfig, ctx, ident: PriorIdentity
) -> Tuple[Generator, Dict[str, Any]]:
    """In one process: the memo, else the cache entry, else a cold training (stored).

    With ``ctx.retrain`` the generator is trained once per session, warm-started from
    the entry it replaces when there is one.
    """
    memo = MEMO.get(ident.key)
    if memo is not None and (not ctx.retrain or memo[1]["mode"] in ("cold", "warm")):
        return memo[0].to(ctx.device).eval(), memo_facts(memo[1])
    if ctx.cache_dir is None:
        init = memo[0] if memo is not None else None
        gen, facts = _trained(
            model, train_x, train_y, gcfg, ctx, ident, init, ASKED_REASON if init else COLD_REASON
        )
    else:
        from ..cache import GanCache

        cache = GanCache(ctx.cache_dir, warn=ctx.warn)
        with cache.lock(ident.key):
            hit = look_up(cache, ident, ctx)
            if hit is not None and not ctx.retrain:
                gen, facts = hit
            else:
                init = hit[0] if hit is not None else (memo[0] if memo is not None else None)
                reason = ASKED_REASON if init is not None else COLD_REASON
                gen, facts = _trained(model, train_x, train_y, gcfg, ctx, ident, init, reason)
    gen = gen.to(ctx.device).eval()
    MEMO[ident.key] = (gen, dict(facts))
    return gen, facts


def retrain(
    model, train_x, train_y, gcfg: GanConfig, ctx, ident: PriorIdentity, gen, reason: str
) -> Tuple[Generator, Dict[str, Any]]:
    """Train ``gen`` further against ``model`` (a warm start) and replace its entry;
    ``reason`` (one sentence) is kept in the facts."""
    if ctx.cache_dir is None:
        new, facts = _trained(model, train_x, train_y, gcfg, ctx, ident, gen, reason)
    else:
        from ..cache import GanCache

        with GanCache(ctx.cache_dir, warn=ctx.warn).lock(ident.key):
            new, facts = _trained(model, train_x, train_y, gcfg, ctx, ident, gen, reason)
    new = new.to(ctx.device).eval()
    MEMO[ident.key] = (new, dict(facts))
    return new, facts
