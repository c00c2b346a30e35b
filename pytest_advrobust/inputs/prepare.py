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

from ..errors import AdvRobustError
from ..geometry import perturbation_norms
from ..settings.robust import RobustSettings
from .data import Split, check_inputs, split_data, to_tensor_pair
from .model import Preprocessed, resolve_device
from .precision import model_dtype

__all__ = [
    "check_bound",
    "choose_inputs",
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


def check_bound(
    name: str, x: torch.Tensor, x_adv: torch.Tensor, cfg, record: Any = None, fixture: str = ""
) -> None:
    """Reject an attack result that is not a bounded perturbation of ``x``.

    ``record`` (what the model guard saw) lets a NaN result be traced to the model
    from ``fixture`` when its outputs or input gradients were not finite.
    """
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise AdvRobustError(
            f"attack {name!r} returned {shape}, not a tensor of the input shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x_adv).all():
        raise _nonfinite_result(name, record, fixture)
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


def _nonfinite_result(name: str, record: Any, fixture: str) -> AdvRobustError:
    """The sentence for an attack result with NaN or infinite values: the model's own
    non-finite outputs or gradients when the guard saw any, else the attack's."""
    outputs = getattr(record, "nonfinite_outputs", 0)
    grads = getattr(record, "nonfinite_rows", 0)
    if outputs or grads:
        seen = []
        if outputs:
            seen.append(f"NaN or infinite logits for {outputs} of {record.output_rows} inputs")
        if grads:
            seen.append(
                f"NaN or infinite input gradients for {grads} of {record.gradient_rows} inputs"
            )
        return AdvRobustError(
            f"the model from fixture {fixture!r} gave {' and '.join(seen)} the attacks tried, "
            f"and attack {name!r} could not find finite adversarial inputs from them; make "
            "the model's forward pass numerically safe (sqrt, log or division at 0, overflow)"
        )
    return AdvRobustError(f"attack {name!r} returned NaN or infinite inputs")


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


def prepare(
    model: Any,
    data: Any,
    settings: RobustSettings,
    train_data: Any = None,
    *,
    store: Any = None,
    need_train: bool = True,
    tick: Any = None,
):
    """Check the model, choose the device, split and check the data.

    ``store`` (a :class:`~pytest_advrobust.inputs.session_data.SessionData`) remembers the
    conversions for the session; with ``need_train=False`` no training
    samples are loaded (``split.train_x`` is ``None``). Samples with several
    inputs come back as the perturbed input, tagged with its samples
    (:func:`choose_inputs`). ``tick(k)`` hears of every ``k`` samples read.
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
        tick=tick,
    )
    if train_data is not None and need_train:
        tx, ty = (convert or to_tensor_pair)(
            train_data, settings.train_data, None, settings.seed, tick=tick
        )
        split.train_x, split.train_y, split.train_is_eval = tx, ty, False
    choose_inputs(split, settings)
    if train_data is not None and need_train:
        tx = split.train_x
        if tuple(tx.shape[1:]) != tuple(split.x.shape[1:]):
            raise AdvRobustError(
                f"fixture {settings.train_data!r} gives samples of shape {tuple(tx.shape[1:])} "
                f"but fixture {settings.data!r} gives {tuple(split.x.shape[1:])}; the GAN "
                "trains on one and attacks the other, so give both the same sample shape"
            )
    _match_model_dtype(model, split)
    _input_range_check(split.x, settings, settings.data)
    if settings.preprocessing is not None:  # one sentence now, not a broadcast error later
        Preprocessed(
            lambda t: t, *settings.preprocessing, channel_axis=settings.channel_axis
        ).axis_for(tuple(split.x.shape))
    return device, split


def choose_inputs(split: Split, settings: RobustSettings) -> None:
    """Samples with several inputs: keep the one the attack perturbs (``attack_input``) as
    ``split.x`` (and ``split.train_x``), tagged with its samples and the other inputs
    (:mod:`.rows`, :mod:`.several`); one input per sample: check ``attack_input`` fits."""
    from .rows import tag
    from .several import Extras, Inputs, choose, join_tables

    x, tx = split.x, split.train_x
    if not isinstance(x, Inputs):
        if settings.attack_input not in (None, 0):
            raise AdvRobustError(
                f"attack_input={settings.attack_input!r} names an input, but fixture "
                f"{settings.data!r} gives one input per sample; leave attack_input out"
            )
        if isinstance(tx, Inputs):
            raise AdvRobustError(
                f"fixture {settings.train_data!r} gives several inputs per sample but "
                f"fixture {settings.data!r} gives one; give both the same inputs"
            )
        return
    xe, slot, others = choose(x, settings.attack_input, settings.data)
    xe = check_inputs(xe, settings.data)
    parts, layouts, xt = [others], [x.layout()], None
    if tx is not None and tx is not x:
        if not isinstance(tx, Inputs):
            raise AdvRobustError(
                f"fixture {settings.data!r} gives several inputs per sample but the "
                f"training data ({settings.train_data!r}) gives one; give both the same inputs"
            )
        xt, _, others_t = choose(tx, slot, settings.train_data)
        xt = check_inputs(xt, settings.train_data)
        parts.append(others_t)
        layouts.append(tx.layout())
    extras = Extras(x.kind, slot, tuple(x.slots), join_tables(parts, layouts, settings.data))
    n = xe.shape[0]
    split.x = tag(xe, torch.arange(n), extras)
    if tx is x:
        split.train_x = split.x
    elif xt is not None:
        split.train_x = tag(xt, n + torch.arange(xt.shape[0]), extras)


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
    """The model as every attack calls it: the user's model inside its call guard
    (:mod:`.calls`), inside ``preprocessing`` when the settings give one."""
    from .calls import guarded

    net = guarded(model, settings.model)
    if settings.preprocessing is None:
        return net
    return Preprocessed(net, *settings.preprocessing, channel_axis=settings.channel_axis).to(device)


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
