"""The generator network of the ``gan`` attack: an amortised, eps-conditioned AdvGAN generator.

Two families, chosen by the shape of one sample:

* ``(C, H, W)`` images: a small U-Net. A full-resolution stem, ``n_down``
  stride-2 convolutions, residual blocks at the lowest resolution, then
  (convolution, nearest-neighbour upsampling, merge with the skip
  connection) back to full resolution. Inputs whose height or width is not a
  multiple of ``2 ** n_down`` are padded on the bottom/right and the output is
  cropped, so the result always has exactly the input's ``(H, W)``.
* ``(D,)`` feature vectors: a residual MLP.

One generator serves every eps of a family (AdvGAN, Xiao et al. 2018, trains
one generator per eps; here eps is an input, as in conditional generators):
the network sees ``x`` and a constant map of ``log(eps)`` normalised over
:attr:`Generator.eps_range`, and its raw output is turned into a perturbation
that is inside the budget by construction:

* L-inf with ``bounds``: each coordinate is ``c + r * tanh(raw)``, where
  ``[c - r, c + r]`` is the intersection of ``[x - eps, x + eps]`` with
  ``bounds``, so a coordinate at a bound (the black background of an image)
  still gets a gradient towards the inside;
* L-inf without bounds: ``eps * tanh(raw)``;
* L2: ``eps * raw / ||raw||_2`` (the sphere of radius eps), then clipped into
  ``bounds``.

``norm``, ``bounds`` and ``eps_range`` are stored with the weights (``bounds``
and ``eps_range`` as buffers, ``norm`` in :attr:`Generator.arch`), so a
reloaded generator keeps exactly the same geometry.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..geometry import bound
from .blocks import (
    Bounds,
    _check_eps_range,
    _check_norm_bounds,
    _check_shape,
    _default_down,
    _ResMLP,
    _UNet,
)
from .discriminator import build_discriminator

__all__ = [
    "ARCH_VERSION",
    "Generator",
    "build_discriminator",
    "build_generator",
    "generator_from_arch",
]

#: Bumped whenever the network or the meaning of its output changes.
ARCH_VERSION = 3

Tensor = torch.Tensor
Eps = Union[float, Tensor]

#: The eps input is clamped to this many half-ranges around the middle of ``eps_range``.
_COND_CLAMP = 2.0


class Generator(nn.Module):
    """Maps a batch ``x`` of shape ``(N, *sample_shape)`` and ``eps`` to ``x_adv`` of that shape.

    ``x_adv - x`` lies in the ``eps``-ball of ``norm`` and ``x_adv`` inside ``bounds``
    (when not ``None``) for every input and every eps, whatever the weights. ``eps``
    is a positive float or a float tensor of shape ``(N,)`` (one budget per sample,
    in input units); :attr:`eps` (``None`` until set, e.g. by the ``gan_generator``
    fixture) is used when the call gives none. :attr:`arch` is a JSON-able
    description that rebuilds the same network with :func:`generator_from_arch`.
    """

    def __init__(
        self,
        body: nn.Module,
        arch: Dict[str, Any],
        norm: str,
        bounds: Bounds,
        eps_range: Tuple[float, float],
    ):
        super().__init__()
        self.body = body
        self.arch = arch
        self.norm = norm
        self.eps: Optional[float] = None
        self.register_buffer(
            "bounds",
            torch.tensor(
                list(bounds) if bounds is not None else [-math.inf, math.inf], dtype=torch.float32
            ),
        )
        self.register_buffer("eps_range", torch.tensor(list(eps_range), dtype=torch.float32))

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.arch["sample_shape"])

    @property
    def has_bounds(self) -> bool:
        return bool(torch.isfinite(self.bounds).all())

    def _eps_per_sample(self, x: Tensor, eps: Optional[Eps]) -> Tensor:
        """``eps`` as a float32 tensor ``(N,)`` on ``x``'s device; ValueError when missing or
        not positive."""
        if eps is None:
            eps = self.eps
        if eps is None:
            raise ValueError("the generator needs eps: call it as gen(x, eps) or set gen.eps first")
        e = torch.as_tensor(eps, dtype=torch.float32, device=x.device)
        if e.dim() == 0:
            e = e.expand(x.shape[0])
        if e.shape != (x.shape[0],) or not bool((e > 0).all()) or not bool(e.isfinite().all()):
            raise ValueError(
                f"eps must be a positive number or a tensor of shape ({x.shape[0]},) of "
                f"positive numbers, got {eps!r}"
            )
        return e

    def _condition(self, x: Tensor, e: Tensor) -> Tensor:
        """``x`` with the normalised ``log(eps)`` appended as one more channel (or feature)."""
        lo, hi = (float(v) for v in self.eps_range)
        mid, half = (math.log(lo) + math.log(hi)) / 2, max((math.log(hi) - math.log(lo)) / 2, 0.5)
        c = ((e.log() - mid) / half).clamp(-_COND_CLAMP, _COND_CLAMP).to(x.dtype)
        c = c.view(-1, *([1] * (x.dim() - 1))).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([x, c], dim=1)

    def perturbation(self, x: Tensor, eps: Optional[Eps] = None) -> Tensor:
        """The bounded perturbation (before clipping into ``bounds``): float32, shape of ``x``."""
        e = self._eps_per_sample(x, eps)
        raw = self.body(self._condition(x, e)).float()
        ev = e.view(-1, *([1] * (x.dim() - 1)))
        if self.norm == "l2":
            size = raw.reshape(raw.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
            return raw * (e / size).view_as(ev)
        if not self.has_bounds:
            return ev * torch.tanh(raw)
        lo = torch.clamp(x - ev, min=float(self.bounds[0]))
        hi = torch.clamp(x + ev, max=float(self.bounds[1]))
        return (lo + hi) / 2 + (hi - lo) / 2 * torch.tanh(raw) - x

    def forward(self, x: Tensor, eps: Optional[Eps] = None) -> Tensor:
        """``x``: ``(N, *sample_shape)``, any float dtype and device; returns ``x_adv`` with the
        shape and dtype of ``x``. Raises ValueError for another sample shape or a bad eps."""
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"generator expects inputs of shape (N, {', '.join(map(str, self.sample_shape))}), "
                f"got {tuple(x.shape)}"
            )
        param = next(self.parameters())
        xf = x.to(device=param.device, dtype=torch.float32)
        e = self._eps_per_sample(xf, eps)
        out = xf + self.perturbation(xf, e)
        b = (float(self.bounds[0]), float(self.bounds[1])) if self.has_bounds else None
        if bool((e == e[0]).all()):  # one eps: project to the last bit (rounding of c + r tanh)
            out = bound(xf, out, float(e[0]), self.norm, b)
        elif b is not None:
            out = out.clamp(*b)
        return out.to(x.dtype)


def build_generator(
    sample_shape: Sequence[int],
    norm: str = "linf",
    bounds: Bounds = (0.0, 1.0),
    eps_range: Tuple[float, float] = (1 / 128, 0.5),
    *,
    width: Optional[int] = None,
    n_res: Optional[int] = None,
    n_down: Optional[int] = None,
) -> Generator:
    """Build a :class:`Generator` for samples of ``sample_shape``.

    ``sample_shape``: ``(C, H, W)`` (H, W >= 4; a U-Net with ``n_down`` stride-2
    stages: 1 below 28 pixels, 2 for 28-55, 3 for 56-111, else 4) or ``(D,)`` (a
    residual MLP). ``eps_range``: the budgets (input units) the generator is trained
    for; other eps still give bounded outputs. ``width``: channels of the first conv
    stage (default 16) or hidden units of the MLP (default ``clamp(2 * D, 64, 512)``);
    ``n_res``: residual blocks (default 2). Weights are initialised from torch's
    global RNG: seed it (or use :func:`torch.random.fork_rng`) for reproducible
    weights. Raises ValueError naming the argument that is out of range.
    """
    shape = _check_shape(sample_shape)
    norm, bounds = _check_norm_bounds(norm, bounds)
    eps_range = _check_eps_range(eps_range)
    if width is not None and (not isinstance(width, int) or width < 2):
        raise ValueError(f"width must be an integer >= 2, got {width!r}")
    if n_res is not None and (not isinstance(n_res, int) or n_res < 0):
        raise ValueError(f"n_res must be a non-negative integer, got {n_res!r}")
    n_res = 2 if n_res is None else n_res
    arch: Dict[str, Any] = {
        "version": ARCH_VERSION,
        "sample_shape": list(shape),
        "norm": norm,
        "bounds": list(bounds) if bounds is not None else None,
        "eps_range": list(eps_range),
        "n_res": n_res,
    }
    if len(shape) == 3:
        c, h, w = shape
        if n_down is None:
            n_down = _default_down(h, w)
        if not isinstance(n_down, int) or not 0 <= n_down <= 6:
            raise ValueError(f"n_down must be an integer in [0, 6], got {n_down!r}")
        width = 16 if width is None else width
        arch.update(kind="unet", width=width, n_down=n_down)
        body: nn.Module = _UNet(c, width, n_down, n_res, in_channels=c + 1)
    else:
        (d,) = shape
        width = int(min(512, max(64, 2 * d))) if width is None else width
        arch.update(kind="mlp", width=width)
        body = _ResMLP(d, width, n_res, in_dim=d + 1)
    return Generator(body, arch, norm, bounds, eps_range)


def generator_from_arch(arch: Dict[str, Any]) -> Generator:
    """Rebuild an (untrained) generator from :attr:`Generator.arch`; ValueError for an arch
    of another version."""
    if not isinstance(arch, dict) or arch.get("version") != ARCH_VERSION:
        raise ValueError(
            f"arch must be a generator arch dict of version {ARCH_VERSION}, got {arch!r}"
        )
    bounds = tuple(arch["bounds"]) if arch.get("bounds") is not None else None
    return build_generator(
        tuple(arch["sample_shape"]),
        arch["norm"],
        bounds,
        tuple(arch["eps_range"]),
        width=arch["width"],
        n_res=arch["n_res"],
        n_down=arch.get("n_down"),
    )
