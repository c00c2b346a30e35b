"""Square Attack: a score-based random search that needs no gradient (our own code).

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020; AutoAttack's
gradient-free member. It finds what gradient attacks cannot where the model's
input gradient is zero, missing or misleading (a step function, a quantiser),
which is why the strength check of the ``gan`` attack uses it.

L-inf: the start is a vertical-stripe perturbation of size eps (each column of each
channel ``+eps`` or ``-eps``); each query moves one random square window (one
channel value per window, ``+eps`` or ``-eps``) and is kept when it lowers the
margin ``z_y - max_{j != y} z_j``. The window covers a share ``p`` of the image,
halved at fixed fractions of the query budget (the paper's schedule, starting at
``p = 0.8``). L2 (a simplification of the paper's L2 update): each query adds
Gaussian noise on a random square window, scaled to a ``p``-dependent share of
eps, and projects back onto the eps-ball. Feature vectors ``(N, D)`` use windows
of consecutive features. Per sample, the search stops at its first success; the
result is that success, else the point of lowest margin. Seeded by ``cfg.seed``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..geometry import bound
from .base import AttackConfig, Model
from .steps import margins

__all__ = ["square_search", "P_INIT"]

#: Share of the image the first windows cover (AutoAttack's L-inf default).
P_INIT = 0.8
#: Fractions of a 10,000-query budget at which the window share halves (the paper's schedule).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _share(i: int, queries: int) -> float:
    it = int(i / max(queries, 1) * 10000)
    return P_INIT / 2 ** sum(it > h for h in _HALVINGS)


def _windows(shape, k: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Bool masks ``(k, *shape)``: one random square window (consecutive features for a
    ``(D,)`` sample) per sample, covering a share ``p`` of the spatial positions."""
    if len(shape) == 3:
        _, h, w = shape
        side = max(1, min(max(min(h, w) - 1, 1), round(math.sqrt(p * h * w))))
        r = torch.randint(0, h - side + 1, (k, 1, 1), generator=gen)
        c = torch.randint(0, w - side + 1, (k, 1, 1), generator=gen)
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        inside = (rows >= r) & (rows < r + side) & (cols >= c) & (cols < c + side)
        return inside.unsqueeze(1).expand(k, *shape)
    (d,) = shape
    side = max(1, min(d, round(p * d)))
    start = torch.randint(0, d - side + 1, (k, 1), generator=gen)
    pos = torch.arange(d).view(1, d)
    return (pos >= start) & (pos < start + side)


def _stripes(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """The L-inf start: ``+-eps`` constant along each column (the last axis) per channel."""
    shape = (x.shape[0], *x.shape[1:-2], 1, x.shape[-1]) if x.dim() == 4 else x.shape
    signs = torch.randint(0, 2, shape, generator=gen).to(x) * 2 - 1
    return (eps * signs).expand_as(x)


def square_search(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    queries: int,
    tally: Optional[Callable[[torch.Tensor], None]] = None,
):
    """Square Attack on one batch; returns ``(x_result, fooled)``.

    ``queries``: forward passes per sample after the start (each sample stops at its
    first success). ``tally(idx)`` is called before every forward pass with the
    indices (into ``x``) of the samples it takes.
    """
    gen = torch.Generator().manual_seed(int(cfg.seed))
    n = x.shape[0]
    if cfg.norm == "linf":
        delta = _stripes(x, cfg.eps, gen)
    else:
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
        delta = (
            noise
            * cfg.eps
            / noise.reshape(n, -1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        )
    x_adv = bound(x, x + delta, cfg.eps, cfg.norm, cfg.bounds).detach()
    active = torch.arange(n, device=x.device)
    if tally is not None:
        tally(active)
    with torch.no_grad():
        loss = margins(model(x_adv), y)
    fooled = loss < 0
    for i in range(queries):
        active = (~fooled).nonzero(as_tuple=True)[0]
        if active.numel() == 0:
            break
        p = _share(i, queries)
        mask = _windows(tuple(x.shape[1:]), active.numel(), p, gen).to(x.device)
        cand = _proposal(x[active], x_adv[active], mask, cfg, p, gen)
        cand = bound(x[active], cand, cfg.eps, cfg.norm, cfg.bounds)
        if tally is not None:
            tally(active)
        with torch.no_grad():
            new = margins(model(cand), y[active])
        better = new < loss[active]
        take = active[better]
        x_adv[take] = cand[better]
        loss[take] = new[better]
        fooled[take] = new[better] < 0
    return x_adv, fooled


def _proposal(x0, current, mask, cfg: AttackConfig, p: float, gen) -> torch.Tensor:
    """The candidates: inside each sample's window ``x0 +- eps`` with one sign per channel
    (L-inf), or the current values plus Gaussian noise of norm ``sqrt(p) * eps`` (L2)."""
    k = current.shape[0]
    if cfg.norm == "linf":
        shape = (k, current.shape[1], 1, 1) if current.dim() == 4 else (k, 1)
        sign = torch.randint(0, 2, shape, generator=gen).to(current) * 2 - 1
        return torch.where(mask, x0 + cfg.eps * sign, current)
    noise = torch.randn(current.shape, generator=gen, dtype=torch.float64).to(current) * mask
    size = noise.reshape(k, -1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (current.dim() - 1)))
    return current + noise * (math.sqrt(p) * cfg.eps / size)
