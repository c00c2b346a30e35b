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

from ..geometry import KeepWorst, ascent_direction, bound, per_sample, unit_noise
from .base import AttackConfig, AttackContext, Model
from .steps import (
    Run,
    batch_slices,
    cross_entropy,
    loss_gradient,
    margins,
    ranked_wrong_classes,
    shape_documented,
)

__all__ = ["apgd", "apgd_t", "autoattack_lite", "dlr_targeted_loss", "DEFAULT_TARGETS"]

DEFAULT_TARGETS = 9
LITE_TARGETS = 3
MOMENTUM = 0.75
RHO = 0.75
Tensor = torch.Tensor


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
        "margin_best",
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


def _evaluate(model: Model, st: _State, loss_fn: Callable, tally: Optional[Callable] = None):
    """``(logits, loss, grad)`` at the samples' current points; ``tally(idx)`` is told which
    samples (indices into the run's batch) took this forward and backward pass."""
    if tally is not None:
        tally(st.idx)
    return loss_gradient(model, st.x, st.y, loss_fn, st.t, "apgd")


def _record(st: _State, best: KeepWorst, logits: torch.Tensor, loss: torch.Tensor) -> None:
    """Hand the iterates that fool the model to ``best``; their samples leave the run.

    The others are handed over once, at the end of the run, at their point of
    highest loss (``st.x_best``), which APGD tracks anyway to restart from.
    """
    fooled = logits.argmax(dim=1) != st.y
    if bool(fooled.any()):
        best.offer(st.idx[fooled], st.x[fooled], fooled[fooled], loss[fooled])
        st.keep(~fooled)


def _move(st: _State, eps: float, norm: str, bounds, momentum: float) -> None:
    z = bound(st.x0, st.x + st.step * ascent_direction(st.grad, norm), eps, norm, bounds)
    new = st.x + momentum * (z - st.x) + (1 - momentum) * (st.x - st.x_old)
    st.x_old = st.x
    st.x = bound(st.x0, new, eps, norm, bounds).detach()


def _checkpoint(st: _State, window: int) -> None:
    reduce = (st.rises <= window * RHO) | (~st.reduced & (st.best_at_check >= st.loss_best))
    st.reduced, st.best_at_check = reduce, st.loss_best.clone()
    st.rises = torch.zeros_like(st.rises)
    if bool(reduce.any()):
        st.step = torch.where(reduce.view_as(st.step), st.step / 2, st.step)
        st.x = torch.where(per_sample(reduce, st.x), st.x_best, st.x)
        st.grad = torch.where(per_sample(reduce, st.x), st.grad_best, st.grad)


def _improve(st: _State, loss: torch.Tensor, grad: torch.Tensor, margin: torch.Tensor) -> None:
    """Count loss rises and keep each sample's point of highest loss (the restart point),
    with the margin ``z_y - max_{j != y} z_j`` there."""
    st.rises = st.rises + (loss > st.loss).float()
    st.loss, st.grad = loss, grad
    better = loss > st.loss_best
    st.x_best = torch.where(per_sample(better, st.x), st.x, st.x_best)
    st.grad_best = torch.where(per_sample(better, st.x), grad, st.grad_best)
    st.loss_best = torch.where(better, loss, st.loss_best)
    st.margin_best = torch.where(better, margin, st.margin_best)


def _start(model: Model, run: Run, cfg: AttackConfig, loss_fn: Callable, tally, on_start):
    """The state at the (bounded) start point, and a :class:`KeepWorst` holding it;
    ``on_start(logits)`` (when given) sees the logits there."""
    x, y, target, start = run.x, run.y, run.target, run.start
    st = _State()
    st.idx = torch.arange(x.shape[0], device=x.device)
    st.x0, st.y, st.t = x, y, target
    st.x = bound(x, start, cfg.eps, cfg.norm, cfg.bounds).detach()
    st.x_old = st.x
    best = KeepWorst(st.x)
    logits, st.loss, st.grad = _evaluate(model, st, loss_fn, tally)
    if on_start is not None:
        on_start(logits)
    standing = logits.argmax(dim=1) == st.y  # the samples _record keeps
    margin = margins(logits, st.y)[standing]
    _record(st, best, logits, st.loss)
    st.x_best, st.grad_best, st.loss_best = st.x, st.grad, st.loss
    st.margin_best = margin
    n = st.x.shape[0]
    st.step = torch.full((n,) + (1,) * (x.dim() - 1), 2.0 * cfg.eps, device=x.device, dtype=x.dtype)
    st.rises = torch.zeros(n, device=x.device)
    st.best_at_check = st.loss_best.clone()
    st.reduced = torch.ones(n, dtype=torch.bool, device=x.device)
    return st, best


