"""The default GAN attack is honest about its strength and independent of machine load.

* a deliberately weak generator (a tiny step budget) raises ``gan_weaker_than_pgd`` with both
  numbers, and the JSON report carries the PGD probe;
* a normally trained generator raises no such flag;
* one seed and one thread setting give the same JSON report on a quiet machine and while other
  processes keep every core busy (timings aside);
* save a baseline, clear the cache, train again, compare: the unchanged model passes.
"""

import json
import multiprocessing
import os
import shutil

import pytest

from pytest_advrobust.sanity import FLAG_GAN_WEAKER

GAN_TEST = """
import pytest

@pytest.mark.robust(threshold=1.0)
def test_gan():
    pass
"""


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", "--advrobust", "--advrobust-threads=1",
                                         *args)


def the_report(pytester, name="r.json"):
    return json.loads((pytester.path / name).read_text())["tests"][0]


def gan_flags(rep):
    return [f for f in rep["sanity"] if f["flag"] == FLAG_GAN_WEAKER]


def test_a_weak_generator_raises_gan_weaker_than_pgd_with_both_numbers(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    result = run(blobs_repo, "--advrobust-gan-steps=1", "--advrobust-json=r.json",
                 f"--advrobust-cache-dir={blobs_repo.path / 'cache'}")
    result.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    probe = rep["training"]["probe"]
    assert probe["n"] == 64 and probe["pgd_steps"] == 40
    assert probe["pgd_success"] > probe["gan_success"] and probe["p_value"] < 0.05
    (flag,) = gan_flags(rep)
    assert f"{100 * probe['pgd_success']:.1f}%" in flag["message"]
    assert f"{100 * probe['gan_success']:.1f}%" in flag["message"]
    result.stdout.fnmatch_lines([f"*sanity flag {FLAG_GAN_WEAKER}: On a seeded probe of 64 samples*"])


def test_a_normally_trained_generator_raises_no_flag(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    result = run(blobs_repo, "--advrobust-json=r.json", f"--advrobust-cache-dir={blobs_repo.path / 'c'}")
    result.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    assert gan_flags(rep) == []
    probe = rep["training"]["probe"]
    assert probe["gan_success"] >= probe["pgd_success"] - 0.05
    cost = rep["training"]["cost"]
    assert set(cost) == {"forward_per_sample", "backward_per_sample", "seconds"}
    assert cost["forward_per_sample"] > cost["backward_per_sample"] > 0
    result.stdout.fnmatch_lines(["*test_gan*gan linf*PASS*cold * steps *s, */* passes*"])


def _strip_timings(obj):
    """The report without wall-clock fields (seconds of training, loading, attacks)."""
    if isinstance(obj, dict):
        return {k: _strip_timings(v) for k, v in obj.items()
                if "seconds" not in k and k not in ("created",)}
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def _burn(stop):
    while not stop.is_set():
        sum(i * i for i in range(10000))


def test_machine_load_never_changes_the_json_report(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    args = ("--advrobust-seed=3", "--advrobust-gan-steps=40")
    quiet = run(blobs_repo, *args, "--advrobust-json=quiet.json",
                f"--advrobust-cache-dir={blobs_repo.path / 'c1'}")
    quiet.assert_outcomes(passed=1)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop,)) for _ in range(os.cpu_count() or 2)]
    for p in burners:
        p.start()
    try:
        busy = run(blobs_repo, *args, "--advrobust-json=busy.json",
                   f"--advrobust-cache-dir={blobs_repo.path / 'c2'}")
    finally:
        stop.set()
        for p in burners:
            p.join()
    busy.assert_outcomes(passed=1)
    a = json.loads((blobs_repo.path / "quiet.json").read_text())
    b = json.loads((blobs_repo.path / "busy.json").read_text())
    assert a["tests"][0]["training"]["mode"] == b["tests"][0]["training"]["mode"] == "cold"
    assert _strip_timings(a) == _strip_timings(b)


def test_saved_baseline_cleared_cache_retrained_unchanged_model_passes(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    cache = blobs_repo.path / "cache"
    base = blobs_repo.path / "baseline.json"
    first = run(blobs_repo, f"--advrobust-cache-dir={cache}", f"--advrobust-baseline={base}",
                "--advrobust-save-baseline=all", "--advrobust-gan-steps=40")
    first.assert_outcomes(passed=1)
    entry = next(iter(json.loads(base.read_text())["tests"].values()))
    gen = entry["generator"]
    assert gen["steps"] > 0 and gen["attack_id"] and gen["key"]
    assert gen["probe_pgd_success"] is not None and gen["probe_gan_success"] is not None
    shutil.rmtree(cache)
    second = run(blobs_repo, f"--advrobust-cache-dir={cache}", f"--advrobust-baseline={base}",
                 "--advrobust-compare",
                 "--advrobust-gan-steps=40", "--advrobust-json=r.json")
    second.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    assert rep["training"]["mode"] == "cold" and rep["baseline"]["status"] == "ok"
    assert rep["baseline"]["delta"] == 0.0
    assert "REGRESSED" not in second.stdout.str()


def test_a_fall_with_a_changed_attack_is_not_called_a_regression():
    from pytest_advrobust.baseline import compare

    entry = {"adversarial_accuracy": 0.9, "attack": "gan", "generator": {"attack_id": "a" * 64,
                                                                        "steps": 400}}
    report = {"adversarial_accuracy": 0.7, "attack": "gan",
              "training": {"attack_id": "b" * 64, "steps": 900}}
    cmp = compare(entry, report, tolerance=0.02)
    assert cmp.status == "attack_changed" and not cmp.regressed
    assert "the GAN attack changed" in cmp.message and "400 -> 900 steps" in cmp.message
    report["training"]["attack_id"] = "a" * 64
    assert compare(entry, report, tolerance=0.02).status == "regressed"


@pytest.mark.parametrize("b, c, significant", [(5, 0, True), (4, 0, False), (9, 3, False),
                                               (12, 2, True)])
def test_probe_sign_test(b, c, significant):
    from pytest_advrobust.sanity import PROBE_ALPHA, _sign_test

    assert (_sign_test(b, c) < PROBE_ALPHA) is significant
    assert _sign_test(0, 0) == 1.0
