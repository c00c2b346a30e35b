"""The ``gan`` attack: the prior's cache and reuse across model versions, the retrain rule, the
cascade after it, the facts and the cost it reports."""

import dataclasses

import pytest
import torch
import torch.nn as nn
from _support import digits_mlp, digits_tensors

import pytest_advrobust.attacks.gan as gan_mod
import pytest_advrobust.gan.acquire as acquire_mod
from pytest_advrobust.attacks.base import AttackConfig, AttackContext, perturbation_norms
from pytest_advrobust.attacks.counting import counted
from pytest_advrobust.gan.train import GanConfig
from pytest_advrobust.runtime import Runtime

EPS = 0.2
REAL_DEFAULT = gan_mod.default_gan_config
FACT_KEYS = {"mode", "steps", "budget", "seconds", "holdout_success", "key", "success_curve"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    x, y = digits_tensors(600)
    return digits_mlp(x, y).requires_grad_(False), x, y


@pytest.fixture(autouse=True)
def small_gan(monkeypatch):
    """Small, fast GAN settings; records every training."""
    gan_mod.clear_memo()
    trainings = []
    real_train = acquire_mod.train_generator

    def small(cfg, train_x):
        return dataclasses.replace(
            REAL_DEFAULT(cfg, train_x),
            max_steps=80,
            batch_size=32,
            eval_every=10,
            holdout_fraction=0.2,
            patience=100,
            width=8,
            n_res=1,
        )

    def recording(*args, **kwargs):
        res = real_train(*args, **kwargs)
        trainings.append(res)
        return res

    monkeypatch.setattr(gan_mod, "default_gan_config", small)
    monkeypatch.setattr(acquire_mod, "train_generator", recording)
    yield trainings
    gan_mod.clear_memo()


def _ctx(x, y, cache_dir=None, **kw):
    return AttackContext(device="cpu", train_x=x, train_y=y, runtime=Runtime(cache_dir, **kw))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_the_cascade_is_bounded_beats_its_start_and_counts_every_pass(problem, small_gan):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS, batch_size=64)
    ctx = _ctx(x, y)
    x_adv, count = counted(gan_mod.gan_attack, model, x, y, cfg, ctx)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= EPS + 1e-6
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    facts, cascade = ctx.facts["training"], ctx.facts["cascade"]
    assert FACT_KEYS <= set(facts) and facts["mode"] == "cold" and len(small_gan) == 1
    assert facts["reuse"]["decision"] == "trained" and facts["same_model"]
    # the gradient stages only add: the result is at least as strong as the generator alone
    robust = _accuracy(model, x_adv, y)
    assert robust <= cascade["generator_alone_accuracy"]
    assert robust < _accuracy(model, x, y) - 0.3
    # every model pass is either the training's or one the per-sample tally holds
    passes = ctx.facts["cascade_passes"]
    fwd, bwd, _ = ctx.facts["training_passes"]
    assert count.forward - fwd == int(passes[:, 0].sum()) and count.backward - bwd == int(
        passes[:, 1].sum()
    )
    stages = cascade["stages"]
    assert set(stages) == {"start", "untargeted", "targeted"}
    assert (
        stages["start"]["forward_per_sample"] == 1 and stages["start"]["backward_per_sample"] == 0
    )
    assert sum(s["forward_per_sample"] for s in stages.values()) == pytest.approx(
        int(passes[:, 0].sum()) / x.shape[0]
    )


def test_a_sample_leaves_at_its_first_success(problem, small_gan):
    model, x, y = problem
    xs, ys = digits_tensors(1400)
    xs, ys = xs[1000:], ys[1000:]  # samples the model never saw: some it gets wrong
    ctx = _ctx(x, y)
    gan_mod.gan_attack(model, xs, ys, AttackConfig(eps=0.1), ctx)
    passes = ctx.facts["cascade_passes"]
    with torch.no_grad():
        wrong = model(xs).argmax(1) != ys
        gen, _ = gan_mod.obtain_generator(model, AttackConfig(eps=0.1), _ctx(x, y))
        by_generator = model(gen(xs, 0.1)).argmax(1) != ys
    # fooled by the generator: one forward, no gradient; wrong already (and not fooled by
    # it): one more forward and backward, at the clean input; the others: more
    assert int(by_generator.sum()) > 0 and int((wrong & ~by_generator).sum()) > 0
    assert bool((passes[by_generator] == torch.tensor([1, 0])).all())
    assert bool((passes[wrong & ~by_generator] == torch.tensor([2, 1])).all())
    assert bool((passes[~wrong & ~by_generator, 1] > 1).all())


def test_one_generator_serves_every_eps_of_a_sweep(problem, small_gan):
    model, x, y = problem
    keys = {
        gan_mod.obtain_generator(model, AttackConfig(eps=eps), _ctx(x, y))[1]["key"]
        for eps in (0.05, 0.1, 0.2)
    }
    assert len(keys) == 1 and len(small_gan) == 1


