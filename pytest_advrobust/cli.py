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

Under ``torchrun`` (``$WORLD_SIZE`` > 1) ``warm`` joins the ranks in one
process group (:mod:`pytest_advrobust.distributed`) before it runs pytest;
each generator is then trained by all ranks together and stored by rank 0.
Rank 0 prints pytest's output; the other ranks write theirs to a temporary
log, whose end is printed only when that rank's exit status differs from
rank 0's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from .errors import AdvRobustError

PROG = "advrobust"
CACHE_ENV = "ADVROBUST_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".pytest_cache") / "d" / "advrobust"
DEFAULT_TOLERANCE = 0.02


class InputError(Exception):
    """A file the user named cannot be used; the message is one sentence."""


# --------------------------------------------------------------------------
# small helpers


def _out(text: str = "", stream: Optional[TextIO] = None) -> None:
    print(text, file=stream or sys.stdout)


def _err(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr)


def _table(rows: List[List[str]], right: Sequence[int] = ()) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _size(num: Any) -> str:
    try:
        value = float(num)
    except (TypeError, ValueError):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "?"  # pragma: no cover


def _when(created: Any) -> str:
    if created is None:
        return "?"
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        try:
            return _dt.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return str(created)
    return str(created)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


# --------------------------------------------------------------------------
# cache


def _cache_dir(option: Optional[str]) -> Path:
    from .rootdir import pytest_cache_dir

    # the folder `pytest` started here would use: its rootdir and ini file decide
    return pytest_cache_dir(option, os.environ, Path.cwd())


def _open_cache(root: Path) -> Any:
    from .cache import GanCache

    return GanCache(root, warn=lambda message: _err(f"warning: {message}"))


def _find_entry(entries: List[Any], key: str) -> Tuple[Optional[Any], List[Any]]:
    exact = [e for e in entries if e.key == key]
    if exact:
        return exact[0], exact
    matches = [e for e in entries if str(e.key).startswith(key)]
    return (matches[0] if len(matches) == 1 else None), matches


def _cmd_cache(args: argparse.Namespace) -> int:
    root = _cache_dir(getattr(args, "cache_dir", None))
    action = args.cache_action
    exists = root.is_dir()

    if action == "list":
        if not exists:
            _out(f"no cache entries: {root} does not exist")
            return 0
        cache = _open_cache(root)
        # newest first, as the cache lists them
        entries = sorted(cache.entries(), key=lambda e: (-_sort_time(e.created), str(e.key)))
        if not entries:
            _out(f"no cache entries in {root}")
            return 0
        from .cache_view import entry_row, header

        rows = [header()]
        for e in entries:
            rows.append(entry_row(e, _when(e.created), _size(e.size)))
        for line in _table(rows, right=(5,)):
            _out(line)
        total = sum(e.size for e in entries if isinstance(e.size, (int, float)))
        invalid = sum(1 for e in entries if not e.valid)
        noun = "entry" if len(entries) == 1 else "entries"
        summary = f"{len(entries)} {noun}, {_size(total)} in {root}"
        if invalid:
            summary += (
                f" ({invalid} damaged; they are retrained when next needed, "
                f"or run `{PROG} cache prune`)"
            )
        _out(summary)
        stats = _stats(cache)
        if stats:
            _out("events: " + ", ".join(f"{kind} {count}" for kind, count in sorted(stats.items())))
        return 0

    if action == "info":
        if not exists:
            _err(f"no cache entry {args.key}: {root} does not exist")
            return 1
        entry, matches = _find_entry(_open_cache(root).entries(), args.key)
        if entry is None:
            if matches:
                keys = ", ".join(sorted(str(m.key) for m in matches))
                _err(
                    f"key prefix {args.key} matches {len(matches)} entries ({keys}); "
                    "give more of the key"
                )
            else:
                _err(f"no cache entry {args.key} in {root}; `{PROG} cache list` shows the keys")
            return 1
        from .cache_view import describe

        _out(f"key:     {entry.key}")
        _out(f"family:  {entry.family}")
        for label, text in describe(entry.meta or {}):
            _out(f"{label + ':':<9}{text}")
        _out(f"created: {_when(entry.created)}")
        _out(f"size:    {_size(entry.size)}")
        if entry.valid:
            _out("valid:   yes")
        else:
            problem = getattr(entry, "problem", None)
            _out(f"valid:   NO ({problem or 'damaged'}; retrained when next needed)")
        _out(f"folder:  {root}")
        _out("meta:")
        meta = json.dumps(entry.meta or {}, indent=2, sort_keys=True, default=str)
        for line in meta.splitlines():
            _out(f"  {line}")
        return 0

    if action == "clear":
        if not exists:
            _out(f"nothing to clear: {root} does not exist")
            return 0
        removed = _open_cache(root).clear()
        _out(f"removed {removed} {'entry' if removed == 1 else 'entries'} from {root}")
        return 0

    if action == "prune":
        if not exists:
            _out(f"nothing to prune: {root} does not exist")
            return 0
        removed = _open_cache(root).prune(keep=args.keep, older_than_days=args.older_than)
        for key in removed:
            _out(f"removed {key}")
        _out(f"pruned {len(removed)} {'entry' if len(removed) == 1 else 'entries'} from {root}")
        return 0

    raise AssertionError(action)  # pragma: no cover - argparse restricts choices


