"""Query counts: forward and backward passes through the model, per sample.

:func:`counted` wraps one attack call: every call of the model adds its batch
size to the forward count, and every gradient that flows back through the
model's output adds the batch size to the backward count (a tensor hook on
the output, so a backward pass is counted only when it reaches the model).
Divided by the number of attacked samples this gives the passes per sample
that the JSON report shows under ``cost`` (adv-lib counts queries the same way).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator

import torch

__all__ = ["QueryCount", "counted", "counting", "uncounted"]


@dataclass
class QueryCount:
    """Images through the model: ``forward`` and ``backward`` passes, and wall seconds."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0

    def per_sample(self, n: int) -> Dict[str, float]:
        """``{"forward_per_sample", "backward_per_sample", "seconds"}`` for ``n`` samples."""
        d = max(int(n), 1)
        return {
            "forward_per_sample": round(self.forward / d, 3),
            "backward_per_sample": round(self.backward / d, 3),
            "seconds": round(self.seconds, 3),
        }


def _observe(count: QueryCount, out: Any) -> None:
    if not isinstance(out, torch.Tensor) or out.dim() == 0:
        return
    rows = int(out.shape[0])
    count.forward += rows
    if out.requires_grad:

        def on_backward(grad: torch.Tensor) -> None:
            count.backward += rows

        out.register_hook(on_backward)


class _CountingCallable:
    """A plain callable model, counted (``torch.nn.Module`` models are hooked instead)."""

    def __init__(self, model: Callable, count: QueryCount):
        self._model, self._count = model, count

    def __call__(self, x):
        out = self._model(x)
        _observe(self._count, out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@contextlib.contextmanager
def counting(model: Any) -> Iterator[tuple]:
    """Yield ``(model_to_use, QueryCount)``; an ``nn.Module`` stays the same object.

    A module gets a forward hook for the block (removed afterwards, so the
    user's model leaves as it came); any other callable is wrapped.
    """
    count = QueryCount()
    start = time.perf_counter()
    if isinstance(model, torch.nn.Module):
        handle = model.register_forward_hook(lambda _m, _i, out: _observe(count, out))
        try:
            yield model, count
        finally:
            handle.remove()
            count.seconds = time.perf_counter() - start
        return
    try:
        yield _CountingCallable(model, count), count
    finally:
        count.seconds = time.perf_counter() - start


def counted(attack: Callable, model: Any, *args, **kwargs):
    """Run ``attack(model, *args, **kwargs)``; return (its result, :class:`QueryCount`)."""
    with counting(model) as (m, count):
        out = attack(m, *args, **kwargs)
    return out, count


def uncounted(model: Any) -> Any:
    """The model inside any counting wrapper (itself when it is not wrapped): what cache
    keys and digests are computed on, so that counting never changes them."""
    while isinstance(model, _CountingCallable):
        model = model._model
    return model
