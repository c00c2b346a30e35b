"""Generator and discriminator networks for the AdvGAN attack.

Two families, chosen by the shape of one sample:

* ``(C, H, W)`` images: a small U-Net. A full-resolution stem, ``n_down``
  stride-2 convolutions, residual blocks at the lowest resolution, then
  (convolution, nearest-neighbour upsampling, merge with the skip
  connection) back to full resolution. Inputs whose height or width is not a multiple of
  ``2 ** n_down`` are padded on the bottom/right and the output is cropped,
  so the result always has exactly the input's ``(H, W)``.
* ``(D,)`` feature vectors: a residual MLP.

The :class:`Generator` returns adversarial inputs that are inside the
budget by construction. L-inf with ``bounds``: each coordinate is
``c + r * tanh(raw)``, where ``[c - r, c + r]`` is the intersection of
``[x - eps, x + eps]`` with ``bounds``, so a coordinate at a bound (the black
background of an image) still gets a gradient towards the inside (a clipped
``x + eps * tanh(raw)`` gives it none once it points outwards). L-inf
without bounds: ``eps * tanh(raw)``. L2: ``raw`` projected onto the L2 ball
of radius ``eps``, then clipped into ``bounds``. ``eps``, ``norm`` and
``bounds`` are stored with the weights (``eps`` and ``bounds`` as buffers,
``norm`` in :attr:`Generator.arch`), so a reloaded generator keeps exactly
the same bound.

A generator can also hold a per-input memory (:meth:`Generator.remember`):
raw-space offsets for a fixed set of inputs, found by exact match of the
input (:mod:`.memory`) and added to ``raw``. The transductive fitting fills
it for the evaluation inputs; other inputs get the network alone.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import project
from .blocks import Bounds, _check_eps_norm_bounds, _check_shape, _default_down, _ResMLP, _UNet
from .discriminator import build_discriminator
from .memory import match_rows, row_keys

__all__ = [
    "ARCH_VERSION",
    "Generator",
    "build_discriminator",
    "build_generator",
    "generator_from_arch",
    "input_direction",
]

ARCH_VERSION = 2

Tensor = torch.Tensor
OptTensor = Optional[torch.Tensor]

#: Weight of the gradient direction in the L-inf generator's pre-activation (tanh(1) = 0.76).
_PRIOR = 1.0


# --------------------------------------------------------------------------- generator
class Generator(nn.Module):
    """Maps a batch ``x`` of shape ``(N, *sample_shape)`` to ``x_adv`` of the same shape.

    ``x_adv - x`` lies in the ``eps``-ball of ``norm`` and ``x_adv`` inside
    ``bounds`` (when not ``None``) for every input, whatever the weights:
    L-inf uses ``delta = eps * tanh(raw)``, L2 projects ``raw`` onto the ball.
    :attr:`arch` is a JSON-able description (kind, shapes, widths, norm, eps,
    bounds) that rebuilds the same network with :func:`generator_from_arch`.
    """

    def __init__(
        self, body: nn.Module, arch: Dict[str, Any], eps: float, norm: str, bounds: Bounds
    ):
        super().__init__()
        self.body = body
        self.arch = arch
        self.norm = norm
        self.register_buffer("eps", torch.tensor(float(eps), dtype=torch.float32))
        self.register_buffer(
            "bounds",
            torch.tensor(
                list(bounds) if bounds is not None else [-math.inf, math.inf], dtype=torch.float32
            ),
        )
        shape = tuple(arch["sample_shape"])
        self.register_buffer("memory_keys", torch.zeros((0, 2), dtype=torch.int64))
        self.register_buffer("memory", torch.zeros((0, *shape), dtype=torch.float32))

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.arch["sample_shape"])

    @property
    def has_bounds(self) -> bool:
        return bool(torch.isfinite(self.bounds).all())

    @property
    def grad_input(self) -> bool:
        """Whether the generator also takes the input gradient's direction (FGSM-SDI style)."""
        return bool(self.arch.get("grad_input", False))

    def perturbation(
        self, x: Tensor, direction: OptTensor = None, offset: OptTensor = None
    ) -> Tensor:
        """The bounded perturbation (before clipping into ``bounds``), float32, shape of ``x``.

        With :attr:`grad_input`, ``direction`` (see :func:`input_direction`) is
        an input of the network and the prior of its output: ``raw + direction``
        (L-inf) or ``raw + eps * direction`` (L2), so an untrained network
        starts near the FGSM step. ``offset`` (raw space, shape of ``x``) is
        added to ``raw``; ``None`` takes it from the per-input memory.
        """
        eps = float(self.eps)
        if self.grad_input:
            if direction is None:
                raise ValueError(
                    "this generator takes the input gradient's direction: call it as "
                    "gen(x, input_direction(model, x, y, norm)) or gen.attack(model, x, y)"
                )
            d = direction.to(x.dtype)
            raw = self.body(torch.cat([x, d], dim=1)).float()
            raw = raw + (_PRIOR * d if self.norm == "linf" else eps * d)
        else:
            raw = self.body(x).float()
        if offset is None:
            offset = self.recalled(x)
        if offset is not None:
            raw = raw + offset.to(raw)
        if self.norm != "linf":
            return project(raw, eps, "l2")
        if not self.has_bounds:
            return eps * torch.tanh(raw)
        lo = torch.clamp(x - eps, min=float(self.bounds[0]))
        hi = torch.clamp(x + eps, max=float(self.bounds[1]))
        return (lo + hi) / 2 + (hi - lo) / 2 * torch.tanh(raw) - x

    def remember(self, x: torch.Tensor, offsets: torch.Tensor) -> None:
        """Keep ``offsets`` (raw space, ``(N, *sample_shape)``) for the inputs ``x``, replacing
        the memory; later calls on exactly these inputs add them to ``raw``."""
        if offsets.shape != x.shape or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"offsets must have the shape of x, (N, {', '.join(map(str, self.sample_shape))}), "
                f"got {tuple(offsets.shape)} and {tuple(x.shape)}"
            )
        dev = self.eps.device
        self.memory_keys = row_keys(x).to(dev)
        self.memory = offsets.detach().to(device=dev, dtype=torch.float32).clone()

    def recalled(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The remembered offsets of the rows of ``x`` (zeros for unknown rows), or ``None``
        when no row is known."""
        if self.memory.shape[0] == 0:
            return None
        idx = match_rows(row_keys(x), self.memory_keys)
        hit = idx >= 0
        if not bool(hit.any()):
            return None
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        out[hit] = self.memory[idx[hit]].to(x.device)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The memory's length is data, not architecture: take the stored one.
        for name in ("memory_keys", "memory"):
            stored = state_dict.get(prefix + name)
            mine = getattr(self, name)
            if (
                isinstance(stored, torch.Tensor)
                and stored.dim() == mine.dim()
                and stored.shape[1:] == mine.shape[1:]
            ):
                setattr(self, name, torch.zeros_like(mine).new_zeros(stored.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bind(self, model: Any) -> "Generator":
        """Remember ``model`` (not as a submodule) so that ``gen(x)`` alone works with
        :attr:`grad_input`: the direction is then taken at the model's own predicted labels."""
        object.__setattr__(self, "_bound_model", model)
        return self

    def _bound_direction(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        model = getattr(self, "_bound_model", None)
        if model is None or not self.grad_input:
            return None
        from ..model import frozen

        with frozen(model):
            with torch.no_grad():
                pred = model(x).argmax(dim=1)
            return input_direction(model, x, pred, self.norm)

    def attack(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x_adv`` for ``(x, y)``: the gradient direction (if used) from ``model``, then
        :meth:`forward`."""
        direction = input_direction(model, x, y, self.norm) if self.grad_input else None
        with torch.no_grad():
            return self(x, direction)

    def forward(self, x: Tensor, direction: OptTensor = None, offset: OptTensor = None) -> Tensor:
        """``x``: ``(N, *sample_shape)``; returns ``x_adv`` with the shape and dtype of ``x``.

        ``direction``: see :meth:`perturbation` (computed from the bound model when
        omitted); ``offset``: raw-space offsets, by default the per-input memory's.
        """
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"generator expects inputs of shape (N, {', '.join(map(str, self.sample_shape))}), "
                f"got {tuple(x.shape)}"
            )
        param = next(self.parameters())
        if direction is None and self.grad_input:
            direction = self._bound_direction(x)
        xf = x.to(device=param.device, dtype=torch.float32)
        if direction is not None:
            direction = direction.to(device=param.device, dtype=torch.float32)
        delta = self.perturbation(xf, direction, offset)
        out = xf + delta
        if self.has_bounds:
            out = torch.clamp(out, float(self.bounds[0]), float(self.bounds[1]))
        return out.to(x.dtype)


def input_direction(model: Any, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """The ascent direction of the cross-entropy at ``x``: its sign (L-inf) or unit-L2 gradient.

    ``model`` maps ``x`` ``(N, ...)`` to logits ``(N, K)``; ``y``: ``(N,)``.
    One forward and one backward pass; float32, shape of ``x``; no gradient
    flows back through it (Jia et al., "Prior-Guided Adversarial
    Initialization for Fast Adversarial Training" / FGSM-SDI, 2022, feed it
    to the generator).
    """
    xg = x.detach().clone().requires_grad_(True)  # the model's own dtype (float64 models too)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    grad = grad.float()
    if norm == "linf":
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / flat.view(-1, *([1] * (grad.dim() - 1)))


def build_generator(
    sample_shape: Sequence[int],
    eps: float,
    norm: str = "linf",
    bounds: Bounds = (0.0, 1.0),
    *,
    width: Optional[int] = None,
    n_res: Optional[int] = None,
    n_down: Optional[int] = None,
    grad_input: bool = False,
) -> Generator:
    """Build a :class:`Generator` for samples of ``sample_shape``.

    ``sample_shape``: ``(C, H, W)`` (H, W >= 4; a U-Net with ``n_down`` stride-2
    stages: 1 below 28 pixels, 2 for 28-55, 3 for 56-111, else 4) or ``(D,)`` (a residual MLP).
    ``width``: channels of the first conv stage (default 16) or hidden units
    of the MLP (default ``clamp(2 * D, 64, 512)``); ``n_res``: residual blocks
    (default 2). ``grad_input``: the network also takes the input
    gradient's direction (:func:`input_direction`) as extra channels or
    features (call the generator as ``gen(x, direction)``). Weights are
    initialised from torch's global RNG: seed it (or use
    :func:`torch.random.fork_rng`) for reproducible weights.
    """
    shape = _check_shape(sample_shape)
    eps_f, norm, bounds = _check_eps_norm_bounds(eps, norm, bounds)
    if width is not None and (not isinstance(width, int) or width < 2):
        raise ValueError(f"width must be an integer >= 2, got {width!r}")
    if n_res is not None and (not isinstance(n_res, int) or n_res < 0):
        raise ValueError(f"n_res must be a non-negative integer, got {n_res!r}")
    n_res = 2 if n_res is None else n_res
    arch: Dict[str, Any] = {
        "version": ARCH_VERSION,
        "sample_shape": list(shape),
        "norm": norm,
        "eps": eps_f,
        "bounds": list(bounds) if bounds is not None else None,
        "n_res": n_res,
    }
    if grad_input:
        arch["grad_input"] = True
    if len(shape) == 3:
        c, h, w = shape
        if n_down is None:
            n_down = _default_down(h, w)
        if not isinstance(n_down, int) or not 0 <= n_down <= 6:
            raise ValueError(f"n_down must be an integer in [0, 6], got {n_down!r}")
        width = 16 if width is None else width
        arch.update(kind="unet", width=width, n_down=n_down)
        body: nn.Module = _UNet(c, width, n_down, n_res, in_channels=2 * c if grad_input else 0)
    else:
        (d,) = shape
        width = int(min(512, max(64, 2 * d))) if width is None else width
        arch.update(kind="mlp", width=width)
        body = _ResMLP(d, width, n_res, in_dim=2 * d if grad_input else 0)
    return Generator(body, arch, eps_f, norm, bounds)


def generator_from_arch(arch: Dict[str, Any]) -> Generator:
    """Rebuild an (untrained) generator from :attr:`Generator.arch`."""
    if not isinstance(arch, dict) or arch.get("version") != ARCH_VERSION:
        raise ValueError(
            f"arch must be a generator arch dict of version {ARCH_VERSION}, got {arch!r}"
        )
    bounds = tuple(arch["bounds"]) if arch.get("bounds") is not None else None
    return build_generator(
        tuple(arch["sample_shape"]),
        arch["eps"],
        arch["norm"],
        bounds,
        width=arch["width"],
        n_res=arch["n_res"],
        n_down=arch.get("n_down"),
        grad_input=bool(arch.get("grad_input", False)),
    )
