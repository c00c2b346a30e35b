"""Reports where reviewers look (#13): pytest-html rows, the CI job summary, the
history command, and the misreadings that README alone led to.

Each plugin test runs a real pytest session in a subprocess on the blobs model of
``tests/_support.py`` with cheap PGD settings, so that each takes seconds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_advrobust.reports import images  # noqa: F401  (torch-free at import)

Image = pytest.importorskip("PIL.Image")

ROBUST_TESTS = """
import pytest

@pytest.mark.robust(threshold=0.9, attack="pgd", eps=0.1, steps=10, n_samples=90)
def test_passes():
    pass

@pytest.mark.robust(threshold=0.01, attack="pgd", eps=0.2, steps=10, n_samples=90)
def test_fails():
    pass

@pytest.mark.robust(threshold=0.01, attack="pgd", eps=[0.02, 0.2], threshold_eps=0.02,
                    steps=10, n_samples=90)
def test_sweep():
    pass

def test_plain():
    pass
"""


def run(pytester, *args, env=None):
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return pytester.runpytest_subprocess("-p", "no:randomly", "--advrobust-sanity=off", *args)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def embedded_pngs(text: str):
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


def advrobust_section(stdout: str):
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "advrobust" in line and "===" in line)
    return [
        line
        for line in lines[start + 1 :]
        if not line.startswith(("=", "-----")) and "html report" not in line
    ][:5]


# ------------------------------------------------------------------ pytest-html


@pytest.mark.parametrize("self_contained", [False, True])
def test_html_report_carries_numbers_and_embedded_pictures(blobs_repo, self_contained):
    pytest.importorskip("pytest_html")
    blobs_repo.makepyfile(test_r=ROBUST_TESTS)
    extra = ["--self-contained-html"] if self_contained else []
    result = run(blobs_repo, "--advrobust", "--html=report.html", "--advrobust-json=r.json", *extra)
    result.assert_outcomes(passed=3, failed=1)
    text = (blobs_repo.path / "report.html").read_text(encoding="utf-8")
    doc = json.loads((blobs_repo.path / "r.json").read_text())
    reports = {t["nodeid"]: t for t in doc["tests"]}
    for nodeid, rep in reports.items():
        # each robust test's own numbers, as the JSON report has them
        for number in (
            rep["clean_accuracy"],
            rep["adversarial_accuracy"],
            rep["gap"],
            rep["threshold"],
            *rep["adversarial_ci"],
        ):
            assert f"{number:.3f}" in text, (nodeid, number)
        assert (
            f"{rep['verdict'].upper()} gap {rep['gap']:.3f} / threshold "
            f"{rep['threshold']:.3f}" in text
        )
    assert "0.02 (sweep 0.02,0.2)" in text
    pngs = embedded_pngs(text)
    assert len(pngs) == 4  # three galleries and one curve, inside the file itself
    for png in pngs:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        import io

        with Image.open(io.BytesIO(png)) as img:
            img.verify()
    # nothing robust was written beside the file (pytest-html's assets/ holds only its CSS)
    assets = blobs_repo.path / "assets"
    assert not assets.exists() or {p.suffix for p in assets.iterdir()} <= {".css"}


def test_without_pytest_html_nothing_changes(blobs_repo):
    pytest.importorskip("pytest_html")
    blobs_repo.makepyfile(test_r=ROBUST_TESTS)
    plain = run(blobs_repo, "--advrobust", "--advrobust-retrain")  # evaluated, not reused
    off = run(blobs_repo, "--advrobust", "--advrobust-retrain", "-p", "no:html")
    off.assert_outcomes(passed=3, failed=1)
    assert advrobust_section(off.stdout.str()) == advrobust_section(plain.stdout.str())
    assert "html report" not in off.stdout.str()
    assert not list(blobs_repo.path.glob("*.html"))
    assert off.ret == plain.ret == 1


# ------------------------------------------------------------ CI job summary


def test_step_summary_written_once_under_xdist_and_equal_to_a_plain_run(blobs_repo):
    pytest.importorskip("xdist")
    blobs_repo.makepyfile(test_r=ROBUST_TESTS)
    tables = []
    for extra in ([], ["-n", "2"]):
        summary = blobs_repo.path / "step-summary.md"
        summary.write_text("earlier step\n")
        result = run(
            blobs_repo,
            "--advrobust",
            "--advrobust-markdown=table.md",
            *extra,
            env={"GITHUB_STEP_SUMMARY": str(summary)},
        )
        result.assert_outcomes(passed=3, failed=1)
        text = summary.read_text()
        assert text.startswith("earlier step\n")  # appended, as GitHub expects
        assert text.count("### pytest-advrobust") == 1
        table = text[len("earlier step\n") :]
        assert (blobs_repo.path / "table.md").read_text() + "\n" == table
        tables.append(table)
    assert tables[0] == tables[1]
    rows = [line for line in tables[0].splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| verdict | test | attack | eps |") and "baseline delta" in rows[0]
    # failures first, then passes; every robust test once, the plain test not at all
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["**FAIL**", "PASS", "PASS"]
    assert "test_fails" in rows[2] and "test_plain" not in tables[0]
    assert "| 0.02 (sweep 0.02,0.2) |" in tables[0]


def test_markdown_from_ini_and_nothing_without_a_target(blobs_repo):
    blobs_repo.makepyfile(test_r=ROBUST_TESTS)
    blobs_repo.makeini("[pytest]\nadvrobust_markdown = out/summary.md\n")
    env = {"GITHUB_STEP_SUMMARY": ""}
    run(blobs_repo, "--advrobust", env=env).assert_outcomes(passed=3, failed=1)
    assert (blobs_repo.path / "out" / "summary.md").read_text().count("| ") >= 4
    (blobs_repo.path / "out" / "summary.md").unlink()
    blobs_repo.makeini("[pytest]\n")
    again = run(blobs_repo, "--advrobust", env=env)
    assert not (blobs_repo.path / "out" / "summary.md").exists()
    assert "Markdown summary" not in again.stdout.str()


# ------------------------------------------------------------------- history

DEGRADED_MODEL = """

