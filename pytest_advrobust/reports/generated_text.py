"""Texts of the ``generated`` evaluation: the failure line and JUnit properties (no torch)."""

from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["gap_message", "junit_extra"]


def gap_message(rep: Dict[str, Any]) -> str:
    """``generation gap 0.231 > threshold 0.100 (real 0.912 on 700 of 1000 valid real
    samples (all real 0.880) -> generated 0.681 [...] ...)``."""
    g = rep["generated"]
    lo, hi = rep["adversarial_ci"]
    rel = " (relative)" if rep.get("metric") == "relative" else ""
    ref = g["reference_accuracy"]["value"]
    return (
        f"generation gap{rel} {rep['gap']:.3f} > threshold {rep['threshold']:.3f} "
        f"(real {rep['clean_accuracy']:.3f} on {g['real_accepted']} of {rep['n']} valid "
        f"real samples (all real {g['real_accuracy_all']['value']:.3f}) -> generated "
        f"{rep['adversarial_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {g['accepted']} of "
        f"{g['drawn']} valid generated samples, valid at reference confidence >= "
        f"{g['validity']['min_confidence']:g}, reference accuracy on generated {ref:.3f})"
    )


def junit_extra(rep: Dict[str, Any]) -> List[tuple]:
    """JUnit properties that only the ``generated`` evaluation has."""
    g = rep["generated"]
    return [
        ("advrobust_generated_accepted", g["accepted"]),
        ("advrobust_generated_drawn", g["drawn"]),
        ("advrobust_acceptance_rate", g["acceptance_rate"]["value"]),
        ("advrobust_real_acceptance_rate", g["real_acceptance_rate"]["value"]),
        ("advrobust_real_accuracy_all", g["real_accuracy_all"]["value"]),
        ("advrobust_reference_accuracy", g["reference_accuracy"]["value"]),
    ]
