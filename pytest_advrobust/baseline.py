"""Baselines: save today's robustness numbers, fail a later run that falls below them.

A baseline file is JSON meant to be committed next to the tests::

    {
      "environment": {...fingerprint of the run that last wrote the file...},
      "schema_version": 1,
      "tests": {
        "tests/test_robust.py::test_pgd": {
          "adversarial_accuracy": 0.75, "clean_accuracy": 0.91, "gap": 0.16,
          "attack": "pgd", "eps": 0.1, "norm": "linf", "n": 512, "seed": 0,
          "settings": {...}, "environment": {...}
        }
      }
    }

Keys are sorted and the file is indented, so a change to it reads well in a
diff. It is written to a temporary file in the same folder and renamed into
place, so a reader never sees half a file.

This module is imported when the plugin loads: it must not import torch at
module level (``environment_fingerprint``, from :mod:`.fingerprint`, imports it
when called).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

from .errors import AdvRobustError
from .fingerprint import environment_fingerprint, fingerprint_differences  # noqa: F401
from .jsonfiles import UnreadableJson, read_json
from .parsing import is_number
from .report import atomic_write_text
from .settings import MISSING_POLICIES  # noqa: F401  (what a test without an entry does)

SCHEMA_VERSION = 1

#: The command-line option that names the baseline file.
BASELINE_OPTION = "--advrobust-baseline"

#: The command-line option that records the baseline (named in hints only).
SAVE_OPTION = "--advrobust-save-baseline"

#: Slack added to the tolerance so that float noise never flips a verdict.
SLACK = 1e-9

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
)

#: Fields whose difference between baseline and current run makes the
#: comparison one of different experiments; shown in the message.
_SETTING_FIELDS = ("attack", "norm", "eps", "n", "seed")
#: Settings (of the report's ``settings``) that change the attack's strength.
_ATTACK_SETTINGS = ("steps", "step_size", "restarts", "random_start", "targets", "refine")

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

    Returns ``{"schema_version": 1, "environment": {...}, "tests": {nodeid: entry}}``.
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
    if version != SCHEMA_VERSION:
        if version is None:
            raise _damaged(path, "has no schema_version")
        raise _damaged(
            path,
            f"has schema_version {version!r}, which this plugin cannot read "
            f"(it reads {SCHEMA_VERSION})",
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
    return {"schema_version": SCHEMA_VERSION, "environment": environment, "tests": tests}


# --------------------------------------------------------------------------
# comparing


@dataclass(frozen=True)
class Comparison:
    """One test's adversarial accuracy against its baseline entry.

    ``status`` is one of ``"ok"``, ``"regressed"``, ``"missing"``, ``"improved"``
    and ``"attack_changed"``. ``delta`` is ``current - baseline`` (negative when robustness fell);
    ``baseline`` and ``delta`` are ``None`` when the entry is missing.
    ``mismatches`` lists settings that differ from the ones the baseline was
    recorded with (``"eps 0.1 -> 0.2"``); they are noted in ``message`` but do
    not change ``status``.
    """

    status: str
    baseline: Optional[float]
    current: float
    delta: Optional[float]
    tolerance: float
    message: str
    mismatches: List[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return self.status == "regressed"

    def to_report(self) -> Dict[str, Any]:
        """The ``baseline`` field of the report dict."""
        return {
            "adversarial_accuracy": self.baseline,
            "delta": self.delta,
            "tolerance": self.tolerance,
            "status": self.status,
        }


def _settings_mismatches(entry: Mapping[str, Any], report: Mapping[str, Any]) -> List[str]:
    out = []
    for key in _SETTING_FIELDS:
        if key not in entry or key not in report:
            continue
        old, new = entry[key], report[key]
        if is_number(old) and is_number(new):
            same = math.isclose(float(old), float(new), rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = old == new
        if not same:
            out.append(f"{key} {old} -> {new}")
    old_s, new_s = entry.get("settings") or {}, report.get("settings") or {}
    for key in _ATTACK_SETTINGS:  # what makes the attack stronger or weaker
        if key in old_s and key in new_s and old_s[key] != new_s[key]:
            out.append(f"{key} {old_s[key]} -> {new_s[key]}")
    return out


def _verdict(
    entry: Mapping[str, Any], report: Mapping[str, Any], base: float, delta: float, tol: float
) -> Tuple[str, str]:
    """``(status, message)`` of the current adversarial accuracy, ``base + delta``."""
    current = float(report["adversarial_accuracy"])
    numbers = (
        f"(baseline {base:.3f} -> current {current:.3f}, delta {delta:+.3f}, tolerance {tol:.3f})"
    )
    if current < base - tol - SLACK:
        fell = f"adversarial accuracy fell {-delta:.3f} below baseline {numbers}"
        changed = _attack_change(entry, report)
        if not changed:
            return "regressed", fell
        return "attack_changed", (
            f"{fell}, but {changed}: the fall may be the attack's, not the model's; "
            f'check with attack="pgd" and save the baseline again ({SAVE_OPTION})'
        )
    if current > base + tol + SLACK:
        return "improved", (
            f"adversarial accuracy rose {delta:.3f} above baseline {numbers}; "
            "save the baseline again to lock in the gain"
        )
    return "ok", f"adversarial accuracy within tolerance of baseline {numbers}"


def compare(
    entry: Optional[Mapping[str, Any]], report: Mapping[str, Any], tolerance: float
) -> Comparison:
    """Compare one test's report with its baseline entry.

    ``regressed`` when the current adversarial accuracy is more than
    ``tolerance`` below the baseline, ``improved`` when it is more than
    ``tolerance`` above it, ``ok`` in between, ``missing`` when ``entry`` is
    ``None``; ``attack_changed`` instead of ``regressed`` when the GAN attack
    is not the one the baseline was recorded with. Raises :class:`ValueError`
    for a negative tolerance or a report without a numeric adversarial accuracy.
    """
    tolerance = float(tolerance)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"baseline tolerance must be a number >= 0, got {tolerance!r}")
    current = report.get("adversarial_accuracy")
    if not is_number(current):
        raise ValueError(
            f"report for {report.get('nodeid', '?')} has no numeric adversarial_accuracy to compare"
        )
    current = float(current)
    if entry is None:
        message = f"no baseline entry for this test (current adversarial accuracy {current:.3f})"
        return Comparison("missing", None, current, None, tolerance, message)

    base = float(entry["adversarial_accuracy"])
    delta = current - base
    if abs(delta) < SLACK:
        delta = 0.0  # no "-0.000" in messages for float noise
    status, message = _verdict(entry, report, base, delta, tolerance)
    mismatches = _settings_mismatches(entry, report)
    if mismatches:
        message += (
            f"; note: the baseline was recorded with other settings ({', '.join(mismatches)})"
        )
    return Comparison(status, base, current, delta, tolerance, message, mismatches)


# --------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class SaveResult:
    """What :func:`save_baseline` did, by test id (each list sorted)."""

    path: Path
    written: List[str]
    kept: List[str]
    pruned: List[str]


def generator_facts(training: Any) -> Optional[Dict[str, Any]]:
    """What a baseline entry records about a GAN attack's generator (``None`` without one).

    ``key`` (model, data and settings), ``attack_id`` (settings and version only),
    how it was trained (``mode``, ``steps``) and its one-shot success on the evaluation
    samples (``generator_success``).
    """
    if not isinstance(training, Mapping):
        return None
    reuse = training.get("reuse") if isinstance(training.get("reuse"), Mapping) else {}
    return {
        "key": training.get("key"),
        "attack_id": training.get("attack_id"),
        "mode": training.get("trained_mode", training.get("mode")),
        "steps": training.get("steps"),
        "generator_success": reuse.get("success"),
    }


def _attack_change(entry: Mapping[str, Any], report: Mapping[str, Any]) -> Optional[str]:
    """Why the attack of ``report`` is not the one the baseline was recorded with, or ``None``."""
    old = entry.get("generator")
    new = generator_facts(report.get("training"))
    if not isinstance(old, Mapping) or new is None:
        return None
    if old.get("attack_id") and new.get("attack_id") and old["attack_id"] != new["attack_id"]:
        return (
            f"the GAN attack changed (generator settings or version {old['attack_id'][:12]} -> "
            f"{new['attack_id'][:12]}, {old.get('steps')} -> {new.get('steps')} steps)"
        )
    return None


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
