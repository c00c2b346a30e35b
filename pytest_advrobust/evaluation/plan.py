"""One robust test's settings, read once into what the stages below the evaluation take."""

from __future__ import annotations

from ..attacks.base import AttackConfig
from ..settings.robust import ATTACK_FIELDS, RobustSettings

__all__ = ["attack_config"]


def attack_config(settings: RobustSettings, eps: float) -> AttackConfig:
    """The :class:`~pytest_advrobust.attacks.base.AttackConfig` of ``settings`` at ``eps``."""
    return AttackConfig(eps=float(eps), **{f: getattr(settings, f) for f in ATTACK_FIELDS})
