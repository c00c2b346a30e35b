"""The ``gan`` attack: cache hits, warm starts, memoisation, refinement, facts."""

import copy
import dataclasses

import pytest
import torch
import torch.nn as nn
from _support import digits_mlp, digits_tensors

import pytest_advrobust.attacks.gan as gan_mod
import pytest_advrobust.gan.acquire as acquire_mod
from pytest_advrobust.attacks.base import AttackConfig, AttackContext, perturbation_norms
from pytest_advrobust.gan.train import GanConfig

EPS = 0.2
REAL_DEFAULT = gan_mod.default_gan_config
FACT_KEYS = {"mode", "steps", "seconds", "device", "holdout_success", "key"}
COST_KEYS = {"forward_per_sample", "backward_per_sample", "seconds"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digits(n=600):
    return digits_tensors(n)


def _classifier(x, y, steps=150):
    return digits_mlp(x, y, steps=steps).requires_grad_(False)


@pytest.fixture(scope="module")
def problem():
    x, y = _digits()
    return _classifier(x, y), x, y


@pytest.fixture(autouse=True)
def small_gan(monkeypatch):
    """Small, fast GAN settings; counts the steps every training takes."""
    gan_mod.clear_memo()
    trainings = []
    real_default = gan_mod.default_gan_config
    real_train = acquire_mod.train_generator

    def small(cfg, n_train):
        return dataclasses.replace(
            real_default(cfg, n_train),
            max_steps=120,
            batch_size=32,
            lr=3e-3,
            eval_every=5,
            holdout_fraction=0.2,
            patience=100,
            width=8,
            n_res=1,
            target_success=0.75,
            fit_steps=20,
            fit_patience=5,
            grad_input=False,
        )

    def counting(*args, **kwargs):
        res = real_train(*args, **kwargs)
        trainings.append(res)
        return res

    monkeypatch.setattr(gan_mod, "default_gan_config", small)
    monkeypatch.setattr(acquire_mod, "train_generator", counting)
    yield trainings
    gan_mod.clear_memo()


def _ctx(x, y, cache_dir=None, **kw):
    return AttackContext(device="cpu", train_x=x, train_y=y, cache_dir=cache_dir, **kw)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_attack_output_is_bounded_and_fools_the_model(problem, small_gan):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS, batch_size=64)
    ctx = _ctx(x, y)
    x_adv = gan_mod.gan_attack(model, x, y, cfg, ctx)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= EPS + 1e-6
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    acc = float((model(x_adv).argmax(1) == y).float().mean())
    assert acc <= 0.3
    facts = ctx.facts["training"]
    assert FACT_KEYS <= set(facts) and facts["mode"] == "cold" and facts["steps"] > 0
    assert facts["steps"] == facts["train_steps"] + facts["fit_steps"] and facts["fit_steps"] > 0
    assert set(facts["cost"]) == COST_KEYS and facts["cost"]["backward_per_sample"] > 0
    assert facts["cost"]["forward_per_sample"] > facts["cost"]["backward_per_sample"]
    # two generators (one fed the input gradient's direction), each trained once
    assert facts["device"] == "cpu" and len(small_gan) == 2 and not facts["cut_short"]
    assert len(facts["heads"]) == 2 and facts["heads"][1]["train_steps"] > 0
    assert facts["eval_forward_per_sample"] == 3 and facts["eval_backward_per_sample"] == 1


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
    assert len(small_gan) == 1  # no training at all
    assert gen2 is not gen1 and _same_weights(gen1, gen2)
    assert facts2["holdout_success"] == pytest.approx(facts1["holdout_success"])
    from pytest_advrobust.cache import GanCache

    kinds = [e["kind"] for e in GanCache(tmp_path).events()]
    assert kinds == ["train", "hit"]


def test_retrain_forces_training(problem, small_gan, tmp_path):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    gan_mod.clear_memo()
    _, facts = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path, retrain=True))
    assert facts["mode"] == "cold" and facts["steps"] > 0 and len(small_gan) == 2


def test_without_cache_dir_generators_are_memoised_in_process(problem, small_gan):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    gen1, _ = gan_mod.obtain_generator(model, cfg, _ctx(x, y))
    gen2, facts = gan_mod.obtain_generator(model, cfg, _ctx(x, y))
    assert gen2 is gen1 and facts["mode"] == "cached" and len(small_gan) == 1
    assert facts["trained_mode"] == "cold" and facts["steps"] == small_gan[0].steps
    gan_mod.obtain_generator(model, dataclasses.replace(cfg, eps=0.1), _ctx(x, y))
    assert len(small_gan) == 2  # other settings, other generator


