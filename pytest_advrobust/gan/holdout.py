"""The held-out split of an AdvGAN training and the early stopping it drives.

:func:`split` draws the held-out samples once from a generator seeded with
``cfg.seed``; :class:`Holdout` measures the attack success on them (the share
of correctly classified held-out samples that the generator's output fools,
the share of all of them when none is classified correctly), averaged over a
few budgets of the generator's eps range, and records the finished
generator's success at budgets spread over the range (:func:`success_at`
reads it at any eps); :class:`EarlyStop`
keeps the best state by that measure and counts the evaluations since it
improved. Several processes: each rank evaluates its own share of the
held-out samples and the counts are summed
(:class:`pytest_advrobust.gan.distributed.TrainingSync`), so every rank gets the
same number.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from ..inputs.model import check_logits
from .config import GanConfig
from .distributed import TrainingSync

__all__ = ["EarlyStop", "Holdout", "split"]

#: Held-out samples per forward pass.
EVAL_BATCH = 1024
#: Budgets of ``eps_range`` the early stopping averages the success over (log-spaced).
STOP_POINTS = 3
#: Budgets of ``eps_range`` the finished generator's success is recorded at.
CURVE_POINTS = 7


def eps_grid(eps_range: Sequence[float], k: int) -> List[float]:
    """``k`` log-spaced budgets inside ``eps_range``, at the centres of ``k`` equal parts of
    its logarithm (one point: the geometric middle)."""
    lo, hi = (math.log(float(e)) for e in eps_range)
    return [math.exp(lo + (hi - lo) * (i + 0.5) / k) for i in range(k)]


def success_at(curve: Sequence[Sequence[float]], eps: float) -> float:
    """The success of a recorded ``curve`` (``[[eps, success], ...]``, eps ascending) at
    ``eps``, interpolated linearly in ``log(eps)`` and held constant beyond its ends."""
    pts = sorted((float(e), float(s)) for e, s in curve)
    if eps <= pts[0][0]:
        return pts[0][1]
    for (e0, s0), (e1, s1) in zip(pts, pts[1:]):
        if eps <= e1:
            t = (math.log(eps) - math.log(e0)) / max(math.log(e1) - math.log(e0), 1e-12)
            return s0 + t * (s1 - s0)
    return pts[-1][1]


def split(n: int, cfg: GanConfig, sync: TrainingSync) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """``(held-out indices of this rank, training indices, number held out)`` of ``n`` samples.

    ``min(holdout_max, round(n * holdout_fraction))`` samples are held out,
    none when fewer than 2 would be left to train on (the held-out
    measure then uses the training samples).
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_hold = min(cfg.holdout_max, int(round(n * cfg.holdout_fraction)))
    if n - n_hold < 2:
        n_hold = 0
    hold_idx, train_idx = perm[:n_hold], perm[n_hold:]
    if n_hold == 0:
        hold_idx = train_idx
    if sync.active:  # each rank evaluates its share of the held-out samples
        hold_idx = hold_idx[sync.rank :: sync.world]
    return hold_idx, train_idx, n_hold


def _predict(model: Any, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], EVAL_BATCH):
            logits = model(x[s : s + EVAL_BATCH].to(device, non_blocking=True))
            check_logits(logits, x[s : s + EVAL_BATCH].shape[0], "robust_model")
            out.append(logits.float().argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


class Holdout:
    """This rank's held-out samples, with the frozen model's clean verdicts on them.

    ``x``: the held-out inputs (on the training data's device), ``y``: their
    labels (CPU), ``correct``: where the model classifies them correctly.
    :meth:`success` is the mean attack success over :data:`STOP_POINTS` budgets of
    ``cfg.eps_range``; :meth:`curve` the success at :data:`CURVE_POINTS` budgets.
    ``forward``/``backward`` count the model's passes in samples.
    """

    def __init__(self, run: Any, x_src, y, hold_idx):
        """``run``: the training (:class:`~.training_run.TrainingRun`) whose model, settings,
        device, collectives and memory format the held-out evaluations use."""
        model, cfg = run.model, run.cfg
        self.model, self.dev, self.sync, self.mem_fmt = model, run.dev, run.sync, run.mem_fmt
        self.x, self.y = x_src[hold_idx.to(x_src.device)], y[hold_idx.to(y.device)].cpu()
        n = int(self.x.shape[0])
        self.correct = _predict(model, self.x, self.dev) == self.y
        self.forward, self.backward = n, 0
        self.eps_range = cfg.eps_range

    def accuracy(self) -> float:
        """The frozen model's clean accuracy on the held-out samples (every rank's)."""
        n_c, n_all = int(self.correct.sum()), int(self.correct.numel())
        if self.sync.active:
            n_c, n_all = self.sync.sum_ints([n_c, n_all])
        return n_c / n_all if n_all else 0.0

    def success(self, gen: nn.Module) -> float:
        """The mean attack success of ``gen`` (rank 0's weights on every rank) over
        :data:`STOP_POINTS` budgets."""
        points = self.curve(gen, STOP_POINTS)
        return sum(s for _, s in points) / len(points)

    def curve(self, gen: nn.Module, k: int = CURVE_POINTS) -> List[List[float]]:
        """``[[eps, success], ...]`` of ``gen`` at ``k`` log-spaced budgets of the range."""
        self.sync.sync_module(gen)  # identical weights and batch-norm statistics on every rank
        was_training = gen.training
        gen.eval()
        out = [[e, self._success_at(gen, e)] for e in eps_grid(self.eps_range, k)]
        gen.train(was_training)
        return out

    def _success_at(self, gen: nn.Module, eps: float) -> float:
        self.forward += int(self.x.shape[0])
        preds = []
        with torch.no_grad():
            for s in range(0, self.x.shape[0], EVAL_BATCH):
                xb = self.x[s : s + EVAL_BATCH].to(self.dev, non_blocking=True)
                if self.x.dim() == 4:
                    xb = xb.contiguous(memory_format=self.mem_fmt)
                preds.append(self.model(gen(xb, eps)).float().argmax(dim=1).cpu())
        fooled = (torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)) != self.y
        return self._share(fooled)

    def _share(self, fooled: torch.Tensor) -> float:
        correct = self.correct
        if self.sync.active:
            n_fc, n_c, n_f, n_all = self.sync.sum_ints(
                [
                    int((fooled & correct).sum()),
                    int(correct.sum()),
                    int(fooled.sum()),
                    int(fooled.numel()),
                ]
            )
            if n_c > 0:
                return n_fc / n_c
            return n_f / n_all if n_all > 0 else 0.0
        if bool(correct.any()):
            return float(fooled[correct].float().mean())
        return float(fooled.float().mean())


def _clone_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class EarlyStop:
    """The best held-out success so far, the state and step it came from, and the evaluations
    without improvement since (``stale``); ``history`` lists ``(step, success)``."""

    def __init__(self, success: float, gen: nn.Module):
        self.history: List[Tuple[int, float]] = [(0, success)]
        self.best, self.best_state, self.best_step, self.stale = success, _clone_state(gen), 0, 0

    def record(self, step: int, success: float, gen: nn.Module) -> None:
        """Note ``gen``'s ``success`` after ``step`` steps; keep its state when it is the best."""
        self.history.append((step, success))
        if success > self.best:
            self.best, self.best_state, self.best_step = success, _clone_state(gen), step
            self.stale = 0
        else:
            self.stale += 1
