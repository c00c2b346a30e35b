"""What the ``advrobust`` command prints: lines on stdout, and problems on stderr
after the program's name (``advrobust: ...``)."""

from __future__ import annotations

import sys
from typing import Iterable

PROG = "advrobust"

__all__ = ["PROG", "err", "out", "out_lines"]


def out(text: str = "") -> None:
    """One line on stdout."""
    print(text, file=sys.stdout)


def out_lines(lines: Iterable[str]) -> None:
    """Lines on stdout, one after another."""
    for line in lines:
        out(line)


def err(text: str) -> None:
    """One line on stderr, after the program's name."""
    print(f"{PROG}: {text}", file=sys.stderr)
