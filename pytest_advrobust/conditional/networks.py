"""Networks of the generated-samples evaluation: conditional generator, discriminator, reference.

Two families, chosen by the shape of one sample (as the AdvGAN networks are):

* ``(C, H, W)`` images with ``H`` and ``W`` multiples of 4 and at least 16:
  a DCGAN-style generator (Radford et al. 2016): a linear layer from
  ``[noise, one-hot class]`` to ``(4w, H/4, W/4)``, then twice nearest
  upsampling and a 3x3 convolution (cheaper on CPUs than transposed
  convolutions, and free of their checkerboard artefacts), with batch norm;
  a discriminator of two stride-2 convolutions; a reference classifier of
  two conv + max-pool stages.
* anything else: MLPs on the flattened sample, reshaped back.

Every network carries the data's ``center`` and ``scale`` as buffers (shape
of one sample). The generator's output is ``center + scale * tanh(raw)``, so
it always lies inside the input ``bounds`` (``center``/``scale`` are the
bounds' midpoint and half-width) or, for unbounded features, within three
standard deviations of the training mean. The discriminator and the
reference see ``(x - center) / scale``. The generator also stores the
dataset's class labels (``labels``, int64 ``(K,)``), so that class index
``k`` of the one-hot input means label ``labels[k]``.

:attr:`arch` (a JSON-able dict) is part of the cache key and rebuilds the
network with :func:`from_arch`; the weights come from the cache.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "ARCH_VERSION",
    "ConditionalGenerator",
    "Discriminator",
    "ReferenceClassifier",
    "arch_for",
    "from_arch",
]

ARCH_VERSION = 1


def arch_for(
    sample_shape: Sequence[int],
    num_classes: int,
    role: str,
    noise_dim: Optional[int] = None,
    width: Optional[int] = None,
) -> Dict[str, Any]:
    """The architecture dict for samples of ``sample_shape`` and ``num_classes`` classes.

    ``role`` is ``"generator"``, ``"discriminator"`` or ``"reference"``.
    """
    shape = [int(s) for s in sample_shape]
    conv = len(shape) == 3 and shape[1] % 4 == 0 and shape[2] % 4 == 0 and min(shape[1:]) >= 16
    dim = 1
    for s in shape:
        dim *= s
    return {
        "version": ARCH_VERSION,
        "role": role,
        "kind": "conv" if conv else "mlp",
        "sample_shape": shape,
        "classes": int(num_classes),
        "noise_dim": int(noise_dim or (64 if conv else 32)),
        "width": int(width or (16 if conv else max(64, min(256, 2 * dim)))),
    }


class _Scaled(nn.Module):
    """Holds the data's ``center`` and ``scale`` (shape of one sample) as buffers."""

    def __init__(self, arch: Dict[str, Any]):
        super().__init__()
        self.arch = dict(arch)
        self.sample_shape: Tuple[int, ...] = tuple(arch["sample_shape"])
        self.num_classes = int(arch["classes"])
        self.register_buffer("center", torch.zeros(self.sample_shape))
        self.register_buffer("scale", torch.ones(self.sample_shape))

    def set_range(self, center: torch.Tensor, scale: torch.Tensor) -> None:
        with torch.no_grad():
            self.center.copy_(center.to(self.center).expand_as(self.center))
            self.scale.copy_(scale.to(self.scale).expand_as(self.scale))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale


