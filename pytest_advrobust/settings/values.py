"""The words and values the options accept, and one parser per kind of option value.

Each parser takes the option's text (from the command line or an ini file) and
returns the value, or raises ``argparse.ArgumentTypeError``, which pytest turns
into a usage error that names the option (``settings.resolve_value`` names the
ini key instead). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Sequence

from .parsing import integer, number, real, significance_level

DEFAULT_EPS = {"linf": 0.1, "l2": 0.5}
SANITY_LEVELS = ("off", "cheap", "full")
MISSING_POLICIES = ("fail", "warn", "skip")
METRICS = ("absolute", "relative")
NORMS = ("linf", "l2")

__all__ = [
    "DEFAULT_EPS",
    "METRICS",
    "MISSING_POLICIES",
    "NORMS",
    "SANITY_LEVELS",
    "attack_input_type",
    "bounds_type",
    "channel_axis_type",
    "choice_type",
    "device_type",
    "positive_float_type",
    "positive_int_type",
    "preprocessing_type",
    "seed_type",
    "significance_type",
    "unit_float_type",
]


def device_type(value: str) -> str:
    v = str(value).strip().lower()
    if v in ("auto", "cpu", "cuda", "mps"):
        return v
    if v.startswith("cuda:") and v[5:].isdigit():
        return v
    raise argparse.ArgumentTypeError(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")


seed_type = integer(0)
positive_int_type = integer(1)
unit_float_type = real(0.0, 1.0)
significance_type = significance_level


def positive_float_type(value: str) -> float:
    out = number(value)
    if not math.isfinite(out) or out <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return out


def choice_type(choices: Sequence[str]):
    def parse(value: str) -> str:
        v = str(value).strip().lower()
        if v not in choices:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(choices)}")
        return v

    return parse


def _keyword_or(value: str, keyword: str, parse: Callable[[str], Any], form: str) -> Any:
    """``keyword`` itself, else ``parse`` of the lower-cased text; a ``ValueError`` from
    ``parse`` becomes "VALUE is not FORM"."""
    v = str(value).strip().lower()
    if v == keyword:
        return keyword
    try:
        return parse(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {form}") from None


def bounds_type(value: str):
    """``LOW,HIGH`` -> (low, high); ``none`` -> the string "none" (unbounded features)."""

    def parse(v: str):
        parts = [p for p in v.replace(";", ",").split(",") if p.strip()]
        lo, hi = (float(p) for p in parts)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise argparse.ArgumentTypeError(
                f"{value!r} must be two finite numbers with LOW < HIGH"
            )
        return (lo, hi)

    return _keyword_or(value, "none", parse, "LOW,HIGH (e.g. 0,1) or none")


def preprocessing_type(value: str):
    """``MEAN;STD`` with comma-separated per-channel values -> ((mean...), (std...))."""

    def parse(v: str):
        halves = v.split(";")
        if len(halves) != 2:
            raise ValueError
        mean, std = (tuple(float(p) for p in h.split(",") if p.strip()) for h in halves)
        finite = all(math.isfinite(t) for t in mean + std)
        if not mean or not std or not finite or any(t <= 0 for t in std):
            raise argparse.ArgumentTypeError(f"{value!r} needs finite means and positive stds")
        return (mean, std)

    return _keyword_or(value, "none", parse, "MEAN;STD (e.g. 0.5,0.5,0.5;0.25,0.25,0.25) or none")


def channel_axis_type(value: str):
    """``auto`` or an integer axis of the input tensor (1 for NCHW, -1 for NHWC)."""

    def parse(v: str) -> int:
        out = int(v)
        if out == 0:
            raise argparse.ArgumentTypeError("axis 0 is the batch axis, not a channel axis")
        return out

    return _keyword_or(value, "auto", parse, "an axis (e.g. 1 or -1) or auto")


def attack_input_type(value: str):
    """The input a model with several inputs is attacked through: a position (``0``, ``1``)
    or a key (``pixel_values``); ``auto`` (or empty): the first floating-point tensor."""
    v = str(value).strip()
    if v.lower() in ("", "auto"):
        return None
    if v.isdigit():
        return int(v)
    if v.isidentifier():
        return v
    raise argparse.ArgumentTypeError(
        f"{value!r} is not an input position (0, 1, ...), an input name or auto"
    )
