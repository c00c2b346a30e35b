"""The generator's per-input memory and the fitting that fills it."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_attacks import exact_linf_robust, linear_problem

from pytest_advrobust.gan.networks import build_generator, generator_from_arch
from pytest_advrobust.gan.transductive import fit_to_inputs


def _gen(shape=(1, 6, 6), eps=0.1, norm="linf", bounds=(0.0, 1.0), grad_input=False):
    torch.manual_seed(0)
    return build_generator(shape, eps, norm, bounds, width=4, n_res=1, grad_input=grad_input).eval()


def test_remembered_offsets_apply_to_exactly_the_remembered_inputs():
    gen = _gen()
    x = torch.rand(6, 1, 6, 6)
    with torch.no_grad():
        before = gen(x)
        gen.remember(x[:3], torch.full_like(x[:3], 4.0))
        after = gen(x)
        nudged = x.clone()
        nudged[0, 0, 0, 0] = torch.nextafter(nudged[0, 0, 0, 0], torch.tensor(2.0))
        other = gen(nudged[:1])
    changed = (after - before).flatten(1).abs().amax(1) > 0
    assert changed.tolist() == [True, True, True, False, False, False]
    # one bit off is another input: the network's output alone, not the remembered one
    assert torch.allclose(other, before[:1], atol=1e-5)
    assert not torch.allclose(other, after[:1], atol=1e-3)


def test_remember_names_the_shapes_it_needs():
    gen = _gen()
    with pytest.raises(ValueError, match="must have the shape of x"):
        gen.remember(torch.rand(2, 1, 6, 6), torch.rand(3, 1, 6, 6))


@settings(max_examples=40, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(1e-3, 1.5),
    bounded=st.booleans(),
    scale=st.floats(0.0, 1e4),
    seed=st.integers(0, 2**16),
)
def test_every_output_stays_in_the_ball_and_the_bounds_whatever_the_offsets(
    norm, eps, bounded, scale, seed
):
    g = torch.Generator().manual_seed(seed)
    bounds = (0.0, 1.0) if bounded else None
    gen = _gen(eps=eps, norm=norm, bounds=bounds)
    x = torch.rand(5, 1, 6, 6, generator=g)
    x[:, :, :2] = 0.0  # coordinates at the lower bound
    x[:, :, -1] = 1.0  # and at the upper one
    gen.remember(x, scale * torch.randn(x.shape, generator=g))
    with torch.no_grad():
        out = gen(x)
    d = (out - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-6) + 1e-7).all())
    if bounded:
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_a_coordinate_at_a_bound_still_gets_a_gradient_inwards():
    gen = _gen()
    x = torch.zeros(1, 1, 6, 6)  # a black image: every coordinate at the lower bound
    offset = torch.full_like(x, -3.0).requires_grad_(True)  # raw pointing outwards
    gen(x, None, offset).sum().backward()
    # clipping x + eps * tanh(raw) would give 0 here, and the coordinate could never come back
    assert bool((offset.grad > 0).all())


def test_the_memory_survives_a_safetensors_round_trip(tmp_path):
    from pytest_advrobust.cache import GanCache

    gen = _gen(grad_input=True)
    x = torch.rand(4, 1, 6, 6)
    direction = torch.randn_like(x).sign()
    gen.remember(x, torch.randn_like(x))
    cache = GanCache(tmp_path)
    state = {k: v.detach().contiguous() for k, v in gen.state_dict().items()}
    cache.store("k" * 64, state, {"arch": gen.arch})
    loaded, _meta = cache.load("k" * 64)
    twin = generator_from_arch(gen.arch)
    twin.load_state_dict(loaded, strict=True)
    with torch.no_grad():
        assert torch.equal(twin.eval()(x, direction), gen(x, direction))
    assert twin.memory.shape == (4, 1, 6, 6)


def test_fitting_with_the_memory_finds_the_linear_models_exact_robust_accuracy(one_torch_thread):
    model64, w, b, x, y = linear_problem(k=3, d=12, n=200, seed=1)
    x, w32, b32 = x.float(), w.float(), b.float()

    def model(t):
        return t @ w32.T + b32

    eps = 0.2
    robust = exact_linf_robust(w, b, x.double(), y, eps)
    correct = model(x).argmax(1) == y
    assert 0 < int(robust.sum()) < int(correct.sum())  # the oracle is not trivial
    found = {}
    for memory_lr in (0.0, 0.1):
        gen = _gen(shape=(12,), eps=eps, bounds=None)
        res = fit_to_inputs(
            gen, model, x, y, max_steps=150, patience=150, lr=3e-3, kappa=0.5, memory_lr=memory_lr
        )
        with torch.no_grad():
            held = (model(gen(x)).argmax(1) == y) & correct
        assert bool((held | ~robust).all())  # a provably robust sample is never fooled
        assert math.isclose(1 - int(held.sum()) / int(correct.sum()), res.success)
        found[memory_lr] = int(held.sum())
        if memory_lr:
            # every sample that can be fooled with a little room to spare (at 0.95 eps) is
            clearly_fragile = correct & ~exact_linf_robust(w, b, x.double(), y, 0.95 * eps)
            assert not bool((held & clearly_fragile).any())
    assert found[0.1] == int(robust.sum())  # exactly the closed form's robust accuracy
    assert found[0.0] > found[0.1] + 2  # the weights alone do not get there


def test_samples_fooled_by_an_earlier_head_are_left_alone():
    model64, w, b, x, y = linear_problem(k=3, d=12, n=50, seed=2)
    x = x.float()

    def model(t):
        return t @ w.float().T + b.float()

    gen = _gen(shape=(12,), eps=0.2, bounds=None)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    res = fit_to_inputs(
        gen,
        model,
        x,
        y,
        max_steps=20,
        patience=20,
        lr=3e-3,
        kappa=0.5,
        done=torch.ones(50, dtype=torch.bool),
    )
    assert res.success == 1.0 and res.steps == 0
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
