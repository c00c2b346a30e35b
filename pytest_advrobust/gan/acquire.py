"""Obtaining the generator prior in one process: this process's memo, the disk cache, training.

One generator serves a model family (:mod:`.keys`): the next commit's model finds
the entry its predecessor trained and reuses it unchanged. :func:`obtain` goes the
cache's one path (:func:`pytest_advrobust.cache.protocol.obtain`, with this module's
:func:`recipe`): the memo, else the cache entry under the key's lock (a hit), else a
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

A :class:`Job` names the generator: the model, its training samples, the GAN settings,
its identity and the attack context (:class:`pytest_advrobust.attacks.base.AttackContext`),
whose ``device`` and ``runtime`` (cache folder, ``retrain``, progress, warnings) are read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from ..cache import protocol
from .keys import FORMAT_VERSION, PriorIdentity
from .networks import Generator, generator_from_arch
from .train import GanConfig, TrainResult, train_generator

__all__ = ["Job", "obtain", "rebuild", "recipe", "retrain", "train", "train_facts"]

COLD_REASON = "no cached generator for this model family, data and settings"
ASKED_REASON = "--advrobust-retrain"


@dataclass(frozen=True)
class Job:
    """One generator to obtain: for ``model`` (frozen, on ``ctx.device``), trained on
    ``train_x`` ``(N, *sample_shape)`` and ``train_y`` ``(N,)`` with ``gcfg``, known by
    ``ident``; ``ctx`` is the attack context."""

    model: Any
    train_x: torch.Tensor
    train_y: torch.Tensor
    gcfg: GanConfig
    ident: PriorIdentity
    ctx: Any


def clear_memo() -> None:
    protocol.clear_memo()


def memo_facts(facts: Dict[str, Any]) -> Dict[str, Any]:
    """Facts of a generator reused in this process: its training's, marked ``cached``."""
    trained = facts.get("trained_mode", facts.get("mode"))
    return dict(facts, mode="cached", trained_mode=trained)


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
        ctx.runtime.warning(
            f"advrobust: {what} does not fit the generator architecture and is ignored "
            f"({str(exc).splitlines()[0]})"
        )
        return None
    return gen.eval()


def stored_meta(job: Job, result: TrainResult, facts: Dict[str, Any]) -> Dict[str, Any]:
    """The cache entry's metadata of a trained generator."""
    ident, gcfg = job.ident, job.gcfg
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
    return meta


def trained(job: Job, result: TrainResult, facts: Dict[str, Any]) -> protocol.Trained:
    """What the cache stores of a training: the bare network's weights (never a wrapper's
    prefixed names) and :func:`stored_meta`."""
    gen = getattr(result.generator, "module", result.generator)
    state = {k: v.detach().to("cpu").contiguous() for k, v in gen.state_dict().items()}
    return protocol.Trained(
        result.generator, facts, state, stored_meta(job, result, facts), result.mode
    )


def warm_budget(gcfg: GanConfig) -> int:
    """Steps of a warm start: ``warm_fraction`` of the cold budget, at least one."""
    return max(1, int(math.ceil(gcfg.max_steps * gcfg.warm_fraction)))


def train(job: Job, init_state=None, show: bool = True) -> TrainResult:
    """Train on the training split (all ranks together under torchrun); ``show``: report
    progress to the runtime's progress lines (unless quiet)."""
    progress = job.ctx.runtime.shown_progress if show else None
    return train_generator(
        job.model,
        job.train_x,
        job.train_y,
        job.gcfg,
        job.ctx.device,
        init_state=init_state,
        progress=progress,
    )


def _trained(job: Job, init: Optional[Generator], reason: str) -> protocol.Trained:
    """Train (warm from ``init`` when given) for ``reason``."""
    state = init.state_dict() if init is not None else None
    if init is not None:
        say = job.ctx.runtime.shown_progress
        if say is not None:
            say(f"advrobust gan: retraining the generator {job.ident.key[:12]}: {reason}")
    result = train(job, init_state=state)
    budget = warm_budget(job.gcfg) if init is not None else job.gcfg.max_steps
    return trained(job, result, train_facts(result, job.ident, reason, budget))


def recipe(job: Job, reason: Optional[str] = None) -> protocol.Recipe:
    """How the cache obtains ``job``'s generator (:class:`~pytest_advrobust.cache.protocol.
    Recipe`): memoised, never warm-started from another entry, trained further from its
    own entry under ``--advrobust-retrain``. ``reason``: why it is trained (by default
    :data:`ASKED_REASON` for a further training, :data:`COLD_REASON` for a first one)."""
    ident = job.ident

    def train_from(init: Optional[Generator]) -> protocol.Trained:
        why = reason or (ASKED_REASON if init is not None else COLD_REASON)
        return _trained(job, init, why)

    return protocol.Recipe(
        key=ident.key,
        rebuild=lambda state, meta, what: rebuild(ident.arch, state, job.ctx, what),
        hit_facts=lambda meta, seconds: hit_facts(ident.key, meta, seconds),
        train=train_from,
        family=ident.key,
        renew=True,
        memo_facts=memo_facts,
        finish=lambda gen: gen.to(job.ctx.device).eval(),
        what=("trained generator", "trained"),
    )


def obtain(job: Job) -> Tuple[Generator, Dict[str, Any]]:
    """In one process: the memo, else the cache entry, else a cold training (stored).

    With ``--advrobust-retrain`` the generator is trained once per session, warm-started
    from the entry it replaces when there is one.
    """
    return protocol.obtain(recipe(job), job.ctx.runtime)


def retrain(job: Job, gen: Generator, reason: str) -> Tuple[Generator, Dict[str, Any]]:
    """Train ``gen`` further against ``job.model`` (a warm start) and replace its entry;
    ``reason`` (one sentence) is kept in the facts."""
    return protocol.obtain(recipe(job, reason), job.ctx.runtime, init=gen)
