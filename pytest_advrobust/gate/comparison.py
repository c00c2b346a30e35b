"""The regression rule: one test's evaluation against its baseline entry.

When both carry per-sample verdicts (:mod:`pytest_advrobust.metrics.record`), the rule is paired: on
the samples both evaluated, the fall of adversarial accuracy counts the samples the
model newly lost (newly fooled) against those it newly won (newly robust), and a test
fails when that fall exceeds the tolerance **and** the one-sided exact test on the
discordant samples says it is real at the chosen significance (:mod:`.paired`). The
message gives every number, for example::

    adversarial accuracy fell 0.031 (16 newly fooled, 0 newly robust of 512; 95% CI
    [0.019, 0.050], p < 0.001) > tolerance 0.020 (baseline 0.750 -> current 0.719);
    newly fooled: #12 (3fa2c1d0), ...

A baseline entry without per-sample verdicts (written before they were kept), or a
run without them (``attack="generated"``), is judged by the absolute rule (the fall of
the two accuracies against the tolerance) and the message says so. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..metrics.record import decode
from ..settings.parsing import is_number
from .comparison_text import (
    absolute_verdict,
    attack_change,
    noise_note,
    paired_message,
    samples_json,
    settings_mismatches,
)
from .paired import PairedTest, paired_test

__all__ = ["DEFAULT_SIGNIFICANCE", "FAILING", "SLACK", "Comparison", "compare"]

#: Slack added to the tolerance so that float noise never flips a verdict.
SLACK = 1e-9
#: The paired test's default significance level (one-sided).
DEFAULT_SIGNIFICANCE = 0.05
#: Statuses that fail the test: a fall beyond tolerance and noise never passes unnoticed.
FAILING = ("regressed", "attack_changed", "nondeterministic")


@dataclass(frozen=True)
class Comparison:
    """One test's adversarial accuracy against its baseline entry.

    ``status``: ``"ok"``, ``"regressed"``, ``"improved"``, ``"not_significant"`` (a fall
    beyond the tolerance that the paired test does not find beyond noise),
    ``"attack_changed"`` (the GAN attack, or the eps, norm, attack or a setting that
    makes the attack stronger or weaker, is not the baseline's), ``"nondeterministic"``
    (the model is random in eval mode) or ``"missing"``. ``rule`` is ``"paired"`` or
    ``"absolute"`` (``None`` when missing); ``delta`` is ``current - baseline`` (on the
    shared samples under the paired rule); ``paired`` is the JSON form of the paired
    test, ``None`` under the absolute rule, when ``note`` says why. ``mismatches`` lists
    settings that differ from the baseline's.
    """

    status: str
    baseline: Optional[float]
    current: float
    delta: Optional[float]
    tolerance: float
    message: str
    mismatches: List[str] = field(default_factory=list)
    rule: Optional[str] = "absolute"
    significance: float = DEFAULT_SIGNIFICANCE
    paired: Optional[Dict[str, Any]] = None
    note: Optional[str] = None  # why the absolute rule judged it

    @property
    def regressed(self) -> bool:
        return self.status == "regressed"

    @property
    def fails(self) -> bool:
        """Whether this comparison fails the test."""
        return self.status in FAILING

    def to_report(self) -> Dict[str, Any]:
        """The ``baseline`` field of the report dict."""
        return {
            "adversarial_accuracy": self.baseline,
            "delta": self.delta,
            "tolerance": self.tolerance,
            "status": self.status,
            "rule": self.rule,
            "significance": self.significance,
            "paired": self.paired,
            "note": self.note,
        }


def _records(entry: Mapping[str, Any], report: Mapping[str, Any]) -> Tuple[Any, Any, str]:
    """The two per-sample records, or ``None``s and why the absolute rule applies."""
    try:
        old = decode(entry.get("samples"))
    except ValueError as exc:
        return None, None, f"the baseline entry's per-sample record is unusable ({exc})"
    try:
        new = decode(report.get("samples"))
    except ValueError as exc:
        return None, None, f"this run's per-sample record is unusable ({exc})"
    if old is None:
        return (
            None,
            None,
            (
                "the baseline entry has no per-sample verdicts (it was saved by an older "
                "version); save the baseline again to compare sample by sample"
            ),
        )
    if new is None:
        return None, None, "this run has no per-sample verdicts to pair with the baseline's"
    return old, new, ""


def _paired_status(test: PairedTest, tol: float, significance: float) -> str:
    fall = -test.delta
    if fall > tol + SLACK:
        return "regressed" if test.p_fall < significance else "not_significant"
    if -fall > tol + SLACK and test.p_rise < significance:
        return "improved"
    return "ok"


def _checked(tolerance: float, significance: float, report: Mapping[str, Any]) -> float:
    tolerance = float(tolerance)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"baseline tolerance must be a number >= 0, got {tolerance!r}")
    if not 0 < float(significance) < 1:
        raise ValueError(f"significance must lie in (0, 1), got {significance!r}")
    current = report.get("adversarial_accuracy")
    if not is_number(current):
        raise ValueError(
            f"report for {report.get('nodeid', '?')} has no numeric adversarial_accuracy to compare"
        )
    return float(current)


def compare(
    entry: Optional[Mapping[str, Any]],
    report: Mapping[str, Any],
    tolerance: float,
    significance: float = DEFAULT_SIGNIFICANCE,
) -> Comparison:
    """Compare one test's report with its baseline entry (``None``: there is none).

    Paired when both carry per-sample verdicts that share samples, else absolute (see
    the module docstring); ``attack_changed`` or ``nondeterministic`` replace
    ``regressed`` when the GAN attack or the settings changed, or the model is random in
    eval mode.
    Raises :class:`ValueError` for a negative tolerance, a significance outside
    (0, 1) or a report without a numeric adversarial accuracy.
    """
    current = _checked(tolerance, significance, report)
    tolerance, significance = float(tolerance), float(significance)
    if entry is None:
        message = f"no baseline entry for this test (current adversarial accuracy {current:.3f})"
        return Comparison("missing", None, current, None, tolerance, message, [], None)
    base = float(entry["adversarial_accuracy"])
    old, new, why = _records(entry, report)
    test = paired_test(old, new) if old is not None else None
    if test is not None and test.shared == 0:
        why, test = "no sample of this run is in the baseline's evaluation set", None
    if test is not None:
        status = _paired_status(test, tolerance, significance)
        message = paired_message(status, test, new, tolerance, significance)
        delta, rule, paired = round(test.delta, 9), "paired", samples_json(test, new)
        paired["significance"] = significance
    else:
        delta = current - base if abs(current - base) >= SLACK else 0.0
        status, message = absolute_verdict(base, current, delta, tolerance, SLACK)
        message += f"; judged by the absolute rule: {why}"
        rule, paired = "absolute", None
    note = None if rule == "paired" else why
    mismatches = settings_mismatches(entry, report)
    status, message = _blame(status, message, entry, report, mismatches)
    return Comparison(
        status,
        base,
        current,
        delta,
        tolerance,
        message,
        mismatches,
        rule,
        significance,
        paired,
        note,
    )


def _blame(
    status: str,
    message: str,
    entry: Mapping[str, Any],
    report: Mapping[str, Any],
    mismatches: List[str],
) -> Tuple[str, str]:
    """A fall that the attack, its settings (``mismatches``: other eps, norm, attack or
    steps) or the model's own noise may explain says so; other settings are noted."""
    other = f"the baseline was recorded with other settings ({', '.join(mismatches)})"
    if status != "regressed":
        return status, f"{message}; note: {other}" if mismatches else message
    if mismatches:
        return "attack_changed", (
            f"{message}; but {other}: the fall may be the settings', not the model's; "
            "save the baseline again with these settings (--advrobust-save-baseline)"
        )
    changed = attack_change(entry, report)
    if changed:
        return "attack_changed", (
            f"{message}; but {changed}: the fall may be the attack's, not the model's; "
            'check with attack="pgd" and save the baseline again (--advrobust-save-baseline)'
        )
    noise = noise_note(report.get("sanity"))
    if noise:
        return "nondeterministic", f"{message}; but {noise}"
    return status, message
