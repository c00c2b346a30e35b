"""Reports: the per-test report dict, the failure line, the terminal table and the JSON file.

This module does not import torch; it works on plain dicts so that the
controller of an xdist run can render what its workers measured.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from .tables import counted, text_table

SCHEMA_VERSION = 1

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "build_report",
    "eps_cell",
    "failure_message",
    "fmt3",
    "point_message",
    "summary_lines",
    "write_json_report",
    "atomic_write_text",
    "baseline_text",
    "junit_properties",
    "number_cells",
]


def _r(v: Optional[float], nd: int = 6) -> Optional[float]:
    return None if v is None else round(float(v), nd)


def build_report(nodeid: str, outcome: Any) -> Dict[str, Any]:
    """A JSON-able report of one evaluation (see README, "JSON report")."""
    s = outcome.settings
    num = outcome.numbers
    failing = outcome.failing_points()
    rep: Dict[str, Any] = {
        "nodeid": nodeid,
        "attack": s.attack_label,
        "attacks": list(s.attacks),
        "norm": s.norm,
        "eps": num["eps"],
        "n": num["n"],
        "seed": s.seed,
        "metric": s.metric,
        "threshold": s.threshold,
        "device": outcome.device,
        "settings": s.to_dict(),
        "clean_accuracy": _r(num["clean_accuracy"]),
        "clean_ci": [_r(v) for v in num["clean_ci"]],
        "adversarial_accuracy": _r(num["adversarial_accuracy"]),
        "adversarial_ci": [_r(v) for v in num["adversarial_ci"]],
        "gap": _r(num["gap"]),
        "clean_loss": _r(num["clean_loss"]),
        "adversarial_loss": _r(num["adversarial_loss"]),
        "loss_gap": _r(num["loss_gap"]),
        "per_class": num["per_class"],
        "attack_success_rate": _r(num["attack_success_rate"]),
        "training": outcome.training,
        "gan": getattr(outcome, "gan", None),
        "cost": dict(getattr(outcome, "cost", None) or {}),
        "sanity": list(outcome.sanity),
        "curve": [_curve_point(p, outcome) for p in outcome.curve] if outcome.curve else None,
        "baseline": None,
        "verdict": "fail" if failing else "pass",
        "samples": outcome.sample_record(),
        "reused": bool(getattr(outcome, "reused", False)),
    }
    if getattr(outcome, "generated", None) is not None:  # attack="generated"
        rep["generated"] = outcome.generated
    return rep


def _curve_point(point: Dict[str, Any], outcome: Any) -> Dict[str, Any]:
    """A sweep point with ``judged`` (the threshold applies at its eps) and ``passed``
    (its verdict; ``None`` where it is not judged)."""
    at = outcome.settings.threshold_eps
    judged = at is None or abs(float(point["eps"]) - float(at)) <= 1e-12 * max(1.0, abs(at))
    return dict(point, judged=judged, passed=outcome.verdict_at(point) if judged else None)


def eps_cell(rep: Dict[str, Any]) -> str:
    """The eps a row's numbers are for; a sweep also lists its other eps."""
    if rep.get("eps") is None:  # attack="generated" has no eps
        return "-"
    if not rep.get("curve"):
        return f"{rep['eps']:g}"
    others = ",".join(f"{p['eps']:g}" for p in rep["curve"])
    return f"{rep['eps']:g} (sweep {others})"


def point_message(rep: Dict[str, Any], point: Dict[str, Any]) -> str:
    """``robustness gap 0.231 > threshold 0.100 (clean ... n=512, gan linf eps=0.1)``."""
    if rep.get("generated") is not None:
        from .generated_text import gap_message

        return gap_message(rep)
    lo, hi = point["adversarial_ci"]
    rel = " (relative)" if rep.get("metric") == "relative" else ""
    return (
        f"robustness gap{rel} {point['gap']:.3f} > threshold {rep['threshold']:.3f} "
        f"(clean {point['clean_accuracy']:.3f} -> adversarial "
        f"{point['adversarial_accuracy']:.3f} [{lo:.3f}, {hi:.3f}], n={rep['n']}, "
        f"{rep['attack']} {rep['norm']} eps={point['eps']:g})"
    )


def failure_message(rep: Dict[str, Any], failing: Iterable[Dict[str, Any]]) -> str:
    lines = [point_message(rep, p) for p in failing]
    return "\n".join(lines)


def junit_properties(rep: Dict[str, Any]) -> List[tuple]:
    """Flat properties for JUnit XML (the full report travels as JSON too)."""
    props = [
        ("advrobust_attack", rep["attack"]),
        ("advrobust_eps", rep["eps"]),
        ("advrobust_n", rep["n"]),
        ("advrobust_clean_accuracy", rep["clean_accuracy"]),
        ("advrobust_adversarial_accuracy", rep["adversarial_accuracy"]),
        ("advrobust_gap", rep["gap"]),
        ("advrobust_threshold", rep["threshold"]),
        ("advrobust_verdict", rep["verdict"]),
    ]
    if rep.get("training"):
        props.append(("advrobust_generator", rep["training"].get("mode")))
    if rep.get("generated"):
        from .generated_text import junit_extra

        props += junit_extra(rep)
    return props


#: The columns the terminal table and the Markdown summary share, in their order.
COLUMNS = ("test", "attack", "eps", "n", "clean", "adversarial [95% CI]", "gap", "threshold")


