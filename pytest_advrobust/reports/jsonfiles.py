"""Reading the JSON files the plugin writes: the JSON report and the baseline file.

:func:`read_json` is the one reader: it names what is wrong with a file that
cannot be read or parsed, and each caller says it in its own sentence (the
baseline points at ``--advrobust-baseline``, the ``advrobust`` command at the
file it was given). :func:`load_results` reads either kind of file as the
per-test numbers that ``advrobust compare`` and ``advrobust history`` show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple, Union

__all__ = ["InputError", "READABLE", "UnreadableJson", "load_results", "read_json"]

#: Schema versions :func:`load_results` reads: JSON reports (a list of tests) at 1,
#: baseline files (tests by node id) at 1 (no per-sample verdicts) or 2.
READABLE = {"report": (1,), "baseline": (1, 2)}


class UnreadableJson(Exception):
    """Why a JSON file cannot be used.

    ``kind`` is ``"missing"``, ``"folder"``, ``"unreadable"`` (``detail``: the
    system's reason), ``"empty"`` or ``"invalid"`` (``detail``: `` (line N)``
    where the parser names a line, else empty).
    """

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}{detail}")
        self.kind, self.detail = kind, detail


def read_json(path: Union[str, Path]) -> Any:
    """The parsed content of the UTF-8 JSON file at ``path``.

    Raises :class:`UnreadableJson` when the file is missing, a folder,
    unreadable, empty (only spaces) or not valid JSON.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnreadableJson("missing") from None
    except IsADirectoryError:
        raise UnreadableJson("folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UnreadableJson("unreadable", reason) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        lineno = getattr(exc, "lineno", None)
        kind = "invalid" if text.strip() else "empty"
        raise UnreadableJson(kind, f" (line {lineno})" if lineno else "") from None


class InputError(Exception):
    """A file the user named cannot be used; the message is one sentence."""


#: What ``advrobust`` says after ``cannot read PATH:`` for each kind of unreadable file.
_PROBLEMS = {
    "missing": "no such file",
    "folder": "it is a folder",
    "unreadable": "{detail}",
    "empty": "not valid JSON{detail}",
    "invalid": "not valid JSON{detail}",
}


def _results(path: str, tests: Any) -> Dict[str, Dict[str, Any]]:
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
    return results


def load_results(path: str) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Read a JSON report or a baseline file as ``({nodeid: numbers}, environment)``.

    Raises :class:`InputError` with one sentence when the file cannot be used.
    """
    try:
        data = read_json(path)
    except UnreadableJson as exc:
        problem = _PROBLEMS[exc.kind].format(detail=exc.detail)
        raise InputError(f"cannot read {path}: {problem}") from None
    if not isinstance(data, dict) or "tests" not in data:
        raise InputError(
            f"cannot read {path}: neither an advrobust JSON report nor a baseline file "
            "(no 'tests' field)"
        )
    version = data.get("schema_version", 1)
    readable = READABLE["baseline" if isinstance(data["tests"], dict) else "report"]
    if version not in readable:
        raise InputError(
            f"cannot read {path}: schema_version {version!r} is not one this version reads "
            f"({' or '.join(map(str, readable))})"
        )
    environment = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    return _results(path, data["tests"]), environment
