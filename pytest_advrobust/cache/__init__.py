"""The GAN cache: content-addressed keys, safe atomic storage, locks, warm starts.

Training a generator is the expensive step of the ``gan`` attack, so its
weights are kept on disk under a key that digests everything the generator
depends on (the model's class and weights, the training data, the GAN
settings and :data:`FORMAT_VERSION`).

The package, by role:

* :mod:`.keys` - digests of tensors and modules, canonical keys, the key check;
* :mod:`.files` - fsynced writes, temporary names and their staleness;
* :mod:`.verify` - the checks one entry passes before anything is decoded;
* :mod:`.store` - the store/load protocol: locks, atomic writes, quarantine;
* :mod:`.maintenance` - :class:`GanCache`: entries, warm starts, clear, prune, events.

Layout of a cache folder::

    <root>/<key>.safetensors     the generator's weights (safetensors, never pickle)
    <root>/<key>.json            metadata: checksum, size, tensor specs, caller meta
    <root>/locks/<key>.lock      one cross-process lock per key
    <root>/quarantine/           damaged entries, set aside with a timestamp
    <root>/events.jsonl          one JSON line per event ("train", "hit", "damaged", ...)

Safety rules:

* Nothing is ever unpickled. Weights are read as raw bytes, their size and
  SHA-256 are checked against the JSON, and only then are the bytes decoded
  by safetensors and compared with the JSON. Files with other suffixes
  (``.pt``, ``.pkl``) are ignored.
* A store writes both files under temporary names (``*.tmp-*``) in the same
  folder, fsyncs them, and renames the weights and then the JSON into place.
  The JSON is the commit marker: weights without a JSON are never loaded.
* A damaged entry never raises: :meth:`GanCache.load` warns in one sentence,
  moves the files to ``quarantine/``, records a ``"damaged"`` event and
  returns ``None`` so that the caller retrains.

Intended use by a caller that trains::

    cache = GanCache(root, warn=ctx.runtime.warn)
    with cache.lock(key):
        hit = cache.load(key)
        if hit is None:
            state = train(...)
            cache.store(key, state, {"family": family, ...})
            cache.record_event("train", key)
        else:
            cache.record_event("hit", key)
"""

from __future__ import annotations

from ..settings.cache_folder import ENV_CACHE_DIR, resolve_cache_dir
from .keys import FORMAT_VERSION, canonical_key, digest_module, digest_tensors
from .maintenance import EntryInfo, GanCache
from .store import CacheWarning

__all__ = [
    "ENV_CACHE_DIR",
    "FORMAT_VERSION",
    "CacheWarning",
    "EntryInfo",
    "GanCache",
    "canonical_key",
    "digest_module",
    "digest_tensors",
    "resolve_cache_dir",
]
