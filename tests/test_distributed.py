"""`advrobust warm` under torchrun: DDP training on every rank, one entry, then a cache hit."""

import json
import os
import sys
import textwrap

import pytest
import torch
from _support import LEAN

from pytest_advrobust import cli
from pytest_advrobust.cache import GanCache
from pytest_advrobust.gan import distributed

# More models: one whose weights depend on the rank (its ranks cannot agree on one generator),
# and one slightly changed model (same family: it reuses the first one's generator).
MORE_MODELS = textwrap.dedent(
    """
    import os

    @pytest.fixture(scope="session")
    def rank_model():
        _, _, centres = make_blobs()
        model = NearestCentre(centres)
        with torch.no_grad():
            model.fc.bias.add_(1e-3 * int(os.environ.get("RANK", "0")))
        return model

    @pytest.fixture(scope="session")
    def changed_model():
        _, _, centres = make_blobs()
        model = NearestCentre(centres)
        with torch.no_grad():
            model.fc.bias.add_(1e-3)
        return model
    """
)

TESTS = textwrap.dedent(
    """
    import pytest

    @pytest.mark.robust(threshold=1.0)
    def test_gan(adversarial_batch):
        assert adversarial_batch.x_adv.shape == adversarial_batch.x.shape

    @pytest.mark.robust(threshold=1.0, model="rank_model")
    def test_ranks_disagree():
        pass

    @pytest.mark.robust(threshold=1.0, model="changed_model")
    def test_changed_model():
        pass
    """
)

needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)


@pytest.fixture
def repo(blobs_repo, monkeypatch):
    blobs_repo.makeconftest((blobs_repo.path / "conftest.py").read_text() + MORE_MODELS)
    blobs_repo.makepyfile(test_robust=TESTS)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(distributed.ENV_TIMEOUT, "120")  # a wedged rank fails instead of hanging CI
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return blobs_repo


def _torchrun_warm(pytester, cache_dir, *args):
    result = pytester.run(
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        "-m",
        "pytest_advrobust.cli",
        "warm",
        *LEAN,
        "-rs",
        f"--advrobust-cache-dir={cache_dir}",
        *args,
        timeout=240,
    )
    return result, result.stdout.str() + result.stderr.str()


def _pytest(pytester, cache_dir, *args):
    # In a subprocess, like the other plugin tests: torch modules first imported inside an
    # in-process session would be dropped from sys.modules afterwards and fail to import again.
    return pytester.runpytest_subprocess(
        *LEAN, f"--advrobust-cache-dir={cache_dir}", *args, timeout=120
    )


@needs_gloo
def test_torchrun_warm_trains_with_two_ranks_and_the_plugin_loads_the_entry(repo):
    cache_dir = repo.path / "gan-cache"
    warm, out = _torchrun_warm(repo, cache_dir, "test_robust.py::test_gan")
    assert warm.ret == 0, out
    assert "advrobust warm: gan: cold" in out
    assert out.count("test session starts") == 1, out  # only rank 0 prints pytest's output

    cache = GanCache(cache_dir)
    (entry,) = cache.entries()
    assert entry.valid
    meta = entry.meta
    assert meta["mode"] == "cold" and meta["steps"] > 0
    # Both ranks trained: the group had two processes and each processed its share of every batch,
    # and each step's global batch (split over the two ranks) is the single-process batch.
    assert meta["distributed"]["world_size"] == 2 and meta["distributed"]["backend"] == "gloo"
    per_rank = meta["distributed"]["samples_per_rank"]
    assert len(per_rank) == 2 and min(per_rank) > 0
    assert sum(per_rank) == meta["steps"] * meta["gan"]["batch_size"]
    assert cache.stats() == {"train": 1}

    # A plain single-process run computes the same key and loads the entry.
    result = _pytest(
        repo, cache_dir, "--advrobust", "--advrobust-json=r.json", "test_robust.py::test_gan"
    )
    result.assert_outcomes(passed=1)
    (test,) = json.loads((repo.path / "r.json").read_text())["tests"]
    training = test["training"]  # the warmed generator, trained by both ranks, as it was
    assert training["mode"] == "cached" and training["trained_mode"] == "cold"
    assert training["reuse"]["decision"] == "kept" and training["same_model"]
    assert cache.stats() == {"train": 1, "hit": 1}


