"""What the regression rule says: its messages, the JSON of the paired test, and the
differences (settings, attack, the model's own noise) that a message must name.

Torch-free, like :mod:`.comparison`, which decides and calls these.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..metrics.record import SampleRecord, short_id
from ..settings.parsing import is_number
from .paired import PairedTest

__all__ = [
    "SHOWN_IDS",
    "absolute_verdict",
    "attack_change",
    "generator_facts",
    "noise_note",
    "p_text",
    "paired_message",
    "sample_list",
    "samples_json",
    "settings_mismatches",
]

#: How many changed samples a message names before "and N more".
SHOWN_IDS = 5

#: Fields whose difference between baseline and current run makes the
#: comparison one of different experiments; shown in the message.
_SETTING_FIELDS = ("attack", "norm", "eps", "n", "seed")
#: Settings (of the report's ``settings``) that change the attack's strength.
_ATTACK_SETTINGS = ("steps", "step_size", "restarts", "random_start", "targets", "refine")


def p_text(p: float) -> str:
    """``p < 0.001`` or ``p = 0.012``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def sample_list(samples: Sequence[Mapping[str, Any]], total: Optional[int] = None) -> str:
    """``#12 (3fa2c1d0), #40 (91bb02e7) and 14 more``: dataset position and id."""
    shown = [f"#{s['index']} ({short_id(s['id'])})" for s in samples[:SHOWN_IDS]]
    rest = (len(samples) if total is None else total) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def _samples(positions: List[int], record: SampleRecord) -> List[Dict[str, Any]]:
    return [{"index": record.index[p], "id": record.ids[p]} for p in positions]


def samples_json(test: PairedTest, record: SampleRecord) -> Dict[str, Any]:
    """The ``paired`` field of a report's ``baseline``: the counts, the change with its
    95% interval, both one-sided p-values and every changed sample (position in the data
    fixture and id)."""
    return {
        "shared": test.shared,
        "only_baseline": test.only_baseline,
        "only_current": test.only_current,
        "newly_fooled": test.newly_fooled,
        "newly_robust": test.newly_robust,
        "baseline_accuracy": round(test.baseline_accuracy, 6),
        "current_accuracy": round(test.current_accuracy, 6),
        "delta": round(test.delta, 6),
        "delta_ci": [round(v, 6) for v in test.ci],
        "p_fall": test.p_fall,
        "p_rise": test.p_rise,
        "newly_fooled_samples": _samples(test.fooled, record),
        "newly_robust_samples": _samples(test.robust, record),
    }


def _counts(test: PairedTest, fall: bool) -> str:
    """``16 newly fooled, 0 newly robust of 512; 95% CI [0.019, 0.050], p < 0.001``."""
    lo, hi = (-test.ci[1], -test.ci[0]) if fall else test.ci
    shared = f"of {test.shared}"
    if test.only_baseline or test.only_current:
        shared += (
            f" shared samples (the data changed: {test.only_current} of this run's samples "
            f"are not in the baseline, {test.only_baseline} of the baseline's are gone)"
        )
    p = test.p_fall if fall else test.p_rise
    return (
        f"{test.newly_fooled} newly fooled, {test.newly_robust} newly robust {shared}; "
        f"95% CI [{lo:.3f}, {hi:.3f}], {p_text(p)}"
    )


def paired_message(
    status: str, test: PairedTest, record: SampleRecord, tol: float, significance: float
) -> str:
    """The sentence of a paired comparison with status ``status``."""
    fall = -test.delta
    accs = f"(baseline {test.baseline_accuracy:.3f} -> current {test.current_accuracy:.3f})"
    tail = ""
    if test.fooled:
        tail = "; newly fooled: " + sample_list(
            _samples(test.fooled[:SHOWN_IDS], record), test.newly_fooled
        )
    if status == "regressed":
        return (
            f"adversarial accuracy fell {fall:.3f} ({_counts(test, True)}) > tolerance "
            f"{tol:.3f} {accs}{tail}"
        )
    if status == "not_significant":
        return (
            f"adversarial accuracy fell {fall:.3f} ({_counts(test, True)}), more than tolerance "
            f"{tol:.3f} but not beyond noise at significance {significance:g} {accs}{tail}"
        )
    if status == "improved":
        return (
            f"adversarial accuracy rose {-fall:.3f} ({_counts(test, False)}) > tolerance "
            f"{tol:.3f} {accs}; save the baseline again to lock in the gain"
        )
    return (
        f"adversarial accuracy within tolerance {tol:.3f} of baseline, change "
        f"{test.delta:+.3f} ({_counts(test, test.delta <= 0)}) {accs}{tail}"
    )


def absolute_verdict(
    base: float, current: float, delta: float, tol: float, slack: float
) -> Tuple[str, str]:
    """``(status, message)`` of the absolute rule: the two accuracies against the tolerance."""
    numbers = (
        f"(baseline {base:.3f} -> current {current:.3f}, delta {delta:+.3f}, tolerance {tol:.3f})"
    )
    if current < base - tol - slack:
        return "regressed", f"adversarial accuracy fell {-delta:.3f} below baseline {numbers}"
    if current > base + tol + slack:
        return "improved", (
            f"adversarial accuracy rose {delta:.3f} above baseline {numbers}; "
            "save the baseline again to lock in the gain"
        )
    return "ok", f"adversarial accuracy within tolerance of baseline {numbers}"


def settings_mismatches(entry: Mapping[str, Any], report: Mapping[str, Any]) -> List[str]:
    """Settings that differ between the baseline entry and the report (``"eps 0.1 -> 0.2"``)."""
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
            out.append(f"{key} {_setting(old)} -> {_setting(new)}")
    old_s, new_s = entry.get("settings") or {}, report.get("settings") or {}
    for key in _ATTACK_SETTINGS:  # what makes the attack stronger or weaker
        if key in old_s and key in new_s and old_s[key] != new_s[key]:
            out.append(f"{key} {old_s[key]} -> {new_s[key]}")
    return out


def _setting(value: Any) -> str:
    """A setting as the tables show it: a float to 6 significant digits (``0.0313725``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


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


def attack_change(entry: Mapping[str, Any], report: Mapping[str, Any]) -> Optional[str]:
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


def noise_note(sanity: Any) -> Optional[str]:
    """When the sanity checks found the model random in eval mode: a clause naming its own
    spread, measured by the checks' repeated forward pass; else ``None``."""
    flags = [f for f in sanity or () if isinstance(f, Mapping)]
    flag = next((f for f in flags if f.get("flag") == "nondeterministic"), None)
    if flag is None:
        return None
    changed, checked = flag.get("changed"), flag.get("checked")
    spread = ""
    if is_number(changed) and is_number(checked) and checked:
        spread = (
            f": two forward passes over the same {int(checked)} inputs changed "
            f"{int(changed)} predictions ({changed / checked:.1%})"
        )
    return (
        f"the model is random in eval mode (sanity flag nondeterministic{spread}), so the "
        "difference may be the model's own noise rather than the commit; make evaluation "
        "deterministic (eval mode without dropout or noise) before trusting the gate"
    )
