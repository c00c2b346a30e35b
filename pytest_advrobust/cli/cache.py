"""``advrobust cache list|info|clear|prune``: inspect or clean the GAN cache.

The cache folder is the one ``pytest`` started in the current folder would use
(its rootdir and ini file decide), unless ``--cache-dir`` names another. Exit
status: 0 fine, 1 an unknown key (``info``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..settings.parsing import non_negative_float, non_negative_int
from .output import PROG, err, out, out_lines

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """The ``cache`` sub-command and its actions, on ``commands`` (argparse sub-parsers)."""
    from ..settings.cache_folder import ENV_CACHE_DIR

    folder_help = f"the cache folder (default: ${ENV_CACHE_DIR}, else ./.pytest_cache/d/advrobust)"
    # --cache-dir is accepted before or after the action; SUPPRESS keeps the
    # action's parser from overwriting a value given to `cache`.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--cache-dir", default=argparse.SUPPRESS, metavar="DIR", help=folder_help)

    cache = commands.add_parser(
        "cache",
        help="inspect or clean the GAN cache",
        description="Inspect or clean the GAN cache.",
    )
    cache.add_argument("--cache-dir", default=None, metavar="DIR", help=folder_help)
    cache.set_defaults(run=run)
    actions = cache.add_subparsers(dest="cache_action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", parents=[shared], help="list cached generators")
    info = actions.add_parser("info", parents=[shared], help="show one cached generator")
    info.add_argument("key", metavar="KEY", help="the entry's key, or a unique prefix of it")
    others = argparse.ArgumentParser(add_help=False)
    others.add_argument(
        "--other-versions",
        action="store_true",
        help="also remove entries another version of pytest-advrobust wrote in another "
        "cache format (kept by default: that version may still use them)",
    )
    actions.add_parser(
        "clear",
        parents=[shared, others],
        help="remove every cached generator and stored evaluation of this version",
    )
    remove = actions.add_parser(
        "remove", parents=[shared], help="remove the named entries (of any version)"
    )
    remove.add_argument("keys", nargs="+", metavar="KEY", help="a key, or a unique prefix of it")
    prune = actions.add_parser(
        "prune",
        parents=[shared, others],
        help="remove damaged, old or surplus cached generators",
    )
    prune.add_argument(
        "--keep", type=non_negative_int, metavar="N", help="keep the N newest entries"
    )
    prune.add_argument(
        "--older-than",
        type=non_negative_float,
        metavar="DAYS",
        help="remove entries older than DAYS days",
    )


def run(args: argparse.Namespace) -> int:
    """Run one ``cache`` action; returns the exit status."""
    from .rootdir import pytest_cache_dir

    # the folder `pytest` started here would use: its rootdir and ini file decide
    root = pytest_cache_dir(getattr(args, "cache_dir", None), os.environ, Path.cwd())
    action = _ACTIONS[args.cache_action]
    if not root.is_dir():
        return action(None, root, args)
    return action(_open_cache(root), root, args)


def _open_cache(root: Path) -> Any:
    from ..cache import GanCache

    return GanCache(root, warn=lambda message: err(f"warning: {message}"))


def _evaluations(root: Path) -> Any:
    """The store of evaluations inside the cache folder, or ``None`` when there is none."""
    from ..settings.cache_folder import EVALUATIONS_FOLDER

    folder = root / EVALUATIONS_FOLDER
    return _open_cache(folder) if folder.is_dir() else None


def _entries(count: int) -> str:
    return "entry" if count == 1 else "entries"


def _list(cache: Any, root: Path, args: argparse.Namespace) -> int:
    from .cache_view import entry_row, header, size_text, sort_time

    if cache is None:
        out(f"no cache entries: {root} does not exist")
        return 0
    # newest first, as the cache lists them
    entries = sorted(cache.entries(), key=lambda e: (-sort_time(e.created), str(e.key)))
    if not entries:
        out(f"no cache entries in {root}")
        _stored_line(root)
        return 0
    from ..reports.tables import text_table

    out_lines(text_table([header()] + [entry_row(e) for e in entries], right=(5,)))
    total = sum(e.size for e in entries if isinstance(e.size, (int, float)))
    foreign = sum(1 for e in entries if getattr(e, "other_format", None) is not None)
    invalid = sum(1 for e in entries if not e.valid) - foreign
    summary = f"{len(entries)} {_entries(len(entries))}, {size_text(total)} in {root}"
    if invalid:
        summary += (
            f" ({invalid} damaged; they are retrained when next needed, "
            f"or run `{PROG} cache prune`)"
        )
    if foreign:
        summary += (
            f" ({foreign} written by another version of pytest-advrobust in another cache "
            f"format; prune and clear keep them)"
        )
    out(summary)
    _stored_line(root)
    stats = _stats(cache)
    if stats:
        out("events: " + ", ".join(f"{kind} {count}" for kind, count in sorted(stats.items())))
    return 0


def _stored_line(root: Path) -> None:
    """How many evaluations the cache folder stores, and their size."""
    from .cache_view import size_text

    stored = _evaluations(root)
    if stored is not None:
        kept = stored.entries()
        out(
            f"{len(kept)} stored evaluations, {size_text(sum(e.size for e in kept))} in "
            f"{stored.root} (reused while the model, data and settings are unchanged)"
        )


def _find_entry(entries: List[Any], key: str) -> Tuple[Optional[Any], List[Any]]:
    exact = [e for e in entries if e.key == key]
    if exact:
        return exact[0], exact
    matches = [e for e in entries if str(e.key).startswith(key)]
    return (matches[0] if len(matches) == 1 else None), matches


def _info(cache: Any, root: Path, args: argparse.Namespace) -> int:
    if cache is None:
        err(f"no cache entry {args.key}: {root} does not exist")
        return 1
    entry, matches = _find_entry(cache.entries(), args.key)
    if entry is None and matches:
        keys = ", ".join(sorted(str(m.key) for m in matches))
        err(f"key prefix {args.key} matches {len(matches)} entries ({keys}); give more of the key")
    elif entry is None:
        err(f"no cache entry {args.key} in {root}; `{PROG} cache list` shows the keys")
    if entry is None:
        return 1
    from .cache_view import created_text, describe, size_text

    out(f"key:     {entry.key}")
    out(f"family:  {entry.family}")
    for label, text in describe(entry.meta or {}):
        out(f"{label + ':':<9}{text}")
    out(f"created: {created_text(entry.created)}")
    out(f"size:    {size_text(entry.size)}")
    if entry.valid:
        out("valid:   yes")
    else:
        problem = getattr(entry, "problem", None)
        out(f"valid:   NO ({problem or 'damaged'}; retrained when next needed)")
    out(f"folder:  {root}")
    out("meta:")
    meta = json.dumps(entry.meta or {}, indent=2, sort_keys=True, default=str)
    out_lines(f"  {line}" for line in meta.splitlines())
    return 0


def _remove(cache: Any, root: Path, args: argparse.Namespace) -> int:
    """``clear`` (every entry) and ``prune`` (``--keep``, ``--older-than``, damaged)."""
    verb = args.cache_action
    if cache is None:
        out(f"nothing to {verb}: {root} does not exist")
        return 0
    stored = _evaluations(root)
    others = bool(getattr(args, "other_versions", False))
    kept = [] if others else cache.foreign()
    if verb == "clear":
        removed = cache.clear(other_versions=others)
        out(f"removed {removed} {_entries(removed)} from {root}")
        if stored is not None:
            out(f"removed {stored.clear()} stored evaluations from {stored.root}")
    else:
        keys = cache.prune(keep=args.keep, older_than_days=args.older_than, other_versions=others)
        out_lines(f"removed {key}" for key in keys)
        out(f"pruned {len(keys)} {_entries(len(keys))} from {root}")
        if stored is not None:  # the same rules, counted apart from the generators
            gone = stored.prune(keep=args.keep, older_than_days=args.older_than)
            out(f"pruned {len(gone)} stored evaluations from {stored.root}")
    for entry in kept:
        out(
            f"kept {entry.key}: {entry.kept_because}; remove it with "
            f"`{PROG} cache remove {entry.key[:12]}` or `{PROG} cache {verb} --other-versions`"
        )
    return 0


def _remove_named(cache: Any, root: Path, args: argparse.Namespace) -> int:
    """``remove KEY...``: the named entries, whatever version wrote them."""
    if cache is None:
        err(f"no cache entries: {root} does not exist")
        return 1
    entries, status = cache.entries(), 0
    for key in args.keys:
        entry, matches = _find_entry(entries, key)
        if entry is None:
            err(f"no single cache entry {key} in {root} ({len(matches)} match)")
            status = 1
            continue
        if not cache.remove_if_free(entry.key):
            err(f"not removed {entry.key}: a running process holds its lock")
            status = 1
            continue
        out(f"removed {entry.key}")
    return status


_ACTIONS = {
    "list": _list,
    "info": _info,
    "clear": _remove,
    "prune": _remove,
    "remove": _remove_named,
}


def _stats(cache: Any) -> Dict[str, Any]:
    try:
        stats = cache.stats()
    except Exception:  # the event log is informative only
        return {}
    return stats if isinstance(stats, dict) else {}
