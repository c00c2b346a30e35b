"""Long stages say so, a cache shared by two plugin versions keeps both, and pictures and
tables show all a reviewer needs (#20). One kind per test, each run in a subprocess on
the instance from the issue and on one of our own."""

import html
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _support import run_cli

ROOT = Path(__file__).resolve().parents[1]


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)


def cli(*args, cwd):
    return run_cli(*args, cwd=cwd)


# ------------------------------------------------------------ progress lines

SLOW_CONFTEST = """
import time
import pytest
import torch
from torch.utils.data import Dataset

g = torch.Generator().manual_seed(0)
x = torch.rand(64, 6, generator=g)
W = torch.randn(6, 3, generator=g)

class Slow(torch.nn.Module):  # every call takes a while, as a big model on a CPU does
    def forward(self, x):
        time.sleep(0.01)
        return x @ W

class SlowItems(Dataset):  # a dataset whose transforms take a while
    def __len__(self):
        return 64
    def __getitem__(self, i):
        time.sleep(0.005)
        return x[i], int((x[i] @ W).argmax())

@pytest.fixture(scope="session")
def robust_model():
    return Slow()

@pytest.fixture(scope="session")
def robust_data():
    return SlowItems()
"""

SLOW_TESTS = """
import pytest

@pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.3, steps=30, random_start=True,
                    restarts=2, sanity="off")
def test_attack(): pass

@pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.3, n_samples=32, sanity="off")
def test_other(): pass
"""


@pytest.mark.parametrize("how", [("-q",), ("-q", "-p", "xdist", "-n", "2")], ids=["q", "xdist"])
def test_long_stages_print_progress_lines(pytester, how):
    pytester.makeconftest(SLOW_CONFTEST)
    pytester.makepyfile(test_slow=SLOW_TESTS)
    result = run(pytester, "--advrobust", "--advrobust-progress-seconds=0.1", *how)
    result.assert_outcomes(passed=2)
    prefix = "[[]gw?[]] " if "xdist" in how else ""
    result.stdout.fnmatch_lines(
        [
            f"{prefix}advrobust: test_slow.py::test_attack: attack 'pgd' at eps=0.3 for * s "
            "(* model calls), * s in all",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            f"{prefix}advrobust: test_slow.py::test_*: reading fixture 'robust_data' for * s "
            "(* samples read), * s in all"
        ]
    )
    quiet = run(pytester, "--advrobust", "--advrobust-progress-seconds=0.3", "-qq", "-k", "other")
    assert "advrobust: " not in quiet.stdout.str()


HOLDER = """
import os, sys, time
from pytest_advrobust.cache import GanCache
os.environ["PYTEST_CURRENT_TEST"] = "tests/test_models.py::test_resnet (setup)"
os.environ["PYTEST_XDIST_WORKER"] = "gw3"
with GanCache(sys.argv[1]).lock(sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _wait_behind(holder_script, args, every):
    """Start ``holder_script`` (which prints ``held`` once it has the lock of ``args[1]``
    in the cache at ``args[0]``), take that lock in this process with waits reported
    every ``every`` s; return the holder's pid and the lines printed while waiting."""
    from pytest_advrobust.cache import GanCache
    from pytest_advrobust.cache.locks import lock_waits

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lines = []
        with lock_waits(lines.append, every=every), GanCache(args[0]).lock(args[1]):
            pass
    finally:
        holder.wait(timeout=60)
    return holder.pid, lines


def test_a_wait_for_the_cache_lock_names_the_holder_and_the_generator(tmp_path):
    key = "a1b2c3d4e5f6a7b8c9d0"
    pid, lines = _wait_behind(HOLDER, (tmp_path, key, 1.5), every=0.3)
    assert len(lines) >= 2  # at once, then every 0.3 s while it waits
    assert lines[0].startswith(
        f"advrobust: waiting for the cache lock of generator a1b2c3d4e5f6, held by "
        f"process {pid} on "
    )
    assert "(xdist worker gw3, running tests/test_models.py::test_resnet, since " in lines[0]
    # the later lines count whole seconds waited, never "0 s"
    assert all(
        re.match(r"advrobust: waiting( [1-9][0-9]* s)? for the cache lock", line) for line in lines
    )
    assert not (tmp_path / "locks" / f"{key}.holder").exists()  # the holder cleaned up


LATE_HOLDER = """
import os, sys, time
import filelock
from pytest_advrobust.cache import GanCache
os.environ["PYTEST_XDIST_WORKER"] = "gw5"
lock = GanCache(sys.argv[1]).lock(sys.argv[2])
filelock.FileLock.acquire(lock)  # the lock is taken, its holder file not yet written
print("held", flush=True)
time.sleep(0.5)
lock._mark()
time.sleep(0.5)
lock.release()
"""


