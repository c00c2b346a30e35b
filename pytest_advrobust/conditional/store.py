"""Obtaining the sample generator and the reference classifier: memo, cache, training.

Both networks live in the GAN cache (:class:`pytest_advrobust.cache.GanCache`)
with the same safety as the AdvGAN generators: safetensors weights only,
a checksum in the JSON beside them, atomic writes, one lock per key, and a
damaged entry set aside and retrained. The key digests the training data
(samples, class indices and labels), the training settings, the
architecture, the input bounds, the role (``generator`` or ``reference``) and
:data:`FORMAT_VERSION`; neither network depends on the user's model, so a
changed model reuses both. A generator whose data changed is warm-started
from the newest cached generator of the same *family* (the key without the
data) and trains ``warm_fraction`` of its step budget.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .networks import arch_for, from_arch
from .training import GenConfig, TrainResult, train_generator, train_reference

__all__ = ["FORMAT_VERSION", "clear_memo", "obtain"]

#: Bumped whenever the meaning of a cached sample generator or reference changes.
FORMAT_VERSION = 1

_MEMO: Dict[str, Tuple[torch.nn.Module, Dict[str, Any]]] = {}


def clear_memo() -> None:
    """Forget the networks memoised in this process."""
    _MEMO.clear()


def _parts(role: str, train_x, index, labels, cfg: GenConfig, bounds) -> Dict[str, Any]:
    from ..cache import digest_tensors

    arch = arch_for(train_x.shape[1:], labels.numel(), role, cfg.noise_dim, cfg.width)
    config = cfg.to_dict()
    if role == "reference":  # the reference does not depend on the GAN's settings
        config = {
            k: config[k] for k in ("seed", "batch_size", "reference_steps", "reference_lr", "width")
        }
    return {
        "format": FORMAT_VERSION,
        "kind": "advrobust-generated",
        "role": role,
        "arch": arch,
        "config": config,
        "bounds": list(bounds) if bounds is not None else None,
        "data": digest_tensors(train_x, index, labels),
    }


def _rebuild(arch: Dict[str, Any], state: Dict[str, Any], warn, what: str):
    with torch.random.fork_rng(devices=[]):
        net = from_arch(arch)
    try:
        net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        if warn is not None:
            warn(
                f"advrobust: {what} does not fit the {arch['role']} architecture and is "
                f"ignored ({str(exc).splitlines()[0]})"
            )
        return None
    return net.eval().requires_grad_(False)


def _facts(result: TrainResult, key: str) -> Dict[str, Any]:
    return {
        "mode": result.mode,
        "steps": int(result.steps),
        "seconds": float(result.seconds),
        "device": result.device,
        "holdout_accuracy": result.holdout_accuracy,
        "key": key,
    }


def obtain(
    role: str,
    train_x: torch.Tensor,
    index: torch.Tensor,
    labels: torch.Tensor,
    cfg: GenConfig,
    bounds,
    *,
    device: Any = "cpu",
    cache_dir: Optional[Path] = None,
    retrain: bool = False,
    warn: Optional[Callable[[str], None]] = None,
    progress: Optional[Callable[[str], None]] = None,
):
    """The ``role`` network (``"generator"`` or ``"reference"``) for this data, and its facts.

    ``train_x``: float ``(N, *shape)``; ``index``: int64 ``(N,)`` class
    indices into ``labels`` (int64 ``(K,)``). Returns ``(network, facts)``
    with the network in eval mode on ``device`` and facts ``{"mode":
    "cold"|"warm"|"cached", "steps", "seconds", "device", "holdout_accuracy",
    "key"}`` (``steps`` is 0 for a cache hit).
    """
    from ..cache import GanCache

    parts = _parts(role, train_x, index, labels, cfg, bounds)
    key = GanCache.key(parts)
    memo = _MEMO.get(key)
    if memo is not None and not (retrain and memo[1]["mode"] == "cached"):
        return memo[0].to(device), dict(memo[1], mode="cached", steps=0, seconds=0.0)
    family = GanCache.key({k: v for k, v in parts.items() if k != "data"})

    def train(init_state=None) -> TrainResult:
        if role == "generator":
            return train_generator(
                train_x, index, labels, cfg, bounds, device, init_state, progress
            )
        return train_reference(train_x, index, labels.numel(), cfg, bounds, device, progress)

    if cache_dir is None:
        result = train()
        net, facts = result.network, _facts(result, key)
    else:
        net, facts = _through_cache(
            GanCache(cache_dir, warn=warn),
            key,
            family,
            parts,
            train,
            retrain,
            warn,
            role == "generator",
        )
    net = net.to(device).eval()
    _MEMO[key] = (net, dict(facts))
    return net, facts


def _through_cache(
    cache, key: str, family: str, parts: Dict[str, Any], train, retrain: bool, warn, warm_ok: bool
):
    from ..cache import protocol

    arch = parts["arch"]

    def hit_facts(meta, seconds: float) -> Dict[str, Any]:
        meta = meta if isinstance(meta, dict) else {}
        return {
            "mode": "cached",
            "steps": 0,
            "seconds": seconds,
            "device": str(meta.get("device", "cpu")),
            "holdout_accuracy": meta.get("holdout_accuracy"),
            "key": key,
        }

    with cache.lock(key):
        hit, warm = protocol.look_up(
            cache,
            key,
            family,
            lambda state, what: _rebuild(arch, state, warn, what),
            hit_facts,
            retrain=retrain,
            warm=warm_ok,
        )
        if hit is not None:
            return hit
        init_state = warm[1].state_dict() if warm is not None else None
        result = train(init_state)
        net = result.network
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        meta = {
            "format": FORMAT_VERSION,
            "family": family,
            "role": parts["role"],
            "arch": arch,
            "mode": result.mode,
            "steps": int(result.steps),
            "seconds": result.seconds,
            "device": result.device,
            "holdout_accuracy": result.holdout_accuracy,
            "created": time.time(),
        }
        role = parts["role"]
        protocol.store(cache, key, state, meta, result.mode, warn, (f"trained {role}", "trained"))
        return net, _facts(result, key)
