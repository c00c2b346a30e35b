"""The per-key cache lock, which says who holds it to a process that waits for it.

:class:`KeyLock` is a :class:`filelock.FileLock` for one key. Its holder writes
``locks/<key>.holder`` (process id, host, xdist worker, the test it runs, since
when); a process that finds the lock taken prints, as soon as the holder has
written that file (:data:`HOLDER_GRACE` seconds at most) and then every
``every`` seconds while it waits, one line naming the generator's key and that
holder, through the reporter that :func:`lock_waits` sets for the block (the
evaluation's progress lines). Without a reporter it waits silently, as a plain
``FileLock`` does.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Tuple

import filelock

from . import files

__all__ = ["KeyLock", "key_lock", "lock_waits"]

#: Seconds a waiter gives a new holder to write its ``.holder`` file before the first line.
HOLDER_GRACE = 2.0

_REPORTER: contextvars.ContextVar[Optional[Tuple[Callable[[str], None], float]]] = (
    contextvars.ContextVar("advrobust_lock_waits", default=None)
)


@contextlib.contextmanager
def lock_waits(say: Optional[Callable[[str], None]], every: float = 30.0) -> Iterator[None]:
    """In the block, a wait for a cache lock prints a line to ``say`` every ``every`` s."""
    token = _REPORTER.set((say, float(every)) if say is not None else None)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def _holder_text(path: Path) -> str:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process"
    if not isinstance(doc, dict):
        return "another process"
    text = f"process {doc.get('pid', '?')} on {doc.get('host', '?')}"
    details = []
    if doc.get("worker"):
        details.append(f"xdist worker {doc['worker']}")
    if doc.get("test"):
        details.append(f"running {doc['test']}")
    since = doc.get("since")
    if isinstance(since, (int, float)):
        details.append(f"since {time.strftime('%H:%M:%S', time.localtime(since))}")
    return text + (f" ({', '.join(details)})" if details else "")


class KeyLock(filelock.FileLock):
    """A cross-process lock for one cache key: a :class:`filelock.FileLock` that, when it
    must wait, says who holds it. Make it with :func:`key_lock`."""

    key: str = ""

    @property
    def holder_path(self) -> Path:
        return Path(str(self.lock_file)[: -len(".lock")] + ".holder")

    def acquire(self, timeout: Optional[float] = None, poll_interval: Optional[float] = None, **kw):
        wait = self.timeout if timeout is None else timeout
        report = _REPORTER.get()
        first = not self.is_locked
        if poll_interval is not None:
            kw["poll_interval"] = poll_interval
        if not first or report is None or wait == 0:
            out = super().acquire(timeout=wait, **kw)
        else:
            try:
                out = super().acquire(timeout=0, **kw)
            except filelock.Timeout:
                out = self._wait(wait, report, kw)
        if first:
            self._mark()
        return out

    def _wait(self, wait: float, report, kw) -> Any:
        say, every = report
        start = time.monotonic()
        # The holder writes its file just after it takes the lock: give it that moment
        # (HOLDER_GRACE s at most), so that the first line can name it.
        while not self.holder_path.exists() and time.monotonic() - start < HOLDER_GRACE:
            try:
                return super().acquire(timeout=0.05, **kw)
            except filelock.Timeout:
                if wait >= 0 and time.monotonic() - start >= wait:
                    raise
        while True:
            held = int(time.monotonic() - start)
            waited = f" {held} s" if held else ""
            say(
                f"advrobust: waiting{waited} for the cache lock of generator {self.key[:12]}, "
                f"held by {_holder_text(self.holder_path)}"
            )
            step = every if wait < 0 else min(every, max(wait - held, 0.0))
            try:
                return super().acquire(timeout=step, **kw)
            except filelock.Timeout:
                if wait >= 0 and time.monotonic() - start >= wait:
                    raise

    def _mark(self) -> None:
        doc = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "test": (os.environ.get("PYTEST_CURRENT_TEST") or "").rsplit(" (", 1)[0] or None,
            "since": time.time(),
            "key": self.key,
        }
        try:
            tmp = self.holder_path.with_name(self.holder_path.name + files.tmp_suffix())
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.holder_path)
        except OSError:
            pass  # informative only

    def release(self, force: bool = False) -> None:
        if self.is_locked and (force or self.lock_counter <= 1):
            try:
                self.holder_path.unlink()
            except OSError:
                pass
        super().release(force=force)


def key_lock(path: Path, key: str, timeout: float = -1) -> KeyLock:
    """The lock of ``key`` at ``path`` (``timeout`` in seconds, ``-1``: as long as needed;
    :class:`filelock.Timeout` when it runs out)."""
    lock = KeyLock(str(path), timeout=timeout)
    lock.key = key
    return lock
