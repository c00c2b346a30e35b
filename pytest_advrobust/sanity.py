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
    the samples, contains NaN or inf, or does not exist at all.
``nondeterministic``
    Two forward passes on the same inputs give different outputs: the model
    is random in eval mode (for example dropout that stays active).
``adv_above_clean``
    Adversarial accuracy is higher than clean accuracy: the attack made the
    model *more* accurate.
``curve_not_monotone``
    In an eps sweep, adversarial accuracy rises as eps grows.
``gan_weaker_than_pgd``
    Whenever the ``gan`` attack was evaluated: the plugin's PGD (the
    configured steps, 40 by default) also runs on a seeded probe of
    :data:`PROBE_SIZE` evaluation samples (:func:`gan_probe`), and the flag
    is raised when PGD fools more of the probe's correctly classified samples
    than the generator beyond sampling noise (a one-sided exact sign test on
    the samples only one of the two fools, p < :data:`PROBE_ALPHA`). The
    probe's numbers go to the report's ``training.probe``.

Full checks (``level="full"``, in addition) run extra attacks on the same
sub-batch, about six PGD runs of the configured steps in all (PGD, FGSM, noise,
PGD at a huge eps, PGD with twice the steps, PGD with twice the restarts):

``weak_beats_strong``
    A weaker attack (FGSM, random noise of the full eps norm, or a
    non-gradient attack under test such as ``gan``) reaches a lower accuracy
    than the strongest gradient attack configured with the same eps
    (autoattack-lite, apgd-t, apgd, else PGD; see
    :func:`~.attacks.strongest_attack`).
``large_eps``
    PGD with an eps that covers the whole input range (L-inf: the width of
    ``bounds``; L2: the diameter of the bounds box; 100 x eps without bounds)
    leaves accuracy above chance.
``not_converged``
    PGD with twice the steps, or twice the restarts, changes the adversarial
    accuracy by more than one point.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .attacks.base import AttackConfig, AttackContext
from .geometry import clip_bounds, project

__all__ = [
    "ALL_FLAGS",
    "CHEAP_FLAGS",
    "FLAG_ADV_ABOVE_CLEAN",
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
    "check_curve",
    "gan_probe",
    "run_sanity",
]

FLAG_PROBABILITIES = "probabilities"
FLAG_GRADIENTS = "gradients"
FLAG_NONDETERMINISTIC = "nondeterministic"
FLAG_ADV_ABOVE_CLEAN = "adv_above_clean"
FLAG_CURVE_NOT_MONOTONE = "curve_not_monotone"
FLAG_WEAK_BEATS_STRONG = "weak_beats_strong"
STRONG = ("autoattack-lite", "apgd-t", "apgd")  # compared as the reference, not as weak
FLAG_LARGE_EPS = "large_eps"
FLAG_NOT_CONVERGED = "not_converged"
FLAG_GAN_WEAKER = "gan_weaker_than_pgd"

CHEAP_FLAGS = (
    FLAG_PROBABILITIES,
    FLAG_GRADIENTS,
    FLAG_NONDETERMINISTIC,
    FLAG_ADV_ABOVE_CLEAN,
    FLAG_CURVE_NOT_MONOTONE,
    FLAG_GAN_WEAKER,
)
FULL_FLAGS = (FLAG_WEAK_BEATS_STRONG, FLAG_LARGE_EPS, FLAG_NOT_CONVERGED)
ALL_FLAGS = CHEAP_FLAGS + FULL_FLAGS

#: Accepted ``level`` values; ``"off"`` runs nothing.
LEVELS = ("off", "cheap", "full")

#: Most samples any per-sample check looks at.
SUB_BATCH = 128
#: Tolerance on "rows sum to 1" and "log-sum-exp is 0".
PROB_TOL = 1e-3
#: Share of samples with an all-zero input gradient above which ``gradients`` fires.
ZERO_GRAD_SHARE = 0.5
#: Outputs of two identical forward passes may differ by ``atol + rtol * |out|``.
DETERMINISM_TOL = 1e-5
#: Accuracy differences (and curve rises) at or below this are noise.
ACC_TOL = 0.01
#: Multiplier on eps for the large-eps check when inputs are unbounded.
LARGE_EPS_FACTOR = 100.0
#: Fewest PGD steps the large-eps check uses.
LARGE_EPS_MIN_STEPS = 10
#: Samples in the seeded probe on which PGD checks the GAN attack.
PROBE_SIZE = 64
#: Significance level of the probe's sign test.
PROBE_ALPHA = 0.05


