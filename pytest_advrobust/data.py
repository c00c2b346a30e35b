"""User data -> tensors, and a seeded, fixed split into evaluation and training samples.

Accepted forms (the ``robust_data`` fixture may return any of them):

* an ``(x, y)`` pair of tensors or numpy arrays;
* a map-style ``torch.utils.data.Dataset`` whose items are ``(input, label)``;
* a ``DataLoader``, evaluated on what it yields: iterated once, in the order
  the evaluation seed fixes (see :mod:`pytest_advrobust.loading`);
* an iterable of ``(x_batch, y_batch)`` pairs.

Also a reader for MNIST-style IDX files (plain or gzip), used by the
benchmarks and usable by model repositories that keep such files.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from .errors import AdvRobustError

__all__ = [
    "Split",
    "class_names_of",
    "read_idx",
    "load_idx_dataset",
    "split_data",
    "to_tensor_pair",
]

MIN_TRAIN = 64


@dataclass
class Split:
    """The evaluation samples and the samples a learned attack may train on."""

    x: torch.Tensor
    y: torch.Tensor
    train_x: Optional[torch.Tensor]
    train_y: Optional[torch.Tensor]
    eval_indices: torch.Tensor
    train_is_eval: bool = False
    class_names: Optional[List[str]] = None


def _as_tensor(value: Any, what: str, fixture: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return torch.as_tensor(value)
    try:
        return torch.as_tensor(value)
    except Exception:
        raise AdvRobustError(
            f"fixture {fixture!r} gave {what} of type {type(value).__name__}, "
            "which is not a tensor or an array"
        ) from None


def _labels(y: torch.Tensor, fixture: str) -> torch.Tensor:
    if y.dim() == 2 and y.shape[1] > 1:
        raise AdvRobustError(
            f"fixture {fixture!r} gave one-hot or multi-column labels of shape "
            f"{tuple(y.shape)}; give class indices of shape (n,)"
        )
    y = y.reshape(-1)
    if y.dtype.is_floating_point:
        if not torch.all(y == y.round()):
            raise AdvRobustError(f"fixture {fixture!r} gave non-integer labels; give class indices")
    elif y.dtype == torch.bool or y.dtype.is_complex:
        raise AdvRobustError(
            f"fixture {fixture!r} gave labels of dtype {y.dtype}; give integer class indices"
        )
    y = y.long()
    if y.numel() and int(y.min()) < 0:
        raise AdvRobustError(f"fixture {fixture!r} gave negative labels; give class indices")
    return y


def _inputs(x: torch.Tensor, fixture: str) -> torch.Tensor:
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


def _pair_from_item(item: Any, fixture: str):
    if isinstance(item, dict):
        keys = [k for k in ("label", "labels", "target", "targets", "y") if k in item]
        xs = [k for k in ("image", "input", "inputs", "x", "pixel_values") if k in item]
        if keys and xs:
            return item[xs[0]], item[keys[0]]
        raise AdvRobustError(
            f"fixture {fixture!r} gave samples without labels "
            "(dict items need an input and a label key)"
        )
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


def to_tensor_pair(
    data: Any, fixture: str = "robust_data", indices: Optional[torch.Tensor] = None, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn the user's data into ``(x, y)`` CPU tensors (optionally only ``indices``).

    A ``DataLoader`` is iterated with its order seeded by ``seed``; ``indices``
    then index what it yielded.
    """
    from torch.utils.data import DataLoader, IterableDataset

    if data is None:
        raise AdvRobustError(
            f"fixture {fixture!r} returned None; return a Dataset, a DataLoader or an (x, y) pair"
        )
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and not _is_map_dataset(data[0])
        and isinstance(data[0], (torch.Tensor, np.ndarray))
    ):
        return _from_pair(data, fixture, indices)
    if isinstance(data, (torch.Tensor, np.ndarray)) or (
        isinstance(data, (tuple, list)) and len(data) == 1
    ):
        raise AdvRobustError(
            f"fixture {fixture!r} gave inputs without labels; return an (x, y) pair"
        )
    if isinstance(data, DataLoader):
        from .loading import loader_batches

        return _from_batches(loader_batches(data, seed), fixture, indices)
    if _is_map_dataset(data) and not isinstance(data, IterableDataset):
        return _from_map_dataset(data, fixture, indices)
    if hasattr(data, "__iter__"):
        return _from_batches(data, fixture, indices)
    raise AdvRobustError(
        f"fixture {fixture!r} returned a {type(data).__name__}; return a "
        "Dataset, a DataLoader or an (x, y) pair"
    )


