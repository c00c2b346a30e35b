"""The paired comparison of two evaluations of the same samples: what changed, and is it real.

Both runs attack the same seeded samples, so a change of adversarial accuracy is a
count of samples whose verdict flipped. On the samples both records share
(matched by id, not by position), with ``m`` shared samples:

* ``newly_fooled``: robust in the baseline, fooled now; ``newly_robust``: the reverse;
* ``delta = (newly_robust - newly_fooled) / m``: the change of adversarial accuracy
  on the shared samples (the change of accuracy itself when every sample is shared);
* its 95% interval: Tango's score interval for the difference of two paired
  proportions (Tango 1998, Statistics in Medicine 17; see
  :mod:`pytest_advrobust.metrics.intervals`);
* ``p_fall``: the one-sided exact McNemar test on the discordant pairs, i.e. the
  binomial test of ``newly_fooled`` successes in ``newly_fooled + newly_robust`` trials
  at probability 1/2 (``scipy.stats.binomtest``, alternative "greater"): the chance of
  so lopsided a split of the flips if the model had not changed. ``p_rise`` is the
  same test the other way round.

Torch-free; scipy is imported when a test is computed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..metrics.intervals import paired_difference_interval
from ..metrics.record import SampleRecord

__all__ = ["PairedTest", "paired_test"]


@dataclass(frozen=True)
class PairedTest:
    """The paired comparison of a baseline record with the current one.

    ``shared``: samples in both; ``only_baseline`` / ``only_current``: samples in one
    only (an edited data set); ``fooled`` / ``robust``: positions (in the current
    record) of the newly fooled and newly robust samples, in evaluation order.
    """

    shared: int
    only_baseline: int
    only_current: int
    fooled: List[int] = field(default_factory=list)
    robust: List[int] = field(default_factory=list)
    baseline_accuracy: float = 0.0  # on the shared samples
    current_accuracy: float = 0.0
    delta: float = 0.0
    ci: Tuple[float, float] = (0.0, 0.0)
    p_fall: float = 1.0
    p_rise: float = 1.0

    @property
    def newly_fooled(self) -> int:
        return len(self.fooled)

    @property
    def newly_robust(self) -> int:
        return len(self.robust)


def _one_sided(successes: int, trials: int) -> float:
    if trials == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(successes, trials, 0.5, alternative="greater").pvalue)


def _pairs(old: SampleRecord, new: SampleRecord) -> List[Tuple[int, int]]:
    """(old position, new position) of the samples both records hold; a sample that
    occurs several times (duplicates in the data) pairs its occurrences in order."""
    where: Dict[str, List[int]] = defaultdict(list)
    for pos, sample_id in enumerate(old.ids):
        where[sample_id].append(pos)
    taken: Dict[str, int] = defaultdict(int)
    pairs = []
    for pos, sample_id in enumerate(new.ids):
        k = taken[sample_id]
        if k < len(where.get(sample_id, ())):
            pairs.append((where[sample_id][k], pos))
            taken[sample_id] = k + 1
    return pairs


def paired_test(old: SampleRecord, new: SampleRecord) -> PairedTest:
    """Compare the robust verdicts of ``new`` with those of ``old`` on their shared samples."""
    pairs = _pairs(old, new)
    m = len(pairs)
    fooled = [j for i, j in pairs if old.robust[i] and not new.robust[j]]
    robust = [j for i, j in pairs if new.robust[j] and not old.robust[i]]
    both = sum(1 for i, j in pairs if old.robust[i] and new.robust[j])
    neither = m - both - len(fooled) - len(robust)
    b, c = len(fooled), len(robust)
    return PairedTest(
        shared=m,
        only_baseline=len(old) - m,
        only_current=len(new) - m,
        fooled=sorted(fooled),
        robust=sorted(robust),
        baseline_accuracy=(both + b) / m if m else 0.0,
        current_accuracy=(both + c) / m if m else 0.0,
        delta=(c - b) / m if m else 0.0,
        ci=paired_difference_interval(both, c, b, neither),
        p_fall=_one_sided(b, b + c),
        p_rise=_one_sided(c, b + c),
    )
