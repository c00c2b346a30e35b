"""AdvGAN training on a tiny problem: success over the eps range, determinism, model restored,
warm start, progress."""

import json

import pytest
import torch
import torch.nn as nn
from _support import digits_mlp, digits_tensors

from pytest_advrobust.attacks.base import perturbation_norms
from pytest_advrobust.errors import AdvRobustError
from pytest_advrobust.gan.train import GanConfig, margin, train_generator

EPS = 0.2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digits():
    return digits_tensors()


def _classifier(x, y, seed=0, steps=150):
    return digits_mlp(x, y, seed=seed, steps=steps)


@pytest.fixture(scope="module")
def problem():
    x, y = _digits()
    x, y = x[:600], y[:600]
    return _classifier(x, y), x, y


def _cfg(**kw):
    base = dict(
        eps_range=(EPS / 2, EPS * 2),
        max_steps=60,
        batch_size=32,
        lr=3e-3,
        eval_every=10,
        patience=100,
        width=8,
        n_res=1,
        holdout_fraction=0.2,
    )
    base.update(kw)
    return GanConfig(**base)


def test_training_fools_a_small_classifier(problem):
    model, x, y = problem
    lines = []
    res = train_generator(model, x, y, _cfg(), "cpu", progress=lines.append)
    assert res.mode == "cold" and res.device == "cpu" and 0 < res.steps <= 60
    assert res.holdout_success >= 0.5, res.history
    assert not res.generator.training
    fooled = []
    for eps in (EPS / 2, EPS, EPS * 2):  # one generator serves every eps of its range
        with torch.no_grad():
            x_adv = res.generator(x, eps)
            fooled.append(
                float((model(x_adv).argmax(1) != y)[model(x).argmax(1) == y].float().mean())
            )
        assert float(perturbation_norms(x, x_adv, "linf").max()) <= eps + 1e-6
    assert fooled[0] < fooled[1] < fooled[2] and fooled[1] >= 0.6, fooled
    # the recorded curve: success at budgets spread over the range, rising with eps
    eps_points = [e for e, _ in res.success_curve]
    assert len(eps_points) == 7 and EPS / 2 < eps_points[0] < eps_points[-1] < EPS * 2
    assert res.success_curve[-1][1] > res.success_curve[0][1]
    assert 2 <= len(lines) <= 10 and all("\n" not in line for line in lines)


def test_a_long_training_reports_progress_at_least_every_heartbeat(problem, monkeypatch):
    from pytest_advrobust.gan import training_run

    model, x, y = problem
    monkeypatch.setattr(training_run, "HEARTBEAT_SECONDS", 0.0)  # every step is overdue
    lines = []
    train_generator(model, x, y, _cfg(max_steps=12, eval_every=100), "cpu", progress=lines.append)
    steps = [line for line in lines if line.startswith("advrobust gan: step ")]
    assert len(steps) >= 11, lines


def test_same_seed_gives_bit_identical_weights(problem):
    model, x, y = problem
    cfg = _cfg(max_steps=12, eval_every=4)
    a = train_generator(model, x, y, cfg).generator.state_dict()
    b = train_generator(model, x, y, cfg).generator.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = train_generator(model, x, y, cfg.replace(seed=1)).generator.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_global_rng_is_untouched(problem):
    model, x, y = problem
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_generator(model, x, y, _cfg(max_steps=2, eval_every=1))
    assert torch.equal(torch.rand(3), expected)


def _mixed_state(model):
    model.train()
    model[1].eval()
    model[3].weight.requires_grad_(False)
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def test_model_flags_are_restored(problem):
    model, x, y = problem
    before = _mixed_state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    train_generator(model, x, y, _cfg(max_steps=3, eval_every=1))
    after = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    assert after == before
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    model.eval().requires_grad_(True)


class _Exploding(nn.Module):
    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.calls, self.after = inner, 0, after

    def forward(self, x):
        self.calls += 1
        assert not self.training and not any(p.requires_grad for p in self.parameters())
        if self.calls > self.after:
            raise RuntimeError("boom")
        return self.inner(x)


def test_model_flags_are_restored_when_the_model_raises(problem):
    model, x, y = problem
    wrapped = _Exploding(model, after=3)
    wrapped.train()
    flags = [p.requires_grad for p in wrapped.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        train_generator(wrapped, x, y, _cfg(max_steps=10, eval_every=100))
    assert wrapped.training and all(m.training for m in wrapped.modules())
    assert [p.requires_grad for p in wrapped.parameters()] == flags
    model.eval()


def test_warm_start_reaches_the_target_in_fewer_steps(problem):
    model, x, y = problem
    cfg = _cfg(max_steps=200, target_success=0.7, eval_every=5)
    cold = train_generator(model, x, y, cfg)
    assert cold.stop_reason == "target" and cold.mode == "cold"
    changed = _classifier(x, y, seed=0, steps=170)  # the same model, trained a little longer
    warm = train_generator(changed, x, y, cfg, init_state=cold.generator.state_dict())
    assert warm.mode == "warm" and warm.holdout_success >= 0.7
    assert warm.steps < cold.steps, (warm.history, cold.history)


def test_flat_features_and_l2(problem):
    model, x, y = problem
    flat_model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), model)
    xf = x.view(x.shape[0], -1)
    cfg = _cfg(norm="l2", eps_range=(0.75, 3.0), bounds=None, max_steps=40)
    res = train_generator(flat_model, xf, y, cfg)
    assert res.generator.arch["kind"] == "mlp" and res.holdout_success > 0.3
    with torch.no_grad():
        assert float(perturbation_norms(xf, res.generator(xf, 1.5), "l2").max()) <= 1.5 * (1 + 1e-5)


def test_config_is_json_and_validated():
    cfg = _cfg()
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["eps_range"] == [EPS / 2, EPS * 2] and d["bounds"] == [0.0, 1.0]
    for bad, word in [
        (dict(eps_range=(-1.0, 1.0)), "eps_range"),
        (dict(eps_range=(0.3, 0.1)), "eps_range"),
        (dict(norm="l1"), "norm"),
        (dict(max_steps=0), "max_steps"),
        (dict(bounds=(1, 0)), "bounds"),
        (dict(kappa=-1.0), "kappa"),
        (dict(holdout_fraction=1.0), "holdout_fraction"),
        (dict(batch_size=1.5), "batch_size"),
    ]:
        with pytest.raises(ValueError, match=word):
            _cfg(**bad)


def test_margin_and_bad_inputs(problem):
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert torch.allclose(margin(logits, torch.tensor([0, 0])), torch.tensor([1.0, -3.0]))
    model, x, y = problem
    with pytest.raises(ValueError, match="y must"):
        train_generator(model, x, y[:-1], _cfg())
    # the same one-sentence error as the rest of the plugin gives for a bad model
    with pytest.raises(AdvRobustError, match="expected logits of shape"):
        train_generator(lambda t: t.sum(dim=(1, 2, 3)), x, y, _cfg())


def test_a_budget_that_runs_out_is_not_called_patience(problem):
    model, x, y = problem
    # one held-out evaluation, at the last step, with no progress possible (lr ~ 0)
    cfg = _cfg(max_steps=10, eval_every=10, patience=1, lr=1e-12, target_success=1.0)
    res = train_generator(model, x, y, cfg, "cpu")
    assert res.steps == 10
    assert res.stop_reason == "max_steps"
