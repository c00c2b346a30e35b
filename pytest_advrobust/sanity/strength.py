"""The strength check of the ``gan`` attack: a stronger reference on the samples it left standing.

Only the samples the attack left standing can disagree with a stronger attack, so the
reference runs on a seeded random subset of them (at most :data:`CHECK_SIZE`; at
level ``full`` :data:`FULL_CHECK_SIZE`):

* **the reference**: targeted APGD (DLR loss, AutoAttack's schedule from a random
  start; Croce & Hein, ICML 2020) against up to 9 of each sample's most likely wrong
  classes, then Square Attack (a gradient-free random search; Andriushchenko et al.,
  ECCV 2020) on what it leaves, which finds what gradient attacks miss where the
  input gradient is zero. At level ``cheap`` its iterations and queries are fitted
  into a budget: the whole check costs at most :data:`BUDGET_SHARE` of the attack's
  own forward passes and of its backward passes, so that it stays cheap beside the
  attack and catches gross weakness (a missed class, masked gradients); at level
  ``full``: 9 targets, 100 iterations, 1,000 queries on up to 256 samples.
* **the test**: if the attack were at most :data:`TOLERANCE` (robust accuracy) weaker
  than the reference, the reference would fool at most ``p0 = TOLERANCE * n / S`` of
  the ``S`` samples standing; an exact one-sided binomial test of the ``X`` successes
  among the ``m`` checked gives ``p``, and the flag ``gan_weaker_than_reference``
  fires at ``p <`` :data:`ALPHA`. The record gives ``X``, the one-sided 95% upper
  bound of the share it fools (Clopper-Pearson) and the robust accuracy that bound
  implies (``S / n * (1 - upper)``).
* **the control**: on a seeded random subset of the clean-correct samples (at most
  :data:`CONTROL_SIZE`, and at level ``cheap`` no more than a third of the check's
  budget allows at the cascade's most expensive), the same cascade from the clean
  input instead of the generator's output: its robust accuracy and passes per sample
  beside the attack's own on the same samples, i.e. what the generator saved or added.

Every pass of the check and of the control is counted by
:func:`pytest_advrobust.attacks.counting.counting` and reported as cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from ..attacks.base import AttackConfig
from .flags import FLAG_GAN_WEAKER, make_flag, pct

__all__ = [
    "ALPHA",
    "BUDGET_SHARE",
    "CHECK_SIZE",
    "CONTROL_SIZE",
    "GanRecord",
    "Reference",
    "TOLERANCE",
    "decide",
    "pick",
    "plan_reference",
    "strength_check",
]

CHECK_SIZE = 64
FULL_CHECK_SIZE = 256
CONTROL_SIZE = 32
FULL_CONTROL_SIZE = 128
TOLERANCE = 0.005
ALPHA = 0.05
BUDGET_SHARE = 0.25
#: The reference's least iterations per target, and the gradient part of its budget.
MIN_ITERATIONS = 5
GRADIENT_SHARE = 0.7


@dataclass(frozen=True)
class GanRecord:
    """What the ``gan`` attack left: ``x_adv`` ``(N, ...)``; ``clean_correct`` and ``robust``
    (bool ``(N,)``); ``passes`` (int64 ``(N, 2)``: forward, backward per sample); the
    cascade's ``budget`` (:class:`~pytest_advrobust.attacks.cascade.CascadeBudget`)."""

    x_adv: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor
    passes: torch.Tensor
    budget: Any = None


@dataclass(frozen=True)
class Reference:
    """Targeted APGD against ``targets`` classes for ``iterations``, then ``queries`` of
    Square Attack."""

    targets: int
    iterations: int
    queries: int

    @property
    def label(self) -> str:
        return f"APGD-T {self.targets}x{self.iterations} + Square {self.queries}"

    def cost(self) -> Tuple[int, int]:
        """``(forward, backward)`` passes of one sample that resists to the end: the ranking,
        each target's run, Square's start and queries."""
        grad = self.targets * (self.iterations + 1)
        return 2 + grad + self.queries, grad


