"""Clean vs adversarial metrics: accuracies with intervals, the gap, losses, per class.

Everything is computed from per-sample predictions and losses, so that the
worst case over several attacks is a per-sample choice and the summary
numbers follow from it deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from ..errors import AdvRobustError
from ..geometry import takes_over
from ..inputs.model import check_logits
from .intervals import wilson_interval

__all__ = [
    "Predictions",
    "accuracy_numbers",
    "gap_of",
    "margins",
    "merge_worst_case",
    "predict",
    "summarize",
    "wilson_interval",
]


@dataclass
class Predictions:
    """Per-sample predictions and cross-entropy losses (CPU tensors)."""

    pred: torch.Tensor
    loss: torch.Tensor
    correct: torch.Tensor
    num_classes: int


def predict(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    fixture: str = "robust_model",
    data: str = "robust_data",
) -> Predictions:
    """Run ``model`` on ``x`` in batches; check its logits; return predictions.

    ``fixture`` and ``data``: the model's and the data's fixture names, for the error
    raised (:class:`AdvRobustError`) when a label has no logit of its own."""
    preds, losses = [], []
    num_classes = None
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = check_logits(model(xb), xb.shape[0], fixture).float()
            if num_classes is None:
                num_classes = logits.shape[1]
            if int(yb.max()) >= logits.shape[1]:
                k = logits.shape[1]
                raise AdvRobustError(
                    f"fixture {data!r} has label {int(yb.max())}, but the model from fixture "
                    f"{fixture!r} gives {k} logits, so labels must lie in 0..{k - 1}: number "
                    "the classes from 0, or give the model an output for every class"
                )
            preds.append(logits.argmax(dim=1).cpu())
            losses.append(F.cross_entropy(logits, yb, reduction="none").cpu())
    pred = torch.cat(preds)
    return Predictions(
        pred=pred,
        loss=torch.cat(losses).double(),
        correct=pred == y.cpu(),
        num_classes=int(num_classes or 0),
    )


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample (float32, shape (n,)); negative: fooled."""
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], -float("inf")).amax(dim=1)
    return zy - other


def merge_worst_case(
    results: List[Tuple[torch.Tensor, Predictions]],
) -> Tuple[torch.Tensor, Predictions]:
    """Per sample, the first attack that fools the model, else the highest loss
    (:func:`~pytest_advrobust.geometry.takes_over`, the rule every attack keeps too)."""
    x_best, best = results[0]
    x_best = x_best.clone()
    pred, loss, correct = best.pred.clone(), best.loss.clone(), best.correct.clone()
    for x_adv, p in results[1:]:
        take = takes_over(~correct, loss, ~p.correct, p.loss)
        take_dev = take.to(x_best.device)
        x_best[take_dev] = x_adv[take_dev]
        pred[take], loss[take], correct[take] = p.pred[take], p.loss[take], p.correct[take]
    return x_best, Predictions(pred=pred, loss=loss, correct=correct, num_classes=best.num_classes)


def gap_of(clean: float, adv: float, metric: str) -> float:
    if metric == "relative":
        return (clean - adv) / clean if clean > 0 else 0.0
    return clean - adv


def accuracy_numbers(
    correct: Tuple[int, int],
    counts: Tuple[int, int],
    losses: Tuple[float, float],
    metric: str,
) -> Dict:
    """Clean and adversarial accuracy (Wilson 95% intervals), their gap under ``metric``,
    and the mean losses, from ``correct = (k_clean, k_adv)`` of ``counts = (n_clean,
    n_adv)`` samples and ``losses = (clean_loss, adv_loss)``."""
    (k_clean, k_adv), (n_clean, n_adv), (clean_loss, adv_loss) = correct, counts, losses
    clean_acc, adv_acc = k_clean / n_clean, k_adv / n_adv
    return {
        "clean_accuracy": clean_acc,
        "clean_ci": list(wilson_interval(k_clean, n_clean)),
        "adversarial_accuracy": adv_acc,
        "adversarial_ci": list(wilson_interval(k_adv, n_adv)),
        "gap": gap_of(clean_acc, adv_acc, metric),
        "clean_loss": clean_loss,
        "adversarial_loss": adv_loss,
        "loss_gap": adv_loss - clean_loss,
    }


def summarize(y: torch.Tensor, clean: Predictions, adv: Predictions, metric: str) -> Dict:
    """The numeric part of the report for one eps."""
    n = int(y.shape[0])
    correct = (int(clean.correct.sum()), int(adv.correct.sum()))
    per_class: Dict[str, float] = {}
    yc = y.cpu()
    for c in sorted(set(yc.tolist())):
        mask = yc == c
        per_class[str(c)] = round(float(adv.correct[mask].double().mean()), 6)
    was_right = clean.correct
    success = float((was_right & ~adv.correct).sum()) / max(1, int(was_right.sum()))
    losses = (float(clean.loss.mean()), float(adv.loss.mean()))
    return {
        "n": n,
        **accuracy_numbers(correct, (n, n), losses, metric),
        "per_class": per_class,
        "attack_success_rate": success,
    }
