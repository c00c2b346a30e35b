"""Obtaining a generator under torchrun: every rank calls :func:`obtain` with the same arguments.

The ranks first check that they computed the same key and hold the same model
weights, each on a device of its own. Rank 0 alone takes the cache lock and
looks the key up with the same :func:`pytest_advrobust.cache.protocol.look_up` and
:func:`.acquire.recipe` a single process uses,
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

from ..cache import protocol
from ..errors import AdvRobustError
from . import distributed
from .acquire import (
    ASKED_REASON,
    COLD_REASON,
    Job,
    rebuild,
    recipe,
    train,
    train_facts,
    trained,
    warm_budget,
)
from .train import _resolve_device

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


def obtain(job: Job):
    """:func:`.acquire.obtain` on every rank of the process group (same calls, same order)."""
    key, ctx, runtime = job.ident.key, job.ctx, job.ctx.runtime
    _check_ranks_agree(f"{key}:{job.ident.model_digest}", ctx.device)
    how = recipe(job)
    memo = protocol.remembered(how, runtime.retrain)
    if distributed.all_true(memo is not None):
        return memo
    use_cache = distributed.broadcast_object(runtime.cache_dir is not None)  # rank 0's view
    error: Optional[Exception] = None
    try:
        if not use_cache:
            result = train(job, show=distributed.rank() == 0)
            gcfg = job.gcfg
            gen, facts = (
                result.generator,
                train_facts(result, job.ident, COLD_REASON, gcfg.max_steps),
            )
        elif distributed.rank() == 0:
            gen, facts = _lead(job, how)
        else:
            gen, facts = _follow(job)
    except Exception as exc:  # reach the closing collective anyway, so that no rank is left waiting
        error = exc
    everyone_ok = distributed.all_true(error is None)
    if error is not None:
        raise error
    if not everyone_ok:
        raise RuntimeError(
            "another rank failed to obtain the GAN generator (its error is in its own output)"
        )
    gen = how.finish(gen)
    protocol.MEMO[key] = (gen, dict(facts))
    return gen, facts


def _lead(job: Job, how: protocol.Recipe):
    """Rank 0: look up under the lock, broadcast the decision, store what all ranks trained.

    Every path broadcasts exactly one decision (``hit``, ``train`` or ``error``), also when
    taking the lock or reading the cache fails, so that the other ranks never wait for it.
    """
    from ..cache import GanCache

    runtime = job.ctx.runtime
    cache = GanCache(runtime.cache_dir, warn=runtime.warn)
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(cache.lock(how.key))
            hit, _ = protocol.look_up(cache, how, record=not runtime.retrain)
        except Exception as exc:  # let the other ranks stop too instead of waiting
            distributed.broadcast_object(
                {"action": "error", "message": f"{type(exc).__name__}: {exc}"}
            )
            raise
        if hit is not None and not runtime.retrain:
            distributed.broadcast_object({"action": "hit", "facts": hit[1]})
            distributed.broadcast_state(hit[0].state_dict())
            return hit
        init = hit[0].state_dict() if hit is not None else None
        distributed.broadcast_object({"action": "train", "warm": init is not None})
        if init is not None:
            distributed.broadcast_state(init)
        result = train(job, init_state=init)
        facts = _facts(job, result, init is not None)
        protocol.store(cache, how, trained(job, result, facts), runtime.warn)
        return result.generator, facts


def _facts(job: Job, result, warm: bool):
    gcfg = job.gcfg
    reason, budget = (ASKED_REASON, warm_budget(gcfg)) if warm else (COLD_REASON, gcfg.max_steps)
    return train_facts(result, job.ident, reason, budget)


def _follow(job: Job):
    """Ranks other than 0: do what rank 0 decided."""
    key = job.ident.key
    decision = distributed.broadcast_object(None)
    action = decision.get("action") if isinstance(decision, dict) else None
    if action == "hit":
        state = distributed.broadcast_state(None)
        gen = rebuild(job.ident.arch, state, job.ctx, f"cache entry {key} from rank 0")
        if gen is None:  # cannot happen: rank 0 rebuilt the same architecture from it
            raise RuntimeError(
                f"the cache entry {key} broadcast by rank 0 does not fit this rank's generator"
            )
        return gen, dict(decision["facts"])
    if action == "train":
        init = distributed.broadcast_state(None) if decision.get("warm") else None
        result = train(job, init_state=init, show=False)
        return result.generator, _facts(job, result, init is not None)
    message = decision.get("message") if isinstance(decision, dict) else repr(decision)
    raise RuntimeError(f"rank 0 could not look up GAN cache entry {key}: {message}")
