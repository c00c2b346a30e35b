"""The store/load protocol of the GAN cache: locks, atomic writes, verified loads, quarantine.

A store writes both files under temporary names in the same folder, fsyncs
them, and renames the weights and then the JSON into place: the JSON is the
commit marker. A load verifies the entry (:mod:`.verify`) and sets a damaged
one aside instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import filelock
import torch
from safetensors.torch import save as safetensors_save

from ..errors import CacheIntegrityError
from . import files
from .keys import FORMAT_VERSION, check_key, dtype_name
from .locks import KeyLock, key_lock
from .verify import Tensors, verify_entry

WEIGHTS_EXT = ".safetensors"
META_EXT = ".json"
EVENTS = "events.jsonl"

Loaded = Tuple[Tensors, Dict[str, Any]]


class CacheWarning(UserWarning):
    """Issued (when no ``warn`` callback is given) for a damaged cache entry."""


def _cpu_tensors(state_dict: Mapping[str, torch.Tensor]) -> Tensors:
    """Contiguous CPU copies of ``state_dict``'s tensors; TypeError for anything else."""
    tensors: Tensors = {}
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict names must be strings, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is not a tensor")
        tensors[name] = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return tensors


def _checked_meta(meta: Optional[Mapping[str, Any]], family: Optional[str]) -> Tuple[dict, Any]:
    meta = dict(meta or {})
    if family is None:
        family = meta.get("family")
    if family is not None and not isinstance(family, str):
        raise TypeError("cache entry family must be a string")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cache entry meta must be JSON-serialisable: {exc}") from None
    return meta, family


def _document(key: str, data: bytes, tensors: Tensors, meta: dict, family: Any) -> bytes:
    """The JSON commit marker of an entry whose weights are ``data``."""
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
            name: {"shape": [int(s) for s in t.shape], "dtype": dtype_name(t.dtype)}
            for name, t in sorted(tensors.items())
        },
        "torch": torch.__version__,
        "write_id": secrets.token_hex(8),
        "meta": meta,
    }
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode("utf-8")


