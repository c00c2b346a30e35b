"""APGD-CE, APGD-T and autoattack-lite against closed-form linear oracles and
AutoAttack's own code (pyautoattack), and the strongest-attack choice."""

import pytest
import torch
from test_attacks import exact_linf_robust, linear_problem

from pytest_advrobust.attacks import available, get_attack, strongest_attack
from pytest_advrobust.attacks.apgd import apgd, apgd_t, autoattack_lite, dlr_targeted_loss
from pytest_advrobust.attacks.base import AttackConfig, perturbation_norms
from pytest_advrobust.attacks.counting import counted

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def boxed_linear_problem(k=5, d=20, n=300, seed=0):
    """A float32 linear model on inputs in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g)
    x = torch.rand(n, d, generator=g)
    b = -(x @ w.T).mean(0)

    def model(t):
        return t @ w.T + b

    return model, w, b, x, model(x).argmax(1)


def exact_boxed_robust(w, b, x, y, eps):
    """Correct under every L-inf perturbation of size eps that keeps x in [0, 1]:
    per wrong class j the lowest margin is margin_j + sum_i min(c_i lo_i, c_i hi_i)
    with c = w_y - w_j and [lo_i, hi_i] = [max(-eps, -x_i), min(eps, 1 - x_i)]."""
    z = x.double() @ w.double().T + b.double()
    lo, hi = (-x.double()).clamp(min=-eps), (1 - x.double()).clamp(max=eps)
    ok = z.argmax(1) == y
    for j in range(w.shape[0]):
        c = w.double()[y] - w.double()[j]
        worst = z.gather(1, y[:, None]).squeeze(1) - z[:, j] + torch.minimum(c * lo, c * hi).sum(1)
        ok &= (y == j) | (worst > 0)
    return ok


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5])
def test_apgd_t_reaches_the_linear_oracle_on_every_sample(eps):
    model, w, b, x, y = linear_problem(k=5)
    x_adv = apgd_t(model, x, y, AttackConfig(eps=eps, steps=100, bounds=None))
    expected = exact_linf_robust(w, b, x, y, eps)
    assert 0 < int(expected.sum()) < len(y)
    assert torch.equal(model(x_adv).argmax(1) == y, expected)
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= eps + 1e-12


@pytest.mark.parametrize("eps", [0.03, 0.08])
def test_apgd_t_reaches_the_boxed_linear_oracle(eps):
    model, w, b, x, y = boxed_linear_problem()
    x_adv = apgd_t(model, x, y, AttackConfig(eps=eps, steps=100))
    expected = exact_boxed_robust(w, b, x, y, eps)
    assert 0 < int(expected.sum()) < len(y)
    assert torch.equal(model(x_adv).argmax(1) == y, expected)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


@pytest.mark.parametrize("attack", [apgd, apgd_t, autoattack_lite])
def test_no_apgd_variant_fools_a_provably_robust_sample(attack):
    model, w, b, x, y = linear_problem(k=5)
    x_adv = attack(model, x, y, AttackConfig(eps=0.2, steps=50, bounds=None))
    attacked = model(x_adv).argmax(1) == y
    expected = exact_linf_robust(w, b, x, y, 0.2)
    assert bool((attacked | ~expected).all())
    assert int((attacked != expected).sum()) <= len(y) // 20


def test_dlr_targeted_loss_is_the_published_formula():
    z = torch.tensor([[5.0, 1.0, 3.0, 2.0, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(5 - 3) / (5 - (2 + 1) / 2)
    assert float(dlr_targeted_loss(z, y, t)[0]) == pytest.approx(-2.0 / 3.5)


def test_samples_leave_at_their_first_success():
    model, w, b, x, y = linear_problem(k=5)
    cfg = AttackConfig(eps=0.5, steps=100, bounds=None)
    _, count = counted(apgd, model, x, y, cfg, None)
    fooled_all_the_way = 101 * x.shape[0]
    assert count.backward < fooled_all_the_way / 2
    assert count.forward >= count.backward


def test_same_seed_same_result_and_registry_names():
    model, w, b, x, y = linear_problem(k=4)
    cfg = AttackConfig(eps=0.2, steps=20, bounds=None, seed=3)
    assert torch.equal(apgd(model, x, y, cfg), apgd(model, x, y, cfg))
    assert {"apgd", "apgd-t", "autoattack-lite"} <= set(available())
    assert get_attack("apgd-t") is apgd_t


def test_strongest_attack_prefers_targeted_apgd_and_falls_back_to_pgd():
    assert strongest_attack(["gan", "apgd", "apgd-t"])[0] == "apgd-t"
    assert strongest_attack(["pgd", "autoattack-lite"])[0] == "autoattack-lite"
    assert strongest_attack(["gan"])[0] == "pgd"
    assert strongest_attack([])[1] is get_attack("pgd")


@pytest.mark.parametrize("targeted", [False, True])
def test_agrees_with_autoattacks_own_apgd(targeted):
    autopgd = pytest.importorskip("pyautoattack.autopgd_base")
    model, w, b, x, y = boxed_linear_problem(k=6, seed=1)
    eps = 0.05
    if targeted:
        ref = autopgd.APGDAttack_targeted(
            model, n_iter=100, eps=eps, seed=0, device="cpu", n_target_classes=5
        )
        ours = apgd_t(model, x, y, AttackConfig(eps=eps, steps=100, targets=5))
    else:
        ref = autopgd.APGDAttack(model, n_iter=100, eps=eps, seed=0, device="cpu", loss="ce")
        ours = apgd(model, x, y, AttackConfig(eps=eps, steps=100))
    theirs = ref.perturb(x, y)
    robust_ours = model(ours).argmax(1) == y
    robust_theirs = model(theirs).argmax(1) == y
    expected = exact_boxed_robust(w, b, x, y, eps)
    assert 0 < int(expected.sum()) < len(y)
    assert bool((robust_ours | ~expected).all()) and bool((robust_theirs | ~expected).all())
    # the same attack: the same robust samples, up to a few where the runs' random starts differ
    assert int((robust_ours != robust_theirs).sum()) <= 3
    if targeted:
        assert torch.equal(robust_ours, expected) and torch.equal(robust_theirs, expected)
