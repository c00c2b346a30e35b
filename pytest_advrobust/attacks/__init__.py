"""Attack registry: names -> callables following :class:`~.base.Attack`.

The names and what each attack needs are in :mod:`pytest_advrobust.attack_table`;
built-in attacks are imported on first use, so that importing this package does not
import torch. Users add attacks through the ``advrobust_register_attacks`` hook or
:func:`register_attack`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..attack_table import (
    alone_error,
    available,
    custom_attack,
    facts_of,
    reference_order,
    register_attack,
)
from .base import AttackConfig, AttackContext, bound, clip_bounds, project

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


def get_attack(name: str) -> Callable:
    """The attack registered as ``name``; KeyError if unknown. An attack that makes samples
    (``generated``) is no perturbation attack: :class:`AdvRobustError` says so."""
    custom = custom_attack(name)
    if custom is not None:
        return custom
    facts = facts_of(name)
    if facts.samples:
        raise alone_error(name)
    if facts.module is None:
        raise KeyError(name)
    return getattr(importlib.import_module(facts.module), facts.attr)


def strongest_attack(names=()) -> tuple:
    """``(name, attack)`` of the strongest built-in gradient attack among ``names``.

    Order (:func:`~pytest_advrobust.attack_table.reference_order`): autoattack-lite,
    apgd-t, apgd, pgd; ``pgd`` when ``names`` holds none of them. The sanity checks that
    compare attacks (and the GAN's strength probe) measure against this attack.
    """
    chosen = next(iter(reference_order(list(names))), "pgd") if names else "pgd"
    return chosen, get_attack(chosen)
