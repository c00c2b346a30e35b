"""Labels as class indices, or one sentence saying how to make them so.

Labels must be the index of each sample's class in the model's logits. Strings,
bytes and other objects (``"cat"``, an ``Enum`` member) cannot be matched with
the logits without knowing the order of the model's outputs, so they are
refused with a sentence that says how to map them; so are one-hot labels,
fractions, booleans and negative numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import AdvRobustError
from .tensors import as_tensor

__all__ = ["label_tensor", "labels"]


def _not_an_index(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    return not isinstance(v, (int, float, np.integer, np.floating, torch.Tensor))


def label_tensor(value: Any, fixture: str) -> torch.Tensor:
    """Labels as a tensor, or one sentence when they are not class indices (strings,
    bytes, other objects) saying how to map them."""
    sample = None
    if isinstance(value, np.ndarray) and value.dtype.kind in "USO":
        flat = value.reshape(-1)
        bad = [v for v in flat.tolist() if _not_an_index(v)]
        if value.dtype.kind == "O" and not bad:
            return torch.as_tensor(np.asarray(flat.tolist()).reshape(value.shape))
        sample = bad or flat.tolist()
    elif isinstance(value, (list, tuple)):
        sample = [v for v in value if _not_an_index(v)] or None
    elif _not_an_index(value) and not isinstance(value, np.ndarray):
        sample = [value]
    if sample:
        shown = ", ".join(repr(v) for v in list(dict.fromkeys(sample))[:3])
        raise AdvRobustError(
            f"fixture {fixture!r} gave labels that are not class indices ({shown}, of type "
            f"{type(sample[0]).__name__}); give each label as the index of its class in the "
            "model's logits, in the order of the model's outputs (e.g. y = "
            "classes.index(label), or a target_transform that does it)"
        )
    return as_tensor(value, "labels", fixture)


def labels(y: torch.Tensor, fixture: str) -> torch.Tensor:
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