def _from_pair(data: Any, fixture: str, indices: Optional[torch.Tensor]):
    """An ``(x, y)`` pair of tensors or arrays, checked."""
    x = _inputs(_as_tensor(data[0], "inputs", fixture), fixture)
    y = _labels(_as_tensor(data[1], "labels", fixture), fixture)
    if x.shape[0] != y.shape[0]:
        raise AdvRobustError(
            f"fixture {fixture!r} gave {x.shape[0]} inputs but {y.shape[0]} labels"
        )
    if x.shape[0] == 0:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    if indices is not None:
        x, y = x[indices], y[indices]
    return x, y


def _from_map_dataset(data: Any, fixture: str, indices: Optional[torch.Tensor]):
    """A map-style dataset, item by item (only ``indices`` when given)."""
    idx = range(len(data)) if indices is None else indices.tolist()
    xs, ys = [], []
    for i in idx:
        xi, yi = _pair_from_item(data[i], fixture)
        xs.append(_as_tensor(xi, "inputs", fixture))
        ys.append(_as_tensor(yi, "labels", fixture))
    if not xs:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    try:
        x = torch.stack(xs)
    except RuntimeError:
        raise AdvRobustError(f"fixture {fixture!r} gave inputs of different shapes") from None
    return _inputs(x, fixture), _labels(
        torch.stack([t.reshape(()) if t.numel() == 1 else t for t in ys]), fixture
    )


def _from_batches(batches: Any, fixture: str, indices: Optional[torch.Tensor]):
    """Concatenate ``(x_batch, y_batch)`` pairs (or dict batches) into one pair."""
    xs, ys = [], []
    for batch in batches:
        xb, yb = _pair_from_item(batch, fixture)
        xb = _as_tensor(xb, "inputs", fixture)
        yb = _as_tensor(yb, "labels", fixture)
        if yb.dim() == 0:
            xb, yb = xb.unsqueeze(0), yb.reshape(1)
        xs.append(xb)
        ys.append(yb)
    if not xs:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    x, y = _inputs(torch.cat(xs), fixture), _labels(torch.cat(ys), fixture)
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
    max_train: int = 60000,
    *,
    need_train: bool = True,
    convert: Optional[Callable[..., Tuple[torch.Tensor, torch.Tensor]]] = None,
) -> Split:
    """Choose ``n_samples`` evaluation samples with a seeded permutation.

    The remaining samples (up to ``max_train``) are for training a learned
    attack. When fewer than ``MIN_TRAIN`` remain, the learned attack trains
    on the evaluation samples themselves and ``train_is_eval`` says so.
    With ``need_train=False`` the training samples of a Dataset are not
    loaded (``train_x``/``train_y`` are ``None``). ``convert(data, fixture,
    indices, seed)`` replaces :func:`to_tensor_pair` (a session's memo).
    """
    if convert is None:
        convert = to_tensor_pair
    total = _length(data)
    if total is None:
        x_all, y_all = convert(data, fixture, None, seed)
        total = x_all.shape[0]
    else:
        x_all = y_all = None
    if total == 0:
        raise AdvRobustError(f"fixture {fixture!r} gave no samples")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=gen)
    n = min(int(n_samples), total)
    eval_idx = perm[:n].sort().values
    train_idx = perm[n : n + max_train].sort().values
    train_is_eval = train_idx.numel() < MIN_TRAIN
    if train_is_eval:
        train_idx = eval_idx
    tx = ty = None
    if x_all is None:
        x, y = convert(data, fixture, eval_idx, seed)
        if need_train:
            tx, ty = (x, y) if train_is_eval else convert(data, fixture, train_idx, seed)
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


# ----------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not, into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims)) if dims else 1
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise ValueError(
            f"{path}: expected {count * dtype.itemsize} bytes of data, found {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def load_idx_dataset(root, split: str = "test") -> Tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST-layout dataset folder (e.g. Fashion-MNIST) as float images in [0, 1].

    ``root`` holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
    Returns ``x`` of shape (n, 1, 28, 28) and ``y`` of shape (n,).
    """
    prefix = {"train": "train", "test": "t10k"}[split]
    root = Path(root)

    def find(stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (root / name).exists():
                return root / name
        raise FileNotFoundError(f"{root / stem}[.gz] not found")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
