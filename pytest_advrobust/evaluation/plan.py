"""One robust test's settings, read once into the values each stage below takes.

The evaluation is the lowest stage that reads :class:`~pytest_advrobust.settings.robust.
RobustSettings`: :func:`plan_of` turns them into a :class:`Plan` (how to read the model and
data, an attack config per eps, the sanity level, what a generated evaluation draws), and
everything below receives those values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

from ..attack_table import needs_training_data
from ..attacks.base import AttackConfig
from ..conditional.evaluation import Sampling
from ..inputs.prepare import InputSpec
from ..settings.robust import ATTACK_FIELDS, RobustSettings

__all__ = ["Plan", "attack_config", "input_spec", "plan_of", "sampling_for"]


def attack_config(settings: RobustSettings, eps: float) -> AttackConfig:
    """The :class:`~pytest_advrobust.attacks.base.AttackConfig` of ``settings`` at ``eps``."""
    return AttackConfig(eps=float(eps), **{f: getattr(settings, f) for f in ATTACK_FIELDS})


def input_spec(settings: RobustSettings, need_train: Optional[bool] = None) -> InputSpec:
    """How ``settings`` read the model and data (``need_train``: read training samples;
    by default when an attack of ``settings`` may use them)."""
    if need_train is None:
        need_train = needs_training_data(settings.attacks)
    return InputSpec(
        model=settings.model,
        data=settings.data,
        train_data=settings.train_data,
        n_samples=settings.n_samples,
        seed=settings.seed,
        device=settings.device,
        bounds=settings.bounds,
        preprocessing=settings.preprocessing,
        channel_axis=settings.channel_axis,
        attack_input=settings.attack_input,
        need_train=need_train,
    )


@dataclass(frozen=True)
class Plan:
    """What one evaluation does, read from ``settings`` once (``settings`` stay for the
    outcome, its stored key and the report)."""

    settings: RobustSettings
    inputs: InputSpec
    configs: Tuple[AttackConfig, ...]  # one per eps of ``settings.eps``, in its order
    main: AttackConfig  # the headline eps's
    sanity: str  # the level of the sanity checks
    sampling: Sampling  # what attack="generated" draws and judges

    @property
    def attacks(self) -> Tuple[str, ...]:
        return self.settings.attacks

    @property
    def fixture(self) -> str:
        """The model fixture's name."""
        return self.inputs.model


def plan_of(settings: RobustSettings, sanity_level: Optional[str] = None) -> Plan:
    """The :class:`Plan` of ``settings``; ``sanity_level`` overrides their sanity level."""
    inputs = input_spec(settings)
    return Plan(
        settings=settings,
        inputs=inputs,
        configs=tuple(attack_config(settings, eps) for eps in settings.eps),
        main=attack_config(settings, settings.main_eps),
        sanity=sanity_level or settings.sanity,
        sampling=Sampling(
            inputs=inputs,
            batch_size=settings.batch_size,
            validity=settings.validity,
            metric=settings.metric,
            gan_steps=settings.gan_steps,
        ),
    )


def sampling_for(plan: Plan, own_training_data: bool) -> Sampling:
    """What ``attack="generated"`` draws under ``plan``: its networks train on the training
    data fixture when the test has one (``own_training_data``), else on the rest of the
    data fixture, so the training samples are always read."""
    inputs = replace(plan.inputs, need_train=True)
    trained_on = inputs.train_data if own_training_data else inputs.data
    return replace(plan.sampling, inputs=inputs, train_fixture=trained_on)
