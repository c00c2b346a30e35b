"""The cheap sanity checks: outputs that look like probabilities, missing or masked input
gradients, a model that is random in eval mode, an attack that helps, a rising curve."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .flags import (
    ACC_TOL,
    DETERMINISM_TOL,
    FLAG_ADV_ABOVE_CLEAN,
    FLAG_CURVE_NOT_MONOTONE,
    FLAG_GRADIENTS,
    FLAG_NONDETERMINISTIC,
    FLAG_PROBABILITIES,
    PROB_TOL,
    ZERO_GRAD_SHARE,
    make_flag,
    pct,
    predict_labels,
    tolerance,
)


def check_probabilities(out: torch.Tensor) -> Optional[dict]:
    if out.dim() != 2 or out.shape[1] < 2 or out.shape[0] == 0:
        return None
    out = out.double()
    if not bool(torch.isfinite(out).all()):
        return None
    n = out.shape[0]
    row_sums = out.sum(dim=1)
    if bool(((out >= 0) & (out <= 1)).all()) and float((row_sums - 1).abs().max()) <= PROB_TOL:
        return make_flag(
            FLAG_PROBABILITIES,
            f"The model's outputs look like probabilities, not logits: on {n} samples every "
            f"value lies in [0, 1] and every row sums to 1 within {PROB_TOL:g} "
            f"(largest deviation {float((row_sums - 1).abs().max()):.2e}).",
            "A softmax inside the model saturates the cross-entropy and flattens its input "
            "gradients (gradient masking), so gradient attacks look weaker than they are; "
            "return raw logits from the model and apply softmax outside it.",
        )
    return None


def check_gradients(model: Callable, xs: torch.Tensor, ys: torch.Tensor) -> tuple:
    """(flag or None, whether the input gradient exists at all)."""
    n = xs.shape[0]
    if n == 0:
        return None, True
    x = xs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        grad = None
        if isinstance(out, torch.Tensor) and out.requires_grad:
            loss = F.cross_entropy(out.float(), ys, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return (
            make_flag(
                FLAG_GRADIENTS,
                f"The model's output has no gradient with respect to its input on {n} samples "
                f"(the input is detached, or the model is not differentiable).",
                "Gradient attacks cannot move at all, so their robust accuracy means nothing "
                "(gradient masking by obfuscated gradients); keep the forward pass "
                "differentiable (no .detach(), numpy or integer casts on the input) or "
                "evaluate with a gradient-free attack such as gan.",
            ),
            False,
        )
    flat = grad.detach().reshape(n, -1)
    nonfinite = ~torch.isfinite(flat).all(dim=1)
    zero = (flat == 0).all(dim=1)
    share_nonfinite = float(nonfinite.float().mean())
    share_zero = float(zero.float().mean())
    if share_nonfinite > 0:
        return (
            make_flag(
                FLAG_GRADIENTS,
                f"The input gradient of the cross-entropy contains NaN or inf for "
                f"{int(nonfinite.sum())} of {n} samples ({pct(share_nonfinite)}).",
                "Gradient attacks cannot follow a NaN or infinite gradient, so those samples "
                "look robust when they are not (exploding or shattered gradients); look for "
                "sqrt, log or division at 0 in the forward pass and make it numerically safe.",
            ),
            True,
        )
    if share_zero > ZERO_GRAD_SHARE:
        return (
            make_flag(
                FLAG_GRADIENTS,
                f"The input gradient of the cross-entropy is exactly zero for {int(zero.sum())} "
                f"of {n} samples ({pct(share_zero)}, more than {pct(ZERO_GRAD_SHARE)}).",
                "This suggests gradient masking (a non-differentiable step such as rounding or "
                "quantisation, or saturated outputs), so gradient attacks cannot move; replace "
                "the step by a differentiable approximation for evaluation (BPDA) or rely on a "
                "gradient-free attack such as gan, and run sanity checks at level full.",
            ),
            True,
        )
    return None, True


@torch.no_grad()
def check_nondeterministic(
    model: Callable, xs: torch.Tensor, first: torch.Tensor
) -> Optional[dict]:
    second = model(xs)
    if first.shape != second.shape:
        return make_flag(
            FLAG_NONDETERMINISTIC,
            f"Two forward passes on the same {xs.shape[0]} inputs returned outputs of "
            f"different shapes {tuple(first.shape)} and {tuple(second.shape)}.",
            "The model is not a fixed function in eval mode, so every attack measures a "
            "moving target; make the forward pass deterministic.",
        )
    a, b = first.double(), second.double()
    diff = (a - b).abs()
    limit = DETERMINISM_TOL + DETERMINISM_TOL * a.abs()
    bad = diff > limit
    both_nan = torch.isnan(a) & torch.isnan(b)
    bad = bad | (torch.isnan(diff) & ~both_nan)
    if not bool(bad.any()):
        return None
    rows = bad.reshape(bad.shape[0], -1).any(dim=1) if bad.dim() > 1 else bad
    changed = 0
    if a.dim() == 2:
        changed = int((a.argmax(dim=1) != b.argmax(dim=1)).sum())
    max_diff = float(torch.nan_to_num(diff, nan=float("inf")).max())
    flag = make_flag(
        FLAG_NONDETERMINISTIC,
        f"Two forward passes on the same inputs differ for {int(rows.sum())} of "
        f"{xs.shape[0]} samples (largest difference {max_diff:.3g}, above "
        f"{DETERMINISM_TOL:g}) and change {changed} predictions.",
        "The model is random in eval mode (for example dropout forced on, noise "
        "injection or a module kept in training mode), which hides gradients behind "
        "randomness (stochastic gradients); make evaluation deterministic, or attack "
        "the expectation over the randomness (EOT) before trusting the numbers.",
    )
    # the spread a baseline comparison names: predictions the repeat changed, of how many
    flag.update(changed=changed, checked=int(xs.shape[0]))
    return flag


def check_adv_above_clean(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    batch_size: int,
    counts: Optional[Tuple[int, int]] = None,
) -> Optional[dict]:
    n = x.shape[0]
    if n == 0:
        return None
    if counts is not None:  # the caller has already predicted both batches
        correct_clean, correct_adv = counts
    else:
        correct_clean = int((predict_labels(model, x, batch_size) == y).sum())
        correct_adv = int((predict_labels(model, x_adv, batch_size) == y).sum())
    if correct_adv <= correct_clean:
        return None
    return make_flag(
        FLAG_ADV_ABOVE_CLEAN,
        f"Adversarial accuracy {correct_adv / n:.3f} is above clean accuracy "
        f"{correct_clean / n:.3f} ({correct_adv} vs {correct_clean} correct of {n}).",
        "An attack that makes the model more accurate is broken or aimed the wrong way "
        "(for example a targeted loss, a sign error or wrong labels); check the attack and "
        "the labels, and keep the clean input when the attack does not fool the model.",
    )


def check_curve(curve: Optional[Sequence[dict]], n: Optional[int] = None) -> Optional[dict]:
    """The ``curve_not_monotone`` flag for an eps sweep, or None.

    ``curve`` holds dicts with ``eps`` and ``adversarial_accuracy``; a point
    whose accuracy is above the lowest accuracy at any smaller eps by more than
    the tolerance (one point, or one sample of ``n`` when that is larger)
    raises the flag.
    """
    if not curve:
        return None
    points = sorted(
        ((float(p["eps"]), float(p["adversarial_accuracy"])) for p in curve), key=lambda p: p[0]
    )
    tol = tolerance(n) if n else ACC_TOL
    worst = None  # (rise, eps_low, acc_low, eps_high, acc_high)
    best_eps, best_acc = points[0]
    for eps, acc in points[1:]:
        rise = acc - best_acc
        if rise > tol and eps > best_eps and (worst is None or rise > worst[0]):
            worst = (rise, best_eps, best_acc, eps, acc)
        if acc < best_acc:
            best_eps, best_acc = eps, acc
    if worst is None:
        return None
    rise, e0, a0, e1, a1 = worst
    return make_flag(
        FLAG_CURVE_NOT_MONOTONE,
        f"Adversarial accuracy rises from {a0:.3f} at eps={e0:g} to {a1:.3f} at eps={e1:g} "
        f"(+{rise:.3f}, tolerance {tol:.3f}), although a larger eps can only make the "
        f"attack stronger.",
        "A curve that goes up means the attack fails to use its larger budget: gradient "
        "masking or a step size that does not scale with eps; use more steps, restarts or "
        "a random start, and check the gradients.",
    )