def _stats(cache: Any) -> Dict[str, Any]:
    try:
        stats = cache.stats()
    except Exception:  # the event log is informative only
        return {}
    return stats if isinstance(stats, dict) else {}


def _sort_time(created: Any) -> float:
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return float(created)
    if isinstance(created, str):
        try:
            return _dt.datetime.fromisoformat(created).timestamp()
        except ValueError:
            return 0.0
    return 0.0


# --------------------------------------------------------------------------
# compare


def load_results(path: str) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Read a JSON report or a baseline file as ``({nodeid: numbers}, environment)``.

    Raises :class:`InputError` with one sentence when the file cannot be used.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"cannot read {path}: it is a folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"cannot read {path}: {reason}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise InputError(f"cannot read {path}: not valid JSON{where}") from None
    if not isinstance(data, dict) or "tests" not in data:
        raise InputError(
            f"cannot read {path}: neither an advrobust JSON report nor a baseline file "
            "(no 'tests' field)"
        )
    version = data.get("schema_version", 1)
    if version != 1:
        raise InputError(
            f"cannot read {path}: schema_version {version!r} is not one this version reads (1)"
        )
    tests = data["tests"]
    results: Dict[str, Dict[str, Any]] = {}
    if isinstance(tests, list):  # JSON report
        for report in tests:
            if not isinstance(report, dict) or not isinstance(report.get("nodeid"), str):
                raise InputError(f"cannot read {path}: a test in its 'tests' list has no nodeid")
            results[report["nodeid"]] = report
    elif isinstance(tests, dict):  # baseline file
        for nodeid, entry in tests.items():
            if not isinstance(entry, dict):
                raise InputError(f"cannot read {path}: the entry for {nodeid} is not an object")
            results[nodeid] = dict(entry, nodeid=nodeid)
    else:
        raise InputError(f"cannot read {path}: its 'tests' field is neither a list nor an object")
    environment = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    return results, environment