def test_a_waiter_names_a_holder_that_writes_its_file_just_after_taking_the_lock(tmp_path):
    pid, lines = _wait_behind(LATE_HOLDER, (tmp_path, "f0e1d2c3b4a5968778695a4b"), every=30)
    assert lines, "the waiter said nothing"
    assert f"held by process {pid} on " in lines[0] and "xdist worker gw5" in lines[0]


def test_workers_waiting_for_one_generator_say_who_trains_it(blobs_repo):
    blobs_repo.makepyfile(
        test_two="""
        import pytest

        @pytest.mark.robust(threshold=1.0, n_samples=60, sanity="off")
        def test_one(): pass

        @pytest.mark.robust(threshold=1.0, n_samples=60, sanity="off", tolerance=0.05)
        def test_two(): pass
        """
    )
    result = run(
        blobs_repo,
        "--advrobust",
        "-p",
        "xdist",
        "-n",
        "2",
        "--advrobust-gan-steps=80",
        "--advrobust-threads=1",
        "--advrobust-cache-dir=shared",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "[[]gw?[]] advrobust: waiting for the cache lock of generator *, held by "
            "process * on * (xdist worker gw?, running test_two.py::test_*, since *)"
        ]
    )


# ------------------------------------------- a cache shared by two plugin versions


def _foreign(cache, key, version=2):
    """An entry as a newer plugin version writes it: valid in its own cache format."""
    cache.store(key, {"w": torch.ones(4)}, {"family": "newer"})
    doc = json.loads(cache.meta_path(key).read_text())
    doc["format_version"] = version
    cache.meta_path(key).write_text(json.dumps(doc))


@pytest.mark.parametrize("action", ["prune", "clear"])
def test_prune_and_clear_keep_entries_of_another_format_version(pytester, action):
    from pytest_advrobust.cache import FORMAT_VERSION, GanCache

    root = pytester.path / "shared-cache"
    cache = GanCache(root)
    cache.store("ours-old", {"w": torch.zeros(4)}, {"family": "ours"})
    _foreign(cache, "newer-branch")  # the issue: CI runners on two branches
    _foreign(cache, "older-branch", version=FORMAT_VERSION - 1)
    weights = cache.weights_path("ours-old")
    weights.write_bytes(b"\0" * weights.stat().st_size)  # ours and damaged: prune removes it
    args = ["cache", action, "--cache-dir", str(root)]
    args += ["--keep", "0"] if action == "prune" else []
    done = cli(*args, cwd=pytester.path)
    assert done.returncode == 0, done.stderr
    left = sorted(e.key for e in cache.entries())
    assert left == ["newer-branch", "older-branch"]
    for key, version in (("newer-branch", 2), ("older-branch", FORMAT_VERSION - 1)):
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"kept {key}:"))
        assert f"written in cache format {version} by another version of pytest-advrobust" in line
        assert f"`advrobust cache remove {key[:12]}`" in line
        assert f"`advrobust cache {action} --other-versions`" in line
    listed = cli("cache", "list", "--cache-dir", str(root), cwd=pytester.path)
    assert "(2 written by another version of pytest-advrobust" in listed.stdout
    assert "damaged" not in listed.stdout
    by_name = cli("cache", "remove", "newer", "--cache-dir", str(root), cwd=pytester.path)
    assert by_name.returncode == 0 and "removed newer-branch" in by_name.stdout
    flag = cli(*args, "--other-versions", cwd=pytester.path)
    assert flag.returncode == 0 and cache.entries() == []


# ------------------------------------------------------------------ pictures

LONG_NAMES_CONFTEST = """
import pytest
import torch
from torch.utils.data import TensorDataset

class Named(TensorDataset):
    classes = ["T-shirt/top", "Sandal", "Ankle boot"]  # Fashion-MNIST's longest names

g = torch.Generator().manual_seed(0)
x = torch.rand(90, 1, 4, 4, generator=g)
W = torch.randn(16, 3, generator=g)

@pytest.fixture(scope="session")
def robust_model():
    # fixed weights, centred on the inputs' mean, so that all three classes are predicted
    linear = torch.nn.Linear(16, 3)
    with torch.no_grad():
        linear.weight.copy_(W.T)
        linear.bias.copy_(-0.5 * W.sum(0))
    return torch.nn.Sequential(torch.nn.Flatten(), linear)

@pytest.fixture(scope="session")
def robust_data(robust_model):
    with torch.no_grad():
        return Named(x, robust_model(x).argmax(1))
"""