class CacheStore:
    """Paths, locks, atomic stores and verified loads of one cache folder.

    :class:`~pytest_advrobust.cache.GanCache` adds listing and maintenance.
    """

    def __init__(self, root: str | os.PathLike[str], warn: Optional[Callable[[str], None]] = None):
        self.root = Path(root).expanduser()
        self._warn = warn

    def __repr__(self) -> str:
        return f"GanCache({str(self.root)!r})"

    # paths -----------------------------------------------------------------

    def weights_path(self, key: str) -> Path:
        """Path of the weights file of ``key`` (it may not exist)."""
        return self.root / f"{check_key(key)}{WEIGHTS_EXT}"

    def meta_path(self, key: str) -> Path:
        """Path of the JSON metadata (commit marker) of ``key`` (it may not exist)."""
        return self.root / f"{check_key(key)}{META_EXT}"

    @property
    def quarantine_dir(self) -> Path:
        """Folder that damaged entries are moved into."""
        return self.root / "quarantine"

    @property
    def events_path(self) -> Path:
        """The JSON-lines event log."""
        return self.root / EVENTS

    # locking ---------------------------------------------------------------

    def lock(self, key: str, timeout: float = -1) -> KeyLock:
        """A cross-process lock for ``key`` at ``<root>/locks/<key>.lock``.

        Use as ``with cache.lock(key): ...``. ``timeout`` is in seconds;
        ``-1`` waits as long as needed, otherwise :class:`filelock.Timeout` is
        raised when it runs out. The operating system releases the lock when
        the holding process dies, so a killed worker never blocks the others.
        A process that waits says who holds it (see :mod:`.locks`).
        """
        check_key(key)
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return key_lock(locks / f"{key}.lock", key, timeout=timeout)

    def _try_lock(self, key: str) -> Optional[KeyLock]:
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
        check_key(key)
        meta, family = _checked_meta(meta, family)
        tensors = _cpu_tensors(state_dict)
        data = safetensors_save(
            tensors, metadata={"advrobust_key": key, "format_version": str(FORMAT_VERSION)}
        )
        self._commit(key, data, _document(key, data, tensors, meta, family))
        return self.weights_path(key)

    def _commit(self, key: str, data: bytes, doc_bytes: bytes) -> None:
        """Write both files under temporary names, then rename weights and JSON into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        suffix = files.tmp_suffix()
        weights_tmp = self.root / f"{key}{WEIGHTS_EXT}{suffix}"
        meta_tmp = self.root / f"{key}{META_EXT}{suffix}"
        try:
            files.write_bytes(weights_tmp, data)
            files.write_bytes(meta_tmp, doc_bytes)
            files.unlink(self.meta_path(key))  # un-commit an old entry before its weights change
            os.replace(weights_tmp, self.weights_path(key))
            os.replace(meta_tmp, self.meta_path(key))  # commit
        except BaseException:
            for tmp in (weights_tmp, meta_tmp):
                try:
                    files.unlink(tmp)
                except OSError:
                    pass
            raise
        files.fsync_dir(self.root)

    # load ------------------------------------------------------------------

    def load(self, key: str) -> Optional[Loaded]:
        """Return ``(state_dict, meta)`` for ``key``, or ``None``.

        ``None`` when there is no committed entry (no JSON), or when the entry
        is damaged: then the caller's ``warn`` gets one sentence, both files
        are moved to ``quarantine/`` and a ``"damaged"`` event is recorded.
        Tensors are on the CPU; ``meta`` is the dict given to :meth:`store`.
        Never raises on damaged data and never unpickles anything.
        """
        return self._load(key, self.meta_path(key))

    def _read_meta(self, key: str, meta_path: Path) -> Optional[bytes]:
        """The JSON bytes of ``key``, or None (missing, unreadable or not a file)."""
        try:
            if not stat.S_ISREG(meta_path.stat().st_mode):
                self._set_aside(key, "its metadata is not a regular file")
                return None
            return meta_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._emit(
                f"advrobust GAN cache entry {key} could not be read ({exc.strerror or exc}); "
                "the generator will be retrained."
            )
            return None

    def _load(self, key: str, meta_path: Path) -> Optional[Loaded]:
        for _attempt in range(3):
            doc_bytes = self._read_meta(key, meta_path)
            if doc_bytes is None:
                return None
            try:
                doc, tensors = verify_entry(key, doc_bytes, self.weights_path(key))
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
            return tensors, doc["meta"]
        return None

    # quarantine ------------------------------------------------------------

    def _quarantine(self, key: str) -> bool:
        """Move both files of ``key`` into the quarantine; False if one could not go."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        stamp += f"-{os.getpid()}-{secrets.token_hex(3)}"
        moved_all = True
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            moved_all = False
        # JSON first: moving it un-commits the entry at once.
        for src, ext in ((self.meta_path(key), META_EXT), (self.weights_path(key), WEIGHTS_EXT)):
            try:
                os.replace(src, self.quarantine_dir / f"{key}.{stamp}{ext}")
            except FileNotFoundError:
                pass
            except OSError:
                try:
                    files.unlink(src)
                except OSError:
                    moved_all = False
        return moved_all

    def _set_aside(self, key: str, reason: str) -> None:
        """Move a damaged entry to the quarantine, record it and warn."""
        moved_all = self._quarantine(key)
        try:
            self.record_event("damaged", key)
        except OSError:
            pass
        if moved_all:
            where = f"set aside in {self.quarantine_dir}"
        else:
            where = "ignored (it could not be moved)"
        self._emit(
            f"advrobust GAN cache entry {key} is damaged ({reason}); "
            f"it was {where} and the generator will be retrained."
        )

    def _emit(self, message: str) -> None:
        if self._warn is not None:
            self._warn(message)
        else:
            warnings.warn(message, CacheWarning, stacklevel=4)

    # events ----------------------------------------------------------------

    def _events_lock(self) -> filelock.FileLock:
        return filelock.FileLock(str(self.root / (EVENTS + ".lock")))

    def record_event(self, kind: str, key: Optional[str] = None) -> None:
        """Append ``{"time", "kind", "key", "pid"}`` to ``events.jsonl`` under a lock."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        self.root.mkdir(parents=True, exist_ok=True)
        event = {"time": time.time(), "kind": kind, "key": key, "pid": os.getpid()}
        line = json.dumps(event, sort_keys=True)
        with self._events_lock():
            with open(self.events_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
