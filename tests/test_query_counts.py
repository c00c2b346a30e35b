"""Query counts per attack (forward and backward passes per sample) in the JSON report,
and the sanity checks measuring against the strongest attack configured."""

import json

import pytest
import torch

from pytest_advrobust.attacks.base import AttackConfig, AttackContext
from pytest_advrobust.attacks.counting import counted, counting
from pytest_advrobust.attacks.gradient import fgsm, pgd

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_counts_passes_per_sample_and_leaves_the_module_without_hooks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3)).eval()
    x, y = torch.rand(40, 5), torch.randint(0, 3, (40,))
    _, count = counted(fgsm, model, x, y, AttackConfig(eps=0.1, batch_size=16), None)
    assert (count.forward, count.backward) == (40, 40)  # one pass each, in 3 batches
    assert count.per_sample(40)["forward_per_sample"] == 1.0
    assert not model._forward_hooks
    cfg = AttackConfig(eps=0.1, steps=7, early_stop=False)
    _, count = counted(pgd, model, x, y, cfg, None)
    assert count.backward == 7 * 40 and count.forward == 8 * 40  # 7 steps and a last check
    with torch.no_grad(), counting(model) as (m, c):
        m(x)
    assert (c.forward, c.backward) == (40, 0)


def test_a_plain_callable_is_counted_too():
    w = torch.randn(5, 3)
    _, count = counted(
        fgsm,
        lambda t: t @ w,
        torch.rand(10, 5),
        torch.zeros(10, dtype=torch.long),
        AttackConfig(eps=0.1),
        None,
    )
    assert (count.forward, count.backward) == (10, 10)


def test_json_report_has_the_cost_of_every_attack(blobs_repo):
    blobs_repo.makepyfile(
        test_cost="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack=["fgsm", "pgd", "apgd-t"], eps=0.2,
                            steps=10, n_samples=60, sanity="off")
        def test_a(): pass
    """
    )
    result = blobs_repo.runpytest_subprocess(
        "-p", "no:randomly", "--advrobust", "--advrobust-json=r.json"
    )
    result.assert_outcomes(passed=1)
    (rep,) = json.loads((blobs_repo.path / "r.json").read_text())["tests"]
    cost = rep["cost"]
    assert set(cost) == {"fgsm", "pgd", "apgd-t"}
    for c in cost.values():
        assert set(c) == {"forward_per_sample", "backward_per_sample", "seconds"}
    assert cost["fgsm"]["forward_per_sample"] == 1.0 and cost["fgsm"]["backward_per_sample"] == 1.0
    assert 0 < cost["pgd"]["backward_per_sample"] <= 10
    assert cost["pgd"]["forward_per_sample"] <= 11


def test_weak_beats_strong_compares_against_the_strongest_configured_attack(monkeypatch):
    from pytest_advrobust.attacks import apgd as apgd_module
    from pytest_advrobust.sanity import FLAG_WEAK_BEATS_STRONG, Evaluated, run_sanity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(200, 10)
    y = model(x).argmax(1)
    # an "APGD-T" that does nothing: FGSM must beat it, and the flag must name it
    monkeypatch.setattr(apgd_module, "apgd_t", lambda m, xx, yy, cfg, ctx=None: xx.clone())
    cfg = AttackConfig(eps=0.3, steps=5)
    found = Evaluated(x, y, x, attacks=["pgd", "apgd-t"])
    flags = run_sanity(model, found, cfg, AttackContext(), level="full")
    (flag,) = [f for f in flags if f["flag"] == FLAG_WEAK_BEATS_STRONG]
    assert "APGD-T" in flag["message"]
    found = Evaluated(x, y, x, attacks=["pgd"])
    flags = run_sanity(model, found, cfg, AttackContext(), level="full")
    assert FLAG_WEAK_BEATS_STRONG not in [f["flag"] for f in flags]
