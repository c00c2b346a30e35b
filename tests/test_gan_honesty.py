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
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "--advrobust", "--advrobust-threads=1", *args
    )


def the_report(pytester, name="r.json"):
    return json.loads((pytester.path / name).read_text())["tests"][0]


def gan_flags(rep):
    return [f for f in rep["sanity"] if f["flag"] == FLAG_GAN_WEAKER]


def test_a_weak_generator_raises_gan_weaker_than_pgd_with_both_numbers(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    result = run(
        blobs_repo,
        "--advrobust-gan-steps=1",
        "--advrobust-json=r.json",
        f"--advrobust-cache-dir={blobs_repo.path / 'cache'}",
    )
    result.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    probe = rep["training"]["probe"]
    assert probe["n"] == 64 and probe["pgd_steps"] == 40
    assert probe["pgd_success"] > probe["gan_success"] and probe["p_value"] < 0.05
    (flag,) = gan_flags(rep)
    assert f"{100 * probe['pgd_success']:.1f}%" in flag["message"]
    assert f"{100 * probe['gan_success']:.1f}%" in flag["message"]
    result.stdout.fnmatch_lines(
        [f"*sanity flag {FLAG_GAN_WEAKER}: On a seeded probe of 64 samples*"]
    )


def test_a_normally_trained_generator_raises_no_flag(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    result = run(
        blobs_repo, "--advrobust-json=r.json", f"--advrobust-cache-dir={blobs_repo.path / 'c'}"
    )
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
        return {
            k: _strip_timings(v)
            for k, v in obj.items()
            if "seconds" not in k and k not in ("created",)
        }
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def _burn(stop):
    while not stop.is_set():
        sum(i * i for i in range(10000))


def test_machine_load_never_changes_the_json_report(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    args = ("--advrobust-seed=3", "--advrobust-gan-steps=40")
    quiet = run(
        blobs_repo,
        *args,
        "--advrobust-json=quiet.json",
        f"--advrobust-cache-dir={blobs_repo.path / 'c1'}",
    )
    quiet.assert_outcomes(passed=1)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop,)) for _ in range(os.cpu_count() or 2)]
    for p in burners:
        p.start()
    try:
        busy = run(
            blobs_repo,
            *args,
            "--advrobust-json=busy.json",
            f"--advrobust-cache-dir={blobs_repo.path / 'c2'}",
        )
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
    first = run(
        blobs_repo,
        f"--advrobust-cache-dir={cache}",
        f"--advrobust-baseline={base}",
        "--advrobust-save-baseline=all",
        "--advrobust-gan-steps=40",
    )
    first.assert_outcomes(passed=1)
    entry = next(iter(json.loads(base.read_text())["tests"].values()))
    gen = entry["generator"]
    assert gen["steps"] > 0 and gen["attack_id"] and gen["key"]
    assert gen["probe_pgd_success"] is not None and gen["probe_gan_success"] is not None
    shutil.rmtree(cache)
    second = run(
        blobs_repo,
        f"--advrobust-cache-dir={cache}",
        f"--advrobust-baseline={base}",
        "--advrobust-compare",
        "--advrobust-gan-steps=40",
        "--advrobust-json=r.json",
    )
    second.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    assert rep["training"]["mode"] == "cold" and rep["baseline"]["status"] == "ok"
    assert rep["baseline"]["delta"] == 0.0
    assert "REGRESSED" not in second.stdout.str()


def test_a_fall_with_a_changed_attack_is_not_called_a_regression():
    from pytest_advrobust.baseline import compare

    entry = {
        "adversarial_accuracy": 0.9,
        "attack": "gan",
        "generator": {"attack_id": "a" * 64, "steps": 400},
    }
    report = {
        "adversarial_accuracy": 0.7,
        "attack": "gan",
        "training": {"attack_id": "b" * 64, "steps": 900},
    }
    cmp = compare(entry, report, tolerance=0.02)
    assert cmp.status == "attack_changed" and not cmp.regressed
    assert "the GAN attack changed" in cmp.message and "400 -> 900 steps" in cmp.message
    report["training"]["attack_id"] = "a" * 64
    assert compare(entry, report, tolerance=0.02).status == "regressed"


@pytest.mark.parametrize(
    "b, c, significant", [(5, 0, True), (4, 0, False), (9, 3, False), (12, 2, True)]
)
def test_probe_sign_test(b, c, significant):
    from pytest_advrobust.sanity import PROBE_ALPHA, _sign_test

    assert (_sign_test(b, c) < PROBE_ALPHA) is significant
    assert _sign_test(0, 0) == 1.0


def test_fitting_to_the_inputs_is_deterministic_and_never_loses_ground(one_torch_thread):
    import torch
    from _support import digits_mlp, digits_tensors

    from pytest_advrobust.gan.networks import build_generator
    from pytest_advrobust.gan.transductive import fit_to_inputs

    x, y = digits_tensors(200)
    model = digits_mlp(x, y, steps=100).requires_grad_(False)
    states, results = [], []
    for _ in range(2):
        torch.manual_seed(0)
        gen = build_generator((1, 8, 8), 0.2, width=8, n_res=1, grad_input=True).eval()
        with torch.no_grad():
            before = (model(gen.attack(model, x, y)).argmax(1) != y).float().mean()
        results.append(fit_to_inputs(gen, model, x, y, max_steps=8, patience=8, lr=3e-3, kappa=0.5))
        states.append(gen.state_dict())
        ok = model(x).argmax(1) == y
        fooled = (model(gen.attack(model, x, y)).argmax(1) != y) & ok
        assert abs(float(fooled.sum()) / int(ok.sum()) - results[-1].success) < 1e-9
        assert results[-1].success >= float(before) - 0.05
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    r = results[0]
    assert r.forward == 2 * 200 + 200 * (r.steps + 1) and r.backward >= 200 * (r.steps + 1)


def test_a_gradient_fed_generator_needs_the_direction_and_stays_in_the_ball():
    import torch

    from pytest_advrobust.gan.networks import build_generator, generator_from_arch

    torch.manual_seed(0)
    gen = build_generator((20,), 0.1, grad_input=True).eval()
    model = torch.nn.Linear(20, 3)
    x = torch.rand(16, 20)
    with pytest.raises(ValueError, match="input gradient"):
        gen(x)
    with torch.no_grad():
        out = gen.bind(model)(x)
    assert float((out - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(out.min())
    assert generator_from_arch(gen.arch).grad_input and all(
        p.grad is None for p in model.parameters()
    )
