"""The GAN cache: content-addressed keys, safe atomic storage, locks, warm starts.

Training a generator is the expensive step of the ``gan`` attack, so its
weights are kept on disk under a key that digests everything the generator
depends on (the model's class and weights, the training data, the GAN
settings and :data:`FORMAT_VERSION`).

Layout of a cache folder::

    <root>/<key>.safetensors     the generator's weights (safetensors, never pickle)
    <root>/<key>.json            metadata: checksum, size, tensor specs, caller meta
    <root>/locks/<key>.lock      one cross-process lock per key
    <root>/quarantine/           damaged entries, set aside with a timestamp
    <root>/events.jsonl          one JSON line per event ("train", "hit", "damaged", ...)

Safety rules:

* Nothing is ever unpickled. Weights are read as raw bytes, their size and
  SHA-256 are checked against the JSON, the safetensors header is parsed and
  compared with the JSON, and only then are the bytes decoded by safetensors.
  Files with other suffixes (``.pt``, ``.pkl``) are ignored.
* A store writes both files under temporary names (``*.tmp-*``) in the same
  folder, fsyncs them, and renames the weights and then the JSON into place.
  The JSON is the commit marker: weights without a JSON are never loaded.
* A damaged entry never raises: :meth:`GanCache.load` warns in one sentence,
  moves the files to ``quarantine/``, records a ``"damaged"`` event and
  returns ``None`` so that the caller retrains.

Intended use by a caller that trains::

    cache = GanCache(root, warn=ctx.warn)
    with cache.lock(key):
        hit = cache.load(key)
        if hit is None:
            state = train(...)
            cache.store(key, state, {"family": family, ...})
            cache.record_event("train", key)
        else:
            cache.record_event("hit", key)
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import time
import warnings
from collections import Counter
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import filelock
import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from .errors import CacheIntegrityError
from .paths import ENV_CACHE_DIR, resolve_cache_dir  # noqa: F401  (public here too)

__all__ = [
    "FORMAT_VERSION",
    "CacheWarning",
    "EntryInfo",
    "GanCache",
    "canonical_key",
    "digest_module",
    "digest_tensors",
    "resolve_cache_dir",
]

#: Version of the on-disk layout and of the key recipe. Part of every key and
#: of every entry's JSON; an entry written under another version is set aside.
FORMAT_VERSION = 1

#: Environment variable naming the cache folder (below option and ini).

_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
_TMP_MARK = ".tmp-"
_WEIGHTS_EXT = ".safetensors"
_META_EXT = ".json"
_EVENTS = "events.jsonl"
_MAX_META_BYTES = 64 * 1024 * 1024
_MAX_HEADER_BYTES = 100 * 1024 * 1024
#: A temporary file whose writer may still be alive is only cleaned after this long.
_STALE_SECONDS = 3600.0
#: Weights without a JSON younger than this may be a store between its two renames.
_ORPHAN_GRACE_SECONDS = 60.0

# safetensors dtype codes -> torch dtype names (``str(dtype)`` without "torch.").
_SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


class CacheWarning(UserWarning):
    """Issued (when no ``warn`` callback is given) for a damaged cache entry."""


# --------------------------------------------------------------------------- digests


def _dtype_name(dtype: torch.dtype) -> str:
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
        return _dtype_name(t.dtype), shape, b""
    return _dtype_name(t.dtype), shape, flat.view(torch.uint8).numpy()


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


def digest_module(module: Any) -> str:
    """SHA-256 (hex) of a module's class, structure and ``state_dict``.

    Covers the class (module + qualname), the class of every submodule by
    name, and every ``state_dict`` entry in sorted name order with its dtype,
    shape and bytes. Anything with a ``state_dict()`` method is accepted.
    """
    if not callable(getattr(module, "state_dict", None)):
        raise TypeError(f"digest_module needs an object with state_dict(), got {type(module).__name__}")
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
        value = state[name]
        _update_block(h, str(name).encode())
        if isinstance(value, torch.Tensor):
            _update_block(h, b"tensor")
            _update_tensor(h, value)
        else:  # extra state: hash it canonically when possible
            _update_block(h, b"extra")
            try:
                text = _canonical_json(value)
            except (TypeError, ValueError):
                text = repr(value)
            _update_block(h, f"{_qualname(type(value))}:{text}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- keys


def _normalize(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON values with a stable encoding."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return _normalize(obj.value)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return {"__float__": repr(float(obj))}
        if obj.is_integer() and abs(obj) < 2**53:
            return int(obj)  # 1 and 1.0 mean the same setting
        return float(obj)  # json writes float.__repr__: shortest round trip, stable
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": digest_tensors(obj)}
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if isinstance(k, enum.Enum):
                k = k.value
            if not isinstance(k, str):
                raise TypeError(f"canonical_key needs string keys, got {k!r}")
            out[k] = _normalize(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_normalize(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [_normalize(v) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__dataclass__": _qualname(type(obj)),
            "fields": _normalize({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}),
        }
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return _normalize(item())
    if hasattr(obj, "__array__"):  # numpy arrays
        return {"__tensor__": digest_tensors(torch.as_tensor(obj))}
    raise TypeError(f"canonical_key cannot encode a value of type {type(obj).__name__}")


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


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"invalid cache key {key!r}: use letters, digits, '-' or '_' (at most 128)")
    return key


# --------------------------------------------------------------------------- location


# --------------------------------------------------------------------------- file helpers


def _write_bytes(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_suffix() -> str:
    return f"{_TMP_MARK}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM)
        return True
    return True


def _tmp_is_stale(path: Path, now: Optional[float] = None) -> bool:
    """A temporary file is stale if its writer (on this host) is gone, or it is old."""
    now = time.time() if now is None else now
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    if age > _STALE_SECONDS:
        return True
    tail = path.name.split(_TMP_MARK, 1)[-1].split("-")
    if len(tail) >= 2 and tail[0] == _host_tag():
        try:
            return not _pid_alive(int(tail[1]))
        except ValueError:
            return False
    return False


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- the cache


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    """One committed cache entry as :meth:`GanCache.entries` sees it.

    ``valid`` is the result of full verification (size, checksum, header);
    ``problem`` says what is wrong when it is not. ``created`` is a Unix time.
    """

    key: str
    family: Optional[str]
    created: float
    size: int
    meta: Dict[str, Any]
    valid: bool
    problem: Optional[str] = None


class GanCache:
    """A folder of trained generators, safe to share between processes.

    ``root`` is created lazily on the first write. ``warn`` receives one
    sentence for every damaged entry that is set aside; without it a
    :class:`CacheWarning` is issued with :func:`warnings.warn`.

    Only :meth:`lock` takes the per-key lock; :meth:`load`, :meth:`store` and
    :meth:`remove` expect the caller to hold it when other processes may use
    the same key. Do not nest ``lock(key)`` for the same key in one process:
    each call returns a new lock object, and the second would wait for the first.
    """

    key = staticmethod(canonical_key)

    def __init__(self, root: str | os.PathLike[str], warn: Optional[Callable[[str], None]] = None):
        self.root = Path(root).expanduser()
        self._warn = warn

    def __repr__(self) -> str:
        return f"GanCache({str(self.root)!r})"

    # paths -----------------------------------------------------------------

    def weights_path(self, key: str) -> Path:
        """Path of the weights file of ``key`` (it may not exist)."""
        return self.root / f"{_check_key(key)}{_WEIGHTS_EXT}"

    def meta_path(self, key: str) -> Path:
        """Path of the JSON metadata (commit marker) of ``key`` (it may not exist)."""
        return self.root / f"{_check_key(key)}{_META_EXT}"

    @property
    def quarantine_dir(self) -> Path:
        """Folder that damaged entries are moved into."""
        return self.root / "quarantine"

    @property
    def events_path(self) -> Path:
        """The JSON-lines event log."""
        return self.root / _EVENTS

    # locking ---------------------------------------------------------------

    def lock(self, key: str, timeout: float = -1) -> filelock.FileLock:
        """A cross-process lock for ``key`` at ``<root>/locks/<key>.lock``.

        Use as ``with cache.lock(key): ...``. ``timeout`` is in seconds;
        ``-1`` waits as long as needed, otherwise :class:`filelock.Timeout` is
        raised when it runs out. The operating system releases the lock when
        the holding process dies, so a killed worker never blocks the others.
        """
        _check_key(key)
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(locks / f"{key}.lock"), timeout=timeout)

    def _try_lock(self, key: str) -> Optional[filelock.FileLock]:
        lock = self.lock(key, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return None
        return lock

    # store -----------------------------------------------------------------

    def store(
        self,
        key: str,
        state_dict: Mapping[str, torch.Tensor],
        meta: Optional[Mapping[str, Any]] = None,
        *,
        family: Optional[str] = None,
    ) -> Path:
        """Write an entry atomically and return the path of its weights file.

        ``state_dict`` maps names to tensors (copied to the CPU). ``meta`` must
        be JSON-serialisable; it comes back from :meth:`load` after a JSON
        round trip (tuples become lists). ``family`` (default
        ``meta["family"]``) groups entries for :meth:`find_warm_start`.

        Both files are written under temporary names and fsynced; then any old
        JSON of the key is removed, the weights are renamed into place, and the
        JSON last. A writer killed at any point leaves nothing loadable that is
        wrong: either the previous entry, or no entry.
        """
        _check_key(key)
        meta = dict(meta or {})
        if family is None:
            family = meta.get("family")
        if family is not None and not isinstance(family, str):
            raise TypeError("cache entry family must be a string")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cache entry meta must be JSON-serialisable: {exc}") from None

        tensors: Dict[str, torch.Tensor] = {}
        for name, tensor in state_dict.items():
            if not isinstance(name, str):
                raise TypeError(f"state_dict names must be strings, got {name!r}")
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"state_dict entry {name!r} is not a tensor")
            tensors[name] = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        data = _safetensors_save(
            tensors, metadata={"advrobust_key": key, "format_version": str(FORMAT_VERSION)}
        )
        created_ns = time.time_ns()
        doc = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "family": family,
            "created": created_ns / 1e9,
            "created_ns": created_ns,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "tensors": {
                name: {"shape": [int(s) for s in t.shape], "dtype": _dtype_name(t.dtype)}
                for name, t in sorted(tensors.items())
            },
            "torch": torch.__version__,
            "write_id": secrets.token_hex(8),
            "meta": meta,
        }
        doc_bytes = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode("utf-8")

        self.root.mkdir(parents=True, exist_ok=True)
        suffix = _tmp_suffix()
        weights_tmp = self.root / f"{key}{_WEIGHTS_EXT}{suffix}"
        meta_tmp = self.root / f"{key}{_META_EXT}{suffix}"
        weights_path, meta_path = self.weights_path(key), self.meta_path(key)
        try:
            _write_bytes(weights_tmp, data)
            _write_bytes(meta_tmp, doc_bytes)
            _unlink(meta_path)  # un-commit an old entry before its weights change
            os.replace(weights_tmp, weights_path)
            os.replace(meta_tmp, meta_path)  # commit
        except BaseException:
            for tmp in (weights_tmp, meta_tmp):
                try:
                    _unlink(tmp)
                except OSError:
                    pass
            raise
        _fsync_dir(self.root)
        return weights_path

    # verification ------------------------------------------------------------

    def _verify(
        self, key: str, doc_bytes: bytes, decode: bool
    ) -> Tuple[Dict[str, Any], Optional[Dict[str, torch.Tensor]]]:
        """Check one entry; return (json doc, tensors or None). Raises CacheIntegrityError."""
        if len(doc_bytes) > _MAX_META_BYTES:
            raise CacheIntegrityError("its metadata file is implausibly large")
        try:
            doc = json.loads(doc_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CacheIntegrityError("its metadata file is not valid JSON") from None
        if not isinstance(doc, dict):
            raise CacheIntegrityError("its metadata file is not a JSON object")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheIntegrityError(
                f"it was written in cache format {version!r} and this version reads format {FORMAT_VERSION}"
            )
        if doc.get("key") != key:
            raise CacheIntegrityError("its metadata names a different key")
        sha, size, specs = doc.get("sha256"), doc.get("size"), doc.get("tensors")
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
        if not isinstance(specs, dict) or not all(
            isinstance(s, dict)
            and isinstance(s.get("dtype"), str)
            and isinstance(s.get("shape"), list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s["shape"])
            for s in specs.values()
        ):
            raise CacheIntegrityError("its metadata has no valid tensor list")

        weights_path = self.weights_path(key)
        try:
            info = weights_path.stat()
        except FileNotFoundError:
            raise CacheIntegrityError("its weights file is missing") from None
        except OSError as exc:
            raise CacheIntegrityError(f"its weights file cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(info.st_mode):
            raise CacheIntegrityError("its weights file is not a regular file")
        actual_size = info.st_size
        if actual_size != size:
            raise CacheIntegrityError(
                f"its weights file has {actual_size} bytes where its metadata says {size} (truncated or replaced)"
            )
        try:
            data = weights_path.read_bytes()
        except OSError as exc:
            raise CacheIntegrityError(f"its weights file cannot be read ({exc.strerror})") from None
        if len(data) != size:
            raise CacheIntegrityError("its weights file changed size while being read")
        if hashlib.sha256(data).hexdigest() != sha:
            raise CacheIntegrityError("the checksum of its weights file does not match its metadata")

        self._check_header(key, data, specs)
        if not decode:
            return doc, None
        try:
            tensors = _safetensors_load(data)
        except Exception as exc:  # safetensors reports malformed data with its own errors
            raise CacheIntegrityError(f"its weights file cannot be decoded ({type(exc).__name__})") from None
        if set(tensors) != set(specs):
            raise CacheIntegrityError("its weights file holds other tensors than its metadata lists")
        for name, tensor in tensors.items():
            spec = specs[name]
            if _dtype_name(tensor.dtype) != spec["dtype"] or list(tensor.shape) != spec["shape"]:
                raise CacheIntegrityError(f"tensor {name!r} does not match its metadata")
        return doc, tensors

    @staticmethod
    def _check_header(key: str, data: bytes, specs: Mapping[str, Any]) -> None:
        """Parse the safetensors header (plain JSON) and compare it with the metadata."""
        if len(data) < 8:
            raise CacheIntegrityError("its weights file is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len < 2 or header_len > len(data) - 8 or header_len > _MAX_HEADER_BYTES:
            raise CacheIntegrityError("its weights file is not a safetensors file")
        try:
            header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CacheIntegrityError("its weights file has an unreadable safetensors header") from None
        if not isinstance(header, dict):
            raise CacheIntegrityError("its weights file has an unreadable safetensors header")
        extra = header.pop("__metadata__", None)
        if isinstance(extra, dict) and extra.get("advrobust_key", key) != key:
            raise CacheIntegrityError("its weights file belongs to a different key")
        if set(header) != set(specs):
            raise CacheIntegrityError("its weights file holds other tensors than its metadata lists")
        for name, info in header.items():
            spec = specs[name]
            if not isinstance(info, dict):
                raise CacheIntegrityError("its weights file has an unreadable safetensors header")
            if _SAFETENSORS_DTYPES.get(info.get("dtype")) != spec["dtype"] or info.get("shape") != spec["shape"]:
                raise CacheIntegrityError(f"the shape or dtype of tensor {name!r} does not match its metadata")

    # load ----------------------------------------------------------------------

    def load(self, key: str) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]]:
        """Return ``(state_dict, meta)`` for ``key``, or ``None``.

        ``None`` when there is no committed entry (no JSON), or when the entry
        is damaged: then the caller's ``warn`` gets one sentence, both files
        are moved to ``quarantine/`` and a ``"damaged"`` event is recorded.
        Tensors are on the CPU; ``meta`` is the dict given to :meth:`store`.
        Never raises on damaged data and never unpickles anything.
        """
        return self._load(key, self.meta_path(key))

    def _load(self, key: str, meta_path: Path) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]]:
        for _attempt in range(3):
            try:
                if not stat.S_ISREG(meta_path.stat().st_mode):
                    self._set_aside(key, "its metadata is not a regular file")
                    return None
                doc_bytes = meta_path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                self._emit(
                    f"advrobust GAN cache entry {key} could not be read ({exc.strerror or exc}); "
                    "the generator will be retrained."
                )
                return None
            try:
                doc, tensors = self._verify(key, doc_bytes, decode=True)
            except CacheIntegrityError as exc:
                # A store of the same key may have replaced the files between our
                # reads; it always rewrites the JSON, so compare it once more.
                try:
                    again = meta_path.read_bytes()
                except OSError:
                    again = None
                if again != doc_bytes:
                    continue
                self._set_aside(key, str(exc))
                return None
            assert tensors is not None
            return tensors, doc["meta"]
        return None

    def _set_aside(self, key: str, reason: str) -> None:
        """Move a damaged entry to the quarantine, record it and warn."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}-{secrets.token_hex(3)}"
        moved_all = True
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            moved_all = False
        # JSON first: moving it un-commits the entry at once.
        for src, ext in ((self.meta_path(key), _META_EXT), (self.weights_path(key), _WEIGHTS_EXT)):
            try:
                os.replace(src, self.quarantine_dir / f"{key}.{stamp}{ext}")
            except FileNotFoundError:
                pass
            except OSError:
                try:
                    _unlink(src)
                except OSError:
                    moved_all = False
        try:
            self.record_event("damaged", key)
        except OSError:
            pass
        where = f"set aside in {self.quarantine_dir}" if moved_all else "ignored (it could not be moved)"
        self._emit(f"advrobust GAN cache entry {key} is damaged ({reason}); it was {where} and the generator will be retrained.")

    def _emit(self, message: str) -> None:
        if self._warn is not None:
            self._warn(message)
        else:
            warnings.warn(message, CacheWarning, stacklevel=4)

    # warm start ----------------------------------------------------------------

    def _committed(self) -> List[Tuple[str, Path]]:
        """(key, json path) of every committed-looking entry, sorted by key."""
        try:
            paths = list(self.root.glob("*" + _META_EXT))
        except OSError:
            return []
        out = []
        for path in paths:
            key = path.name[: -len(_META_EXT)]
            if _KEY_RE.match(key) and path.is_file():
                out.append((key, path))
        return sorted(out)

    def find_warm_start(
        self, family: str, exclude_key: Optional[str] = None
    ) -> Optional[Tuple[str, Dict[str, torch.Tensor], Dict[str, Any]]]:
        """The newest valid entry of ``family`` as ``(key, state_dict, meta)``, or ``None``.

        Entries of other families, of other format versions, and ``exclude_key``
        are ignored. Candidates are verified like :meth:`load`; a damaged one
        is set aside (with a warning) and the next newest is tried.
        """
        candidates = []
        for key, path in self._committed():
            if key == exclude_key:
                continue
            try:
                doc = json.loads(path.read_bytes().decode("utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                continue  # not attributable to a family; its own load will deal with it
            if not isinstance(doc, dict) or doc.get("family") != family:
                continue
            if doc.get("format_version") != FORMAT_VERSION:
                continue
            created_ns = doc.get("created_ns")
            if not isinstance(created_ns, int):
                created = doc.get("created")
                created_ns = int(created * 1e9) if isinstance(created, (int, float)) else 0
            candidates.append((created_ns, key, path))
        for _created, key, path in sorted(candidates, key=lambda c: (-c[0], c[1])):
            hit = self._load(key, path)
            if hit is not None:
                return key, hit[0], hit[1]
        return None

    # listing and maintenance ---------------------------------------------------

    def entries(self) -> List[EntryInfo]:
        """Every committed entry, newest first, each fully verified (nothing is moved)."""
        infos = []
        for key, path in self._committed():
            doc: Any = None
            try:
                doc_bytes = path.read_bytes()
            except OSError as exc:
                doc_bytes, problem = None, f"its metadata cannot be read ({exc.strerror})"
            if doc_bytes is not None:
                try:
                    doc, _ = self._verify(key, doc_bytes, decode=False)
                    problem = None
                except CacheIntegrityError as exc:
                    problem = str(exc)
                    try:
                        doc = json.loads(doc_bytes.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        doc = None
            if not isinstance(doc, dict):
                doc = {}
            created = doc.get("created")
            if not isinstance(created, (int, float)) or isinstance(created, bool):
                try:
                    created = path.stat().st_mtime
                except OSError:
                    created = 0.0
            try:
                size = self.weights_path(key).stat().st_size
            except OSError:
                size = 0
            family = doc.get("family") if isinstance(doc.get("family"), str) else None
            meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
            infos.append(EntryInfo(key, family, float(created), int(size), meta, problem is None, problem))
        infos.sort(key=lambda e: (-e.created, e.key))
        return infos

    def remove(self, key: str) -> bool:
        """Delete the entry of ``key`` (JSON first); True if anything was there.

        Hold ``lock(key)`` if other processes may be using the key.
        """
        removed_meta = _unlink(self.meta_path(key))
        removed_weights = _unlink(self.weights_path(key))
        return removed_meta or removed_weights

    def _clean_tmp(self) -> None:
        try:
            paths = list(self.root.iterdir())
        except OSError:
            return
        now = time.time()
        for path in paths:
            if _TMP_MARK in path.name and path.is_file() and _tmp_is_stale(path, now):
                try:
                    _unlink(path)
                except OSError:
                    pass

    def _orphans(self) -> List[Tuple[str, Path]]:
        """Weights files without a JSON (a store killed between its renames)."""
        out = []
        try:
            paths = list(self.root.glob("*" + _WEIGHTS_EXT))
        except OSError:
            return out
        for path in paths:
            key = path.name[: -len(_WEIGHTS_EXT)]
            if _KEY_RE.match(key) and not (self.root / f"{key}{_META_EXT}").exists():
                out.append((key, path))
        return sorted(out)

    def _empty_quarantine(self, older_than: Optional[float] = None) -> None:
        qdir = self.quarantine_dir
        if not qdir.is_dir():
            return
        now = time.time()
        for path in qdir.iterdir():
            try:
                if path.is_file() and (older_than is None or now - path.stat().st_mtime > older_than):
                    path.unlink()
            except OSError:
                pass
        try:
            qdir.rmdir()
        except OSError:
            pass

    def clear(self) -> int:
        """Remove every entry, the quarantine, stale temporary files and the event log.

        Returns the number of entries (keys) removed. Lock files and files the
        cache does not own (``.pt``, ``.pkl``, ...) are left alone.
        """
        if not self.root.is_dir():
            return 0
        keys = {key for key, _ in self._committed()} | {key for key, _ in self._orphans()}
        for key in keys:
            try:
                self.remove(key)
            except OSError:
                pass
        self._clean_tmp()
        self._empty_quarantine()
        with filelock.FileLock(str(self.root / (_EVENTS + ".lock"))):
            _unlink(self.events_path)
        return len(keys)

    def prune(self, keep: Optional[int] = None, older_than_days: Optional[float] = None) -> List[str]:
        """Remove old and unusable entries; return the removed keys.

        Keeps the ``keep`` newest valid entries (all families together) and
        removes valid entries created more than ``older_than_days`` ago. Always
        removes invalid entries, weights left without a JSON for over a minute,
        stale temporary files and the quarantine. An entry whose lock is held
        by a running process is skipped.
        """
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise ValueError("keep must be a non-negative integer")
        if older_than_days is not None and not (older_than_days >= 0):
            raise ValueError("older_than_days must be a non-negative number")
        if not self.root.is_dir():
            return []
        now = time.time()
        doomed = []
        valid_rank = 0
        for info in self.entries():
            if not info.valid:
                doomed.append(info.key)
                continue
            too_many = keep is not None and valid_rank >= keep
            too_old = older_than_days is not None and now - info.created > older_than_days * 86400.0
            valid_rank += 1
            if too_many or too_old:
                doomed.append(info.key)
        for key, path in self._orphans():
            try:
                if now - path.stat().st_mtime > _ORPHAN_GRACE_SECONDS:
                    doomed.append(key)
            except OSError:
                pass
        removed = []
        for key in doomed:
            lock = self._try_lock(key)
            if lock is None:
                continue
            try:
                if self.remove(key):
                    removed.append(key)
            finally:
                lock.release()
        self._clean_tmp()
        self._empty_quarantine()
        return removed

    # events ----------------------------------------------------------------------

    def record_event(self, kind: str, key: Optional[str] = None) -> None:
        """Append ``{"time", "kind", "key", "pid"}`` to ``events.jsonl`` under a lock."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), "kind": kind, "key": key, "pid": os.getpid()}, sort_keys=True)
        with filelock.FileLock(str(self.root / (_EVENTS + ".lock"))):
            with open(self.events_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()

    def events(self) -> List[Dict[str, Any]]:
        """All recorded events, oldest first (unreadable lines are skipped)."""
        try:
            text = self.events_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("kind"), str):
                out.append(event)
        return out

    def stats(self) -> Dict[str, int]:
        """Number of recorded events by kind, e.g. ``{"train": 1, "hit": 3}``."""
        return dict(Counter(event["kind"] for event in self.events()))
