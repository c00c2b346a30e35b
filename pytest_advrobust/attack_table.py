"""The attacks by name: where each one lives and what it needs, in one table.

Every place that asks a question about an attack by its name reads :data:`ATTACKS`:
whether it follows the input gradient (the up-front gradient check runs for it),
whether it may use training samples (the training data fixture is read and split
for it), whether it trains a network it keeps in the cache (``--advrobust-warm``
obtains it ahead of the tests), whether it makes new samples instead of perturbing
the given ones (it runs its own evaluation), and its rank among the gradient attacks
the sanity checks take as their reference. Attacks that other plugins register
(:func:`register_attack`) are not known to follow a gradient, may use training
samples and keep nothing in the cache.

Torch-free: the marker checks attack names against :func:`available` when the
plugin loads; the attacks themselves are imported on first use, from ``module``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import AdvRobustError

__all__ = [
    "ATTACKS",
    "AttackFacts",
    "alone_error",
    "available",
    "custom_attack",
    "facts_of",
    "is_builtin",
    "keeps_networks",
    "makes_samples",
    "needs_gradient",
    "needs_training_data",
    "readers_of",
    "reference_order",
    "register_attack",
]


@dataclass(frozen=True)
class AttackFacts:
    """What one attack needs. ``module``/``attr``: where a built-in attack's callable lives
    (``None`` for registered ones, and for one that makes samples: it is no perturbation
    attack, but an evaluation of its own); ``gradient``: follows the input gradient;
    ``training_data``: may use training samples; ``cache``: trains a network it keeps
    in the cache; ``samples``: makes new samples (its own evaluation) instead of
    perturbing the evaluation samples; ``reference``: rank among the gradient attacks
    the sanity checks measure against (1 strongest; ``None``: never the reference)."""

    module: Optional[str]
    attr: Optional[str]
    gradient: bool
    training_data: bool
    cache: bool = False
    samples: bool = False
    reference: Optional[int] = None
    reads: Tuple[str, ...] = ()  # the attack-specific marker arguments it reads


def _builtin(module: str, attr: str, **facts: Any) -> AttackFacts:
    return AttackFacts(f"pytest_advrobust.{module}", attr, **facts)


#: Marker arguments that only some attacks read (``targets``: PGD's targeted runs and
#: APGD-T's classes; ``refine``: PGD steps after the ``gan`` attack's cascade).
TARGETED = ("targets",)
REFINED = ("refine",)

#: The built-in attacks. Targeted APGD ranks first among L-inf attacks in AttackBench;
#: autoattack-lite runs it after APGD-CE, so it is the strongest reference.
ATTACKS: Dict[str, AttackFacts] = {
    "fgsm": _builtin("attacks.gradient", "fgsm", gradient=True, training_data=False),
    "pgd": _builtin(
        "attacks.gradient", "pgd", gradient=True, training_data=False, reference=4, reads=TARGETED
    ),
    "gan": _builtin(
        "attacks.gan", "gan_attack", gradient=True, training_data=True, cache=True, reads=REFINED
    ),
    "apgd": _builtin("attacks.apgd", "apgd", gradient=True, training_data=False, reference=3),
    "apgd-t": _builtin(
        "attacks.apgd", "apgd_t", gradient=True, training_data=False, reference=2, reads=TARGETED
    ),
    "autoattack-lite": _builtin(
        "attacks.apgd",
        "autoattack_lite",
        gradient=True,
        training_data=False,
        reference=1,
        reads=TARGETED,
    ),
    "generated": AttackFacts(
        None, None, gradient=False, training_data=True, cache=True, samples=True
    ),
}
#: What an attack registered by another plugin is taken to need.
REGISTERED = AttackFacts(None, None, gradient=False, training_data=True)

_CUSTOM: Dict[str, Callable] = {}


def register_attack(name: str, attack: Callable) -> None:
    """Register ``attack`` under ``name`` (replacing a custom one of that name)."""
    if not isinstance(name, str) or not name:
        raise ValueError("attack name must be a non-empty string")
    if name in ATTACKS:
        raise ValueError(f"attack name {name!r} is built in and cannot be replaced")
    if not callable(attack):
        raise TypeError(f"attack {name!r} must be callable")
    _CUSTOM[name] = attack


def available() -> List[str]:
    """Names of every attack known now, built-in first."""
    return list(ATTACKS) + sorted(n for n in _CUSTOM if n not in ATTACKS)


def is_builtin(name: str) -> bool:
    return name in ATTACKS


def custom_attack(name: str) -> Optional[Callable]:
    """The attack another plugin registered as ``name``, or ``None``."""
    return _CUSTOM.get(name)


def facts_of(name: str) -> AttackFacts:
    """The facts of attack ``name`` (a registered or unknown name: :data:`REGISTERED`)."""
    return ATTACKS.get(name, REGISTERED)


def alone_error(name: str) -> AdvRobustError:
    """The sentence for an attack that makes samples, asked to perturb them."""
    return AdvRobustError(
        f"attack {name!r} samples new inputs and cannot be combined with "
        "perturbation attacks; give it a robust test of its own"
    )


def readers_of(argument: str) -> List[str]:
    """The built-in attacks that read the attack-specific marker ``argument`` (empty for
    an argument every attack reads, or none)."""
    return [n for n, f in ATTACKS.items() if argument in f.reads]


def needs_gradient(names: Iterable[str], refine: int = 0) -> bool:
    """Whether any attack of ``names`` (or ``refine`` PGD steps) follows the input gradient."""
    return refine > 0 or any(facts_of(n).gradient for n in names)


def needs_training_data(names: Iterable[str]) -> bool:
    """Whether any attack of ``names`` may use training samples."""
    return any(facts_of(n).training_data for n in names)


def keeps_networks(names: Iterable[str]) -> List[str]:
    """The attacks of ``names`` that train a network they keep in the cache."""
    return [n for n in names if facts_of(n).cache]


def makes_samples(names: Iterable[str]) -> bool:
    """Whether an attack of ``names`` makes new samples (and runs its own evaluation)."""
    return any(facts_of(n).samples for n in names)


def reference_order(names: Sequence[str] = ()) -> List[str]:
    """The reference attacks, strongest first (all of them when ``names`` is empty, else
    those among ``names``)."""
    ranked = sorted((f.reference, n) for n, f in ATTACKS.items() if f.reference is not None)
    return [n for _, n in ranked if not names or n in names]
