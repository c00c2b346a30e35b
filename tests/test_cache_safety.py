"""GAN cache safety: damaged, forged and half-written entries never crash and never run code."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_advrobust.cache import FORMAT_VERSION, CacheWarning, GanCache
from pytest_advrobust.errors import CacheIntegrityError

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "cache_helpers" / "cache_child.py"
KEY = "0123456789abcdef0123456789abcdef"


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class MarkerPayload:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def state() -> dict:
    gen = torch.Generator().manual_seed(1)
    return {
        "layer.weight": torch.randn(8, 4, generator=gen),
        "layer.bias": torch.randn(8, generator=gen),
    }


@pytest.fixture
def seen() -> list:
    return []


@pytest.fixture
def cache(tmp_path, seen) -> GanCache:
    c = GanCache(tmp_path / "cache", warn=seen.append)
    c.store(KEY, state(), {"family": "fam"})
    return c


def weights(cache: GanCache) -> Path:
    return cache.root / f"{KEY}.safetensors"


def meta(cache: GanCache) -> Path:
    return cache.root / f"{KEY}.json"


def edit_doc(cache: GanCache, change) -> None:
    doc = json.loads(meta(cache).read_text())
    change(doc)
    meta(cache).write_text(json.dumps(doc))


def assert_set_aside(cache: GanCache, seen: list, *, words=()) -> None:
    """The entry is gone from view, quarantined, recorded and reported once."""
    assert cache.load(KEY) is None
    assert len(seen) == 1, seen
    message = seen[0]
    assert KEY in message and "set aside" in message and "retrained" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    for word in words:
        assert word in message
    assert not weights(cache).exists() and not meta(cache).exists()
    quarantined = sorted(p.name for p in (cache.root / "quarantine").iterdir())
    assert any(n.startswith(KEY) and n.endswith(".json") for n in quarantined), quarantined
    assert cache.stats().get("damaged") == 1
    # a second look finds nothing and says nothing more
    assert cache.load(KEY) is None and len(seen) == 1
    # and the key can be retrained and stored again
    cache.store(KEY, state(), {"family": "fam"})
    loaded, _ = cache.load(KEY)
    assert torch.equal(loaded["layer.weight"], state()["layer.weight"])


def test_valid_entry_loads(cache, seen):
    loaded, meta_ = cache.load(KEY)
    assert meta_ == {"family": "fam"} and seen == []


def test_truncated_weights(cache, seen):
    data = weights(cache).read_bytes()
    weights(cache).write_bytes(data[: len(data) // 2])
    assert_set_aside(cache, seen, words=["bytes"])


def test_empty_weights(cache, seen):
    weights(cache).write_bytes(b"")
    assert_set_aside(cache, seen)


def test_flipped_bytes_in_the_middle(cache, seen):
    data = bytearray(weights(cache).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0x5A for b in data[middle : middle + 4])
    weights(cache).write_bytes(bytes(data))
    assert_set_aside(cache, seen, words=["checksum"])


def test_wrong_checksum_in_json(cache, seen):
    edit_doc(cache, lambda d: d.update(sha256="0" * 64))
    assert_set_aside(cache, seen, words=["checksum"])


@pytest.mark.parametrize(
    "garbage", [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2, 3]", b"null", b'{"key": 1}']
)
def test_json_garbage(cache, seen, garbage):
    meta(cache).write_bytes(garbage)
    assert_set_aside(cache, seen)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["tensors"]["layer.weight"].update(shape=[4, 8]),
        lambda d: d["tensors"]["layer.weight"].update(dtype="float64"),
        lambda d: d["tensors"].pop("layer.bias"),
        lambda d: d["tensors"].update(extra={"shape": [1], "dtype": "float32"}),
        lambda d: d["tensors"]["layer.bias"].update(shape=[-8]),
        lambda d: d.update(tensors="all of them"),
        lambda d: d.update(size="big"),
        lambda d: d.update(meta=[1]),
        lambda d: d.update(key="fedcba9876543210fedcba9876543210"),
    ],
    ids=[
        "shape",
        "dtype",
        "missing",
        "extra",
        "negative",
        "not-a-dict",
        "size",
        "meta",
        "other-key",
    ],
)
def test_json_lying_about_the_weights(cache, seen, change):
    edit_doc(cache, change)  # the checksum still matches: only the description lies
    assert_set_aside(cache, seen)


def test_format_version_mismatch(cache, seen):
    edit_doc(cache, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    assert_set_aside(cache, seen, words=["format"])


def test_missing_weights_with_json(cache, seen):
    weights(cache).unlink()
    assert_set_aside(cache, seen, words=["missing"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_special_files_are_not_read(cache, seen):
    weights(cache).unlink()
    os.mkfifo(weights(cache))  # reading a FIFO would block forever
    assert_set_aside(cache, seen, words=["regular"])


def test_default_warning_is_a_cache_warning(tmp_path):
    cache = GanCache(tmp_path / "c")
    cache.store(KEY, state(), {})
    meta(cache).write_text("{")
    with pytest.warns(CacheWarning, match="set aside"):
        assert cache.load(KEY) is None


def _pickle_payload(path: Path, marker: Path) -> None:
    torch.save({"layer.weight": MarkerPayload(marker)}, path)


def test_the_pickle_payload_is_live(tmp_path):
    """Control: loading the payload with pickle really does create the marker."""
    control = tmp_path / "control-marker"
    payload = tmp_path / "payload.pt"
    _pickle_payload(payload, control)
    torch.load(payload, weights_only=False)
    assert control.exists()


@pytest.mark.parametrize("forge_json", [False, True], ids=["weights-only", "weights-and-json"])
def test_pickle_in_place_of_weights_never_runs(tmp_path, cache, seen, forge_json):
    marker = tmp_path / "PWNED"
    _pickle_payload(weights(cache), marker)
    # the same payload sits in the folder under names a careless loader might try
    _pickle_payload(cache.root / f"{KEY}.pt", marker)
    _pickle_payload(cache.root / "generator.pkl", marker)
    if forge_json:  # an attacker who also rewrites the checksum and size
        data = weights(cache).read_bytes()
        edit_doc(cache, lambda d: d.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data)))

    assert cache.load(KEY) is None
    assert cache.find_warm_start("fam") is None
    assert not marker.exists()
    assert len(seen) == 1 and KEY in seen[0] and "set aside" in seen[0]
    assert [e.key for e in cache.entries()] == []
    cache.prune()
    cache.store(KEY, state(), {"family": "fam"})
    assert cache.load(KEY) is not None
    assert cache.find_warm_start("fam")[0] == KEY
    cache.clear()
    assert not marker.exists()
    assert (cache.root / f"{KEY}.pt").exists()  # foreign files are left alone, never read


def test_pickle_only_entry_is_absent(tmp_path, seen):
    marker = tmp_path / "PWNED"
    cache = GanCache(tmp_path / "c", warn=seen.append)
    cache.root.mkdir()
    _pickle_payload(cache.root / f"{KEY}.pt", marker)
    assert (
        cache.load(KEY) is None and cache.entries() == [] and cache.find_warm_start("fam") is None
    )
    assert not marker.exists() and seen == []


def _forge(cache: GanCache, data: bytes, tensors: dict) -> None:
    weights(cache).write_bytes(data)
    edit_doc(
        cache,
        lambda d: d.update(
            sha256=hashlib.sha256(data).hexdigest(), size=len(data), tensors=tensors
        ),
    )


def test_forged_safetensors_header_with_bad_offsets(cache, seen):
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    ).encode()
    _forge(
        cache,
        struct.pack("<Q", len(header)) + header + b"\0" * 16,
        {"w": {"shape": [1000, 1000], "dtype": "float32"}},
    )
    assert_set_aside(cache, seen)


def test_forged_safetensors_header_length(cache, seen):
    _forge(cache, struct.pack("<Q", 2**62) + b"{}", {})
    assert_set_aside(cache, seen)


def test_forged_header_names_another_key(cache, seen):
    from safetensors.torch import save

    data = save(state(), metadata={"advrobust_key": "somethingelse"})
    specs = {n: {"shape": list(t.shape), "dtype": "float32"} for n, t in state().items()}
    _forge(cache, data, specs)
    assert_set_aside(cache, seen)


def test_listing_judges_forged_offsets_like_a_load(cache, seen):
    """A header whose offsets do not cover the data is invalid in the listing too."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    specs = {"w": {"shape": [4], "dtype": "float32"}}
    _forge(cache, struct.pack("<Q", len(header)) + header + b"\0" * 8, specs)
    [info] = cache.entries()
    assert not info.valid and "decoded" in info.problem
    assert seen == [] and weights(cache).exists()  # listing never moves anything