def fmt3(v: Optional[float]) -> str:
    """A number with three decimals, ``-`` for none."""
    return "-" if v is None else f"{float(v):.3f}"


def number_cells(rep: Dict[str, Any]) -> List[str]:
    """The cells of :data:`COLUMNS` from ``eps`` to ``threshold`` that the terminal table
    and the Markdown summary share: eps, n, clean, adversarial with its interval, the gap
    (marked when relative) and the threshold."""
    lo, hi = rep["adversarial_ci"]
    return [
        eps_cell(rep),
        str(rep["n"]),
        fmt3(rep["clean_accuracy"]),
        f"{fmt3(rep['adversarial_accuracy'])} [{fmt3(lo)}, {fmt3(hi)}]",
        fmt3(rep["gap"]) + (" (relative)" if rep.get("metric") == "relative" else ""),
        fmt3(rep["threshold"]),
    ]


def summary_lines(reports: List[Dict[str, Any]]) -> List[str]:
    """Rows of the terminal summary, one per robust test, in node id order."""
    rows = [[*COLUMNS, "baseline", "verdict", "generator"]]
    for rep in sorted(reports, key=lambda r: r["nodeid"]):
        btxt = baseline_text(rep.get("baseline"))
        gen = _generator_cell(rep.get("training")) + _saved_text(rep.get("gan"))
        flags = f" ({counted(len(rep['sanity']), 'flag')})" if rep.get("sanity") else ""
        flags += ", reused" if rep.get("reused") else ""
        what = rep["attack"] + " " + rep["norm"]
        if rep.get("generated"):
            what = f"generated {rep['generated']['accepted']}/{rep['generated']['drawn']} valid"
        rows.append(
            [
                rep["nodeid"],
                what,
                *number_cells(rep),
                btxt,
                rep["verdict"].upper() + flags,
                gen,
            ]
        )
    return text_table(rows, rule=True)


#: How a comparison's status reads after its delta (``ok`` says nothing).
_STATUS_WORDS = {
    "regressed": "REGRESSED",
    "attack_changed": "ATTACK CHANGED",
    "nondeterministic": "NOISY MODEL",
    "not_significant": "within noise",
    "improved": "improved",
}


def baseline_text(base: Optional[Dict[str, Any]]) -> str:
    """``-0.031 (16 fooled, 0 robust) REGRESSED``: the comparison with the baseline in one
    cell (the paired counts when the paired rule judged it); ``-`` without one."""
    base = base or {}
    if base.get("delta") is None:
        return str(base.get("status") or "-")
    text = f"{base['delta']:+.3f}"
    paired = base.get("paired")
    if isinstance(paired, dict):
        text += f" ({paired['newly_fooled']} fooled, {paired['newly_robust']} robust)"
    elif base.get("rule") == "absolute":
        text += " (absolute rule)"
    word = _STATUS_WORDS.get(str(base.get("status")))
    return f"{text} {word}" if word else text


def _generator_cell(tr: Optional[Dict[str, Any]]) -> str:
    """``cold 600 steps 53.2s`` or ``cached (cold 600 steps 53.2s), kept``: how the
    generator was obtained, and whether a reused one was kept or retrained."""
    if not tr:
        return "-"
    mode = str(tr.get("mode", "?"))
    trained = f"{tr.get('steps', 0)} steps {float(tr.get('seconds', 0) or 0):.1f}s"
    cache = f", {tr['cache']}" if tr.get("cache") else ""
    reuse = tr.get("reuse") if isinstance(tr.get("reuse"), dict) else {}
    decision = reuse.get("decision")
    said = f", {decision}" if decision in ("kept", "retrained") else ""
    if mode in ("cached", "memory"):
        if tr.get("trained_mode"):
            return f"{mode} ({tr['trained_mode']} {trained}){cache}{said}"
        return mode + cache + said
    out = f"{mode} {trained}{cache}"
    return out + " CUT SHORT" if tr.get("cut_short") else out


def _saved_text(gan: Optional[Dict[str, Any]]) -> str:
    """``; start saved 64% passes, +0.0 pts vs clean start on 32``: what the generator's
    start saved (``cost`` when it added passes) and its robust accuracy minus the clean
    start's, on the strength check's control of ``n`` samples, as a suffix of the generator
    cell; empty without a control."""
    check = (gan or {}).get("strength_check") or {}
    control = check.get("control") or {}
    if not control.get("n"):
        return ""
    saved = float(control.get("passes_saved") or 0.0)
    word = "saved" if saved >= 0 else "cost"
    acc = control["generator_start"]["robust_accuracy"] - control["clean_start"]["robust_accuracy"]
    n = int(control["n"])
    return f"; start {word} {abs(saved):.0%} passes, {acc * 100:+.1f} pts vs clean start on {n}"


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder.

    The file appears whole or not at all; an existing file keeps its
    permissions; nothing is left behind on failure.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _strict(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json_report(
    path: Path, reports: List[Dict[str, Any]], environment: Dict[str, Any], plugin_version: str
) -> Path:
    """Write the JSON report: strict JSON (an unknown number, such as the held-out success of
    a warm-started generator, is ``null``), written atomically."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "plugin_version": plugin_version,
        "environment": environment,
        "tests": sorted(reports, key=lambda r: r["nodeid"]),
    }
    text = json.dumps(_strict(doc), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(Path(path), text + "\n")