def test_cache_hit_returns_identical_weights_and_trains_nothing(problem, small_gan, tmp_path):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    gen1, facts1 = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    assert facts1["mode"] == "cold" and len(small_gan) == 1
    gan_mod.clear_memo()  # a new process: only the disk cache remains
    gen2, facts2 = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    # A cached generator reports the facts of its training, not zeros.
    assert facts2["mode"] == "cached" and facts2["trained_mode"] == "cold"
    assert facts2["steps"] == facts1["steps"] > 0 and facts2["key"] == facts1["key"]
    assert len(small_gan) == 1 and gen2 is not gen1 and _same_weights(gen1, gen2)
    assert facts2["success_curve"] == facts1["success_curve"]
    from pytest_advrobust.cache import GanCache

    assert [e["kind"] for e in GanCache(tmp_path).events()] == ["train", "hit"]


def test_retrain_warm_starts_from_the_entry_it_replaces(problem, small_gan, tmp_path):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    _, cold = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    gan_mod.clear_memo()
    _, facts = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path, retrain=True))
    assert facts["mode"] == "warm" and facts["reason"] == "--advrobust-retrain"
    assert 0 < facts["steps"] <= facts["budget"] < cold["budget"] and len(small_gan) == 2
    assert facts["key"] == cold["key"]
    gan_mod.clear_memo()
    _, again = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    assert again["mode"] == "cached" and again["trained_mode"] == "warm"


def test_without_cache_dir_generators_are_memoised_in_process(problem, small_gan):
    model, x, y = problem
    gen1, _ = gan_mod.obtain_generator(model, AttackConfig(eps=EPS), _ctx(x, y))
    gen2, facts = gan_mod.obtain_generator(model, AttackConfig(eps=EPS), _ctx(x, y))
    assert gen2 is gen1 and facts["mode"] == "cached" and len(small_gan) == 1
    gan_mod.obtain_generator(model, AttackConfig(eps=EPS, norm="l2"), _ctx(x, y))
    assert len(small_gan) == 2  # another norm, another generator


def test_a_fine_tuned_model_reuses_the_generator_without_training(problem, small_gan, tmp_path):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    gan_mod.gan_attack(model, x, y, cfg, _ctx(x, y, tmp_path))
    tuned = digits_mlp(x, y, steps=170).requires_grad_(False)  # the next commit's model
    gan_mod.clear_memo()
    ctx = _ctx(x, y, tmp_path)
    x_adv = gan_mod.gan_attack(tuned, x, y, cfg, ctx)
    facts = ctx.facts["training"]
    assert len(small_gan) == 1  # no training at all
    assert facts["mode"] == "cached" and not facts["same_model"]
    assert facts["reuse"]["decision"] == "kept"
    assert "trained against other weights" in facts["reuse"]["reason"]
    assert facts["reuse"]["p_value"] >= gan_mod.RETRAIN_ALPHA
    assert _accuracy(tuned, x_adv, y) <= ctx.facts["cascade"]["generator_alone_accuracy"]


class HalfLinear(nn.Module):
    """A linear classifier of two-channel 8x8 inputs that reads one channel only."""

    def __init__(self, channel: int):
        super().__init__()
        mask = torch.zeros(2, 8, 8)
        mask[channel] = 1
        self.register_buffer("mask", mask)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc((x * self.mask).flatten(1))


def _half_linear(channel, x, y):
    torch.manual_seed(channel)
    model = HalfLinear(channel)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def test_an_unrelated_model_of_the_family_triggers_the_retrain_rule(small_gan, tmp_path):
    x1, y = digits_tensors(600)
    x = torch.cat([x1, x1], dim=1)  # both channels carry the digit
    first, other = _half_linear(0, x, y), _half_linear(1, x, y)
    cfg = AttackConfig(eps=EPS)
    gan_mod.gan_attack(first, x, y, cfg, _ctx(x, y, tmp_path))
    gan_mod.clear_memo()
    # same class, layout and data: the same cache entry, trained against the other channel
    ctx = _ctx(x, y, tmp_path)
    gan_mod.gan_attack(other, x, y, cfg, ctx)
    reuse = ctx.facts["training"]["reuse"]
    assert reuse["decision"] == "retrained" and len(small_gan) == 2
    assert reuse["success"] < reuse["expected"] - gan_mod.RETRAIN_DROP
    assert reuse["p_value"] < gan_mod.RETRAIN_ALPHA and "one-shot success" in reuse["reason"]
    assert reuse["success_after"] > reuse["success"]
    assert ctx.facts["training"]["mode"] == "warm" and ctx.facts["training_passes"][0] > 0
    gan_mod.clear_memo()  # the retrained generator replaced the entry: the next run keeps it
    again = _ctx(x, y, tmp_path)
    gan_mod.gan_attack(other, x, y, cfg, again)
    assert again.facts["training"]["reuse"]["decision"] == "kept" and len(small_gan) == 2


