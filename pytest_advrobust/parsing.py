"""Value parsers shared by the pytest options and the ``advrobust`` command.

Each parser turns one command-line or ini text into a value, or raises
:class:`argparse.ArgumentTypeError` with one sentence of the form
``expected ..., got '...'``; argparse (and pytest's option parser, which is
argparse) turns that into a usage error naming the option. Nothing here
imports torch or touches the disk.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional, Union

__all__ = [
    "integer",
    "is_number",
    "non_negative_float",
    "non_negative_int",
    "real",
]

Number = Union[int, float]


def is_number(value: Any) -> bool:
    """A finite int or float (``True``/``False`` and NaN are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(kind: type, noun: str, text: str, ok: Callable[[Number], bool], rule: str) -> Number:
    try:
        value = kind(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {noun} {rule}, got {text!r}")
    return value


def integer(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers ``>= minimum``: ``integer(0)("3") == 3``."""

    def parse(text: str) -> int:
        return _number(int, "a whole number", text, lambda v: v >= minimum, f">= {minimum}")

    parse.__name__ = f"integer_at_least_{minimum}"
    return parse


def real(minimum: float, maximum: Optional[float] = None) -> Callable[[str], float]:
    """A parser of finite numbers in ``[minimum, maximum]`` (no upper end when ``None``)."""
    rule = f">= {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]"
    top = math.inf if maximum is None else maximum

    def parse(text: str) -> float:
        return _number(float, "a number", text, lambda v: minimum <= v <= top, rule)

    parse.__name__ = "real_" + rule.replace(" ", "")
    return parse


non_negative_int = integer(0)
non_negative_float = real(0.0)
