"""Sanity flags, --advrobust-strict, eps sweeps and PNG galleries, as users meet them.

Every test runs a real pytest session in a subprocess (``pytester``) against
small models written into that session's conftest: the synthetic blobs model
of ``tests/conftest.py`` and a tiny CNN on scikit-learn's 8x8 digits, trained
in well under a second with a fixed seed. The digits CNN also comes wrapped in
deliberately broken forms (softmax output, quantised input, dropout left on),
each of which one sanity flag exists to catch.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("torch")
pytest.importorskip("sklearn")  # ships the digits data

from _support import LEAN  # noqa: E402

from pytest_advrobust.reports import images  # noqa: E402  (no torch at import)

DIGITS_CONFTEST = '''

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # tiny tensors, shared machine: one thread is fastest


def load_digits():
    """scikit-learn's 8x8 digits scaled to [0, 1], shuffled with a fixed seed.

    The CSV that ships with scikit-learn is read directly: importing
    sklearn.datasets costs seconds in every subprocess."""
    spec = importlib.util.find_spec("sklearn")
    path = ""
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data",
                            "digits.csv.gz")
    if os.path.exists(path):
        raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
        pixels, labels = raw[:, :64], raw[:, 64]
    else:
        from sklearn.datasets import load_digits as sk_load_digits
        bunch = sk_load_digits()
        pixels, labels = bunch.data.astype(np.float32), bunch.target
    x = torch.from_numpy(np.ascontiguousarray(pixels)).reshape(-1, 1, 8, 8) / 16.0
    y = torch.from_numpy(np.asarray(labels)).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


class DigitsCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def features(self, x):
        return F.relu(self.conv(x)).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


class Broken(torch.nn.Module):
    """The trained CNN with one classic evaluation mistake built in."""

    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        if self.kind == "softmax":      # probabilities, not logits
            return F.softmax(self.net(x), dim=1)
        if self.kind == "quantised":    # zero input gradient everywhere
            return self.net(torch.round(x * 4) / 4)
        if self.kind == "dropout":      # random even in eval mode
            return self.net.fc(F.dropout(self.net.features(x), p=0.5, training=True))
        raise AssertionError(self.kind)


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def digits_data(digits):
    x, y = digits
    return x[1400:], y[1400:]  # 397 held-out samples


@pytest.fixture(scope="session")
def digits_cnn(digits):
    x, y = digits
    xtr, ytr = x[:1400], y[:1400]
    torch.manual_seed(0)
    net = DigitsCNN()
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    # Full-batch SGD with momentum by hand: torch.optim's first use costs seconds.
    for _ in range(80):
        loss = F.cross_entropy(net(xtr), ytr)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, v, g in zip(params, velocity, grads):
                v.mul_(0.9).add_(g)
                p.sub_(0.2 * v)
    net.eval()
    with torch.no_grad():
        assert (net(x[1400:]).argmax(1) == y[1400:]).float().mean() > 0.9
    return net


@pytest.fixture(scope="session")
def softmax_model(digits_cnn):
    return Broken(digits_cnn, "softmax")


@pytest.fixture(scope="session")
def quantised_model(digits_cnn):
    return Broken(digits_cnn, "quantised")


@pytest.fixture(scope="session")
def dropout_model(digits_cnn):
    return Broken(digits_cnn, "dropout")
'''

# Marker arguments: PGD with few steps keeps each evaluation well under a second.
DIGITS = 'data="digits_data", n_samples=128'
PGD = 'attack="pgd", eps=0.1, steps=10'


@pytest.fixture
def repo(blobs_repo):
    """The blobs repository of tests/conftest.py plus the digits models."""
    conftest = blobs_repo.path / "conftest.py"
    blobs_repo.makeconftest(conftest.read_text() + DIGITS_CONFTEST)
    return blobs_repo


def run(pytester, *args):
    return pytester.runpytest_subprocess(*LEAN, "--advrobust", *args)


def read_json(pytester, name="report.json") -> Dict[str, dict]:
    doc = json.loads((pytester.path / name).read_text())
    return {rep["nodeid"]: rep for rep in doc["tests"]}


def flags_of(rep: dict) -> List[str]:
    return [f["flag"] for f in rep["sanity"]]


def warnings_by_test(stdout: str) -> Dict[str, List[str]]:
    """The warnings summary as {test id: [warning lines]}.

    pytest prints each group as the test id(s) flush left, then the
    warnings indented by two spaces, then a blank line."""
    lines = stdout.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if "warnings summary" in ln)
    except StopIteration:
        return {}
    out: Dict[str, List[str]] = {}
    heads: List[str] = []
    for ln in lines[start + 1 :]:
        if ln.startswith("-- Docs:") or ln.startswith("====="):
            break
        if not ln.strip():
            heads = []
        elif not ln.startswith(" "):
            heads.append(ln.strip())
            out.setdefault(ln.strip(), [])
        else:
            for h in heads:
                out[h].append(ln.strip())
    return out


def advrobust_warnings(stdout: str, nodeid: str) -> List[str]:
    return [w for w in warnings_by_test(stdout).get(nodeid, []) if "AdvRobustWarning" in w]


def assert_flag_warned(stdout: str, nodeid: str, flag: str) -> None:
    texts = advrobust_warnings(stdout, nodeid)
    assert any(f"AdvRobustWarning: {nodeid}: sanity flag {flag}:" in t for t in texts), (
        nodeid,
        flag,
        texts,
    )


# ------------------------------------------------------------------ flags

# Sound models: the blobs model and the digits CNN, attacked as usual.
SOUND_TESTS = f"""
    @pytest.mark.robust(threshold=1.0, {PGD}, n_samples=120)
    def test_sound_blobs():
        pass

    @pytest.mark.robust(threshold=1.0, {PGD}, model="digits_cnn", {DIGITS})
    def test_sound_digits_cnn():
        pass
