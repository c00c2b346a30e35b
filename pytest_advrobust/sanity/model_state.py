"""The cheap checks on what the model does beyond mapping inputs to logits: a forward
that changes the model's own state, outputs that depend on the other samples of the batch,
and input gradients that were NaN or infinite while the attacks ran."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .flags import (
    BATCH_TOL,
    FLAG_BATCH_DEPENDENT,
    FLAG_GRADIENTS,
    FLAG_STATEFUL,
    SMALL_BATCH,
    make_flag,
    pct,
)

__all__ = ["check_batch_dependence", "check_state", "nonfinite_during_attacks"]


def check_state(record: Any, fixture: str) -> Optional[dict]:
    """The ``stateful`` flag when a call of the model changed one of its buffers."""
    if record is None or not record.changed_buffers:
        return None
    names = ", ".join(record.changed_buffers[:5])
    more = len(record.changed_buffers) - 5
    names += f" and {more} more" if more > 0 else ""
    return make_flag(
        FLAG_STATEFUL,
        f"The model from fixture {fixture!r} changes its own state: {record.changed_calls} of "
        f"{record.calls} calls changed its buffers ({names}); each change was undone after "
        "the call, so every call saw the model as the test received it.",
        "A forward pass that updates buffers in eval mode (running statistics, counters, "
        "caches) makes the model's answers depend on what it saw before, so numbers would "
        "depend on test order; keep eval-mode forward passes free of state updates.",
    )


@torch.no_grad()
def check_batch_dependence(model: Callable, xs: torch.Tensor, fixture: str, small: int = 0):
    """The ``batch_dependent`` flag when the same samples give other outputs in a batch of
    their own size than in batches of ``small`` samples (at least :data:`SMALL_BATCH`)."""
    n = int(xs.shape[0])
    small = max(int(small), SMALL_BATCH)
    if n <= small:
        return None
    whole = model(xs).double()
    parts = torch.cat([model(xs[s : s + small]) for s in range(0, n, small)]).double()
    if whole.shape != parts.shape:
        return None
    diff = (whole - parts).abs().reshape(n, -1)
    scale = 1.0 + whole.abs().reshape(n, -1).amax(dim=1)
    rows = diff.amax(dim=1) > BATCH_TOL * scale
    if not bool(rows.any()):
        return None
    changed = int((whole.argmax(dim=1) != parts.argmax(dim=1)).sum()) if whole.dim() == 2 else 0
    return make_flag(
        FLAG_BATCH_DEPENDENT,
        f"The model from fixture {fixture!r} gives other outputs for the same samples in "
        f"batches of {small} than in one batch of {n}: {int(rows.sum())} of {n} samples "
        f"differ (largest difference {float(diff.max()):.3g}) and {changed} predictions change.",
        "Outputs that depend on the other samples of the batch (BatchNorm using batch "
        "statistics in eval mode, track_running_stats=False, batch-level normalisation) make "
        "every number depend on the batch size and on which samples an attack still works "
        "on; give the model running statistics or evaluate it per sample.",
    )


def nonfinite_during_attacks(record: Any, fixture: str, n: int) -> Optional[dict]:
    """The ``gradients`` flag when input gradients were NaN or infinite during the attacks
    (the model guard set them to 0, so no attack followed them)."""
    if record is None or not record.nonfinite_rows:
        return None
    share = record.nonfinite_rows / max(record.gradient_rows, 1)
    samples = ""
    if record.nonfinite_samples:
        k = len({s for s in record.nonfinite_samples if s < n})
        samples = f" and {k} of the {n} evaluation samples ({pct(k / max(n, 1))})"
    return make_flag(
        FLAG_GRADIENTS,
        f"The input gradient of the model from fixture {fixture!r} was NaN or infinite in "
        f"{record.nonfinite_rows} of {record.gradient_rows} per-sample gradients the attacks "
        f"computed ({pct(share)}){samples}; those entries were set to 0.",
        "The model's input gradient is not finite at some inputs (a sqrt, log or division "
        "at 0, or an overflow), so gradient attacks cannot move there and those samples may "
        "look more robust than they are; make the forward pass numerically safe.",
    )
