"""95% intervals of accuracies and of their paired difference (torch-free).

* :func:`wilson_interval`: the Wilson score interval of a binomial proportion
  (Wilson 1927), the interval every accuracy in the reports carries;
* :func:`paired_difference_interval`: the interval of the difference of two
  proportions measured on the same samples, Tango's score interval (Tango 1998),
  which keeps a sensible width when few or no samples changed (Newcombe's hybrid
  interval shrinks to almost nothing there).

Scipy (its root finder) is imported when a paired interval is computed.
"""

from __future__ import annotations

import math
from typing import Tuple

__all__ = ["Z95", "paired_difference_interval", "tango_score", "wilson_interval"]

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _restricted_p21(x12: int, x21: int, n: int, delta: float) -> float:
    """The maximum-likelihood ``p21`` under ``p12 - p21 = delta`` (Tango 1998, eq. 4)."""
    a = 2.0 * n
    b = -x12 - x21 + (2.0 * n - x12 + x21) * delta
    c = -x21 * delta * (1.0 - delta)
    return max(0.0, (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a))


def tango_score(x12: int, x21: int, n: int, delta: float) -> float:
    """Tango's score statistic of ``H0: p12 - p21 = delta`` (``inf`` where its variance
    vanishes away from the estimate)."""
    q = _restricted_p21(x12, x21, n, delta)
    var = n * (2.0 * q + delta * (1.0 - delta))
    diff = x12 - x21 - n * delta
    if var <= 0.0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def paired_difference_interval(
    both: int, only_new: int, only_old: int, neither: int, z: float = Z95
) -> Tuple[float, float]:
    """95% interval of ``p_new - p_old`` for binary outcomes measured twice on the same
    samples: Tango's score interval (Tango 1998, "Equivalence test and confidence interval
    for the difference in proportions for the paired-sample design", Statistics in
    Medicine 17), the values of the difference that the score test does not reject.

    ``both``: positive in both runs; ``only_new`` / ``only_old``: positive in one run
    only; ``neither``: in none; ``p_new = (both + only_new) / n``, ``p_old = (both +
    only_old) / n``. Only the discordant counts and ``n`` matter. The interval lies in
    [-1, 1], holds the estimate ``(only_new - only_old) / n`` and has a positive width
    also when no sample changed (then it is ``+-z^2 / (n + z^2)``); ``(0, 0)`` for
    ``n = 0``.
    """
    from scipy.optimize import brentq

    n = both + only_new + only_old + neither
    if n == 0:
        return (0.0, 0.0)
    est = (only_new - only_old) / n

    def excess(delta: float) -> float:
        return abs(tango_score(only_new, only_old, n, delta)) - z

    edge = 1.0 - 1e-12
    lo = -1.0 if excess(-edge) <= 0 else brentq(excess, -edge, est, xtol=1e-12)
    hi = 1.0 if excess(edge) <= 0 else brentq(excess, est, edge, xtol=1e-12)
    return (max(-1.0, min(lo, est)), min(1.0, max(hi, est)))
