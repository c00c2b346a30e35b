"""Sanity checks on a robustness evaluation.

Robust accuracy is only as trustworthy as the attack that measured it. These
checks follow the advice of Carlini et al., "On Evaluating Adversarial
Robustness" (2019): they look for signs of gradient masking and of a broken or
badly configured evaluation. Each finding is a *flag*, a plain dict::

    {"flag": "gradients",            # one of the ids below
     "message": "...",                # one sentence with the numbers
     "suggests": "...",               # what it points to and what to try
     "level": "warning"}

The plugin shows flags as warnings (or errors in strict mode); a flag never
changes the measured numbers.

Cheap checks (``level="cheap"``, the default) cost two no-grad forward passes
over the evaluation batch plus a few passes on a sub-batch of at most
:data:`SUB_BATCH` samples:

``probabilities``
    The model's outputs look like probabilities (all in [0, 1], rows summing
    to 1) rather than logits. (A final log_softmax is harmless for these attacks and
    is not flagged.)
``gradients``
    The input gradient of the cross-entropy is all zero for more than half of
    the samples, contains NaN or inf (at the clean inputs, or at any input an
    attack computed it at: the model guard of :mod:`pytest_advrobust.inputs.calls`
    records those and sets them to 0), or does not exist at all. The message
    names the model's fixture and the share of samples affected.
``nondeterministic``
    Two forward passes on the same inputs give different outputs: the model
    is random in eval mode (for example dropout that stays active).
``stateful``
    A forward pass changed the model's buffers (the model guard undid each
    change after the call, so the numbers do not depend on test order).
``batch_dependent``
    The same samples give other outputs in small batches than in one batch
    (BatchNorm with batch statistics in eval mode): every number depends on
    the batch size.
``adv_above_clean``
    Adversarial accuracy is higher than clean accuracy: the attack made the
    model *more* accurate.
``curve_not_monotone``
    In an eps sweep, adversarial accuracy rises as eps grows.
``gan_weaker_than_reference``
    Whenever the ``gan`` attack was evaluated: the strength check
    (:mod:`.strength`) runs a stronger reference (targeted APGD, then the
    gradient-free Square Attack) on a seeded random subset of the samples the
    attack left standing, within a quarter of the attack's own passes, and the flag
    is raised when the reference fools clearly more of them than a gap of half
    a point allows (an exact one-sided binomial test, p < 0.05). Its numbers
    (and the control: the same cascade from the clean input) go to the
    report's ``gan.strength_check``.

Full checks (``level="full"``, in addition) run extra attacks on the same
sub-batch, about six PGD runs of the configured steps in all (PGD, FGSM, noise,
PGD at a huge eps, PGD with twice the steps, PGD with twice the restarts):

``weak_beats_strong``
    A weaker attack (FGSM, random noise of the full eps norm, or a
    non-gradient attack under test such as ``gan``) reaches a lower accuracy
    than the strongest gradient attack configured with the same eps
    (autoattack-lite, apgd-t, apgd, else PGD; see
    :func:`~pytest_advrobust.attacks.strongest_attack`).
``large_eps``
    PGD with an eps that covers the whole input range (L-inf: the width of
    ``bounds``; L2: the diameter of the bounds box; 100 x eps without bounds)
    leaves accuracy above chance.
``not_converged``
    PGD with twice the steps, or twice the restarts, changes the adversarial
    accuracy by more than one point.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..attack_table import reference_order
from ..attacks.base import AttackConfig, AttackContext
from .cheap import (
    check_adv_above_clean,
    check_curve,
    check_gradients,
    check_nondeterministic,
    check_probabilities,
)
from .flags import (
    ALL_FLAGS,
    CHEAP_FLAGS,
    FLAG_ADV_ABOVE_CLEAN,
    FLAG_BATCH_DEPENDENT,
    FLAG_CURVE_NOT_MONOTONE,
    FLAG_GAN_WEAKER,
    FLAG_GRADIENTS,
    FLAG_LARGE_EPS,
    FLAG_NONDETERMINISTIC,
    FLAG_NOT_CONVERGED,
    FLAG_PROBABILITIES,
    FLAG_STATEFUL,
    FLAG_WEAK_BEATS_STRONG,
    FULL_FLAGS,
    LEVELS,
    sub_indices,
)
from .full import SubBatch, full_checks
from .model_state import check_batch_dependence, check_state, nonfinite_during_attacks
from .strength import GanRecord, strength_check

__all__ = [
    "ALL_FLAGS",
    "CHEAP_FLAGS",
    "FLAG_ADV_ABOVE_CLEAN",
    "FLAG_BATCH_DEPENDENT",
    "FLAG_STATEFUL",
    "FLAG_CURVE_NOT_MONOTONE",
    "FLAG_GAN_WEAKER",
    "FLAG_GRADIENTS",
    "FLAG_LARGE_EPS",
    "FLAG_NONDETERMINISTIC",
    "FLAG_NOT_CONVERGED",
    "FLAG_PROBABILITIES",
    "FLAG_WEAK_BEATS_STRONG",
    "FULL_FLAGS",
    "LEVELS",
    "Evaluated",
    "GanRecord",
    "check_curve",
    "strength_check",
    "run_sanity",
]


@dataclass
class Evaluated:
    """What an evaluation found, as the sanity checks read it.

    ``x``, ``y`` and ``x_adv`` are the evaluation batch and its adversarial twin under
    ``attacks`` (the names that produced ``x_adv``; ``None``: no adversarial batch).
    ``curve`` is an eps sweep (dicts with ``eps`` and ``adversarial_accuracy``).
    ``num_classes`` defaults to the width of the model's output. ``adversarial``
    optionally maps single attack names to their own adversarial batch (same samples as
    ``x``); at level full each non-reference attack in it (or ``x_adv`` itself when
    ``attacks`` holds no reference attack) is compared against the strongest gradient
    attack configured. ``gan`` (what the ``gan`` attack left) runs its strength check.
    ``correct_counts`` (clean and adversarial correct counts) spare two forward passes.
    ``fixture`` names the model; ``record``: what the model guard saw
    (:class:`~pytest_advrobust.inputs.calls.CallRecord`); ``min_batch``: the least batch
    it takes.
    """

    x: torch.Tensor
    y: torch.Tensor
    x_adv: Optional[torch.Tensor] = None
    attacks: Sequence[str] = ()
    curve: Optional[List[dict]] = None
    num_classes: Optional[int] = None
    adversarial: Optional[Dict[str, torch.Tensor]] = None
    correct_counts: Optional[Tuple[int, int]] = None
    fixture: str = "robust_model"
    record: Any = None
    min_batch: int = 1
    gan: Optional[GanRecord] = None


def run_sanity(
    model: Callable, found: Evaluated, cfg: AttackConfig, ctx: AttackContext, level: str = "cheap"
) -> List[dict]:
    """Run the sanity checks of ``level`` on what the evaluation ``found``; the flags raised.

    ``model`` is frozen, in eval mode and on the device of ``found.x``. The strength check
    of the ``gan`` attack runs at every level but off; its record goes to
    ``ctx.facts["strength_check"]`` and its cost to ``ctx.facts["strength_check_cost"]``.
    """
    if _level(level) == "off":
        return []
    x, y, x_adv = found.x, found.y, found.x_adv
    attacks = [found.attacks] if isinstance(found.attacks, str) else list(found.attacks)
    n = x.shape[0]
    idx = sub_indices(n, x.device)
    xs, ys = x[idx].detach(), y[idx].detach()
    flags: List[Optional[dict]] = []
    has_grad = True  # no samples: nothing says the gradient is missing
    num_classes = found.num_classes
    if n:  # the model itself, then what the attacks made of it
        checks, has_grad, width = _model_checks(model, xs, ys, found.fixture)
        checks.extend(_call_checks(model, xs, found, checks))
        num_classes = width if num_classes is None else num_classes
        flags.extend(checks)
        if x_adv is not None:
            counts = found.correct_counts
            flags.append(check_adv_above_clean(model, x, y, x_adv, cfg.batch_size, counts))
    flags.append(check_curve(found.curve, n))
    if n and found.gan is not None:
        flags.append(_strength(model, found, cfg, ctx, level, int(num_classes or 2)))
    if level == "full" and n and has_grad:  # gradient attacks need an input gradient
        evaluated = _under_test(found.adversarial, x_adv, attacks, idx)
        k = int(num_classes or 2)
        flags.extend(full_checks(SubBatch(model, xs, ys, ctx), cfg, k, evaluated, attacks))
    return [f for f in flags if f]


def _strength(model, found: Evaluated, cfg, ctx, level: str, classes: int) -> Optional[dict]:
    """The ``gan`` attack's strength check; its record and cost go to ``ctx.facts``."""
    check, flag, cost = strength_check(model, found.x, found.y, found.gan, cfg, level, classes)
    ctx.facts["strength_check"], ctx.facts["strength_check_cost"] = check, cost
    return flag


