"""APGD-CE, targeted APGD-T and a cheap AutoAttack-style ensemble (our own code).

Auto-PGD (F. Croce and M. Hein, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", ICML 2020) with
AutoAttack's default schedule: ``n_iter = cfg.steps`` iterations (AutoAttack
uses 100), a start at a random point of the eps-ball, step size ``2 * eps``,
momentum 0.75 (none on the first step), and checkpoints after
``0.22 * n_iter`` iterations, then intervals shrinking by ``0.03 * n_iter``
down to ``0.06 * n_iter``. At a checkpoint a sample's step size halves, and
the sample restarts from its best point, when the loss rose in at most 75% of
the iterations since the last checkpoint, or when its step size was kept and
its best loss did not improve. APGD-CE ascends the cross-entropy; APGD-T the
targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` against
each sample's ``cfg.targets`` (default 9) most likely wrong classes in turn.

Every quantity of the schedule is per sample, so a sample leaves the loop at
its first success without changing any other sample's run; the result is
that first success, else the point of highest loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .base import AttackConfig, AttackContext, Model, clip_bounds, project

__all__ = ["apgd", "apgd_t", "autoattack_lite", "dlr_targeted_loss", "DEFAULT_TARGETS"]

DEFAULT_TARGETS = 9
LITE_TARGETS = 3
MOMENTUM = 0.75
RHO = 0.75


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss per sample, (n,) float32 (Croce and Hein 2020, eq. 8).

    The DLR loss needs 4 classes; with fewer it is the plain targeted margin
    ``z_t - z_y``.
    """
    z = logits.float()
    num = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, target[:, None]).squeeze(1)
    if z.shape[1] < 4:
        return -num
    s = z.sort(dim=1, descending=True).values
    return -num / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3]) + 1e-12)


