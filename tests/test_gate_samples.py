"""The gate judges samples (#18), end to end: pytest runs in a subprocess on the blobs
model of ``tests/_support.py``.

The model's forward appends a line to ``CALLS`` in the test folder, so each run says
how many times it called the model; ``WEIGHT_NOISE`` degrades it (a "bad commit"),
``PERMUTE`` reorders the data set and ``EDIT`` edits its first samples.

One repository plays a story, each step a pytest run, shared by the tests below:

  save     --advrobust-save-baseline                       record the model's verdicts
  again    (nothing changed)                               the stored evaluation is reused
  fall     WEIGHT_NOISE: --advrobust-compare, images, Markdown, HTML
  old      the baseline rewritten in schema 1: --advrobust-compare
  permute  the data reordered: --advrobust-compare
  edited   7 samples edited: --advrobust-compare
  code     the model's forward edited (same weights)
  retrain  --advrobust-retrain
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

import pytest
from _support import BLOBS_CONFTEST, run_cli

from pytest_advrobust.gate.comparison_text import p_text
from pytest_advrobust.metrics.record import decode

Image = pytest.importorskip("PIL.Image")

CONFTEST = BLOBS_CONFTEST + textwrap.dedent(
    """
    import os
    import pathlib

    HERE = pathlib.Path(__file__).parent


    class Counted(NearestCentre):
        def forward(self, x):
            with open(HERE / "CALLS", "a") as f:
                f.write("1\\n")
            return super().forward(x)


    @pytest.fixture(scope="session")
    def robust_model():
        model = Counted(make_blobs()[2])
        noise = float(os.environ.get("WEIGHT_NOISE", "0"))
        if noise:
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                model.fc.weight.add_(noise * torch.randn(model.fc.weight.shape, generator=g))
        return model


    @pytest.fixture(scope="session")
    def robust_data():
        x, y, _ = make_blobs()
        if os.environ.get("PERMUTE"):
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(7))
            x, y = x[order], y[order]
        edit = int(os.environ.get("EDIT", "0"))
        if edit:
            x = x.clone()
            x[:edit] = (x[:edit] + 0.01).clamp(0, 1)
        return x, y
    """
)

# all 300 blobs samples: a data set edited or reordered keeps its evaluation samples
TESTS = """
import pytest
import torch

@pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.09, steps=10, n_samples=300)
def test_pgd(adversarial_batch):
    torch.save(adversarial_batch.x_adv, "x_adv.pt")
