"""``advrobust warm``: run the robust tests once to train and cache every generator.

Everything after ``warm`` goes to ``pytest --advrobust --advrobust-warm``.
Under ``torchrun`` (``$WORLD_SIZE`` > 1) the ranks join one process group
(:mod:`pytest_advrobust.gan.distributed`) before they run pytest; each generator
is then trained by all ranks together and stored by rank 0. Rank 0 prints
pytest's output; the other ranks write theirs to a temporary log, whose end is
printed only when that rank's exit status differs from rank 0's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import List, Sequence

from .output import err

__all__ = ["EXIT_HARD", "run"]

#: Set when ``warm`` runs as one rank of a torchrun launch: the command then leaves
#: with ``os._exit`` (see :func:`pytest_advrobust.cli.console_main`).
EXIT_HARD = {"warm": False}


def run(pytest_args: Sequence[str]) -> int:
    """``advrobust warm PYTEST_ARGS``: pytest's exit status (under torchrun: the first
    non-zero status of any rank, the same on every rank)."""
    import pytest

    from ..gan import distributed

    args = list(pytest_args)
    if args and args[0] == "--":
        args = args[1:]
    if distributed.launched():
        EXIT_HARD["warm"] = True
        return _warm_distributed(args)
    return int(pytest.main(["--advrobust", "--advrobust-warm", *args]))


#: Lines of a silent rank's log shown when its exit status differs from rank 0's.
_LOG_TAIL_LINES = 40


@contextlib.contextmanager
def _output_to(path: str):
    """Send this process's output to ``path``: ``sys.stdout``/``sys.stderr`` and fds 1 and 2."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    try:
        with (
            open(path, "a", encoding="utf-8", errors="replace", buffering=1) as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _tail(path: str, lines: int) -> List[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def _warm_distributed(args: List[str]) -> int:
    """``warm`` on one rank of a ``torchrun`` launch: same pytest run, trained together."""
    import pytest

    from ..gan import distributed

    try:
        distributed.init_from_env()
    except ValueError as exc:  # a bad $ADVROBUST_DIST_TIMEOUT
        err(str(exc))
        return 2
    if not distributed.is_distributed():  # pragma: no cover - torch without torch.distributed
        return int(pytest.main(["--advrobust", "--advrobust-warm", *args]))
    me, n = distributed.rank(), distributed.world_size()
    argv = ["--advrobust", "--advrobust-warm", *args]
    log = None
    try:
        if me == 0:
            rc = int(pytest.main(argv))
        else:  # same arguments (so every rank collects the same tests), output to a log
            fd, log = tempfile.mkstemp(prefix=f"advrobust-warm-rank{me}-", suffix=".log")
            os.close(fd)
            with _output_to(log):
                rc = int(pytest.main(argv))
        codes = [int(c) for c in distributed.all_gather_object(rc)]
        if me != 0 and rc != codes[0]:
            tail = _tail(log, _LOG_TAIL_LINES) if log else []
            note = f"warm: rank {me} of {n} finished with exit status {rc} (rank 0: {codes[0]})"
            err(note + ("; the end of its output:" if tail else ""))
            for line in tail:
                print(f"[rank {me}] {line}", file=sys.stderr)
        if me == 0:
            others = [f"rank {r}: {c}" for r, c in enumerate(codes) if r and c != rc]
            if others:
                err(f"warm: other ranks finished with another exit status ({', '.join(others)})")
        return next((c for c in codes if c != 0), 0)
    finally:
        if log is not None:
            try:
                os.unlink(log)
            except OSError:
                pass
        distributed.teardown()
