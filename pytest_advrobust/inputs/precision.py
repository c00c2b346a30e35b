"""Low-precision inputs (float16, bfloat16): attack in float32, keep the bound in the input's dtype.

Attacks run on a float32 copy of a low-precision batch, through
:class:`InputCast`, which hands the model its own input dtype (the cast is
differentiable, so gradients still reach the float32 copy). The result is
then brought back with :func:`into_dtype`, which rounds to the input dtype
and, where rounding pushed a coordinate past the eps-ball or the bounds,
moves it back one unit in the last place (or, failing that, to the clean
value). So ``x_adv - x`` measured in the input's own values never exceeds
``eps``: the bound holds in the dtype the model sees.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from ..geometry import clip_bounds, per_sample, perturbation_norms, project

__all__ = [
    "LOW_PRECISION",
    "InputCast",
    "is_low_precision",
    "into_dtype",
    "model_dtype",
    "working_copy",
]

LOW_PRECISION = (torch.float16, torch.bfloat16)
Tensor = torch.Tensor
Bounds = Optional[Tuple[float, float]]
_MANTISSA = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}


def is_low_precision(x: torch.Tensor) -> bool:
    return x.dtype in LOW_PRECISION


class InputCast(nn.Module):
    """``model(x.to(dtype))``: the model keeps getting inputs of its own dtype.

    Also the base of the plugin's other module wrappers (the call guard of
    :mod:`pytest_advrobust.inputs.calls`, the pass counter): each keeps the user's
    model as ``inner``, so the class of the user's own model is found inside
    them. ``dtype=None`` casts nothing.
    """

    def __init__(self, model: Callable, dtype: Optional[torch.dtype]):
        super().__init__()
        self.inner = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> Any:
        return self.inner(x if self.dtype is None else x.to(self.dtype))


def model_dtype(model: Any) -> Optional[torch.dtype]:
    """The floating dtype of a module's first floating parameter or buffer, else ``None``
    (a plain callable, or a module without floating state)."""
    if not isinstance(model, nn.Module):
        return None
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def working_copy(model: Callable, x: torch.Tensor) -> Tuple[Callable, torch.Tensor]:
    """``(model, x)`` for an attack: float32 through :class:`InputCast` for low precision."""
    if not is_low_precision(x):
        return model, x
    return InputCast(model, x.dtype), x.float()


def _ulp(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of ``dtype`` at each value of ``v`` (float64), towards smaller magnitudes."""
    _, exp = torch.frexp(v)
    ulp = torch.ldexp(torch.ones_like(v), exp - 1 - _MANTISSA.get(dtype, 23))
    return torch.where(v == 0, torch.full_like(v, torch.finfo(dtype).tiny), ulp)


def _below(eps: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` not above ``eps``: a perturbation bounded by it still
    reads ``<= eps`` when its size is computed in ``dtype`` and compared in float64."""
    e = torch.tensor(eps, dtype=torch.float64).to(dtype)
    if float(e) > eps:
        e = torch.nextafter(e, torch.zeros_like(e))
    return float(e)


def _linf(x64: torch.Tensor, a64: torch.Tensor, eps: float, bounds: Bounds, dtype) -> Tensor:
    """Clamp into the box, then step each coordinate that rounding pushed out back in."""
    eps = _below(eps, dtype)
    lo, hi = x64 - eps, x64 + eps
    if bounds is not None:
        lo, hi = lo.clamp_min(bounds[0]), hi.clamp_max(bounds[1])
    out = torch.minimum(torch.maximum(a64, lo), hi).to(dtype)
    for _ in range(4):
        v = out.double()
        below, above = v < lo, v > hi
        if not bool((below | above).any()):
            return out
        step = _ulp(v, dtype)
        v = torch.where(below, v + step, torch.where(above, v - step, v))
        out = v.to(dtype)
    v = out.double()
    bad = (v < lo) | (v > hi)
    return torch.where(bad, x64.to(dtype), out)


def _l2(x64: torch.Tensor, a64: torch.Tensor, eps: float, bounds: Bounds, dtype) -> Tensor:
    """Project and clip, then shrink the samples that rounding pushed out of the ball."""
    delta = project(a64 - x64, eps, "l2")
    shrink = 1.0
    out = clip_bounds(x64 + delta, bounds).to(dtype)
    for _ in range(12):
        over = perturbation_norms(x64, out.double(), "l2") > eps
        if not bool(over.any()):
            return out
        shrink *= 1.0 - 2.0 ** -(_MANTISSA.get(dtype, 23) - 2)
        redo = clip_bounds(x64 + delta * shrink, bounds).to(dtype)
        out = torch.where(per_sample(over, x64), redo, out)
    over = perturbation_norms(x64, out.double(), "l2") > eps
    return torch.where(per_sample(over, x64), x64.to(dtype), out)


def into_dtype(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    eps: float,
    norm: str,
    bounds: Optional[Tuple[float, float]],
) -> torch.Tensor:
    """``x_adv`` in the dtype of ``x``, within ``eps`` (``norm``) and ``bounds`` there.

    ``x``: the clean batch (any floating dtype); ``x_adv``: an attack's result
    of the same shape, usually float32. Rounding in the attack's own arithmetic
    can put an L-inf coordinate one unit in the last place outside ``eps``; it
    is moved back in, so that ``(x_adv - x).abs().max() <= eps`` holds however
    the user computes it. For float64 inputs the result is only cast. Raises
    nothing; a coordinate that cannot be placed inside falls back to its clean
    value.
    """
    dtype = x.dtype
    if dtype == torch.float64 or not x.is_floating_point():
        return x_adv.to(dtype)
    x64, a64 = x.double(), x_adv.detach().double()
    if norm == "linf":
        return _linf(x64, a64, float(eps), bounds, dtype)
    return _l2(x64, a64, float(eps), bounds, dtype)
