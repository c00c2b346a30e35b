"""What identifies a generator: its cache key (the model's family) and the model it met.

A generator's *key* hashes the model's family (its class and its parameter
and buffer layout, not its weights), the training data, the GAN settings,
the generator architecture and :data:`FORMAT_VERSION`. The next commit's
model, with other weights, finds the same entry and reuses it; the digest of
the weights it was trained against is recorded beside it
(:attr:`PriorIdentity.model_digest`), so that the attack can tell a reuse on
another model from a reload on the same one.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

from ..inputs.model import Preprocessed, frozen
from .config import GanConfig
from .networks import build_generator

__all__ = [
    "FORMAT_VERSION",
    "PriorIdentity",
    "arch_for",
    "data_digest",
    "generator_id",
    "hash_parts",
    "qualname",
    "user_model_class",
]

#: Bumped whenever the meaning of a cached generator changes (networks, training, key).
FORMAT_VERSION = 4

_DATA_DIGESTS: Dict[Tuple[int, int], Tuple[Any, Any, Tuple, str]] = {}


def clear_digests() -> None:
    _DATA_DIGESTS.clear()


def qualname(obj: Any) -> str:
    """``module.Class`` of a module (or of any object without ``__qualname__``), else its own."""
    if isinstance(obj, nn.Module) or not hasattr(obj, "__qualname__"):
        cls = type(obj)
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"


def user_model_class(model: Any) -> str:
    """The qualified class name of the user's own model inside the plugin's wrappers
    (preprocessing, dtype cast), as ``advrobust cache list`` shows it."""
    from ..inputs.precision import InputCast

    while isinstance(model, (Preprocessed, InputCast)):
        model = model.inner
    return qualname(model)


def _layout_digest(model: Any) -> str:
    """Digest of the parameter/buffer names, shapes and dtypes (the architecture, not values)."""
    if not isinstance(model, nn.Module):
        return ""
    layout = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    layout.append([type(m).__qualname__ for m in model.modules()])
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()


def _model_digest(model: Any, train_x: torch.Tensor, device: Any) -> str:
    from ..cache import digest_module, digest_tensors

    if isinstance(model, nn.Module):
        return digest_module(model)
    with torch.no_grad():
        logits = model(train_x[:64].to(device))
    return digest_tensors(torch.as_tensor(logits).detach().float().cpu())


def data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """Digest of a pair of tensors, remembered per live pair (60,000 images take a moment)."""
    from ..cache import digest_tensors

    slot = (id(x), id(y))
    state = (x._version, y._version, x.data_ptr(), y.data_ptr(), tuple(x.shape), tuple(y.shape))
    hit = _DATA_DIGESTS.get(slot)
    if hit is not None and hit[0]() is x and hit[1]() is y and hit[2] == state:
        return hit[3]
    digest = digest_tensors(x, y)
    try:
        _DATA_DIGESTS[slot] = (weakref.ref(x), weakref.ref(y), state, digest)
    except TypeError:  # not weak-referenceable: do not remember
        pass
    return digest


def hash_parts(parts: Dict[str, Any]) -> str:
    """The cache key of a JSON-able dict."""
    from ..cache import GanCache

    return GanCache.key(parts)


def arch_for(sample_shape, gcfg: GanConfig) -> Dict[str, Any]:
    """The generator architecture (:attr:`Generator.arch`) that ``gcfg`` builds."""
    with torch.random.fork_rng(devices=[]):
        return build_generator(sample_shape, **gcfg.generator_args()).arch


@dataclass(frozen=True)
class PriorIdentity:
    """Who a generator is: ``key`` (its cache key: the model's family, data, settings,
    architecture), ``arch`` (:attr:`.networks.Generator.arch`), ``parts`` (what ``key``
    hashes, plus ``user_model_class`` for ``advrobust cache list``) and ``model_digest``
    (the weights of the model it is obtained for; recorded, not keyed)."""

    key: str
    arch: Dict[str, Any]
    parts: Dict[str, Any]
    model_digest: str


def generator_id(
    model: Any, train_x: torch.Tensor, train_y: torch.Tensor, gcfg: GanConfig, device: Any
) -> PriorIdentity:
    """The :class:`PriorIdentity` of the generator ``gcfg`` trains for ``model`` on
    ``(train_x, train_y)`` (``(N, *sample_shape)``, ``(N,)``)."""
    arch = arch_for(tuple(train_x.shape[1:]), gcfg)
    with frozen(model):
        model_digest = _model_digest(model, train_x, device)
    parts = {
        "format": FORMAT_VERSION,
        "model_class": user_model_class(model),
        "model_layout": _layout_digest(model),
        "data": data_digest(train_x, train_y),
        "gan": gcfg.to_dict(),
        "arch": arch,
    }
    key = hash_parts(parts)
    parts["user_model_class"] = user_model_class(model)
    return PriorIdentity(key, arch, parts, model_digest)
