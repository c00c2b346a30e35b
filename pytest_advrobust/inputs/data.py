"""User data -> tensors, and a seeded, fixed split into evaluation and training samples.

Accepted forms (the ``robust_data`` fixture may return any of them):

* an ``(x, y)`` pair of tensors or numpy arrays (``x`` may be a list, tuple
  or dict of tensors: a model with several inputs);
* a map-style ``torch.utils.data.Dataset`` whose items are ``(input, label)``
  (``input`` one tensor, or a list, tuple or dict of tensors), or dicts with
  a label key (``label``, ``labels``, ``target``, ``targets``, ``y``) whose
  other tensor entries are the inputs;
* a ``DataLoader``, evaluated on what it yields: iterated once, in the order
  the evaluation seed fixes (see :mod:`pytest_advrobust.inputs.loaders`);
* an iterable of ``(x_batch, y_batch)`` pairs.

Several inputs come back as :class:`~pytest_advrobust.inputs.several.Inputs`, one
tensor per input. Labels must be class indices; anything else (strings,
objects) is one sentence saying how to map them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import AdvRobustError
from .idx import load_idx_dataset, read_idx
from .labels import label_tensor as _label_tensor
from .labels import labels as _labels
from .several import Inputs, is_several
from .tensors import as_tensor

__all__ = [
    "Split",
    "check_inputs",
    "class_names_of",
    "read_idx",
    "load_idx_dataset",
    "split_data",
    "to_tensor_pair",
]

MIN_TRAIN = 64
#: Most samples a learned attack trains on (the rest of the data after the evaluation samples).
MAX_TRAIN = 60000
LABEL_KEYS = ("label", "labels", "target", "targets", "y")
Batch = Union[torch.Tensor, Inputs]
Tick = Optional[Callable[[int], None]]


@dataclass
class Split:
    """The evaluation samples and the samples a learned attack may train on."""

    x: Any  # a tensor; Inputs for several inputs until the perturbed one is chosen
    y: torch.Tensor
    train_x: Optional[Any]
    train_y: Optional[torch.Tensor]
    eval_indices: torch.Tensor
    train_is_eval: bool = False
    class_names: Optional[List[str]] = None


def check_inputs(x: torch.Tensor, fixture: str) -> torch.Tensor:
    """The perturbed input checked: floating (integers cast to float32, uint8 refused),
    at least ``(n, features)``."""
    if not x.dtype.is_floating_point:
        if x.dtype == torch.uint8:
            raise AdvRobustError(
                f"fixture {fixture!r} gave uint8 inputs; scale them to floats "
                "in the model's input range (e.g. x / 255)"
            )
        x = x.float()
    if x.dim() < 2:
        raise AdvRobustError(
            f"fixture {fixture!r} gave inputs of shape {tuple(x.shape)}; "
            "expected (n, features) or (n, channels, height, width)"
        )
    return x


def _inputs(x: Batch, fixture: str) -> Batch:
    return x if isinstance(x, Inputs) else check_inputs(x, fixture)


def _input_of(value: Any, fixture: str) -> Batch:
    """One item's or batch's input: a tensor, or :class:`Inputs` for several."""
    if is_several(value):
        return Inputs.of(value, lambda v, slot: as_tensor(v, f"input {slot!r}", fixture))
    return as_tensor(value, "inputs", fixture)


def _dict_pair(item: dict, fixture: str):
    keys = [k for k in LABEL_KEYS if k in item]
    if not keys:
        raise AdvRobustError(
            f"fixture {fixture!r} gave samples without labels: dict items need a label "
            f"key ({', '.join(LABEL_KEYS)}); they have {', '.join(map(repr, item))}"
        )
    inputs = {
        k: v
        for k, v in item.items()
        if k != keys[0] and (isinstance(v, (torch.Tensor, np.ndarray)) or is_several(v))
    }
    if not inputs:
        raise AdvRobustError(
            f"fixture {fixture!r} gave dict samples whose only tensor is the label "
            f"{keys[0]!r}; give the inputs as tensors or arrays"
        )
    x = next(iter(inputs.values())) if len(inputs) == 1 else inputs
    return x, item[keys[0]]


def _pair_from_item(item: Any, fixture: str):
    if isinstance(item, dict):
        return _dict_pair(item, fixture)
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise AdvRobustError(
        f"fixture {fixture!r} gave samples without labels; "
        "each sample must be an (input, label) pair"
    )


def _is_map_dataset(obj: Any) -> bool:
    return (
        hasattr(obj, "__getitem__")
        and hasattr(obj, "__len__")
        and not isinstance(obj, (tuple, list, torch.Tensor, np.ndarray, dict))
    )


def _is_pair(data: Any) -> bool:
    """An ``(x, y)`` pair: ``x`` a tensor or array, or a list, tuple or dict of them."""
    if not isinstance(data, (tuple, list)) or len(data) != 2 or _is_map_dataset(data[0]):
        return False
    first, labels = data
    if isinstance(first, (torch.Tensor, np.ndarray)):
        return True
    return (
        isinstance(labels, (torch.Tensor, np.ndarray))
        and is_several(first)
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in _values(first))
    )


def _values(value: Any) -> list:
    return list(value.values()) if isinstance(value, dict) else list(value)


def rows(x: Batch) -> int:
    """The number of samples of a batch (a tensor or :class:`Inputs`)."""
    return x.n if isinstance(x, Inputs) else int(x.shape[0])


def to_tensor_pair(
    data: Any,
    fixture: str = "robust_data",
    indices: Optional[torch.Tensor] = None,
    seed: int = 0,
    tick: Tick = None,
) -> Tuple[Batch, torch.Tensor]:
    """Turn the user's data into ``(x, y)`` CPU tensors (optionally only ``indices``).

    ``x`` is one tensor, or :class:`~pytest_advrobust.inputs.several.Inputs` when each
    sample has several inputs. A ``DataLoader`` is iterated with its order
    seeded by ``seed``; ``indices`` then index what it yielded. ``tick(k)`` is
    called after each ``k`` samples read (progress).
    """
    from torch.utils.data import DataLoader, IterableDataset

    if data is None:
        raise AdvRobustError(
            f"fixture {fixture!r} returned None; return a Dataset, a DataLoader or an (x, y) pair"
        )
    if _is_pair(data):
        return _from_pair(data, fixture, indices)
    if isinstance(data, (torch.Tensor, np.ndarray)) or (
        isinstance(data, (tuple, list)) and len(data) == 1
    ):
        raise AdvRobustError(
            f"fixture {fixture!r} gave inputs without labels; return an (x, y) pair"
        )
    if isinstance(data, DataLoader):
        from .loaders import loader_batches

        return _from_batches(loader_batches(data, seed), fixture, indices, tick)
    if _is_map_dataset(data) and not isinstance(data, IterableDataset):
        return _from_map_dataset(data, fixture, indices, tick)
    if hasattr(data, "__iter__"):
        return _from_batches(data, fixture, indices, tick)
    raise AdvRobustError(
        f"fixture {fixture!r} returned a {type(data).__name__}; return a "
        "Dataset, a DataLoader or an (x, y) pair"
    )


def _from_pair(data: Any, fixture: str, indices: Optional[torch.Tensor]):
    """An ``(x, y)`` pair of tensors or arrays, checked."""
    x = _inputs(_input_of(data[0], fixture), fixture)
    y = _labels(_label_tensor(data[1], fixture), fixture)
    if rows(x) != y.shape[0]:
        raise AdvRobustError(f"fixture {fixture!r} gave {rows(x)} inputs but {y.shape[0]} labels")
    if rows(x) == 0:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    if indices is not None:
        x, y = x[indices], y[indices]
    return x, y


def _stack(xs: List[Batch], fixture: str, stack: bool) -> Batch:
    if isinstance(xs[0], Inputs) or any(isinstance(v, Inputs) for v in xs):
        if not all(isinstance(v, Inputs) for v in xs):
            raise AdvRobustError(
                f"fixture {fixture!r} gave some samples with several inputs and some with one"
            )
        return Inputs.join(xs, fixture, stack)
    try:
        return torch.stack(xs) if stack else torch.cat(xs)
    except RuntimeError:
        raise AdvRobustError(f"fixture {fixture!r} gave inputs of different shapes") from None


def _from_map_dataset(data: Any, fixture: str, indices: Optional[torch.Tensor], tick: Tick):
    """A map-style dataset, item by item (only ``indices`` when given)."""
    idx = range(len(data)) if indices is None else indices.tolist()
    xs, ys = [], []
    for i in idx:
        xi, yi = _pair_from_item(data[i], fixture)
        xs.append(_input_of(xi, fixture))
        ys.append(_label_tensor(yi, fixture))
        if tick is not None:
            tick(1)
    if not xs:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    x = _stack(xs, fixture, stack=True)
    return _inputs(x, fixture), _labels(
        torch.stack([t.reshape(()) if t.numel() == 1 else t for t in ys]), fixture
    )


def _from_batches(batches: Any, fixture: str, indices: Optional[torch.Tensor], tick: Tick):
    """Concatenate ``(x_batch, y_batch)`` pairs (or dict batches) into one pair."""
    xs, ys = [], []
    for batch in batches:
        xb, yb = _pair_from_item(batch, fixture)
        xb = _input_of(xb, fixture)
        yb = _label_tensor(yb, fixture)
        if yb.dim() == 0:
            xb, yb = xb[None], yb.reshape(1)  # one sample: a batch of one
        xs.append(xb)
        ys.append(yb)
        if tick is not None:
            tick(int(yb.shape[0]))
    if not xs:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    x, y = _inputs(_stack(xs, fixture, stack=False), fixture), _labels(torch.cat(ys), fixture)
    if rows(x) != y.shape[0]:
        raise AdvRobustError(f"fixture {fixture!r} gave {rows(x)} inputs but {y.shape[0]} labels")
    if indices is not None:
        x, y = x[indices], y[indices]
    return x, y


def _length(data: Any) -> Optional[int]:
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(data, DataLoader):
        return None  # evaluated on what it yields: iterated once
    if _is_map_dataset(data) and not isinstance(data, IterableDataset):
        return len(data)
    return None


def split_data(
    data: Any,
    n_samples: int,
    seed: int,
    fixture: str = "robust_data",
    *,
    need_train: bool = True,
    convert: Optional[Callable[..., Tuple[Batch, torch.Tensor]]] = None,
    tick: Tick = None,
) -> Split:
    """Choose ``n_samples`` evaluation samples with a seeded permutation.

    The remaining samples (up to :data:`MAX_TRAIN`) are for training a learned
    attack. When fewer than ``MIN_TRAIN`` remain, the learned attack trains
    on the evaluation samples themselves and ``train_is_eval`` says so.
    With ``need_train=False`` the training samples of a Dataset are not
    loaded (``train_x``/``train_y`` are ``None``). ``convert(data, fixture,
    indices, seed, tick=tick)`` replaces :func:`to_tensor_pair` (a session's
    memo); ``tick(k)`` is told of every ``k`` samples read.
    """
    if convert is None:
        convert = to_tensor_pair
    total = _length(data)
    if total is None:
        x_all, y_all = convert(data, fixture, None, seed, tick=tick)
        total = rows(x_all)
    else:
        x_all = y_all = None
    if total == 0:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=gen)
    n = min(int(n_samples), total)
    eval_idx = perm[:n].sort().values
    train_idx = perm[n : n + MAX_TRAIN].sort().values
    train_is_eval = train_idx.numel() < MIN_TRAIN
    if train_is_eval:
        train_idx = eval_idx
    tx = ty = None
    if x_all is None:
        x, y = convert(data, fixture, eval_idx, seed, tick=tick)
        if need_train:
            tx, ty = (x, y) if train_is_eval else convert(data, fixture, train_idx, seed, tick=tick)
    else:
        x, y = x_all[eval_idx], y_all[eval_idx]
        if need_train:
            tx, ty = x_all[train_idx], y_all[train_idx]
    return Split(
        x=x.contiguous(),
        y=y,
        train_x=tx.contiguous() if tx is not None else None,
        train_y=ty,
        eval_indices=eval_idx,
        train_is_eval=train_is_eval,
        class_names=class_names_of(data),
    )


def class_names_of(data: Any) -> Optional[List[str]]:
    """The class names a data set carries (its ``classes``, as torchvision's data sets
    have), looked up through DataLoaders and Subsets; ``None`` when it has none."""
    for _ in range(4):  # DataLoader -> Subset -> Dataset
        names = getattr(data, "classes", None)
        if (
            isinstance(names, (list, tuple))
            and names
            and all(isinstance(n, (str, int)) for n in names)
        ):
            return [str(n) for n in names]
        data = getattr(data, "dataset", None)
        if data is None:
            return None
    return None