def _flag(flag: str, message: str, suggests: str) -> dict:
    return {"flag": flag, "message": message, "suggests": suggests, "level": "warning"}


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f}%"


def _sub_indices(n: int, device) -> torch.Tensor:
    """Evenly spread, deterministic indices of at most SUB_BATCH samples."""
    k = min(n, SUB_BATCH)
    if k == n:
        return torch.arange(n, device=device)
    return torch.linspace(0, n - 1, steps=k, dtype=torch.float64).round().long().to(device)


def _tolerance(n: int) -> float:
    """More than one point and more than one sample."""
    return max(ACC_TOL, 1.0 / max(n, 1))


@torch.no_grad()
def _predict(model: Callable, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    preds = []
    step = max(1, int(batch_size))
    for start in range(0, x.shape[0], step):
        preds.append(model(x[start : start + step]).argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def _accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    if x.shape[0] == 0:
        return float("nan")
    return float((_predict(model, x, batch_size) == y).float().mean().item())


# --------------------------------------------------------------------- cheap


def _check_probabilities(out: torch.Tensor) -> Optional[dict]:
    if out.dim() != 2 or out.shape[1] < 2 or out.shape[0] == 0:
        return None
    out = out.double()
    if not bool(torch.isfinite(out).all()):
        return None
    n = out.shape[0]
    row_sums = out.sum(dim=1)
    if bool(((out >= 0) & (out <= 1)).all()) and float((row_sums - 1).abs().max()) <= PROB_TOL:
        return _flag(
            FLAG_PROBABILITIES,
            f"The model's outputs look like probabilities, not logits: on {n} samples every "
            f"value lies in [0, 1] and every row sums to 1 within {PROB_TOL:g} "
            f"(largest deviation {float((row_sums - 1).abs().max()):.2e}).",
            "A softmax inside the model saturates the cross-entropy and flattens its input "
            "gradients (gradient masking), so gradient attacks look weaker than they are; "
            "return raw logits from the model and apply softmax outside it.",
        )
    return None


def _check_gradients(model: Callable, xs: torch.Tensor, ys: torch.Tensor) -> tuple:
    """(flag or None, whether the input gradient exists at all)."""
    n = xs.shape[0]
    if n == 0:
        return None, True
    x = xs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        grad = None
        if isinstance(out, torch.Tensor) and out.requires_grad:
            loss = F.cross_entropy(out.float(), ys, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return (
            _flag(
                FLAG_GRADIENTS,
                f"The model's output has no gradient with respect to its input on {n} samples "
                f"(the input is detached, or the model is not differentiable).",
                "Gradient attacks cannot move at all, so their robust accuracy means nothing "
                "(gradient masking by obfuscated gradients); keep the forward pass "
                "differentiable (no .detach(), numpy or integer casts on the input) or "
                "evaluate with a gradient-free attack such as gan.",
            ),
            False,
        )
    flat = grad.detach().reshape(n, -1)
    nonfinite = ~torch.isfinite(flat).all(dim=1)
    zero = (flat == 0).all(dim=1)
    share_nonfinite = float(nonfinite.float().mean())
    share_zero = float(zero.float().mean())
    if share_nonfinite > 0:
        return (
            _flag(
                FLAG_GRADIENTS,
                f"The input gradient of the cross-entropy contains NaN or inf for "
                f"{int(nonfinite.sum())} of {n} samples ({_pct(share_nonfinite)}).",
                "Gradient attacks cannot follow a NaN or infinite gradient, so those samples "
                "look robust when they are not (exploding or shattered gradients); look for "
                "sqrt, log or division at 0 in the forward pass and make it numerically safe.",
            ),
            True,
        )
    if share_zero > ZERO_GRAD_SHARE:
        return (
            _flag(
                FLAG_GRADIENTS,
                f"The input gradient of the cross-entropy is exactly zero for {int(zero.sum())} "
                f"of {n} samples ({_pct(share_zero)}, more than {_pct(ZERO_GRAD_SHARE)}).",
                "This suggests gradient masking (a non-differentiable step such as rounding or "
                "quantisation, or saturated outputs), so gradient attacks cannot move; replace "
                "the step by a differentiable approximation for evaluation (BPDA) or rely on a "
                "gradient-free attack such as gan, and run sanity checks at level full.",
            ),
            True,
        )
    return None, True


@torch.no_grad()
def _check_nondeterministic(
    model: Callable, xs: torch.Tensor, first: torch.Tensor
) -> Optional[dict]:
    second = model(xs)
    if first.shape != second.shape:
        return _flag(
            FLAG_NONDETERMINISTIC,
            f"Two forward passes on the same {xs.shape[0]} inputs returned outputs of "
            f"different shapes {tuple(first.shape)} and {tuple(second.shape)}.",
            "The model is not a fixed function in eval mode, so every attack measures a "
            "moving target; make the forward pass deterministic.",
        )
    a, b = first.double(), second.double()
    diff = (a - b).abs()
    limit = DETERMINISM_TOL + DETERMINISM_TOL * a.abs()
    bad = diff > limit
    both_nan = torch.isnan(a) & torch.isnan(b)
    bad = bad | (torch.isnan(diff) & ~both_nan)
    if not bool(bad.any()):
        return None
    rows = bad.reshape(bad.shape[0], -1).any(dim=1) if bad.dim() > 1 else bad
    changed = 0
    if a.dim() == 2:
        changed = int((a.argmax(dim=1) != b.argmax(dim=1)).sum())
    max_diff = float(torch.nan_to_num(diff, nan=float("inf")).max())
    return _flag(
        FLAG_NONDETERMINISTIC,
        f"Two forward passes on the same inputs differ for {int(rows.sum())} of "
        f"{xs.shape[0]} samples (largest difference {max_diff:.3g}, above "
        f"{DETERMINISM_TOL:g}) and change {changed} predictions.",
        "The model is random in eval mode (for example dropout forced on, noise "
        "injection or a module kept in training mode), which hides gradients behind "
        "randomness (stochastic gradients); make evaluation deterministic, or attack "
        "the expectation over the randomness (EOT) before trusting the numbers.",
    )


def _check_adv_above_clean(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    batch_size: int,
    counts: Optional[Tuple[int, int]] = None,
) -> Optional[dict]:
    n = x.shape[0]
    if n == 0:
        return None
    if counts is not None:  # the caller has already predicted both batches
        correct_clean, correct_adv = counts
    else:
        correct_clean = int((_predict(model, x, batch_size) == y).sum())
        correct_adv = int((_predict(model, x_adv, batch_size) == y).sum())
    if correct_adv <= correct_clean:
        return None
    return _flag(
        FLAG_ADV_ABOVE_CLEAN,
        f"Adversarial accuracy {correct_adv / n:.3f} is above clean accuracy "
        f"{correct_clean / n:.3f} ({correct_adv} vs {correct_clean} correct of {n}).",
        "An attack that makes the model more accurate is broken or aimed the wrong way "
        "(for example a targeted loss, a sign error or wrong labels); check the attack and "
        "the labels, and keep the clean input when the attack does not fool the model.",
    )


def check_curve(curve: Optional[Sequence[dict]], n: Optional[int] = None) -> Optional[dict]:
    """The ``curve_not_monotone`` flag for an eps sweep, or None.

    ``curve`` holds dicts with ``eps`` and ``adversarial_accuracy``; a point
    whose accuracy is above the lowest accuracy at any smaller eps by more than
    the tolerance (one point, or one sample of ``n`` when that is larger)
    raises the flag.
    """
    if not curve:
        return None
    points = sorted(
        ((float(p["eps"]), float(p["adversarial_accuracy"])) for p in curve), key=lambda p: p[0]
    )
    tol = _tolerance(n) if n else ACC_TOL
    worst = None  # (rise, eps_low, acc_low, eps_high, acc_high)
    best_eps, best_acc = points[0]
    for eps, acc in points[1:]:
        rise = acc - best_acc
        if rise > tol and eps > best_eps and (worst is None or rise > worst[0]):
            worst = (rise, best_eps, best_acc, eps, acc)
        if acc < best_acc:
            best_eps, best_acc = eps, acc
    if worst is None:
        return None
    rise, e0, a0, e1, a1 = worst
    return _flag(
        FLAG_CURVE_NOT_MONOTONE,
        f"Adversarial accuracy rises from {a0:.3f} at eps={e0:g} to {a1:.3f} at eps={e1:g} "
        f"(+{rise:.3f}, tolerance {tol:.3f}), although a larger eps can only make the "
        f"attack stronger.",
        "A curve that goes up means the attack fails to use its larger budget: gradient "
        "masking or a step size that does not scale with eps; use more steps, restarts or "
        "a random start, and check the gradients.",
    )


# ---------------------------------------------------------------------- full


def _noise(x: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """Random perturbation with the full eps norm, seeded and drawn on the CPU."""
    gen = torch.Generator().manual_seed(int(cfg.seed) + 7919)
    if cfg.norm == "linf":
        signs = torch.randint(0, 2, x.shape, generator=gen, dtype=torch.int64) * 2 - 1
        delta = signs.to(torch.float64) * cfg.eps
    else:
        direction = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        norms = direction.reshape(x.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
        delta = direction / norms.view(-1, *([1] * (x.dim() - 1))) * cfg.eps
    delta = delta.to(device=x.device, dtype=x.dtype)
    return clip_bounds(x + project(delta, cfg.eps, cfg.norm), cfg.bounds).detach()


def _large_eps(cfg: AttackConfig, x: torch.Tensor) -> float:
    if cfg.bounds is None:
        return LARGE_EPS_FACTOR * float(cfg.eps)
    width = float(cfg.bounds[1]) - float(cfg.bounds[0])
    if cfg.norm == "linf":
        return width
    dim = int(x[0].numel()) if x.shape[0] else 1
    return width * math.sqrt(dim)


def _full_checks(
    model: Callable,
    xs: torch.Tensor,
    ys: torch.Tensor,
    cfg: AttackConfig,
    ctx: AttackContext,
    num_classes: int,
    evaluated: Dict[str, torch.Tensor],
    configured: Sequence[str] = (),
) -> List[dict]:
    from .attacks import strongest_attack
    from .attacks.gradient import fgsm, pgd

    flags: List[dict] = []
    n = xs.shape[0]
    if n == 0:
        return flags
    bs = cfg.batch_size
    tol = _tolerance(n)
    strong_name, strong = strongest_attack(configured)
    acc_pgd = _accuracy(model, strong(model, xs, ys, cfg, ctx), ys, bs)
    label = (
        f"PGD ({cfg.steps} steps, step size {cfg.resolved_step_size():.3g}, "
        f"{cfg.restarts} restart(s))"
        if strong_name == "pgd"
        else f"{strong_name.upper()} ({cfg.steps} iterations, {cfg.restarts} restart(s))"
    )

    # weak_beats_strong: FGSM, noise, and any non-gradient attack under test.
    fgsm_cfg = replace(cfg, steps=1, step_size=None, restarts=1, random_start=False)
    weak = {
        "FGSM": _accuracy(model, fgsm(model, xs, ys, fgsm_cfg, ctx), ys, bs),
        "random noise of the same norm": _accuracy(model, _noise(xs, cfg), ys, bs),
    }
    for name, adv in evaluated.items():
        if name in ("pgd", *STRONG):
            continue
        weak[f"the {name} attack"] = _accuracy(model, adv, ys, bs)
    worst_name = min(weak, key=lambda k: weak[k])
    if weak[worst_name] < acc_pgd - tol:
        flags.append(
            _flag(
                FLAG_WEAK_BEATS_STRONG,
                f"With {cfg.norm} eps={cfg.eps:g}, {worst_name} brings accuracy to "
                f"{weak[worst_name]:.3f} but {label} only to {acc_pgd:.3f} on {n} samples.",
                "A strong gradient attack should never lose to a weaker attack: either its "
                "settings are too weak (too few steps or too small a step size) or the "
                "gradients are masked; raise "
                "steps and step size, add restarts, and check the gradients flag.",
            )
        )

    # large_eps: an attack with an unbounded budget must reach chance or below.
    big = _large_eps(cfg, xs)
    big_cfg = replace(
        cfg,
        eps=big,
        step_size=None,
        steps=max(cfg.steps, LARGE_EPS_MIN_STEPS),
        restarts=1,
        random_start=False,
    )
    acc_big = _accuracy(model, pgd(model, xs, ys, big_cfg, ctx), ys, bs)
    chance = 1.0 / max(num_classes, 1)
    if acc_big > chance + 1e-9:
        flags.append(
            _flag(
                FLAG_LARGE_EPS,
                f"PGD with a huge {cfg.norm} eps={big:g} still leaves accuracy at {acc_big:.3f} "
                f"on {n} samples, above chance {chance:.3f} for {num_classes} classes.",
                "An attack whose budget covers the whole input range must fool the model; "
                "failing that points to gradient masking or a broken attack rather than "
                "robustness; check the gradients flag and use a gradient-free attack such as "
                "gan or a differentiable approximation of the masking step.",
            )
        )

    # not_converged: twice the steps or twice the restarts must not matter.
    variants = {
        f"{2 * cfg.steps} steps": replace(cfg, steps=2 * cfg.steps),
        f"{2 * max(cfg.restarts, 1)} restarts": replace(cfg, restarts=2 * max(cfg.restarts, 1)),
    }
    changes = {}
    for label, vcfg in variants.items():
        changes[label] = _accuracy(model, pgd(model, xs, ys, vcfg, ctx), ys, bs)
    label = max(changes, key=lambda k: abs(changes[k] - acc_pgd))
    # One extra restart moves a few samples of an ordinary model; only a
    # clear shift (3 points and 3 samples) says the attack has not converged.
    if abs(changes[label] - acc_pgd) > max(3 * ACC_TOL, 3.0 / max(n, 1)):
        flags.append(
            _flag(
                FLAG_NOT_CONVERGED,
                f"PGD with {label} gives adversarial accuracy {changes[label]:.3f} instead of "
                f"{acc_pgd:.3f} with {cfg.steps} steps and {cfg.restarts} restart(s) on {n} "
                f"samples.",
                "The attack has not converged, so the measured robustness depends on the "
                "attack budget and is likely too optimistic; raise steps and restarts (or use "
                "a random start) until the number stops moving.",
            )
        )
    return flags


# ----------------------------------------------------------------------- probe


def _sign_test(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(b, n + 1)) / 2.0**n


def gan_probe(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    x_gan: torch.Tensor,
    cfg: AttackConfig,
    ctx: AttackContext,
) -> Tuple[dict, Optional[dict]]:
    """PGD against the GAN attack on a seeded probe of the evaluation batch.

    ``x``, ``y``: the evaluation batch ``(N, ...)``, ``(N,)``; ``x_gan``: the
    ``gan`` attack's adversarial batch for it. The probe is
    ``min(N, PROBE_SIZE)`` samples drawn with ``cfg.seed``; PGD runs with
    ``cfg`` (the test's own eps, norm, steps). Returns ``(probe, flag)``:
    ``probe`` holds the sample count, both attack success rates (shares of the
    probe's correctly classified samples fooled), the samples only PGD fools
    (``pgd_only``) and only the GAN fools (``gan_only``) and the sign test's
    ``p_value``; ``flag`` is the ``gan_weaker_than_pgd`` flag or ``None``.
    """
    from .attacks.gradient import pgd

    n = x.shape[0]
    k = min(n, PROBE_SIZE)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    idx = torch.randperm(n, generator=gen)[:k].sort().values.to(x.device)
    xs, ys = x[idx].detach(), y[idx].detach()
    bs = cfg.batch_size
    ok = _predict(model, xs, bs) == ys
    gan_fooled = ok & (_predict(model, x_gan[idx].detach(), bs) != ys)
    pgd_fooled = ok & (_predict(model, pgd(model, xs, ys, cfg, ctx), bs) != ys)
    b = int((pgd_fooled & ~gan_fooled).sum())
    c = int((gan_fooled & ~pgd_fooled).sum())
    n_ok = int(ok.sum())

    def rate(m):
        return int(m.sum()) / n_ok if n_ok else 0.0

    probe = {
        "n": int(k),
        "seed": int(cfg.seed),
        "clean_correct": n_ok,
        "pgd_steps": int(cfg.steps),
        "pgd_success": rate(pgd_fooled),
        "gan_success": rate(gan_fooled),
        "pgd_only": b,
        "gan_only": c,
        "p_value": _sign_test(b, c),
    }
    flag = None
    if b > c and probe["p_value"] < PROBE_ALPHA:
        flag = _flag(
            FLAG_GAN_WEAKER,
            f"On a seeded probe of {k} samples ({n_ok} classified correctly), PGD "
            f"({cfg.steps} steps, {cfg.norm} eps={cfg.eps:g}) fools {_pct(probe['pgd_success'])} "
            f"but the GAN generator only {_pct(probe['gan_success'])} ({b} samples only PGD fools, "
            f"{c} only the GAN; sign test p={probe['p_value']:.3g}).",
            "The generator is weaker than PGD here, so the GAN's robust accuracy is too "
            "optimistic: raise --advrobust-gan-steps (or leave it at its default), clear the "
            'cache with --advrobust-retrain, or gate on attack="pgd" or ["gan", "pgd"].',
        )
    return probe, flag


# ----------------------------------------------------------------------- API


def run_sanity(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    cfg: AttackConfig,
    ctx: AttackContext,
    *,
    attacks: Sequence[str],
    level: str = "cheap",
    curve: Optional[List[dict]] = None,
    num_classes: Optional[int] = None,
    adversarial: Optional[Dict[str, torch.Tensor]] = None,
    correct_counts: Optional[Tuple[int, int]] = None,
) -> List[dict]:
    """Run the sanity checks of ``level`` and return the flags raised.

    ``model`` is frozen, in eval mode and on the device of ``x``; ``x``,
    ``y`` and ``x_adv`` are the evaluation batch and its adversarial twin
    under ``attacks`` (the names that produced ``x_adv``). ``curve`` is an
    eps sweep (dicts with ``eps`` and ``adversarial_accuracy``).
    ``num_classes`` defaults to the width of the model's output.
    ``adversarial`` optionally maps single attack names to their own
    adversarial batch (same samples as ``x``); at level full each non-PGD
    attack in it (or ``x_adv`` itself when ``attacks`` holds neither ``pgd`` nor
    an APGD variant) is compared against the strongest gradient attack
    configured; when it holds ``gan``, the probe of :func:`gan_probe` runs
    (at every level but off) and its numbers are put in ``ctx.facts["probe"]``.
    ``correct_counts`` (clean and adversarial correct counts on the full
    batch), when the caller has them, spares two forward passes.
    """
    if level not in LEVELS:
        raise ValueError(f"sanity level must be one of {', '.join(LEVELS)}, not {level!r}")
    if level == "off":
        return []
    attacks = [attacks] if isinstance(attacks, str) else list(attacks)
    flags: List[dict] = []
    n = x.shape[0]
    bs = cfg.batch_size
    has_grad = True
    idx = _sub_indices(n, x.device)
    xs, ys = x[idx].detach(), y[idx].detach()

    if n:
        with torch.no_grad():
            first = model(xs)
        grad_flag, has_grad = _check_gradients(model, xs, ys)
        for found in (
            _check_probabilities(first),
            grad_flag,
            _check_nondeterministic(model, xs, first),
        ):
            if found:
                flags.append(found)
        if num_classes is None and first.dim() == 2:
            num_classes = int(first.shape[1])
        if x_adv is not None:
            found = _check_adv_above_clean(model, x, y, x_adv, bs, correct_counts)
            if found:
                flags.append(found)
    found = check_curve(curve, n)
    if found:
        flags.append(found)
    if n and has_grad and adversarial and "gan" in adversarial:
        probe, found = gan_probe(model, x, y, adversarial["gan"], cfg, ctx)
        ctx.facts["probe"] = probe
        if found:
            flags.append(found)

    # Gradient attacks cannot run without an input gradient; the gradients flag says so.
    if level == "full" and n and has_grad:
        evaluated: Dict[str, torch.Tensor] = {}
        if adversarial:
            evaluated = {name: adv[idx].detach() for name, adv in adversarial.items()}
        elif (
            x_adv is not None
            and attacks
            and not set(attacks) & {"pgd", *STRONG}
            and not set(attacks) <= {"fgsm"}
        ):
            evaluated = {"+".join(attacks): x_adv[idx].detach()}
        flags.extend(
            _full_checks(
                model, xs, ys, cfg, ctx, int(num_classes or 2), evaluated, configured=attacks
            )
        )
    return flags