import os


@pytest.fixture(scope="session")
def robust_model():  # replaces the blobs model: each step pulls the class centres together
    _, _, centres = make_blobs()
    step = int(os.environ["DEGRADE"])
    mean = centres.mean(0, keepdim=True)
    return NearestCentre(mean + (centres - mean) * (1.0 - 0.3 * step))
"""


def test_history_of_three_reports_of_a_model_degraded_step_by_step(pytester):
    from _support import BLOBS_CONFTEST

    pytester.makeconftest(BLOBS_CONFTEST + DEGRADED_MODEL)
    pytester.makepyfile(
        test_h="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.08, steps=10, n_samples=90)
        def test_pgd():
            pass
    """
    )
    (pytester.path / "reports").mkdir()
    accs = []
    for step in range(3):
        run(
            pytester,
            "--advrobust",
            f"--advrobust-json=reports/run{step}.json",
            env={"DEGRADE": str(step)},
        ).assert_outcomes(passed=1)
        doc = json.loads((pytester.path / "reports" / f"run{step}.json").read_text())
        accs.append(doc["tests"][0]["adversarial_accuracy"])
    assert accs[0] > accs[1] > accs[2]  # the model really degraded step by step
    out = subprocess.run(
        [sys.executable, "-m", "pytest_advrobust.cli", "history", "reports", "--plot", "h.png"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TEST", "run0", "run1", "run2", "FLOOR", "BASELINE"]
    row = lines[1].split()
    assert row[0] == "test_h.py::test_pgd"
    assert [float(v) for v in row[1:4]] == [round(a, 3) for a in accs]
    assert lines[-1] == "plot written to h.png"
    with Image.open(pytester.path / "h.png") as img:
        assert img.format == "PNG" and img.size == (700, 400)
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
        assert (31, 119, 180) in colours  # the test's line (matplotlib's C0)
    # files given one by one keep the order given
    rev = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_advrobust.cli",
            "history",
            "reports/run2.json",
            "reports/run0.json",
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )
    assert rev.stdout.splitlines()[0].split()[1:3] == ["run2", "run0"]


def test_example_workflow_uses_the_html_report_and_the_step_summary():
    root = Path(__file__).resolve().parents[1]
    text = (root / "examples" / "github-actions.yml").read_text()
    gate = text[text.index("- name: Robustness gate") : text.index("- name: Prune")]
    assert "--html=advrobust-report.html" in gate and "--self-contained-html" in gate
    assert "-n auto" in gate and "GITHUB_STEP_SUMMARY" in text
    upload = text[text.index("- name: Upload the robustness report") :]
    assert "advrobust-report.html" in upload and "if: always()" in upload
    assert '"pytest-advrobust[html,xdist] @ ${ADVROBUST_FROM}"' in text


def test_step_summary_lists_robust_tests_that_errored_before_any_numbers(blobs_repo):
    blobs_repo.makepyfile(
        test_e="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.1)
        def test_fine():
            pass

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.1, model="no_such_model")
        def test_broken():
            pass
        """
    )
    summary = blobs_repo.path / "summary.md"
    result = run(blobs_repo, "--advrobust", env={"GITHUB_STEP_SUMMARY": str(summary)})
    result.assert_outcomes(passed=1, errors=1)
    text = summary.read_text()
    assert "1 robust test, 0 failed, 1 passed." in text
    assert "1 more robust test ended in an error before any numbers" in text
    assert "`test_e.py::test_broken`" in text


def test_counts_in_reports_agree_with_their_noun():
    from pytest_advrobust.reports.tables import counted

    assert [counted(n, "flag") for n in (0, 1, 2)] == ["0 flags", "1 flag", "2 flags"]


def test_the_json_report_is_strict_json_when_a_number_is_unknown(tmp_path):
    from pytest_advrobust.reports.report import write_json_report

    rep = {"nodeid": "t.py::a", "training": {"holdout_success": float("nan")}, "gap": 0.25}
    path = write_json_report(tmp_path / "r.json", [rep], {"torch": "x"}, "0")

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    doc = json.loads(path.read_text(), parse_constant=refuse)
    assert doc["tests"][0]["training"]["holdout_success"] is None
    assert doc["tests"][0]["gap"] == 0.25
