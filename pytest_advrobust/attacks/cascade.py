"""The default attack's cascade: the generator's output, then short gradient stages, with
per-sample exits.

:class:`Cascade` attacks a batch ``(x, y)`` in stages, each on the samples still standing
only:

1. ``start``: one forward pass at the generator's output (no gradient); a sample it
   fools is done. Skipped for the clean-start control.
2. ``untargeted``: APGD-CE (Croce & Hein, ICML 2020) for ``budget.untargeted``
   iterations. It starts at the clean input, not at the generator's output: on the
   benchmark panel a start at the output (a point that did not fool the model) was
   weaker than the input gradient's own first step. Its first forward pass, at the
   clean input, gives the clean logits: a sample the model already gets wrong is
   done (its own adversarial example, as in AutoAttack), and the others' wrong
   classes are ranked by them.
3. ``targeted``: targeted APGD (DLR loss) for ``budget.targeted`` iterations against
   each of the ``budget.targets`` most likely wrong classes, each started at the
   sample's best point so far.

Per sample the result is the first point that fools the model, else the point of
lowest margin ``z_y - max_{j != y} z_j`` of any stage. Every forward and backward
pass through the model is tallied per sample and per stage (:class:`Tally`), so that
the cost of any subset of samples is known exactly. Budgets are in iterations, never
in seconds: the same inputs and seed give the same result on a quiet and on a loaded
machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional

import torch

from ..geometry import KeepWorst, bound
from .apgd import _apgd_run, dlr_targeted_loss
from .base import AttackConfig, Model
from .steps import Run, cross_entropy, margins

__all__ = ["CascadeBudget", "Cascade", "Tally", "DEFAULT_BUDGET", "STAGES"]

STAGES = ("start", "untargeted", "targeted")


@dataclass(frozen=True)
class CascadeBudget:
    """Iterations of the gradient stages: ``untargeted`` APGD-CE iterations, then
    ``targeted`` targeted-APGD iterations against each of ``targets`` classes."""

    untargeted: int = 10
    targets: int = 3
    targeted: int = 8

    def __post_init__(self) -> None:
        for name in ("untargeted", "targets", "targeted"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"CascadeBudget.{name} must be a non-negative integer, got {v!r}")

    def to_dict(self) -> Dict[str, int]:
        return {"untargeted": self.untargeted, "targets": self.targets, "targeted": self.targeted}

    def most(self) -> int:
        """Model passes (forward plus backward) of a sample that resists every stage."""
        return 1 + 2 * (self.untargeted + 1) + 2 * self.targets * (self.targeted + 1)


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
    """The cascade on one evaluation batch: :meth:`start` (optional), then
    :meth:`gradient_stages`; the caller may look at the start's effect in between.

    ``x``: ``(N, *sample_shape)`` float, inside ``cfg.bounds``; ``y``: ``(N,)`` int64;
    both on the model's device. :attr:`x_adv` has the shape and dtype of ``x`` and lies
    within ``cfg.eps`` (``cfg.norm``) and ``cfg.bounds``.
    """

    def __init__(self, model: Model, x, y, cfg: AttackConfig, budget: CascadeBudget):
        self.model, self.x, self.y, self.cfg, self.budget = model, x, y, cfg, budget
        n = x.shape[0]
        self.best = KeepWorst(x)
        self.tally = Tally(n, x.device)
        self.start_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.clean_wrong = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.ranked: Optional[torch.Tensor] = None
        self.chunk = max(1, int(cfg.batch_size))

    def start(self, x_start: torch.Tensor) -> float:
        """Evaluate the start points (the generator's output) of the samples standing; returns
        the share of all samples misclassified there (clean errors included)."""
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
            self.start_fooled[idx] |= fooled
        return int(self.start_fooled.sum()) / max(int(self.x.shape[0]), 1)

    def gradient_stages(self) -> None:
        """The untargeted stage from the clean input, then the targeted stage."""
        if self.budget.untargeted > 0:
            n_classes = self._run("untargeted", None, self.x, cross_entropy, self.budget.untargeted)
        else:
            n_classes = self._rank_only()
        for t in range(min(self.budget.targets, (n_classes or 1) - 1)):
            if self.budget.targeted == 0:
                break
            self._run("targeted", t, self.best.x, dlr_targeted_loss, self.budget.targeted)

    def _rank_only(self) -> Optional[int]:
        """Clean logits of the samples standing, without an untargeted stage to see them."""
        open_ = self.best.open()
        for s in range(0, open_.numel(), self.chunk):
            idx = open_[s : s + self.chunk]
            self.tally.add("untargeted", idx, backward=False)
            with torch.no_grad():
                self._note_clean(idx, self.model(self.x[idx]))
        return None if self.ranked is None else int(self.ranked.shape[1])

    def _note_clean(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """Clean logits of samples ``idx``: the wrong ones are done, the others' wrong classes
        ranked (most likely first)."""
        z = logits.detach().float()
        if self.ranked is None:
            self.ranked = torch.zeros(
                (self.x.shape[0], z.shape[1]), dtype=torch.long, device=self.x.device
            )
        others = z.scatter(1, self.y[idx][:, None], -float("inf"))
        self.ranked[idx] = others.argsort(dim=1, descending=True)
        wrong = z.argmax(dim=1) != self.y[idx]
        self.clean_wrong[idx] = wrong
        loss = -margins(z, self.y[idx])
        self.best.offer(idx[wrong], self.x[idx][wrong], wrong[wrong], loss[wrong])

    def _run(self, stage: str, target: Optional[int], start, loss_fn, iterations: int):
        """One APGD run of ``iterations`` on every sample still standing, in chunks; returns
        the number of classes (from the clean logits the untargeted stage sees)."""
        cfg = replace(self.cfg, steps=iterations)
        open_ = self.best.open()
        width = None if self.ranked is None else int(self.ranked.shape[1])
        for s in range(0, open_.numel(), self.chunk):
            idx = open_[s : s + self.chunk]
            tg = self.ranked[idx, target] if target is not None else None

            def tally(local: torch.Tensor, idx=idx) -> None:
                self.tally.add(stage, idx[local], backward=True)

            def at_start(logits: torch.Tensor, idx=idx) -> None:
                if target is None:  # the untargeted stage starts at the clean input
                    self._note_clean(idx, logits)

            run = Run(self.x[idx], self.y[idx], start[idx], tg)
            x_res, fooled, _, margin = _apgd_run(self.model, run, cfg, loss_fn, tally, at_start)
            open_now = ~self.clean_wrong[idx]
            self.best.offer(idx[open_now], x_res[open_now], fooled[open_now], -margin[open_now])
            width = width or (None if self.ranked is None else int(self.ranked.shape[1]))
        return width

    # ------------------------------------------------------------------ result
    @property
    def x_adv(self) -> torch.Tensor:
        return self.best.x

    @property
    def robust(self) -> torch.Tensor:
        """``(N,)`` bool: right on the clean input and not fooled by any stage."""
        return ~self.best.fooled

    def generator_alone_robust(self) -> int:
        """Samples right on the clean input and at the generator's output (after
        :meth:`gradient_stages`, which learns the clean verdicts of the samples it met)."""
        return int((~self.start_fooled & ~self.clean_wrong).sum())