def plan_reference(
    budget: Optional[Tuple[float, float]], standing: int, n_classes: int, level: str
) -> Tuple[int, Optional[Reference]]:
    """``(m, reference)``: how many standing samples to check and with what, within
    ``budget`` (``(forward, backward)`` passes; ``None``: no cap, level ``full``).
    ``(0, None)`` when nothing fits."""
    top = max(1, min(9, n_classes - 1))
    if level == "full" or budget is None:
        return min(standing, FULL_CHECK_SIZE), Reference(top, 100, 1000)
    fwd, bwd = budget
    small_f, small_b = Reference(1, MIN_ITERATIONS, 0).cost()
    m = min(standing, CHECK_SIZE, int(fwd // small_f), int(bwd // small_b))
    if m <= 0:
        return 0, None
    grad = min(bwd / m, GRADIENT_SHARE * fwd / m)
    targets, iterations = top, 0
    while targets > 1 and int(grad // targets) - 1 < MIN_ITERATIONS:
        targets -= 1
    iterations = max(min(int(grad // targets) - 1, 100), MIN_ITERATIONS)
    queries = int(fwd / m - Reference(targets, iterations, 0).cost()[0])
    return m, Reference(targets, iterations, max(0, min(queries, 1000)))


def pick(candidates: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``k`` of the indices ``candidates``, drawn with ``seed`` (sorted)."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(candidates.numel(), generator=g)[:k]
    return candidates[order.to(candidates.device)].sort().values


def decide(extra: int, checked: int, standing: int, n: int) -> Dict[str, Any]:
    """The test's numbers for ``extra`` reference successes among ``checked`` of the
    ``standing`` samples of ``n`` (see the module docstring)."""
    from scipy.stats import binomtest

    acc = standing / n if n else 0.0
    if checked == 0:
        return {"p_value": 1.0, "extra_share_upper95": None, "robust_accuracy_lower95": acc}
    p0 = min(1.0, TOLERANCE * n / max(standing, 1))
    p = float(binomtest(extra, checked, p0, alternative="greater").pvalue)
    upper = float(binomtest(extra, checked).proportion_ci(0.90, method="exact").high)
    return {
        "p_value": p,
        "null_share": p0,
        "extra_share": extra / checked,
        "extra_share_upper95": upper,
        "robust_accuracy_estimate": acc * (1 - extra / checked),
        "robust_accuracy_lower95": acc * (1 - upper),
    }


def _reference(model, x, y, cfg: AttackConfig, ref: Reference) -> torch.Tensor:
    """``(m,)`` bool: the samples the reference fools."""
    from dataclasses import replace

    from ..attacks.apgd import _apgd_run, dlr_targeted_loss
    from ..attacks.square import square_search
    from ..attacks.steps import Run, ranked_wrong_classes
    from ..geometry import unit_noise

    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if x.shape[0] == 0:
        return fooled
    gen = torch.Generator().manual_seed(int(cfg.seed) + 2)
    ranked = ranked_wrong_classes(model, x, y)
    run_cfg = replace(cfg, steps=ref.iterations)
    for t in range(min(ref.targets, ranked.shape[1] - 1)):
        idx = (~fooled).nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return fooled
        start = x[idx] + cfg.eps * unit_noise(x[idx].shape, cfg.norm, gen).to(x)
        run = Run(x[idx], y[idx], start, ranked[idx, t])
        _, hit, _, _ = _apgd_run(model, run, run_cfg, dlr_targeted_loss)
        fooled[idx[hit]] = True
    idx = (~fooled).nonzero(as_tuple=True)[0]
    if ref.queries > 0 and idx.numel():
        _, hit = square_search(model, x[idx], y[idx], cfg, ref.queries)
        fooled[idx[hit]] = True
    return fooled


def control_size(record: GanRecord, level: str) -> int:
    """Samples of the control: :data:`CONTROL_SIZE` (level ``full``:
    :data:`FULL_CONTROL_SIZE`), at level ``cheap`` within a third of the check's budget
    when each costs the cascade's most (a sample that resists every stage)."""
    if level == "full":
        return FULL_CONTROL_SIZE
    most = record.budget.most()  # forward plus backward, about as many of each
    least = min(float(record.passes[:, 0].sum()), float(record.passes[:, 1].sum()))
    return int(min(CONTROL_SIZE, BUDGET_SHARE * least / 3 // (most / 2)))


def _control(model, x, y, record: GanRecord, cfg: AttackConfig, size: int) -> Dict[str, Any]:
    """The cascade from the clean input beside the attack's own, on a seeded subset."""
    from ..attacks.cascade import Cascade

    idx = pick(record.clean_correct.nonzero(as_tuple=True)[0], size, int(cfg.seed) + 1)
    k = int(idx.numel())
    if k == 0:
        return {"n": 0}
    run = Cascade(model, x[idx], y[idx], cfg, record.budget)
    run.gradient_stages()
    own = record.passes[idx.to(record.passes.device)]

    def side(robust: torch.Tensor, fwd: int, bwd: int) -> Dict[str, float]:
        return {
            "robust_accuracy": int(robust.sum()) / k,
            "forward_per_sample": fwd / k,
            "backward_per_sample": bwd / k,
        }

    gan = side(record.robust[idx], int(own[:, 0].sum()), int(own[:, 1].sum()))
    clean = side(run.robust, int(run.tally.forward.sum()), int(run.tally.backward.sum()))
    total = clean["forward_per_sample"] + clean["backward_per_sample"]
    used = gan["forward_per_sample"] + gan["backward_per_sample"]
    return {
        "n": k,
        "generator_start": gan,
        "clean_start": clean,
        "passes_saved": 1 - used / total if total else 0.0,
    }


def strength_check(
    model, x, y, record: GanRecord, cfg: AttackConfig, level: str, n_classes: int
) -> Tuple[Dict[str, Any], Optional[dict], Dict[str, Any]]:
    """Run the control and the reference; ``(check, flag or None, cost)``.

    ``model`` is frozen and in eval mode; ``x``, ``y``: the evaluation batch
    ``(N, ...)``, ``(N,)`` on the model's device; ``record``: what the ``gan`` attack
    left. ``check`` is the JSON-able record (module docstring), ``cost`` the check's
    ``{"forward_per_sample", "backward_per_sample", "seconds"}`` over the ``N`` samples.
    """
    from ..attacks.counting import counting

    n = int(x.shape[0])
    full = level == "full"
    with counting(model) as (m_control, c_control):
        control = _control(m_control, x, y, record, cfg, control_size(record, level))
    budget = None
    if not full:
        budget = (
            BUDGET_SHARE * float(record.passes[:, 0].sum()) - c_control.forward,
            BUDGET_SHARE * float(record.passes[:, 1].sum()) - c_control.backward,
        )
    standing = record.robust.nonzero(as_tuple=True)[0]
    checked, ref = plan_reference(budget, int(standing.numel()), n_classes, level)
    chosen = pick(standing, checked, int(cfg.seed))
    with counting(model) as (m_ref, c_ref):
        fooled = _reference(m_ref, x[chosen], y[chosen], cfg, ref) if ref else chosen[:0].bool()
    extra = int(fooled.sum())
    check = {
        "n": n,
        "seed": int(cfg.seed),
        "level": level,
        "standing": int(standing.numel()),
        "checked": int(chosen.numel()),
        "reference": ref.label if ref else None,
        "extra_successes": extra,
        "tolerance": TOLERANCE,
        "alpha": ALPHA,
        **decide(extra, int(chosen.numel()), int(standing.numel()), n),
        "control": control,
    }
    check["weaker"] = bool(check["p_value"] < ALPHA)
    cost = {
        "forward_per_sample": (c_control.forward + c_ref.forward) / max(n, 1),
        "backward_per_sample": (c_control.backward + c_ref.backward) / max(n, 1),
        "seconds": c_control.seconds + c_ref.seconds,
    }
    return check, _flag(check, cfg), cost


def _flag(check: Dict[str, Any], cfg: AttackConfig) -> Optional[dict]:
    if not check["weaker"]:
        return None
    upper = check["extra_share_upper95"]
    return make_flag(
        FLAG_GAN_WEAKER,
        f"On {check['checked']} of the {check['standing']} samples the gan attack left "
        f"standing ({cfg.norm} eps={cfg.eps:g}), the reference ({check['reference']}) fooled "
        f"{check['extra_successes']} (up to {pct(upper)} of them at 95%): the robust accuracy "
        f"may be as low as {check['robust_accuracy_lower95']:.3f} instead of "
        f"{check['standing'] / max(check['n'], 1):.3f} (exact binomial p={check['p_value']:.2g} "
        f"against a gap of at most {check['tolerance']:g}).",
        "The gan attack is weaker than its reference here, so its robust accuracy is too "
        'optimistic: gate on attack=["gan", "apgd-t"], run sanity="full" for a stronger '
        "check, or rerun after the generator was retrained (it is retrained now).",
    )
