"""AdvGAN's discriminator: a small network that scores samples as real or generated.

The default attack does not use it (``gan_weight=0``); :class:`~.train.GanConfig`
keeps it for trainings that want perturbations to look like data (Xiao et
al., "Generating Adversarial Examples with Adversarial Networks", IJCAI 2018).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .blocks import _check_shape

__all__ = ["build_discriminator"]


class _ConvDiscriminator(nn.Module):
    def __init__(self, channels: int, width: int, n_stages: int):
        super().__init__()
        layers = []
        cin = channels
        for i in range(n_stages):
            cout = width * (2**i)
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x).mean(dim=(2, 3))).squeeze(1)


class _MLPDiscriminator(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build_discriminator(sample_shape: Sequence[int], width: int = 16) -> nn.Module:
    """A small discriminator: ``(N, *sample_shape)`` -> one real/fake score per sample ``(N,)``.

    Images get 2-4 stride-2 convolutions and global average pooling; feature
    vectors get a two-layer MLP.
    """
    shape = _check_shape(sample_shape)
    if not isinstance(width, int) or width < 2:
        raise ValueError(f"width must be an integer >= 2, got {width!r}")
    if len(shape) == 3:
        c, h, w = shape
        stages = int(min(4, max(2, math.floor(math.log2(min(h, w))) - 1)))
        return _ConvDiscriminator(c, width, stages)
    (d,) = shape
    return _MLPDiscriminator(d, int(min(256, max(32, d))))
