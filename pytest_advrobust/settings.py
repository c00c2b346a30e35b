"""Marker + ini + command line -> one validated, frozen settings object.

Precedence: marker arguments override the command line, which overrides ini
values, which override the defaults below. Every error names the user's own
word: the marker argument (``robust(eps=...)``), the option
(``--advrobust-eps``) or the ini key (``advrobust_eps``).

This module must not import torch: the plugin imports it at load time.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from .errors import AdvRobustError

DEFAULT_EPS = {"linf": 0.1, "l2": 0.5}
DEFAULTS: Dict[str, Any] = {
    "device": "auto",
    "seed": 0,
    "samples": 512,
    "batch_size": 256,
    "sanity": "cheap",
    "tolerance": 0.02,
    "missing_baseline": "warn",
    "model_fixture": "robust_model",
    "data_fixture": "robust_data",
    "train_data_fixture": "robust_train_data",
}
SANITY_LEVELS = ("off", "cheap", "full")
MISSING_POLICIES = ("fail", "warn", "skip")
METRICS = ("absolute", "relative")
NORMS = ("linf", "l2")

MARKER_ARGS = (
    "threshold",
    "attack",
    "eps",
    "norm",
    "steps",
    "step_size",
    "restarts",
    "random_start",
    "n_samples",
    "metric",
    "seed",
    "model",
    "data",
    "bounds",
    "preprocessing",
    "refine",
    "tolerance",
    "sanity",
    "threshold_eps",
    "batch_size",
    "targets",
    "channel_axis",
    "min_clean_accuracy",
    "validity",
)


# ---------------------------------------------------------------- option types
# Each parser raises argparse.ArgumentTypeError, which pytest turns into a usage
# error that names the option.


def device_type(value: str) -> str:
    v = str(value).strip().lower()
    if v in ("auto", "cpu", "cuda", "mps"):
        return v
    if v.startswith("cuda:") and v[5:].isdigit():
        return v
    raise argparse.ArgumentTypeError(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")


def _int_type(minimum: int):
    def parse(value: str) -> int:
        try:
            out = int(str(value).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if out < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be at least {minimum}")
        return out

    return parse


seed_type = _int_type(0)
positive_int_type = _int_type(1)


def positive_float_type(value: str) -> float:
    try:
        out = float(str(value).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(out) or out <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return out


def unit_float_type(value: str) -> float:
    try:
        out = float(str(value).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (0.0 <= out <= 1.0):
        raise argparse.ArgumentTypeError(f"{value!r} must lie in [0, 1]")
    return out


def choice_type(choices: Sequence[str]):
    def parse(value: str) -> str:
        v = str(value).strip().lower()
        if v not in choices:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(choices)}")
        return v

    return parse


def bounds_type(value: str):
    """``LOW,HIGH`` -> (low, high); ``none`` -> the string "none" (unbounded features)."""
    v = str(value).strip().lower()
    if v == "none":
        return "none"
    parts = [p for p in v.replace(";", ",").split(",") if p.strip()]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not LOW,HIGH (e.g. 0,1) or none") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"{value!r} must be two finite numbers with LOW < HIGH")
    return (lo, hi)


def preprocessing_type(value: str):
    """``MEAN;STD`` with comma-separated per-channel values -> ((mean...), (std...))."""
    v = str(value).strip().lower()
    if v == "none":
        return "none"
    halves = v.split(";")
    try:
        if len(halves) != 2:
            raise ValueError
        mean, std = (tuple(float(p) for p in h.split(",") if p.strip()) for h in halves)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not MEAN;STD (e.g. 0.5,0.5,0.5;0.25,0.25,0.25) or none"
        ) from None
    if (
        not mean
        or not std
        or not all(math.isfinite(t) for t in mean + std)
        or any(t <= 0 for t in std)
    ):
        raise argparse.ArgumentTypeError(f"{value!r} needs finite means and positive stds")
    return (mean, std)


def channel_axis_type(value: str):
    """``auto`` or an integer axis of the input tensor (1 for NCHW, -1 for NHWC)."""
    v = str(value).strip().lower()
    if v == "auto":
        return "auto"
    try:
        out = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an axis (e.g. 1 or -1) or auto"
        ) from None
    if out == 0:
        raise argparse.ArgumentTypeError("axis 0 is the batch axis, not a channel axis")
    return out


# (option name, ini name, parser) for options that take a value and have an ini twin.
VALUE_OPTIONS = {
    "device": ("--advrobust-device", "advrobust_device", device_type),
    "seed": ("--advrobust-seed", "advrobust_seed", seed_type),
    "samples": ("--advrobust-samples", "advrobust_samples", positive_int_type),
    "eps": ("--advrobust-eps", "advrobust_eps", positive_float_type),
    "batch_size": ("--advrobust-batch-size", "advrobust_batch_size", positive_int_type),
    "sanity": ("--advrobust-sanity", "advrobust_sanity", choice_type(SANITY_LEVELS)),
    "tolerance": ("--advrobust-tolerance", "advrobust_tolerance", unit_float_type),
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

    def attack_config(self, eps: float):
        from .attacks.base import AttackConfig

        return AttackConfig(
            eps=float(eps),
            norm=self.norm,
            steps=self.steps,
            step_size=self.step_size,
            restarts=self.restarts,
            random_start=self.random_start,
            bounds=self.bounds,
            seed=self.seed,
            refine=self.refine,
            batch_size=self.batch_size,
            targets=self.targets,
            gan_steps=self.gan_steps,
            gan_seconds=self.gan_seconds,
        )

    def evaluation_key(self) -> Tuple:
        """What decides the numbers and flags (the threshold and tolerance do not;
        threshold_eps picks the headline eps and sanity the checks that run)."""
        d = asdict(self)
        for k in ("threshold", "tolerance", "min_clean_accuracy"):
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


def _bad(arg: str, value: Any, why: str) -> AdvRobustError:
    return AdvRobustError(f"robust marker argument {arg}={value!r} {why}")


def _number(arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(arg, value, "is not a number")
    out = float(value)
    if not math.isfinite(out):
        raise _bad(arg, value, "is not a finite number")
    return out


def _int(arg: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _bad(arg, value, "is not an integer")
    if int(value) < minimum:
        raise _bad(arg, value, f"must be at least {minimum}")
    return int(value)


def _name(arg: str, value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise _bad(arg, value, "must be the name of a fixture")
    return value


def _known_attacks(extra: Sequence[str] = ()) -> Sequence[str]:
    from .attacks import available

    return list(available()) + [a for a in extra if a not in available()]


def from_marker(
    kwargs: Mapping[str, Any],
    args: Sequence[Any],
    base: RobustSettings,
    *,
    require_threshold: bool = True,
    known_attacks: Optional[Sequence[str]] = None,
) -> RobustSettings:
    """Apply the ``robust`` marker's arguments over ``base`` and validate them."""
    if args:
        if len(args) > 1 or "threshold" in kwargs:
            raise AdvRobustError(
                "robust marker takes one positional argument, the threshold; "
                "pass the others by name"
            )
        kwargs = dict(kwargs, threshold=args[0])
    unknown = sorted(set(kwargs) - set(MARKER_ARGS))
    if unknown:
        raise AdvRobustError(
            f"robust marker got unknown argument {unknown[0]!r}; "
            f"known arguments: {', '.join(MARKER_ARGS)}"
        )
    upd: Dict[str, Any] = {}

    if "threshold" not in kwargs or kwargs["threshold"] is None:
        if require_threshold:
            raise AdvRobustError(
                "robust marker needs a threshold, e.g. @pytest.mark.robust(threshold=0.1)"
            )
    else:
        t = _number("threshold", kwargs["threshold"])
        if not 0.0 <= t <= 1.0:
            raise _bad("threshold", kwargs["threshold"], "must lie in [0, 1]")
        upd["threshold"] = t

    if "attack" in kwargs:
        names = kwargs["attack"]
        names = [names] if isinstance(names, str) else names
        if (
            not isinstance(names, (list, tuple))
            or not names
            or not all(isinstance(n, str) for n in names)
        ):
            raise _bad("attack", kwargs["attack"], "must be an attack name or a list of names")
        known = list(known_attacks) if known_attacks is not None else _known_attacks()
        for n in names:
            if n not in known:
                raise _bad(
                    "attack",
                    kwargs["attack"],
                    f"names unknown attack {n!r}; known: {', '.join(known)}",
                )
        upd["attacks"] = tuple(dict.fromkeys(names))

    if "norm" in kwargs:
        if kwargs["norm"] not in NORMS:
            raise _bad("norm", kwargs["norm"], "must be 'linf' or 'l2'")
        upd["norm"] = kwargs["norm"]
        if (
            "eps" not in kwargs
            and base.norm != kwargs["norm"]
            and base.eps == (DEFAULT_EPS[base.norm],)
        ):
            upd["eps"] = (DEFAULT_EPS[kwargs["norm"]],)

    if "eps" in kwargs:
        raw = kwargs["eps"]
        values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not values:
            raise _bad("eps", raw, "must not be empty")
        eps = []
        for v in values:
            f = _number("eps", v)
            if f <= 0:
                raise _bad("eps", raw, "must be positive")
            eps.append(f)
        upd["eps"] = tuple(sorted(set(eps)))

    if "threshold_eps" in kwargs and kwargs["threshold_eps"] is not None:
        te = _number("threshold_eps", kwargs["threshold_eps"])
        eps_list = upd.get("eps", base.eps)
        if not any(math.isclose(te, e) for e in eps_list):
            raise _bad(
                "threshold_eps",
                kwargs["threshold_eps"],
                f"must be one of the swept eps values {list(eps_list)}",
            )
        upd["threshold_eps"] = te

    for arg, minimum in (
        ("steps", 1),
        ("restarts", 1),
        ("n_samples", 1),
        ("refine", 0),
        ("batch_size", 1),
        ("seed", 0),
        ("targets", 0),
    ):
        if arg in kwargs:
            upd[arg] = _int(arg, kwargs[arg], minimum)

    if "step_size" in kwargs and kwargs["step_size"] is not None:
        s = _number("step_size", kwargs["step_size"])
        if s <= 0:
            raise _bad("step_size", kwargs["step_size"], "must be positive")
        upd["step_size"] = s

    if "random_start" in kwargs:
        if not isinstance(kwargs["random_start"], bool):
            raise _bad("random_start", kwargs["random_start"], "must be True or False")
        upd["random_start"] = kwargs["random_start"]

    if "metric" in kwargs:
        if kwargs["metric"] not in METRICS:
            raise _bad("metric", kwargs["metric"], "must be 'absolute' or 'relative'")
        upd["metric"] = kwargs["metric"]

    if "sanity" in kwargs:
        if kwargs["sanity"] not in SANITY_LEVELS:
            raise _bad("sanity", kwargs["sanity"], f"must be one of {', '.join(SANITY_LEVELS)}")
        upd["sanity"] = kwargs["sanity"]

    if "tolerance" in kwargs:
        tol = _number("tolerance", kwargs["tolerance"])
        if not 0.0 <= tol <= 1.0:
            raise _bad("tolerance", kwargs["tolerance"], "must lie in [0, 1]")
        upd["tolerance"] = tol

    if "validity" in kwargs:
        v = _number("validity", kwargs["validity"])
        if not 0.5 <= v < 1.0:
            raise _bad("validity", kwargs["validity"], "must lie in [0.5, 1)")
        upd["validity"] = v

    for arg in ("model", "data"):
        if arg in kwargs:
            upd[arg] = _name(arg, kwargs[arg])

    if "bounds" in kwargs:
        b = kwargs["bounds"]
        if b is None:
            upd["bounds"] = None
        else:
            if not isinstance(b, (list, tuple)) or len(b) != 2:
                raise _bad("bounds", b, "must be a (low, high) pair or None")
            lo, hi = _number("bounds", b[0]), _number("bounds", b[1])
            if not lo < hi:
                raise _bad("bounds", b, "must have low < high")
            upd["bounds"] = (lo, hi)

    if "preprocessing" in kwargs and kwargs["preprocessing"] is None:
        upd["preprocessing"] = None  # overrides --advrobust-preprocessing / the ini key
    elif "preprocessing" in kwargs:
        p = kwargs["preprocessing"]
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise _bad("preprocessing", p, "must be a (mean, std) pair")
        parts = []
        for part in p:
            seq = list(part) if isinstance(part, (list, tuple)) else [part]
            parts.append(tuple(_number("preprocessing", v) for v in seq))
        if any(s <= 0 for s in parts[1]):
            raise _bad("preprocessing", p, "must have a positive std")
        upd["preprocessing"] = (parts[0], parts[1])

    if "channel_axis" in kwargs:
        axis = kwargs["channel_axis"]
        if axis is not None and (_int("channel_axis", axis, -64) == 0):
            raise _bad(
                "channel_axis",
                axis,
                "is the batch axis; give the channel axis "
                "(1 for (N, C, H, W), -1 for (N, H, W, C))",
            )
        upd["channel_axis"] = None if axis is None else int(axis)

    if "min_clean_accuracy" in kwargs:
        floor = kwargs["min_clean_accuracy"]
        if floor is not None:
            floor = _number("min_clean_accuracy", floor)
            if not 0.0 <= floor <= 1.0:
                raise _bad("min_clean_accuracy", kwargs["min_clean_accuracy"], "must lie in [0, 1]")
        upd["min_clean_accuracy"] = floor

    out = replace(base, **upd)
    if out.threshold_eps is not None and not any(
        math.isclose(out.threshold_eps, e) for e in out.eps
    ):
        raise _bad("threshold_eps", out.threshold_eps, "must be one of the swept eps values")
    return out


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
    )


def _option_bounds(value: Any) -> Optional[Tuple[float, float]]:
    if value is None:
        return (0.0, 1.0)
    return None if value == "none" else (float(value[0]), float(value[1]))


__all__ = [
    "RobustSettings",
    "from_marker",
    "base_settings",
    "resolve_value",
    "VALUE_OPTIONS",
    "MARKER_ARGS",
    "DEFAULTS",
    "DEFAULT_EPS",
]
