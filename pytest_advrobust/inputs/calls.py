"""The one wrapper every call of the user's model goes through during an evaluation.

:func:`guarded` wraps the user's model (inside ``preprocessing``) so that
every attack, the sanity checks and the clean predictions share what it does
on each call:

* **several inputs**: a batch of the perturbed input that knows its samples
  (:mod:`pytest_advrobust.inputs.rows`) is handed to the model with the other inputs
  of those samples (:mod:`pytest_advrobust.inputs.several`);
* **the smallest batch the model takes**: a batch smaller than
  ``min_batch`` (found by :func:`probe_min_batch`; a BatchNorm
  without running statistics needs 2) is padded with earlier samples, and
  only the rows asked for come back;
* **the model's own state**: a forward that changes the model's buffers is
  undone after every call, so that no call, attack or test sees another's
  state, and the change is recorded for the ``stateful`` sanity flag;
* **input gradients**: NaN or infinite entries of the gradient that reaches
  the model's input are recorded (for the ``gradients`` flag, which names the
  model) and set to 0, so that no attack walks on a NaN;
* **query counts and progress**: :func:`~pytest_advrobust.attacks.counting.counting`
  attaches its counters here, and a heartbeat may print a progress line.

An error the model raises becomes one sentence naming its fixture. A module is
wrapped in :class:`CallGuard` (an ``nn.Module`` whose ``inner`` is the model),
any other callable in :class:`FunctionGuard`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

import torch
from torch import nn

from ..errors import AdvRobustError, ModelError
from .precision import InputCast
from .rows import Tagged, plain, rows_of

__all__ = [
    "CallGuard",
    "CallRecord",
    "FunctionGuard",
    "find_guard",
    "guarded",
    "probe_min_batch",
    "run_model_safely",
]

#: Batch sizes tried, in order, by :func:`probe_min_batch`.
PROBE_SIZES = (1, 2, 3, 4, 8, 16, 32)


@dataclass
class CallRecord:
    """What the guard saw: calls, padded calls, input gradients, changed buffers."""

    calls: int = 0
    padded_calls: int = 0
    gradient_rows: int = 0
    nonfinite_rows: int = 0
    nonfinite_samples: Set[int] = field(default_factory=set)
    changed_buffers: List[str] = field(default_factory=list)
    changed_calls: int = 0
    nonfinite_outputs: int = 0
    output_rows: int = 0


class _State:
    """The model's buffers as they were when the guard was made, put back after each call.

    A changed buffer is replaced by a fresh copy of its first value (never
    written in place: autograd may still hold the changed one); the borrowed
    model's snapshot puts the original tensors back when the evaluation ends.
    """

    def __init__(self, model: nn.Module):
        prefix = {id(m): name for name, m in model.named_modules()}
        self.entries: List[list] = []
        for mod in model.modules():
            for name in list(mod._buffers.keys()):
                buf = mod._buffers[name]
                if isinstance(buf, torch.Tensor):
                    qual = f"{prefix.get(id(mod), '')}.{name}".lstrip(".")
                    self.entries.append([mod, name, buf, buf._version, buf.detach().clone(), qual])

    def undo(self) -> List[str]:
        """Put back every buffer the last call changed; return their names."""
        changed = []
        for entry in self.entries:
            mod, name, obj, version, saved, qual = entry
            current = mod._buffers[name]
            if current is obj and current._version == version:
                continue
            fresh = saved.clone()
            mod._buffers[name] = fresh
            entry[2], entry[3] = fresh, fresh._version
            changed.append(qual)
        return changed


class _Guard:
    """What both guards do around one call of ``self.inner``."""

    inner: Any
    fixture: str
    record: CallRecord
    min_batch: int
    counters: list
    beat: Optional[Callable[[], None]]

    def _setup(self, model: Any, fixture: str) -> None:
        self.fixture, self.record, self.min_batch = fixture, CallRecord(), 1
        self.counters, self.beat = [], None
        self._several = False  # seen a batch of a model with several inputs
        self._filler: Optional[torch.Tensor] = None
        self._state = _State(model) if isinstance(model, nn.Module) else None

    def _guarded_call(self, x: torch.Tensor) -> Any:
        n = int(x.shape[0])
        self.record.calls += 1
        if x.requires_grad and not getattr(self, "_raw", False):
            x.register_hook(self._gradient_hook(x))
        batch, out = self._answer(x, n)
        if batch is not x:
            out = out[:n]
        self._watch_output(out)
        for count in self.counters:
            count.observe(out)
        if self.beat is not None:
            self.beat()
        return out

    def _answer(self, x: torch.Tensor, n: int) -> Tuple[torch.Tensor, Any]:
        """``(batch, output)``: the model on ``x`` padded to ``min_batch``; when the model
        refuses a small batch, ``min_batch`` grows to the next of :data:`PROBE_SIZES` that it
        takes (then the batch is padded and asked again), so no path needs a probe first."""
        while True:
            batch = self._pad(x, n)
            try:
                return batch, self._call(batch, x.shape)
            except ModelError:
                bigger = [k for k in PROBE_SIZES if k > max(n, self.min_batch)]
                if not bigger or batch.shape[0] >= PROBE_SIZES[-1]:
                    raise
                self.min_batch = bigger[0]
            finally:
                self._undo_state()

    def _call(self, x: torch.Tensor, shape: Tuple[int, ...]) -> Any:
        rows = rows_of(x)
        try:
            if rows is not None and x.extras is not None:
                self._several = True
                out = x.extras.call(self.inner, plain(x), rows)
            elif self._several:
                raise AdvRobustError(
                    f"the model from fixture {self.fixture!r} takes several inputs, but an "
                    f"attack called it on a batch of shape {tuple(shape)} whose samples it "
                    "cannot tell; an attack must select samples by indexing its input "
                    "(x[idx], torch.cat), not rebuild the batch"
                )
            else:
                out = self.inner(plain(x))
        except AdvRobustError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(
                f"model from fixture {self.fixture!r} raised {type(exc).__name__} on "
                f"inputs of shape {tuple(shape)}: {first}"
            ) from exc
        logits = getattr(out, "logits", None)  # a Hugging Face model's output
        return logits if not isinstance(out, torch.Tensor) and torch.is_tensor(logits) else out

    def _watch_output(self, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() >= 1 and out.is_floating_point():
            self.record.output_rows += int(out.shape[0])
            finite = torch.isfinite(out.detach().reshape(out.shape[0], -1)).all(dim=1)
            self.record.nonfinite_outputs += int((~finite).sum())

    @contextlib.contextmanager
    def raw_gradients(self) -> Iterator[None]:
        """Input gradients pass unchanged and unrecorded in the block (for the checks that
        judge them)."""
        self._raw, old = True, getattr(self, "_raw", False)
        try:
            yield
        finally:
            self._raw = old

    def _pad(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``x`` padded to ``min_batch`` rows with earlier inputs (or its own rows)."""
        if n >= self.min_batch:
            if n and (self._filler is None or self._filler.shape[0] < self.min_batch):
                self._filler = x[: self.min_batch].detach()
            return x
        if n == 0:
            return x
        need = self.min_batch - n
        filler = self._filler
        fits = (
            filler is not None
            and filler.shape[0] >= need
            and filler.shape[1:] == x.shape[1:]
            and filler.device == x.device
            and isinstance(filler, Tagged) == isinstance(x, Tagged)
        )
        extra = filler[:need] if fits else x.detach()[[i % n for i in range(need)]]
        self.record.padded_calls += 1
        return torch.cat([x, extra.to(x.dtype)])

    def _gradient_hook(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        rows = rows_of(x)

        def clean(grad: torch.Tensor) -> torch.Tensor:
            flat = grad.reshape(grad.shape[0], -1)
            bad = ~torch.isfinite(flat).all(dim=1)
            self.record.gradient_rows += int(grad.shape[0])
            if not bool(bad.any()):
                return grad
            self.record.nonfinite_rows += int(bad.sum())
            if rows is not None:
                self.record.nonfinite_samples.update(rows[bad.cpu()].tolist())
            return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

        return clean

    def _undo_state(self) -> None:
        if self._state is None:
            return
        changed = self._state.undo()
        if changed:
            self.record.changed_calls += 1
            for name in changed:
                if name not in self.record.changed_buffers:
                    self.record.changed_buffers.append(name)


class CallGuard(_Guard, InputCast):
    """The guard around an ``nn.Module`` (``inner``); see the module docstring."""

    def __init__(self, model: nn.Module, fixture: str = "robust_model"):
        InputCast.__init__(self, model, None)
        self._setup(model, fixture)

    def forward(self, x: torch.Tensor) -> Any:
        return self._guarded_call(x)


class FunctionGuard(_Guard):
    """The guard around a plain callable; it carries the callable's name, as
    ``functools.wraps`` would, so that the cache shows the user's model."""

    def __init__(self, model: Callable, fixture: str = "robust_model"):
        self.inner = model
        self._setup(model, fixture)
        named = model if hasattr(model, "__qualname__") else type(model)
        self.__module__ = getattr(named, "__module__", None)
        self.__qualname__ = getattr(named, "__qualname__", type(model).__name__)

    def __call__(self, x: torch.Tensor) -> Any:
        return self._guarded_call(x)


def probe_min_batch(net: Any, x: torch.Tensor) -> int:
    """The smallest batch of ``x``'s samples that ``net`` (a guarded model, with its
    preprocessing) answers with logits, one row per sample: 1, else the first of
    :data:`PROBE_SIZES` that works. It becomes the guard's ``min_batch`` (which the guard
    also raises by itself when the model refuses a batch); 1 when ``net`` is not guarded."""
    guard = find_guard(net)
    if guard is None:
        return 1
    guard.min_batch = 1
    for size in PROBE_SIZES:
        if size >= x.shape[0]:
            break
        guard.min_batch = max(guard.min_batch, size)
        try:
            with torch.no_grad():
                out = net(x[:size])
        except AdvRobustError:
            break  # the model refuses every small batch: the clean predictions will say why
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == size:
            return guard.min_batch
    guard.min_batch = max(1, min(int(x.shape[0]), PROBE_SIZES[-1]))
    return guard.min_batch


def guarded(model: Any, fixture: str = "robust_model") -> Any:
    """``model`` wrapped in its guard (the same guard when it already is one)."""
    if isinstance(model, _Guard):
        return model
    if isinstance(model, nn.Module):
        return CallGuard(model, fixture)
    return FunctionGuard(model, fixture)


def find_guard(model: Any) -> Optional[_Guard]:
    """The guard inside the plugin's wrappers around ``model`` (preprocessing, dtype
    cast, counters), or ``None`` when the model is not guarded."""
    for _ in range(8):
        if isinstance(model, _Guard):
            return model
        if not isinstance(model, nn.Module) or not hasattr(model, "inner"):
            return None
        from .model import Preprocessed

        if not isinstance(model, (Preprocessed, InputCast)):
            return None
        model = model.inner
    return None


def run_model_safely(fn: Callable[[], Any], fixture: str, shape) -> Any:
    """``fn()``; an error of the user's model in it becomes one sentence naming ``fixture``
    and the input ``shape``."""
    try:
        return fn()
    except AdvRobustError:
        raise
    except Exception as exc:  # the user's model failed on a plain batch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AdvRobustError(
            f"model from fixture {fixture!r} raised {type(exc).__name__} on "
            f"inputs of shape {tuple(shape)}: {first}"
        ) from exc
