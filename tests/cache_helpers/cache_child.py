"""Child process used by the cache tests (run with ``sys.executable``).

Modes:
  key                                  print the key and digests of fixed inputs
  train_or_load ROOT KEY READY GO      wait for GO, then get-or-train under the lock
  slow_store ROOT KEY STAGE MARKER     store under the lock and stall at STAGE
                                       (weights | json | between) after touching MARKER
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from pytest_advrobust.cache import GanCache, canonical_key, digest_module, digest_tensors  # noqa: E402
from pytest_advrobust.cache import files as cache_files  # noqa: E402


def fixed_inputs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    data = torch.arange(24, dtype=torch.float32).reshape(6, 4) / 7.0
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    settings = {"eps": 0.1, "norm": "linf", "steps": 40, "bounds": (0.0, 1.0), "seed": 0}
    return model, data, labels, settings


def key_line() -> str:
    model, data, labels, settings = fixed_inputs()
    parts = {
        "model": digest_module(model),
        "data": digest_tensors(data, labels),
        "settings": settings,
    }
    return f"{canonical_key(parts)} {digest_module(model)} {digest_tensors(data, labels)}"


def mode_key() -> None:
    print(key_line())


def trained_state() -> dict:
    gen = torch.Generator().manual_seed(123)
    return {"w": torch.randn(8, 8, generator=gen), "b": torch.randn(8, generator=gen)}


def mode_train_or_load(root: str, key: str, ready: str, go: str) -> None:
    cache = GanCache(root)
    print("KEY", key_line(), flush=True)
    Path(ready).touch()
    deadline = time.time() + 60
    while not os.path.exists(go):
        if time.time() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.01)
    with cache.lock(key):
        hit = cache.load(key)
        if hit is None:
            state = trained_state()
            time.sleep(1.0)
            cache.record_event("train", key)
            cache.store(key, state, {"family": "fam"})
            mode = "train"
        else:
            state, _meta = hit
            cache.record_event("hit", key)
            mode = "hit"
    names = sorted(state)
    print("RESULT", mode, digest_tensors(*(state[n] for n in names)), flush=True)


def mode_slow_store(root: str, key: str, stage: str, marker: str) -> None:
    cache = GanCache(root)
    original_write = cache_files.write_bytes
    original_replace = os.replace

    def stall() -> None:
        Path(marker).touch()
        time.sleep(120)

    def slow_write(path, data):
        is_weights = ".safetensors" in Path(path).name
        if (stage == "weights" and is_weights) or (stage == "json" and not is_weights):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data[: len(data) // 2])
            os.fsync(fd)
            stall()
        original_write(path, data)

    def slow_replace(src, dst):
        original_replace(src, dst)
        if stage == "between" and str(dst).endswith(".safetensors"):
            stall()

    cache_files.write_bytes = slow_write
    os.replace = slow_replace
    state = {"w": torch.full((16, 16), 7.0), "b": torch.zeros(16)}
    with cache.lock(key):
        cache.store(key, state, {"family": "fam", "version": "new"})
    print("STORED (the test expected a kill)", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"key": mode_key, "train_or_load": mode_train_or_load, "slow_store": mode_slow_store}[mode](
        *args
    )
