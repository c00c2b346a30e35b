"""The model and data made ready for an evaluation.

:func:`prepare` checks the model, chooses the device, splits and checks the data
(NaN, range, dtype, preprocessing) as an :class:`InputSpec` says: the values the
evaluation reads from a test's settings for this stage.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple, Union

import torch

from ..errors import AdvRobustError
from .data import Split, check_inputs, split_data, to_tensor_pair
from .model import Preprocessed, resolve_device
from .precision import model_dtype

__all__ = ["InputSpec", "choose_inputs", "prepare", "torch_threads", "with_preprocessing"]


@dataclass(frozen=True)
class InputSpec:
    """How one test's model and data are read: the fixtures' names (``model``, ``data``,
    ``train_data``, for the messages), ``n_samples`` evaluation samples chosen with
    ``seed``, the ``device``, the inputs' ``bounds`` (``None``: unbounded), the model's
    ``preprocessing`` ``(mean, std)`` along ``channel_axis``, the input an attack
    perturbs (``attack_input``) and whether training samples are read (``need_train``)."""

    model: str = "robust_model"
    data: str = "robust_data"
    train_data: str = "robust_train_data"
    n_samples: int = 512
    seed: int = 0
    device: str = "auto"
    bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
    preprocessing: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
    channel_axis: Optional[int] = None
    attack_input: Optional[Union[int, str]] = None
    need_train: bool = True


def _input_range_check(x: torch.Tensor, bounds: Any, fixture: str) -> None:
    if not torch.isfinite(x).all():
        raise AdvRobustError(f"fixture {fixture!r} gave inputs with NaN or infinite values")
    if bounds is None:
        return
    lo, hi = bounds
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - 1e-6 or xmax > hi + 1e-6:
        raise AdvRobustError(
            f"inputs from fixture {fixture!r} span [{xmin:.4g}, {xmax:.4g}], outside "
            f"bounds=({lo:g}, {hi:g}); if they are already normalised, give the "
            "unnormalised data and preprocessing=(mean, std) so that eps stays in input "
            "units, else scale them or pass bounds=(low, high) (bounds=None for unbounded "
            "features) to the marker or --advrobust-bounds"
        )


def prepare(
    model: Any,
    data: Any,
    spec: InputSpec,
    train_data: Any = None,
    *,
    store: Any = None,
    tick: Any = None,
):
    """Check the model, choose the device, split and check the data.

    ``store`` (a :class:`~pytest_advrobust.inputs.session_data.SessionData`) remembers the
    conversions for the session; with ``spec.need_train`` false no training
    samples are loaded (``split.train_x`` is ``None``). Samples with several
    inputs come back as the perturbed input, tagged with its samples
    (:func:`choose_inputs`). ``tick(k)`` hears of every ``k`` samples read.
    """
    if model is None or not callable(model):
        raise AdvRobustError(
            f"fixture {spec.model!r} returned {type(model).__name__}, "
            "not a torch.nn.Module or callable mapping inputs to logits"
        )
    device = resolve_device(spec.device)
    convert = store.convert if store is not None else None
    split: Split = split_data(
        data,
        spec.n_samples,
        spec.seed,
        spec.data,
        need_train=spec.need_train and train_data is None,
        convert=convert,
        tick=tick,
    )
    if train_data is not None and spec.need_train:
        tx, ty = (convert or to_tensor_pair)(
            train_data, spec.train_data, None, spec.seed, tick=tick
        )
        split.train_x, split.train_y, split.train_is_eval = tx, ty, False
    choose_inputs(split, spec)
    if train_data is not None and spec.need_train:
        tx = split.train_x
        if tuple(tx.shape[1:]) != tuple(split.x.shape[1:]):
            raise AdvRobustError(
                f"fixture {spec.train_data!r} gives samples of shape {tuple(tx.shape[1:])} "
                f"but fixture {spec.data!r} gives {tuple(split.x.shape[1:])}; the GAN "
                "trains on one and attacks the other, so give both the same sample shape"
            )
    _match_model_dtype(model, split)
    _input_range_check(split.x, spec.bounds, spec.data)
    if spec.preprocessing is not None:  # one sentence now, not a broadcast error later
        Preprocessed(lambda t: t, *spec.preprocessing, channel_axis=spec.channel_axis).axis_for(
            tuple(split.x.shape)
        )
    return device, split


def choose_inputs(split: Split, spec: InputSpec) -> None:
    """Samples with several inputs: keep the one the attack perturbs (``attack_input``) as
    ``split.x`` (and ``split.train_x``), tagged with its samples and the other inputs
    (:mod:`.rows`, :mod:`.several`); one input per sample: check ``attack_input`` fits."""
    from .rows import tag
    from .several import Extras, Inputs, choose, join_tables

    x, tx = split.x, split.train_x
    if not isinstance(x, Inputs):
        if spec.attack_input not in (None, 0):
            raise AdvRobustError(
                f"attack_input={spec.attack_input!r} names an input, but fixture "
                f"{spec.data!r} gives one input per sample; leave attack_input out"
            )
        if isinstance(tx, Inputs):
            raise AdvRobustError(
                f"fixture {spec.train_data!r} gives several inputs per sample but "
                f"fixture {spec.data!r} gives one; give both the same inputs"
            )
        return
    xe, slot, others = choose(x, spec.attack_input, spec.data)
    xe = check_inputs(xe, spec.data)
    parts, layouts, xt = [others], [x.layout()], None
    if tx is not None and tx is not x:
        if not isinstance(tx, Inputs):
            raise AdvRobustError(
                f"fixture {spec.data!r} gives several inputs per sample but the "
                f"training data ({spec.train_data!r}) gives one; give both the same inputs"
            )
        xt, _, others_t = choose(tx, slot, spec.train_data)
        xt = check_inputs(xt, spec.train_data)
        parts.append(others_t)
        layouts.append(tx.layout())
    extras = Extras(x.kind, slot, tuple(x.slots), join_tables(parts, layouts, spec.data))
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


def with_preprocessing(model: Any, spec: InputSpec, device) -> Any:
    """The model as every attack calls it: the user's model inside its call guard
    (:mod:`.calls`), inside ``spec.preprocessing`` when there is one."""
    from .calls import guarded

    net = guarded(model, spec.model)
    if spec.preprocessing is None:
        return net
    return Preprocessed(net, *spec.preprocessing, channel_axis=spec.channel_axis).to(device)


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