def _level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"sanity level must be one of {', '.join(LEVELS)}, not {level!r}")
    return level


def _model_checks(
    model: Callable, xs: torch.Tensor, ys: torch.Tensor, fixture: str
) -> Tuple[List[Optional[dict]], bool, Optional[int]]:
    """The ``probabilities``, ``gradients`` and ``nondeterministic`` checks on the
    sub-batch: ``(flags or None, whether an input gradient exists, output width)``."""
    from ..inputs.calls import find_guard

    with torch.no_grad():
        first = model(xs)
    guard = find_guard(model)
    with guard.raw_gradients() if guard is not None else contextlib.nullcontext():
        grad_flag, has_grad = check_gradients(model, xs, ys, fixture)
    found = [check_probabilities(first), grad_flag, check_nondeterministic(model, xs, first)]
    width = int(first.shape[1]) if first.dim() == 2 else None
    return found, has_grad, width


def _call_checks(model, xs, found: Evaluated, raised: List) -> List:
    """``batch_dependent``, ``stateful`` and, unless the clean inputs already raised it
    (``raised``), ``gradients`` from what the model guard saw during the attacks."""
    fixture, record = found.fixture, found.record
    out = [
        check_batch_dependence(model, xs, fixture, found.min_batch),
        check_state(record, fixture),
    ]
    if not any(f and f["flag"] == FLAG_GRADIENTS for f in raised):
        out.append(nonfinite_during_attacks(record, fixture, int(found.x.shape[0])))
    return out


def _under_test(
    adversarial: Optional[Dict[str, torch.Tensor]],
    x_adv: Optional[torch.Tensor],
    attacks: List[str],
    idx: torch.Tensor,
) -> Dict[str, torch.Tensor]:
    """The sub-batches of the attacks that the full checks compare with the strongest one:
    each attack's own, else ``x_adv`` when no gradient attack made it."""
    if adversarial:
        return {name: adv[idx].detach() for name, adv in adversarial.items()}
    if (
        x_adv is not None
        and attacks
        and not set(attacks) & set(reference_order())
        and not set(attacks) <= {"fgsm"}
    ):
        return {"+".join(attacks): x_adv[idx].detach()}
    return {}
