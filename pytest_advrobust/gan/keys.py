"""What identifies a generator: its cache key and its family.

A generator's *key* hashes the model (class, parameter layout and weights),
the training data, the GAN settings, the generator architecture and
:data:`FORMAT_VERSION`; its *family* is the same without the model's
weights, so the previous commit's generator for the same test is found as a
warm start.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

from ..model import Preprocessed, frozen
from .config import GanConfig
from .networks import build_generator

__all__ = [
    "FORMAT_VERSION",
    "arch_for",
    "data_digest",
    "generator_id",
    "hash_parts",
    "qualname",
    "user_model_class",
]

#: Bumped whenever the meaning of a cached generator changes (networks, training, key).
FORMAT_VERSION = 3

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
    from ..precision import InputCast

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


def generator_id(
    model: Any, train_x: torch.Tensor, train_y: torch.Tensor, gcfg: GanConfig, device: Any
) -> Tuple[Dict[str, Any], Dict[str, Any], str, str]:
    """``(arch, parts, key, family)`` of the generator ``gcfg`` trains for ``model``.

    ``key`` hashes ``parts`` (model weights, training data, settings,
    architecture); ``family`` the same without the model weights. ``parts``
    also carries ``user_model_class`` (shown by ``advrobust cache list``, not keyed).
    """
    arch = arch_for(tuple(train_x.shape[1:]), gcfg)
    with frozen(model):
        model_digest = _model_digest(model, train_x, device)
    family_parts = {
        "format": FORMAT_VERSION,
        "model_class": qualname(model),
        "model_layout": _layout_digest(model),
        "data": data_digest(train_x, train_y),
        "gan": gcfg.to_dict(),
        "arch": arch,
    }
    parts = dict(family_parts, model=model_digest)
    key = hash_parts(parts)
    family = hash_parts(family_parts)
    parts["user_model_class"] = user_model_class(model)
    return arch, parts, key, family
