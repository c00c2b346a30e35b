"""Value parsers shared by the pytest options and the ``advrobust`` command.

Each parser turns one command-line or ini text into a value, or raises
:class:`argparse.ArgumentTypeError` with one sentence that quotes the text
(``'-2' must be at least 0``); argparse (and pytest's option parser, which is
argparse) turns that into a usage error naming the option. The option
parsers of :mod:`.values` are built from these. Nothing here
imports torch or touches the disk.
"""

from __future__ import annotations

import argparse
import difflib
import math
from typing import Any, Callable, Iterable, Optional

__all__ = [
    "did_you_mean",
    "integer",
    "is_number",
    "number",
    "non_negative_float",
    "non_negative_int",
    "real",
]


def is_number(value: Any) -> bool:
    """A finite int or float (``True``/``False`` and NaN are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'eps'?)`` for the closest of ``choices`` to a misspelled ``word``,
    letter case aside (:func:`difflib.get_close_matches`, ratio at least 0.6), or ``""``
    when none is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def number(text: str) -> float:
    """``text`` as a float (a fraction such as ``8/255`` too, as eps are often written),
    or one sentence saying it is not a number."""
    words = str(text).strip()
    try:
        if "/" in words:
            top, bottom = words.split("/", 1)
            return float(top) / float(bottom)
        return float(words)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def integer(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers ``>= minimum``: ``integer(0)("3") == 3``."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    parse.__name__ = f"integer_at_least_{minimum}"
    return parse


def real(minimum: float, maximum: Optional[float] = None) -> Callable[[str], float]:
    """A parser of finite numbers in ``[minimum, maximum]`` (no upper end when ``None``)."""
    if maximum is None:
        rule, top = f"must be a finite number of at least {minimum:g}", math.inf
    else:
        rule, top = f"must lie in [{minimum:g}, {maximum:g}]", maximum

    def parse(text: str) -> float:
        value = number(text)
        if not (math.isfinite(value) and minimum <= value <= top):
            raise argparse.ArgumentTypeError(f"{text!r} {rule}")
        return value

    parse.__name__ = (
        "real_at_least_" + f"{minimum:g}" + ("" if maximum is None else f"_to_{maximum:g}")
    )
    return parse


non_negative_int = integer(0)
non_negative_float = real(0.0)


def significance_level(text: str) -> float:
    """A significance level: a number strictly between 0 and 1 (``0.05``)."""
    value = number(text)
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a significance level strictly between 0 and 1, such as 0.05"
        )
    return value
