"""Checks on a finished evaluation that no threshold can express.

* A gate must not pass a model that had nothing to lose: when clean accuracy
  is not clearly above chance, the gap is about 0 and every threshold passes.
  :func:`clean_accuracy_problem` fails such a test, or, when the user set
  ``min_clean_accuracy``, applies that floor instead. Chance is what a model
  that ignores its input scores on these samples: always predicting the most
  frequent label (on imbalanced data far above ``1/classes``: 0.69 when 69% of
  the labels are one class). Guessing with the model's own prediction
  frequencies scores ``sum_c p_c q_c`` (label share ``p_c``, prediction share
  ``q_c``), never more than the majority share, so the majority share is the
  floor and the other figure is named beside it. The lower end of the 95%
  Wilson interval of the clean accuracy must lie above the floor.
* A baseline entry at 0 or at chance can never fall, so comparing against it
  can never catch a regression: :func:`stuck_baseline_warning` says so.

Works on the numbers of an evaluation (counts, class count), not on tensors.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence, Tuple

from ..metrics.intervals import wilson_interval

__all__ = ["chance_levels", "clean_accuracy_problem", "stuck_baseline_warning"]


def chance_levels(labels: Sequence[int], predictions: Sequence[int]) -> Tuple[int, float, float]:
    """``(majority class, its share of the labels, the accuracy of guessing with the
    prediction frequencies)`` of one evaluation's labels and clean predictions."""
    n = len(labels)
    if n == 0:
        return 0, 0.0, 0.0
    label_counts, pred_counts = Counter(labels), Counter(predictions)
    majority, top = min(label_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    guess = sum(count * pred_counts.get(c, 0) for c, count in label_counts.items()) / (n * n)
    return int(majority), top / n, guess


def clean_accuracy_problem(
    correct: int,
    n: int,
    num_classes: int,
    min_clean_accuracy: Optional[float],
    fixtures: Tuple[str, str],
    labels: Sequence[int] = (),
    predictions: Sequence[int] = (),
) -> Optional[str]:
    """One sentence when clean accuracy (``correct`` of ``n``) fails its floor, else None.

    ``fixtures``: the names of the model's and the data's fixtures, for the sentence.

    Without ``min_clean_accuracy`` the floor is chance (see the module docstring):
    the share of the most frequent of ``labels`` (``1 / num_classes`` when no labels
    are given), and the lower end of the 95% Wilson interval must lie above it.
    ``predictions`` (the clean predictions, in the order of ``labels``) give the
    second chance figure the sentence names. With ``min_clean_accuracy``, the clean
    accuracy itself must reach it (0 switches the check off).
    """
    if n <= 0:
        return None
    model, data = fixtures
    acc = correct / n
    if min_clean_accuracy is not None:
        if acc + 1e-12 >= min_clean_accuracy:
            return None
        return (
            f"clean accuracy {acc:.3f} (n={n}) of the model from fixture {model!r} on "
            f"fixture {data!r} is below min_clean_accuracy={min_clean_accuracy:g}: "
            "the robustness gap of a model that is not accurate means little"
        )
    lo, hi = wilson_interval(correct, n)
    if len(labels):
        majority, share, guess = chance_levels(list(labels), list(predictions))
        chance = max(share, guess)
        why = (
            f"{chance:.3f}: always predicting the most frequent label, {majority}, scores "
            f"{share:.3f} on these {n} samples, and guessing with the model's own prediction "
            f"frequencies {guess:.3f}"
        )
    else:
        chance = 1.0 / max(2, int(num_classes))
        why = f"{chance:.3f} for {num_classes} classes"
    if lo > chance:
        return None
    return (
        f"clean accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}] (n={n}) of the model from fixture "
        f"{model!r} on fixture {data!r} is not clearly above chance ({why}), so there is "
        "nothing for an attack to take and every threshold would pass; check the labels, "
        "the model fixture and what the data fixture yields, or set min_clean_accuracy=... "
        "(0 switches this check off)"
    )


def stuck_baseline_warning(
    adversarial_accuracy: float, num_classes: int, eps: float, attack: str
) -> Optional[str]:
    """A warning when a baseline entry's adversarial accuracy is at 0 or at chance."""
    chance = 1.0 / max(2, int(num_classes))
    if adversarial_accuracy > chance + 1e-12:
        return None
    where = "0" if adversarial_accuracy <= 0 else f"chance for {num_classes} classes ({chance:.3f})"
    return (
        f"the baseline's adversarial accuracy {adversarial_accuracy:.3f} under {attack} at "
        f"eps={eps:g} is at {where}, so it can never fall and --advrobust-compare can "
        "never catch a regression here; use a smaller eps or an eps sweep "
        "(eps=[...]) whose smaller values leave the model some accuracy"
    )
