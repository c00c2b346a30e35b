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
module level (``environment_fingerprint`` imports it when called).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Union

from .errors import AdvRobustError
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

#: Order in which fingerprint differences are listed.
_FINGERPRINT_ORDER = ("torch", "device_kind", "python", "plugin", "seed")

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------
# environment fingerprint


def _plugin_version() -> str:
    try:
        import pytest_advrobust

        version = getattr(pytest_advrobust, "__version__", None)
        if version:
            return str(version)
    except ImportError:  # pragma: no cover - we are inside the package
        pass
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("pytest-advrobust")
    except (ImportError, PackageNotFoundError):
        return "unknown"


def _device_kind(device: Any) -> str:
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        try:
            name = torch.cuda.get_device_name(dev)
        except Exception:  # no CUDA runtime, bad index: still a usable fingerprint
            name = "unknown"
        return f"cuda:{name}"
    return dev.type


def environment_fingerprint(device: Any, seed: int) -> Dict[str, Any]:
    """Describe what the numbers depend on beyond the model and the data.

    ``device`` is anything ``torch.device`` accepts (``"cpu"``, ``"cuda:0"``);
    a CUDA device is named by its card (``"cuda:NVIDIA H200"``), so two runs on
    the same kind of card match whatever their device index.
    """
    import torch

    return {
        "torch": str(torch.__version__),
        "device_kind": _device_kind(device),
        "seed": int(seed),
        "plugin": _plugin_version(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def fingerprint_differences(
    baseline_env: Optional[Mapping[str, Any]], current_env: Optional[Mapping[str, Any]]
) -> List[str]:
    """Human-readable differences between two fingerprints.

    ``["torch 2.13.0 -> 2.14.1", "device_kind cpu -> cuda:NVIDIA H200"]``;
    an empty list when they agree. A key recorded on one side only shows as
    ``(not recorded)`` on the other.
    """
    old = dict(baseline_env or {})
    new = dict(current_env or {})
    keys = [k for k in _FINGERPRINT_ORDER if k in old or k in new]
    keys += sorted((set(old) | set(new)) - set(_FINGERPRINT_ORDER))
    out = []
    for key in keys:
        before = old.get(key, _NOT_RECORDED)
        after = new.get(key, _NOT_RECORDED)
        if before != after:
            out.append(f"{key} {_show(before)} -> {_show(after)}")
    return out


_NOT_RECORDED = object()


def _show(value: Any) -> str:
    if value is _NOT_RECORDED:
        return "(not recorded)"
    return str(value)


# --------------------------------------------------------------------------
# reading


def _damaged(path: Path, problem: str) -> AdvRobustError:
    return AdvRobustError(
        f"baseline file {path} {problem}; fix or delete it, "
        f"or point {BASELINE_OPTION} at another file"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_baseline(path: PathLike) -> Optional[Dict[str, Any]]:
    """Read a baseline file; ``None`` when there is none yet.

    Returns ``{"schema_version": 1, "environment": {...}, "tests": {nodeid: entry}}``.
    A file that is not valid JSON, has an unknown ``schema_version`` or whose
    entries lack a numeric ``adversarial_accuracy`` raises
    :class:`~pytest_advrobust.errors.AdvRobustError` naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _damaged(path, "is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise _damaged(path, f"cannot be read ({reason})") from None
    if not text.strip():
        raise _damaged(path, "is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise _damaged(path, f"is not valid JSON{where}") from None
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
        if not isinstance(entry, dict) or not _is_number(entry.get("adversarial_accuracy")):
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
        if _is_number(old) and _is_number(new):
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


def compare(
    entry: Optional[Mapping[str, Any]], report: Mapping[str, Any], tolerance: float
) -> Comparison:
    """Compare one test's report with its baseline entry.

    ``regressed`` when the current adversarial accuracy is more than
    ``tolerance`` below the baseline, ``improved`` when it is more than
    ``tolerance`` above it, ``ok`` in between, ``missing`` when ``entry`` is
    ``None``.
    """
    tolerance = float(tolerance)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"baseline tolerance must be a number >= 0, got {tolerance!r}")
    current = report.get("adversarial_accuracy")
    if not _is_number(current):
        raise ValueError(
            f"report for {report.get('nodeid', '?')} has no numeric adversarial_accuracy to compare"
        )
    current = float(current)

    if entry is None:
        return Comparison(
            status="missing",
            baseline=None,
            current=current,
            delta=None,
            tolerance=tolerance,
            message=f"no baseline entry for this test (current adversarial accuracy {current:.3f})",
        )

    base = float(entry["adversarial_accuracy"])
    delta = current - base
    if abs(delta) < SLACK:
        delta = 0.0  # no "-0.000" in messages for float noise
    numbers = (
        f"(baseline {base:.3f} -> current {current:.3f}, "
        f"delta {delta:+.3f}, tolerance {tolerance:.3f})"
    )
    changed = _attack_change(entry, report)
    if current < base - tolerance - SLACK and changed:
        status = "attack_changed"
        message = (
            f"adversarial accuracy fell {-delta:.3f} below baseline {numbers}, "
            f"but {changed}: "
            "the fall may be the attack's, not the model's; check with attack=\"pgd\" and "
            f"save the baseline again ({SAVE_OPTION})"
        )
    elif current < base - tolerance - SLACK:
        status = "regressed"
        message = f"adversarial accuracy fell {-delta:.3f} below baseline {numbers}"
    elif current > base + tolerance + SLACK:
        status = "improved"
        message = (
            f"adversarial accuracy rose {delta:.3f} above baseline {numbers}; "
            f"save the baseline again to lock in the gain"
        )
    else:
        status = "ok"
        message = f"adversarial accuracy within tolerance of baseline {numbers}"

    mismatches = _settings_mismatches(entry, report)
    if mismatches:
        message += (
            f"; note: the baseline was recorded with other settings ({', '.join(mismatches)})"
        )
    return Comparison(
        status=status,
        baseline=base,
        current=current,
        delta=delta,
        tolerance=tolerance,
        message=message,
        mismatches=mismatches,
    )


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
    how it was trained (``mode``, ``steps``) and its strength on the probe.
    """
    if not isinstance(training, Mapping):
        return None
    probe = training.get("probe") if isinstance(training.get("probe"), Mapping) else {}
    return {
        "key": training.get("key"),
        "attack_id": training.get("attack_id"),
        "mode": training.get("trained_mode", training.get("mode")),
        "steps": training.get("steps"),
        "eval_success": training.get("eval_success"),
        "probe_gan_success": probe.get("gan_success"),
        "probe_pgd_success": probe.get("pgd_success"),
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
    old_env = dict((existing or {}).get("environment") or {})

    tests: Dict[str, Any] = {}
    pruned: List[str] = []
    for nodeid, entry in old_tests.items():
        if collected is not None and nodeid not in collected:
            pruned.append(nodeid)
        else:
            tests[nodeid] = entry

    written: List[str] = []
    for report in reports:
        nodeid = report.get("nodeid")
        if not nodeid or not _is_number(report.get("adversarial_accuracy")):
            continue
        if mode == "new" and nodeid in old_tests:
            continue
        tests[nodeid] = entry_from_report(report, environment)
        written.append(nodeid)

    written_set = set(written)
    kept = [nodeid for nodeid in tests if nodeid not in written_set]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "environment": dict(environment) if (written or existing is None) else old_env,
        "tests": tests,
    }
    text = dumps(doc)
    unchanged = existing is not None and not written and not pruned and path.is_file()
    if not unchanged:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise AdvRobustError(
                f"baseline file {path} cannot be written ({reason}); "
                f"point {BASELINE_OPTION} at a writable location"
            ) from None
    return SaveResult(
        path=path, written=sorted(set(written)), kept=sorted(kept), pruned=sorted(pruned)
    )
