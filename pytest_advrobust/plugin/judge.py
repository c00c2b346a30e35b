"""The gate: judge one robust test after its body, and compare it with the baseline.

The verdict of a test is its report's failing points (gap above threshold), the
gate checks (clean accuracy at chance), sanity flags under ``--advrobust-strict``
and, under ``--advrobust-compare``, a fall below its baseline entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from ..errors import AdvRobustWarning
from ..reports.report import build_report, failure_message, junit_properties

__all__ = ["GatePolicy", "judge"]


@dataclass(frozen=True)
class GatePolicy:
    """What the gate is asked to do in this run, read once from the options.

    ``strict``: sanity flags fail the test; ``compare``: compare with the baseline
    entry (read by ``baseline()``, once, ``None`` without a file) at
    ``baseline_path``, a test without one handled as ``missing_baseline`` says
    (``fail``, ``warn``, ``skip``); ``saving``: a baseline is saved this run;
    ``images_dir``: where pictures go (``None``: none); ``missing_package(exc)``: a
    picture needs a package that is not installed."""

    strict: bool
    compare: bool
    saving: bool
    missing_baseline: str
    baseline_path: Path
    baseline: Callable[[], Any]
    images_dir: Optional[Path] = None
    missing_package: Callable[[Exception], None] = lambda exc: None


def warn_for(item: pytest.Item, text: str) -> None:
    """An AdvRobustWarning about one robust test, at the test's own line (pytest's
    :meth:`~pytest.Item.warn`), its node id leading the text."""
    item.warn(AdvRobustWarning(f"{item.nodeid}: {text}"))


def judge(policy: GatePolicy, item: pytest.Item, outcome: Any) -> Optional[str]:
    """Build the report, attach it to the item, return a failure message or None."""
    rep = build_report(item.nodeid, outcome)
    item.config.hook.pytest_advrobust_report(report=rep, item=item)
    problems: List[str] = []
    problems += gate_checks(policy, item, outcome)
    failing = outcome.failing_points()
    if failing:
        problems.append(failure_message(rep, failing))
    for flag in rep["sanity"]:
        text = f"sanity flag {flag['flag']}: {flag['message']} {flag.get('suggests', '')}".strip()
        if policy.strict:
            problems.append(text + " (--advrobust-strict)")
        else:
            warn_for(item, text)
    if policy.compare:
        problems += compare_with_baseline(policy, item, rep, outcome)
    if policy.images_dir is not None:
        from ..reports.pictures import write_pictures

        rep["images"] = write_pictures(
            policy.images_dir, item.nodeid, outcome, rep, policy.missing_package
        )
    if problems and rep["verdict"] == "pass":
        rep["verdict"] = "fail"
    rep["failure"] = "\n".join(problems) if problems else None  # why, for the HTML cell
    item.user_properties.extend(junit_properties(rep))
    item.user_properties.append(("advrobust_report", json.dumps(rep, sort_keys=True)))
    return "\n".join(problems) if problems else None


def gate_checks(policy: GatePolicy, item: pytest.Item, outcome: Any) -> List[str]:
    """Clean accuracy at chance fails the test; a baseline saved now that cannot fall warns
    (a baseline compared with is judged from its own entry, in :func:`compare_with_baseline`)."""
    from ..gate.checks import clean_accuracy_problem, stuck_baseline_warning

    s, clean = outcome.settings, outcome.clean
    problem = clean_accuracy_problem(
        int(clean.correct.sum()),
        int(clean.correct.numel()),
        clean.num_classes,
        s.min_clean_accuracy,
        (s.model, s.data),
        labels=outcome.y.tolist(),
        predictions=clean.pred.tolist(),
    )
    if policy.saving:  # this run's numbers become the baseline
        stuck = stuck_baseline_warning(
            outcome.numbers["adversarial_accuracy"],
            clean.num_classes,
            outcome.numbers["eps"],
            s.attack_label,
        )
        if stuck:
            warn_for(item, stuck)
    return [problem] if problem else []


def compare_with_baseline(
    policy: GatePolicy, item: pytest.Item, rep: Dict[str, Any], outcome: Any
) -> List[str]:
    """Record the baseline comparison in ``rep``; the problems it raises for the verdict.
    A baseline entry at 0 or chance warns that it cannot fall (its own numbers, not this
    run's: a fall from it to chance is a regression, caught here)."""
    from ..gate.checks import stuck_baseline_warning
    from ..reports.baseline import compare

    settings = outcome.settings
    baseline = policy.baseline() or {"tests": {}}
    entry = baseline.get("tests", {}).get(item.nodeid)
    if entry and not policy.saving:  # when saving, gate_checks judges the new entry
        stuck = stuck_baseline_warning(
            entry["adversarial_accuracy"],
            outcome.clean.num_classes,
            entry.get("eps", rep["eps"]),
            entry.get("attack", rep["attack"]),
        )
        if stuck:
            warn_for(item, stuck)
    cmp = compare(entry, rep, settings.tolerance, settings.significance)
    rep["baseline"] = cmp.to_report()
    if cmp.fails:  # a fall beyond tolerance and noise never passes unnoticed
        return [cmp.message]
    if cmp.mismatches and cmp.status in ("ok", "improved", "not_significant"):
        # a weaker attack than the baseline's (fgsm for pgd, fewer steps) would pass here
        warn_for(
            item,
            f"compared with a baseline recorded with other settings "
            f"({', '.join(cmp.mismatches)}); save the baseline again with these settings "
            "(--advrobust-save-baseline) so that the comparison means something",
        )
    if cmp.status == "missing":
        text = (
            f"no baseline entry for this test in {policy.baseline_path.name}; "
            "save one with --advrobust-save-baseline"
        )
        if policy.missing_baseline == "fail":
            return [text + " (--advrobust-missing-baseline=fail)"]
        if policy.missing_baseline == "warn":
            warn_for(item, text)
        else:
            rep["baseline"]["status"] = "missing (skipped)"
    return []
