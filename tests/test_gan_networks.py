"""Generator/discriminator networks: shapes, bound by construction for every eps, the eps
input, validation, reload."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_advrobust.attacks.base import perturbation_norms
from pytest_advrobust.gan.networks import build_discriminator, build_generator, generator_from_arch

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")

image_shapes = st.tuples(st.integers(1, 3), st.integers(8, 20), st.integers(8, 20))
flat_shapes = st.tuples(st.integers(1, 40))


def _scramble(gen, seed, scale):
    """Give the generator arbitrary (large) weights so that the raw output saturates."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gen.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return gen


def _check_bound(x, x_adv, eps, norm, bounds):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert float(perturbation_norms(x, x_adv, norm).max()) <= eps * (1 + TOL) + TOL
    if bounds is not None:
        assert float(x_adv.min()) >= bounds[0] and float(x_adv.max()) <= bounds[1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.one_of(image_shapes, flat_shapes),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.001, 2.0),
    bounded=st.booleans(),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.01, 1.0, 30.0]),
    train_mode=st.booleans(),
)
def test_every_output_is_inside_the_bound(shape, norm, eps, bounded, seed, scale, train_mode):
    bounds = (0.0, 1.0) if bounded else None
    torch.manual_seed(seed)
    gen = _scramble(build_generator(shape, norm, bounds, (0.01, 0.5)), seed, scale)
    gen.train(train_mode)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((3, *shape), generator=g)
    if not bounded:
        x = (x - 0.5) * 10
    with torch.no_grad():
        x_adv = gen(x, eps)
        per_sample = torch.tensor([eps, eps / 7, eps * 3])
        x_each = gen(x, per_sample)
    _check_bound(x, x_adv, eps, norm, bounds)
    for i in range(3):  # one budget per sample: each sample keeps its own
        _check_bound(x[i : i + 1], x_each[i : i + 1], float(per_sample[i]), norm, bounds)


def test_eps_is_an_input_of_the_network_and_a_default_can_be_set():
    torch.manual_seed(0)
    gen = _scramble(build_generator((1, 8, 8), "linf", (0.0, 1.0), (0.02, 0.4)), 1, 1.0).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        small, large = gen.perturbation(x, 0.05) / 0.05, gen.perturbation(x, 0.3) / 0.3
    assert not torch.allclose(small, large, atol=1e-3)  # the direction depends on eps
    with pytest.raises(ValueError, match="needs eps"):
        gen(x)
    gen.eps = 0.05
    assert torch.equal(gen(x), gen(x, 0.05))
    with pytest.raises(ValueError, match="positive"):
        gen(x, -0.1)


@pytest.mark.parametrize(
    "shape", [(1, 8, 8), (3, 9, 13), (1, 28, 28), (2, 31, 17), (3, 32, 32), (1, 45, 70)]
)
def test_odd_image_sizes_come_back_exactly(shape):
    gen = build_generator(shape, "linf", (0.0, 1.0))
    x = torch.rand(2, *shape)
    assert gen(x, 0.1).shape == x.shape
    assert build_discriminator(shape)(x).shape == (2,)


def test_flat_features_use_an_mlp_and_keep_dtype():
    gen = build_generator((7,), "l2", None, (0.1, 2.0))
    assert gen.arch["kind"] == "mlp"
    x = torch.randn(5, 7, dtype=torch.float64)
    with torch.no_grad():
        out = gen.eval()(x, 0.5)
    assert out.dtype == torch.float64
    _check_bound(x, out, 0.5, "l2", None)
    assert build_discriminator((7,))(x.float()).shape == (5,)


def test_arch_is_json_and_rebuilds_an_identically_bounded_generator():
    gen = build_generator((1, 12, 12), "linf", (0.0, 1.0), (0.01, 0.3), width=8, n_res=1)
    arch = json.loads(json.dumps(gen.arch))
    assert arch["kind"] == "unet" and arch["width"] == 8 and arch["sample_shape"] == [1, 12, 12]
    twin = generator_from_arch(arch)
    twin.load_state_dict(gen.state_dict())
    assert twin.eps_range.tolist() == pytest.approx([0.01, 0.3]) and twin.norm == "linf"
    x = torch.rand(4, 1, 12, 12)
    assert torch.equal(gen.eval()(x, 0.25), twin.eval()(x, 0.25))
    assert "eps_range" in gen.state_dict() and "bounds" in gen.state_dict()


def test_wrong_input_shape_is_rejected():
    gen = build_generator((1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        gen(torch.rand(2, 1, 9, 8), 0.1)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(sample_shape=(1, 2, 8)), "sample_shape"),
        (dict(sample_shape=(1, 8)), "sample_shape"),
        (dict(sample_shape="abc"), "sample_shape"),
        (dict(sample_shape=(4,), eps_range=(0.0, 0.1)), "eps_range"),
        (dict(sample_shape=(4,), eps_range=(0.2, 0.1)), "eps_range"),
        (dict(sample_shape=(4,), eps_range=(float("nan"), 0.1)), "eps_range"),
        (dict(sample_shape=(4,), norm="l1"), "norm"),
        (dict(sample_shape=(4,), bounds=(1.0, 0.0)), "bounds"),
        (dict(sample_shape=(4,), width=1), "width"),
        (dict(sample_shape=(4,), n_res=-1), "n_res"),
    ],
)
def test_constructor_arguments_are_validated(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_generator(**kwargs)


def test_discriminator_validates_shape():
    with pytest.raises(ValueError, match="sample_shape"):
        build_discriminator((0, 8, 8))