def _has_number(result: Optional[Dict[str, Any]]) -> bool:
    if result is None:
        return False
    value = result.get("adversarial_accuracy")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .baseline import compare, fingerprint_differences

    try:
        old, old_env = load_results(args.old)
        new, new_env = load_results(args.new)
    except InputError as exc:
        _err(str(exc))
        return 2

    tolerance = args.tolerance
    rows = [["TEST", "OLD", "NEW", "DELTA", "STATUS"]]
    regressions: List[Tuple[str, str]] = []
    notes: List[str] = []
    counts = {"compared": 0, "only_old": 0, "only_new": 0, "no_result": 0}
    for nodeid in sorted(set(old) | set(new)):
        before, after = old.get(nodeid), new.get(nodeid)
        old_txt = f"{before['adversarial_accuracy']:.3f}" if _has_number(before) else "-"
        new_txt = f"{after['adversarial_accuracy']:.3f}" if _has_number(after) else "-"
        delta_txt = "-"
        if after is None:
            status = "only in OLD"
            counts["only_old"] += 1
        elif before is None:
            status = "only in NEW"
            counts["only_new"] += 1
        elif not _has_number(before) or not _has_number(after):
            status = "no result in " + ("OLD" if not _has_number(before) else "NEW")
            counts["no_result"] += 1
        else:
            result = compare(before, after, tolerance)
            counts["compared"] += 1
            delta_txt = f"{result.delta:+.3f}"
            status = "REGRESSED" if result.status == "regressed" else result.status
            if result.status == "regressed":
                regressions.append((nodeid, result.message))
            if result.mismatches:
                notes.append(
                    f"{nodeid}: compared across different settings ({', '.join(result.mismatches)})"
                )
        rows.append([nodeid, old_txt, new_txt, delta_txt, status])

    if len(rows) == 1:
        _out(f"no tests in {args.old} or {args.new}")
    else:
        for line in _table(rows, right=(1, 2, 3)):
            _out(line)
    differences = fingerprint_differences(old_env, new_env) if (old_env and new_env) else []
    if differences:
        notes.append("environments differ: " + "; ".join(differences))
    for note in notes:
        _out(f"note: {note}")

    extra = []
    if counts["only_old"]:
        extra.append(f"{counts['only_old']} only in {args.old}")
    if counts["only_new"]:
        extra.append(f"{counts['only_new']} only in {args.new}")
    if counts["no_result"]:
        extra.append(f"{counts['no_result']} without a result")
    tail = f" ({counts['compared']} compared" + "".join(f", {e}" for e in extra) + ")"
    if regressions:
        word = "regression" if len(regressions) == 1 else "regressions"
        _out(f"{len(regressions)} {word} beyond tolerance {tolerance:.3f}{tail}:")
        for nodeid, message in regressions:
            _out(f"  {nodeid}: {message}")
        return 1
    _out(f"no regression beyond tolerance {tolerance:.3f}{tail}")
    return 0


# --------------------------------------------------------------------------
# history


def _cmd_history(args: argparse.Namespace) -> int:
    from .history import history_table, load_history, plot_history

    try:
        history = load_history(args.reports)
        baseline = load_results(args.baseline)[0] if args.baseline else None
    except InputError as exc:
        _err(str(exc))
        return 2
    for line in _table(history_table(history, baseline), right=range(1, len(history.runs) + 3)):
        _out(line)
    if args.plot:
        _out(f"plot written to {plot_history(history, Path(args.plot), baseline)}")
    return 0


# --------------------------------------------------------------------------
# warm


def _cmd_warm(pytest_args: Sequence[str]) -> int:
    import pytest

    from . import distributed

    args = list(pytest_args)
    if args and args[0] == "--":
        args = args[1:]
    if distributed.launched():
        _EXIT_HARD["warm"] = True
        return _warm_distributed(args)
    return int(pytest.main(["--advrobust", "--advrobust-warm", *args]))


_EXIT_HARD = {"warm": False}


def console_main() -> None:
    """The ``advrobust`` console script (and ``python -m pytest_advrobust.cli``)."""
    rc = main()
    if _EXIT_HARD["warm"]:
        # A rank of a torchrun launch: everything is written and the process group
        # is gone. Leave without C++ static destructors, which with gloo's worker
        # threads can abort an otherwise successful rank at interpreter exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    raise SystemExit(rc)


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

    from . import distributed

    try:
        distributed.init_from_env()
    except ValueError as exc:  # a bad $ADVROBUST_DIST_TIMEOUT
        _err(str(exc))
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
            _err(note + ("; the end of its output:" if tail else ""))
            for line in tail:
                print(f"[rank {me}] {line}", file=sys.stderr)
        if me == 0:
            others = [f"rank {r}: {c}" for r, c in enumerate(codes) if r and c != rc]
            if others:
                _err(f"warm: other ranks finished with another exit status ({', '.join(others)})")
        return next((c for c in codes if c != 0), 0)
    finally:
        if log is not None:
            try:
                os.unlink(log)
            except OSError:
                pass
        distributed.teardown()


