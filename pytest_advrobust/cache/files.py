"""File helpers of the GAN cache: fsynced writes, temporary names and their staleness."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Optional

#: Marks a temporary file: ``<final name>.tmp-<host>-<pid>-<random>``.
TMP_MARK = ".tmp-"
#: A temporary file whose writer may still be alive is only cleaned after this long.
STALE_SECONDS = 3600.0


def write_bytes(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Fsync a folder so that renames in it survive a crash (best effort)."""
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


def tmp_suffix() -> str:
    """A suffix that makes a temporary name unique to this host, process and call."""
    return f"{TMP_MARK}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


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


def tmp_is_stale(path: Path, now: Optional[float] = None) -> bool:
    """A temporary file is stale if its writer (on this host) is gone, or it is old."""
    now = time.time() if now is None else now
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    if age > STALE_SECONDS:
        return True
    tail = path.name.split(TMP_MARK, 1)[-1].split("-")
    if len(tail) >= 2 and tail[0] == _host_tag():
        try:
            return not _pid_alive(int(tail[1]))
        except ValueError:
            return False
    return False


def unlink(path: Path) -> bool:
    """Remove ``path``; True if it was there."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
