"""The ``advrobust`` command: inspect the GAN cache, compare results, warm the cache.

::

    advrobust cache list                      # what is cached, and where
    advrobust cache info KEY                  # one entry (a unique key prefix will do)
    advrobust cache clear
    advrobust cache prune --keep 5 --older-than 30
    advrobust compare OLD.json NEW.json --tolerance 0.02
    advrobust history reports/ --plot history.png   # each test across saved reports
    advrobust warm tests/robust -x            # train every generator ahead of CI
    torchrun --nproc-per-node=4 -m pytest_advrobust.cli warm tests/robust
                                              # ... with 4 processes (DDP; NCCL on GPUs)

Exit status: 0 fine, 1 a regression (``compare``) or an unknown key
(``cache info``), 2 unreadable input or a usage error; ``warm`` returns
pytest's own exit status (under torchrun: the first non-zero status of any
rank, the same on every rank).

This module holds the parser and the entry point; each sub-command lives in
its own module of this package: :mod:`.cache`, :mod:`.compare` (``compare`` and
``history``, with :mod:`.history`) and :mod:`.warm` (also under ``torchrun``); the
``python -m pytest_advrobust.cli`` entry is :mod:`.__main__`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ..errors import AdvRobustError
from . import cache, compare, warm
from .output import PROG, err

__all__ = ["build_parser", "console_main", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command's argparse parser; each sub-command's module adds its own parser."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Inspect the pytest-advrobust GAN cache, compare robustness results, warm the cache."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    cache.add_parser(commands)
    compare.add_parsers(commands)
    warm_parser = commands.add_parser(
        "warm",
        help="run the robust tests once to train and cache every generator",
        description="Run `pytest --advrobust --advrobust-warm PYTEST_ARGS...`.",
        usage=f"{PROG} warm [PYTEST_ARGS ...]",
    )
    warm_parser.set_defaults(run=lambda _: warm.run([]))  # main() hands `warm ...` on before this
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``advrobust`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Everything after `warm` belongs to pytest, options included, so it
    # bypasses argparse (which would try to interpret `-x`, `-k` ...).
    if args_list and args_list[0] == "warm" and not ({"-h", "--help"} & set(args_list[1:2])):
        return warm.run(args_list[1:])

    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    try:
        return args.run(args)
    except AdvRobustError as exc:
        err(str(exc))
        return 2


def console_main() -> None:
    """The ``advrobust`` console script (and ``python -m pytest_advrobust.cli``)."""
    rc = main()
    if warm.EXIT_HARD["warm"]:
        # A rank of a torchrun launch: everything is written and the process group
        # is gone. Leave without C++ static destructors, which with gloo's worker
        # threads can abort an otherwise successful rank at interpreter exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    raise SystemExit(rc)
