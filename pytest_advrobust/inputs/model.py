"""Hold the user's model for the duration of an evaluation and give it back as it came.

:func:`borrowed` freezes the model (eval mode, no parameter gradients), moves
it to the evaluation device, and on exit restores every module's train/eval
mode, every parameter's ``requires_grad``, every tensor's device and every
buffer (the same tensor, with its first values: a forward that updates a
buffer is undone), also when the attack or the model raises. Weights are never
written.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import AdvRobustError

__all__ = ["borrowed", "frozen", "Preprocessed", "check_logits", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AdvRobustError(
                f"--advrobust-device={name} was asked for, "
                "but CUDA is not available on this machine"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AdvRobustError(
                f"--advrobust-device={name} was asked for, but this machine "
                f"has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


class _Snapshot:
    def __init__(self, model: nn.Module):
        self.model = model
        self.modes: List[Tuple[nn.Module, bool]] = [(m, m.training) for m in model.modules()]
        self.grads: List[Tuple[nn.Parameter, bool]] = [
            (p, p.requires_grad) for p in model.parameters()
        ]
        self.param_devices = [
            (mod, name, p.device)
            for mod in model.modules()
            for name, p in mod._parameters.items()
            if p is not None
        ]
        self.buffer_devices = [
            (mod, name, b.device)
            for mod in model.modules()
            for name, b in mod._buffers.items()
            if b is not None
        ]
        # The buffers themselves and their values: a forward that changes them is undone.
        self.buffers = [
            (mod, name, b, b.detach().clone())
            for mod in model.modules()
            for name, b in mod._buffers.items()
            if isinstance(b, torch.Tensor)
        ]
        devices = {d for _, _, d in self.param_devices + self.buffer_devices}
        self.single_device = devices.pop() if len(devices) == 1 else None

    def restore(self) -> None:
        self._restore_buffers()
        if self.single_device is not None:
            self.model.to(self.single_device)
        else:
            with torch.no_grad():
                for mod, name, dev in self.param_devices:
                    p = mod._parameters[name]
                    if p is not None and p.device != dev:
                        p.data = p.data.to(dev)
                for mod, name, dev in self.buffer_devices:
                    b = mod._buffers[name]
                    if b is not None and b.device != dev:
                        mod._buffers[name] = b.to(dev)
        for m, mode in self.modes:
            m.training = mode
        for p, flag in self.grads:
            p.requires_grad_(flag)

    def _restore_buffers(self) -> None:
        """Put every buffer tensor back in its place, holding its first values."""
        with torch.no_grad():
            for mod, name, buf, saved in self.buffers:
                if buf.shape == saved.shape and not torch.equal(buf, saved.to(buf.device)):
                    buf.copy_(saved)
                if mod._buffers[name] is not buf:
                    mod._buffers[name] = buf


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[Any]:
    """Eval mode and no parameter gradients for the block, on the model's own device.

    Every module's train/eval flag and every parameter's ``requires_grad`` are
    restored on exit, also when the block raises. Plain callables pass through.
    """
    with borrowed(model, None) as m:
        yield m


@contextlib.contextmanager
def borrowed(model: Any, device: Optional[torch.device]) -> Iterator[Any]:
    """Freeze ``model`` on ``device`` for the block; restore it afterwards.

    ``device=None`` leaves the model where it is. A plain callable (not an
    ``nn.Module``) is used as it is.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    snap = _Snapshot(model)
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if device is not None and (snap.single_device is None or snap.single_device != device):
            model.to(device)
        yield model
    finally:
        snap.restore()


