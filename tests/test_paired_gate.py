"""The paired rule of the regression gate, on numbers: the per-sample record, Tango's
interval, the exact test on the discordant samples, and the verdicts and messages.

Oracles: a brute-force maximum likelihood for the restricted estimate, the closed form
of the interval when nothing changed, a coverage simulation, the binomial tail summed by
hand, and the counts each constructed pair of records was built with.
"""

from __future__ import annotations

import math
import random
import re

import pytest

from pytest_advrobust.gate import comparison
from pytest_advrobust.gate.paired import paired_test
from pytest_advrobust.metrics.intervals import (
    Z95,
    _restricted_p21,
    paired_difference_interval,
    tango_score,
)
from pytest_advrobust.metrics.record import SampleRecord, decode, encode

scipy_optimize = pytest.importorskip("scipy.optimize")


def record(robust, clean=None, ids=None, index=None):
    n = len(robust)
    ids = ids if ids is not None else [f"{i:016x}" for i in range(n)]
    return SampleRecord(
        ids=list(ids),
        index=list(index) if index is not None else list(range(n)),
        clean=list(clean) if clean is not None else [True] * n,
        robust=list(robust),
    )


def pair(n, base_robust, fooled, back):
    """Baseline and current records of ``n`` samples: ``base_robust`` robust in the
    baseline, of which ``fooled`` are fooled now, and ``back`` newly robust."""
    old = [i < base_robust for i in range(n)]
    new = list(old)
    for i in range(fooled):
        new[i] = False
    for i in range(back):
        new[base_robust + i] = True
    return record(old), record(new)


# ------------------------------------------------------------------ the record


def test_record_round_trips_through_its_json_form():
    rng = random.Random(3)
    n = 37  # not a multiple of 8: the last byte of each bitset is partial
    rec = SampleRecord(
        ids=[rng.getrandbits(64).to_bytes(8, "big").hex() for _ in range(n)],
        index=[rng.randrange(2**32) for _ in range(n)],
        clean=[rng.random() < 0.8 for _ in range(n)],
        robust=[rng.random() < 0.5 for _ in range(n)],
    )
    doc = encode(rec)
    assert doc["n"] == n and doc["format"] == 1 and doc["id"] == "sha256-64"
    assert decode(doc) == rec
    assert decode(None) is None
    assert decode(encode(record([]))) == record([])


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"format": 9}, "format 9"),
        ({"n": -1}, "'n' field"),
        ({"robust": "!!"}, "'robust' field is missing or not base64"),
        ({"ids": "AAAA"}, "'ids' field holds 3 bytes where 24 are due"),
    ],
)
def test_a_damaged_record_is_refused_with_the_reason(change, fragment):
    doc = dict(encode(record([True, False, True])), **change)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        decode(doc)


# ------------------------------------------------------------------- intervals


def _brute_p21(x12, x21, n, delta):
    """The restricted maximum-likelihood p21 by numeric search over the multinomial."""

    def nll(q):
        p12, p21 = q + delta, q
        rest = 1 - p12 - p21
        if min(p12, p21, rest) <= 0:
            return 1e300
        return -(x12 * math.log(p12) + x21 * math.log(p21) + (n - x12 - x21) * math.log(rest))

    lo, hi = max(0.0, -delta) + 1e-13, (1 - delta) / 2 - 1e-13
    return scipy_optimize.minimize_scalar(
        nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}
    ).x


@pytest.mark.parametrize(
    "x12, x21, n, delta",
    [(16, 3, 512, -0.01), (16, 3, 512, 0.05), (5, 20, 100, 0.1), (7, 2, 30, -0.2), (1, 0, 9, 0.3)],
)
def test_restricted_estimate_is_the_maximum_likelihood(x12, x21, n, delta):
    assert _restricted_p21(x12, x21, n, delta) == pytest.approx(
        _brute_p21(x12, x21, n, delta), abs=1e-7
    )


