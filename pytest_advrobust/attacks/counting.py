"""Query counts: forward and backward passes through the model, per sample.

:func:`counted` wraps one attack call: every call of the model adds its batch
size to the forward count, and every gradient that flows back through the
model's output adds the batch size to the backward count (a tensor hook on
the output, so a backward pass is counted only when it reaches the model).
Divided by the number of attacked samples this gives the passes per sample
that the JSON report shows under ``cost`` (adv-lib counts queries the same way).

Counting wraps the model callable and never registers module hooks, so
scripted, traced and compiled models and ``DataParallel`` are counted alike.
A model that the plugin already guards (:mod:`pytest_advrobust.inputs.calls`) is
counted by its guard and handed over as it is, so that what an attack sees of
the model (for instance the cache key of a generator) does not depend on
whether it is being counted.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator

import torch

from ..inputs.precision import InputCast

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

    def observe(self, out: Any) -> None:
        """Count one model output: its rows forward, and backward once a gradient reaches it."""
        if not isinstance(out, torch.Tensor) or out.dim() == 0:
            return
        rows = int(out.shape[0])
        self.forward += rows
        if out.requires_grad:

            def on_backward(grad: torch.Tensor) -> None:
                self.backward += rows

            out.register_hook(on_backward)


class _CountedModule(InputCast):
    """An ``nn.Module`` model, counted (its ``inner``)."""

    def __init__(self, model: torch.nn.Module, count: QueryCount):
        super().__init__(model, None)
        object.__setattr__(self, "_count", count)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        self._count.observe(out)
        return out


class _CountedCallable:
    """A plain callable model, counted."""

    def __init__(self, model: Callable, count: QueryCount):
        self._model, self._count = model, count

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._model(*args, **kwargs)
        self._count.observe(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@contextlib.contextmanager
def counting(model: Any) -> Iterator[tuple]:
    """Yield ``(model_to_use, QueryCount)``: call ``model_to_use`` in the block.

    A model guarded by the plugin comes back as the same object (its guard
    counts); any other model comes back wrapped (an ``nn.Module`` in an
    ``nn.Module`` whose ``inner`` it is). The user's model is never changed.
    """
    from ..inputs.calls import find_guard

    count = QueryCount()
    start = time.perf_counter()
    guard = find_guard(model)
    if guard is not None:
        guard.counters.append(count)
        use = model
    elif isinstance(model, torch.nn.Module):
        use = _CountedModule(model, count)
    else:
        use = _CountedCallable(model, count)
    try:
        yield use, count
    finally:
        if guard is not None:
            guard.counters[:] = [c for c in guard.counters if c is not count]
        count.seconds = time.perf_counter() - start


def counted(attack: Callable, model: Any, *args, **kwargs):
    """Run ``attack(model, *args, **kwargs)``; return (its result, :class:`QueryCount`)."""
    with counting(model) as (m, count):
        out = attack(m, *args, **kwargs)
    return out, count


def uncounted(model: Any) -> Any:
    """The model inside any counting wrapper (itself when it is not wrapped): what cache
    keys and digests are computed on, so that counting never changes them."""
    while isinstance(model, (_CountedModule, _CountedCallable)):
        model = model.inner if isinstance(model, _CountedModule) else model._model
    return model
