"""Listing and upkeep of the GAN cache: entries, warm starts, remove, clear, prune, events."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..errors import CacheIntegrityError
from . import files
from .keys import FORMAT_VERSION, KEY_RE, canonical_key
from .store import META_EXT, WEIGHTS_EXT, CacheStore
from .verify import Tensors, verify_entry

#: Weights without a JSON younger than this may be a store between its two renames.
ORPHAN_GRACE_SECONDS = 60.0


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
    other_format: Any = None  # the cache format of an entry another plugin version wrote

    @property
    def kept_because(self) -> Optional[str]:
        """Why ``prune`` and ``clear`` leave this entry alone, or ``None``."""
        if self.other_format is None:
            return None
        return (
            f"written in cache format {self.other_format!r} by another version of "
            f"pytest-advrobust (this one reads format {FORMAT_VERSION})"
        )


def _created_ns(doc: Dict[str, Any]) -> int:
    created_ns = doc.get("created_ns")
    if isinstance(created_ns, int):
        return created_ns
    created = doc.get("created")
    return int(created * 1e9) if isinstance(created, (int, float)) else 0


class GanCache(CacheStore):
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

    # warm start ------------------------------------------------------------

    def _committed(self) -> List[Tuple[str, Path]]:
        """(key, json path) of every committed-looking entry, sorted by key."""
        try:
            paths = list(self.root.glob("*" + META_EXT))
        except OSError:
            return []
        out = []
        for path in paths:
            key = path.name[: -len(META_EXT)]
            if KEY_RE.match(key) and path.is_file():
                out.append((key, path))
        return sorted(out)

    def _family_candidates(
        self, family: str, exclude_key: Optional[str]
    ) -> List[Tuple[int, str, Path]]:
        """(created ns, key, json path) of the entries that claim ``family``."""
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
            candidates.append((_created_ns(doc), key, path))
        return candidates

    def find_warm_start(
        self, family: str, exclude_key: Optional[str] = None
    ) -> Optional[Tuple[str, Tensors, Dict[str, Any]]]:
        """The newest valid entry of ``family`` as ``(key, state_dict, meta)``, or ``None``.

        Entries of other families, of other format versions, and ``exclude_key``
        are ignored. Candidates are verified like :meth:`load`; a damaged one
        is set aside (with a warning) and the next newest is tried.
        """
        candidates = self._family_candidates(family, exclude_key)
        for _created, key, path in sorted(candidates, key=lambda c: (-c[0], c[1])):
            hit = self._load(key, path)
            if hit is not None:
                return key, hit[0], hit[1]
        return None

    def keep_newest(self, family: str, keep: int) -> List[str]:
        """Remove all but the ``keep`` newest entries of ``family``; return the removed keys.

        An entry whose lock another process holds is left alone.
        """
        candidates = sorted(self._family_candidates(family, None), key=lambda c: (-c[0], c[1]))
        return self._remove_unlocked(
            key for _created, key, _path in candidates[max(0, int(keep)) :]
        )

    def _remove_unlocked(self, keys: Iterable[str]) -> List[str]:
        """Remove each of ``keys`` whose lock no other process holds; the keys removed."""
        removed = []
        for key in keys:
            lock = self._try_lock(key)
            if lock is None:
                continue
            try:
                if self.remove(key):
                    removed.append(key)
            finally:
                lock.release()
        return removed

    # listing ---------------------------------------------------------------

    def _judge(self, key: str, path: Path) -> Tuple[Any, Optional[str]]:
        """(JSON document or None, problem or None) of one committed entry; moves nothing."""
        try:
            doc_bytes = path.read_bytes()
        except OSError as exc:
            return None, f"its metadata cannot be read ({exc.strerror})"
        try:
            doc, _ = verify_entry(key, doc_bytes, self.weights_path(key))
            return doc, None
        except CacheIntegrityError as exc:
            try:
                return json.loads(doc_bytes.decode("utf-8")), str(exc)
            except (UnicodeDecodeError, ValueError):
                return None, str(exc)

    def _entry_info(self, key: str, path: Path) -> EntryInfo:
        doc, problem = self._judge(key, path)
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
        version = doc.get("format_version", FORMAT_VERSION)
        other = None if version == FORMAT_VERSION or problem is None else version
        return EntryInfo(
            key, family, float(created), int(size), meta, problem is None, problem, other
        )

    def entries(self) -> List[EntryInfo]:
        """Every committed entry, newest first, each fully verified (nothing is moved)."""
        infos = [self._entry_info(key, path) for key, path in self._committed()]
        infos.sort(key=lambda e: (-e.created, e.key))
        return infos

    # maintenance -----------------------------------------------------------

    def remove(self, key: str) -> bool:
        """Delete the entry of ``key`` (JSON first); True if anything was there.

        Hold ``lock(key)`` if other processes may be using the key.
        """
        removed_meta = files.unlink(self.meta_path(key))
        removed_weights = files.unlink(self.weights_path(key))
        return removed_meta or removed_weights

    def remove_if_free(self, key: str) -> bool:
        """Remove the entry of ``key`` (any format) unless a running process holds its
        lock; False when it does."""
        lock = self._try_lock(key)
        if lock is None:
            return False
        try:
            self.remove(key)
        finally:
            lock.release()
        return True

    def _clean_tmp(self) -> None:
        try:
            paths = list(self.root.iterdir())
        except OSError:
            return
        now = time.time()
        for path in paths:
            if files.TMP_MARK in path.name and path.is_file() and files.tmp_is_stale(path, now):
                try:
                    files.unlink(path)
                except OSError:
                    pass

    def _orphans(self) -> List[Tuple[str, Path]]:
        """Weights files without a JSON (a store killed between its renames)."""
        out = []
        try:
            paths = list(self.root.glob("*" + WEIGHTS_EXT))
        except OSError:
            return out
        for path in paths:
            key = path.name[: -len(WEIGHTS_EXT)]
            if KEY_RE.match(key) and not (self.root / f"{key}{META_EXT}").exists():
                out.append((key, path))
        return sorted(out)

    def _empty_quarantine(self, older_than: Optional[float] = None) -> None:
        qdir = self.quarantine_dir
        if not qdir.is_dir():
            return
        now = time.time()
        for path in qdir.iterdir():
            try:
                if path.is_file() and (
                    older_than is None or now - path.stat().st_mtime > older_than
                ):
                    path.unlink()
            except OSError:
                pass
        try:
            qdir.rmdir()
        except OSError:
            pass

    def foreign(self) -> List[EntryInfo]:
        """The entries another version of the plugin wrote in another cache format: this
        version cannot read them, and ``clear`` and ``prune`` keep them."""
        return [e for e in self.entries() if e.other_format is not None]

    def clear(self, other_versions: bool = False) -> int:
        """Remove every entry, the quarantine, stale temporary files and the event log.

        Returns the number of entries (keys) removed. Entries of another cache
        format (another plugin version's, :meth:`foreign`) are kept unless
        ``other_versions``; lock files and files the cache does not own
        (``.pt``, ``.pkl``, ...) are left alone.
        """
        if not self.root.is_dir():
            return 0
        kept = set() if other_versions else {e.key for e in self.foreign()}
        keys = {key for key, _ in self._committed()} | {key for key, _ in self._orphans()}
        keys -= kept
        for key in keys:
            try:
                self.remove(key)
            except OSError:
                pass
        self._clean_tmp()
        self._empty_quarantine()
        with self._events_lock():
            files.unlink(self.events_path)
        return len(keys)

    def _doomed(
        self, keep: Optional[int], older_than_days: Optional[float], other_versions: bool
    ) -> List[str]:
        """Keys that :meth:`prune` removes, in listing order, then old orphans."""
        now = time.time()
        doomed = []
        valid_rank = 0
        for info in self.entries():
            if info.other_format is not None and not other_versions:
                continue
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
                if now - path.stat().st_mtime > ORPHAN_GRACE_SECONDS:
                    doomed.append(key)
            except OSError:
                pass
        return doomed

    def prune(
        self,
        keep: Optional[int] = None,
        older_than_days: Optional[float] = None,
        other_versions: bool = False,
    ) -> List[str]:
        """Remove old and unusable entries; return the removed keys.

        Keeps the ``keep`` newest valid entries (all families together) and
        removes valid entries created more than ``older_than_days`` ago. Always
        removes invalid entries, weights left without a JSON for over a minute,
        stale temporary files and the quarantine; an entry of another cache
        format (another plugin version's, :meth:`foreign`) only with
        ``other_versions``. An entry whose lock is held by a running process
        is skipped.
        """
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise ValueError("keep must be a non-negative integer")
        if older_than_days is not None and not (older_than_days >= 0):
            raise ValueError("older_than_days must be a non-negative number")
        if not self.root.is_dir():
            return []
        removed = self._remove_unlocked(self._doomed(keep, older_than_days, other_versions))
        self._clean_tmp()
        self._empty_quarantine()
        return removed

    # events ----------------------------------------------------------------

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