def _dim(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class ConditionalGenerator(_Scaled):
    """``(noise (N, noise_dim) float32, class index (N,) int64) -> samples (N, *sample_shape)``.

    Class indices run over ``0..K-1``; ``labels[k]`` is the dataset label of
    index ``k``. Outputs lie in ``center +- scale`` (inside the bounds).
    :meth:`sample` draws labelled samples from a seed.
    """

    def __init__(self, arch: Dict[str, Any]):
        super().__init__(arch)
        k, z, w = self.num_classes, int(arch["noise_dim"]), int(arch["width"])
        self.noise_dim = z
        self.register_buffer("labels", torch.arange(k, dtype=torch.int64))
        if arch["kind"] == "conv":
            c, h, wd = self.sample_shape
            self.start = (4 * w, h // 4, wd // 4)
            self.fc = nn.Linear(z + k, _dim(self.start))
            self.body = nn.Sequential(
                nn.BatchNorm2d(4 * w),
                nn.ReLU(),
                nn.Upsample(scale_factor=2),
                nn.Conv2d(4 * w, 2 * w, 3, 1, 1),
                nn.BatchNorm2d(2 * w),
                nn.ReLU(),
                nn.Upsample(scale_factor=2),
                nn.Conv2d(2 * w, c, 3, 1, 1),
            )
        else:
            self.start = (w,)
            self.fc = nn.Linear(z + k, w)
            self.body = nn.Sequential(
                nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, _dim(self.sample_shape))
            )

    def forward(self, noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(index.long(), self.num_classes).to(noise.dtype)
        h = self.fc(torch.cat([noise, onehot], dim=1)).view(-1, *self.start)
        raw = self.body(h).view(-1, *self.sample_shape)
        return self.center + self.scale * torch.tanh(raw)

    def index_of(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset labels ``(N,)`` -> class indices ``(N,)``; ValueError for an unknown label."""
        table = {int(v): i for i, v in enumerate(self.labels.tolist())}
        unknown = sorted({int(v) for v in labels.tolist()} - set(table))
        if unknown:
            raise ValueError(
                f"class {unknown[0]} is not one the generator was trained on "
                f"(classes {sorted(table)})"
            )
        return torch.tensor([table[int(v)] for v in labels.tolist()], dtype=torch.int64)

    @torch.no_grad()
    def sample(
        self, n: int, seed: int = 0, classes: Optional[Sequence[int]] = None, batch_size: int = 256
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` labelled samples, balanced over ``classes`` (default: all), from ``seed``.

        Returns ``(x float32 (n, *sample_shape), y int64 (n,))`` on the
        generator's device; the same seed gives the same samples. Raises
        ValueError for a class the generator was not trained on.
        """
        labels = (
            self.labels.cpu()
            if classes is None
            else torch.as_tensor(list(classes), dtype=torch.int64)
        )
        index = self.index_of(labels)
        if int(n) < 1 or index.numel() == 0:
            raise ValueError(f"n must be at least 1 and classes non-empty, got n={n!r}")
        g = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(int(n), generator=g)
        idx = index[torch.arange(int(n)) % index.numel()][order]
        noise = torch.randn(int(n), self.noise_dim, generator=g)
        dev = self.center.device
        out = [
            self(noise[s : s + batch_size].to(dev), idx[s : s + batch_size].to(dev))
            for s in range(0, int(n), batch_size)
        ]
        return torch.cat(out), self.labels[idx.to(dev)]


class _Judge(_Scaled):
    """A network that reads samples through ``body``: :meth:`_conv_body` for images, else
    :meth:`_mlp_body`; each returns the body and the width of its output."""

    def __init__(self, arch: Dict[str, Any]):
        super().__init__(arch)
        k, w = self.num_classes, int(arch["width"])
        if arch["kind"] == "conv":
            self.body, self.features = self._conv_body(self.sample_shape, k, w)
        else:
            self.body, self.features = self._mlp_body(_dim(self.sample_shape), k, w)


class Discriminator(_Judge):
    """``samples (N, *sample_shape) -> (realness (N,), class logits (N, K))``.

    Every layer but the class head is spectrally normalised."""

    def __init__(self, arch: Dict[str, Any]):
        super().__init__(arch)
        self.realness = spectral_norm(nn.Linear(self.features, 1))
        self.classify = nn.Linear(self.features, self.num_classes)

    @staticmethod
    def _conv_body(shape, k: int, w: int) -> Tuple[nn.Module, int]:
        c, h, wd = shape
        body = nn.Sequential(
            spectral_norm(nn.Conv2d(c, 2 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        return body, 4 * w * (h // 4) * (wd // 4)

    @staticmethod
    def _mlp_body(d: int, k: int, w: int) -> Tuple[nn.Module, int]:
        body = nn.Sequential(
            nn.Flatten(),
            spectral_norm(nn.Linear(d, w)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Linear(w, w)),
            nn.LeakyReLU(0.2),
        )
        return body, w

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.normalise(x))
        return self.realness(h).squeeze(1), self.classify(h)


class ReferenceClassifier(_Judge):
    """The validity judge: ``samples (N, *sample_shape) -> class-index logits (N, K)``."""

    @staticmethod
    def _conv_body(shape, k: int, w: int) -> Tuple[nn.Module, int]:
        c, h, wd = shape
        body = nn.Sequential(
            nn.Conv2d(c, w, 3, 1, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, 1, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * w * (h // 4) * (wd // 4), 4 * w),
            nn.ReLU(),
            nn.Linear(4 * w, k),
        )
        return body, k

    @staticmethod
    def _mlp_body(d: int, k: int, w: int) -> Tuple[nn.Module, int]:
        layers = (nn.Flatten(), nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU())
        return nn.Sequential(*layers, nn.Linear(w, k)), k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalise(x))


_ROLES = {
    "generator": ConditionalGenerator,
    "discriminator": Discriminator,
    "reference": ReferenceClassifier,
}


def from_arch(arch: Dict[str, Any]) -> nn.Module:
    """A freshly initialised network for ``arch`` (seed torch's RNG first for a fixed init)."""
    return _ROLES[arch["role"]](arch)