"""
NODE = "test_g.py::test_pgd"


ENV_KNOBS = ("WEIGHT_NOISE", "PERMUTE", "EDIT")
HTML = importlib.util.find_spec("pytest_html") is not None


@dataclass
class Run:
    ret: int
    out: str
    calls: int
    reports: Dict[str, Any]

    def __repr__(self) -> str:  # what an assertion shows
        return f"--- rc {self.ret}, {self.calls} model calls\n{self.out}"


def pytest_run(repo: Path, *args: str, json_name: str = "r.json", **env: str) -> Run:
    calls = repo / "CALLS"
    if calls.exists():
        calls.unlink()
    environ = {k: v for k, v in os.environ.items() if k not in ENV_KNOBS}
    environ.update(env, OMP_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "--advrobust",
            f"--advrobust-json={json_name}",
            "-rA",
            *args,
        ],
        cwd=repo,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    doc = json.loads((repo / json_name).read_text())
    return Run(
        proc.returncode,
        proc.stdout + proc.stderr,
        len(calls.read_text().splitlines()) if calls.exists() else 0,
        {r["nodeid"]: r for r in doc["tests"]},
    )


@dataclass
class Story:
    repo: Path
    runs: Dict[str, Run] = field(default_factory=dict)
    baseline: Dict[str, Any] = field(default_factory=dict)

    def rep(self, step: str) -> Dict[str, Any]:
        return self.runs[step].reports[NODE]


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> Story:
    repo = tmp_path_factory.mktemp("gate-story")
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / "conftest.py").write_text(CONFTEST)
    (repo / "test_g.py").write_text(TESTS)
    s = Story(repo)

    def step(name: str, *args: str, **env: str) -> None:
        s.runs[name] = pytest_run(repo, *args, json_name=f"{name}.json", **env)

    step("save", "--advrobust-save-baseline")
    shutil.copy(repo / "x_adv.pt", repo / "x_adv_save.pt")
    s.baseline = json.loads((repo / "advrobust-baseline.json").read_text())
    step("again")
    shutil.copy(repo / "x_adv.pt", repo / "x_adv_again.pt")
    html = ["--html=report.html"] if HTML else []
    compare = "--advrobust-compare"
    step(
        "fall",
        compare,
        "--advrobust-images=pics",
        "--advrobust-markdown=summary.md",
        *html,
        WEIGHT_NOISE="0.02",
    )
    shutil.copy(repo / "x_adv.pt", repo / "x_adv_fall.pt")
    old = json.loads(json.dumps(s.baseline))
    old["schema_version"] = 1
    for entry in old["tests"].values():
        del entry["samples"]
    (repo / "old-baseline.json").write_text(json.dumps(old))
    step("old", compare, "--advrobust-baseline=old-baseline.json", WEIGHT_NOISE="0.02")
    step("permute", compare, PERMUTE="1")
    step("edited", compare, EDIT="7")
    conftest = repo / "conftest.py"
    text = conftest.read_text()
    conftest.write_text(
        text.replace("return super().forward(x)", "return super().forward(x) + 0.0")
    )
    step("code")
    step("retrain", "--advrobust-retrain")
    return s


# ------------------------------------------------------------ the per-sample record


def test_report_and_baseline_carry_each_samples_id_and_verdicts(story):
    rep = story.rep("save")
    assert story.runs["save"].ret == 0, story.runs["save"]
    rec = decode(rep["samples"])
    assert len(rec) == rep["n"] == 300 and rec.index == list(range(300))
    assert sum(rec.clean) / 300 == pytest.approx(rep["clean_accuracy"], abs=1e-6)
    assert sum(rec.robust) / 300 == pytest.approx(rep["adversarial_accuracy"], abs=1e-6)
    assert not any(r and not c for r, c in zip(rec.robust, rec.clean))
    assert len(set(rec.ids)) == 300
    assert story.baseline["schema_version"] == 2
    assert story.baseline["tests"][NODE]["samples"] == rep["samples"]

    # the same data in another order: each sample keeps its id, so all 300 pair up again
    permuted = story.runs["permute"]
    assert permuted.ret == 0, permuted
    moved = decode(story.rep("permute")["samples"])
    assert sorted(moved.ids) == sorted(rec.ids) and moved.ids != rec.ids
    paired = story.rep("permute")["baseline"]["paired"]
    assert (paired["shared"], paired["only_current"], paired["only_baseline"]) == (300, 0, 0)
    assert paired["newly_fooled"] == paired["newly_robust"] == 0


def test_an_old_format_baseline_still_compares_with_a_note(story):
    run = story.runs["old"]
    assert run.ret == 1, run
    assert story.rep("old")["baseline"]["rule"] == "absolute"
    assert re.search(
        r"adversarial accuracy fell 0\.\d{3} below baseline \(baseline 0\.890 -> current "
        r"0\.\d{3}, delta -0\.\d{3}, tolerance 0\.020\); judged by the absolute rule: the "
        r"baseline entry has no per-sample verdicts \(it was saved by an older version\); "
        r"save the baseline again to compare sample by sample",
        run.out,
    ), run
    assert " (absolute rule) REGRESSED" in run.out


# --------------------------------------------- a real fall: the message and the gallery


def test_a_fall_fails_with_counts_interval_p_value_and_the_gallery_of_those_samples(story):
    run, rep = story.runs["fall"], story.rep("fall")
    assert run.ret == 1, run
    paired = rep["baseline"]["paired"]
    k, back, m = paired["newly_fooled"], paired["newly_robust"], paired["shared"]
    assert k > 16 and m == 300 and rep["baseline"]["status"] == "regressed"
    lo, hi = paired["delta_ci"]
    first = ", ".join(f"#{s['index']} ({s['id'][:8]})" for s in paired["newly_fooled_samples"][:5])
    expected = (
        f"adversarial accuracy fell {-paired['delta']:.3f} ({k} newly fooled, {back} newly "
        f"robust of {m}; 95% CI [{-hi:.3f}, {-lo:.3f}], {p_text(paired['p_fall'])}) > "
        f"tolerance 0.020 (baseline 0.890 -> current {rep['adversarial_accuracy']:.3f}); "
        f"newly fooled: {first} and {k - 5} more"
    )
    assert expected in run.out
    assert paired["p_fall"] < 0.05
    # the changed samples are the baseline's robust ones that this run fools
    old, new = decode(story.baseline["tests"][NODE]["samples"]), decode(rep["samples"])
    fooled = [i for i in range(300) if old.robust[i] and not new.robust[i]]
    assert [s["index"] for s in paired["newly_fooled_samples"]] == fooled

    # the gallery of the newly fooled samples shows exactly the first 16 of them: its
    # clean, adversarial and perturbation rows are those of a gallery of these samples
    png = story.repo / "pics" / "test_g.py_test_pgd-newly-fooled.png"
    assert str(png) in rep["images"]
    with Image.open(png) as written:
        assert_same_rows(written, gallery_of_samples(story.repo, fooled[:16]))


def test_markdown_and_html_show_the_samples_that_changed(story):
    paired = story.rep("fall")["baseline"]["paired"]
    k, back = paired["newly_fooled"], paired["newly_robust"]
    first = paired["newly_fooled_samples"][0]
    md = (story.repo / "summary.md").read_text()
    assert f"({k} fooled, {back} robust) REGRESSED**" in md
    assert "**Samples that changed since the baseline**" in md
    assert (
        f"- `{NODE}`: {k} newly fooled, {back} newly robust of 300 shared samples (change "
        f"{paired['delta']:+.3f}, 95% CI [" in md
    )
    assert f"newly fooled: #{first['index']} ({first['id'][:8]})" in md
    if not HTML:
        pytest.skip("pytest-html is not installed")
    html = (story.repo / "report.html").read_text()
    assert f"{k} newly fooled, {back} newly robust of 300 shared" in html
    assert "samples newly fooled since the baseline in test_g.py::test_pgd" in html


def test_the_cli_prints_the_paired_table_and_the_message_of_a_fall(story):
    out = cli("compare", "save.json", "fall.json", cwd=story.repo)
    assert out.returncode == 1, out.stdout + out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split() == [
        "TEST",
        "OLD",
        "NEW",
        "DELTA",
        "FOOLED",
        "ROBUST",
        "SHARED",
        "95%",
        "CI",
        "P",
        "STATUS",
    ]
    paired = story.rep("fall")["baseline"]["paired"]
    cells = row.split()
    assert cells[0] == NODE and cells[-1] == "REGRESSED" and cells[6] == "300"
    assert cells[4:6] == [str(paired["newly_fooled"]), str(paired["newly_robust"])]
    message = next(line for line in story.runs["fall"].out.splitlines() if "fell" in line)
    assert f"  {NODE}: {message}" in out.stdout


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)


# ------------------------------------------------------- an edited data set


def test_an_edited_data_set_compares_its_shared_samples(story):
    rep = story.rep("edited")
    paired = rep["baseline"]["paired"]
    assert (paired["shared"], paired["only_current"], paired["only_baseline"]) == (293, 7, 7)
    assert rep["baseline"]["rule"] == "paired"
    assert (
        f"{paired['newly_fooled']} newly fooled, {paired['newly_robust']} newly robust of 293 "
        "shared samples (the data changed: 7 of this run's samples are not in the baseline, 7 "
        "of the baseline's are gone)"
    ) in rep_message(story, "edited")
    out = cli("compare", "save.json", "edited.json", cwd=story.repo)
    assert out.stdout.splitlines()[1].split()[6] == "293"


def rep_message(story: Story, step: str) -> str:
    """The comparison's sentence as the run shows it (failure or summary row)."""
    from pytest_advrobust.gate.comparison import compare

    rep = story.rep(step)
    return compare(story.baseline["tests"][NODE], rep, 0.02).message


