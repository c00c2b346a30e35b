"""The CI gate end to end: baselines, pytest-xdist and the ``advrobust compare`` command.

One small model repository goes through the life of a CI gate (a "story"), each step a real
pytest subprocess, once per xdist mode: no flag and ``-n 2`` play all of it, ``-n 0`` (the
same code path as no flag) S1-S3, ``-p no:xdist`` replays S2:

  S1  --advrobust-save-baseline                           record the healthy model
      (then: a new test file, a hand-edited torch version, an entry of a deleted test
      file, and one entry lowered by hand so that the healthy model has "improved")
  S2  test_alpha.py test_gamma.py -k "not wider"
      --advrobust-compare --advrobust-missing-baseline=warn --advrobust-save-baseline=new
                                                          the gate passes; =new adds only
                                                          the new test's entry, prunes the
                                                          stale one, keeps the rest
  S3  (model degraded, one more new test file)
      --advrobust-compare --advrobust-missing-baseline=fail
  S4  --advrobust-save-baseline                           accept the new numbers (update)
  S5  (one more new test file) --advrobust-compare --advrobust-missing-baseline=skip

Every step writes a JSON report and a JUnit XML file. Each story runs once and is shared
by the tests below, which check one aspect each. Its runs are the expensive part
(a ``-n 2`` run starts three Python processes that import torch): keep their number low.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import pytest
from _support import BLOBS_CONFTEST
from scipy.stats import binomtest

from pytest_advrobust.metrics.intervals import paired_difference_interval
from pytest_advrobust.metrics.record import decode, encode

TOLERANCE = 0.02
BASELINE = "advrobust-baseline.json"
FAKE_TORCH = "0.0.1+fake"
STALE = "test_gone.py::test_removed"

# --------------------------------------------------------------- the repository

CONFTEST = BLOBS_CONFTEST + textwrap.dedent(
    """
    import pathlib

    DEGRADED = pathlib.Path(__file__).with_name("DEGRADED")

    @pytest.fixture(scope="session")
    def robust_model():
        model = NearestCentre(make_blobs()[2])
        if DEGRADED.exists():  # a "bad commit": noisy weights, same clean accuracy
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                model.fc.weight.add_(0.1 * torch.randn(model.fc.weight.shape, generator=g))
        return model
    """
)

# eps 0.09 / 0.1 put the healthy model mid-range (about 0.87 / 0.54 adversarial accuracy;
# at eps <= 0.08 these blobs are still ~1.0) and the degraded one 0.1-0.3 lower.
PGD = 'attack="pgd", steps=5, n_samples=120'

TEST_ALPHA = f"""
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.09, {PGD})
def test_linf():
    pass

@pytest.mark.robust(threshold=1.0, eps=0.1, {PGD})
def test_linf_wider():
    pass
"""

TEST_BETA = f"""
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.09, seed=1, {PGD})
def test_other_samples(adversarial_batch):
    assert adversarial_batch.x_adv.shape == adversarial_batch.x.shape

def test_plain():
    pass
"""

TEST_GAMMA = f"""
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.1, seed=2, {PGD})
def test_new():
    pass
"""

TEST_DELTA = f"""
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.09, seed=3, {PGD})
def test_newer():
    pass
"""

TEST_EPSILON = f"""
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.09, seed=4, {PGD})
def test_newest():
    pass
