"""Generators outside an evaluation: the ``gan_generator`` and ``conditional_generator``
fixtures and ``--advrobust-warm``.

Each reads the test's settings as an evaluation does (:mod:`.plan`), prepares the model
and data the same way and obtains the generator the evaluation would obtain, so that the
evaluation afterwards finds it in this process or in the cache.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional

import torch

from ..attack_table import keeps_networks, makes_samples
from ..attacks.gan import obtain_generator
from ..conditional.evaluation import obtain_networks
from ..inputs.model import borrowed
from ..inputs.prepare import InputSpec, prepare, with_preprocessing
from ..runtime import Runtime
from ..settings.robust import RobustSettings
from .plan import attack_config, input_spec, plan_of, sampling_for

__all__ = ["conditional_generator_for", "generator_for", "warm_generators"]


@contextlib.contextmanager
def _attack_inputs(model, split, spec: InputSpec, device):
    """``(net, x, x_work, y)`` as the evaluation hands them to the ``gan`` attack: the model with
    its preprocessing, checked for an input gradient; float32 copies of low-precision data."""
    from ..inputs.gradcheck import require_input_gradient
    from ..inputs.precision import working_copy

    with borrowed(model, device) as m:
        net = with_preprocessing(m, spec, device)
        x, y = split.x.to(device), split.y.to(device)
        require_input_gradient(net, x, y, ("gan",), spec.model)
        net, x_work = working_copy(net, x)
        yield net, x, x_work, y


def _train_x(split, x, x_work):
    """The GAN's training samples in the attack's working dtype."""
    if split.train_x is None or x_work is x:
        return split.train_x
    return split.train_x.float()


def _gan_generator(model, data, train_data, settings: RobustSettings, runtime: Runtime):
    """``(generator, facts)`` of the ``gan`` attack at the headline eps."""
    from ..attacks.base import AttackContext

    spec = input_spec(settings, need_train=True)
    device, split = prepare(model, data, spec, train_data, store=runtime.store)
    with _attack_inputs(model, split, spec, device) as (net, x, x_work, y):
        train_x, train_y = _train_x(split, x, x_work), split.train_y
        if train_x is None:  # as gan_attack: without training samples it trains on x itself
            train_x, train_y = x_work.detach().cpu(), y.detach().cpu()
        ctx = AttackContext(device, train_x, train_y, runtime)
        return obtain_generator(net, attack_config(settings, settings.main_eps), ctx)


def generator_for(
    model: Any,
    data: Any,
    settings: RobustSettings,
    *,
    train_data: Any = None,
    runtime: Optional[Runtime] = None,
) -> Any:
    """The ``gan`` attack's generator for this model family, set to the headline eps.

    An ``nn.Module`` in eval mode (:class:`~pytest_advrobust.gan.networks.Generator`):
    ``gen(x)`` is a bounded ``x_adv`` at ``gen.eps`` (the test's headline eps), ``gen(x,
    eps)`` at any other budget; it is the prior the attack's cascade starts from
    (trained, or loaded from the cache). ``gen.training_facts`` says how it was obtained.
    ``runtime``: the run's :class:`~pytest_advrobust.runtime.Runtime`."""
    gen, facts = _gan_generator(model, data, train_data, settings, runtime or Runtime())
    gen.eps = float(settings.main_eps)
    gen.training_facts = facts
    return gen.eval()


def _sample_networks(model, data, train_data, settings: RobustSettings, runtime: Runtime):
    """``(generator, reference, facts)`` of ``attack="generated"``."""
    sampling = sampling_for(plan_of(settings), train_data is not None)
    device, split = prepare(model, data, sampling.inputs, train_data, store=runtime.store)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return obtain_networks(split.train_x, split.train_y, sampling, device, runtime)


def conditional_generator_for(
    model: Any,
    data: Any,
    settings: RobustSettings,
    *,
    train_data: Any = None,
    runtime: Optional[Runtime] = None,
) -> Any:
    """The trained (or cached) class-conditional generator of ``attack="generated"`` for
    this data (:class:`~pytest_advrobust.conditional.networks.ConditionalGenerator`).

    It carries ``reference`` (the validity judge, a
    :class:`~pytest_advrobust.conditional.networks.ReferenceClassifier` whose logits index
    ``labels``) and ``training_facts`` (``{"generator": ..., "reference": ...}``).
    """
    gen, ref, facts = _sample_networks(model, data, train_data, settings, runtime or Runtime())
    # A plain attribute, not a registered submodule: the generator's parameters and
    # state dict stay its own.
    gen.__dict__["reference"] = ref
    gen.training_facts = facts
    return gen.eval()


def warm_generators(
    model: Any,
    data: Any,
    settings: RobustSettings,
    *,
    train_data: Any = None,
    runtime: Optional[Runtime] = None,
) -> List[Dict[str, Any]]:
    """Obtain every generator a test needs (the attacks that keep a network in the cache,
    :mod:`pytest_advrobust.attack_table`): the one of its model family for ``gan`` (every
    eps of a sweep shares it), the sample generator and its reference for
    ``generated``. Their facts, each with its ``role``."""
    runtime = runtime or Runtime()
    if makes_samples(settings.attacks):
        _, _, facts = _sample_networks(model, data, train_data, settings, runtime)
        return [
            dict(facts["generator"], role="sample generator"),
            dict(facts["reference"], role="reference classifier"),
        ]
    if not keeps_networks(settings.attacks):
        return []
    facts = _gan_generator(model, data, train_data, settings, runtime)[1]
    return [dict(facts, role="gan", eps=list(settings.eps))]