# ------------------------------------------------------------------ reuse


def test_an_unchanged_model_is_not_evaluated_again(story):
    save, again = story.runs["save"], story.runs["again"]
    assert save.calls > 0 and story.rep("save")["reused"] is False
    assert again.ret == 0 and again.calls == 0  # no clean pass, no attack, no sanity check
    assert story.rep("again")["reused"] is True
    assert dict(story.rep("save"), reused=True) == story.rep("again")  # bit for bit
    assert "test_g.py::test_pgd" in again.out and "PASS, reused" in again.out
    # the same adversarial_batch
    import torch

    first, second = (
        torch.load(story.repo / f"x_adv_{step}.pt", weights_only=True) for step in ("save", "again")
    )
    assert torch.equal(first, second) and first.dtype == second.dtype
    # any change computes again: the weights, the data, the model's code, --advrobust-retrain
    for step in ("fall", "permute", "edited", "code", "retrain"):
        assert story.runs[step].calls > 0 and not story.rep(step)["reused"], step
    # a compare against another baseline file reuses the evaluation it needs
    assert story.runs["old"].calls == 0 and story.rep("old")["reused"]


GAN_TESTS = """
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=60)
def test_gan():
    pass
"""


def test_a_reused_gan_evaluation_trains_and_loads_nothing(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_gan.py").write_text(GAN_TESTS)
    args = ("--advrobust-gan-steps=20", "--advrobust-cache-dir=cache")
    first = pytest_run(tmp_path, *args, json_name="a.json")
    assert first.ret == 0, first
    events = (tmp_path / "cache" / "events.jsonl").read_text()
    assert '"kind": "train"' in events
    second = pytest_run(tmp_path, *args, json_name="b.json")
    assert second.ret == 0 and second.calls == 0, second
    assert (tmp_path / "cache" / "events.jsonl").read_text() == events  # no look-up
    node = "test_gan.py::test_gan"
    a, b = first.reports[node], second.reports[node]
    assert b["reused"] and b["training"]["mode"] == "cached"
    assert b["training"]["trained_mode"] == a["training"]["mode"] == "cold"
    strip = ("reused", "training")
    assert {k: v for k, v in a.items() if k not in strip} == {
        k: v for k, v in b.items() if k not in strip
    }
    assert dict(a["training"], mode="cached", trained_mode="cold") == b["training"]


def gallery_of_samples(repo, rows):
    """A gallery of the given samples of the blobs data, with the fall run's ``x_adv``."""
    import torch

    from pytest_advrobust.reports.images import gallery_image

    x, y = make_blobs()[:2]
    x_adv = torch.load(repo / "x_adv_fall.pt", weights_only=True)
    labels = (y[rows], y[rows], y[rows])
    return gallery_image(x[rows], x_adv[rows], labels, max_images=len(rows))


def make_blobs():
    namespace = {}
    exec(BLOBS_CONFTEST, namespace)
    return namespace["make_blobs"]()


def assert_same_rows(written, expected):
    """The three image rows (not the caption bands or the title) are pixel for pixel equal."""
    from pytest_advrobust.reports.images import TEXT_HEIGHT, TITLE_HEIGHT

    assert written.size[0] == expected.size[0]  # as many columns
    row_h = (expected.size[1] - 3 * TEXT_HEIGHT) // 3
    assert written.size[1] == TITLE_HEIGHT + 3 * (row_h + TEXT_HEIGHT)
    for r in range(3):
        top_w, top_e = TITLE_HEIGHT + r * (row_h + TEXT_HEIGHT), r * (row_h + TEXT_HEIGHT)
        band_w = written.convert("RGB").crop((0, top_w, written.size[0], top_w + row_h))
        band_e = expected.convert("RGB").crop((0, top_e, expected.size[0], top_e + row_h))
        assert band_w.tobytes() == band_e.tobytes(), f"row {r} differs"


# ------------------------------------------------------------ chance from the labels

IMBALANCED = """

@pytest.fixture(scope="session")
def imbalanced():
    # 4 classes, 69% of the labels class 0, labels shuffled (they say nothing of x)
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 207 + [1] * 31 + [2] * 31 + [3] * 31)[torch.randperm(300, generator=g)]
    return torch.rand(300, 20, generator=g), y


class MostlyZero(torch.nn.Module):  # what a model fitted to such labels learns
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(20, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(4, 20, generator=torch.Generator().manual_seed(1)))
            self.fc.bias.copy_(torch.tensor([3.5, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.fc(x - 0.5)


@pytest.fixture(scope="session")
def mostly_zero():
    return MostlyZero()
"""


def test_imbalanced_shuffled_labels_fail_the_nothing_to_lose_rule_naming_the_majority(
    pytester,
):
    pytester.makeconftest(BLOBS_CONFTEST + IMBALANCED)
    pytester.makepyfile(
        test_chance="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.05, steps=5, n_samples=300,
                            model="mostly_zero", data="imbalanced", bounds=None)
        def test_shuffled():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--advrobust", "--advrobust-json=r.json"
    )
    result.assert_outcomes(failed=1)
    rep = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    assert 0.6 < rep["clean_accuracy"] < 0.7
    assert rep["clean_ci"][0] > 0.25  # the old floor, 1/classes, would have passed it
    result.stdout.re_match_lines(
        [
            rf"clean accuracy {rep['clean_accuracy']:.3f} \[0\.\d{{3}}, 0\.\d{{3}}\] \(n=300\) of "
            r"the model from fixture 'mostly_zero' on fixture 'imbalanced' is not clearly above "
            r"chance \(0\.690: always predicting the most frequent label, 0, scores 0\.690 on "
            r"these 300 samples, and guessing with the model's own prediction frequencies "
            r"0\.\d{3}\), so there is nothing for an attack to take.*"
        ]
    )


