"""The sanity flags' ids, their thresholds, and the small helpers every check uses."""

from __future__ import annotations

from typing import Callable

import torch

FLAG_PROBABILITIES = "probabilities"
FLAG_GRADIENTS = "gradients"
FLAG_NONDETERMINISTIC = "nondeterministic"
FLAG_ADV_ABOVE_CLEAN = "adv_above_clean"
FLAG_CURVE_NOT_MONOTONE = "curve_not_monotone"
FLAG_WEAK_BEATS_STRONG = "weak_beats_strong"
FLAG_LARGE_EPS = "large_eps"
FLAG_NOT_CONVERGED = "not_converged"
FLAG_GAN_WEAKER = "gan_weaker_than_reference"
FLAG_STATEFUL = "stateful"
FLAG_BATCH_DEPENDENT = "batch_dependent"

CHEAP_FLAGS = (
    FLAG_PROBABILITIES,
    FLAG_GRADIENTS,
    FLAG_NONDETERMINISTIC,
    FLAG_ADV_ABOVE_CLEAN,
    FLAG_CURVE_NOT_MONOTONE,
    FLAG_GAN_WEAKER,
    FLAG_STATEFUL,
    FLAG_BATCH_DEPENDENT,
)
FULL_FLAGS = (FLAG_WEAK_BEATS_STRONG, FLAG_LARGE_EPS, FLAG_NOT_CONVERGED)
ALL_FLAGS = CHEAP_FLAGS + FULL_FLAGS

#: Accepted ``level`` values; ``"off"`` runs nothing.
LEVELS = ("off", "cheap", "full")

#: Most samples any per-sample check looks at.
SUB_BATCH = 128
#: Tolerance on "rows sum to 1" and "log-sum-exp is 0".
PROB_TOL = 1e-3
#: Share of samples with an all-zero input gradient above which ``gradients`` fires.
ZERO_GRAD_SHARE = 0.5
#: Outputs of two identical forward passes may differ by ``atol + rtol * |out|``.
DETERMINISM_TOL = 1e-5
#: Outputs of one sample in batches of different sizes may differ by ``tol * (1 + max |out|)``
#: of its row: kernels chosen by batch size (TF32 on a GPU, float16) round differently, while
#: batch statistics move logits by far more.
BATCH_TOL = 5e-3
#: The small batch size the ``batch_dependent`` check compares with one whole batch.
SMALL_BATCH = 8
#: Accuracy differences (and curve rises) at or below this are noise.
ACC_TOL = 0.01
#: Multiplier on eps for the large-eps check when inputs are unbounded.
LARGE_EPS_FACTOR = 100.0
#: Fewest PGD steps the large-eps check uses.
LARGE_EPS_MIN_STEPS = 10


def make_flag(flag: str, message: str, suggests: str) -> dict:
    return {"flag": flag, "message": message, "suggests": suggests, "level": "warning"}


def pct(v: float) -> str:
    return f"{100.0 * v:.1f}%"


def sub_indices(n: int, device) -> torch.Tensor:
    """Evenly spread, deterministic indices of at most SUB_BATCH samples."""
    k = min(n, SUB_BATCH)
    if k == n:
        return torch.arange(n, device=device)
    return torch.linspace(0, n - 1, steps=k, dtype=torch.float64).round().long().to(device)


def tolerance(n: int) -> float:
    """More than one point and more than one sample."""
    return max(ACC_TOL, 1.0 / max(n, 1))


@torch.no_grad()
def predict_labels(model: Callable, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    preds = []
    step = max(1, int(batch_size))
    for start in range(0, x.shape[0], step):
        preds.append(model(x[start : start + step]).argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    if x.shape[0] == 0:
        return float("nan")
    return float((predict_labels(model, x, batch_size) == y).float().mean().item())
