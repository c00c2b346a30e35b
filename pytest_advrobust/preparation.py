"""The model and data made ready for an evaluation, and the checks on what comes back.

:func:`prepare` checks the model, chooses the device, splits and checks the
data (NaN, range, dtype, preprocessing); :func:`check_bound` rejects an attack
result that is not a bounded perturbation; :func:`run_model_safely` turns an
error of the user's model into one sentence that names its fixture.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch

from .data import Split, split_data, to_tensor_pair
from .errors import AdvRobustError
from .geometry import perturbation_norms
from .model import Preprocessed, resolve_device
from .precision import model_dtype
from .settings import RobustSettings

__all__ = [
    "NO_TRAINING_DATA",
    "check_bound",
    "needs_training_data",
    "prepare",
    "run_model_safely",
    "torch_threads",
    "with_preprocessing",
]


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


def run_model_safely(fn: Callable[[], Any], fixture: str, shape) -> Any:
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