@pytest.mark.parametrize("n", [10, 120, 512, 5000])
def test_interval_when_nothing_changed_is_the_closed_form(n):
    # with no discordant sample, |Z| = sqrt(n d / (1 - d)), so the limits are z^2 / (n + z^2)
    half = Z95**2 / (n + Z95**2)
    lo, hi = paired_difference_interval(n // 2, 0, 0, n - n // 2)
    assert lo == pytest.approx(-half, abs=1e-9) and hi == pytest.approx(half, abs=1e-9)


def test_interval_limits_are_where_the_score_test_stops_rejecting():
    counts = (284, 2, 18, 208)  # both, only_new, only_old, neither
    n = sum(counts)
    lo, hi = paired_difference_interval(*counts)
    est = (2 - 18) / n
    assert lo < est < hi and -1 <= lo and hi <= 1
    for limit in (lo, hi):
        assert abs(tango_score(2, 18, n, limit)) == pytest.approx(Z95, abs=1e-6)
    inside = [lo + (hi - lo) * t for t in (0.01, 0.5, 0.99)]
    assert all(abs(tango_score(2, 18, n, d)) < Z95 for d in inside)
    assert abs(tango_score(2, 18, n, lo - 1e-3)) > Z95 < abs(tango_score(2, 18, n, hi + 1e-3))


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = random.Random(0)
    n, p_fooled, p_back = 512, 0.03, 0.01  # a real fall of 2 points
    truth, trials, covered = p_back - p_fooled, 2000, 0
    for _ in range(trials):
        b = c = 0
        for _ in range(n):
            u = rng.random()
            b += u < p_fooled
            c += p_fooled <= u < p_fooled + p_back
        lo, hi = paired_difference_interval(300, c, b, n - 300 - b - c)
        covered += lo <= truth <= hi
    assert 0.93 <= covered / trials <= 0.975  # binomial noise of 2000 trials: about 0.005


# ----------------------------------------------------------------- the exact test


def test_the_test_is_the_one_sided_binomial_tail_of_the_discordant_samples():
    old, new = pair(512, 300, fooled=12, back=3)
    test = paired_test(old, new)
    assert (test.newly_fooled, test.newly_robust, test.shared) == (12, 3, 512)
    tail = sum(math.comb(15, k) for k in range(12, 16)) / 2**15
    assert test.p_fall == pytest.approx(tail, rel=1e-12)
    assert test.p_rise == pytest.approx(sum(math.comb(15, k) for k in range(3, 16)) / 2**15)
    assert test.delta == pytest.approx(-9 / 512)
    assert test.baseline_accuracy == pytest.approx(300 / 512)
    assert test.current_accuracy == pytest.approx(291 / 512)


def test_samples_are_paired_by_id_not_by_position():
    old = record([True, True, False, True], ids=["a" * 16, "b" * 16, "c" * 16, "d" * 16])
    # the same samples in another order, one edited (a new id), one new sample
    new = record(
        [True, False, True, True, False],
        ids=["d" * 16, "b" * 16, "c" * 16, "e" * 16, "a" * 16],
        index=[30, 10, 20, 40, 0],
    )
    test = paired_test(old, new)
    assert (test.shared, test.only_baseline, test.only_current) == (4, 0, 1)
    assert test.fooled == [1, 4]  # b and a: robust before, fooled now
    assert test.robust == [2]  # c


def test_duplicate_samples_pair_occurrence_by_occurrence():
    old = record([True, True, False], ids=["a" * 16] * 2 + ["b" * 16])
    new = record([False, True], ids=["a" * 16, "a" * 16])
    test = paired_test(old, new)
    assert (test.shared, test.only_baseline, test.only_current) == (2, 1, 0)
    assert test.fooled == [0] and test.robust == []


# ----------------------------------------------------------- verdicts and messages


def entry_of(rec, **extra):
    acc = sum(rec.robust) / len(rec)
    return dict(adversarial_accuracy=acc, samples=encode(rec), attack="pgd", eps=0.1, **extra)


def report_of(rec, **extra):
    return dict(entry_of(rec), nodeid="t.py::a", **extra)


def test_a_real_fall_fails_with_every_number_and_the_first_ids():
    old, new = pair(512, 300, fooled=16, back=0)
    new = SampleRecord(new.ids, [1000 + i for i in range(512)], new.clean, new.robust)
    c = comparison.compare(entry_of(old), report_of(new), 0.02)
    assert c.status == "regressed" and c.fails and c.rule == "paired"
    lo, hi = paired_difference_interval(284, 0, 16, 212)
    assert c.message.startswith(
        f"adversarial accuracy fell 0.031 (16 newly fooled, 0 newly robust of 512; 95% CI "
        f"[{-hi:.3f}, {-lo:.3f}], p < 0.001) > tolerance 0.020 (baseline 0.586 -> current "
        f"0.555); newly fooled: #1000 ({new.ids[0][:8]}), #1001 ({new.ids[1][:8]}), "
    )
    assert c.message.endswith(" and 11 more")
    paired = c.to_report()["paired"]
    assert paired["newly_fooled"] == 16 and paired["newly_robust"] == 0
    assert [s["index"] for s in paired["newly_fooled_samples"]] == list(range(1000, 1016))
    assert paired["newly_fooled_samples"][3]["id"] == new.ids[3]
    assert paired["p_fall"] == pytest.approx(0.5**16)
    assert paired["delta_ci"] == [round(lo, 6), round(hi, 6)]


def test_a_fall_beyond_tolerance_that_is_noise_passes_and_says_so():
    # 40 flips each way but 13 more fooled: 0.025 > 0.02, p about 0.1
    old, new = pair(512, 300, fooled=53, back=40)
    c = comparison.compare(entry_of(old), report_of(new), 0.02)
    assert c.status == "not_significant" and not c.fails
    assert "more than tolerance 0.020 but not beyond noise at significance 0.05" in c.message
    assert re.search(r"p = 0\.\d{3}\)", c.message)
    # a looser level makes the same fall real
    assert comparison.compare(entry_of(old), report_of(new), 0.02, 0.2).status == "regressed"


def test_shuffled_verdicts_pass_where_the_absolute_rule_would_fail():
    old, new = pair(512, 300, fooled=60, back=48)  # the accuracy fell 0.023, both ways
    c = comparison.compare(entry_of(old), report_of(new), 0.02)
    assert c.status == "not_significant"
    absolute = comparison.compare(
        {"adversarial_accuracy": 300 / 512}, {"adversarial_accuracy": 288 / 512}, 0.02
    )
    assert absolute.status == "regressed" and absolute.rule == "absolute"


def test_an_improvement_within_noise_is_ok_and_a_real_one_says_so():
    old, new = pair(512, 300, fooled=0, back=30)
    c = comparison.compare(entry_of(old), report_of(new), 0.02)
    assert c.status == "improved" and "rose 0.059" in c.message
    old, new = pair(512, 300, fooled=1, back=3)
    assert comparison.compare(entry_of(old), report_of(new), 0.02).status == "ok"


def test_an_edited_data_set_is_compared_on_its_shared_samples():
    old = record([True] * 100)
    ids = [f"{i:016x}" for i in range(10, 100)] + [f"{i + 500:016x}" for i in range(10)]
    new = record([i >= 12 for i in range(90)] + [False] * 10, ids=ids)
    c = comparison.compare(entry_of(old), report_of(new), 0.02)
    assert c.paired["shared"] == 90 and c.paired["newly_fooled"] == 12
    assert (c.paired["only_current"], c.paired["only_baseline"]) == (10, 10)
    assert (
        "12 newly fooled, 0 newly robust of 90 shared samples (the data changed: 10 of this "
        "run's samples are not in the baseline, 10 of the baseline's are gone)" in c.message
    )
    assert c.status == "regressed"


def test_no_shared_sample_falls_back_to_the_absolute_rule():
    old = record([True] * 10)
    new = record([True] * 10, ids=[f"{i + 99:016x}" for i in range(10)])
    c = comparison.compare(entry_of(old), report_of(new), 0.02)
    assert c.rule == "absolute" and c.paired is None
    assert c.note == "no sample of this run is in the baseline's evaluation set"


def test_a_random_model_is_named_instead_of_the_commit():
    old, new = pair(512, 300, fooled=30, back=2)
    flag = {"flag": "nondeterministic", "message": "...", "changed": 9, "checked": 128}
    c = comparison.compare(entry_of(old), report_of(new, sanity=[flag]), 0.02)
    assert c.status == "nondeterministic" and c.fails
    assert (
        "but the model is random in eval mode (sanity flag nondeterministic: two forward "
        "passes over the same 128 inputs changed 9 predictions (7.0%)), so the difference "
        "may be the model's own noise rather than the commit" in c.message
    )


@pytest.mark.parametrize("level", [0, 1, -0.1, float("nan")])
def test_a_bad_significance_is_refused(level):
    old, new = pair(10, 5, 0, 0)
    with pytest.raises(ValueError, match="significance"):
        comparison.compare(entry_of(old), report_of(new), 0.02, level)
