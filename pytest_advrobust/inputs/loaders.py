"""Fixture values -> tensors once per session; DataLoaders read in a fixed, seeded order.

A ``DataLoader`` is evaluated on what it yields: it is iterated as it is (its
``collate_fn``, ``batch_size``, ``drop_last``, workers and transforms apply),
with every random generator it draws its order from seeded from the
evaluation seed for the duration, and given back its own state afterwards.
A shuffling loader therefore yields the same order in every run, and the
evaluation samples chosen from it by seeded permutation are the same too.

:class:`SessionData` remembers each conversion for the session, keyed by the
fixture value's identity (the value is kept alive, so identities stay unique),
so a Dataset of 60,000 images is turned into tensors once, not once per test.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["SessionData", "loader_batches", "seeded_loader"]

Pair = Tuple[torch.Tensor, torch.Tensor]


def _generators(loader: Any) -> List[torch.Generator]:
    """The generators a DataLoader's order can depend on (its own and its samplers')."""
    found: List[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


@contextlib.contextmanager
def seeded_loader(loader: Any, seed: int) -> Iterator[Any]:
    """Seed the loader's generators and torch's global one (used by samplers that
    have none) for the block; restore all of them afterwards."""
    gens = _generators(loader)
    states = [g.get_state() for g in gens]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for g in gens:
                g.manual_seed(int(seed))
            yield loader
    finally:
        for g, state in zip(gens, states):
            g.set_state(state)


def loader_batches(loader: Any, seed: int) -> Iterator[Any]:
    """Every batch the loader yields, iterated once in the order ``seed`` fixes (the
    loader's generators are seeded until the last batch has been read)."""
    with seeded_loader(loader, seed):
        yield from iter(loader)


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
        from .data import to_tensor_pair

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