"""

BROKEN_TESTS = (
    f"""
    import pytest

    @pytest.mark.robust(threshold=1.0, {PGD}, model="softmax_model", {DIGITS})
    def test_softmax():
        pass

    # Rounding kills the gradient: PGD cannot move, so the model would look perfectly
    # robust and even a tight threshold would pass. It errors with one sentence instead.
    @pytest.mark.robust(threshold=0.02, {PGD}, model="quantised_model", {DIGITS})
    def test_quantised():
        pass

    @pytest.mark.robust(threshold=1.0, {PGD}, model="dropout_model", {DIGITS})
    def test_dropout():
        pass

    # A sound model, but PGD takes one step of 1e-4: FGSM (one step of eps) beats it.
    @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.1, steps=1, step_size=1e-4,
                        sanity="full", model="digits_cnn", {DIGITS})
    def test_weak_pgd():
        pass
"""
    + SOUND_TESTS
)

EXPECTED = {
    "test_broken.py::test_softmax": "probabilities",
    "test_broken.py::test_dropout": "nondeterministic",
    "test_broken.py::test_weak_pgd": "weak_beats_strong",
}
SOUND = {"test_sound_blobs", "test_sound_digits_cnn"}


def assert_no_false_alarm(stdout: str, reports: Dict[str, dict], module: str) -> None:
    for name in SOUND:
        nodeid = f"{module}::{name}"
        assert reports[nodeid]["sanity"] == [], (nodeid, reports[nodeid]["sanity"])
        assert reports[nodeid]["clean_accuracy"] > 0.9
        assert nodeid not in warnings_by_test(stdout)
        assert f"{nodeid}: sanity flag" not in stdout


def test_each_broken_model_is_caught_by_its_own_flag_and_sound_ones_are_not(repo):
    repo.makepyfile(test_broken=BROKEN_TESTS)
    result = run(repo, "--advrobust-json=report.json")
    result.assert_outcomes(passed=5, errors=1)  # flags warn; they do not fail without --strict
    out = result.stdout.str()
    reports = read_json(repo)
    assert set(reports) == set(EXPECTED) | {f"test_broken.py::{n}" for n in SOUND}
    # no input gradient at all: one sentence, never a number (a gap of 0 would pass)
    result.stdout.fnmatch_lines(
        [
            "*attack 'pgd' needs the gradient of the loss with respect to the input, but none "
            "reaches the input of the model from fixture 'quantised_model' (the input gradient "
            "is exactly zero on every sample)*"
        ]
    )
    for nodeid, flag in EXPECTED.items():
        # a field of the test's entry in the JSON report ...
        rep = reports[nodeid]
        assert flag in flags_of(rep), (nodeid, flags_of(rep))
        for entry in rep["sanity"]:
            assert set(entry) >= {"flag", "message", "suggests", "level"}
            assert entry["message"] and entry["suggests"]
        # ... and a warning tied to that test in the warnings summary
        assert_flag_warned(out, nodeid, flag)
    # each flag points at its own test only
    for flag in EXPECTED.values():
        assert [n for n, r in reports.items() if flag in flags_of(r)] == [
            n for n, f in EXPECTED.items() if f == flag
        ], flag
    # full-level checks stay off at the default level
    assert all("large_eps" not in flags_of(r) for r in reports.values())
    # the summary row says a test carries flags
    count = len(reports["test_broken.py::test_softmax"]["sanity"])
    noun = "flag" if count == 1 else "flags"
    result.stdout.fnmatch_lines([f"test_broken.py::test_softmax *PASS ({count} {noun})*"])
    # no false alarm at the default (cheap) level
    assert_no_false_alarm(out, reports, "test_broken.py")


def test_full_level_raises_no_false_alarm_and_the_quantised_model_still_errors(repo):
    # large_eps and gradients on a quantised model: tests/test_sanity.py (run_sanity itself);
    # through the plugin, a model without any input gradient errors before sanity runs.
    repo.makepyfile(
        test_full=textwrap.dedent(f"""
        import pytest

        @pytest.mark.robust(threshold=0.02, {PGD}, model="quantised_model", {DIGITS})
        def test_quantised():
            pass
    """)
        + textwrap.dedent(SOUND_TESTS)
    )
    result = run(repo, "--advrobust-sanity=full", "--advrobust-json=report.json")
    result.assert_outcomes(passed=2, errors=1)
    out = result.stdout.str()
    reports = read_json(repo)
    assert "test_full.py::test_quantised" not in reports
    result.stdout.fnmatch_lines(
        ["*none reaches the input of the model from fixture 'quantised_model'*"]
    )
    assert_no_false_alarm(out, reports, "test_full.py")


def test_strict_turns_a_flag_into_a_failure_naming_it(repo):
    repo.makepyfile(
        test_strict=f"""
        import pytest

        @pytest.mark.robust(threshold=1.0, {PGD}, model="softmax_model", {DIGITS})
        def test_softmax():
            pass

        @pytest.mark.robust(threshold=1.0, {PGD}, model="digits_cnn", {DIGITS})
        def test_sound():
            pass
    """
    )
    result = run(repo, "--advrobust-strict", "--advrobust-json=report.json", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_softmax _*",
            "sanity flag probabilities: *(--advrobust-strict)",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_strict.py::test_softmax*"])
    out = result.stdout.str()
    assert "Traceback" not in out
    # the flag became the failure, not a warning on top of it
    assert "AdvRobustWarning" not in out
    reports = read_json(repo)
    assert reports["test_strict.py::test_softmax"]["verdict"] == "fail"
    assert flags_of(reports["test_strict.py::test_softmax"]) == ["probabilities"]
    assert reports["test_strict.py::test_sound"]["verdict"] == "pass"
    # the gap (threshold 1.0) did not fail it: the flag did
    assert "robustness gap" not in out


# ------------------------------------------------------------- eps sweeps

SWEEP = "[0.02, 0.05, 0.1, 0.2]"


def test_eps_sweep_gives_a_curve_and_the_threshold_applies_at_every_eps(repo):
    repo.makepyfile(
        test_sweep=f"""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps={SWEEP}, steps=10, n_samples=120)
        def test_curve():
            pass

        @pytest.mark.robust(threshold=0.3, attack="pgd", eps={SWEEP}, steps=10, n_samples=120)
        def test_every_eps():
            pass
    """
    )
    result = run(repo, "--advrobust-json=report.json")
    result.assert_outcomes(passed=1, failed=1)
    reports = read_json(repo)

    # the curve: one point per eps, in order, adversarial accuracy never rising
    rep = reports["test_sweep.py::test_curve"]
    curve = rep["curve"]
    assert [p["eps"] for p in curve] == [0.02, 0.05, 0.1, 0.2]
    for p in curve:
        assert set(p) >= {"eps", "adversarial_accuracy", "gap", "passed"}
        assert p["gap"] == pytest.approx(p["clean_accuracy"] - p["adversarial_accuracy"], abs=1e-6)
        assert p["passed"] is True  # threshold 1.0
    accs = [p["adversarial_accuracy"] for p in curve]
    assert all(b <= a for a, b in zip(accs, accs[1:])), accs
    assert accs[0] > accs[-1]  # the sweep spans a real range
    assert "curve_not_monotone" not in flags_of(rep)
    # without threshold_eps the headline numbers are those of the largest eps
    assert rep["eps"] == 0.2 and rep["gap"] == pytest.approx(curve[-1]["gap"])
    gaps = {p["eps"]: p["gap"] for p in curve}
    # the thresholds used here and in the next test mean something only for these numbers
    assert gaps[0.05] <= 0.3 < gaps[0.2], gaps

    # the threshold applies at every eps: the failure names exactly the eps that break it
    every = reports["test_sweep.py::test_every_eps"]
    assert every["verdict"] == "fail"
    assert [p["passed"] for p in every["curve"]] == [g <= 0.3 for g in gaps.values()]
    # the failure section only: under CI=true pytest repeats whole messages in the summary
    out = result.stdout.lines
    failures = out[: next(i for i, ln in enumerate(out) if "short test summary info" in ln)]
    lines = [ln for ln in failures if ln.startswith("robustness gap") and "> threshold 0.300" in ln]
    named = [float(m) for ln in lines for m in re.findall(r" pgd linf eps=([0-9.]+)\)$", ln)]
    assert named == [e for e, g in gaps.items() if g > 0.3], (lines, gaps)
    assert named[-1] == 0.2


def test_threshold_eps_judges_only_that_eps(repo):
    repo.makepyfile(
        test_at=f"""
        import pytest

        # threshold 0.3 is broken at eps=0.2 (see the test above), not at 0.05
        @pytest.mark.robust(threshold=0.3, attack="pgd", eps={SWEEP}, steps=10, n_samples=120,
                            threshold_eps=0.05)
        def test_judged_at_005():
            pass

        @pytest.mark.robust(threshold=0.3, attack="pgd", eps={SWEEP}, steps=10, n_samples=120,
                            threshold_eps=0.07)
        def test_not_in_the_sweep():
            pass
    """
    )
    result = run(repo, "--advrobust-json=report.json", "-rE")
    result.assert_outcomes(passed=1, errors=1)
    judged = read_json(repo)["test_at.py::test_judged_at_005"]
    assert judged["verdict"] == "pass"
    assert judged["eps"] == 0.05  # the headline numbers are those of threshold_eps
    points = {p["eps"]: p for p in judged["curve"]}
    assert judged["gap"] == pytest.approx(points[0.05]["gap"])
    assert points[0.2]["gap"] > 0.3  # a larger eps would have broken it
    # threshold_eps outside the sweep: a setup error in one sentence that names it
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_not_in_the_sweep*",
            "robust marker argument threshold_eps=0.07 must be one of the swept eps values "
            "[[]0.02, 0.05, 0.1, 0.2[]]",
        ]
    )
    result.stdout.fnmatch_lines(["ERROR test_at.py::test_not_in_the_sweep - *"])
    assert "Traceback" not in result.stdout.str()


def test_a_setup_error_is_one_sentence_shown_once(repo):
    repo.makepyfile(
        test_once="""
        import pytest

        @pytest.mark.robust(threshold=0.3, attack="pgd", eps=[0.05, 0.1], threshold_eps=0.07)
        def test_not_in_the_sweep():
            pass
    """
    )
    result = run(repo)
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    # once in the ERRORS section (the short summary line starts with "ERROR")
    shown = [
        ln
        for ln in result.stdout.lines
        if ln.startswith("robust marker argument threshold_eps=0.07")
    ]
    assert len(shown) == 1, out
    assert "During handling of the above exception" not in out


def test_tests_sharing_an_evaluation_keep_their_threshold_eps_and_sanity_level(repo):
    repo.makepyfile(
        test_shared=f"""
        import pytest

        SWEEP = dict(attack="pgd", eps={SWEEP}, steps=10, n_samples=120)
        WEAK = dict(attack="pgd", eps=0.1, steps=1, step_size=1e-4, model="digits_cnn",
                    {DIGITS})

        @pytest.mark.robust(threshold=1.0, **SWEEP)
        def test_a_sweep():
            pass

        @pytest.mark.robust(threshold=0.3, threshold_eps=0.05, **SWEEP)
        def test_b_judged_at_005():
            pass

        @pytest.mark.robust(threshold=1.0, **WEAK)
        def test_c_weak_cheap():
            pass

        @pytest.mark.robust(threshold=1.0, sanity="full", **WEAK)
        def test_d_weak_full():
            pass
    """
    )
    result = run(repo, "--advrobust-json=report.json")
    reports = read_json(repo)
    judged = reports["test_shared.py::test_b_judged_at_005"]
    cheap = reports["test_shared.py::test_c_weak_cheap"]
    full = reports["test_shared.py::test_d_weak_full"]
    wrong = []
    if (judged["eps"], judged["verdict"]) != (0.05, "pass"):
        wrong.append(f"threshold_eps=0.05 test judged at eps={judged['eps']}: {judged['verdict']}")
    if "weak_beats_strong" in flags_of(cheap) or "weak_beats_strong" not in flags_of(full):
        wrong.append(f"sanity flags: cheap {flags_of(cheap)}, full {flags_of(full)}")
    assert not wrong, wrong
    result.assert_outcomes(passed=4)


# ---------------------------------------------------------------- pictures

PICTURE_TESTS = f"""
    import numpy as np
    import pytest
    import torch

    def dump(batch, model, name):
        with torch.no_grad():
            pc = model(batch.x).argmax(1)
            pa = model(batch.x_adv).argmax(1)
        np.savez(name, x=batch.x.numpy(), x_adv=batch.x_adv.numpy(), y=batch.y.numpy(),
                 pred_clean=pc.numpy(), pred_adv=pa.numpy())

    @pytest.mark.robust(threshold=1.0, {PGD}, model="digits_cnn", {DIGITS})
    def test_gallery(adversarial_batch, digits_cnn):
        dump(adversarial_batch, digits_cnn, "gallery.npz")

    class TestSweep:
        @pytest.mark.parametrize("case", ["a/b c"])
        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=[0.05, 0.1], steps=10,
                            model="digits_cnn", data="digits_data", n_samples=5,
                            min_clean_accuracy=0)  # 5 samples cannot beat the majority guess
        def test_sweep(self, case, adversarial_batch, digits_cnn):
            dump(adversarial_batch, digits_cnn, "sweep.npz")
