"""Generators outside an evaluation: the ``gan_generator`` fixture and ``--advrobust-warm``."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List

from .model import borrowed
from .preparation import prepare, with_preprocessing
from .run_tools import RunTools
from .settings import RobustSettings

__all__ = ["generator_for", "warm_generators"]


@contextlib.contextmanager
def _attack_inputs(model, split, settings: RobustSettings, device):
    """``(net, x, x_work, y)`` as the evaluation hands them to the ``gan`` attack: the model with
    its preprocessing, checked for an input gradient; float32 copies of low-precision data."""
    from .gradcheck import require_input_gradient
    from .precision import working_copy

    with borrowed(model, device) as m:
        net = with_preprocessing(m, settings, device)
        x, y = split.x.to(device), split.y.to(device)
        require_input_gradient(net, x, y, ("gan",), settings.model)
        net, x_work = working_copy(net, x)
        yield net, x, x_work, y


def _train_x(split, x, x_work):
    """The GAN's training samples in the attack's working dtype."""
    if split.train_x is None or x_work is x:
        return split.train_x
    return split.train_x.float()


def _obtain(model, split, settings: RobustSettings, eps: float, device, tools: RunTools):
    from .attacks.gan import obtain_generator

    with _attack_inputs(model, split, settings, device) as (net, x, x_work, _):
        ctx = tools.attack_context(device, _train_x(split, x, x_work), split.train_y)
        gen, facts = obtain_generator(net, settings.attack_config(eps), ctx)
    # The generator takes the model's input gradient: gen(x) computes it with the user's model.
    return gen.bind(net), facts


def generator_for(
    model: Any, data: Any, settings: RobustSettings, *, train_data: Any = None, **tools: Any
) -> Any:
    """The ``gan`` attack's generators for the settings' headline eps, as one module.

    In one process: the pair fitted to the evaluation samples
    (:class:`~.attacks.gan.FittedPair`), the very generators the test's ``gan``
    attack uses (trained, or loaded from the cache). Under torchrun: the first
    stage's generator, which the ranks train together. ``tools``: the keyword
    arguments of :class:`~.run_tools.RunTools`."""
    from . import distributed

    kit = RunTools(**tools)
    device, split = prepare(model, data, settings, train_data, store=kit.store)
    how = _obtain if distributed.is_distributed() else _pair
    gen, facts = how(model, split, settings, settings.main_eps, device, kit)
    gen.training_facts = facts
    return gen.eval()


def _pair(model, split, settings: RobustSettings, eps: float, device, tools: RunTools):
    from .attacks.gan import FittedPair

    heads, facts, net = _fitted(model, split, settings, eps, device, tools)
    return FittedPair(heads, net, settings.attack_config(eps)), facts


def warm_generators(
    model: Any, data: Any, settings: RobustSettings, *, train_data: Any = None, **tools: Any
) -> List[Dict[str, Any]]:
    """Obtain every generator a test needs (one per eps when it uses ``gan``).

    ``tools``: the keyword arguments of :class:`~.run_tools.RunTools`."""
    if "generated" in settings.attacks:
        from .generated.fixture import warm_sample_generator

        return warm_sample_generator(model, data, settings, train_data=train_data, **tools)
    if "gan" not in settings.attacks:
        return []
    from . import distributed

    kit = RunTools(**tools)
    device, split = prepare(model, data, settings, train_data, store=kit.store)
    # Under torchrun the ranks train the first stage together (DDP); the fitting to the
    # evaluation samples then happens in the test run, once, under the cache lock.
    obtain = _first_stage if distributed.is_distributed() else _fit_heads
    return [dict(obtain(model, split, settings, eps, device, kit), eps=eps) for eps in settings.eps]


def _first_stage(model, split, settings: RobustSettings, eps: float, device, tools: RunTools):
    return _obtain(model, split, settings, eps, device, tools)[1]


def _fit_heads(model, split, settings: RobustSettings, eps: float, device, tools: RunTools):
    """What the ``gan`` attack obtains for this evaluation (both generators, trained and
    fitted to the evaluation samples), so that the test run that follows loads them."""
    return _fitted(model, split, settings, eps, device, tools)[1]


def _fitted(model, split, settings: RobustSettings, eps: float, device, tools: RunTools):
    """``(heads, facts, net)``: the ``gan`` attack's fitted pair for this evaluation."""
    from .attacks.gan_fit import fitted_heads

    with _attack_inputs(model, split, settings, device) as (net, x, x_work, y):
        train_x, train_y = _train_x(split, x, x_work), split.train_y
        if train_x is None:  # as gan_attack: without training samples it trains on x itself
            train_x, train_y = x_work.detach().cpu(), y.detach().cpu()
        ctx = tools.attack_context(device, train_x, train_y)
        heads, facts = fitted_heads(net, x_work, y, settings.attack_config(eps), ctx)
    return heads, facts, net
