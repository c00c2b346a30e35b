"""PGD's exact per-sample stops (first success, repeated iterate) and best iterate,
checked against a plain loop that runs every sample for every step."""

import pytest
import torch
import torch.nn.functional as F

from pytest_advrobust.attacks.base import AttackConfig
from pytest_advrobust.attacks.counting import counted
from pytest_advrobust.attacks.gradient import pgd
from pytest_advrobust.attacks.pgd_core import Run, iterate_hashes, margins, pgd_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain_loop(model, x, y, eps, step, steps, bounds=(0.0, 1.0)):
    """Every sample, every step; returns the margin of every iterate, (steps + 1, n)."""
    x_adv, seen = x.clone(), []
    for _ in range(steps):
        xg = x_adv.detach().requires_grad_(True)
        logits = model(xg)
        seen.append(margins(logits.detach(), y))
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xg)
        moved = x_adv + step * grad.sign()
        x_adv = (x + (moved - x).clamp(-eps, eps)).clamp(*bounds).detach()
    with torch.no_grad():
        seen.append(margins(model(x_adv), y))
    return torch.stack(seen)


def small_problem(seed=3, n=60):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 4),
    ).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64).float()
    y = model(x).argmax(1)
    return model, x, y


def run_one_by_one(model, x, y, eps, step, steps):
    """pgd_run on each sample alone, so no result depends on the batch it ran in."""
    outs = [
        pgd_run(
            model,
            Run(x[i : i + 1], y[i : i + 1], x[i : i + 1]),
            AttackConfig(eps=eps, norm="linf", bounds=(0.0, 1.0)),
            steps,
            step,
        )
        for i in range(x.shape[0])
    ]
    return (
        torch.cat([o[0] for o in outs]),
        torch.cat([o[1] for o in outs]),
        torch.cat([o[2] for o in outs]),
    )


def test_verdicts_and_best_margins_equal_the_plain_loops():
    model, x, y = small_problem(n=40)
    eps, step, steps = 0.05, 0.0125, 20
    every = torch.cat(
        [
            plain_loop(model, x[i : i + 1], y[i : i + 1], eps, step, steps)
            for i in range(x.shape[0])
        ],
        dim=1,
    )
    x_best, fooled, margin = run_one_by_one(model, x, y, eps, step, steps)
    plain_fooled = (every < 0).any(dim=0)
    assert 0 < int(plain_fooled.sum()) < x.shape[0]  # both kinds of sample occur
    assert torch.equal(fooled, plain_fooled)
    # A robust sample's best iterate is the lowest margin of all steps of the plain loop:
    # the cycle repeats iterates already seen, so stopping loses nothing.
    robust = ~plain_fooled
    assert torch.equal(margin[robust], every[:, robust].amin(dim=0))
    # and on some of them that is not the last iterate's margin: the best iterate counts
    assert bool((margin[robust] < every[-1, robust]).any())
    with torch.no_grad():
        # (as one batch the model rounds differently in the last bits)
        assert torch.allclose(margins(model(x_best), y)[robust], margin[robust], atol=1e-6)
        assert bool((model(x_best[fooled]).argmax(1) != y[fooled]).all())
    assert float((x_best - x).abs().max()) <= eps + 1e-6


def test_robust_samples_stop_at_a_repeated_iterate():
    model, x, y = small_problem()
    eps, step, steps = 0.05, 0.0125, 20
    cfg = AttackConfig(eps=eps, steps=steps, step_size=step, batch_size=1000)
    full, full_count = counted(
        pgd,
        model,
        x,
        y,
        AttackConfig(eps=eps, steps=steps, step_size=step, batch_size=1000, early_stop=False),
        None,
    )
    robust = model(full).argmax(1) == y
    assert full_count.backward == steps * x.shape[0]
    assert int(robust.sum()) >= x.shape[0] // 4
    # The robust samples alone: a success never stops them, only a repeated iterate does.
    stopping, count = counted(pgd, model, x[robust], y[robust], cfg, None)
    assert bool((model(stopping).argmax(1) == y[robust]).all())
    assert count.backward < 0.75 * steps * int(robust.sum())


def test_iterate_hashes_are_equal_exactly_when_the_bytes_are():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 5, 5, generator=g)
    coeffs = (
        torch.randint(1, 2**62, (75,), generator=g) | 1,
        torch.randint(1, 2**62, (75,), generator=g) | 1,
    )
    h = iterate_hashes(x, coeffs)
    assert torch.equal(h, iterate_hashes(x.clone(), coeffs))
    y = x.clone()
    y[:, 1, 2, 3] = torch.nextafter(y[:, 1, 2, 3], torch.tensor(2.0))  # one ulp apart
    differ = (iterate_hashes(y, coeffs) != h).any(dim=1)
    assert bool(differ.all())
    assert len({tuple(r) for r in h.tolist()}) == 64
