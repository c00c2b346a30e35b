"""GAN training progress on the terminal, also from xdist workers.

An xdist worker has no terminal: what it prints is lost. The controller
therefore gives each worker a folder (through ``workerinput``); a worker
appends each progress line, whole, to its own file there, and a thread of the
controller reads the new whole lines every :data:`POLL_SECONDS` and writes
them as ``[gw0] advrobust gan: ...`` lines of its own terminal, each on a line
of its own. :meth:`ProgressRelay.stop` reads what is left when the run ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, Optional

__all__ = ["POLL_SECONDS", "WORKERINPUT_KEY", "ProgressRelay", "worker_writer"]

POLL_SECONDS = 0.25
WORKERINPUT_KEY = "advrobust_progress_dir"


def worker_writer(folder: str, worker_id: str) -> Callable[[str], None]:
    """A progress callback for an xdist worker: one whole line per call."""
    path = Path(folder) / f"{worker_id}.log"

    def write(line: str) -> None:
        data = (line.replace("\n", " ").rstrip() + "\n").encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)  # one write of a whole line: never read half
        finally:
            os.close(fd)

    return write


class ProgressRelay:
    """The controller's side: a folder for the workers and a thread that shows their lines."""

    def __init__(self, show: Callable[[str], None]):
        self.show = show
        self.folder = tempfile.mkdtemp(prefix="advrobust-progress-")
        self._offsets: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._run, name="advrobust-progress", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.drain()

    def drain(self) -> None:
        """Show every whole line written since the last call."""
        with self._lock:
            try:
                names = sorted(os.listdir(self.folder))
            except OSError:
                return
            for name in names:
                self._drain_file(name)

    def _drain_file(self, name: str) -> None:
        start = self._offsets.get(name, 0)
        try:
            with open(os.path.join(self.folder, name), "rb") as handle:
                handle.seek(start)
                data = handle.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        self._offsets[name] = start + end
        worker = name[: -len(".log")] if name.endswith(".log") else name
        for line in data[:end].decode("utf-8", "replace").splitlines():
            self.show(f"[{worker}] {line}")

    def stop(self) -> None:
        """Stop the thread, show what is left, remove the folder."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.drain()
        shutil.rmtree(self.folder, ignore_errors=True)
