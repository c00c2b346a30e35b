"""Norm geometry shared by attacks, GAN generators, sanity checks and pictures.

A leaf module: L-inf and L2 balls (``NORMS``), projection onto a ball, clipping
into the valid input range, and per-sample perturbation sizes. Tensors are
batches ``(N, ...)``; ``eps`` is in input units. Nothing here imports torch at
module load, so importing it costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["NORMS", "bound", "clip_bounds", "perturbation_norms", "project"]

NORMS = ("linf", "l2")


def _flat_norms(t: "torch.Tensor", norm: str) -> "torch.Tensor":
    flat = t.reshape(t.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2, dim=1)


def project(delta: "torch.Tensor", eps: float, norm: str) -> "torch.Tensor":
    """Project a batch of perturbations onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        norms = _flat_norms(delta, "l2").clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def clip_bounds(x: "torch.Tensor", bounds: Optional[Tuple[float, float]]) -> "torch.Tensor":
    """Clip into ``bounds``; a no-op for ``None``."""
    if bounds is None:
        return x
    return x.clamp(bounds[0], bounds[1])


def bound(
    x: "torch.Tensor",
    x_adv: "torch.Tensor",
    eps: float,
    norm: str,
    bounds: Optional[Tuple[float, float]],
) -> "torch.Tensor":
    """Return ``x_adv`` projected onto the eps-ball around ``x`` and into bounds.

    Clipping after projection never leaves the ball: with ``x`` inside the
    bounds, clipping only shrinks each coordinate of the perturbation.
    """
    return clip_bounds(x + project(x_adv - x, eps, norm), bounds)


def perturbation_norms(x: "torch.Tensor", x_adv: "torch.Tensor", norm: str) -> "torch.Tensor":
    """Per-sample norm of ``x_adv - x``."""
    return _flat_norms(x_adv - x, norm)