def test_weights_replaced_after_the_checksum_are_refused(cache):
    """The metadata key is read by reopening the file: it must still be the checksummed one."""
    from pytest_advrobust.cache.verify import check_header_key

    before = weights(cache).stat()
    check_header_key(KEY, weights(cache), before)  # the same file passes
    data = weights(cache).read_bytes()
    weights(cache).unlink()
    weights(cache).write_bytes(data)  # same bytes, another file
    os.utime(weights(cache), ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    with pytest.raises(CacheIntegrityError, match="changed while being read"):
        check_header_key(KEY, weights(cache), before)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(["weights", "json"]),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cut=st.none() | st.floats(0, 1),
)
def test_random_damage_never_raises(target, edits, cut):
    original = state()
    with tempfile.TemporaryDirectory() as tmp:
        seen: list = []
        cache = GanCache(tmp, warn=seen.append)
        cache.store(KEY, original, {"family": "fam"})
        path = weights(cache) if target == "weights" else meta(cache)
        data = bytearray(path.read_bytes())
        for where, value in edits:
            data[int(where * len(data))] = value
        if cut is not None:
            data = data[: int(cut * len(data))]
        path.write_bytes(bytes(data))
        result = cache.load(KEY)
        if result is None:
            assert len(seen) == 1 and "set aside" in seen[0]
        else:  # a harmless edit (e.g. inside the caller's meta text) may still load
            assert seen == []
            assert all(torch.equal(result[0][n], original[n]) for n in original)
        assert cache.find_warm_start("fam") is None or result is not None