def test_damaged_entry_is_retrained_with_a_warning(problem, small_gan, tmp_path):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    _, facts = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    path = tmp_path / f"{facts['key']}.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    gan_mod.clear_memo()
    warnings = []
    _, again = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path, warn=warnings.append))
    assert again["mode"] == "cold" and again["steps"] > 0 and len(warnings) == 1


def test_plain_callable_model_and_training_on_the_batch(problem, small_gan):
    model, x, y = problem

    def predict(t):
        return model(t)

    ctx = AttackContext(device="cpu")
    x_adv = gan_mod.gan_attack(predict, x, y, AttackConfig(eps=EPS, bounds=None), ctx)
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= EPS + 1e-6
    assert ctx.facts["training"]["mode"] == "cold" and ctx.train_x is None


def test_refine_runs_pgd_from_the_cascade_result(problem, small_gan, monkeypatch):
    import pytest_advrobust.attacks.gradient as gradient

    model, x, y = problem
    seen = {}
    real = gradient.pgd_from

    def spy(model_, x_, y_, x_start, cfg_, ctx_=None, **kw):
        seen["start"] = x_start.clone()
        return real(model_, x_, y_, x_start, cfg_, ctx_, **kw)

    monkeypatch.setattr(gradient, "pgd_from", spy)
    plain = gan_mod.gan_attack(model, x, y, AttackConfig(eps=EPS), _ctx(x, y))
    x_adv = gan_mod.gan_attack(model, x, y, AttackConfig(eps=EPS, refine=5), _ctx(x, y))
    assert torch.equal(seen["start"], plain)
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= EPS + 1e-6


def test_l2_flat_features(small_gan):
    x, y = digits_tensors(600)
    xf = x.view(x.shape[0], -1)
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), digits_mlp(x, y)).requires_grad_(False)
    x_adv = gan_mod.gan_attack(
        model, xf, y, AttackConfig(eps=1.0, norm="l2", bounds=None), _ctx(xf, y)
    )
    assert float(perturbation_norms(xf, x_adv, "l2").max()) <= 1.0 * (1 + 1e-5)


def test_default_settings_are_steps_and_do_not_depend_on_eps_or_the_data_size():
    x = torch.rand(200, 1, 8, 8)
    big = torch.rand(60000, 1, 8, 8)
    cfg = AttackConfig(eps=0.1, seed=3)
    small, large = REAL_DEFAULT(cfg, x), REAL_DEFAULT(cfg, big)
    other_eps = REAL_DEFAULT(dataclasses.replace(cfg, eps=0.03), x)
    for g in (small, large):
        assert isinstance(g, GanConfig) and g.norm == "linf" and g.seed == 3
        assert g.gan_weight == 0 and g.max_seconds >= 3600 and g.eps_range == (1 / 128, 0.5)
    assert small.max_steps == large.max_steps == 600 and small.batch_size <= large.batch_size
    assert other_eps == small  # one generator for every eps
    l2 = REAL_DEFAULT(AttackConfig(eps=0.5, norm="l2", bounds=None), x * 4)
    assert l2.eps_range[0] < 0.5 < l2.eps_range[1] and l2.bounds is None
    tiny = REAL_DEFAULT(dataclasses.replace(cfg, gan_steps=2), big)
    assert tiny.max_steps == 2


def test_missing_training_data_is_an_error(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="train_x"):
        gan_mod.obtain_generator(model, AttackConfig(eps=EPS), AttackContext(device="cpu"))


def test_progress_goes_to_ctx_progress_unless_quiet(problem, small_gan):
    model, x, y = problem
    lines = []
    gan_mod.obtain_generator(model, AttackConfig(eps=EPS), _ctx(x, y, progress=lines.append))
    assert 2 <= len(lines) <= 12 and all(line.startswith("advrobust gan:") for line in lines)
    gan_mod.clear_memo()
    quiet = []
    gan_mod.obtain_generator(
        model, AttackConfig(eps=EPS), _ctx(x, y, progress=quiet.append, quiet=True)
    )
    assert quiet == []


def test_the_gan_attack_runs_on_a_float64_model(problem, small_gan):
    model, x, y = problem
    model64 = digits_mlp(x, y).double().requires_grad_(False)
    x64 = x.double()
    x_adv = gan_mod.gan_attack(model64, x64, y, AttackConfig(eps=EPS), _ctx(x64, y))
    assert x_adv.dtype == torch.float64
    assert float(perturbation_norms(x64, x_adv, "linf").max()) <= EPS + 1e-12
