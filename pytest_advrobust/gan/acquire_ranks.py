"""Obtaining a generator under torchrun: every rank calls :func:`obtain` with the same arguments.

The ranks first check that they computed the same key and hold the same model
weights, each on a device of its own. Rank 0 alone takes the cache lock and
looks the key up with the same :func:`.acquire.look_up` a single process uses,
then broadcasts the decision: a hit is broadcast to the other ranks; a miss
(or ``--advrobust-retrain``, warm-started on every rank from rank 0's entry) is
trained by all ranks together (DistributedDataParallel) and stored by rank 0.
A closing collective follows, so that the entry is stored before any rank goes
on and all ranks fail together. Every rank returns the same generator, and the entry is exactly
the one a single process would load.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Dict, Optional, Tuple

from ..errors import AdvRobustError
from . import distributed
from .acquire import (
    ASKED_REASON,
    COLD_REASON,
    MEMO,
    look_up,
    memo_facts,
    rebuild,
    store_trained,
    train,
    train_facts,
    warm_budget,
)
from .keys import PriorIdentity
from .train import GanConfig, _resolve_device

__all__ = ["obtain"]


def _check_ranks_agree(key: str, device: Any) -> None:
    """Every rank must train the same generator, each on a device of its own type and index.

    ``key``: the generator's key with the model's weights digest."""
    dev = _resolve_device(device)
    everyone = distributed.all_gather_object((key, socket.gethostname(), dev.type, dev.index))
    differ = [r for r, (k, _, _, _) in enumerate(everyone) if k != everyone[0][0]]
    if differ:
        ranks = ", ".join(map(str, differ))
        raise AdvRobustError(
            f"under torchrun every rank must train the same GAN generator, but rank(s) {ranks} "
            "computed another cache key than rank 0 or hold other model weights: the model, the "
            "GAN training data or the settings "
            "differ between ranks (build and seed them the same way on every rank)"
        )
    types = sorted({t for _, _, t, _ in everyone})
    if len(types) > 1:
        raise AdvRobustError(
            f"under torchrun all ranks must train on the same kind of device, "
            f"but they use {' and '.join(types)}"
        )
    if types == ["cuda"]:
        seen: Dict[Tuple[str, Any], int] = {}
        for r, (_, host, _, index) in enumerate(everyone):
            if (host, index) in seen:
                raise AdvRobustError(
                    f"under torchrun ranks {seen[(host, index)]} and {r} would both train on "
                    f"cuda:{index} of {host}: give each rank its own GPU with "
                    "--advrobust-device=auto (or cuda), "
                    "which uses cuda:LOCAL_RANK, and start at most one rank per GPU"
                )
            seen[(host, index)] = r


def obtain(model, train_x, train_y, gcfg: GanConfig, ctx, ident: PriorIdentity):
    """:func:`.acquire.obtain` on every rank of the process group (same calls, same order)."""
    key = ident.key
    _check_ranks_agree(f"{key}:{ident.model_digest}", ctx.device)
    memo = MEMO.get(key)
    usable = memo is not None and (not ctx.retrain or memo[1]["mode"] in ("cold", "warm"))
    if distributed.all_true(usable):
        return memo[0].to(ctx.device).eval(), memo_facts(memo[1])
    use_cache = distributed.broadcast_object(ctx.cache_dir is not None)  # rank 0's view decides
    error: Optional[Exception] = None
    try:
        if not use_cache:
            lead = distributed.rank() == 0
            result = train(model, train_x, train_y, gcfg, ctx, distributed=True, show=lead)
            gen, facts = result.generator, train_facts(result, ident, COLD_REASON, gcfg.max_steps)
        elif distributed.rank() == 0:
            gen, facts = _lead(model, train_x, train_y, gcfg, ctx, ident)
        else:
            gen, facts = _follow(model, train_x, train_y, gcfg, ctx, ident)
    except Exception as exc:  # reach the closing collective anyway, so that no rank is left waiting
        error = exc
    everyone_ok = distributed.all_true(error is None)
    if error is not None:
        raise error
    if not everyone_ok:
        raise RuntimeError(
            "another rank failed to obtain the GAN generator (its error is in its own output)"
        )
    gen = gen.to(ctx.device).eval()
    MEMO[key] = (gen, dict(facts))
    return gen, facts


def _lead(model, train_x, train_y, gcfg: GanConfig, ctx, ident):
    """Rank 0: look up under the lock, broadcast the decision, store what all ranks trained.

    Every path broadcasts exactly one decision (``hit``, ``train`` or ``error``), also when
    taking the lock or reading the cache fails, so that the other ranks never wait for it.
    """
    from ..cache import GanCache

    cache = GanCache(ctx.cache_dir, warn=ctx.warn)
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(cache.lock(ident.key))
            hit = look_up(cache, ident, ctx)
        except Exception as exc:  # let the other ranks stop too instead of waiting
            distributed.broadcast_object(
                {"action": "error", "message": f"{type(exc).__name__}: {exc}"}
            )
            raise
        if hit is not None and not ctx.retrain:
            distributed.broadcast_object({"action": "hit", "facts": hit[1]})
            distributed.broadcast_state(hit[0].state_dict())
            return hit
        init = hit[0].state_dict() if hit is not None else None
        distributed.broadcast_object({"action": "train", "warm": init is not None})
        if init is not None:
            distributed.broadcast_state(init)
        result = train(model, train_x, train_y, gcfg, ctx, init_state=init, distributed=True)
        facts = _facts(result, ident, gcfg, init is not None)
        store_trained(cache, ctx, ident, gcfg, result, facts)
        return result.generator, facts


def _facts(result, ident: PriorIdentity, gcfg: GanConfig, warm: bool):
    reason, budget = (ASKED_REASON, warm_budget(gcfg)) if warm else (COLD_REASON, gcfg.max_steps)
    return train_facts(result, ident, reason, budget)


def _follow(model, train_x, train_y, gcfg: GanConfig, ctx, ident: PriorIdentity):
    """Ranks other than 0: do what rank 0 decided."""
    key = ident.key
    decision = distributed.broadcast_object(None)
    action = decision.get("action") if isinstance(decision, dict) else None
    if action == "hit":
        state = distributed.broadcast_state(None)
        gen = rebuild(ident.arch, state, ctx, f"cache entry {key} from rank 0")
        if gen is None:  # cannot happen: rank 0 rebuilt the same architecture from it
            raise RuntimeError(
                f"the cache entry {key} broadcast by rank 0 does not fit this rank's generator"
            )
        return gen, dict(decision["facts"])
    if action == "train":
        init = distributed.broadcast_state(None) if decision.get("warm") else None
        result = train(
            model, train_x, train_y, gcfg, ctx, init_state=init, distributed=True, show=False
        )
        return result.generator, _facts(result, ident, gcfg, init is not None)
    message = decision.get("message") if isinstance(decision, dict) else repr(decision)
    raise RuntimeError(f"rank 0 could not look up GAN cache entry {key}: {message}")
