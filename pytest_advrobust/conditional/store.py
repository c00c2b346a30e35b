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
data) and trains ``warm_fraction`` of its step budget. Both go the cache's one path
(:func:`pytest_advrobust.cache.protocol.obtain`).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import torch

from ..cache import protocol
from ..runtime import Runtime
from .networks import arch_for, from_arch
from .training import ClassData, GenConfig, TrainResult, train_generator, train_reference

__all__ = ["FORMAT_VERSION", "clear_memo", "obtain"]

#: Bumped whenever the meaning of a cached sample generator or reference changes.
FORMAT_VERSION = 1


def clear_memo() -> None:
    """Forget the networks memoised in this process."""
    protocol.clear_memo()


def _parts(role: str, data: ClassData, cfg: GenConfig, bounds) -> Dict[str, Any]:
    from ..cache import digest_tensors

    arch = arch_for(data.x.shape[1:], data.labels.numel(), role, cfg.noise_dim, cfg.width)
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
        "data": digest_tensors(data.x, data.index, data.labels),
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


def _hit_facts(key: str, meta: Any, seconds: float) -> Dict[str, Any]:
    meta = meta if isinstance(meta, dict) else {}
    return {
        "mode": "cached",
        "steps": 0,
        "seconds": seconds,
        "device": str(meta.get("device", "cpu")),
        "holdout_accuracy": meta.get("holdout_accuracy"),
        "key": key,
    }


def _stored(result: TrainResult, key: str, family: str, parts: Dict[str, Any]):
    """What the cache keeps of a training: the weights and the metadata."""
    net = result.network
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {
        "format": FORMAT_VERSION,
        "family": family,
        "role": parts["role"],
        "arch": parts["arch"],
        "mode": result.mode,
        "steps": int(result.steps),
        "seconds": result.seconds,
        "device": result.device,
        "holdout_accuracy": result.holdout_accuracy,
        "created": time.time(),
    }
    return protocol.Trained(net, _facts(result, key), state, meta, result.mode)


def obtain(role: str, data: ClassData, cfg: GenConfig, bounds, device: Any, runtime: Runtime):
    """The ``role`` network (``"generator"`` or ``"reference"``) for ``data``, and its facts.

    Returns ``(network, facts)`` with the network in eval mode on ``device`` and facts
    ``{"mode": "cold"|"warm"|"cached", "steps", "seconds", "device", "holdout_accuracy",
    "key"}`` (``steps`` is 0 for a cache hit). ``runtime``: the cache folder, ``retrain``,
    warnings and progress lines (:class:`~pytest_advrobust.runtime.Runtime`).
    """
    from ..cache import GanCache

    parts = _parts(role, data, cfg, bounds)
    key = GanCache.key(parts)
    family = GanCache.key({k: v for k, v in parts.items() if k != "data"})
    progress = runtime.shown_progress

    def train(init: Optional[torch.nn.Module]) -> protocol.Trained:
        if role == "generator":
            state = init.state_dict() if init is not None else None
            result = train_generator(data, cfg, bounds, device, state, progress)
        else:
            result = train_reference(data, cfg, bounds, device, progress)
        return _stored(result, key, family, parts)

    recipe = protocol.Recipe(
        key=key,
        rebuild=lambda state, meta, what: _rebuild(parts["arch"], state, runtime.warn, what),
        hit_facts=lambda meta, seconds: _hit_facts(key, meta, seconds),
        train=train,
        family=family,
        warm_start=role == "generator",
        memo_facts=lambda facts: dict(facts, mode="cached", steps=0, seconds=0.0),
        finish=lambda net: net.to(device).eval(),
        what=(f"trained {role}", "trained"),
    )
    return protocol.obtain(recipe, runtime)
