"""Building blocks of the generator networks: argument checks, the U-Net and the residual MLP.

:func:`pytest_advrobust.gan.networks.build_generator` assembles them; see
that module for the families and their defaults.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import NORMS

Bounds = Optional[Tuple[float, float]]


# --------------------------------------------------------------------------- validation
def _check_shape(sample_shape: Any) -> Tuple[int, ...]:
    try:
        if isinstance(sample_shape, (str, bytes)):
            raise TypeError
        shape = tuple(int(s) for s in sample_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"sample_shape must be a tuple (C, H, W) or (D,), got {sample_shape!r}"
        ) from None
    if len(shape) not in (1, 3) or any(s < 1 for s in shape):
        raise ValueError(
            f"sample_shape must be (C, H, W) or (D,) with positive sizes, got {sample_shape!r}"
        )
    if len(shape) == 3 and min(shape[1:]) < 4:
        raise ValueError(f"sample_shape {shape!r}: image height and width must be at least 4")
    return shape


def _check_eps_range(eps_range: Any) -> Tuple[float, float]:
    try:
        lo, hi = (float(e) for e in eps_range)
    except (TypeError, ValueError):
        raise ValueError(f"eps_range must be a pair (low, high), got {eps_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"eps_range must be finite with 0 < low <= high, got {eps_range!r}")
    return lo, hi


def _check_norm_bounds(norm: Any, bounds: Any) -> Tuple[str, Bounds]:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if bounds is not None:
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be None or a pair (low, high), got {bounds!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be a finite pair with low < high, got {bounds!r}")
        bounds = (lo, hi)
    return norm, bounds


def _default_down(h: int, w: int) -> int:
    """Number of stride-2 stages: 1 below 28 pixels, 2 for 28-55, 3 for 56-111, else 4."""
    return int(min(4, max(1, math.floor(math.log2(min(h, w) / 7.0)) if min(h, w) >= 14 else 1)))


def _groups(ch: int) -> int:
    for g in (8, 4, 2):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


# --------------------------------------------------------------------------- building blocks
class _ConvAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class _UNet(nn.Module):
    """(N, C, H, W) -> raw perturbation (N, C, H, W), any H, W >= 4."""

    def __init__(self, channels: int, width: int, n_down: int, n_res: int, in_channels: int = 0):
        super().__init__()
        self.n_down = n_down
        widths = [width * (2**i) for i in range(n_down + 1)]
        self.stem = _ConvAct(in_channels or channels, widths[0])
        self.down = nn.ModuleList(
            _ConvAct(widths[i], widths[i + 1], stride=2) for i in range(n_down)
        )
        self.mid = nn.Sequential(*[_ResBlock(widths[-1]) for _ in range(n_res)])
        self.up = nn.ModuleList(_ConvAct(widths[i + 1], widths[i]) for i in reversed(range(n_down)))
        self.merge = nn.ModuleList(
            _ConvAct(2 * widths[i], widths[i]) for i in reversed(range(n_down))
        )
        self.head = nn.Conv2d(widths[0], channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.n_down
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        z = self.stem(x)
        for down in self.down:
            skips.append(z)
            z = down(z)
        z = self.mid(z)
        for up, merge in zip(self.up, self.merge):
            skip = skips.pop()
            z = F.interpolate(up(z), size=skip.shape[-2:], mode="nearest")
            z = merge(torch.cat([z, skip], dim=1))
        out = self.head(z)
        return out[..., :h, :w]


class _ResMLP(nn.Module):
    """(N, D) -> raw perturbation (N, D)."""

    def __init__(self, dim: int, hidden: int, n_res: int, in_dim: int = 0):
        super().__init__()
        in_dim = in_dim or dim
        self.inp = nn.Sequential(
            nn.BatchNorm1d(in_dim, affine=False), nn.Linear(in_dim, hidden), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden, hidden),
                nn.LayerNorm(hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
            )
            for _ in range(n_res)
        )
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inp(x)
        for block in self.blocks:
            z = F.relu(z + block(z))
        return self.out(z)
