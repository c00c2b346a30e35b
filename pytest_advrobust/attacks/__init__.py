"""Attack registry: names -> callables following :class:`~.base.Attack`.

Built-in attacks are resolved lazily so that importing this package does not
import torch. Users add attacks through the ``advrobust_register_attacks``
hook or :func:`register_attack`.
"""

from __future__ import annotations

from typing import Callable, Dict

from .base import AttackConfig, AttackContext, bound, clip_bounds, project

_BUILTIN = {
    "fgsm": ("pytest_advrobust.attacks.gradient", "fgsm"),
    "pgd": ("pytest_advrobust.attacks.gradient", "pgd"),
    "gan": ("pytest_advrobust.attacks.gan", "gan_attack"),
    "apgd": ("pytest_advrobust.attacks.apgd", "apgd"),
    "apgd-t": ("pytest_advrobust.attacks.apgd", "apgd_t"),
    "autoattack-lite": ("pytest_advrobust.attacks.apgd", "autoattack_lite"),
    "generated": ("pytest_advrobust.conditional.evaluation", "generated_attack"),
}
# Gradient attacks from strongest to weakest (AttackBench ranks targeted APGD
# first among L-inf attacks); the sanity checks compare against the first one
# configured, else PGD.
STRENGTH_ORDER = ("autoattack-lite", "apgd-t", "apgd", "pgd")
_CUSTOM: Dict[str, Callable] = {}

__all__ = [
    "AttackConfig",
    "AttackContext",
    "available",
    "bound",
    "clip_bounds",
    "get_attack",
    "project",
    "register_attack",
    "strongest_attack",
]


def register_attack(name: str, attack: Callable) -> None:
    """Register ``attack`` under ``name`` (replacing a custom one of that name)."""
    if not isinstance(name, str) or not name:
        raise ValueError("attack name must be a non-empty string")
    if name in _BUILTIN:
        raise ValueError(f"attack name {name!r} is built in and cannot be replaced")
    if not callable(attack):
        raise TypeError(f"attack {name!r} must be callable")
    _CUSTOM[name] = attack


def available() -> list:
    """Names of every attack known now, built-in first."""
    return list(_BUILTIN) + sorted(n for n in _CUSTOM if n not in _BUILTIN)


def get_attack(name: str) -> Callable:
    """The attack registered as ``name``; KeyError if unknown."""
    if name in _CUSTOM:
        return _CUSTOM[name]
    if name in _BUILTIN:
        import importlib

        module, attr = _BUILTIN[name]
        return getattr(importlib.import_module(module), attr)
    raise KeyError(name)


def strongest_attack(names=()) -> tuple:
    """``(name, attack)`` of the strongest built-in gradient attack among ``names``.

    Order: autoattack-lite, apgd-t, apgd, pgd; ``pgd`` when ``names`` holds
    none of them. The sanity checks that compare attacks (and the GAN's
    strength probe) measure against this attack.
    """
    chosen = next((n for n in STRENGTH_ORDER if n in set(names)), "pgd")
    return chosen, get_attack(chosen)
