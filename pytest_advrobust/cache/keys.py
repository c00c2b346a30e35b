"""Cache keys: digests of tensors and modules, canonical keys and the key check.

A key digests everything a trained generator depends on; see :func:`canonical_key`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
import struct
from pathlib import PurePath
from typing import Any, List, Mapping, Tuple

import torch

__all__ = ["FORMAT_VERSION", "canonical_key", "digest_module", "digest_tensors"]

#: Version of the on-disk layout and of the key recipe. Part of every key and
#: of every entry's JSON; an entry written under another version is set aside.
FORMAT_VERSION = 1

#: What a key may look like (it becomes part of file names).
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")


# --------------------------------------------------------------------------- digests


def dtype_name(dtype: torch.dtype) -> str:
    """``str(dtype)`` without the ``torch.`` prefix, e.g. ``"float32"``."""
    return str(dtype).replace("torch.", "", 1)


def _update_block(h: "hashlib._Hash", data: bytes) -> None:
    """Feed one length-prefixed block, so that concatenations cannot collide."""
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


def _tensor_buffer(t: Any) -> Tuple[str, List[int], Any]:
    """Return (dtype name, shape, raw-bytes buffer) of a tensor, on CPU, contiguous."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        raise TypeError("digest_tensors does not support quantized tensors")
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    t = t.to("cpu").contiguous()
    shape = [int(s) for s in t.shape]
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return dtype_name(t.dtype), shape, b""
    return dtype_name(t.dtype), shape, flat.view(torch.uint8).numpy()


def _update_tensor(h: "hashlib._Hash", t: Any) -> None:
    dtype, shape, buf = _tensor_buffer(t)
    _update_block(h, json.dumps({"dtype": dtype, "shape": shape}, sort_keys=True).encode())
    nbytes = len(buf) if isinstance(buf, bytes) else int(buf.nbytes)
    h.update(struct.pack("<Q", nbytes))
    h.update(buf)


def digest_tensors(*tensors: Any) -> str:
    """SHA-256 (hex) over the dtype, shape and raw bytes of each tensor, in order.

    Tensors are read on the CPU in contiguous layout, so the digest does not
    depend on device, strides or ``requires_grad``. Non-tensors (numpy arrays,
    nested lists) are converted with :func:`torch.as_tensor`.
    """
    h = hashlib.sha256(b"advrobust-tensors\0")
    h.update(struct.pack("<Q", len(tensors)))
    for t in tensors:
        _update_tensor(h, t)
    return h.hexdigest()


def _qualname(obj_type: type) -> str:
    return f"{obj_type.__module__}.{obj_type.__qualname__}"


def _update_state_value(h: "hashlib._Hash", value: Any) -> None:
    """Feed one ``state_dict`` value: a tensor, or extra state (canonically when possible)."""
    if isinstance(value, torch.Tensor):
        _update_block(h, b"tensor")
        _update_tensor(h, value)
        return
    _update_block(h, b"extra")
    try:
        text = _canonical_json(value)
    except (TypeError, ValueError):
        text = repr(value)
    _update_block(h, f"{_qualname(type(value))}:{text}".encode())


def digest_module(module: Any) -> str:
    """SHA-256 (hex) of a module's class, structure and ``state_dict``.

    Covers the class (module + qualname), the class of every submodule by
    name, and every ``state_dict`` entry in sorted name order with its dtype,
    shape and bytes. Anything with a ``state_dict()`` method is accepted.
    """
    if not callable(getattr(module, "state_dict", None)):
        raise TypeError(
            f"digest_module needs an object with state_dict(), got {type(module).__name__}"
        )
    h = hashlib.sha256(b"advrobust-module\0")
    _update_block(h, _qualname(type(module)).encode())
    named_modules = getattr(module, "named_modules", None)
    if callable(named_modules):
        structure = [[name, _qualname(type(sub))] for name, sub in named_modules()]
        _update_block(h, json.dumps(structure).encode())
    state = module.state_dict()
    names = sorted(state)
    h.update(struct.pack("<Q", len(names)))
    for name in names:
        _update_block(h, str(name).encode())
        _update_state_value(h, state[name])
    return h.hexdigest()


# --------------------------------------------------------------------------- keys


def _normalize_float(obj: float) -> Any:
    if not math.isfinite(obj):
        return {"__float__": repr(float(obj))}
    if obj.is_integer() and abs(obj) < 2**53:
        return int(obj)  # 1 and 1.0 mean the same setting
    return float(obj)  # json writes float.__repr__: shortest round trip, stable


def _normalize_mapping(obj: Mapping[Any, Any]) -> dict:
    out = {}
    for k, v in obj.items():
        if isinstance(k, enum.Enum):
            k = k.value
        if not isinstance(k, str):
            raise TypeError(f"canonical_key needs string keys, got {k!r}")
        out[k] = _normalize(v)
    return out


def _normalize_other(obj: Any) -> Any:
    """Dataclasses, numpy scalars and numpy arrays; anything else is refused."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return {"__dataclass__": _qualname(type(obj)), "fields": _normalize(fields)}
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return _normalize(item())
    if hasattr(obj, "__array__"):  # numpy arrays
        return {"__tensor__": digest_tensors(torch.as_tensor(obj))}
    raise TypeError(f"canonical_key cannot encode a value of type {type(obj).__name__}")


def _normalize(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON values with a stable encoding."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return _normalize(obj.value)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _normalize_float(obj)
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": digest_tensors(obj)}
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, Mapping):
        return _normalize_mapping(obj)
    if isinstance(obj, (list, tuple)):
        return [_normalize(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [_normalize(v) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return _normalize_other(obj)


def _canonical_json(obj: Any) -> str:
    return json.dumps(
        _normalize(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def canonical_key(parts: Mapping[str, Any]) -> str:
    """A 32-hex-digit key: SHA-256 of the canonical JSON of ``parts``.

    ``parts`` is a mapping with string keys whose values are JSON-like (str,
    int, float, bool, None, lists, tuples, dicts), tensors or numpy arrays
    (hashed with :func:`digest_tensors`), paths, dtypes, enums or dataclasses.
    Dict order does not matter; integral floats equal ints (``1.0 == 1``);
    other floats are written with ``repr`` (shortest round trip, stable across
    platforms). :data:`FORMAT_VERSION` is always mixed in.
    """
    if not isinstance(parts, Mapping):
        raise TypeError("canonical_key expects a mapping of key parts")
    text = _canonical_json({"format_version": FORMAT_VERSION, "parts": parts})
    return hashlib.sha256(b"advrobust-key\0" + text.encode("ascii")).hexdigest()[:32]


def check_key(key: Any) -> str:
    """Return ``key`` if it can name cache files; raise ValueError otherwise."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValueError(
            f"invalid cache key {key!r}: use letters, digits, '-' or '_' (at most 128)"
        )
    return key
