"""Generators outside an evaluation: the ``gan_generator`` fixture and ``--advrobust-warm``."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List

from ..attack_table import keeps_networks, makes_samples
from ..inputs.model import borrowed
from ..inputs.prepare import prepare, with_preprocessing
from ..settings.robust import RobustSettings
from .plan import attack_config
from .run_tools import RunTools

__all__ = ["generator_for", "warm_generators"]


@contextlib.contextmanager
def _attack_inputs(model, split, settings: RobustSettings, device):
    """``(net, x, x_work, y)`` as the evaluation hands them to the ``gan`` attack: the model with
    its preprocessing, checked for an input gradient; float32 copies of low-precision data."""
    from ..inputs.gradcheck import require_input_gradient
    from ..inputs.precision import working_copy

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
    from ..attacks.gan import obtain_generator

    with _attack_inputs(model, split, settings, device) as (net, x, x_work, y):
        train_x, train_y = _train_x(split, x, x_work), split.train_y
        if train_x is None:  # as gan_attack: without training samples it trains on x itself
            train_x, train_y = x_work.detach().cpu(), y.detach().cpu()
        ctx = tools.attack_context(device, train_x, train_y)
        return obtain_generator(net, attack_config(settings, eps), ctx)


def generator_for(
    model: Any, data: Any, settings: RobustSettings, *, train_data: Any = None, **tools: Any
) -> Any:
    """The ``gan`` attack's generator for this model family, set to the headline eps.

    An ``nn.Module`` in eval mode (:class:`~pytest_advrobust.gan.networks.Generator`): ``gen(x)``
    is a
    bounded ``x_adv`` at ``gen.eps`` (the test's headline eps), ``gen(x, eps)`` at any
    other budget; it is the prior the attack's cascade starts from (trained, or loaded
    from the cache). ``gen.training_facts`` says how it was obtained. ``tools``: the
    keyword arguments of :class:`~.run_tools.RunTools`."""
    kit = RunTools(**tools)
    device, split = prepare(model, data, settings, train_data, store=kit.store)
    gen, facts = _obtain(model, split, settings, settings.main_eps, device, kit)
    gen.eps = float(settings.main_eps)
    gen.training_facts = facts
    return gen.eval()


def warm_generators(
    model: Any, data: Any, settings: RobustSettings, *, train_data: Any = None, **tools: Any
) -> List[Dict[str, Any]]:
    """Obtain every generator a test needs: the one of its model family when it uses
    ``gan`` (every eps of a sweep shares it), the sample generator for ``generated``.

    ``tools``: the keyword arguments of :class:`~.run_tools.RunTools`."""
    if makes_samples(settings.attacks):
        from ..conditional.fixture import warm_sample_generator

        return warm_sample_generator(model, data, settings, train_data=train_data, **tools)
    if not keeps_networks(settings.attacks):
        return []
    kit = RunTools(**tools)
    device, split = prepare(model, data, settings, train_data, store=kit.store)
    facts = _obtain(model, split, settings, settings.main_eps, device, kit)[1]
    return [dict(facts, role="gan", eps=list(settings.eps))]