# --------------------------------------------------- a model random in eval mode

NOISY = """

class Noisy(Counted):
    def forward(self, x):
        return super().forward(x) + 0.3 * torch.randn(x.shape[0], 3)


@pytest.fixture(scope="session")
def noisy_model():
    model = Noisy(make_blobs()[2])
    noise = float(os.environ.get("WEIGHT_NOISE", "0"))
    with torch.no_grad():
        model.fc.weight.add_(noise * torch.randn(model.fc.weight.shape,
                                                 generator=torch.Generator().manual_seed(1)))
    return model
"""


def test_a_fall_of_a_random_model_names_its_noise(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST + NOISY)
    (tmp_path / "test_g.py").write_text(
        TESTS.replace("n_samples=300", "n_samples=300, model='noisy_model'")
    )
    assert pytest_run(tmp_path, "--advrobust-save-baseline").ret == 0
    run = pytest_run(tmp_path, "--advrobust-compare", WEIGHT_NOISE="0.1")
    assert run.ret == 1, run
    rep = run.reports[NODE]
    flag = next(f for f in rep["sanity"] if f["flag"] == "nondeterministic")
    assert rep["baseline"]["status"] == "nondeterministic"
    changed, checked = flag["changed"], flag["checked"]
    assert (
        f"; but the model is random in eval mode (sanity flag nondeterministic: two forward "
        f"passes over the same {checked} inputs changed {changed} predictions "
        f"({changed / checked:.1%})), so the difference may be the model's own noise rather "
        "than the commit"
    ) in run.out, run
    assert "NOISY MODEL" in run.out
