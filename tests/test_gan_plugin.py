"""The GAN attack through the plugin: default attack, cache hits across runs, the
gan_generator fixture and its contract with adversarial_batch, worst case with PGD, refine,
damaged entries, xdist, warm."""

import json
import shutil
import subprocess
import sys

import pytest

# Imported here, not inside the tests: pytester restores sys.modules after each
# test, and torch cannot be imported twice in one process.
from pytest_advrobust.cache import GanCache

GAN_TESTS = """
import pytest
import torch

@pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=90)
def test_default_is_gan(adversarial_batch):
    b = adversarial_batch
    assert b.settings["attacks"] == ["gan"]
    assert float((b.x_adv - b.x).abs().max()) <= 0.1 + 1e-6

@pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=90)
def test_generator_fixture(gan_generator, robust_data):
    x, _ = robust_data
    assert not gan_generator.training and gan_generator.eps == 0.1
    x_adv = gan_generator(x[:16])
    assert x_adv.shape == (16, 20)
    assert float((x_adv - x[:16]).abs().max()) <= 0.1 + 1e-6
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    assert float((gan_generator(x[:16], 0.02) - x[:16]).abs().max()) <= 0.02 + 1e-6
    assert gan_generator.training_facts["mode"] in ("cold", "warm", "cached")

@pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=90)
def test_generator_fixture_is_the_attack_start(gan_generator, adversarial_batch, robust_model):
    b = adversarial_batch
    with torch.no_grad():
        start = gan_generator(b.x)
        right = robust_model(b.x).argmax(1) == b.y
        fooled = right & (robust_model(start).argmax(1) != b.y)
    # where the generator alone fools the model, the attack's result is its output ...
    assert int(fooled.sum()) > 0 and torch.equal(b.x_adv[fooled], start[fooled])
    # ... a sample the model gets wrong is its own adversarial example ...
    assert torch.equal(b.x_adv[~right], b.x[~right])
    # ... and the cascade went on from it everywhere else, never weaker than the start
    with torch.no_grad():
        assert int((robust_model(b.x_adv).argmax(1) != b.y).sum()) >= int(fooled.sum())
"""


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", "--advrobust-sanity=off", *args)


def report(pytester, name="r.json"):
    return {
        t["nodeid"].split("::")[-1]: t
        for t in json.loads((pytester.path / name).read_text())["tests"]
    }


def train_events(cache_dir):
    stats = GanCache(cache_dir).stats()
    return stats.get("train", 0) + stats.get("warm", 0)


#: Cache entries one cold GAN evaluation writes: the generator of the model's family.
ONE_EVALUATION = 1


def test_gan_is_the_default_and_the_second_run_is_a_cache_hit(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TESTS)
    cache = blobs_repo.path / "gan-cache"
    args = ("--advrobust", f"--advrobust-cache-dir={cache}", "--advrobust-json=r.json")
    first = run(blobs_repo, *args)
    first.assert_outcomes(passed=3)
    rep = report(blobs_repo)["test_default_is_gan"]
    assert rep["attack"] == "gan" and rep["training"]["mode"] == "cold"
    assert rep["training"]["steps"] > 0
    assert rep["adversarial_accuracy"] < rep["clean_accuracy"]  # the generator does fool it
    first.stdout.fnmatch_lines(["*test_default_is_gan*gan linf*PASS*cold * steps*"])
    # training shows its progress as it goes (captured output would hide it)
    first.stdout.fnmatch_lines(
        ["advrobust gan: training GAN generator on cpu (cold)*", "advrobust gan: done: * steps*"]
    )
    assert train_events(cache) == ONE_EVALUATION

    second = run(blobs_repo, *args)
    second.assert_outcomes(passed=3)
    rep2 = report(blobs_repo)["test_default_is_gan"]
    # a cached generator reports its training's facts, not zeros
    assert rep2["training"]["mode"] == "cached" and rep2["training"]["trained_mode"] == "cold"
    assert rep2["training"]["steps"] == rep["training"]["steps"] > 0
    second.stdout.fnmatch_lines(["*test_default_is_gan*gan linf*PASS*cached*"])
    # same generator, same numbers
    assert rep2["adversarial_accuracy"] == rep["adversarial_accuracy"]
    assert train_events(cache) == ONE_EVALUATION

    assert "training GAN generator" not in second.stdout.str()

    third = run(blobs_repo, *args, "--advrobust-retrain", "-qq")
    assert third.ret == 0  # -qq prints no summary line for assert_outcomes to parse
    assert "advrobust gan:" not in third.stdout.str()  # quiet under -qq (-q still shows it)
    retrained = report(blobs_repo)["test_default_is_gan"]["training"]
    assert retrained["mode"] == "warm" and retrained["reason"] == "--advrobust-retrain"
    assert train_events(cache) == 2 * ONE_EVALUATION


