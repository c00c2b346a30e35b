"""Array-likes as tensors, or one sentence naming the fixture that gave something else."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import AdvRobustError

__all__ = ["as_tensor"]


def as_tensor(value: Any, what: str, fixture: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "USO":
            raise AdvRobustError(
                f"fixture {fixture!r} gave {what} of numpy dtype {value.dtype}, "
                "which is not numbers; give tensors or numeric arrays"
            )
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return torch.as_tensor(value)
    try:
        return torch.as_tensor(value)
    except Exception:
        raise AdvRobustError(
            f"fixture {fixture!r} gave {what} of type {type(value).__name__}, "
            "which is not a tensor or an array; give each sample as (input, label) with "
            "the input a tensor or array, or a list, tuple or dict of them"
        ) from None
