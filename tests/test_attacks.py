"""Gradient attacks against oracles: a linear model's exact L-inf robust accuracy,
the eps bound of every perturbation, determinism, and torchattacks' PGD."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_advrobust.attacks import available, get_attack, register_attack
from pytest_advrobust.attacks.base import AttackConfig, perturbation_norms
from pytest_advrobust.attacks.gradient import fgsm, pgd, pgd_from
from pytest_advrobust.errors import AdvRobustError


def linear_problem(k, d=12, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(n, d, generator=g, dtype=torch.float64)

    def model(t):
        return t @ w.T + b

    y = model(x).argmax(1)
    # flip a fifth of the labels so that some samples are wrong from the start
    y[::5] = (y[::5] + 1) % k
    return model, w, b, x, y


def exact_linf_robust(w, b, x, y, eps):
    """Correct under every L-inf perturbation of size eps (no bounds): for every
    other class j, margin_j > eps * ||w_y - w_j||_1."""
    z = x @ w.T + b
    n, k = z.shape
    ok = z.argmax(1) == y
    for j in range(k):
        margin = z[torch.arange(n), y] - z[:, j]
        l1 = (w[y] - w[j]).abs().sum(1)
        ok &= (y == j) | (margin > eps * l1)
    return ok


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5])
def test_fgsm_is_exact_on_a_two_class_linear_model(eps):
    model, w, b, x, y = linear_problem(k=2)
    cfg = AttackConfig(eps=eps, bounds=None)
    x_adv = fgsm(model, x, y, cfg)
    attacked = model(x_adv).argmax(1) == y
    expected = exact_linf_robust(w, b, x, y, eps)
    assert 0 < int(expected.sum()) < len(y)  # the oracle is not trivial here
    assert torch.equal(attacked, expected)


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5])
def test_pgd_is_exact_on_a_multi_class_linear_model(eps):
    model, w, b, x, y = linear_problem(k=5)
    # Cross-entropy alone can push towards a class that cannot be reached while
    # another could; the targeted runs try each wrong class in turn.
    cfg = AttackConfig(eps=eps, steps=30, bounds=None, targets=4)
    x_adv = pgd(model, x, y, cfg)
    attacked = model(x_adv).argmax(1) == y
    expected = exact_linf_robust(w, b, x, y, eps)
    assert 0 < int(expected.sum()) < len(y)
    assert torch.equal(attacked, expected)


def test_untargeted_pgd_never_fools_a_provably_robust_sample():
    model, w, b, x, y = linear_problem(k=5)
    x_adv = pgd(model, x, y, AttackConfig(eps=0.2, steps=30, bounds=None))
    attacked = model(x_adv).argmax(1) == y
    expected = exact_linf_robust(w, b, x, y, 0.2)
    # a sample the closed form proves robust cannot be fooled inside the ball
    assert bool((attacked | ~expected).all())
    # and untargeted PGD finds most of what can be found
    assert int((attacked != expected).sum()) <= len(y) // 10


def test_pgd_without_early_stop_gives_the_same_robust_accuracy():
    model, w, b, x, y = linear_problem(k=4)
    base = dict(eps=0.2, steps=20, bounds=None)
    a = pgd(model, x, y, AttackConfig(**base, early_stop=True))
    c = pgd(model, x, y, AttackConfig(**base, early_stop=False))
    assert torch.equal(model(a).argmax(1) == y, model(c).argmax(1) == y)


def small_cnn(seed=0, channels=1, classes=4):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, classes),
    ).eval()


@settings(max_examples=25, deadline=None)
@given(
    attack=st.sampled_from(["fgsm", "pgd"]),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.001, 2.0),
    bounded=st.booleans(),
    random_start=st.booleans(),
    restarts=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_every_perturbation_stays_inside_eps_and_bounds(
    attack, norm, eps, bounded, random_start, restarts, seed
):
    model = small_cnn()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 1, 6, 6, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    bounds = (0.0, 1.0) if bounded else None
    cfg = AttackConfig(
        eps=eps,
        norm=norm,
        steps=3,
        bounds=bounds,
        seed=seed,
        random_start=random_start,
        restarts=restarts,
    )
    x_adv = get_attack(attack)(model, x, y, cfg, None)
    assert x_adv.shape == x.shape
    assert torch.isfinite(x_adv).all()
    assert float(perturbation_norms(x, x_adv, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    if bounded:
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_same_seed_same_adversarial_examples_bit_for_bit():
    model = small_cnn()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 6, 6, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    cfg = AttackConfig(eps=0.1, steps=5, random_start=True, restarts=2, seed=7)
    assert torch.equal(pgd(model, x, y, cfg), pgd(model, x, y, cfg))
    other = pgd(model, x, y, AttackConfig(eps=0.1, steps=5, random_start=True, restarts=2, seed=8))
    assert not torch.equal(pgd(model, x, y, cfg), other)


def test_restarts_never_make_the_attack_weaker():
    model = small_cnn(seed=3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(64, 1, 6, 6, generator=g)
    y = model(x).argmax(1)
    one = pgd(model, x, y, AttackConfig(eps=0.05, steps=5, restarts=1))
    three = pgd(model, x, y, AttackConfig(eps=0.05, steps=5, restarts=3))
    fooled_one = model(one).argmax(1) != y
    fooled_three = model(three).argmax(1) != y
    assert bool((fooled_three | ~fooled_one).all())  # every sample fooled once stays fooled


def test_pgd_from_starts_where_it_is_told():
    model, w, b, x, y = linear_problem(k=3)
    cfg = AttackConfig(eps=0.3, steps=10, bounds=None, refine=0)
    start = x.clone()
    same = pgd_from(model, x, y, start, cfg, steps=10)
    assert torch.equal(model(same).argmax(1) == y, model(pgd(model, x, y, cfg)).argmax(1) == y)


def test_registry_knows_builtins_and_custom_attacks():
    assert {"fgsm", "pgd", "gan"} <= set(available())

    def noop(model, x, y, cfg, ctx):
        return x

    register_attack("noop-test", noop)
    assert get_attack("noop-test") is noop
    with pytest.raises(ValueError):
        register_attack("pgd", noop)
    with pytest.raises(KeyError):
        get_attack("no-such-attack")


def test_agrees_with_torchattacks_pgd_sample_for_sample():
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(36, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5)
    ).eval()
    x = torch.rand(200, 1, 6, 6)
    y = model(x).argmax(1)
    ours = pgd(model, x, y, AttackConfig(eps=0.05, steps=10, step_size=0.01))
    theirs = torchattacks.PGD(model, eps=0.05, alpha=0.01, steps=10, random_start=False)(x, y)
    assert torch.equal(model(ours).argmax(1) == y, model(theirs).argmax(1) == y)


# ------------------------------------------------ the table of per-attack facts


def _blind_model():
    class Blind(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):  # the input's gradient never reaches the loss
            s = x.detach().flatten(1).sum(1)
            return torch.stack([s, -s], dim=1) * self.w

    return Blind()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "apgd-t", "autoattack-lite", "gan"])
def test_every_attack_the_table_says_follows_a_gradient_is_checked_before_it_runs(name):
    from pytest_advrobust.attack_table import facts_of
    from pytest_advrobust.evaluation.run import run_evaluation
    from pytest_advrobust.settings.robust import RobustSettings

    assert facts_of(name).gradient
    x, y = torch.rand(40, 4), torch.arange(40) % 2
    settings = RobustSettings(attacks=(name,), eps=(0.1,), n_samples=20, steps=2, sanity="off")
    with pytest.raises(AdvRobustError, match=f"attack '{name}' needs the gradient of the loss"):
        run_evaluation(_blind_model(), (x, y), settings)


def test_attacks_that_use_no_training_data_leave_it_unread():
    from pytest_advrobust.attack_table import ATTACKS, needs_training_data
    from pytest_advrobust.inputs.data import split_data

    x, y = torch.rand(400, 4), torch.arange(400) % 2
    for name, facts in ATTACKS.items():
        split = split_data((x, y), 50, 0, need_train=needs_training_data([name]))
        assert (split.train_x is not None) == facts.training_data, name
    assert needs_training_data(["a-custom-attack"])  # registered attacks may train


def test_the_registry_gives_every_built_in_attack_of_the_table():
    from pytest_advrobust.attack_table import ATTACKS

    for name, facts in ATTACKS.items():
        if facts.samples:  # an evaluation of its own, not a perturbation attack
            with pytest.raises(AdvRobustError, match=f"attack '{name}' samples new inputs"):
                get_attack(name)
            continue
        assert callable(get_attack(name)), name
        assert get_attack(name).__module__ == facts.module, name
    assert available()[: len(ATTACKS)] == list(ATTACKS)
