"""How a batch becomes cells of pixels for the gallery (:mod:`.images`).

Images (N, C, H, W) with 1 or 3 channels are drawn as they are (other channel
counts: the first three, or their mean), (N, H, W) as grey images, flat
(N, D) vectors as a square image when D is a perfect square and otherwise as a
strip of bars, one per feature (the perturbation's bars start at the middle).
Values are mapped to [0, 1] jointly for the clean and adversarial rows; the
perturbation is amplified around a mid-grey of 0.5. Small images are enlarged
with nearest-neighbour scaling so that a cell is at least :data:`MIN_CELL`
pixels on its shorter side. Tensors are float32 on the CPU.
"""

from __future__ import annotations

import math
from typing import Optional

from ..geometry import per_sample

__all__ = [
    "MAX_BARS",
    "MIN_CELL",
    "STRIP_HEIGHT",
    "cell_size",
    "row_images",
    "strip_shape",
    "upscale",
]

#: Shorter side, in pixels, that each cell is enlarged to at least.
MIN_CELL = 64
#: Height of the bar strip drawn for flat non-square vectors.
STRIP_HEIGHT = 64
#: Most bars in a strip; longer vectors are averaged into this many bins.
MAX_BARS = 256


def _as_images(t, name: str):
    """(N, ...) tensor -> float (N, C, H, W) on the CPU with C in {1, 3}."""
    import torch

    t = torch.as_tensor(t).detach().to("cpu", torch.float32)
    if t.dim() == 4:
        c = t.shape[1]
        if c == 1 or c == 3:
            return t
        if c > 3:
            return t[:, :3]
        return t.mean(dim=1, keepdim=True)
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() == 2:
        d = t.shape[1]
        side = math.isqrt(d)
        if side * side == d:
            return t.reshape(t.shape[0], 1, side, side)
        return None  # drawn as bars after scaling to [0, 1]
    raise ValueError(
        f"{name} must be (N, C, H, W), (N, H, W) or (N, D); got shape {tuple(t.shape)}"
    )


def strip_shape(d: int) -> tuple:
    """(height, width) of the bar strip drawn for a flat vector of ``d`` features."""
    bars = min(int(d), MAX_BARS)
    return STRIP_HEIGHT, bars * max(1, math.ceil(MIN_CELL / max(bars, 1)))


def _bars(values, centre: float = 0.0):
    """(N, D) values in [0, 1] -> (N, 1, h, w) strips of dark bars on white.

    Each feature is one bar reaching from ``centre`` (0: the bottom, 0.5: the
    middle) to its value. More than :data:`MAX_BARS` features are averaged
    into that many bins.
    """
    import torch
    import torch.nn.functional as F

    n, d = values.shape
    if d > MAX_BARS:
        values = F.adaptive_avg_pool1d(values.unsqueeze(1), MAX_BARS).squeeze(1)
        d = MAX_BARS
    h, w = strip_shape(d)
    tops = values.clamp(0, 1) * h  # (N, D) in pixel units from the bottom
    lo = torch.minimum(tops, torch.full_like(tops, centre * h)).unsqueeze(1)
    hi = torch.maximum(tops, torch.full_like(tops, centre * h)).unsqueeze(1)
    mid = (torch.arange(h, 0, -1, dtype=values.dtype) - 0.5).view(1, h, 1)  # pixel centres
    filled = (mid >= lo) & (mid <= hi)
    img = torch.where(
        filled, torch.tensor(0.2, dtype=values.dtype), torch.tensor(1.0, dtype=values.dtype)
    )
    img = img.repeat_interleave(w // d, dim=2)
    return img.unsqueeze(1)


def _display_range(clean, adv):
    """Map values to [0, 1] jointly for both rows: as is when already inside, else min-max."""
    lo = float(min(clean.min(), adv.min()))
    hi = float(max(clean.max(), adv.max()))
    if lo >= 0.0 and hi <= 1.0:
        return clean, adv
    span = hi - lo if hi > lo else 1.0
    return (clean - lo) / span, (adv - lo) / span


def _perturbation_image(delta, amplify: Optional[float]):
    """delta -> [0, 1] centred at 0.5; per-sample scaling to fill the range unless ``amplify``."""
    flat = delta.reshape(delta.shape[0], -1)
    if amplify is None:
        peak = flat.abs().amax(dim=1).clamp_min(1e-12)
        scale = per_sample(0.5 / peak, delta)
    else:
        scale = float(amplify)
    return (0.5 + delta * scale).clamp(0.0, 1.0)


def cell_size(h: int, w: int) -> tuple:
    """Size (height, width) of one cell for an (h, w) image after enlarging."""
    factor = max(1, math.ceil(MIN_CELL / max(1, min(h, w))))
    return h * factor, w * factor


def upscale(imgs):
    import torch.nn.functional as F

    h, w = imgs.shape[-2:]
    ch, cw = cell_size(h, w)
    if (ch, cw) == (h, w):
        return imgs
    return F.interpolate(imgs, size=(ch, cw), mode="nearest")


def row_images(x, x_adv, amplify: Optional[float]) -> tuple:
    """The clean, adversarial and perturbation rows as (N, C, h, w) images in [0, 1]."""
    delta = x_adv - x
    clean_img, adv_img = _as_images(x, "x"), _as_images(x_adv, "x_adv")
    if clean_img is None:  # flat, non-square: bars of the scaled values
        c, a = _display_range(x, x_adv)
        return _bars(c), _bars(a), _bars(_perturbation_image(delta, amplify), centre=0.5)
    clean_img, adv_img = _display_range(clean_img, adv_img)
    return clean_img, adv_img, _perturbation_image(_as_images(delta, "x_adv - x"), amplify)
