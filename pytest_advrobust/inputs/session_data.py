"""Fixture values -> tensors once per session.

:class:`SessionData` remembers each conversion for the session, keyed by the
fixture value's identity (the value is kept alive, so identities stay unique),
so a Dataset of 60,000 images is turned into tensors once, not once per test.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Optional, Tuple

import torch

from .data import to_tensor_pair

__all__ = ["SessionData"]

Pair = Tuple[torch.Tensor, torch.Tensor]


def _indices_key(indices: Optional[torch.Tensor]) -> Optional[str]:
    if indices is None:
        return None
    raw = indices.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha1(raw).hexdigest()


class SessionData:
    """Conversions of fixture values to ``(x, y)`` tensors, remembered for a session.

    ``convert(data, fixture, indices, seed, tick)`` returns what
    :func:`pytest_advrobust.inputs.data.to_tensor_pair` returns, computing it once per
    (value, fixture name, indices, seed). ``conversions`` counts the
    conversions that actually ran.
    """

    def __init__(self) -> None:
        self._memo: Dict[Tuple[Any, ...], Tuple[Any, Pair]] = {}
        self.conversions = 0

    def convert(
        self,
        data: Any,
        fixture: str,
        indices: Optional[torch.Tensor] = None,
        seed: int = 0,
        tick: Any = None,
    ) -> Pair:
        key = (id(data), fixture, _indices_key(indices), int(seed))
        hit = self._memo.get(key)
        if hit is not None and hit[0] is data:
            return hit[1]
        pair = to_tensor_pair(data, fixture, indices, seed=seed, tick=tick)
        self.conversions += 1
        self._memo[key] = (data, pair)  # keeps ``data`` alive: its id stays unique
        return pair

    def clear(self) -> None:
        self._memo.clear()
