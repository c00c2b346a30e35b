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
from .attacks.base import AttackContext
from .attacks.counting import counted
from .data import Split, split_data, to_tensor_pair
from .errors import AdvRobustError
from .evaluate import Predictions, merge_worst_case, predict, summarize
from .geometry import perturbation_norms
from .gradcheck import require_input_gradient
from .modelguard import Preprocessed, borrowed, resolve_device
from .precision import into_dtype, model_dtype, working_copy
from .settings import RobustSettings

__all__ = [
    "Outcome",
    "run_evaluation",
    "check_bound",
    "needs_training_data",
    "prepare",
    "torch_threads",
]


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
    class_names: Optional[List[str]] = None
    cost: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # attack="generated": its numbers (acceptance, reference) and the labels of x_adv,
    # which then holds the accepted generated samples rather than perturbed copies of x.
    generated: Optional[Dict[str, Any]] = None
    y_adv: Optional[torch.Tensor] = None
    # attack="generated": which real samples the validity judge accepts (bool, (N,)); the
    # real accuracy of the gap is measured on them.
    real_valid: Optional[torch.Tensor] = None

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
            f"bounds=({lo:g}, {hi:g}); if they are already normalised, give the "
            "unnormalised data and preprocessing=(mean, std) so that eps stays in input "
            "units, else scale them or pass bounds=(low, high) (bounds=None for unbounded "
            "features) to the marker or --advrobust-bounds"
        )


def check_bound(name: str, x: torch.Tensor, x_adv: torch.Tensor, cfg) -> None:
    """Reject an attack result that is not a bounded perturbation of ``x``."""
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise AdvRobustError(
            f"attack {name!r} returned {shape}, not a tensor of the input shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x_adv).all():
        raise AdvRobustError(f"attack {name!r} returned NaN or infinite inputs")
    slack = 1e-5 * max(1.0, cfg.eps)
    # In float64: exact for the differences of float16/bfloat16/float32 values.
    worst = (
        float(perturbation_norms(x.double(), x_adv.double(), cfg.norm).max()) if x.numel() else 0.0
    )
    if worst > cfg.eps + slack:
        raise AdvRobustError(
            f"attack {name!r} left the {cfg.norm} ball: perturbation {worst:.6g} > eps {cfg.eps:g}"
        )
    if cfg.bounds is not None:
        lo, hi = cfg.bounds
        if float(x_adv.min()) < lo - 1e-6 or float(x_adv.max()) > hi + 1e-6:
            raise AdvRobustError(f"attack {name!r} returned inputs outside bounds ({lo:g}, {hi:g})")


def _run_model_safely(fn: Callable[[], Any], fixture: str, shape) -> Any:
    try:
        return fn()
    except AdvRobustError:
        raise
    except Exception as exc:  # the user's model failed on a plain batch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AdvRobustError(
            f"model from fixture {fixture!r} raised {type(exc).__name__} on "
            f"inputs of shape {tuple(shape)}: {first}"
        ) from exc


#: Built-in attacks that never use training data (everything else may: the GAN trains).
NO_TRAINING_DATA = ("pgd", "fgsm")


def needs_training_data(settings: RobustSettings) -> bool:
    """Whether an attack of ``settings`` may use training samples (the GAN, custom ones)."""
    return any(a not in NO_TRAINING_DATA and not a.startswith("apgd") for a in settings.attacks)


def prepare(
    model: Any,
    data: Any,
    settings: RobustSettings,
    train_data: Any = None,
    *,
    store: Any = None,
    need_train: bool = True,
):
    """Check the model, choose the device, split and check the data.

    ``store`` (a :class:`~pytest_advrobust.loading.SessionData`) remembers the
    conversions for the session; with ``need_train=False`` no training
    samples are loaded (``split.train_x`` is ``None``).
    """
    if model is None or not callable(model):
        raise AdvRobustError(
            f"fixture {settings.model!r} returned {type(model).__name__}, "
            "not a torch.nn.Module or callable mapping inputs to logits"
        )
    device = resolve_device(settings.device)
    convert = store.convert if store is not None else None
    split: Split = split_data(
        data,
        settings.n_samples,
        settings.seed,
        settings.data,
        need_train=need_train and train_data is None,
        convert=convert,
    )
    if train_data is not None and need_train:
        tx, ty = (convert or to_tensor_pair)(train_data, settings.train_data, None, settings.seed)
        if tuple(tx.shape[1:]) != tuple(split.x.shape[1:]):
            raise AdvRobustError(
                f"fixture {settings.train_data!r} gives samples of shape {tuple(tx.shape[1:])} "
                f"but fixture {settings.data!r} gives {tuple(split.x.shape[1:])}; the GAN "
                "trains on one and attacks the other, so give both the same sample shape"
            )
        split.train_x, split.train_y, split.train_is_eval = tx, ty, False
    _match_model_dtype(model, split)
    _input_range_check(split.x, settings, settings.data)
    if settings.preprocessing is not None:  # one sentence now, not a broadcast error later
        Preprocessed(
            lambda t: t, *settings.preprocessing, channel_axis=settings.channel_axis
        ).axis_for(tuple(split.x.shape))
    return device, split


def _match_model_dtype(model: Any, split: Split) -> None:
    """Floating inputs take the dtype of the model's parameters (float64 arrays from
    NumPy for a float32 model, say): the model receives inputs of its own dtype."""
    dtype = model_dtype(model)
    if dtype is None:
        return
    if split.x.is_floating_point() and split.x.dtype != dtype:
        split.x = split.x.to(dtype)
    tx = split.train_x
    if tx is not None and tx.is_floating_point() and tx.dtype != dtype:
        split.train_x = tx.to(dtype)