def test_changed_model_warm_starts_from_the_family_and_needs_fewer_steps(
    problem, small_gan, tmp_path
):
    model, x, y = problem
    cfg = AttackConfig(eps=EPS)
    _, cold = gan_mod.obtain_generator(model, cfg, _ctx(x, y, tmp_path))
    changed = _classifier(x, y, steps=170)
    _, warm = gan_mod.obtain_generator(changed, cfg, _ctx(x, y, tmp_path))
    assert cold["mode"] == "cold" and warm["mode"] == "warm" and warm["key"] != cold["key"]
    assert small_gan[0].stop_reason == "target" and warm["holdout_success"] >= 0.75
    assert warm["steps"] < cold["steps"]
    from pytest_advrobust.cache import GanCache

    assert [e["kind"] for e in GanCache(tmp_path).events()] == ["train", "warm"]


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
    assert again["mode"] in ("cold", "warm") and again["steps"] > 0 and len(warnings) == 1


def test_plain_callable_model_and_training_on_the_batch(problem, small_gan):
    model, x, y = problem

    def predict(t):
        return model(t)

    ctx = AttackContext(device="cpu")
    x_adv = gan_mod.gan_attack(predict, x, y, AttackConfig(eps=EPS, bounds=None), ctx)
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= EPS + 1e-6
    assert ctx.facts["training"]["mode"] == "cold" and ctx.train_x is None


def test_refine_runs_pgd_from_the_generator_output(problem, small_gan, monkeypatch):
    import pytest_advrobust.attacks.gradient as gradient

    model, x, y = problem
    seen = {}
    real = gradient.pgd_from

    def spy(model_, x_, y_, x_start, cfg_, ctx_=None, **kw):
        seen["start"] = x_start.clone()
        return real(model_, x_, y_, x_start, cfg_, ctx_, **kw)

    monkeypatch.setattr(gradient, "pgd_from", spy)
    cfg = AttackConfig(eps=EPS, refine=5)
    x_adv = gan_mod.gan_attack(model, x, y, cfg, _ctx(x, y))
    from pytest_advrobust.attacks.gan_fit import fitted_heads

    heads, _ = fitted_heads(model, x, y, cfg, _ctx(x, y))
    start = torch.cat(
        [
            gan_mod._best_of(model, heads, x[s : s + 256], y[s : s + 256], cfg)
            for s in range(0, x.shape[0], 256)
        ]
    )
    assert torch.allclose(seen["start"], start, atol=1e-6)
    assert float(perturbation_norms(x, x_adv, "linf").max()) <= EPS + 1e-6


def test_l2_flat_features(small_gan):
    x, y = _digits()
    xf = x.view(x.shape[0], -1)
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), _classifier(x, y))
    x_adv = gan_mod.gan_attack(
        model, xf, y, AttackConfig(eps=1.0, norm="l2", bounds=None), _ctx(xf, y)
    )
    assert float(perturbation_norms(xf, x_adv, "l2").max()) <= 1.0 * (1 + 1e-5)


def test_default_budget_is_in_steps_not_set_by_the_data_size():
    cfg = AttackConfig(eps=0.1, norm="l2", bounds=None, seed=3)
    small, large = REAL_DEFAULT(cfg, 200), REAL_DEFAULT(cfg, 60000)
    for g in (small, large):
        assert (
            isinstance(g, GanConfig)
            and g.eps == 0.1
            and g.norm == "l2"
            and g.bounds is None
            and g.seed == 3
        )
        assert g.gan_weight == 0 and g.fit_steps == 200 and g.max_seconds >= 3600
    assert small.max_steps == large.max_steps == 300 and small.batch_size <= large.batch_size
    tiny = REAL_DEFAULT(dataclasses.replace(cfg, gan_steps=2), 60000)
    assert tiny.max_steps == 2 and tiny.fit_steps == 2


def test_missing_training_data_is_an_error(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="train_x"):
        gan_mod.obtain_generator(model, AttackConfig(eps=EPS), AttackContext(device="cpu"))


def test_progress_goes_to_ctx_progress_unless_quiet(problem, small_gan):
    model, x, y = problem
    lines = []
    gan_mod.obtain_generator(model, AttackConfig(eps=EPS), _ctx(x, y, progress=lines.append))
    assert 2 <= len(lines) <= 10 and all(line.startswith("advrobust gan:") for line in lines)
    gan_mod.clear_memo()
    quiet = []
    gan_mod.obtain_generator(
        model, AttackConfig(eps=EPS), _ctx(x, y, progress=quiet.append, quiet=True)
    )
    assert quiet == []


def test_the_gan_attack_runs_on_a_float64_model(problem):
    model, x, y = problem
    model64 = copy.deepcopy(model).double()
    x64 = x.double()
    cfg = AttackConfig(eps=EPS)
    x_adv = gan_mod.gan_attack(model64, x64[:64], y[:64], cfg, _ctx(x64[64:], y[64:]))
    assert x_adv.dtype == torch.float64
    assert float((x_adv - x64[:64]).abs().max()) <= EPS + 1e-9
    with torch.no_grad():
        assert float((model64(x_adv).argmax(1) == y[:64]).float().mean()) < 1.0