@needs_gloo
def test_torchrun_warm_hits_retrains_and_stops_cleanly_when_ranks_disagree(repo):
    cache_dir = repo.path / "gan-cache"
    # An entry trained by one process ...
    seeded = _pytest(repo, cache_dir, "--advrobust-warm", "test_robust.py::test_gan")
    seeded.assert_outcomes(skipped=1)
    cache = GanCache(cache_dir)
    assert cache.stats() == {"train": 1}
    (entry,) = cache.entries()
    assert "distributed" not in entry.meta

    # ... is a hit for two ranks, also for the changed model of the same family; the
    # rank-dependent model errors on every rank (no hang) and the run goes on.
    warm, out = _torchrun_warm(repo, cache_dir, "test_robust.py")
    assert warm.ret == 1, out
    assert out.count("advrobust warm: gan: cached") == 2, out
    assert "rank(s) 1 computed another cache key than rank 0" in out
    assert cache.stats() == {"train": 1, "hit": 1}  # the second use comes from the memo

    # --advrobust-retrain: both ranks train the entry further from rank 0's weights
    again, out = _torchrun_warm(repo, cache_dir, "--advrobust-retrain", "test_robust.py::test_gan")
    assert again.ret == 0, out
    assert "advrobust warm: gan: warm" in out, out
    (entry,) = cache.entries()
    assert entry.meta["mode"] == "warm" and entry.meta["distributed"]["world_size"] == 2
    assert cache.stats() == {"train": 1, "hit": 1, "warm": 1}


# ---------------------------------------------------------------- one process: nothing changes


def test_single_process_helpers_are_trivial(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched()
    assert distributed.init_from_env() is False
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.backend()) == (0, 1, None)
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    assert distributed.all_true(True) and not distributed.all_true(False)
    assert distributed.any_true(True) and not distributed.any_true(False)
    state = {"w": torch.ones(2)}
    assert distributed.broadcast_state(state) == state
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert not distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.launched()


def test_distributed_training_needs_a_process_group():
    from pytest_advrobust.gan.distributed import TrainingSync

    with pytest.raises(RuntimeError, match="init_from_env"):
        TrainingSync(True)


def test_bad_timeout_is_one_sentence(monkeypatch):
    monkeypatch.setenv(distributed.ENV_TIMEOUT, "soon")
    with pytest.raises(ValueError, match="ADVROBUST_DIST_TIMEOUT"):
        distributed._timeout()


# ---------------------------------------------------------------- the command on one rank


@pytest.fixture
def fake_ranks(monkeypatch):
    """`warm` as rank `state['rank']` of 2, with the collectives and pytest.main faked."""
    state = {"rank": 0, "codes": [0, 0], "calls": [], "torn_down": False}

    def fake_main(args):
        state["calls"].append(list(args))
        print("pytest output of this rank")
        return state["codes"][state["rank"]]

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed, "init_from_env", lambda: True)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: state["rank"])
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj: list(state["codes"]))
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    monkeypatch.setattr(distributed, "teardown", lambda: state.update(torn_down=True))
    monkeypatch.setattr(pytest, "main", fake_main)
    return state


def test_warm_on_rank_zero_prints_and_combines_exit_codes(fake_ranks, capfd):
    fake_ranks["codes"] = [0, 1]
    assert cli.main(["warm", "-x", "tests/robust"]) == 1
    assert fake_ranks["calls"] == [["--advrobust", "--advrobust-warm", "-x", "tests/robust"]]
    out, err = capfd.readouterr()
    assert "pytest output of this rank" in out
    assert "rank 1: 1" in err
    assert fake_ranks["torn_down"]


def test_warm_on_other_ranks_is_quiet_unless_its_status_differs(fake_ranks, capfd):
    fake_ranks["rank"] = 1
    assert cli.main(["warm", "tests/robust"]) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # Same arguments as rank 0: every rank collects the same tests.
    assert fake_ranks["calls"] == [["--advrobust", "--advrobust-warm", "tests/robust"]]

    fake_ranks["codes"] = [0, 3]
    assert cli.main(["warm", "tests/robust"]) == 3
    out, err = capfd.readouterr()
    assert "rank 1 of 2 finished with exit status 3 (rank 0: 0)" in err
    assert "[rank 1] pytest output of this rank" in err
    assert not any(name.startswith("advrobust-warm-rank") for name in os.listdir(_tmpdir()))


def _tmpdir():
    import tempfile

    return tempfile.gettempdir()
