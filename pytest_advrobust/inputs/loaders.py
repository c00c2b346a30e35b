"""DataLoaders read in a fixed, seeded order.

A ``DataLoader`` is evaluated on what it yields: it is iterated as it is (its
``collate_fn``, ``batch_size``, ``drop_last``, workers and transforms apply),
with every random generator it draws its order from seeded from the
evaluation seed for the duration, and given back its own state afterwards.
A shuffling loader therefore yields the same order in every run, and the
evaluation samples chosen from it by seeded permutation are the same too.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, List

import torch

__all__ = ["loader_batches", "seeded_loader"]


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
