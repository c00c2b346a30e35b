"""The one look-up-or-train protocol over the cache, for every kind of cached network.

Its variants (AdvGAN generators, the fitted generators, the class-conditional
generator and its reference classifier) pass in how to rebuild a network
from stored weights and how to describe a hit; :func:`look_up` and
:func:`store` do the rest the same way for all of them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

__all__ = ["look_up", "store"]

Rebuild = Callable[[Mapping[str, Any], str], Optional[Any]]


def look_up(
    cache,
    key: str,
    family: str,
    rebuild: Rebuild,
    hit_facts: Callable[[Any, float], Dict[str, Any]],
    *,
    retrain: bool = False,
    warm: bool = True,
    record: bool = True,
):
    """``(hit, warm)`` for ``key``; call it under ``cache.lock(key)``.

    ``rebuild(state, what)`` gives a network with ``state`` loaded, or
    ``None`` when it does not fit (having said why, naming ``what``);
    ``hit_facts(meta, seconds)`` the facts of a hit. ``hit``: ``(network,
    facts)`` of a usable entry, recorded as a ``"hit"`` event, or ``None``;
    ``warm``: ``(warm_key, network)`` of the newest usable entry of
    ``family`` when there is no hit (and ``warm`` is true), or ``None``. With
    ``retrain`` both are ``None``. ``record=False`` loads without recording a hit (the
    entry is read to be trained further, not used).
    """
    if retrain:
        return None, None
    t0 = time.perf_counter()
    loaded = cache.load(key)
    if loaded is not None:
        net = rebuild(loaded[0], f"cache entry {key}")
        if net is not None:
            if record:
                cache.record_event("hit", key)
            return (net, hit_facts(loaded[1], time.perf_counter() - t0)), None
    found = cache.find_warm_start(family, exclude_key=key) if warm else None
    if found is not None:
        net = rebuild(found[1], f"warm-start entry {found[0]}")
        if net is not None:
            return None, (found[0], net)
    return None, None


def store(
    cache,
    key: str,
    state: Mapping[str, Any],
    meta: Mapping[str, Any],
    mode: str,
    warn: Optional[Callable[[str], None]],
    what: Tuple[str, str] = ("trained network", "trained"),
) -> None:
    """Store ``state`` under ``key`` and record a ``"train"`` (or, for ``mode == "warm"``,
    ``"warm"``) event. A full or read-only disk costs one warning (``what``: the thing
    stored and what is done to it again next run), not the run."""
    try:
        cache.store(key, state, meta)
    except OSError as exc:
        if warn is not None:
            warn(
                f"advrobust: could not store the {what[0]} in the cache ({exc}); "
                f"it will be {what[1]} again next run"
            )
    else:
        cache.record_event("warm" if mode == "warm" else "train", key)