class Preprocessed(nn.Module):
    """``model((x - mean) / std)``: the attack works in the unnormalised input space.

    ``mean`` and ``std`` hold one value, or one value per channel; the channel
    axis is ``channel_axis`` when given, else 1 (``(N, C)``, ``(N, C, L)``,
    ``(N, C, H, W)``), except that a 4-D input whose last axis matches the
    number of values and whose axis 1 does not is read as channels-last
    ``(N, H, W, C)``. :meth:`axis_for` raises :class:`AdvRobustError`
    (naming ``preprocessing`` and ``channel_axis``) when the values fit no axis.
    """

    def __init__(
        self,
        model: Callable,
        mean: Sequence[float],
        std: Sequence[float],
        channel_axis: Optional[int] = None,
    ):
        super().__init__()
        self.inner = model
        self.channel_axis = channel_axis
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def axis_for(self, shape: Sequence[int]) -> Optional[int]:
        """The channel axis used for inputs of ``shape`` (``None``: one value for all)."""
        k = max(int(self.mean.numel()), int(self.std.numel()))
        if k == 1:
            return None
        dims = len(shape)
        if self.channel_axis is not None:
            axis = self.channel_axis % dims if -dims <= self.channel_axis < dims else None
            if axis is None or axis == 0 or shape[axis] != k:
                size = shape[axis] if axis else "no such axis"
                raise AdvRobustError(
                    f"preprocessing has {k} values per channel but channel_axis="
                    f"{self.channel_axis} of inputs of shape {tuple(shape)} has size {size}; "
                    "give channel_axis the axis that holds the channels"
                )
            return axis
        if dims >= 2 and shape[1] == k:
            return 1
        if dims == 4 and shape[-1] == k:
            return 3
        raise AdvRobustError(
            f"preprocessing has {k} values per channel, but inputs of shape {tuple(shape)} "
            f"have no channel axis of that size at axis 1 (or -1 for (N, H, W, C) images); "
            "give one value per channel and set channel_axis=... (marker) or "
            "--advrobust-channel-axis"
        )

    def _shape(self, t: torch.Tensor, x: torch.Tensor, axis: Optional[int]) -> torch.Tensor:
        if axis is None:
            return t.reshape(())
        view = [1] * x.dim()
        view[axis] = -1
        return t.view(*view)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.numel() != self.std.numel() and self.mean.numel() > 1 and self.std.numel() > 1:
            raise AdvRobustError(
                f"preprocessing has {self.mean.numel()} means but "
                f"{self.std.numel()} stds; give as many of each"
            )
        axis = self.axis_for(tuple(x.shape))
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        if axis is not None:
            mean, std = mean.expand(x.shape[axis]), std.expand(x.shape[axis])
        return self.inner((x - self._shape(mean, x, axis)) / self._shape(std, x, axis))


def check_logits(out: Any, n: int, fixture: str) -> torch.Tensor:
    """Check that the model gave (n, classes) finite logits; return them."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        raise AdvRobustError(
            f"model from fixture {fixture!r} returned a {type(out).__name__}; "
            "it must return one tensor of logits of shape (n, classes)"
        )
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        raise AdvRobustError(
            f"model from fixture {fixture!r} returned an object with .logits; "
            "wrap it so that it returns the logits tensor"
        )
    if not isinstance(out, torch.Tensor):
        raise AdvRobustError(
            f"model from fixture {fixture!r} returned {type(out).__name__}, "
            "not a tensor of logits of shape (n, classes)"
        )
    if out.dim() == 2 and out.shape[0] == n and out.shape[1] == 1:
        raise AdvRobustError(
            f"model from fixture {fixture!r} returned one logit per input, "
            f"shape ({n}, 1), but logits need at least 2 classes: for a "
            "binary model's logit z, return torch.cat([-z, z], dim=1)"
        )
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise AdvRobustError(
            f"model from fixture {fixture!r} returned shape {tuple(out.shape)} "
            f"for {n} inputs; expected logits of shape ({n}, classes) "
            "with at least 2 classes"
        )
    if not out.dtype.is_floating_point:
        raise AdvRobustError(
            f"model from fixture {fixture!r} returned {out.dtype} outputs; "
            "expected floating-point logits"
        )
    if not torch.isfinite(out).all():
        bad = "NaN" if torch.isnan(out).any() else "infinite"
        raise AdvRobustError(f"model from fixture {fixture!r} returned {bad} logits")
    return out
