"""The ``gan`` attack's strength check has power and is honest, and the attack's numbers do not
depend on machine load.

* simulated on a deliberately weakened attack at the default sample size (512), on a linear
  model whose robust samples are known in closed form: flagged in at least 80% of 100 seeds
  at a 5-point gap and in at most 5% without one (the power curve is printed);
* its reference finds what gradient attacks cannot, on a model with zero gradients on part of
  its input;
* through the plugin: a weakened attack is flagged (and fails under --advrobust-strict) with
  every number in the report; a normal one is not; the check's passes are in ``cost``;
* one seed gives the same JSON report on a quiet machine and under load;
* save a baseline, clear the cache, train again, compare: the unchanged model passes.
"""

import json
import multiprocessing
import os
import shutil

from pytest_advrobust.sanity import FLAG_GAN_WEAKER

N = 512  # the plugin's default sample size


def _linear_problem(n=N, d=12, k=3, robust_share=0.6):
    """A linear model, inputs and the eps at which ``robust_share`` of them are robust, with the
    exact robust set (L-inf, no bounds: sample i resists iff every margin to another class is
    at least eps times the L1 norm of the weight difference)."""
    import torch

    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=g))
        model.bias.zero_()
    model.eval().requires_grad_(False)
    x = torch.randn(n, d, generator=g)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = model.weight
    radius = torch.full((n,), float("inf"))
    for j in range(k):
        diff = w[y] - w[j]  # (n, d)
        gap = z.gather(1, y[:, None]).squeeze(1) - z[:, j]
        r = gap / diff.abs().sum(1).clamp_min(1e-12)
        radius = torch.where(y == j, radius, torch.minimum(radius, r))
    eps = float(radius.quantile(1 - robust_share))
    return model, x, y, eps, radius > eps


def _weakened_record(x, robust, gap_points, seed):
    """What an attack that misses ``gap_points`` of fragile samples would leave: the true robust
    samples plus that many fragile ones, standing; passes as the real cascade's."""
    import torch

    from pytest_advrobust.attacks.cascade import DEFAULT_BUDGET
    from pytest_advrobust.sanity import GanRecord

    fragile = (~robust).nonzero(as_tuple=True)[0]
    g = torch.Generator().manual_seed(10_000 + seed)
    missed = fragile[torch.randperm(fragile.numel(), generator=g)[: round(gap_points / 100 * N)]]
    standing = robust.clone()
    standing[missed] = True
    passes = torch.where(standing[:, None], torch.tensor([39, 38]), torch.tensor([1, 0]))
    correct = torch.ones_like(robust)
    return GanRecord(x.clone(), correct, standing, passes, DEFAULT_BUDGET)


def _flag_rate(model, x, y, eps, robust, gap_points, seeds=100):
    from pytest_advrobust.attacks.base import AttackConfig
    from pytest_advrobust.sanity import strength_check

    hits = 0
    for seed in range(seeds):
        cfg = AttackConfig(eps=eps, bounds=None, seed=seed)
        record = _weakened_record(x, robust, gap_points, seed)
        check, flag, cost = strength_check(model, x, y, record, cfg, "cheap", 3)
        assert (flag is not None) == check["weaker"]
        # at most a quarter of the attack's forward passes, and of its backward passes
        assert cost["forward_per_sample"] * N <= 0.25 * float(record.passes[:, 0].sum()) + 1e-9
        assert cost["backward_per_sample"] * N <= 0.25 * float(record.passes[:, 1].sum()) + 1e-9
        hits += int(check["weaker"])
    return hits / seeds


def test_the_strength_check_has_power_and_few_false_alarms(one_torch_thread, capsys):
    model, x, y, eps, robust = _linear_problem()
    assert abs(float(robust.float().mean()) - 0.6) < 0.01
    curve = {gap: _flag_rate(model, x, y, eps, robust, gap) for gap in (0, 2, 5, 10)}
    with capsys.disabled():
        print("\nstrength check, flagged share of 100 seeds by gap (points):", curve)
    assert curve[0] <= 0.05
    assert curve[5] >= 0.80
    assert curve[0] <= curve[2] <= curve[5] <= curve[10]


def test_the_reference_finds_what_gradient_attacks_cannot(one_torch_thread):
    """Half of the features pass through a step function (zero gradient): APGD-T cannot move
    them; the reference's random search can."""
    import torch

    from pytest_advrobust.attacks.apgd import apgd_t
    from pytest_advrobust.attacks.base import AttackConfig
    from pytest_advrobust.attacks.gradient import pgd
    from pytest_advrobust.sanity.strength import Reference, _reference

    class Stepped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 2)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[0.1] * 4 + [1.0] * 4, [-0.1] * 4 + [-1.0] * 4]))
                self.fc.bias.zero_()

        def forward(self, x):
            steps = (x[:, 4:] > 0.5).float() * 2 - 1  # no gradient flows through the comparison
            return self.fc(torch.cat([x[:, :4], steps], dim=1))

    model = Stepped().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(64, 4, generator=g), 0.52 + 0.05 * torch.rand(64, 4, generator=g)], 1)
    y = torch.zeros(64, dtype=torch.long)  # every step feature on: class 0
    # three of the four step features must turn off; eps reaches all of them
    cfg = AttackConfig(eps=0.1, bounds=(0.0, 1.0), steps=100, targets=1)
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all())
        by_pgd = model(pgd(model, x, y, cfg)).argmax(1) != y
        by_apgd_t = model(apgd_t(model, x, y, cfg)).argmax(1) != y  # only its random start helps
    found = _reference(model, x, y, cfg, Reference(targets=1, iterations=20, queries=100))
    assert int(by_pgd.sum()) == 0 and int(by_apgd_t.sum()) <= 8
    assert int(found.sum()) >= 60


