"""GAN cache: keys, digests, round trips, locks, warm starts, maintenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
import torch

from pytest_advrobust.cache import (
    FORMAT_VERSION,
    EntryInfo,
    GanCache,
    canonical_key,
    digest_module,
    digest_tensors,
    resolve_cache_dir,
)

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "cache_helpers" / "cache_child.py"


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def warnings_seen() -> list:
    return []


@pytest.fixture
def cache(tmp_path, warnings_seen) -> GanCache:
    return GanCache(tmp_path / "cache", warn=warnings_seen.append)


def sample_state() -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=gen),
        "conv.bias": torch.randn(4, generator=gen),
        "bn.num_batches_tracked": torch.tensor(17),
        "half": torch.randn(5, generator=gen).half(),
        "bf16": torch.randn(3, generator=gen).bfloat16(),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


# --------------------------------------------------------------------------- round trip


def test_round_trip_identical_tensors_and_meta(cache, warnings_seen):
    state = sample_state()
    meta = {"family": "fam", "steps": 300, "eps": 0.1, "nested": {"a": [1, 2, None]}, "ok": True}
    key = GanCache.key({"x": 1})
    path = cache.store(key, state, meta)
    assert path == cache.root / f"{key}.safetensors" and path.is_file()
    assert (cache.root / f"{key}.json").is_file()

    loaded, loaded_meta = cache.load(key)
    assert loaded_meta == meta
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype
        assert loaded[name].device.type == "cpu"
        assert torch.equal(loaded[name], tensor)
    assert digest_tensors(*(loaded[n] for n in sorted(loaded))) == digest_tensors(
        *(state[n] for n in sorted(state))
    )
    assert warnings_seen == []


def test_json_records_what_the_spec_asks(cache):
    key = "k1"
    cache.store(key, {"w": torch.ones(2, 3)}, {"family": "gen-a", "note": "x"})
    doc = json.loads((cache.root / "k1.json").read_text())
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["key"] == key and doc["family"] == "gen-a"
    assert doc["size"] == (cache.root / "k1.safetensors").stat().st_size
    assert len(doc["sha256"]) == 64
    assert doc["tensors"] == {"w": {"shape": [2, 3], "dtype": "float32"}}
    assert doc["meta"] == {"family": "gen-a", "note": "x"}
    assert abs(doc["created"] - time.time()) < 60


def test_store_copies_views_grads_and_overwrites(cache):
    base = torch.randn(6, 6, requires_grad=True)
    view = base.t()[:, :3]  # non-contiguous view of a grad tensor
    shared = {"a": view, "b": view}  # shared storage is fine
    cache.store("k", shared, {})
    loaded, _ = cache.load("k")
    assert torch.equal(loaded["a"], view.detach()) and torch.equal(loaded["b"], view.detach())
    cache.store("k", {"a": torch.zeros(1)}, {"v": 2})
    loaded, meta = cache.load("k")
    assert list(loaded) == ["a"] and meta == {"v": 2}


def test_load_absent_and_missing_root(tmp_path, warnings_seen):
    cache = GanCache(tmp_path / "nowhere" / "cache", warn=warnings_seen.append)
    assert cache.load("abc") is None
    assert cache.entries() == [] and cache.stats() == {} and cache.find_warm_start("f") is None
    assert cache.prune() == [] and cache.clear() == 0
    assert not cache.root.exists()  # created lazily, only by writes
    assert warnings_seen == []


def test_store_rejects_bad_input_before_writing(cache):
    with pytest.raises(TypeError):
        cache.store("k", {"w": torch.ones(1)}, {"bad": object()})
    with pytest.raises(TypeError):
        cache.store("k", {"w": [1, 2]}, {})
    for bad in ["../evil", "a/b", "", "x.y", "k" * 200, None]:
        with pytest.raises(ValueError):
            cache.store(bad, {"w": torch.ones(1)}, {})
        with pytest.raises(ValueError):
            cache.load(bad)
    assert not cache.root.exists() or not any(cache.root.iterdir())


def test_weights_without_json_are_never_loaded(cache, warnings_seen):
    cache.store("k", {"w": torch.ones(3)}, {})
    (cache.root / "k.json").unlink()
    assert cache.load("k") is None
    assert cache.entries() == []
    assert warnings_seen == []  # an uncommitted entry is simply absent


def test_temp_files_are_ignored(cache, warnings_seen):
    cache.store("k", {"w": torch.ones(3)}, {"family": "f"})
    (cache.root / "k.json.tmp-deadbeef-1-abcd").write_text("{garbage")
    (cache.root / "k2.safetensors.tmp-deadbeef-1-abcd").write_bytes(b"\0" * 10)
    loaded, _ = cache.load("k")
    assert torch.equal(loaded["w"], torch.ones(3))
    assert cache.load("k2") is None
    assert [e.key for e in cache.entries()] == ["k"]
    assert warnings_seen == []


# --------------------------------------------------------------------------- digests and keys


def test_digest_tensors_reads_values_not_layout():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert digest_tensors(x) == digest_tensors(x.t().contiguous().t())
    assert digest_tensors(x) == digest_tensors(x.clone().requires_grad_(True))
    assert digest_tensors(x) != digest_tensors(x.reshape(4, 3))  # shape counts
    assert digest_tensors(x) != digest_tensors(x.double())  # dtype counts
    assert digest_tensors(x, x) != digest_tensors(x)  # number of tensors counts
    assert digest_tensors(x[:1], x[1:]) != digest_tensors(x[:2], x[2:])
    y = x.clone()
    y[2, 3] += 1e-6
    assert digest_tensors(x) != digest_tensors(y)
    assert len(digest_tensors(x)) == 64
    assert digest_tensors(torch.zeros(0)) != digest_tensors(torch.zeros(0, 2))


def test_digest_module_class_structure_and_weights():
    a, b = small_model(0), small_model(0)
    assert digest_module(a) == digest_module(b)
    with torch.no_grad():
        b[0].weight[0, 0] += 1e-4
    assert digest_module(a) != digest_module(b)

    class Other(torch.nn.Sequential):
        pass

    c = Other(*small_model(0))
    assert digest_module(c) != digest_module(a)  # same weights, other class
    d = small_model(0)
    d[1] = torch.nn.Tanh()  # same weights, other activation
    assert digest_module(d) != digest_module(a)
    with pytest.raises(TypeError):
        digest_module(lambda x: x)


def test_canonical_key_is_stable_and_normalised():
    key = canonical_key({"eps": 0.1, "norm": "linf", "bounds": (0.0, 1.0), "steps": 40})
    assert len(key) == 32 and all(ch in "0123456789abcdef" for ch in key)
    assert key == canonical_key({"steps": 40, "bounds": [0, 1], "norm": "linf", "eps": 0.1})
    assert GanCache.key({"a": 1}) == canonical_key({"a": 1})
    assert canonical_key({"a": 0.1}) != canonical_key({"a": 0.1 + 1e-12})
    assert canonical_key({"a": float("nan")}) == canonical_key({"a": float("nan")})
    assert canonical_key({"a": {"x": 1, "y": 2}}) == canonical_key({"a": {"y": 2, "x": 1}})
    assert canonical_key({"a": None}) != canonical_key({})
    assert canonical_key({"t": torch.ones(2)}) == canonical_key({"t": torch.ones(2)})
    assert canonical_key({"t": torch.ones(2)}) != canonical_key({"t": torch.ones(3)})
    with pytest.raises(TypeError):
        canonical_key({"a": object()})
    with pytest.raises(TypeError):
        canonical_key({1: "x"})


def test_key_changes_with_one_weight_one_sample_one_setting():
    model = small_model(0)
    data = torch.rand(16, 4)
    labels = torch.randint(0, 2, (16,))
    settings = {"eps": 0.1, "norm": "linf", "steps": 40, "seed": 0}

    def key(m, x, y, s):
        return canonical_key(
            {"model": digest_module(m), "data": digest_tensors(x, y), "settings": s}
        )

    base = key(model, data, labels, settings)
    assert base == key(small_model(0), data.clone(), labels.clone(), dict(settings))

    changed_model = small_model(0)
    with torch.no_grad():
        changed_model[2].bias[1] += 0.5
    x2 = data.clone()
    x2[7, 2] = 0.123
    y2 = labels.clone()
    y2[3] = 1 - y2[3]
    keys = {
        base,
        key(changed_model, data, labels, settings),
        key(model, x2, labels, settings),
        key(model, data, y2, settings),
        key(model, data, labels, {**settings, "eps": 0.2}),
        key(model, data, labels, {**settings, "seed": 1}),
    }
    assert len(keys) == 6


# --------------------------------------------------------------------------- location


def test_resolve_cache_dir_precedence(tmp_path):
    env = {"ADVROBUST_CACHE_DIR": str(tmp_path / "from-env")}
    root = tmp_path / "proj"
    assert resolve_cache_dir(str(tmp_path / "opt"), "ini", env, root) == tmp_path / "opt"
    assert resolve_cache_dir(None, "ini-dir", env, root) == root / "ini-dir"
    assert resolve_cache_dir(None, str(tmp_path / "abs"), env, root) == tmp_path / "abs"
    assert resolve_cache_dir(None, None, env, root) == tmp_path / "from-env"
    assert resolve_cache_dir("", "  ", env, root) == tmp_path / "from-env"
    assert resolve_cache_dir(None, None, {}, root) == root / ".pytest_cache" / "d" / "advrobust"
    assert (
        resolve_cache_dir(None, None, env={}, rootdir=root)
        == root / ".pytest_cache" / "d" / "advrobust"
    )
    relative = resolve_cache_dir("rel/cache", None, {}, root)
    assert relative.is_absolute() and relative == Path.cwd() / "rel" / "cache"
    assert not (root.exists())  # nothing is created


# --------------------------------------------------------------------------- locks and events


def test_lock_is_exclusive_and_reusable(cache):
    first = cache.lock("k")
    assert isinstance(first, filelock.BaseFileLock)
    assert Path(first.lock_file) == cache.root / "locks" / "k.lock"
    with first:
        with pytest.raises(filelock.Timeout):
            cache.lock("k", timeout=0.05).acquire()
        with cache.lock("other", timeout=0.05):
            pass
    with cache.lock("k", timeout=0.05):
        pass


def expected_key_line() -> list:
    sys.path.insert(0, str(CHILD.parent))
    try:
        import cache_child
    finally:
        sys.path.remove(str(CHILD.parent))
    model, data, labels, settings = cache_child.fixed_inputs()
    return [
        canonical_key(
            {
                "model": digest_module(model),
                "data": digest_tensors(data, labels),
                "settings": settings,
            }
        ),
        digest_module(model),
        digest_tensors(data, labels),
    ]


def test_two_processes_train_once_and_share_the_weights(tmp_path):
    """Both start together; the lock makes one train and the other load its result.

    Each child also prints the key of fixed inputs: keys agree across processes.
    """
    root = tmp_path / "cache"
    key = canonical_key({"shared": True})
    go = tmp_path / "go"
    procs = []
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(CHILD),
                    "train_or_load",
                    str(root),
                    key,
                    str(tmp_path / f"ready{i}"),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
        )
    try:
        deadline = time.time() + 90
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.time() < deadline, "children did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        go.touch()
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), outputs
    results = [
        line.split() for out, _ in outputs for line in out.splitlines() if line.startswith("RESULT")
    ]
    keys = [
        line.split()[1:]
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("KEY")
    ]
    assert keys == [expected_key_line()] * 2  # same key, module and data digests in every process
    assert sorted(r[1] for r in results) == ["hit", "train"]
    assert results[0][2] == results[1][2]
    cache = GanCache(root)
    assert cache.stats() == {"train": 1, "hit": 1}
    state, meta = cache.load(key)
    assert digest_tensors(*(state[n] for n in sorted(state))) == results[0][2]
    assert meta == {"family": "fam"}


def test_events_and_stats(cache):
    cache.record_event("train", "k1")
    cache.record_event("hit", "k1")
    cache.record_event("hit", "k2")
    with open(cache.root / "events.jsonl", "a") as f:
        f.write("not json\n[1, 2]\n")
    assert cache.stats() == {"train": 1, "hit": 2}
    events = cache.events()
    assert [e["kind"] for e in events] == ["train", "hit", "hit"]
    assert events[0]["key"] == "k1" and events[0]["pid"] == os.getpid()
    assert all(isinstance(e["time"], float) for e in events)
    with pytest.raises(ValueError):
        cache.record_event("")


# --------------------------------------------------------------------------- warm start


def test_warm_start_returns_newest_of_the_family(cache, warnings_seen):
    cache.store("old", {"w": torch.full((2,), 1.0)}, {"family": "A", "n": 1})
    cache.store("other", {"w": torch.full((2,), 9.0)}, {"family": "B"})
    cache.store("new", {"w": torch.full((2,), 2.0)}, {"family": "A", "n": 2})
    time.sleep(0.002)
    cache.store("newest-b", {"w": torch.full((2,), 8.0)}, {"family": "B"})

    key, state, meta = cache.find_warm_start("A")
    assert key == "new" and meta == {"family": "A", "n": 2}
    assert torch.equal(state["w"], torch.full((2,), 2.0))
    assert cache.find_warm_start("A", exclude_key="new")[0] == "old"
    assert cache.find_warm_start("B")[0] == "newest-b"
    assert cache.find_warm_start("C") is None
    assert warnings_seen == []


def test_warm_start_skips_a_damaged_newest_entry(cache, warnings_seen):
    cache.store("old", {"w": torch.full((64,), 1.0)}, {"family": "A"})
    cache.store("new", {"w": torch.full((64,), 2.0)}, {"family": "A"})
    weights = cache.root / "new.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))

    key, state, _ = cache.find_warm_start("A")
    assert key == "old" and torch.equal(state["w"], torch.full((64,), 1.0))
    assert len(warnings_seen) == 1 and "new" in warnings_seen[0]
    assert not weights.exists() and cache.stats() == {"damaged": 1}
    assert len(list((cache.root / "quarantine").iterdir())) == 2


def test_warm_start_ignores_other_format_versions(cache, warnings_seen):
    cache.store("old", {"w": torch.ones(2)}, {"family": "A"})
    cache.store("future", {"w": torch.zeros(2)}, {"family": "A"})
    doc_path = cache.root / "future.json"
    doc = json.loads(doc_path.read_text())
    doc["format_version"] = FORMAT_VERSION + 1
    doc_path.write_text(json.dumps(doc))
    assert cache.find_warm_start("A")[0] == "old"
    assert warnings_seen == []


# --------------------------------------------------------------------------- maintenance


def test_entries_report_validity(cache):
    cache.store("a", {"w": torch.ones(4)}, {"family": "F", "x": 1})
    cache.store("b", {"w": torch.ones(4)}, {"family": "G"})
    (cache.root / "b.safetensors").write_bytes(b"short")
    (cache.root / "c.json").write_text("{oops")
    (cache.root / "stray.pt").write_bytes(b"not ours")
    infos = {e.key: e for e in cache.entries()}
    assert set(infos) == {"a", "b", "c"}
    assert isinstance(infos["a"], EntryInfo)
    assert (
        infos["a"].valid and infos["a"].family == "F" and infos["a"].meta == {"family": "F", "x": 1}
    )
    assert infos["a"].size == (cache.root / "a.safetensors").stat().st_size
    assert not infos["b"].valid and infos["b"].family == "G" and infos["b"].problem
    assert not infos["c"].valid and infos["c"].family is None
    assert (cache.root / "b.safetensors").exists()  # listing never moves anything


def test_entries_are_newest_first(cache):
    for name in ["one", "two", "three"]:
        cache.store(name, {"w": torch.ones(1)}, {})
        time.sleep(0.002)
    assert [e.key for e in cache.entries()] == ["three", "two", "one"]


def test_remove(cache):
    cache.store("a", {"w": torch.ones(1)}, {})
    assert cache.remove("a") is True
    assert cache.load("a") is None
    assert cache.remove("a") is False


def test_prune_keep_and_age(cache):
    for name in ["e1", "e2", "e3", "e4"]:
        cache.store(name, {"w": torch.ones(1)}, {})
        time.sleep(0.002)
    doc_path = cache.root / "e4.json"  # make the newest-stored one look 10 days old
    doc = json.loads(doc_path.read_text())
    doc["created"] = time.time() - 10 * 86400
    doc["created_ns"] = int(doc["created"] * 1e9)
    doc_path.write_text(json.dumps(doc))

    assert cache.prune() == []
    assert sorted(cache.prune(older_than_days=5)) == ["e4"]
    assert sorted(cache.prune(keep=2)) == ["e1"]
    assert sorted(e.key for e in cache.entries()) == ["e2", "e3"]
    with pytest.raises(ValueError):
        cache.prune(keep=-1)
    with pytest.raises(ValueError):
        cache.prune(older_than_days=-1)


def test_prune_removes_junk_and_skips_locked_entries(cache):
    cache.store("good", {"w": torch.ones(1)}, {})
    cache.store("bad", {"w": torch.ones(1)}, {})
    (cache.root / "bad.json").write_text("{")
    cache.store("busy", {"w": torch.ones(1)}, {})
    (cache.root / "busy.json").write_text("{")
    dead_tmp = cache.root / "x.safetensors.tmp-00000000-999999999-abcd"
    dead_tmp.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(dead_tmp, (old, old))
    orphan = cache.root / "orphan.safetensors"
    orphan.write_bytes(b"x")
    os.utime(orphan, (old, old))
    fresh_orphan = cache.root / "fresh.safetensors"
    fresh_orphan.write_bytes(b"x")
    (cache.root / "keep.pt").write_bytes(b"user file")
    with cache.lock("busy"):
        removed = cache.prune()
    assert sorted(removed) == ["bad", "orphan"]
    assert not dead_tmp.exists() and not orphan.exists()
    assert fresh_orphan.exists() and (cache.root / "keep.pt").exists()
    assert (cache.root / "busy.json").exists()
    assert [e.key for e in cache.entries() if e.valid] == ["good"]


def test_clear(cache):
    for name in ["a", "b"]:
        cache.store(name, {"w": torch.ones(1)}, {})
    (cache.root / "c.safetensors").write_bytes(b"orphan")
    cache.record_event("train", "a")
    (cache.root / "quarantine").mkdir()
    (cache.root / "quarantine" / "z.20240101T000000Z-1-abc.json").write_text("{}")
    (cache.root / "user.pt").write_bytes(b"not ours")
    assert cache.clear() == 3
    assert cache.entries() == [] and cache.stats() == {}
    assert not (cache.root / "quarantine").exists()
    assert (cache.root / "user.pt").exists()
    assert cache.clear() == 0
    cache.store("a", {"w": torch.ones(1)}, {})
    assert cache.load("a") is not None
