"""Norm geometry shared by attacks, GAN generators, sanity checks and pictures.

A leaf module, written once per norm as Foolbox's gradient-descent attacks are
(one class per norm for the size, projection, ascent direction and random
starts) so that no caller branches on the norm itself:

* :func:`project`, :func:`clip_bounds`, :func:`bound`: the eps-ball of
  ``NORMS`` ("linf", "l2") and the valid input range;
* :func:`perturbation_norms`, :func:`ascent_direction`,
  :func:`uniform_ball_noise`, :func:`unit_noise`: sizes, steepest-ascent
  directions and random points of the ball;
* :class:`KeepWorst`: per sample the worst case found so far, the first
  success, else the highest loss.

Tensors are batches ``(N, ...)`` of any float dtype; ``eps`` is in input
units. An unknown norm raises ``ValueError``. Nothing here imports torch at
module load, so importing it costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "NORMS",
    "KeepWorst",
    "ascent_direction",
    "bound",
    "clip_bounds",
    "per_sample",
    "perturbation_norms",
    "project",
    "takes_over",
    "uniform_ball_noise",
    "unit_noise",
]

NORMS = ("linf", "l2")
_TINY = 1e-12


def per_sample(v: "torch.Tensor", like: "torch.Tensor") -> "torch.Tensor":
    """``v`` of shape (N,) viewed as (N, 1, ..., 1) to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class _Linf:
    @staticmethod
    def sizes(flat: "torch.Tensor") -> "torch.Tensor":
        return flat.abs().amax(dim=1)

    @staticmethod
    def project(delta: "torch.Tensor", eps: float) -> "torch.Tensor":
        return delta.clamp(-eps, eps)

    @staticmethod
    def ascent(grad: "torch.Tensor") -> "torch.Tensor":
        return grad.sign()

    @staticmethod
    def draw(shape, generator) -> "torch.Tensor":
        import torch

        return torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1

    @classmethod
    def uniform(cls, shape, eps: float, generator) -> "torch.Tensor":
        return cls.draw(shape, generator) * eps


class _L2:
    @staticmethod
    def sizes(flat: "torch.Tensor") -> "torch.Tensor":
        return flat.norm(p=2, dim=1)

    @staticmethod
    def project(delta: "torch.Tensor", eps: float) -> "torch.Tensor":
        norms = _L2.sizes(delta.reshape(delta.shape[0], -1)).clamp_min(_TINY)
        return delta * per_sample((eps / norms).clamp(max=1.0), delta)

    @staticmethod
    def ascent(grad: "torch.Tensor") -> "torch.Tensor":
        return grad / per_sample(_L2.sizes(grad.reshape(grad.shape[0], -1)).clamp_min(_TINY), grad)

    @staticmethod
    def draw(shape, generator) -> "torch.Tensor":
        import torch

        return torch.randn(shape, generator=generator, dtype=torch.float64)

    @classmethod
    def uniform(cls, shape, eps: float, generator) -> "torch.Tensor":
        import math

        import torch

        direction = cls.ascent(cls.draw(shape, generator))
        d = math.prod(shape[1:])
        radius = torch.rand(shape[0], generator=generator, dtype=torch.float64) ** (1.0 / d) * eps
        return direction * per_sample(radius, direction)


_BALLS = {"linf": _Linf, "l2": _L2}


def _ball(norm: str):
    try:
        return _BALLS[norm]
    except (KeyError, TypeError):
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}") from None


def project(delta: "torch.Tensor", eps: float, norm: str) -> "torch.Tensor":
    """Project a batch of perturbations onto the eps-ball of ``norm``."""
    return _ball(norm).project(delta, eps)


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
    """Per-sample norm of ``x_adv - x``, shape (N,), in the dtype of the inputs."""
    delta = x_adv - x
    return _ball(norm).sizes(delta.reshape(delta.shape[0], -1))


def ascent_direction(grad: "torch.Tensor", norm: str) -> "torch.Tensor":
    """The steepest-ascent step of unit size in ``norm``: ``sign(grad)`` (L-inf) or
    ``grad / ||grad||_2`` per sample (L2)."""
    return _ball(norm).ascent(grad)


def uniform_ball_noise(shape, eps: float, norm: str, generator) -> "torch.Tensor":
    """float64 CPU noise of ``shape``: per sample a uniformly random point of the eps-ball.

    Drawn from the CPU ``torch.Generator`` ``generator``, so a seed gives the
    same noise on every device (PGD's random start, Madry et al. 2018).
    """
    return _ball(norm).uniform(tuple(shape), eps, generator)


def unit_noise(shape, norm: str, generator) -> "torch.Tensor":
    """float64 CPU noise ``t / ||t||`` of ``shape`` and per-sample ``norm`` 1 (up to 1e-12).

    ``t`` is uniform in [-1, 1] (L-inf) or standard normal (L2): AutoAttack's
    random start is ``x + eps * unit_noise(...)`` (Croce and Hein 2020).
    """
    ball = _ball(norm)
    t = ball.draw(tuple(shape), generator)
    return t / (per_sample(ball.sizes(t.reshape(t.shape[0], -1)), t) + _TINY)


def takes_over(
    fooled: "torch.Tensor",
    loss: "torch.Tensor",
    new_fooled: "torch.Tensor",
    new_loss: "torch.Tensor",
) -> "torch.Tensor":
    """The keep-the-worst rule, per sample (bool ``(n,)``): a candidate replaces the worst
    case so far (``fooled``, ``loss``) when that has not fooled the model yet and the
    candidate does (``new_fooled``) or has a higher loss (``new_loss``). A first success
    is never replaced; a NaN loss never takes over."""
    return ~fooled & (new_fooled | (new_loss > loss))


class KeepWorst:
    """Per sample, the worst case found so far: the first success, else the highest loss.

    ``x`` (N, ...) is the starting result (copied). :meth:`offer` hands in
    candidates; :attr:`x`, :attr:`fooled` (bool (N,)) and :attr:`loss`
    (float32 (N,), ``-inf`` until a candidate is taken) hold the result. A first
    success is never replaced, so restarts and targeted runs keep the
    perturbation that fooled the model first.
    """

    def __init__(self, x: "torch.Tensor"):
        import torch

        n = x.shape[0]
        self.x = x.clone()
        self.fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.loss = torch.full((n,), -float("inf"), device=x.device)

    def open(self) -> "torch.Tensor":
        """Indices (int64) of the samples not fooled yet."""
        return (~self.fooled).nonzero(as_tuple=True)[0]

    def offer(
        self,
        idx: "torch.Tensor",
        x_new: "torch.Tensor",
        fooled: "torch.Tensor",
        loss: "torch.Tensor",
    ) -> None:
        """Candidates ``x_new`` for samples ``idx``: each one taken when it fools the model
        (``fooled``) or its ``loss`` beats the best so far, unless the sample is already
        fooled."""
        take = takes_over(self.fooled[idx], self.loss[idx], fooled, loss)
        chosen = idx[take]
        self.x[chosen] = x_new[take]
        self.loss[chosen] = loss[take]
        self.fooled[idx[fooled]] = True