# --------------------------------------------------------------------------- killed writers


def _kill_during_store(jobs: list, tmp_path: Path) -> None:
    """Start one slow writer per (cache root, stage), SIGKILL each once it stalls.

    The writers start together so that their interpreter start-ups overlap.
    """
    procs = []
    try:
        for root, stage in jobs:
            marker = tmp_path / f"stalled-{stage}-{len(procs)}"
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), "slow_store", str(root), KEY, stage, str(marker)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(),
            )
            procs.append((proc, marker))
        deadline = time.time() + 90
        for proc, marker in procs:
            while not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(f"writer ended early: {proc.communicate()}")
                assert time.time() < deadline, "writer never stalled"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_sigkill_mid_store(tmp_path):
    """A writer killed part-way leaves the previous entry or none, never a broken one."""
    seen: list = []
    fresh = {
        stage: GanCache(tmp_path / f"cache-{stage}", warn=seen.append)
        for stage in ("weights", "between")
    }
    again = GanCache(tmp_path / "cache-again", warn=seen.append)
    again.store(KEY, state(), {"family": "fam", "version": "old"})
    _kill_during_store(
        [
            (fresh["weights"].root, "weights"),
            (fresh["between"].root, "between"),
            (again.root, "json"),
        ],
        tmp_path,
    )

    for stage, cache in fresh.items():
        # the dead writer held the lock: the OS released it
        with cache.lock(KEY, timeout=10):
            assert cache.load(KEY) is None, stage
        assert cache.entries() == [] and cache.find_warm_start("fam") is None
        leftovers = [p.name for p in cache.root.iterdir() if ".tmp-" in p.name]
        if stage == "weights":
            assert leftovers  # the partial temp file is there ...
        cache.prune()
        assert [
            p.name for p in cache.root.iterdir() if ".tmp-" in p.name
        ] == []  # ... and prune cleans it
        cache.store(KEY, state(), {"family": "fam"})
        loaded, meta_ = cache.load(KEY)
        assert torch.equal(loaded["layer.bias"], state()["layer.bias"]) and meta_ == {
            "family": "fam"
        }

    # killed while re-storing: the previous entry is still whole
    loaded, meta_ = again.load(KEY)
    assert meta_["version"] == "old"
    assert torch.equal(loaded["layer.weight"], state()["layer.weight"])
    assert [p.name for p in again.root.iterdir() if ".tmp-" in p.name]
    assert again.clear() == 1
    assert [p.name for p in again.root.iterdir() if ".tmp-" in p.name] == []

    assert seen == []  # half-written is not damaged: it simply is not there
