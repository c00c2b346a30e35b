"""One robustness evaluation: data split, attacks (worst case per sample), eps sweep, metrics.

The plugin calls :func:`run_evaluation` from a fixture; everything it needs
arrives as arguments, so the same function serves the fixtures, the marker
and the ``advrobust warm`` command.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from .attacks import get_attack
from .attacks.base import AttackContext, perturbation_norms
from .data import Split, split_data, to_tensor_pair
from .errors import AdvRobustError
from .evaluate import Predictions, merge_worst_case, predict, summarize
from .modelguard import Preprocessed, borrowed, resolve_device
from .settings import RobustSettings

__all__ = ["Outcome", "run_evaluation", "check_bound", "prepare", "torch_threads"]


@dataclass
class Outcome:
    """The result of one evaluation; tensors are on the CPU."""

    settings: RobustSettings
    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor
    clean: Predictions
    adv: Predictions
    numbers: Dict[str, Any]
    curve: Optional[List[Dict[str, Any]]]
    training: Optional[Dict[str, Any]]
    sanity: List[Dict[str, str]] = field(default_factory=list)
    device: str = "cpu"
    train_is_eval: bool = False

    def verdict_at(self, point: Dict[str, Any]) -> bool:
        t = self.settings.threshold
        return t is None or point["gap"] <= t + 1e-12

    def failing_points(self) -> List[Dict[str, Any]]:
        """Points (eps) whose gap is over the threshold, as the threshold applies."""
        if self.settings.threshold is None:
            return []
        if self.curve is None or self.settings.threshold_eps is not None:
            return [] if self.verdict_at(self.numbers) else [self.numbers]
        return [p for p in self.curve if not self.verdict_at(p)]


def _input_range_check(x: torch.Tensor, settings: RobustSettings, fixture: str) -> None:
    if not torch.isfinite(x).all():
        raise AdvRobustError(f"fixture {fixture!r} gave inputs with NaN or infinite values")
    if settings.bounds is None:
        return
    lo, hi = settings.bounds
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - 1e-6 or xmax > hi + 1e-6:
        raise AdvRobustError(
            f"inputs from fixture {fixture!r} span [{xmin:.4g}, {xmax:.4g}], outside "
            f"bounds=({lo:g}, {hi:g}); scale them, pass bounds=(low, high) to the robust "
            "marker, or bounds=None for unbounded features")


def check_bound(name: str, x: torch.Tensor, x_adv: torch.Tensor, cfg) -> None:
    """Reject an attack result that is not a bounded perturbation of ``x``."""
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise AdvRobustError(f"attack {name!r} returned {shape}, not a tensor of the input "
                             f"shape {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AdvRobustError(f"attack {name!r} returned NaN or infinite inputs")
    slack = 1e-5 * max(1.0, cfg.eps)
    worst = float(perturbation_norms(x.float(), x_adv.float(), cfg.norm).max()) if x.numel() else 0.0
    if worst > cfg.eps + slack:
        raise AdvRobustError(f"attack {name!r} left the {cfg.norm} ball: perturbation "
                             f"{worst:.6g} > eps {cfg.eps:g}")
    if cfg.bounds is not None:
        lo, hi = cfg.bounds
        if float(x_adv.min()) < lo - 1e-6 or float(x_adv.max()) > hi + 1e-6:
            raise AdvRobustError(f"attack {name!r} returned inputs outside bounds "
                                 f"({lo:g}, {hi:g})")


def _run_model_safely(fn: Callable[[], Any], fixture: str, shape) -> Any:
    try:
        return fn()
    except AdvRobustError:
        raise
    except Exception as exc:  # the user's model failed on a plain batch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AdvRobustError(f"model from fixture {fixture!r} raised {type(exc).__name__} on "
                             f"inputs of shape {tuple(shape)}: {first}") from exc


def prepare(model: Any, data: Any, settings: RobustSettings, train_data: Any = None):
    """Check the model, choose the device, split and check the data."""
    if model is None or not callable(model):
        raise AdvRobustError(f"fixture {settings.model!r} returned {type(model).__name__}, "
                             "not a torch.nn.Module or callable mapping inputs to logits")
    device = resolve_device(settings.device)
    split: Split = split_data(data, settings.n_samples, settings.seed, settings.data)
    if train_data is not None:
        tx, ty = to_tensor_pair(train_data, settings.train_data)
        split.train_x, split.train_y, split.train_is_eval = tx, ty, False
    _input_range_check(split.x, settings, settings.data)
    return device, split


def with_preprocessing(model: Any, settings: RobustSettings, device) -> Any:
    if settings.preprocessing is None:
        return model
    return Preprocessed(model, *settings.preprocessing).to(device)


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Use ``n`` intra-op threads for the block (``None``: leave torch's setting)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_evaluation(model: Any, data: Any, settings: RobustSettings, *,
                   train_data: Any = None, cache_dir: Optional[Path] = None,
                   retrain: bool = False, progress: Optional[Callable[[str], None]] = None,
                   warn: Optional[Callable[[str], None]] = None, quiet: bool = False,
                   sanity_level: Optional[str] = None) -> Outcome:
    """Evaluate ``model`` on ``data`` under ``settings``; restore the model afterwards.

    Torch's global random state is seeded from ``settings.seed`` for the
    evaluation and given back unchanged afterwards, so the tests that run
    later see the random state they would have seen without this one.
    """
    device, split = prepare(model, data, settings, train_data)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)
        return _evaluate(model, device, split, settings, cache_dir=cache_dir, retrain=retrain,
                         progress=progress, warn=warn, quiet=quiet, sanity_level=sanity_level)


def _evaluate(model: Any, device, split: Split, settings: RobustSettings, *,
              cache_dir: Optional[Path], retrain: bool,
              progress: Optional[Callable[[str], None]], warn: Optional[Callable[[str], None]],
              quiet: bool, sanity_level: Optional[str]) -> Outcome:
    with borrowed(model, device) as m:
        net = with_preprocessing(m, settings, device)
        x = split.x.to(device)
        y = split.y.to(device)
        clean = _run_model_safely(lambda: predict(net, x, y, settings.batch_size, settings.model),
                                  settings.model, x.shape)
        per_eps: Dict[float, Dict[str, Any]] = {}
        main_x_adv = main_adv = None
        training = None
        for eps in settings.eps:
            cfg = settings.attack_config(eps)
            results = []
            for name in settings.attacks:
                attack = get_attack(name)
                ctx = AttackContext(device=device, train_x=split.train_x, train_y=split.train_y,
                                    cache_dir=cache_dir, retrain=retrain, progress=progress,
                                    warn=warn, quiet=quiet)
                x_adv = attack(net, x, y, cfg, ctx)
                check_bound(name, x, x_adv, cfg)
                x_adv = x_adv.detach()
                preds = _run_model_safely(
                    lambda: predict(net, x_adv, y, settings.batch_size, settings.model),
                    settings.model, x.shape)
                results.append((x_adv, preds))
                if "training" in ctx.facts and math.isclose(eps, settings.main_eps):
                    training = dict(ctx.facts["training"])
                    if split.train_is_eval:
                        training["trained_on_eval"] = True
            raw_x_adv, raw = merge_worst_case(results)
            # A sample the model gets wrong without any attack counts as not
            # robust (as in AutoAttack): its adversarial example is itself.
            x_adv, adv = merge_worst_case([(x, clean)] + results)
            point = summarize(split.y, clean, adv, settings.metric)
            point["eps"] = eps
            per_eps[eps] = point
            if math.isclose(eps, settings.main_eps):
                main_x_adv, main_adv, main_raw = x_adv, adv, raw_x_adv
                raw_counts = (int(clean.correct.sum()), int(raw.correct.sum()))
                per_attack = {name: r[0] for name, r in zip(settings.attacks, results)}

        numbers = per_eps[min(per_eps, key=lambda e: abs(e - settings.main_eps))]
        curve = None
        if settings.is_sweep:
            curve = [{"eps": e, "adversarial_accuracy": p["adversarial_accuracy"],
                      "adversarial_ci": p["adversarial_ci"], "gap": p["gap"],
                      "clean_accuracy": p["clean_accuracy"]} for e, p in sorted(per_eps.items())]
        flags: List[Dict[str, str]] = []
        level = sanity_level or settings.sanity
        if level != "off":
            from .sanity import run_sanity

            ctx = AttackContext(device=device, train_x=split.train_x, train_y=split.train_y,
                                cache_dir=cache_dir, progress=progress, warn=warn, quiet=True)
            flags = run_sanity(net, x, y, main_raw, settings.attack_config(settings.main_eps),
                               ctx, attacks=list(settings.attacks), level=level, curve=curve,
                               num_classes=clean.num_classes, adversarial=per_attack,
                               correct_counts=raw_counts)
            if "probe" in ctx.facts and training is not None:
                training["probe"] = ctx.facts["probe"]  # PGD against the GAN on a seeded probe
    return Outcome(settings=settings, x=split.x, y=split.y, x_adv=main_x_adv.cpu(),
                   clean=clean, adv=main_adv, numbers=numbers, curve=curve,
                   training=training, sanity=flags, device=str(device),
                   train_is_eval=split.train_is_eval)