# --------------------------------------------------------------------------
# parser and entry point


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Inspect the pytest-advrobust GAN cache, compare robustness results, warm the cache."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    cache_dir_help = (
        f"the cache folder (default: ${CACHE_ENV}, else ./{DEFAULT_CACHE_DIR.as_posix()})"
    )
    # --cache-dir is accepted before or after the action; SUPPRESS keeps the
    # action's parser from overwriting a value given to `cache`.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--cache-dir", default=argparse.SUPPRESS, metavar="DIR", help=cache_dir_help
    )

    cache = commands.add_parser(
        "cache",
        help="inspect or clean the GAN cache",
        description="Inspect or clean the GAN cache.",
    )
    cache.add_argument("--cache-dir", default=None, metavar="DIR", help=cache_dir_help)
    actions = cache.add_subparsers(dest="cache_action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", parents=[shared], help="list cached generators")
    info = actions.add_parser("info", parents=[shared], help="show one cached generator")
    info.add_argument("key", metavar="KEY", help="the entry's key, or a unique prefix of it")
    actions.add_parser("clear", parents=[shared], help="remove every cached generator")
    prune = actions.add_parser(
        "prune", parents=[shared], help="remove damaged, old or surplus cached generators"
    )
    prune.add_argument(
        "--keep",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="keep the N newest entries",
    )
    prune.add_argument(
        "--older-than",
        type=_non_negative_float,
        default=None,
        metavar="DAYS",
        help="remove entries older than DAYS days",
    )

    comp = commands.add_parser(
        "compare",
        help="compare two JSON reports or baseline files",
        description=(
            "Compare per-test adversarial accuracy between two JSON reports or baseline files; "
            "exit 1 when a test fell by more than the tolerance."
        ),
    )
    comp.add_argument("old", metavar="OLD.json")
    comp.add_argument("new", metavar="NEW.json")
    comp.add_argument(
        "--tolerance",
        type=_non_negative_float,
        default=DEFAULT_TOLERANCE,
        help=f"allowed drop in adversarial accuracy (default {DEFAULT_TOLERANCE})",
    )

    hist = commands.add_parser(
        "history",
        help="adversarial accuracy of each test across JSON reports",
        description=(
            "Print each test's adversarial accuracy across JSON reports, in the order given "
            "(a folder: its *.json files in name order), with the lowest accuracy its "
            "threshold allows and its baseline."
        ),
    )
    hist.add_argument("reports", nargs="+", metavar="REPORT.json|DIR")
    hist.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="also write a PNG: a line per test, threshold floor and baseline marked",
    )
    hist.add_argument(
        "--baseline",
        metavar="PATH",
        default=None,
        help="baseline file whose adversarial accuracies to mark",
    )

    commands.add_parser(
        "warm",
        help="run the robust tests once to train and cache every generator",
        description="Run `pytest --advrobust --advrobust-warm PYTEST_ARGS...`.",
        usage=f"{PROG} warm [PYTEST_ARGS ...]",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``advrobust`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Everything after `warm` belongs to pytest, options included, so it
    # bypasses argparse (which would try to interpret `-x`, `-k` ...).
    if args_list and args_list[0] == "warm" and not ({"-h", "--help"} & set(args_list[1:2])):
        return _cmd_warm(args_list[1:])

    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)

    try:
        if args.command == "cache":
            return _cmd_cache(args)
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "history":
            return _cmd_history(args)
        return _cmd_warm([])  # pragma: no cover - handled above
    except AdvRobustError as exc:
        _err(str(exc))
        return 2


if __name__ == "__main__":
    console_main()