def _ce_loss(logits, y, target):
    return F.cross_entropy(logits.float(), y, reduction="none")


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / flat.view(-1, *([1] * (grad.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """AutoAttack's start ``x + eps * t / ||t||``: t uniform in [-1, 1] (L-inf) or Gaussian (L2)."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1
        scale = t.reshape(x.shape[0], -1).abs().amax(dim=1)
    else:
        t = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        scale = t.reshape(x.shape[0], -1).norm(p=2, dim=1)
    t = t / (scale.view(-1, *([1] * (x.dim() - 1))) + 1e-12)
    return x + eps * t.to(device=x.device, dtype=x.dtype)


class _State:
    """The per-sample state of one APGD run, kept for the samples still attacked."""

    FIELDS = (
        "idx",
        "x0",
        "y",
        "t",
        "x",
        "x_old",
        "grad",
        "loss",
        "x_best",
        "grad_best",
        "loss_best",
        "step",
        "rises",
        "best_at_check",
        "reduced",
    )

    def __init__(self) -> None:
        for f in self.FIELDS:
            setattr(self, f, None)

    def keep(self, mask: torch.Tensor) -> None:
        for f in self.FIELDS:
            v = getattr(self, f)
            if v is not None:
                setattr(self, f, v[mask])


def _evaluate(model: Model, st: _State, loss_fn: Callable):
    xg = st.x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        loss = loss_fn(logits, st.y, st.t)
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    return logits.detach(), loss.detach(), grad.detach()


def _record_successes(st: _State, logits, out: torch.Tensor, fooled_all: torch.Tensor):
    fooled = logits.argmax(dim=1) != st.y
    if bool(fooled.any()):
        out[st.idx[fooled]] = st.x[fooled]
        fooled_all[st.idx[fooled]] = True
        st.keep(~fooled)
    return fooled


def _move(st: _State, eps: float, norm: str, bounds, momentum: float) -> None:
    z = clip_bounds(
        st.x0 + project(st.x + st.step * _direction(st.grad, norm) - st.x0, eps, norm), bounds
    )
    new = st.x + momentum * (z - st.x) + (1 - momentum) * (st.x - st.x_old)
    st.x_old = st.x
    st.x = clip_bounds(st.x0 + project(new - st.x0, eps, norm), bounds).detach()


def _checkpoint(st: _State, window: int) -> None:
    reduce = (st.rises <= window * RHO) | (~st.reduced & (st.best_at_check >= st.loss_best))
    st.reduced, st.best_at_check = reduce, st.loss_best.clone()
    st.rises = torch.zeros_like(st.rises)
    if bool(reduce.any()):
        st.step = torch.where(reduce.view_as(st.step), st.step / 2, st.step)
        st.x = torch.where(reduce.view(-1, *([1] * (st.x.dim() - 1))), st.x_best, st.x)
        st.grad = torch.where(reduce.view(-1, *([1] * (st.x.dim() - 1))), st.grad_best, st.grad)


def _init_state(x, y, target, start, cfg: AttackConfig) -> _State:
    st = _State()
    st.idx = torch.arange(x.shape[0], device=x.device)
    st.x0, st.y, st.t = x, y, target
    st.x = clip_bounds(x + project(start - x, cfg.eps, cfg.norm), cfg.bounds).detach()
    st.x_old = st.x
    return st


def _apgd_run(model: Model, x, y, target, start, cfg: AttackConfig, loss_fn: Callable):
    """One APGD run on a batch; return (x_result, fooled, highest loss)."""
    n_iter = max(int(cfg.steps), 1)
    window, min_window = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    st = _init_state(x, y, target, start, cfg)
    out, fooled_all = st.x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
    logits, st.loss, st.grad = _evaluate(model, st, loss_fn)
    _record_successes(st, logits, out, fooled_all)
    st.x_best, st.grad_best, st.loss_best = st.x, st.grad, st.loss
    st.step = torch.full(
        (st.x.shape[0],) + (1,) * (x.dim() - 1), 2.0 * cfg.eps, device=x.device, dtype=x.dtype
    )
    st.rises = torch.zeros(st.x.shape[0], device=x.device)
    st.best_at_check = st.loss_best.clone()
    st.reduced = torch.ones(st.x.shape[0], dtype=torch.bool, device=x.device)
    since = 0
    for i in range(n_iter):
        if st.idx.numel() == 0:
            break
        _move(st, cfg.eps, cfg.norm, cfg.bounds, MOMENTUM if i > 0 else 1.0)
        logits, loss, grad = _evaluate(model, st, loss_fn)
        st.rises = st.rises + (loss > st.loss).float()
        st.loss, st.grad = loss, grad
        better = loss > st.loss_best
        shape = (-1,) + (1,) * (x.dim() - 1)
        st.x_best = torch.where(better.view(shape), st.x, st.x_best)
        st.grad_best = torch.where(better.view(shape), grad, st.grad_best)
        st.loss_best = torch.where(better, loss, st.loss_best)
        _record_successes(st, logits, out, fooled_all)
        since += 1
        if since == window:
            _checkpoint(st, window)
            since, window = 0, max(window - shrink, min_window)
    out[st.idx] = st.x_best
    best_loss[st.idx] = st.loss_best
    return out, fooled_all, best_loss


def _batches(n: int, size: int):
    for s in range(0, n, max(1, size)):
        yield slice(s, min(n, s + size))


def _ranked_targets(model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = model(x).float()
    return z.scatter(1, y[:, None], -float("inf")).argsort(dim=1, descending=True)


def _attack(model: Model, x, y, cfg: AttackConfig, n_targets: int) -> torch.Tensor:
    """APGD-CE (``n_targets == 0``) or APGD-T over ``n_targets`` classes, all batches."""
    gen = torch.Generator().manual_seed(int(cfg.seed))
    result = x.clone()
    for sl in _batches(x.shape[0], cfg.batch_size):
        xb, yb = x[sl], y[sl]
        best = torch.full((xb.shape[0],), -float("inf"), device=x.device)
        fooled = torch.zeros(xb.shape[0], dtype=torch.bool, device=x.device)
        ranked = _ranked_targets(model, xb, yb) if n_targets else None
        runs = (
            [(None, r) for r in range(max(1, cfg.restarts))]
            if not n_targets
            else [
                (t, r)
                for t in range(min(n_targets, ranked.shape[1] - 1))
                for r in range(max(1, cfg.restarts))
            ]
        )
        for t, _ in runs:
            idx = (~fooled).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                break
            start = _random_start(xb[idx], cfg.eps, cfg.norm, gen)
            target = ranked[idx, t] if t is not None else None
            loss_fn = _ce_loss if t is None else dlr_targeted_loss
            adv, won, loss = _apgd_run(model, xb[idx], yb[idx], target, start, cfg, loss_fn)
            take = won | (loss > best[idx])
            result[sl][idx[take]] = adv[take]
            best[idx[take]] = loss[take]
            fooled[idx[won]] = True
    return result


def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
) -> torch.Tensor:
    """APGD-CE: ``cfg.restarts`` runs of ``cfg.steps`` iterations on the cross-entropy.

    ``x`` (n, ...) float in ``cfg.bounds``, ``y`` (n,) int64; returns the
    adversarial batch (shape and dtype of ``x``) inside the ``cfg.eps`` ball of
    ``cfg.norm`` ("linf" or "l2"; eps in input units). Seeded by ``cfg.seed``.
    """
    return _attack(model, x, y, cfg, 0)


def apgd_t(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
) -> torch.Tensor:
    """APGD-T: targeted DLR runs against the ``cfg.targets`` (default 9) most likely wrong classes.

    Same shapes, bound and seeding as :func:`apgd`; each target gets
    ``cfg.restarts`` runs of ``cfg.steps`` iterations on the samples still standing.
    """
    return _attack(model, x, y, cfg, cfg.targets or DEFAULT_TARGETS)


def autoattack_lite(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    ctx: Optional[AttackContext] = None,
) -> torch.Tensor:
    """APGD-CE, then APGD-T against ``cfg.targets`` (default 3) classes on the survivors.

    A cheap version of AutoAttack's standard ensemble (which adds FAB-T and
    Square and uses 9 targets). Same shapes and bound as :func:`apgd`.
    """
    first = apgd(model, x, y, cfg, ctx)
    with torch.no_grad():
        standing = torch.cat(
            [model(first[sl]).argmax(1) == y[sl] for sl in _batches(x.shape[0], cfg.batch_size)]
        )
    idx = standing.nonzero(as_tuple=True)[0]
    if idx.numel():
        lite = replace(cfg, targets=cfg.targets or LITE_TARGETS)
        first[idx] = apgd_t(model, x[idx], y[idx], lite, ctx)
    return first
