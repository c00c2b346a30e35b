"""Baselines: save today's robustness numbers and verdicts, fail a later run that falls below.

A baseline file is JSON meant to be committed next to the tests::

    {
      "environment": {...fingerprint of the run that last wrote the file...},
      "schema_version": 2,
      "tests": {
        "tests/test_robust.py::test_pgd": {
          "adversarial_accuracy": 0.75, "clean_accuracy": 0.91, "gap": 0.16,
          "attack": "pgd", "eps": 0.1, "norm": "linf", "n": 512, "seed": 0,
          "settings": {...}, "environment": {...},
          "samples": {...each sample's id and verdicts, see pytest_advrobust.metrics.record...}
        }
      }
    }

Keys are sorted and the file is indented, so a change to it reads well in a
diff. It is written to a temporary file in the same folder and renamed into
place, so a reader never sees half a file. Files of schema 1 (no ``samples``)
still load; their entries are compared by the absolute rule
(:mod:`pytest_advrobust.gate.comparison`), and the next save writes schema 2.

This module is imported when the plugin loads: it must not import torch at
module level (``environment_fingerprint``, from :mod:`pytest_advrobust.gate.fingerprint`, imports it
when called).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Union

from ..errors import AdvRobustError
from ..gate.comparison import SLACK, Comparison, compare  # noqa: F401  (the rule, re-exported)
from ..gate.comparison_text import attack_change, generator_facts  # noqa: F401
from ..gate.fingerprint import environment_fingerprint, fingerprint_differences  # noqa: F401
from ..settings.parsing import is_number
from ..settings.robust import MISSING_POLICIES  # noqa: F401  (what a test without an entry does)
from .jsonfiles import UnreadableJson, read_json
from .report import atomic_write_text

#: The schema this version writes; it reads every schema in :data:`READABLE_SCHEMAS`.
SCHEMA_VERSION = 2
#: Schema 1: no per-sample verdicts (compared by the absolute rule).
READABLE_SCHEMAS = (1, 2)

#: The command-line option that names the baseline file.
BASELINE_OPTION = "--advrobust-baseline"

#: The command-line option that records the baseline (named in hints only).
SAVE_OPTION = "--advrobust-save-baseline"

#: Report fields copied into a baseline entry (``environment`` is added).
ENTRY_FIELDS = (
    "adversarial_accuracy",
    "clean_accuracy",
    "gap",
    "attack",
    "eps",
    "norm",
    "n",
    "seed",
    "settings",
    "samples",
)

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------
# reading


def _damaged(path: Path, problem: str) -> AdvRobustError:
    return AdvRobustError(
        f"baseline file {path} {problem}; fix or delete it, "
        f"or point {BASELINE_OPTION} at another file"
    )


#: What the error says after ``baseline file PATH`` for each kind of unreadable file.
_PROBLEMS = {
    "folder": "is a folder, not a file",
    "unreadable": "cannot be read ({detail})",
    "empty": "is empty",
    "invalid": "is not valid JSON{detail}",
}


def load_baseline(path: PathLike) -> Optional[Dict[str, Any]]:
    """Read a baseline file; ``None`` when there is none yet.

    Returns ``{"schema_version": N, "environment": {...}, "tests": {nodeid: entry}}``
    (``N`` as read: 1 or 2).
    A file that is not valid JSON, has an unknown ``schema_version`` or whose
    entries lack a numeric ``adversarial_accuracy`` raises
    :class:`~pytest_advrobust.errors.AdvRobustError` naming the file.
    """
    path = Path(path)
    try:
        data = read_json(path)
    except UnreadableJson as exc:
        if exc.kind == "missing":
            return None
        raise _damaged(path, _PROBLEMS[exc.kind].format(detail=exc.detail)) from None
    return _validate(path, data)


def _validate(path: Path, data: Any) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise _damaged(path, "does not hold a JSON object")
    version = data.get("schema_version")
    if version not in READABLE_SCHEMAS:
        if version is None:
            raise _damaged(path, "has no schema_version")
        readable = " and ".join(str(v) for v in READABLE_SCHEMAS)
        raise _damaged(
            path,
            f"has schema_version {version!r}, which this plugin cannot read (it reads {readable})",
        )
    tests = data.get("tests", {})
    if not isinstance(tests, dict):
        raise _damaged(path, "has a 'tests' field that is not an object of test ids")
    for nodeid, entry in tests.items():
        if not isinstance(entry, dict) or not is_number(entry.get("adversarial_accuracy")):
            raise _damaged(
                path, f"has an entry for {nodeid} without a numeric adversarial_accuracy"
            )
    environment = data.get("environment") or {}
    if not isinstance(environment, dict):
        raise _damaged(path, "has an 'environment' field that is not an object")
    return {"schema_version": version, "environment": environment, "tests": tests}


# --------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class SaveResult:
    """What :func:`save_baseline` did, by test id (each list sorted)."""

    path: Path
    written: List[str]
    kept: List[str]
    pruned: List[str]


def entry_from_report(report: Mapping[str, Any], environment: Mapping[str, Any]) -> Dict[str, Any]:
    """The baseline entry recorded for one report (with ``generator`` for the GAN attack)."""
    entry = {key: report.get(key) for key in ENTRY_FIELDS}
    if entry["settings"] is None:
        entry["settings"] = {}
    gen = generator_facts(report.get("training"))
    if gen is not None:
        entry["generator"] = gen
    entry["environment"] = dict(environment)
    return entry


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)


def dumps(data: Mapping[str, Any]) -> str:
    """Serialise a baseline the way it is written: sorted keys, indent 2, final newline."""
    return json.dumps(data, sort_keys=True, indent=2, default=_jsonable) + "\n"


def save_baseline(
    path: PathLike,
    reports: Iterable[Mapping[str, Any]],
    *,
    mode: str = "all",
    existing: Optional[Mapping[str, Any]],
    collected: Optional[Set[str]],
    environment: Mapping[str, Any],
) -> SaveResult:
    """Record this run's numbers in the baseline file at ``path``.

    ``existing`` is the file's current content as :func:`load_baseline`
    returned it (``None``: there is no file yet). ``mode="all"`` writes an
    entry for every report; ``mode="new"`` only for tests the file does not
    have yet. Entries of tests not in ``collected`` (when given) are pruned;
    entries of tests that are still collected but did not run this time are
    kept. Reports without a numeric adversarial accuracy (errored tests) are
    not recorded. The file is left untouched when its content would not change.
    """
    if mode not in ("all", "new"):
        raise ValueError(f"baseline save mode must be 'all' or 'new', got {mode!r}")
    path = Path(path)
    old_tests: Dict[str, Any] = dict((existing or {}).get("tests") or {})
    tests = {k: v for k, v in old_tests.items() if collected is None or k in collected}
    pruned = sorted(set(old_tests) - set(tests))
    written: List[str] = []
    for report in reports:
        nodeid = report.get("nodeid")
        if not nodeid or not is_number(report.get("adversarial_accuracy")):
            continue
        if mode == "new" and nodeid in old_tests:
            continue
        tests[nodeid] = entry_from_report(report, environment)
        written.append(nodeid)

    kept = sorted(set(tests) - set(written))
    if existing is not None and not written:  # nothing measured here: keep the recorded one
        environment = existing.get("environment") or {}
    if existing is None or written or pruned or not path.is_file():
        doc = {"schema_version": SCHEMA_VERSION, "environment": dict(environment), "tests": tests}
        _write(path, doc)
    return SaveResult(path=path, written=sorted(set(written)), kept=kept, pruned=pruned)


def _write(path: Path, doc: Mapping[str, Any]) -> None:
    try:
        atomic_write_text(path, dumps(doc))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AdvRobustError(
            f"baseline file {path} cannot be written ({reason}); "
            f"point {BASELINE_OPTION} at a writable location"
        ) from None
