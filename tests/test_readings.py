"""Each misreading of the reports that README alone led to (#13) has a test here
(the gallery's samples and title: tests/test_flags_sweeps_images.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pytest_advrobust.reports import images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", "--advrobust-sanity=off", *args)


SWEEP = """
import pytest

@pytest.mark.robust(threshold=0.05, attack="pgd", eps=[0.02, 0.2], threshold_eps=0.02,
                    steps=10, n_samples=90)
def test_sweep():
    pass

@pytest.mark.robust(threshold=0.05, attack="pgd", eps=[0.02, 0.2], threshold_eps=0.2,
                    steps=10, n_samples=90)
def test_sweep_at_large():
    pass
"""


def test_sweep_row_names_its_eps_and_only_the_judged_eps_is_marked(blobs_repo):
    blobs_repo.makepyfile(test_s=SWEEP)
    result = run(blobs_repo, "--advrobust", "--advrobust-json=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "test_s.py::test_sweep *0.02 (sweep 0.02,0.2) * PASS*",
            "test_s.py::test_sweep_at_large *0.2 (sweep 0.02,0.2) * FAIL*",
        ]
    )
    reps = {t["nodeid"]: t for t in json.loads((blobs_repo.path / "r.json").read_text())["tests"]}
    curve = reps["test_s.py::test_sweep"]["curve"]
    assert [(p["eps"], p["judged"], p["passed"]) for p in curve] == [
        (0.02, True, True),
        (0.2, False, None),
    ]
    assert curve[1]["gap"] > 0.05  # over the threshold, but not judged: not a failure


def _marks(fig):
    """(red crosses, judged rings) as lists of (x, y)."""
    ax = fig.axes[0]
    crosses, rings = [], []
    for coll in ax.collections:
        label = coll.get_label()
        pts = [tuple(map(float, p)) for p in coll.get_offsets()]
        if label == "gap over threshold":
            crosses = pts
        elif label == "judged eps":
            rings = pts
    return crosses, rings


def test_curve_marks_failures_on_the_gap_at_judged_eps_only():
    pytest.importorskip("matplotlib")
    curve = [
        {"eps": 0.02, "adversarial_accuracy": 0.9, "gap": 0.02, "judged": True, "passed": True},
        {"eps": 0.1, "adversarial_accuracy": 0.0, "gap": 0.95, "judged": False, "passed": None},
    ]
    crosses, rings = _marks(images.curve_figure(curve, threshold=0.3))
    assert crosses == [] and rings == [(0.02, 0.02)]
    curve[1].update(judged=True, passed=False)
    crosses, _ = _marks(images.curve_figure(curve, threshold=0.3))
    assert crosses == [(0.1, 0.95)]  # on the gap curve, not at the accuracy (0.0)
    ax = images.curve_figure(curve, threshold=0.3).axes[0]
    threshold = [ln for ln in ax.get_lines() if ln.get_label() == "gap threshold"][0]
    assert list(threshold.get_ydata()) == [0.3, 0.3]


def test_gallery_takes_class_names_from_the_data():
    from torch.utils.data import DataLoader, Subset, TensorDataset

    from pytest_advrobust.inputs.data import split_data

    class Named(TensorDataset):
        classes = ["cat", "dog", "emu"]

    x, y = torch.rand(100, 4), torch.arange(100) % 3
    assert split_data(Named(x, y), 20, 0).class_names == ["cat", "dog", "emu"]
    assert split_data(DataLoader(Subset(Named(x, y), range(80))), 20, 0).class_names == [
        "cat",
        "dog",
        "emu",
    ]
    assert split_data((x, y), 20, 0).class_names is None
    # the names change the captions: the pictures differ where the labels are drawn
    args = (x[:3].view(3, 1, 2, 2), x[:3].view(3, 1, 2, 2), (y[:3], y[:3], y[:3]))
    import numpy as np

    plain = np.asarray(images.gallery_image(*args))
    named = np.asarray(images.gallery_image(*args, class_names=["cat", "dog", "emu"]))
    # the names are drawn whole: a longer caption may take another line
    assert plain.shape[1:] == named.shape[1:] and named.shape[0] >= plain.shape[0]
    assert plain.shape != named.shape or (plain != named).any()


def test_pick_samples_prefers_what_the_attack_turned():
    clean = [False, True, True, True, True]
    adv = [False, True, False, True, False]
    assert images.pick_samples(clean, adv, 8) == [2, 4, 1, 3, 0]
    assert images.pick_samples(clean, adv, 2) == [2, 4]


def test_readme_documents_every_json_field(blobs_repo):
    blobs_repo.makepyfile(
        test_j="""
        import pytest

        @pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=60, attack="pgd", steps=3)
        def test_pgd(): pass
    """
    )
    run(blobs_repo, "--advrobust", "--advrobust-json=r.json").assert_outcomes(passed=1)
    (test,) = json.loads((blobs_repo.path / "r.json").read_text())["tests"]
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### JSON report fields") :]
    section = section[: section.index("\n## ", 1) if "\n## " in section else len(section)]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    assert set(test) - documented == set()
    for word in ("per_class", "adversarial_loss", "first misclassif", "strength_check"):
        assert word in section


NO_MPL_CONFTEST = """
import sys
sys.modules["matplotlib"] = None  # as if matplotlib were not installed
"""


def test_images_without_matplotlib_warn_once_and_keep_verdicts(blobs_repo):
    blobs_repo.makepyfile(test_s=SWEEP.replace("threshold=0.05", "threshold=1.0"))
    (blobs_repo.path / "conftest.py").write_text(
        NO_MPL_CONFTEST + (blobs_repo.path / "conftest.py").read_text()
    )
    result = run(blobs_repo, "--advrobust", "--advrobust-images=pics")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*needs matplotlib*not affected*",
            "test_s.py::test_sweep *PASS*",
            "test_s.py::test_sweep_at_large *PASS*",
        ]
    )
    assert sorted(p.name for p in (blobs_repo.path / "pics").iterdir()) == [
        "test_s.py_test_sweep.png",
        "test_s.py_test_sweep_at_large.png",
    ]


GAN_TEST = """
import pytest

@pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=90)
def test_gan():
    pass

@pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.1, steps=5, n_samples=90)
def test_pgd():
    pass
"""


@pytest.mark.parametrize("xdist", [False, True])
def test_gan_progress_reaches_the_terminal_under_q_and_xdist(blobs_repo, xdist):
    if xdist:
        pytest.importorskip("xdist")
    blobs_repo.makepyfile(test_g=GAN_TEST)
    extra = ["-n", "2"] if xdist else []
    result = run(
        blobs_repo,
        "--advrobust",
        "-q",
        "--advrobust-gan-steps=30",
        f"--advrobust-cache-dir={blobs_repo.path / 'gc'}",
        *extra,
    )
    result.assert_outcomes(passed=2)
    prefix = "[[]gw?[]] " if xdist else ""
    # whole lines: each starts at the line's start, none is glued to progress dots
    result.stdout.fnmatch_lines(
        [
            f"{prefix}advrobust gan: training GAN generator on cpu (cold)*",
            f"{prefix}advrobust gan: step */30, *",
            f"{prefix}advrobust gan: done: * steps*",
        ]
    )
    lines = [ln for ln in result.stdout.lines if "advrobust gan:" in ln]
    assert all(re.match(r"^(\[gw\d\] )?advrobust gan: ", ln) for ln in lines), lines
    quiet = run(
        blobs_repo,
        "--advrobust",
        "-qq",
        "--advrobust-retrain",
        f"--advrobust-cache-dir={blobs_repo.path / 'gc'}",
        *extra,
    )
    assert "advrobust gan:" not in quiet.stdout.str()  # -qq stays quiet


def test_cache_list_names_the_users_model_and_finds_pytests_folder(blobs_repo):
    blobs_repo.makeini("[pytest]\ncache_dir = build/pytest-cache\n")
    blobs_repo.makepyfile(
        test_g="""
        import pytest

        @pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=90, preprocessing=(0.0, 1.0))
        def test_gan():
            pass
    """
    )
    (blobs_repo.path / "sub").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ADVROBUST_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:randomly",
            "--advrobust",
            "--advrobust-sanity=off",
            "--advrobust-gan-steps=20",
            "-q",
        ],
        cwd=blobs_repo.path,
        env=env,
        check=True,
        capture_output=True,
    )
    folder = blobs_repo.path / "build" / "pytest-cache" / "d" / "advrobust"
    assert folder.is_dir()
    for cwd in (blobs_repo.path, blobs_repo.path / "sub"):
        out = subprocess.run(
            [sys.executable, "-m", "pytest_advrobust.cli", "cache", "list"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        # one generator for the model's family, one row, steps within the budget
        assert "1 entry, " in out.stdout and str(folder) in out.stdout, out.stdout
        (row,) = out.stdout.splitlines()[1:2]
        assert "NearestCentre" in row and "Preprocessed" not in row, row
        steps = re.search(r"gan linf eps 0\.00781-0\.5 (\d+)/20 steps", row)
        assert steps and 0 < int(steps.group(1)) <= 20, row
        assert re.search(r"\d\.\d{3} held-out success", row), row