def with_preprocessing(model: Any, settings: RobustSettings, device) -> Any:
    if settings.preprocessing is None:
        return model
    return Preprocessed(model, *settings.preprocessing, channel_axis=settings.channel_axis).to(
        device
    )


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


def run_evaluation(
    model: Any,
    data: Any,
    settings: RobustSettings,
    *,
    train_data: Any = None,
    cache_dir: Optional[Path] = None,
    retrain: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
    quiet: bool = False,
    sanity_level: Optional[str] = None,
    store: Any = None,
) -> Outcome:
    """Evaluate ``model`` on ``data`` under ``settings``; restore the model afterwards.

    Torch's global random state is seeded from ``settings.seed`` for the
    evaluation and given back unchanged afterwards, so the tests that run
    later see the random state they would have seen without this one.
    ``store`` remembers data conversions across evaluations of a session.
    """
    if "generated" in settings.attacks:
        from .generated.evaluation import run_generated

        return run_generated(
            model,
            data,
            settings,
            train_data=train_data,
            cache_dir=cache_dir,
            retrain=retrain,
            progress=progress,
            warn=warn,
            quiet=quiet,
            store=store,
        )
    device, split = prepare(
        model, data, settings, train_data, store=store, need_train=needs_training_data(settings)
    )
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)
        return _evaluate(
            model,
            device,
            split,
            settings,
            cache_dir=cache_dir,
            retrain=retrain,
            progress=progress,
            warn=warn,
            quiet=quiet,
            sanity_level=sanity_level,
        )


def _evaluate(
    model: Any,
    device,
    split: Split,
    settings: RobustSettings,
    *,
    cache_dir: Optional[Path],
    retrain: bool,
    progress: Optional[Callable[[str], None]],
    warn: Optional[Callable[[str], None]],
    quiet: bool,
    sanity_level: Optional[str],
) -> Outcome:
    with borrowed(model, device) as m:
        net = with_preprocessing(m, settings, device)
        x = split.x.to(device)
        y = split.y.to(device)
        clean = _run_model_safely(
            lambda: predict(net, x, y, settings.batch_size, settings.model), settings.model, x.shape
        )
        _run_model_safely(
            lambda: require_input_gradient(
                net, x, y, settings.attacks, settings.model, settings.refine
            ),
            settings.model,
            x.shape,
        )
        net_work, x_work = working_copy(net, x)  # float32 attacks for float16/bfloat16 inputs
        train_x = split.train_x
        if train_x is not None and x_work is not x:
            train_x = train_x.float()
        per_eps: Dict[float, Dict[str, Any]] = {}
        cost: Dict[str, Dict[str, float]] = {}
        main_x_adv = main_adv = None
        training = None
        for eps in settings.eps:
            cfg = settings.attack_config(eps)
            results = []
            for name in settings.attacks:
                attack = get_attack(name)
                ctx = AttackContext(
                    device=device,
                    train_x=train_x,
                    train_y=split.train_y,
                    cache_dir=cache_dir,
                    retrain=retrain,
                    progress=progress,
                    warn=warn,
                    quiet=quiet,
                )
                x_adv, count = counted(attack, net_work, x_work, y, cfg, ctx)
                if math.isclose(eps, settings.main_eps):
                    cost[name] = count.per_sample(x.shape[0])
                check_bound(name, x_work, x_adv, cfg)  # the attack's own result
                # then the bound holds after rounding to the input dtype, to the last bit
                x_adv = into_dtype(x, x_adv, eps, cfg.norm, cfg.bounds)
                check_bound(name, x, x_adv, cfg)
                x_adv = x_adv.detach()
                preds = _run_model_safely(
                    lambda x_adv=x_adv: predict(net, x_adv, y, settings.batch_size, settings.model),
                    settings.model,
                    x.shape,
                )
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
            curve = [
                {
                    "eps": e,
                    "adversarial_accuracy": p["adversarial_accuracy"],
                    "adversarial_ci": p["adversarial_ci"],
                    "gap": p["gap"],
                    "clean_accuracy": p["clean_accuracy"],
                }
                for e, p in sorted(per_eps.items())
            ]
        flags: List[Dict[str, str]] = []
        level = sanity_level or settings.sanity
        if level != "off":
            from .sanity import run_sanity

            ctx = AttackContext(
                device=device,
                train_x=train_x,
                train_y=split.train_y,
                cache_dir=cache_dir,
                progress=progress,
                warn=warn,
                quiet=True,
            )
            flags = run_sanity(
                net_work,
                x_work,
                y,
                main_raw.to(x_work.dtype),
                settings.attack_config(settings.main_eps),
                ctx,
                attacks=list(settings.attacks),
                level=level,
                curve=curve,
                num_classes=clean.num_classes,
                adversarial=per_attack,
                correct_counts=raw_counts,
            )
            if "probe" in ctx.facts and training is not None:
                training["probe"] = ctx.facts["probe"]  # PGD against the GAN on a seeded probe
    return Outcome(
        settings=settings,
        x=split.x,
        y=split.y,
        x_adv=main_x_adv.cpu(),
        clean=clean,
        adv=main_adv,
        numbers=numbers,
        curve=curve,
        training=training,
        sanity=flags,
        device=str(device),
        train_is_eval=split.train_is_eval,
        class_names=split.class_names,
        cost=cost,
    )