GAN_TEST = """
import pytest

@pytest.mark.robust(threshold=1.0)
def test_gan():
    pass
"""

#: A conftest addition that cuts the cascade to the generator (trained for one step by the
#: test) and one untargeted iteration.
WEAKENED = """

import pytest_advrobust.attacks.gan as _gan
from pytest_advrobust.attacks.cascade import CascadeBudget

_gan.DEFAULT_BUDGET = CascadeBudget(untargeted=1, targets=0, targeted=0)
"""


def run(pytester, *args):
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "--advrobust", "--advrobust-threads=1", *args
    )


def the_report(pytester, name="r.json"):
    return json.loads((pytester.path / name).read_text())["tests"][0]


def gan_flags(rep):
    return [f for f in rep["sanity"] if f["flag"] == FLAG_GAN_WEAKER]


def test_a_weakened_attack_is_flagged_with_every_number_and_fails_under_strict(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    conftest = blobs_repo.path / "conftest.py"
    conftest.write_text(conftest.read_text() + WEAKENED)
    cache = f"--advrobust-cache-dir={blobs_repo.path / 'cache'}"
    result = run(blobs_repo, "--advrobust-gan-steps=1", "--advrobust-json=r.json", cache)
    result.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    check = rep["gan"]["strength_check"]
    assert check["weaker"] and check["p_value"] < 0.05 and check["extra_successes"] > 0
    assert check["checked"] <= 64 and check["reference"].startswith("APGD-T ")
    assert check["robust_accuracy_lower95"] < rep["adversarial_accuracy"]
    (flag,) = gan_flags(rep)
    assert f"fooled {check['extra_successes']}" in flag["message"]
    result.stdout.fnmatch_lines([f"*sanity flag {FLAG_GAN_WEAKER}: On * samples the gan attack*"])
    # the check's passes are in the cost, beside the attack's own and the training's
    assert rep["cost"]["strength_check"]["forward_per_sample"] > 0
    assert set(rep["cost"]) >= {"gan", "gan_training", "strength_check"}
    # the evidence retrains the generator for the runs to come, and the report says so
    assert rep["training"]["retrained_after_check"]["mode"] == "warm"
    strict = run(blobs_repo, "--advrobust-gan-steps=1", "--advrobust-strict", cache)
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines([f"*{FLAG_GAN_WEAKER}*--advrobust-strict*"])


def test_a_normal_attack_raises_no_flag_and_reports_the_control(blobs_repo):
    blobs_repo.makepyfile(test_gan=GAN_TEST)
    result = run(
        blobs_repo, "--advrobust-json=r.json", f"--advrobust-cache-dir={blobs_repo.path / 'c'}"
    )
    result.assert_outcomes(passed=1)
    rep = the_report(blobs_repo)
    assert gan_flags(rep) == []
    check = rep["gan"]["strength_check"]
    assert not check["weaker"] and check["extra_successes"] == 0
    control = check["control"]
    assert control["n"] > 0 and set(control["clean_start"]) == set(control["generator_start"])
    assert rep["gan"]["generator_alone_accuracy"] >= rep["adversarial_accuracy"]
    stages = rep["cost"]["gan"]["stages"]
    assert set(stages) == {"start", "untargeted", "targeted"}
    result.stdout.fnmatch_lines(["*test_gan*gan linf*PASS*cold * steps *s*"])
    # the summary says what the generator's start saved (or cost) against the clean start
    saved = control["passes_saved"]
    word = "saved" if saved >= 0 else "cost"
    cell = f"; start {word} {abs(saved):.0%} passes, * pts vs clean start on {control['n']}"
    result.stdout.fnmatch_lines([f"*test_gan*{cell}*"])


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
    assert gen["generator_success"] is not None
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
    from pytest_advrobust.reports.baseline import compare

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


def test_a_fall_under_other_settings_names_them_instead_of_the_model():
    from pytest_advrobust.reports.baseline import compare

    entry = {"adversarial_accuracy": 0.9, "attack": "pgd", "eps": 2 / 255, "n": 200}
    report = {"adversarial_accuracy": 0.3, "attack": "pgd", "eps": 3 / 255, "n": 200}
    cmp = compare(entry, report, tolerance=0.02)
    assert cmp.status == "attack_changed" and cmp.fails and not cmp.regressed
    assert "recorded with other settings (eps 0.00784314 -> 0.0117647)" in cmp.message
    assert "not the model's" in cmp.message and "--advrobust-save-baseline" in cmp.message
    # the same eps: the fall is the model's
    report["eps"] = 2 / 255
    assert compare(entry, report, tolerance=0.02).status == "regressed"
    # other settings without a fall: passes, with the note
    report.update(eps=3 / 255, adversarial_accuracy=0.9)
    calm = compare(entry, report, tolerance=0.02)
    assert (
        calm.status == "ok"
        and "note: the baseline was recorded with other settings" in calm.message
    )
