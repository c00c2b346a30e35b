"""Norm geometry against closed forms, and the keep-the-worst rule PGD and APGD share."""

import pytest
import torch

from pytest_advrobust.errors import AdvRobustError
from pytest_advrobust.geometry import (
    KeepWorst,
    ascent_direction,
    bound,
    perturbation_norms,
    project,
    uniform_ball_noise,
    unit_noise,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_in_the_ball_and_keeps_points_already_inside(norm):
    delta = torch.randn(64, 3, 4, 4, generator=_gen(), dtype=torch.float64)
    out = project(delta, 0.5, norm)
    assert float(perturbation_norms(torch.zeros_like(out), out, norm).max()) <= 0.5 + 1e-12
    inside = delta * 1e-3
    assert torch.equal(project(inside, 0.5, norm), inside)


def test_bound_clips_into_the_valid_range_without_leaving_the_ball():
    x = torch.rand(32, 10, generator=_gen(1), dtype=torch.float64)
    far = x + 3 * torch.randn(32, 10, generator=_gen(2), dtype=torch.float64)
    for norm in ("linf", "l2"):
        out = bound(x, far, 0.3, norm, (0.0, 1.0))
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert float(perturbation_norms(x, out, norm).max()) <= 0.3 + 1e-12


def test_ascent_directions_are_the_sign_and_the_unit_gradient():
    grad = torch.randn(16, 2, 5, generator=_gen(3), dtype=torch.float64)
    assert torch.equal(ascent_direction(grad, "linf"), grad.sign())
    unit = ascent_direction(grad, "l2")
    assert torch.allclose(
        perturbation_norms(torch.zeros_like(unit), unit, "l2"), torch.ones(16, dtype=torch.float64)
    )
    # the L2 direction maximises <grad, d> over the unit sphere: it equals ||grad||_2
    gain = (grad * unit).flatten(1).sum(1)
    assert torch.allclose(gain, grad.flatten(1).norm(dim=1))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_starts_lie_in_the_ball_and_repeat_with_the_seed(norm):
    shape = (500, 1, 3, 3)
    noise = uniform_ball_noise(shape, 0.25, norm, _gen(4))
    sizes = perturbation_norms(torch.zeros_like(noise), noise, norm)
    assert noise.dtype == torch.float64 and float(sizes.max()) <= 0.25 + 1e-12
    # uniform in the ball: in 9 dimensions the radius has P(r <= eps/2) = 2^-9 (L2);
    # for L-inf each coordinate is uniform, so the largest one is rarely small
    assert float((sizes <= 0.125).float().mean()) < 0.02
    assert torch.equal(noise, uniform_ball_noise(shape, 0.25, norm, _gen(4)))
    unit = unit_noise(shape, norm, _gen(5))
    assert torch.allclose(
        perturbation_norms(torch.zeros_like(unit), unit, norm), torch.ones(500, dtype=torch.float64)
    )


def test_an_unknown_norm_is_named_in_the_error():
    with pytest.raises(ValueError, match="norm must be one of .* got 'l1'"):
        project(torch.zeros(2, 3), 0.1, "l1")
    with pytest.raises(ValueError, match="got 'l1'"):
        perturbation_norms(torch.zeros(2, 3), torch.ones(2, 3), "l1")


def test_keep_the_worst_takes_the_first_success_else_the_highest_loss():
    best = KeepWorst(torch.zeros(4, 2))
    idx = torch.arange(4)
    no = torch.zeros(4, dtype=torch.bool)
    best.offer(idx, torch.full((4, 2), 1.0), no, torch.tensor([1.0, 1.0, 1.0, float("nan")]))
    # sample 0 is fooled; sample 1 only gains loss; sample 2 loses loss
    fooled = torch.tensor([True, False, False])
    best.offer(idx[:3], torch.full((3, 2), 2.0), fooled, torch.tensor([0.5, 5.0, 0.5]))
    # a later success with more loss never replaces the first one
    best.offer(idx[:1], torch.full((1, 2), 3.0), torch.tensor([True]), torch.tensor([9.0]))
    assert best.x[:, 0].tolist() == [2.0, 2.0, 1.0, 0.0]  # a NaN loss is never taken
    assert best.fooled.tolist() == [True, False, False, False]
    assert best.loss[:3].tolist() == [0.5, 5.0, 1.0]
    assert best.open().tolist() == [1, 2, 3]


def test_every_gradient_attack_names_itself_when_no_gradient_reaches_the_input():
    from pytest_advrobust.attacks.apgd import apgd
    from pytest_advrobust.attacks.base import AttackConfig
    from pytest_advrobust.attacks.gradient import fgsm, pgd

    def blind(x):
        return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], dim=1).detach()

    x, y = torch.rand(3, 4), torch.tensor([0, 1, 0])
    for name, attack in (("fgsm", fgsm), ("pgd", pgd), ("apgd", apgd)):
        with pytest.raises(AdvRobustError, match=f"attack '{name}' needs the gradient") as err:
            attack(blind, x, y, AttackConfig(eps=0.1, steps=2))
        assert str(err.value).count(". ") == 0  # one sentence


def test_merging_attacks_keeps_the_worst_case_as_every_attack_does():
    """The worst case over attacks (metrics) and over one attack's runs (KeepWorst) follow
    one rule: the first success, else the highest loss; a NaN loss never takes over."""
    from pytest_advrobust.geometry import KeepWorst
    from pytest_advrobust.metrics.accuracy import Predictions, merge_worst_case

    g = torch.Generator().manual_seed(0)
    n = 60
    runs = []
    for r in range(4):
        x = torch.randn(n, 3, generator=g)
        correct = torch.rand(n, generator=g) > 0.3
        loss = torch.randn(n, generator=g)
        if r:
            loss[r::7] = float("nan")
        runs.append((x, correct, loss))
    pred = torch.zeros(n, dtype=torch.long)
    merged_x, merged = merge_worst_case(
        [(x, Predictions(pred, loss.double(), c, 3)) for x, c, loss in runs]
    )
    best = KeepWorst(runs[0][0])
    for x, c, loss in runs:
        best.offer(torch.arange(n), x, ~c, loss)
    assert torch.equal(best.x, merged_x)
    assert torch.equal(best.fooled, ~merged.correct)
    assert 0 < int(best.fooled.sum()) < n