"""


def _cell(img, row: int, col: int, h: int = 8, w: int = 8):
    """Pixels of one gallery cell (inside the padding) as an (ch, cw, 3) int array."""
    ch, cw = images.cell_size(h, w)
    top = (
        images.TITLE_HEIGHT + row * (ch + 2 * images.PADDING + images.TEXT_HEIGHT) + images.PADDING
    )
    left = images.PADDING + col * (cw + images.PADDING)
    return np.asarray(img.crop((left, top, left + cw, top + ch))).astype(int)


def _gallery_size(n: int, h: int = 8, w: int = 8):
    ch, cw = images.cell_size(h, w)
    return (
        n * (cw + images.PADDING) + images.PADDING,
        images.TITLE_HEIGHT + 3 * (ch + 2 * images.PADDING + images.TEXT_HEIGHT),
    )


def test_images_option_writes_galleries_and_curves(repo):
    repo.makepyfile(test_pics=PICTURE_TESTS)
    result = run(repo, "--advrobust-images=pics", "--advrobust-json=report.json")
    result.assert_outcomes(passed=2)
    folder = repo.path / "pics"
    gallery_id = "test_pics.py::test_gallery"
    sweep_id = "test_pics.py::TestSweep::test_sweep[a/b c]"
    # safe file names: each run of '::', '/', ' ', '[', ']' becomes one '_'
    expected = {
        "test_pics.py_test_gallery.png",
        "test_pics.py_TestSweep_test_sweep_a_b_c.png",
        "test_pics.py_TestSweep_test_sweep_a_b_c-curve.png",
    }
    assert {p.name for p in folder.iterdir()} == expected
    assert images.safe_filename(sweep_id) + "-curve.png" in expected
    reports = read_json(repo)
    assert [Path(p).name for p in reports[gallery_id]["images"]] == [
        "test_pics.py_test_gallery.png"
    ]
    assert sorted(Path(p).name for p in reports[sweep_id]["images"]) == sorted(
        expected - {"test_pics.py_test_gallery.png"}
    )

    for png, npz, n in (
        ("test_pics.py_test_gallery.png", "gallery.npz", 8),
        ("test_pics.py_TestSweep_test_sweep_a_b_c.png", "sweep.npz", 5),
    ):
        data = np.load(repo.path / npz)
        with Image.open(folder / png) as img:
            assert img.format == "PNG"
            # one column per sample (at most 8), 8x8 digits enlarged to 64x64 cells
            assert img.size == _gallery_size(n)
            img = img.convert("RGB")
            # a title band on top names the test, the attack and eps: text was drawn there
            assert (np.asarray(img.crop((0, 0, img.size[0], images.TITLE_HEIGHT))) < 128).any()
            clean_ok = data["pred_clean"] == data["y"]
            adv_ok = data["pred_adv"] == data["y"]
            order = images.pick_samples(clean_ok, adv_ok, 8)
            turned = [i for i in range(len(clean_ok)) if clean_ok[i] and not adv_ok[i]]
            # the samples the attack turned come first, not simply the first 8
            assert order[: len(turned)] == turned[: len(order)]
            moved = 0
            for col, i in enumerate(order):
                clean, adv = _cell(img, 0, col), _cell(img, 1, col)
                # the rows show this test's own clean and adversarial inputs
                assert np.abs(clean[::8, ::8, 0] - np.round(data["x"][i, 0] * 255)).max() <= 1
                assert np.abs(adv[::8, ::8, 0] - np.round(data["x_adv"][i, 0] * 255)).max() <= 1
                attacked = data["pred_clean"][i] == data["y"][i]
                delta = _cell(img, 2, col)  # perturbation, stretched around mid-grey
                if attacked:  # a correct sample was perturbed: its two cells differ
                    assert (clean != adv).any(), (png, col)
                    assert np.abs(delta - 128).max() >= 120, (png, col)
                    moved += 1
                else:  # a sample wrong without attack is its own adversarial example
                    assert (clean == adv).all(), (png, col)
                    assert np.abs(delta - 128).max() <= 1, (png, col)
            assert moved >= n - 1

    curve_png = folder / "test_pics.py_TestSweep_test_sweep_a_b_c-curve.png"
    with Image.open(curve_png) as img:
        assert img.format == "PNG"
        assert img.size == (500, 360)  # save_curve: 5 x 3.6 inches at 100 dpi
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 10  # something was drawn
    # it plots this test's curve from the report, with its threshold and id as title
    rep = reports[sweep_id]
    assert [p["eps"] for p in rep["curve"]] == [0.05, 0.1]
    assert_same_pixels(
        curve_png,
        images.save_curve(
            repo.path / "expected-curve.png",
            rep["curve"],
            threshold=rep["threshold"],
            title=sweep_id,
        ),
    )
    assert all(p["judged"] for p in rep["curve"])  # no threshold_eps: every eps is judged


def assert_same_pixels(got: Path, expected: Path) -> None:
    with Image.open(got) as a, Image.open(expected) as b:
        assert a.size == b.size
        diff = np.abs(
            np.asarray(a.convert("RGB")).astype(int) - np.asarray(b.convert("RGB")).astype(int)
        )
        assert diff.max() == 0, f"{int((diff.max(axis=2) > 0).sum())} pixels differ"


def test_curve_png_marks_the_eps_that_break_the_threshold(repo):
    repo.makepyfile(
        test_red=f"""
        import pytest

        @pytest.mark.robust(threshold=0.3, attack="pgd", eps={SWEEP}, steps=10, n_samples=120)
        def test_sweep():
            pass
    """
    )
    result = run(repo, "--advrobust-images=pics", "--advrobust-json=report.json")
    result.assert_outcomes(failed=1)
    rep = read_json(repo)["test_red.py::test_sweep"]
    passed = [p["passed"] for p in rep["curve"]]
    assert True in passed and False in passed, passed
    assert_same_pixels(
        repo.path / "pics" / "test_red.py_test_sweep-curve.png",
        images.save_curve(
            repo.path / "expected-curve.png", rep["curve"], threshold=0.3, title=rep["nodeid"]
        ),
    )
