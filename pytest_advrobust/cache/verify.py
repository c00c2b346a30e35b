"""Verification of one cache entry, in the order that keeps it safe.

1. The JSON document is parsed and every field it describes is checked.
2. The weights are read as raw bytes; their size and SHA-256 must match the JSON.
3. Only then does safetensors decode those same bytes (it rejects malformed
   headers, offsets that do not cover the data and oversized headers), and the
   decoded names, dtypes and shapes must match the JSON.
4. The key written in the weights' own safetensors metadata must be the entry's.

Nothing is ever unpickled. Every failure raises :class:`CacheIntegrityError`
with a clause that completes "the entry is damaged (...)".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import safetensors
import torch
from safetensors.torch import load as safetensors_load

from ..errors import CacheIntegrityError
from .keys import FORMAT_VERSION, dtype_name

#: A metadata file larger than this is not one the cache wrote.
MAX_META_BYTES = 64 * 1024 * 1024

Tensors = Dict[str, torch.Tensor]


def _parse_document(doc_bytes: bytes) -> Dict[str, Any]:
    if len(doc_bytes) > MAX_META_BYTES:
        raise CacheIntegrityError("its metadata file is implausibly large")
    try:
        doc = json.loads(doc_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CacheIntegrityError("its metadata file is not valid JSON") from None
    if not isinstance(doc, dict):
        raise CacheIntegrityError("its metadata file is not a JSON object")
    return doc


def _valid_specs(specs: Any) -> bool:
    """True if ``specs`` maps names to ``{"dtype": str, "shape": [non-negative ints]}``."""
    return isinstance(specs, dict) and all(
        isinstance(s, dict)
        and isinstance(s.get("dtype"), str)
        and isinstance(s.get("shape"), list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s["shape"])
        for s in specs.values()
    )


def check_document(key: str, doc_bytes: bytes) -> Dict[str, Any]:
    """Parse and check the JSON of ``key``; return it. Raises CacheIntegrityError."""
    doc = _parse_document(doc_bytes)
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CacheIntegrityError(
            f"it was written in cache format {version!r} "
            f"and this version reads format {FORMAT_VERSION}"
        )
    if doc.get("key") != key:
        raise CacheIntegrityError("its metadata names a different key")
    sha, size = doc.get("sha256"), doc.get("size")
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise CacheIntegrityError("its metadata has no valid checksum")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise CacheIntegrityError("its metadata has no valid size")
    if not isinstance(doc.get("meta"), dict):
        raise CacheIntegrityError("its metadata has no caller meta object")
    if doc.get("family") is not None and not isinstance(doc.get("family"), str):
        raise CacheIntegrityError("its metadata has an invalid family")
    if not isinstance(doc.get("created"), (int, float)):
        raise CacheIntegrityError("its metadata has no creation time")
    if not _valid_specs(doc.get("tensors")):
        raise CacheIntegrityError("its metadata has no valid tensor list")
    return doc


def _stat_weights(path: Path) -> os.stat_result:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CacheIntegrityError("its weights file is missing") from None
    except OSError as exc:
        raise CacheIntegrityError(f"its weights file cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise CacheIntegrityError("its weights file is not a regular file")
    return info


def read_weights(path: Path, size: int, sha: str) -> Tuple[bytes, os.stat_result]:
    """The raw bytes of a weights file, checked against ``size`` and ``sha`` (SHA-256 hex)."""
    info = _stat_weights(path)
    if info.st_size != size:
        raise CacheIntegrityError(
            f"its weights file has {info.st_size} bytes where its metadata says {size} "
            "(truncated or replaced)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CacheIntegrityError(f"its weights file cannot be read ({exc.strerror})") from None
    if len(data) != size:
        raise CacheIntegrityError("its weights file changed size while being read")
    if hashlib.sha256(data).hexdigest() != sha:
        raise CacheIntegrityError("the checksum of its weights file does not match its metadata")
    return data, info


def decode_weights(data: bytes, specs: Mapping[str, Any]) -> Tensors:
    """Decode checksummed safetensors bytes and compare them with the JSON's tensor list."""
    try:
        tensors = safetensors_load(data)
    except Exception as exc:  # safetensors reports malformed data with its own errors
        raise CacheIntegrityError(
            f"its weights file cannot be decoded ({type(exc).__name__})"
        ) from None
    if set(tensors) != set(specs):
        raise CacheIntegrityError("its weights file holds other tensors than its metadata lists")
    for name, tensor in tensors.items():
        spec = specs[name]
        if dtype_name(tensor.dtype) != spec["dtype"] or list(tensor.shape) != spec["shape"]:
            raise CacheIntegrityError(
                f"the shape or dtype of tensor {name!r} does not match its metadata"
            )
    return tensors


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
    )


def check_header_key(key: str, path: Path, info: os.stat_result) -> None:
    """The key in the weights' safetensors metadata (if any) must be ``key``.

    ``info`` is the stat of the file whose bytes were checksummed and decoded;
    the file is reopened by safetensors, so it must still be that same file.
    """
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            extra = f.metadata()
        again = path.stat()
    except Exception as exc:  # the file was replaced or removed meanwhile
        raise CacheIntegrityError(
            f"its weights file cannot be reopened ({type(exc).__name__})"
        ) from None
    if not _same_file(info, again):
        raise CacheIntegrityError("its weights file changed while being read")
    if isinstance(extra, dict) and extra.get("advrobust_key", key) != key:
        raise CacheIntegrityError("its weights file belongs to a different key")


def verify_entry(key: str, doc_bytes: bytes, weights_path: Path) -> Tuple[Dict[str, Any], Tensors]:
    """Check one entry fully; return (JSON document, tensors on the CPU).

    Raises :class:`CacheIntegrityError` for anything damaged or forged.
    """
    doc = check_document(key, doc_bytes)
    data, info = read_weights(weights_path, doc["size"], doc["sha256"])
    tensors = decode_weights(data, doc["tensors"])
    check_header_key(key, weights_path, info)
    return doc, tensors
