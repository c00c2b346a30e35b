"""PNG gallery of the generated samples a model gets wrong.

One cell per sample, captioned ``y=<intended class> p=<model's prediction>``
in red. Images ``(N, C, H, W)`` with 1 or 3 channels are drawn as they are;
other shapes are drawn as a square grey image when the feature count is a
perfect square, else as a one-pixel-high strip. Cells are enlarged with
nearest-neighbour scaling (torchvision's ``make_grid`` lays them out).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

__all__ = ["save_wrong_gallery", "wrong_gallery_image"]

_CELL = 64
_CAPTION = 14
_PER_ROW = 8


def _as_images(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    x = x.detach().float().cpu()
    if x.dim() == 4 and x.shape[1] in (1, 3):
        img = x
    else:
        flat = x.reshape(x.shape[0], -1)
        side = math.isqrt(flat.shape[1])
        shape = (side, side) if side * side == flat.shape[1] else (1, flat.shape[1])
        img = flat.view(x.shape[0], 1, *shape)
    img = ((img - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    h, w = img.shape[-2:]
    factor = max(1, math.ceil(_CELL / max(1, min(h, w))))
    return torch.nn.functional.interpolate(img, scale_factor=factor, mode="nearest")


def wrong_gallery_image(
    x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, bounds=(0.0, 1.0), max_images: int = 32
):
    """A PIL image of the samples with ``pred != y`` (at most ``max_images``).

    ``x``: ``(N, ...)`` float samples; ``y``, ``pred``: int64 ``(N,)``. Returns
    ``None`` when the model got every sample right.
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    wrong = (pred.cpu() != y.cpu()).nonzero().flatten()[:max_images]
    if wrong.numel() == 0:
        return None
    lo, hi = bounds if bounds is not None else (float(x.min()), float(x.max()))
    imgs = _as_images(x.cpu()[wrong], float(lo), float(hi))
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    h, w = imgs.shape[-2:]
    padded = torch.ones(imgs.shape[0], 3, h + _CAPTION, w)
    padded[:, :, :h] = imgs
    grid = make_grid(padded, nrow=_PER_ROW, padding=2, pad_value=1.0)
    canvas = Image.fromarray((grid.permute(1, 2, 0) * 255).round().byte().numpy())
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(wrong.tolist()):
        col, row = k % _PER_ROW, k // _PER_ROW
        left, top = 2 + col * (w + 2), 2 + row * (h + _CAPTION + 2) + h
        draw.text((left + 2, top + 1), f"y={int(y[i])} p={int(pred[i])}", fill=(200, 0, 0))
    return canvas


def save_wrong_gallery(
    path: Path,
    x: torch.Tensor,
    y: torch.Tensor,
    pred: torch.Tensor,
    bounds=(0.0, 1.0),
    max_images: int = 32,
) -> Optional[Path]:
    """Write :func:`wrong_gallery_image` to ``path``; ``None`` (no file) when the
    model got every sample right."""
    canvas = wrong_gallery_image(x, y, pred, bounds, max_images)
    if canvas is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