def _apgd_run(
    model: Model,
    run: Run,
    cfg: AttackConfig,
    loss_fn: Callable,
    tally: Optional[Callable] = None,
    on_start: Optional[Callable] = None,
):
    """One APGD run on a batch (:class:`~.steps.Run`); return (x_result, fooled, loss at
    x_result, margin there).

    ``margin`` (float32 (n,)) is ``z_y - max_{j != y} z_j`` at ``x_result`` for the
    samples not fooled, and negative for the fooled ones. ``tally(idx)`` is called
    before every forward and backward pass with the indices (into ``x``) of the
    samples it takes; ``on_start(logits)`` sees the logits at the start point.
    """
    n_iter = max(int(cfg.steps), 1)
    window, min_window = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    x = run.x
    st, best = _start(model, run, cfg, loss_fn, tally, on_start)
    since = 0
    for i in range(n_iter):
        if st.idx.numel() == 0:
            break
        _move(st, cfg.eps, cfg.norm, cfg.bounds, MOMENTUM if i > 0 else 1.0)
        logits, loss, grad = _evaluate(model, st, loss_fn, tally)
        _improve(st, loss, grad, margins(logits, st.y))
        _record(st, best, logits, loss)
        since += 1
        if since == window:
            _checkpoint(st, window)
            since, window = 0, max(window - shrink, min_window)
    best.offer(st.idx, st.x_best, torch.zeros_like(st.idx, dtype=torch.bool), st.loss_best)
    margin = torch.full((x.shape[0],), -1.0, device=x.device)
    margin[st.idx] = st.margin_best
    return best.x, best.fooled, best.loss, margin


def _attack(model: Model, x, y, cfg: AttackConfig, n_targets: int) -> torch.Tensor:
    """APGD-CE (``n_targets == 0``) or APGD-T over ``n_targets`` classes, all batches."""
    gen = torch.Generator().manual_seed(int(cfg.seed))
    result = torch.empty_like(x)
    for sl in batch_slices(x.shape[0], cfg.batch_size):
        xb, yb = x[sl], y[sl]
        best = KeepWorst(xb)
        ranked = ranked_wrong_classes(model, xb, yb) if n_targets else None
        targets = range(min(n_targets, ranked.shape[1] - 1)) if n_targets else [None]
        for t in [t for t in targets for _ in range(max(1, cfg.restarts))]:
            idx = best.open()
            if idx.numel() == 0:
                break
            start = xb[idx] + cfg.eps * unit_noise(xb[idx].shape, cfg.norm, gen).to(xb)
            target = ranked[idx, t] if t is not None else None
            loss_fn = cross_entropy if t is None else dlr_targeted_loss
            run = Run(xb[idx], yb[idx], start, target)
            best.offer(idx, *_apgd_run(model, run, cfg, loss_fn)[:3])
        result[sl] = best.x
    return result


@shape_documented
def apgd(
    model: Model, x: Tensor, y: Tensor, cfg: AttackConfig, ctx: Optional[AttackContext] = None
) -> Tensor:
    """APGD-CE: ``cfg.restarts`` runs of ``cfg.steps`` iterations on the cross-entropy.

    Croce and Hein, ICML 2020 (see the module docstring for the schedule).
    Each run starts at a random point of the ``cfg.eps`` ball of ``cfg.norm``;
    seeded by ``cfg.seed``. Per sample, the first success wins, else the point
    of highest loss.
    """
    return _attack(model, x, y, cfg, 0)


@shape_documented
def apgd_t(
    model: Model, x: Tensor, y: Tensor, cfg: AttackConfig, ctx: Optional[AttackContext] = None
) -> Tensor:
    """APGD-T: targeted DLR runs against the ``cfg.targets`` (default 9) likeliest wrong classes.

    Croce and Hein, ICML 2020, eq. 8. Each target gets ``cfg.restarts`` runs
    of ``cfg.steps`` iterations on the samples still standing; bound and
    seeding as in :func:`apgd`.
    """
    return _attack(model, x, y, cfg, cfg.targets or DEFAULT_TARGETS)


@shape_documented
def autoattack_lite(
    model: Model, x: Tensor, y: Tensor, cfg: AttackConfig, ctx: Optional[AttackContext] = None
) -> Tensor:
    """APGD-CE, then APGD-T against ``cfg.targets`` (default 3) classes on the survivors.

    A cheap version of AutoAttack's standard ensemble (Croce and Hein, ICML
    2020), which adds FAB-T and Square and uses 9 targets.
    """
    first = apgd(model, x, y, cfg, ctx)
    with torch.no_grad():
        standing = torch.cat(
            [model(first[sl]).argmax(1) == y[sl] for sl in batch_slices(x.shape[0], cfg.batch_size)]
        )
    idx = standing.nonzero(as_tuple=True)[0]
    if idx.numel():
        lite = replace(cfg, targets=cfg.targets or LITE_TARGETS)
        first[idx] = apgd_t(model, x[idx], y[idx], lite, ctx)
    return first
