"""Marker + ini + command line -> one validated, frozen settings object.

Precedence: marker arguments override the command line, which overrides ini
values, which override the defaults below. Every error names the user's own
word: the marker argument (``robust(eps=...)``), the option
(``--advrobust-eps``) or the ini key (``advrobust_eps``).

The marker's arguments, their checks and :func:`~.marker.resolve_settings` live in
:mod:`.marker`, the parsers of
option values in :mod:`.values`. This module must not import torch: the
plugin imports it at load time.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..errors import AdvRobustError
from .values import (
    DEFAULT_EPS,
    MISSING_POLICIES,
    SANITY_LEVELS,
    attack_input_type,
    bounds_type,
    channel_axis_type,
    choice_type,
    device_type,
    positive_float_type,
    positive_int_type,
    preprocessing_type,
    seed_type,
    significance_type,
    unit_float_type,
)

DEFAULTS: Dict[str, Any] = {
    "device": "auto",
    "seed": 0,
    "samples": 512,
    "batch_size": 256,
    "sanity": "cheap",
    "tolerance": 0.02,
    "significance": 0.05,
    "missing_baseline": "warn",
    "model_fixture": "robust_model",
    "data_fixture": "robust_data",
    "train_data_fixture": "robust_train_data",
    "progress_seconds": 30.0,
}

# (option name, ini name, parser) for options that take a value and have an ini twin.
VALUE_OPTIONS = {
    "device": ("--advrobust-device", "advrobust_device", device_type),
    "seed": ("--advrobust-seed", "advrobust_seed", seed_type),
    "samples": ("--advrobust-samples", "advrobust_samples", positive_int_type),
    "eps": ("--advrobust-eps", "advrobust_eps", positive_float_type),
    "batch_size": ("--advrobust-batch-size", "advrobust_batch_size", positive_int_type),
    "sanity": ("--advrobust-sanity", "advrobust_sanity", choice_type(SANITY_LEVELS)),
    "tolerance": ("--advrobust-tolerance", "advrobust_tolerance", unit_float_type),
    "significance": (
        "--advrobust-significance",
        "advrobust_significance",
        significance_type,
    ),
    "missing_baseline": (
        "--advrobust-missing-baseline",
        "advrobust_missing_baseline",
        choice_type(MISSING_POLICIES),
    ),
    "threads": ("--advrobust-threads", "advrobust_threads", positive_int_type),
    "gan_steps": ("--advrobust-gan-steps", "advrobust_gan_steps", positive_int_type),
    "gan_seconds": ("--advrobust-gan-seconds", "advrobust_gan_seconds", positive_float_type),
    "bounds": ("--advrobust-bounds", "advrobust_bounds", bounds_type),
    "preprocessing": ("--advrobust-preprocessing", "advrobust_preprocessing", preprocessing_type),
    "channel_axis": ("--advrobust-channel-axis", "advrobust_channel_axis", channel_axis_type),
    "min_clean_accuracy": (
        "--advrobust-min-clean-accuracy",
        "advrobust_min_clean_accuracy",
        unit_float_type,
    ),
    "attack_input": ("--advrobust-attack-input", "advrobust_attack_input", attack_input_type),
    "progress_seconds": (
        "--advrobust-progress-seconds",
        "advrobust_progress_seconds",
        positive_float_type,
    ),
}


def resolve_value(name: str, option_value: Any, ini_value: Any) -> Any:
    """Command line over ini over default, validating the ini text.

    Raises ``AdvRobustError`` naming the ini key for a bad ini value (the
    command-line value was already checked by argparse).
    """
    if option_value is not None:
        return option_value
    option, ini, parse = VALUE_OPTIONS[name]
    if ini_value not in (None, "", []):
        try:
            return parse(ini_value)
        except argparse.ArgumentTypeError as exc:
            raise AdvRobustError(f"ini option {ini} = {ini_value!r}: {exc}") from None
    return DEFAULTS.get(name)


# -------------------------------------------------------------- settings object

#: The settings fields an attack receives, besides its eps (``AttackConfig``'s fields).
ATTACK_FIELDS = (
    "norm",
    "steps",
    "step_size",
    "restarts",
    "random_start",
    "bounds",
    "seed",
    "refine",
    "batch_size",
    "targets",
    "gan_steps",
    "gan_seconds",
)


@dataclass(frozen=True)
class RobustSettings:
    """Everything one robust evaluation needs, validated and immutable."""

    threshold: Optional[float] = None
    attacks: Tuple[str, ...] = ("gan",)
    eps: Tuple[float, ...] = (0.1,)
    norm: str = "linf"
    steps: int = 40
    step_size: Optional[float] = None
    restarts: int = 1
    random_start: bool = False
    n_samples: int = 512
    metric: str = "absolute"
    seed: int = 0
    model: str = "robust_model"
    data: str = "robust_data"
    train_data: str = "robust_train_data"
    bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
    preprocessing: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
    refine: int = 0
    tolerance: float = 0.02
    significance: float = 0.05  # one-sided level of the paired test of a fall
    sanity: str = "cheap"
    threshold_eps: Optional[float] = None
    batch_size: int = 256
    device: str = "auto"
    targets: int = 0
    gan_steps: Optional[int] = None
    gan_seconds: Optional[float] = None
    channel_axis: Optional[int] = None
    min_clean_accuracy: Optional[float] = None
    validity: float = 0.9  # attack="generated": least reference confidence of a valid sample
    attack_input: Optional[Union[int, str]] = None  # several inputs: the one attacked

    @property
    def attack_label(self) -> str:
        return "+".join(self.attacks)

    @property
    def is_sweep(self) -> bool:
        return len(self.eps) > 1

    @property
    def main_eps(self) -> float:
        """The eps reported in the headline numbers: the named one, else the largest."""
        return self.threshold_eps if self.threshold_eps is not None else max(self.eps)

    def evaluation_key(self) -> Tuple:
        """What decides the numbers and flags (the threshold and tolerance do not;
        threshold_eps picks the headline eps and sanity the checks that run)."""
        d = asdict(self)
        for k in ("threshold", "tolerance", "significance", "min_clean_accuracy"):
            d.pop(k)
        return tuple(sorted((k, repr(v)) for k, v in d.items()))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["attacks"] = list(self.attacks)
        d["eps"] = list(self.eps)
        d["bounds"] = list(self.bounds) if self.bounds is not None else None
        if self.preprocessing is not None:
            d["preprocessing"] = [list(self.preprocessing[0]), list(self.preprocessing[1])]
        return d


def base_settings(values: Mapping[str, Any]) -> RobustSettings:
    """Settings from resolved command line / ini values (no marker)."""
    eps = values.get("eps")
    return RobustSettings(
        eps=(float(eps),) if eps is not None else (DEFAULT_EPS["linf"],),
        n_samples=int(values.get("samples", DEFAULTS["samples"])),
        seed=int(values.get("seed", DEFAULTS["seed"])),
        batch_size=int(values.get("batch_size", DEFAULTS["batch_size"])),
        sanity=values.get("sanity", DEFAULTS["sanity"]),
        tolerance=float(values.get("tolerance", DEFAULTS["tolerance"])),
        significance=float(values.get("significance", DEFAULTS["significance"])),
        model=values.get("model_fixture", DEFAULTS["model_fixture"]),
        data=values.get("data_fixture", DEFAULTS["data_fixture"]),
        train_data=values.get("train_data_fixture", DEFAULTS["train_data_fixture"]),
        device=values.get("device", DEFAULTS["device"]),
        gan_steps=values.get("gan_steps"),
        gan_seconds=values.get("gan_seconds"),
        bounds=_option_bounds(values.get("bounds")),
        preprocessing=None
        if values.get("preprocessing") in (None, "none")
        else values["preprocessing"],
        channel_axis=None
        if values.get("channel_axis") in (None, "auto")
        else int(values["channel_axis"]),
        min_clean_accuracy=values.get("min_clean_accuracy"),
        attack_input=values.get("attack_input"),
    )


def eps_problems(settings: RobustSettings, word: str) -> Tuple[Optional[str], Optional[str]]:
    """``(error, warning)`` about an L-inf eps that cannot be meant, in the units of
    ``settings.bounds``: one as wide as the bounds' range (every input could be replaced:
    eps in pixel levels on [0, 1] data) is an error; one below one 8-bit step of the
    range a warning. ``word`` names where eps came from (``robust marker argument eps``,
    ``--advrobust-eps``)."""
    if settings.norm != "linf" or settings.bounds is None:
        return None, None
    lo, hi = settings.bounds
    width = hi - lo
    span = f"bounds ({lo:g}, {hi:g})"
    for eps in settings.eps:
        if eps >= width:
            meant = eps * width / 255.0
            return (
                f"{word}={eps:g} is at least as wide as the range of {span}, so the attack "
                "could replace every input by any other and every model would score 0; eps "
                f"is in the units of the inputs: for {eps:g} levels of 255 write "
                f"eps={eps:g}/255{'' if width == 1 else f'*{width:g}'} (= {meant:.4g})"
            ), None
    step = width / 255.0
    tiny = [eps for eps in settings.eps if eps < step]
    if tiny:
        eps = tiny[0]
        return None, (
            f"{word}={eps:g} is below one 8-bit step of the range of {span} ({step:.3g}): "
            "such an attack changes no 8-bit pixel; eps is in the units of the inputs, not "
            f"in levels of 255 and not divided by 255 twice: 8 levels are eps=8/255"
            f"{'' if width == 1 else f'*{width:g}'} (= {8 * step:.4g})"
        )
    return None, None


def check_eps(settings: RobustSettings, from_marker: bool) -> Optional[str]:
    """Raise :class:`AdvRobustError` for an eps that cannot be meant; return the warning
    for one that is suspiciously small (see :func:`eps_problems`), else ``None``."""
    word = "robust marker argument eps" if from_marker else "--advrobust-eps (ini advrobust_eps)"
    error, warning = eps_problems(settings, word)
    if error:
        raise AdvRobustError(error)
    return warning


def _option_bounds(value: Any) -> Optional[Tuple[float, float]]:
    if value is None:
        return (0.0, 1.0)
    return None if value == "none" else (float(value[0]), float(value[1]))


__all__ = [
    "RobustSettings",
    "base_settings",
    "check_eps",
    "eps_problems",
    "resolve_value",
    "VALUE_OPTIONS",
    "DEFAULTS",
    "DEFAULT_EPS",
]