def test_gallery_shows_whole_predicted_labels(pytester):
    from PIL import Image, ImageDraw, ImageFont

    from pytest_advrobust.reports import images

    pytester.makeconftest(LONG_NAMES_CONFTEST)
    pytester.makepyfile(
        test_g="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.3, sanity="off")
        def test_named(): pass
        """
    )
    run(pytester, "--advrobust", "--advrobust-images=pics").assert_outcomes(passed=1)
    (png,) = (pytester.path / "pics").glob("*.png")
    ch = images.cell_size(4, 4)[0] + 2 * images.PADDING
    one_line = images.TITLE_HEIGHT + 3 * (ch + images.TEXT_HEIGHT)
    with Image.open(png) as img:
        assert img.size[1] > one_line  # the captions took more lines, nothing was cut
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = ImageFont.load_default()
    for text in ("y=T-shirt/top p=Ankle boot", "p=Sandal", "p=ThisNameHasNoSpacesAtAllToBreak"):
        lines = images.caption_lines(draw, text, font, 62)
        assert all(draw.textlength(line, font=font) <= 62 for line in lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing cut


def _report(path, clean, adv, threshold, verdict):
    rep = dict(
        nodeid="test_m.py::test_pgd",
        attack="pgd",
        norm="linf",
        eps=0.1,
        n=200,
        metric="absolute",
        clean_accuracy=clean,
        adversarial_accuracy=adv,
        gap=clean - adv,
        threshold=threshold,
        verdict=verdict,
    )
    path.write_text(json.dumps({"schema_version": 1, "tests": [rep]}))


def test_history_draws_the_failing_floor_and_no_floor_below_zero(pytester):
    from pytest_advrobust.cli.history import history_figure, load_history

    reports = pytester.path / "reports"
    reports.mkdir()
    _report(reports / "build1.json", 0.95, 0.70, 0.30, "pass")
    _report(reports / "build2.json", 0.95, 0.55, 0.30, "fail")  # the floor that failed it: 0.65
    _report(reports / "build3.json", 0.87, 0.20, 1.00, "pass")  # the issue: a floor of -0.13
    done = cli("history", "reports", "--plot", "h.png", cwd=pytester.path)
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[1].split()
    assert row[-2] == "0.000"  # FLOOR of the newest report, never below 0
    assert (pytester.path / "h.png").is_file()
    fig = history_figure(load_history([str(reports)]))
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [[round(v, 9) for v in line.get_ydata()] for line in dashed] == [[0.65, 0.65, 0.0]]
    crosses = [c.get_offsets().tolist() for c in ax.collections]
    assert crosses == [[[1.0, 0.55]]]  # the failed build, crossed


def test_html_cell_gives_the_reason_beside_fail(blobs_repo):
    pytest.importorskip("pytest_html")
    from pytest_advrobust.plugin.html_report import verdict_cell

    blobs_repo.makepyfile(
        test_h="""
        import pytest

        @pytest.mark.robust(threshold=0.01, attack="pgd", eps=0.3, steps=10, n_samples=90)
        def test_gap(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.3, steps=10, n_samples=90,
                            data="shuffled")
        def test_clean(): pass
        """
    )
    blobs_repo.makeconftest(
        (blobs_repo.path / "conftest.py").read_text()
        + textwrap.dedent(
            """
            @pytest.fixture(scope="session")
            def shuffled():  # labels that have nothing to do with the inputs
                x, y, _ = make_blobs()
                return x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
            """
        )
    )
    result = run(blobs_repo, "--advrobust", "--html=r.html", "--advrobust-json=r.json")
    result.assert_outcomes(failed=2)
    text = (blobs_repo.path / "r.html").read_text(encoding="utf-8")
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', text).group(1)))
    shown = {
        nodeid: html.unescape(re.sub("<[^>]+>", "", cell))
        for nodeid, runs in blob["tests"].items()
        for cell in runs[0]["resultsTableRow"]
        if "col-advrobust" in cell
    }
    doc = json.loads((blobs_repo.path / "r.json").read_text())
    reports = {t["nodeid"]: t for t in doc["tests"]}
    for nodeid, reason in (
        ("test_h.py::test_gap", "robustness gap 1.000 > threshold 0.010 (clean 1.000 -> "),
        ("test_h.py::test_clean", "clean accuracy "),
    ):
        cell = verdict_cell(reports[nodeid])
        assert cell.startswith("FAIL gap ") and f": {reason}" in cell
        assert shown[nodeid] == cell
    assert verdict_cell(dict(reports["test_h.py::test_gap"], verdict="pass", failure=None)) == (
        "PASS gap " + f"{reports['test_h.py::test_gap']['gap']:.3f} / threshold 0.010"
    )