def test_worst_case_with_pgd_and_refine(blobs_repo):
    blobs_repo.makepyfile(
        test_mix="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="gan", eps=0.1, n_samples=90)
        def test_gan(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.1, steps=3, n_samples=90)
        def test_pgd(): pass

        @pytest.mark.robust(threshold=1.0, attack=["gan", "pgd"], eps=0.1, steps=3,
                            n_samples=90)
        def test_both(): pass

        @pytest.mark.robust(threshold=1.0, attack="gan", eps=0.1, refine=5, n_samples=90)
        def test_refined(): pass
    """
    )
    cache = blobs_repo.path / "c"
    run(
        blobs_repo,
        "--advrobust",
        f"--advrobust-cache-dir={cache}",
        "--advrobust-gan-steps=40",
        "--advrobust-json=r.json",
    ).assert_outcomes(passed=4)
    reps = report(blobs_repo)
    training = reps["test_gan"]["training"]  # the budget option is honoured
    assert 0 < training["steps"] <= training["budget"] == 40
    both = reps["test_both"]["adversarial_accuracy"]
    assert both <= reps["test_gan"]["adversarial_accuracy"]
    assert both <= reps["test_pgd"]["adversarial_accuracy"]
    assert reps["test_refined"]["adversarial_accuracy"] <= reps["test_gan"]["adversarial_accuracy"]
    assert train_events(cache) == ONE_EVALUATION  # one generator served all three GAN tests


def test_a_damaged_cache_entry_is_reported_set_aside_and_retrained(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TESTS)
    cache = blobs_repo.path / "gan-cache"
    args = ("--advrobust", f"--advrobust-cache-dir={cache}", "--advrobust-json=r.json")
    run(blobs_repo, *args).assert_outcomes(passed=3)
    for weights in cache.glob("*.safetensors"):
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    shutil.rmtree(cache / "evaluations")  # else the stored evaluation needs no generator
    result = run(blobs_repo, *args)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*is damaged*set aside*retrained*"])
    assert report(blobs_repo)["test_default_is_gan"]["training"]["mode"] == "cold"
    assert list((cache / "quarantine").iterdir())


def test_two_xdist_workers_train_one_generator_once(blobs_repo):
    pytest.importorskip("xdist")
    blobs_repo.makepyfile(
        test_par="""
        import pytest

        @pytest.mark.robust(threshold=1.0, eps=0.08, n_samples=60)
        def test_a(): pass

        @pytest.mark.robust(threshold=1.0, eps=0.08, n_samples=60)
        def test_b(): pass

        @pytest.mark.robust(threshold=1.0, eps=0.08, n_samples=60)
        def test_c(): pass

        @pytest.mark.robust(threshold=1.0, eps=0.08, n_samples=60)
        def test_d(): pass
    """
    )
    cache = blobs_repo.path / "shared-cache"
    result = run(
        blobs_repo,
        "-n",
        "2",
        "--advrobust",
        f"--advrobust-cache-dir={cache}",
        "--advrobust-json=r.json",
    )
    result.assert_outcomes(passed=4)
    assert train_events(cache) == ONE_EVALUATION
    modes = sorted(r["training"]["mode"] for r in report(blobs_repo).values())
    # Each generator was trained by one worker (the other waited on its lock, then loaded it).
    assert modes.count("cold") == 1 and modes.count("cached") == 3, modes
    accs = {r["adversarial_accuracy"] for r in report(blobs_repo).values()}
    assert len(accs) == 1  # every worker used the very same generator


def test_advrobust_warm_fills_the_cache_ahead_of_the_run(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TESTS)
    cache = blobs_repo.path / "warm-cache"
    warm = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_advrobust.cli",
            "warm",
            "-p",
            "no:randomly",
            f"--advrobust-cache-dir={cache}",
            "-q",
            "-rs",
            str(blobs_repo.path),
        ],
        cwd=blobs_repo.path,
        capture_output=True,
        text=True,
    )
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "advrobust warm: gan: cold" in warm.stdout  # the skip reason says what happened
    # Warm obtains what the attack uses: the generator of the model's family.
    assert train_events(cache) == ONE_EVALUATION
    run(
        blobs_repo, "--advrobust", f"--advrobust-cache-dir={cache}", "--advrobust-json=r.json"
    ).assert_outcomes(passed=3)
    # The run loads the warmed entries and trains nothing.
    assert GanCache(cache).stats()["hit"] >= 1
    assert train_events(cache) == ONE_EVALUATION
    training = report(blobs_repo)["test_default_is_gan"]["training"]
    assert "cached" in training["mode"], training


def test_a_sweep_reports_the_training_its_first_eps_did(blobs_repo):
    """The generator is obtained at the sweep's first eps and found in memory at the
    headline eps: the report says it was trained in this run, and counts its passes."""
    blobs_repo.makepyfile(
        test_sweep="""
        import pytest

        @pytest.mark.robust(threshold=1.0, eps=[0.05, 0.1, 0.2], n_samples=90)
        def test_sweep(): pass
        """
    )
    cache = blobs_repo.path / "gan-cache"
    args = ("--advrobust", f"--advrobust-cache-dir={cache}", "--advrobust-json=r.json")
    run(blobs_repo, *args).assert_outcomes(passed=1)
    rep = report(blobs_repo)["test_sweep"]
    assert rep["training"]["mode"] == "cold" and rep["training"]["reuse"]["decision"] == "trained"
    assert rep["cost"]["gan_training"]["forward_passes"] > 0
    assert rep["cost"]["gan_training"]["backward_passes"] > 0
    again = run(blobs_repo, *args, "--advrobust-retrain")
    again.assert_outcomes(passed=1)
    assert report(blobs_repo)["test_sweep"]["training"]["mode"] == "warm"
    again.stdout.fnmatch_lines(["*test_sweep*PASS*warm * steps*"])