"""

LINF, WIDER = ALPHA = ["test_alpha.py::test_linf", "test_alpha.py::test_linf_wider"]
BETA = "test_beta.py::test_other_samples"
PLAIN = "test_beta.py::test_plain"
GAMMA = "test_gamma.py::test_new"
DELTA = "test_delta.py::test_newer"
EPSILON = "test_epsilon.py::test_newest"
HEALTHY = ALPHA + [BETA]  # the tests of S1
# The hand edit of LINF's entry before S2: this many of its robust samples marked fooled
# (and its accuracy lowered to match), so that the healthy model has "improved".
LOWERED = 5
LOWERED_BY = LOWERED / 120

MODES = {"no-n": [], "n0": ["-n", "0"], "n2": ["-n", "2"]}  # test id -> xdist arguments
STEPS = ("S1", "S2", "S3", "S4", "S5")
# Each run costs a torch import per process (three with -n 2) on a small shared machine.
# "-n 0" takes the same code path as no flag (xdist loaded, not distributing), so its
# story stops after the save / compare + save=new + prune / regression steps.
UPTO = {"no-n": 5, "n0": 3, "n2": 5}
S2_ARGS = (
    "test_alpha.py",
    "test_gamma.py",
    "-k",
    "not wider",
    "--advrobust-compare",
    "--advrobust-missing-baseline=warn",
    "--advrobust-save-baseline=new",
)

# hypothesis' plugin costs a second per process and plays no part here; every step
# evaluates (--advrobust-retrain: no stored evaluation is reused), so that steps and xdist
# modes with different histories compare like for like
COMMON = [
    "--advrobust-retrain",
    "-p",
    "no:cacheprovider",
    "-p",
    "no:randomly",
    "-p",
    "no:hypothesispytest",
    "--advrobust",
    "--advrobust-sanity=off",
    "-rfE",
]


def _env() -> Dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONWARNINGS"
    }
    # one thread per process: the machine is small and an xdist run has three of them
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    return env


# --------------------------------------------------------------- running pytest


@dataclass
class Run:
    args: List[str]
    ret: int
    out: str
    err: str

    def section(self, title: str) -> List[str]:
        """Lines of the ``==== title ====`` section of the terminal output."""
        lines = self.out.splitlines()
        head = re.compile(rf"^=+ {re.escape(title)} =+$")
        for i, line in enumerate(lines):
            if head.match(line):
                body = []
                for rest in lines[i + 1 :]:
                    if re.match(r"^=+ .* =+$", rest):
                        break
                    body.append(rest)
                return body
        return []

    @property
    def rows(self) -> Dict[str, str]:
        """The advrobust summary rows by test id."""
        return {
            line.split()[0]: line for line in self.section("advrobust") if line.startswith("test_")
        }

    @property
    def notes(self) -> List[str]:
        return [
            line
            for line in self.section("advrobust")
            if line.startswith(("baseline", "pruned", "JSON report"))
        ]

    @property
    def warnings(self) -> List[str]:
        """The AdvRobustWarning messages of the warnings summary."""
        text = "\n".join(self.section("warnings summary"))
        return re.findall(r"AdvRobustWarning: (.*)", text)

    def failure(self, name: str) -> str:
        """The text of the failure section of the test function ``name``."""
        lines = self.section("FAILURES")
        head = re.compile(rf"^_+ {re.escape(name)} _+$")
        for i, line in enumerate(lines):
            if head.match(line):
                body = []
                for rest in lines[i + 1 :]:
                    if re.match(r"^_{3,} .* _{3,}$", rest) or rest.startswith("---"):
                        break
                    if not re.match(r"^\[gw\d+\] ", rest):  # xdist names the worker
                        body.append(rest)
                return "\n".join(body).strip()
        raise AssertionError(f"no failure section for {name}:\n{self.out}")

    def outcome(self, word: str) -> int:
        tail = self.out.strip().splitlines()[-1] if self.out.strip() else ""
        m = re.search(rf"(\d+) {word}", tail)
        return int(m.group(1)) if m else 0

    def __repr__(self) -> str:  # what an assertion shows
        return f"$ pytest {' '.join(self.args)}\n--- rc {self.ret}\n{self.out}\n{self.err}"


def pytest_run(repo: Path, *args: str) -> Run:
    argv = [*COMMON, *args]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Run(argv, proc.returncode, proc.stdout, proc.stderr)


def cli(*args: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_advrobust.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )


# ------------------------------------------------------------------- the story


@dataclass
class Story:
    mode: str
    repo: Path
    baseline_path: Path
    runs: Dict[str, Run] = field(default_factory=dict)
    files: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # baseline after a step
    reports: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # JSON report of a step
    junit: Dict[str, str] = field(default_factory=dict)  # JUnit XML of a step
    edited: Dict[str, Any] = field(default_factory=dict)  # baseline before S2

    def tests(self, step: str) -> Dict[str, Any]:
        return self.files[step]["tests"]

    def report(self, step: str, nodeid: str) -> Dict[str, Any]:
        (rep,) = [r for r in self.reports[step]["tests"] if r["nodeid"] == nodeid]
        return rep

    def adv(self, step: str, nodeid: str) -> float:
        return self.report(step, nodeid)["adversarial_accuracy"]


def make_repo(repo: Path) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / "conftest.py").write_text(CONFTEST)
    (repo / "test_alpha.py").write_text(TEST_ALPHA)
    (repo / "test_beta.py").write_text(TEST_BETA)
    return repo


def play(repo: Path, mode: str, upto: int = len(STEPS)) -> Story:
    make_repo(repo)
    story = Story(mode, repo, repo / BASELINE)

    def step(name: str, *args: str) -> bool:
        story.runs[name] = pytest_run(
            repo, *MODES[mode], f"--advrobust-json={name}.json", f"--junitxml={name}.xml", *args
        )
        if story.baseline_path.exists():
            story.files[name] = json.loads(story.baseline_path.read_text())
        for suffix, store, read in (
            (".json", story.reports, json.loads),
            (".xml", story.junit, str),
        ):
            if (repo / (name + suffix)).exists():
                store[name] = read((repo / (name + suffix)).read_text())
        return len(story.runs) < upto

    if not step("S1", "--advrobust-save-baseline"):
        return story
    (repo / "test_gamma.py").write_text(TEST_GAMMA)
    doc = json.loads(story.baseline_path.read_text())
    doc["environment"]["torch"] = FAKE_TORCH
    doc["tests"][STALE] = copy.deepcopy(doc["tests"][LINF])
    doc["tests"][LINF]["adversarial_accuracy"] = round(
        doc["tests"][LINF]["adversarial_accuracy"] - LOWERED_BY, 6
    )
    rec = decode(doc["tests"][LINF]["samples"])
    robust = [i for i, r in enumerate(rec.robust) if r][:LOWERED]
    rec.robust[:] = [r and i not in robust for i, r in enumerate(rec.robust)]
    doc["tests"][LINF]["samples"] = encode(rec)
    story.baseline_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    story.edited = doc
    if not step("S2", *S2_ARGS):
        return story
    (repo / "DEGRADED").write_text("a bad commit\n")
    (repo / "test_delta.py").write_text(TEST_DELTA)
    if not step("S3", "--advrobust-compare", "--advrobust-missing-baseline=fail"):
        return story
    if not step("S4", "--advrobust-save-baseline"):
        return story
    (repo / "test_epsilon.py").write_text(TEST_EPSILON)
    step("S5", "--advrobust-compare", "--advrobust-missing-baseline=skip")
    return story


@pytest.fixture(scope="module")
def story_of(tmp_path_factory):
    """story_of(mode) plays the story in that xdist mode, once per module."""
    stories: Dict[str, Story] = {}

    def get(mode: str) -> Story:
        if MODES[mode]:
            pytest.importorskip("xdist")
        if mode not in stories:
            repo = tmp_path_factory.mktemp("story-" + re.sub(r"\W", "", mode))
            stories[mode] = play(repo, mode, UPTO[mode])
        return stories[mode]

    return get


@pytest.fixture(params=list(MODES))
def story(request, story_of) -> Story:
    return story_of(request.param)


# ------------------------------------------------------------------- helpers


def _strip(value: Any) -> Any:
    """A report without what may legitimately differ between two runs (timings, files)."""
    if isinstance(value, dict):
        return {
            k: _strip(v) for k, v in value.items() if k not in ("seconds", "duration", "images")
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def comparable(report: Dict[str, Any]) -> Dict[str, Any]:
    doc = _strip(report)
    doc["tests"] = sorted(doc["tests"], key=lambda r: r["nodeid"])
    return doc


COLUMNS = [
    "test",
    "attack",
    "eps",
    "n",
    "clean",
    "adversarial",
    "gap",
    "threshold",
    "baseline",
    "verdict",
    "generator",
]


def cell(row: str, column: str) -> str:
    """One cell of a summary row (cells are padded with two spaces or more)."""
    cells = re.split(r"\s{2,}", row.strip())
    assert len(cells) == len(COLUMNS), row
    return cells[COLUMNS.index(column)]


def verdict(run: Run, nodeid: str) -> tuple:
    """(baseline cell, verdict cell) of a test's summary row."""
    row = run.rows[nodeid]
    return cell(row, "baseline"), cell(row, "verdict")


