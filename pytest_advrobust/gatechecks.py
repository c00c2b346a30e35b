"""Checks on a finished evaluation that no threshold can express.

* A gate must not pass a model that had nothing to lose: when clean accuracy
  is not clearly above chance, the gap is about 0 and every threshold passes.
  :func:`clean_accuracy_problem` fails such a test (chance is ``1/classes``,
  judged with the 95% Wilson interval of the clean accuracy), or, when the
  user set ``min_clean_accuracy``, applies that floor instead.
* A baseline entry at 0 or at chance can never fall, so comparing against it
  can never catch a regression: :func:`stuck_baseline_warning` says so.

Works on the numbers of an evaluation (counts, class count), not on tensors.
"""

from __future__ import annotations

from typing import Optional

from .metrics import wilson_interval

__all__ = ["clean_accuracy_problem", "stuck_baseline_warning"]


def clean_accuracy_problem(
    correct: int,
    n: int,
    num_classes: int,
    min_clean_accuracy: Optional[float],
    model: str,
    data: str,
) -> Optional[str]:
    """One sentence when clean accuracy (``correct`` of ``n``) fails its floor, else None.

    Without ``min_clean_accuracy`` the floor is chance, ``1 / num_classes``: the
    lower end of the 95% Wilson interval must lie above it. With it, the clean
    accuracy itself must reach ``min_clean_accuracy`` (0 switches the check off).
    """
    if n <= 0:
        return None
    acc = correct / n
    if min_clean_accuracy is not None:
        if acc + 1e-12 >= min_clean_accuracy:
            return None
        return (
            f"clean accuracy {acc:.3f} (n={n}) of the model from fixture {model!r} on "
            f"fixture {data!r} is below min_clean_accuracy={min_clean_accuracy:g}: "
            "the robustness gap of a model that is not accurate means little"
        )
    chance = 1.0 / max(2, int(num_classes))
    lo, hi = wilson_interval(correct, n)
    if lo > chance:
        return None
    return (
        f"clean accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}] (n={n}) of the model from fixture "
        f"{model!r} on fixture {data!r} is not clearly above chance ({chance:.3f} for "
        f"{num_classes} classes), so there is nothing for an attack to take and every "
        "threshold would pass; check the labels, the model fixture and what the data "
        "fixture yields, or set min_clean_accuracy=... (0 switches this check off)"
    )


def stuck_baseline_warning(
    adversarial_accuracy: float, num_classes: int, eps: float, attack: str
) -> Optional[str]:
    """A warning when a baseline entry's adversarial accuracy is at 0 or at chance."""
    chance = 1.0 / max(2, int(num_classes))
    if adversarial_accuracy > chance + 1e-12:
        return None
    where = "0" if adversarial_accuracy <= 0 else f"chance ({chance:.3f})"
    return (
        f"the baseline's adversarial accuracy {adversarial_accuracy:.3f} under {attack} at "
        f"eps={eps:g} is at {where}, so it can never fall and --advrobust-compare can "
        "never catch a regression here; use a smaller eps or an eps sweep "
        "(eps=[...]) whose smaller values leave the model some accuracy"
    )
