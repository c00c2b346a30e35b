"""The default attack's cascade: a start point, then short gradient stages with per-sample exits.

:class:`Cascade` attacks a batch ``(x, y)`` in stages, each on the samples still
standing only:

1. ``clean``: one forward pass; a sample the model already gets wrong is done
   (it is its own adversarial example, as in AutoAttack);
2. ``start``: one forward pass at the start point (the generator's output; skipped
   for a start at the clean input); a sample it fools is done;
3. ``untargeted``: APGD-CE (Croce & Hein, ICML 2020) for ``budget.untargeted``
   iterations, started at the start point;
4. ``targeted``: targeted APGD (DLR loss) for ``budget.targeted`` iterations against
   each of the ``budget.targets`` most likely wrong classes (ranked by the clean
   logits), each started at the sample's best point so far.

Per sample the result is the first point that fools the model, else the point
of lowest margin ``z_y - max_{j != y} z_j`` of any stage. Every forward and
backward pass through the model is tallied per sample and per stage
(:class:`Tally`), so that the cost of any subset of samples is known exactly.
Budgets are in iterations, never in seconds: the same inputs and seed give the
same result on a quiet and on a loaded machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional

import torch

from ..geometry import KeepWorst, bound
from .apgd import _apgd_run, dlr_targeted_loss
from .base import AttackConfig, Model
from .steps import cross_entropy, margins

__all__ = ["CascadeBudget", "Cascade", "Tally", "DEFAULT_BUDGET", "STAGES"]

STAGES = ("clean", "start", "untargeted", "targeted")


@dataclass(frozen=True)
class CascadeBudget:
    """Iterations of the gradient stages: ``untargeted`` APGD-CE iterations, then
    ``targeted`` targeted-APGD iterations against each of ``targets`` classes."""

    untargeted: int = 5
    targets: int = 3
    targeted: int = 5

    def __post_init__(self) -> None:
        for name in ("untargeted", "targets", "targeted"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"CascadeBudget.{name} must be a non-negative integer, got {v!r}")

    def to_dict(self) -> Dict[str, int]:
        return {"untargeted": self.untargeted, "targets": self.targets, "targeted": self.targeted}


#: The budget of the default attack, chosen on the benchmark panel (benchmarks/README.md).
DEFAULT_BUDGET = CascadeBudget()


class Tally:
    """Model passes per sample (``forward``, ``backward``: int64 ``(N,)``) and per stage."""

    def __init__(self, n: int, device):
        self.forward = torch.zeros(n, dtype=torch.int64, device=device)
        self.backward = torch.zeros(n, dtype=torch.int64, device=device)
        self.stages: Dict[str, List[int]] = {s: [0, 0] for s in STAGES}

    def add(self, stage: str, idx: torch.Tensor, backward: bool) -> None:
        """One pass of the samples ``idx`` (global indices) in ``stage``."""
        self.forward[idx] += 1
        self.stages[stage][0] += int(idx.numel())
        if backward:
            self.backward[idx] += 1
            self.stages[stage][1] += int(idx.numel())

    def per_sample(self, n: int) -> Dict[str, Dict[str, float]]:
        """``{stage: {"forward_per_sample", "backward_per_sample"}}`` over ``n`` samples."""
        d = max(int(n), 1)
        return {
            s: {"forward_per_sample": f / d, "backward_per_sample": b / d}
            for s, (f, b) in self.stages.items()
        }


class Cascade:
    """The cascade on one evaluation batch; call :meth:`clean`, :meth:`start`, then
    :meth:`gradient_stages` (the caller may look at the start's success in between).

    ``x``: ``(N, *sample_shape)`` float, inside ``cfg.bounds``; ``y``: ``(N,)`` int64;
    both on the model's device. :attr:`x_adv` has the shape and dtype of ``x`` and lies
    within ``cfg.eps`` (``cfg.norm``) and ``cfg.bounds``.
    """

    def __init__(self, model: Model, x, y, cfg: AttackConfig, budget: CascadeBudget):
        self.model, self.x, self.y, self.cfg, self.budget = model, x, y, cfg, budget
        n = x.shape[0]
        self.best = KeepWorst(x)
        self.tally = Tally(n, x.device)
        self.clean_correct = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.start_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.ranked: Optional[torch.Tensor] = None
        self.chunk = max(1, int(cfg.batch_size))

    # ------------------------------------------------------------------ stages
    def clean(self) -> None:
        """Clean logits: wrong samples are done; the rest are ranked for the targeted stage."""
        n = self.x.shape[0]
        ranked = []
        for s in range(0, n, self.chunk):
            idx = torch.arange(s, min(n, s + self.chunk), device=self.x.device)
            self.tally.add("clean", idx, backward=False)
            with torch.no_grad():
                z = self.model(self.x[idx]).float()
            self.clean_correct[idx] = z.argmax(dim=1) == self.y[idx]
            others = z.scatter(1, self.y[idx][:, None], -float("inf"))
            ranked.append(others.argsort(dim=1, descending=True))
        self.ranked = torch.cat(ranked) if ranked else None
        wrong = (~self.clean_correct).nonzero(as_tuple=True)[0]
        self.best.fooled[wrong] = True  # the clean input is the result

    def start(self, x_start: torch.Tensor) -> float:
        """Evaluate the start points of the samples standing; returns the share of the
        clean-correct samples they fool (the start's one-shot success)."""
        cfg = self.cfg
        x_start = bound(self.x, x_start.to(self.x), cfg.eps, cfg.norm, cfg.bounds).detach()
        open_ = self.best.open()
        for s in range(0, open_.numel(), self.chunk):
            idx = open_[s : s + self.chunk]
            self.tally.add("start", idx, backward=False)
            with torch.no_grad():
                z = self.model(x_start[idx])
            fooled = z.argmax(dim=1) != self.y[idx]
            self.best.offer(idx, x_start[idx], fooled, -margins(z, self.y[idx]))
            self.start_fooled[idx] = fooled
        self.x_start = x_start
        n_ok = int(self.clean_correct.sum())
        return int(self.start_fooled.sum()) / n_ok if n_ok else 0.0

    def gradient_stages(self) -> None:
        """The untargeted stage from the start points (the clean input when :meth:`start`
        was not called), then the targeted stage."""
        start = getattr(self, "x_start", self.x)
        if self.budget.untargeted > 0:
            self._run("untargeted", None, start, cross_entropy, self.budget.untargeted)
        n_classes = self.ranked.shape[1] if self.ranked is not None else 1
        for t in range(min(self.budget.targets, n_classes - 1)):
            if self.budget.targeted == 0:
                break
            self._run("targeted", t, self.best.x, dlr_targeted_loss, self.budget.targeted)

    def _run(self, stage: str, target: Optional[int], start, loss_fn, iterations: int) -> None:
        """One APGD run of ``iterations`` on every sample still standing, in chunks."""
        cfg = replace(self.cfg, steps=iterations)
        open_ = self.best.open()
        for s in range(0, open_.numel(), self.chunk):
            idx = open_[s : s + self.chunk]
            tg = self.ranked[idx, target] if target is not None else None

            def tally(local: torch.Tensor, idx=idx) -> None:
                self.tally.add(stage, idx[local], backward=True)

            x_res, fooled, _, margin = _apgd_run(
                self.model, self.x[idx], self.y[idx], tg, start[idx], cfg, loss_fn, tally
            )
            self.best.offer(idx, x_res, fooled, -margin)

    # ------------------------------------------------------------------ result
    @property
    def x_adv(self) -> torch.Tensor:
        return self.best.x

    @property
    def robust(self) -> torch.Tensor:
        """``(N,)`` bool: right on the clean input and not fooled by any stage."""
        return ~self.best.fooled