def changed(old: Dict[str, Any], new: Dict[str, Any]) -> tuple:
    """(newly fooled positions, newly robust count) between two per-sample records (the
    same samples in the same order here)."""
    a, b = decode(old["samples"]), decode(new["samples"])
    assert a.ids == b.ids
    fooled = [i for i in range(len(a)) if a.robust[i] and not b.robust[i]]
    return fooled, sum(1 for i in range(len(a)) if b.robust[i] and not a.robust[i])


def regression_text(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """The gate's message for a fall from the entry or report ``old`` to the report ``new``,
    rebuilt from the two records: counts, Tango's interval, the exact binomial test."""
    fooled, back = changed(old, new)
    rec, n = decode(new["samples"]), new["n"]
    k, base = len(fooled), sum(decode(old["samples"]).robust)
    lo, hi = paired_difference_interval(base - k, back, k, n - base - back)
    p = binomtest(k, k + back, 0.5, alternative="greater").pvalue
    ptext = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    ids = ", ".join(f"#{rec.index[i]} ({rec.ids[i][:8]})" for i in fooled[:5])
    more = f" and {k - 5} more" if k > 5 else ""
    return (
        f"adversarial accuracy fell {(k - back) / n:.3f} ({k} newly fooled, {back} newly robust "
        f"of {n}; 95% CI [{-hi:.3f}, {-lo:.3f}], {ptext}) > tolerance {TOLERANCE:.3f} (baseline "
        f"{base / n:.3f} -> current {(base - k + back) / n:.3f}); newly fooled: {ids}{more}"
    )


def missing_text(name: str = BASELINE) -> str:
    return f"no baseline entry for this test in {name}; save one with --advrobust-save-baseline"


# ------------------------------------------------- 1. save / compare / degrade / update


def test_save_compare_degrade_update(story):
    s1, s2, s3 = (story.runs[k] for k in ("S1", "S2", "S3"))

    # S1 saves to <rootdir>/advrobust-baseline.json, one entry per robust test
    assert s1.ret == 0, s1
    assert s1.outcome("passed") == 4
    assert story.baseline_path == story.repo / BASELINE
    saved = story.tests("S1")
    assert sorted(saved) == sorted(HEALTHY)
    for nodeid in HEALTHY:
        acc = saved[nodeid]["adversarial_accuracy"]
        assert 0.3 < acc < 0.95, (nodeid, acc)  # mid-range: room to fall, not all broken
        assert acc == story.adv("S1", nodeid)
        assert saved[nodeid]["eps"] == story.report("S1", nodeid)["eps"]
        assert verdict(s1, nodeid) == ("-", "PASS")  # not compared: no delta
        assert story.report("S1", nodeid)["baseline"] is None
    assert f"baseline written to {story.baseline_path}: 3 entries written, 0 kept" in s1.notes

    # S2 compares: the gate passes; LINF's entry was lowered by hand, so it "improved"
    assert s2.ret == 0, s2
    assert s2.outcome("passed") == 2 and s2.outcome("failed") == 0
    lowered = story.edited["tests"][LINF]["adversarial_accuracy"]
    assert verdict(s2, LINF) == (f"+{LOWERED_BY:.3f} (0 fooled, {LOWERED} robust) improved", "PASS")
    base2 = story.report("S2", LINF)["baseline"]
    assert {k: base2[k] for k in ("adversarial_accuracy", "tolerance", "status", "rule")} == {
        "adversarial_accuracy": lowered,
        "tolerance": TOLERANCE,
        "status": "improved",
        "rule": "paired",
    }
    assert base2["delta"] == pytest.approx(LOWERED_BY, abs=1e-6)
    assert base2["paired"]["p_rise"] == pytest.approx(0.5**LOWERED)

    # S3: the degraded model fails the gate, each message with every number
    assert s3.ret == 1, s3
    assert s3.outcome("failed") == 5 and s3.outcome("passed") == 1
    compared_with = story.tests("S2")  # the file as S2 left it
    for nodeid in HEALTHY + [GAMMA]:
        base = compared_with[nodeid]["adversarial_accuracy"]
        rep = story.report("S3", nodeid)
        current = rep["adversarial_accuracy"]
        assert current < base - 0.05, (nodeid, base, current)  # well beyond the tolerance
        assert rep["clean_accuracy"] == 1.0  # the attack, not the clean accuracy, moved
        text = regression_text(compared_with[nodeid], rep)
        assert s3.failure(nodeid.split("::")[1]) == text, s3
        assert f"FAILED {nodeid} - Failed: adversarial accuracy fell" in s3.out
        fooled, back = changed(compared_with[nodeid], rep)
        cell_text = f"{current - base:+.3f} ({len(fooled)} fooled, {back} robust) REGRESSED"
        assert verdict(s3, nodeid) == (cell_text, "FAIL")
        assert rep["baseline"]["adversarial_accuracy"] == base
        assert rep["baseline"]["delta"] == pytest.approx(current - base, abs=1e-6)
        assert (rep["baseline"]["status"], rep["baseline"]["rule"]) == ("regressed", "paired")
        assert rep["baseline"]["paired"]["newly_fooled"] == len(fooled)
        assert rep["verdict"] == "fail"

    if "S4" not in story.runs:  # the short story (see UPTO)
        return
    # S4 accepts the new numbers; S5 compares and passes again
    s4, s5 = story.runs["S4"], story.runs["S5"]
    assert s4.ret == 0, s4
    assert f"baseline written to {story.baseline_path}: 5 entries written, 0 kept" in s4.notes
    updated = story.tests("S4")
    assert sorted(updated) == sorted(HEALTHY + [GAMMA, DELTA])
    for nodeid in updated:
        assert updated[nodeid]["adversarial_accuracy"] == story.adv("S3", nodeid)
    assert s5.ret == 0, s5
    assert s5.outcome("failed") == 0 and s5.outcome("passed") == 7
    for nodeid in updated:
        assert verdict(s5, nodeid) == ("+0.000 (0 fooled, 0 robust)", "PASS")
        assert story.report("S5", nodeid)["baseline"]["status"] == "ok"
        assert story.report("S5", nodeid)["baseline"]["delta"] == 0.0
    # compare runs leave the file alone
    assert story.files["S5"] == story.files["S4"]
    assert not [n for n in s3.notes + s5.notes if n.startswith("baseline written")]


# ------------------------------------------------------------- 2. missing entries


def test_missing_entry_under_each_policy(story):
    not_compared = {
        "adversarial_accuracy": None,
        "delta": None,
        "tolerance": TOLERANCE,
        "rule": None,
        "significance": 0.05,
        "paired": None,
        "note": None,
    }

    # warn: the test passes, one warning names it, the row and the report say "missing"
    s2 = story.runs["S2"]
    assert verdict(s2, GAMMA) == ("missing", "PASS")
    assert story.report("S2", GAMMA)["baseline"] == dict(not_compared, status="missing")
    assert [w for w in s2.warnings if "baseline entry" in w] == [f"{GAMMA}: {missing_text()}"], s2
    assert s2.out.count(missing_text()) == 1, s2

    # fail: the test fails, naming the policy; no warning on top
    s3 = story.runs["S3"]
    assert s3.failure("test_newer") == f"{missing_text()} (--advrobust-missing-baseline=fail)", s3
    assert f"FAILED {DELTA} - Failed: no baseline entry" in s3.out
    assert verdict(s3, DELTA) == ("missing", "FAIL")
    assert story.report("S3", DELTA)["baseline"] == dict(not_compared, status="missing")
    assert story.report("S3", DELTA)["verdict"] == "fail"
    assert not [w for w in s3.warnings if "baseline entry" in w], s3

    # skip: the test passes silently and is reported as not compared
    if "S5" not in story.runs:  # the short story (see UPTO)
        return
    s5 = story.runs["S5"]
    assert verdict(s5, EPSILON) == ("missing (skipped)", "PASS")
    assert story.report("S5", EPSILON)["baseline"] == dict(not_compared, status="missing (skipped)")
    assert "baseline entry" not in s5.out and "AdvRobustWarning" not in s5.out, s5


# ---------------------------------------------- 3. save=new, pruning, partial runs


def test_save_new_adds_only_missing_entries_and_prunes_only_deleted_tests(story):
    s2 = story.runs["S2"]
    assert s2.ret == 0, s2
    if story.mode != "n2":  # an xdist controller does not count deselected tests
        assert s2.outcome("deselected") == 1, s2
    before, after = story.edited["tests"], story.tests("S2")
    # the stale entry (its file is gone) is pruned and listed, once
    assert sorted(after) == sorted(HEALTHY + [GAMMA])
    assert f"pruned baseline entries of tests that no longer exist: {STALE}" in s2.notes, s2
    assert sum("pruned baseline entries" in line for line in s2.out.splitlines()) == 1
    # =new: LINF ran and measured more than its entry, which is kept as it was
    assert story.adv("S2", LINF) > before[LINF]["adversarial_accuracy"]
    assert after[LINF] == before[LINF]
    # the partial run (-k, file paths) keeps the entries of tests it did not run
    assert after[WIDER] == before[WIDER]
    assert after[BETA] == before[BETA]
    # the new test's entry is this run's numbers
    assert after[GAMMA]["adversarial_accuracy"] == story.adv("S2", GAMMA)
    assert after[GAMMA]["environment"]["torch"] != FAKE_TORCH
    assert f"baseline written to {story.baseline_path}: 1 entries written, 3 kept" in s2.notes

    # a full save prunes nothing that still exists
    if "S4" in story.runs:
        assert "pruned" not in story.runs["S4"].out


# ------------------------------------------------------------ 4. warnings, once


def test_fingerprint_warning_appears_exactly_once(story):
    current = story.files["S1"]["environment"]["torch"]
    assert current != FAKE_TORCH
    difference = f"(torch {FAKE_TORCH} -> {current})"
    expected = (
        f"baseline {BASELINE} was recorded in another environment {difference}; "
        "numbers may differ for that reason alone"
    )
    s2 = story.runs["S2"]
    assert [w for w in s2.warnings if "another environment" in w] == [expected], s2
    assert expected in s2.notes
    # once in the warnings summary, once in the advrobust section, never per worker
    assert s2.out.count(difference) == 2, s2
    # S2 wrote an entry, so the file now carries this run's environment
    for step in set(story.runs) - {"S2"}:
        assert "another environment" not in story.runs[step].out, step


# ------------------------------------------------- 4. xdist modes give the same results


@pytest.mark.parametrize("mode", ["n0", "n2"])
def test_xdist_modes_agree_with_a_plain_run(story_of, mode):
    plain, other = story_of("no-n"), story_of(mode)
    assert len(other.runs) == UPTO[mode]
    for step in other.runs:
        a, b = plain.runs[step], other.runs[step]
        assert a.ret == b.ret, (step, a, b)
        assert a.rows and sorted(a.rows.values()) == sorted(b.rows.values()), (step, a, b)
        assert comparable(plain.reports[step]) == comparable(other.reports[step]), step
        assert plain.files[step] == other.files[step], step
        assert sorted(a.warnings) == sorted(b.warnings), (step, a, b)
        for word in ("passed", "failed", "error", "warning"):
            assert a.outcome(word) == b.outcome(word), (step, word, a, b)
    if mode == "n2":  # the runs really were distributed
        assert "created: 2/2 workers" in other.runs["S1"].out


def test_without_the_xdist_plugin_and_with_a_baseline_path(story_of, tmp_path):
    """S2 again, from the same starting point, with -p no:xdist and a baseline path."""
    plain = story_of("no-n")
    repo = make_repo(tmp_path / "repo")
    (repo / "test_gamma.py").write_text(TEST_GAMMA)
    (repo / "ci").mkdir()
    (repo / "ci" / "gate.json").write_text(json.dumps(plain.edited))
    run = pytest_run(
        repo,
        "-p",
        "no:xdist",
        "--advrobust-baseline=ci/gate.json",
        "--advrobust-json=S2.json",
        *S2_ARGS,
    )
    ref = plain.runs["S2"]
    assert run.ret == ref.ret == 0, run
    assert not re.search(r"\[gw\d+\]", run.out) and "workers" not in run.out
    assert sorted(run.rows.values()) == sorted(ref.rows.values()), run
    assert comparable(json.loads((repo / "S2.json").read_text())) == comparable(plain.reports["S2"])
    assert json.loads((repo / "ci" / "gate.json").read_text()) == plain.files["S2"]
    assert not (repo / BASELINE).exists()
    assert run.warnings == [w.replace(BASELINE, "gate.json") for w in ref.warnings], run
    assert [n for n in run.notes if n.startswith("pruned")] == [
        n for n in ref.notes if n.startswith("pruned")
    ]


# --------------------------------------------------------------- 5. advrobust compare


def test_advrobust_compare_on_real_reports(story_of):
    plain = story_of("no-n")
    healthy, degraded = plain.repo / "S1.json", plain.repo / "S3.json"

    same = cli("compare", healthy, healthy)
    assert same.returncode == 0, same
    assert "no regression beyond tolerance 0.020 (3 compared)" in same.stdout

    worse = cli("compare", healthy, degraded)
    assert worse.returncode == 1, worse
    assert "3 regressions beyond tolerance 0.020 (3 compared, 2 only in " in worse.stdout
    for nodeid in HEALTHY:
        assert re.search(rf"^{re.escape(nodeid)}\s.*REGRESSED$", worse.stdout, re.M), worse
        text = regression_text(plain.report("S1", nodeid), plain.report("S3", nodeid))
        assert f"  {nodeid}: {text}" in worse.stdout, worse
    for nodeid in (GAMMA, DELTA):
        assert re.search(rf"^{re.escape(nodeid)}\s.*only in NEW$", worse.stdout, re.M), worse

    better = cli("compare", degraded, healthy)  # an improvement is no failure
    assert better.returncode == 0, better
    assert "improved" in better.stdout
    assert cli("compare", healthy, degraded, "--tolerance", "0.9").returncode == 0

    # the baseline file (updated by S4) against a report
    assert cli("compare", healthy, plain.baseline_path).returncode == 1
    assert cli("compare", plain.baseline_path, plain.repo / "S5.json").returncode == 0

    # the reports of an xdist run compare equal to the plain ones
    dist = story_of("n2")
    across = cli("compare", degraded, dist.repo / "S3.json")
    assert across.returncode == 0, across
    assert "no regression beyond tolerance 0.020 (5 compared)" in across.stdout
    assert "environments differ" not in across.stdout


# ------------------------------------------------------------------ 6. JUnit XML


def junit_cases(xml: str) -> Dict[str, ET.Element]:
    root = ET.fromstring(xml)
    return {
        f"{c.get('classname').replace('.', '/')}.py::{c.get('name')}": c
        for c in root.iter("testcase")
    }


@pytest.mark.parametrize(
    "mode, step",
    [(mode, step) for mode in MODES for step in ("S3", "S5") if int(step[1]) <= UPTO[mode]],
)
def test_junit_xml_carries_the_advrobust_properties(story_of, mode, step):
    story = story_of(mode)
    cases = junit_cases(story.junit[step])
    robust = [r["nodeid"] for r in story.reports[step]["tests"]]
    assert sorted(cases) == sorted(robust + [PLAIN])
    for nodeid in robust:
        props = {p.get("name"): p.get("value") for p in cases[nodeid].iter("property")}
        rep = story.report(step, nodeid)
        for key in (
            "attack",
            "eps",
            "n",
            "clean_accuracy",
            "adversarial_accuracy",
            "gap",
            "threshold",
            "verdict",
        ):
            assert props[f"advrobust_{key}"] == str(rep[key]), (nodeid, key, props)
        assert json.loads(props["advrobust_report"]) == rep
        failed = cases[nodeid].find("failure") is not None
        assert failed == (rep["verdict"] == "fail") == (step == "S3"), nodeid
    assert not list(cases[PLAIN].iter("property"))


# ------------------------------------------- 3. a run narrowed to one test by its node id


def test_saving_one_test_by_node_id_keeps_its_siblings(tmp_path):
    make_repo(tmp_path)
    entry = {"adversarial_accuracy": 0.5, "eps": 0.09, "n": 120, "attack": "pgd"}
    (tmp_path / BASELINE).write_text(
        json.dumps(
            {
                "schema_version": 1,
                "environment": {},
                "tests": {LINF: dict(entry), WIDER: dict(entry)},
            }
        )
    )
    run = pytest_run(tmp_path, LINF, "--advrobust-save-baseline=all")
    assert run.ret == 0, run
    tests = json.loads((tmp_path / BASELINE).read_text())["tests"]
    assert tests[LINF]["adversarial_accuracy"] != 0.5  # re-recorded
    assert "pruned" not in run.out, run  # WIDER still exists; it was not selected
    assert tests.get(WIDER) == entry
