"""The one routine that obtains a cached network: memo, lock, hit, warm start, train, store.

Every kind of cached thing goes through :func:`obtain`: the AdvGAN generators, the
class-conditional generator and its reference classifier, and the stored evaluations.
A kind describes itself in a :class:`Recipe` (its key, how to rebuild it from stored
weights, how to describe a hit, how to train it, whether it is memoised in this process
and warm-started from its family); the order of the steps, the locking, the events and
the one warning for a full disk are the same for all of them. Under torchrun the
generator's ranks use :func:`look_up` and :func:`store` themselves
(:mod:`pytest_advrobust.gan.acquire_ranks`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..runtime import Runtime

__all__ = ["MEMO", "Recipe", "Trained", "clear_memo", "look_up", "obtain", "remembered", "store"]

#: What this process obtained, by key: ``(network, facts)``.
MEMO: Dict[str, Tuple[Any, Dict[str, Any]]] = {}
#: Modes of an entry trained in this process (not read from the cache).
TRAINED_MODES = ("cold", "warm")


def clear_memo() -> None:
    """Forget what this process obtained; the disk cache stays."""
    MEMO.clear()


@dataclass(frozen=True)
class Trained:
    """What :attr:`Recipe.train` gives: the network and its facts, and the weights
    (``state``) and metadata (``meta``) to store; ``mode`` is ``cold`` or ``warm`` (a
    ``warm`` store is recorded as such)."""

    net: Any
    facts: Optional[Dict[str, Any]]
    state: Mapping[str, Any]
    meta: Mapping[str, Any]
    mode: str = "cold"


@dataclass(frozen=True)
class Recipe:
    """How one cached network is found, rebuilt and trained.

    ``rebuild(state, meta, what)``: the network with ``state`` loaded, or ``None`` when
    it does not fit (having said why, naming ``what``); ``hit_facts(meta, seconds)``: the
    facts of a hit; ``train(init)``: a :class:`Trained`, started from the network
    ``init`` when given. ``family`` groups entries (the newest ``keep`` of it stay, when
    given); ``warm_start``: a miss starts from the family's newest entry; ``renew``: under
    ``retrain`` the entry (or this process's network) is trained further, instead of
    anew; ``memo_facts``: the facts of a network reused in this process (``None``: not
    memoised); ``finish``: what is done to a network before it is handed out;
    ``events``: the cache events of a hit and of a store; ``what``: the thing stored
    and what is done to it again next run, for the warning of a full disk; ``folder``:
    a folder inside the cache folder."""

    key: str
    rebuild: Callable[[Mapping[str, Any], Any, str], Optional[Any]]
    hit_facts: Callable[[Any, float], Optional[Dict[str, Any]]]
    train: Callable[[Optional[Any]], Trained]
    family: Optional[str] = None
    warm_start: bool = False
    renew: bool = False
    keep: Optional[int] = None
    memo_facts: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
    finish: Callable[[Any], Any] = lambda net: net
    events: Tuple[str, str] = ("hit", "train")
    what: Tuple[str, str] = ("trained network", "trained")
    folder: Optional[str] = None


def remembered(recipe: Recipe, retrain: bool) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """This process's network of ``recipe`` when it may be reused: always, except that under
    ``retrain`` only one trained in this process (each is trained once per session)."""
    memo = MEMO.get(recipe.key) if recipe.memo_facts is not None else None
    if memo is None or (retrain and memo[1].get("mode") not in TRAINED_MODES):
        return None
    return recipe.finish(memo[0]), recipe.memo_facts(memo[1])


def look_up(cache, recipe: Recipe, *, record: bool = True):
    """``(hit, warm)`` of ``recipe.key``; call it under ``cache.lock(recipe.key)``.

    ``hit``: ``(network, facts)`` of a usable entry, recorded as a hit event unless
    ``record`` is false (the entry is read to be trained further), or ``None``; ``warm``:
    ``(warm_key, network)`` of the family's newest usable entry when there is no hit and
    ``recipe.warm_start``, or ``None``."""
    t0 = time.perf_counter()
    loaded = cache.load(recipe.key)
    if loaded is not None:
        net = recipe.rebuild(loaded[0], loaded[1], f"cache entry {recipe.key}")
        if net is not None:
            if record:
                cache.record_event(recipe.events[0], recipe.key)
            return (net, recipe.hit_facts(loaded[1], time.perf_counter() - t0)), None
    if not recipe.warm_start or recipe.family is None:
        return None, None
    found = cache.find_warm_start(recipe.family, exclude_key=recipe.key)
    if found is not None:
        net = recipe.rebuild(found[1], found[2], f"warm-start entry {found[0]}")
        if net is not None:
            return None, (found[0], net)
    return None, None


def store(cache, recipe: Recipe, trained: Trained, warn: Optional[Callable[[str], None]]) -> None:
    """Store ``trained`` under ``recipe.key`` and record a store event (``warm`` for a warm
    start); keep the family's newest ``recipe.keep`` entries. A full or read-only disk
    costs one warning, not the run."""
    try:
        cache.store(recipe.key, trained.state, trained.meta, family=recipe.family)
        cache.record_event("warm" if trained.mode == "warm" else recipe.events[1], recipe.key)
        if recipe.keep is not None and recipe.family is not None:
            cache.keep_newest(recipe.family, recipe.keep)
    except OSError as exc:
        if warn is not None:
            thing, again = recipe.what
            warn(
                f"advrobust: could not store the {thing} in the cache ({exc}); "
                f"it will be {again} again next run"
            )


def obtain(recipe: Recipe, runtime: Runtime, init: Optional[Any] = None):
    """``(network, facts)`` of ``recipe``: this process's, else the cache entry (under the
    key's lock), else trained (from a warm start when there is one) and stored.

    With ``runtime.retrain`` it is trained again, once per session. ``init`` trains
    further from that network whatever the cache holds (a retraining on evidence).
    Without ``runtime.cache_dir`` nothing is read or stored."""
    from . import GanCache

    if init is None:
        memo = remembered(recipe, runtime.retrain)
        if memo is not None:
            return memo
    retrain = runtime.retrain or init is not None
    if runtime.cache_dir is None:
        net, facts = _trained(recipe, init if init is not None else _own(recipe, retrain), None)
    else:
        root = Path(runtime.cache_dir)
        cache = GanCache(root / recipe.folder if recipe.folder else root, warn=runtime.warn)
        with cache.lock(recipe.key):
            net, facts = _through(cache, recipe, retrain, init, runtime.warn)
    net = recipe.finish(net)
    if recipe.memo_facts is not None:
        MEMO[recipe.key] = (net, dict(facts))
    return net, facts


def _own(recipe: Recipe, retrain: bool) -> Optional[Any]:
    """Under ``retrain``, the network this process holds, to be trained further."""
    memo = MEMO.get(recipe.key) if recipe.renew and retrain else None
    return memo[0] if memo is not None else None


def _through(cache, recipe: Recipe, retrain: bool, init: Optional[Any], warn):
    """The cache's part of :func:`obtain`, under the key's lock."""
    hit = warm = None
    if init is None and (recipe.renew or not retrain):
        hit, warm = look_up(cache, recipe, record=not retrain)
        if hit is not None and not retrain:
            return hit
    if init is None:
        init = hit[0] if hit is not None else (warm[1] if warm is not None else None)
        init = init if init is not None else _own(recipe, retrain)
    return _trained(recipe, init, cache, warn)


def _trained(recipe: Recipe, init: Optional[Any], cache=None, warn=None):
    trained = recipe.train(init)
    if cache is not None:
        store(cache, recipe, trained, warn)
    return trained.net, trained.facts
