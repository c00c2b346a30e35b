"""Where progress lines go: pytest's terminal, out of capture, or the xdist controller."""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest


def quiet(config: pytest.Config) -> bool:
    """``-qq``: no progress lines; a plain ``-q`` still shows training progress."""
    return config.get_verbosity() < -1


def progress_writer(config: pytest.Config) -> Optional[Callable[[str], None]]:
    """A function that shows one progress line, or ``None`` when nothing may be shown."""
    from .progress import WORKERINPUT_KEY, worker_writer

    if quiet(config):
        return None
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # an xdist worker: the controller shows what it writes
        folder = worker.get(WORKERINPUT_KEY)
        return worker_writer(folder, worker.get("workerid", "gw")) if folder else None
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return None

    capman = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        # Training runs inside a fixture, where output is captured: step out of
        # capture so that long trainings show progress as they go.
        text = line if line.startswith("advrobust") else f"advrobust: {line}"
        if capman is None:
            tr.write_line(text)
            return
        with capman.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write_line(text)

    return write


def terminal_line(config: pytest.Config) -> Callable[[str], None]:
    """Shows a line on the controller's terminal, on a line of its own."""
    tr = config.pluginmanager.get_plugin("terminalreporter")

    def show(line: str) -> None:
        if tr is None:
            return
        tr.ensure_newline()
        writer = getattr(tr, "_tw", None)  # xdist's progress dots do not end their line
        if writer is not None and getattr(writer, "width_of_current_line", 0):
            tr.write("\n")
        tr.write_line(line)

    return show


def lock_wait_lines(config: pytest.Config, every: float) -> Any:
    """A context in which waiting for another process's cache lock prints, every ``every``
    seconds, who holds it (where progress lines go)."""
    from ..cache.locks import lock_waits

    return lock_waits(progress_writer(config), every)
