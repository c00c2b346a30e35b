"""Ordinary inputs get right numbers or one clear sentence (#9).

One pytester test per kind of input, run in a subprocess, plus a property test
of DataLoader evaluation and unit checks of the low-precision bound.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _support import BLOBS_CONFTEST
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

FAST_GAN = ("--advrobust-gan-steps=20", "--advrobust-threads=1")


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


# ------------------------------------------------------- 1. read-only checkout


def _read_only_shell(root, command):
    """``command`` run in a private mount namespace where ``root`` is read-only."""
    return [
        "unshare",
        "-m",
        "sh",
        "-c",
        f"mount --bind '{root}' '{root}' && mount -o remount,bind,ro '{root}' && "
        f"cd '{root}' && {command}",
    ]


def test_read_only_checkout_runs_plain_and_gan_without_internal_error(blobs_repo):
    root = blobs_repo.path
    blobs_repo.makepyfile(
        test_ro="""
        import pytest

        @pytest.mark.robust(threshold=1.0, n_samples=60)
        def test_gan():
            pass

        def test_plain():
            assert 1 + 1 == 2
    """
    )
    probe = subprocess.run(
        _read_only_shell(root, "! touch .probe 2>/dev/null"), capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            f"cannot make a read-only bind mount here (unshare -m / mount --bind "
            f"need root or a mount namespace): {probe.stderr.strip()[:200]}"
        )
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("ADVROBUST_CACHE_DIR", None)
    pytest_cmd = f"'{sys.executable}' -m pytest -p no:randomly -rA"
    plain = subprocess.run(
        _read_only_shell(root, pytest_cmd), capture_output=True, text=True, env=env
    )
    out = plain.stdout + plain.stderr
    assert plain.returncode == 0, out
    assert "INTERNALERROR" not in out
    assert "1 passed, 1 skipped" in out

    flag = subprocess.run(
        _read_only_shell(root, pytest_cmd + " --advrobust " + " ".join(FAST_GAN)),
        capture_output=True,
        text=True,
        env=env,
    )
    out = flag.stdout + flag.stderr
    assert flag.returncode == 0, out
    assert "INTERNALERROR" not in out and "OSError" not in out
    assert "2 passed" in out
    assert (
        out.count(
            "cannot be written (Read-only file system): generators are kept in "
            "memory for this session and not cached"
        )
        >= 1
    )
    assert (
        "not cached"
        in [line for line in out.splitlines() if line.startswith("test_ro.py::test_gan")][-1]
    )
    assert not (root / ".pytest_cache").exists()


def test_plugin_configure_touches_no_disk(pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".pytest_cache" / "d" / "advrobust").exists()


# --------------------------------------------------------- 2. no input gradient

NO_GRADIENT_CONFTEST = """
import pytest
import torch

class NoGrad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 4)

    @torch.no_grad()
    def forward(self, x):
        return self.fc(x)

class Detached(NoGrad):
    def forward(self, x):
        return self.fc(x.detach())

class Rounding(NoGrad):
    def forward(self, x):  # differentiable in form, gradient zero everywhere
        return self.fc(torch.round(x * 4) / 4)

def _data(model):
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)

@pytest.fixture(scope="session")
def nograd_model():
    return NoGrad()

@pytest.fixture(scope="session")
def detached_model():
    return Detached()

@pytest.fixture(scope="session")
def rounding_model():
    return Rounding()

@pytest.fixture(scope="session")
def nograd_data(nograd_model):
    return _data(nograd_model)

@pytest.fixture(scope="session")
def rounding_data(rounding_model):
    return _data(rounding_model)

@pytest.fixture(scope="session")
def robust_model(nograd_model):
    return nograd_model

@pytest.fixture(scope="session")
def robust_data(nograd_data):
    return nograd_data
"""


def test_no_input_gradient_errors_every_gradient_attack_with_one_sentence(pytester):
    pytester.makeconftest(NO_GRADIENT_CONFTEST)
    pytester.makepyfile(
        test_nograd="""
        import pytest

        NG = dict(model="nograd_model", data="nograd_data", threshold=1.0)

        @pytest.mark.robust(attack="pgd", **NG)
        def test_pgd(): pass

        @pytest.mark.robust(attack="fgsm", **NG)
        def test_fgsm(): pass

        @pytest.mark.robust(attack="gan", **NG)
        def test_gan(): pass

        @pytest.mark.robust(attack="pgd", threshold=1.0, model="detached_model",
                            data="nograd_data")
        def test_detached(): pass

        @pytest.mark.robust(attack="pgd", threshold=1.0, model="rounding_model",
                            data="rounding_data")
        def test_rounding(): pass

        def test_gan_generator(gan_generator): pass
    """
    )
    result = run(pytester, "--advrobust", "-rA", *FAST_GAN, "--advrobust-samples=64")
    result.assert_outcomes(errors=6)
    # the error sections only: under CI=true pytest repeats each message whole in its summary
    out = result.stdout.str().split("short test summary info")[0]
    for attack in ("pgd", "fgsm", "gan"):
        assert (
            f"attack '{attack}' needs the gradient of the loss with respect to the "
            f"input, but none reaches the input of the model from fixture"
        ) in out
    assert out.count("the output does not depend on the input through autograd") == 5
    assert out.count("the input gradient is exactly zero on every sample") == 1
    assert (
        out.count(
            "usual causes are torch.no_grad() or torch.inference_mode() in forward, .detach()"
        )
        == 6
    )
    assert "Traceback" not in out and "RuntimeError" not in out
    assert "gap" not in out and "PASS" not in out


# ---------------------------------------------------------- 3. DataLoaders

LOADER_CONFTEST = """
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

def make():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    y = ((1 - x) @ w).argmax(1)  # the labels fit the loader's 1 - x, not x
    y[::5] = torch.randint(0, 4, (40,), generator=g)
    return x, y, w

class Model(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.fc = torch.nn.Linear(16, 4, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(w.t())

    def forward(self, x):
        return self.fc(x)

def flip(batch):
    x = torch.stack([b[0] for b in batch])
    y = torch.stack([b[1] for b in batch])
    return 1 - x, y

class Dicts(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"pixels": self.x[i], "class": self.y[i]}

def dict_flip(batch):
    return (1 - torch.stack([b["pixels"] for b in batch]),
            torch.stack([b["class"] for b in batch]))

@pytest.fixture(scope="session")
def robust_model():
    return Model(make()[2])

@pytest.fixture(scope="session")
def robust_data():
    x, y, _ = make()
    return DataLoader(TensorDataset(x, y), batch_size=32, collate_fn=flip, shuffle=True)

@pytest.fixture(scope="session")
def dict_data():
    x, y, _ = make()
    return DataLoader(Dicts(x, y), batch_size=32, collate_fn=dict_flip)

def loader_accuracy(model, loader):
    right = total = 0
    with torch.no_grad():
        for xb, yb in loader:
            right += int((model(xb).argmax(1) == yb).sum())
            total += len(yb)
    return right / total
"""


def test_dataloader_is_evaluated_on_what_it_yields(pytester):
    pytester.makeconftest(LOADER_CONFTEST)
    pytester.makepyfile(
        test_loader="""
        import pytest
        import torch
        from conftest import loader_accuracy

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.05, n_samples=500,
                            min_clean_accuracy=0)
        def test_collate(adversarial_batch, robust_model, robust_data):
            assert adversarial_batch.report["clean_accuracy"] == pytest.approx(
                loader_accuracy(robust_model, robust_data), abs=1e-9)
            assert adversarial_batch.x.min() >= 0 and len(adversarial_batch) == 200

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.05, n_samples=500,
                            data="dict_data", min_clean_accuracy=0)
        def test_dict_items(adversarial_batch, robust_model, dict_data):
            assert adversarial_batch.report["clean_accuracy"] == pytest.approx(
                loader_accuracy(robust_model, dict_data), abs=1e-9)

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.05, n_samples=50,
                            min_clean_accuracy=0)
        def test_subset_is_seeded(adversarial_batch):
            first = adversarial_batch.x.clone()
            pytest.first_subset = first

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.06, n_samples=50,
                            min_clean_accuracy=0)
        def test_subset_again(adversarial_batch):
            assert torch.equal(adversarial_batch.x, pytest.first_subset)
    """
    )
    result = run(pytester, "--advrobust", "-rA")
    result.assert_outcomes(passed=4)
    # the collated inputs 1 - x score far above the raw x the dataset holds
    line = [ln for ln in result.stdout.lines if ln.startswith("test_loader.py::test_collate")]
    assert line and "fgsm" in line[-1]


def _loader_accuracy(model, loader):
    right = total = 0
    with torch.no_grad():
        for xb, yb in loader:
            right += int((model(xb).argmax(1) == yb).sum())
            total += len(yb)
    return right / total


@hsettings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(["plain", "shuffled", "collate"]),
    n=st.integers(20, 90),
    batch=st.integers(1, 40),
    drop_last=st.booleans(),
    seed=st.integers(0, 5),
)
def test_clean_accuracy_equals_iterating_the_loader(kind, n, batch, drop_last, seed):
    from pytest_advrobust.evaluation.run import run_evaluation
    from pytest_advrobust.inputs.loaders import seeded_loader
    from pytest_advrobust.settings.robust import RobustSettings

    g = torch.Generator().manual_seed(seed)
    x, w = torch.rand(n, 8, generator=g), torch.randn(8, 3, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    y[: n // 2] = (x[: n // 2] @ w).argmax(1)
    model = torch.nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(w.t())

    def half(items):
        return (torch.stack([i[0] for i in items]) * 0.5, torch.stack([i[1] for i in items]))

    extra = {
        "shuffled": dict(shuffle=True),
        "collate": dict(collate_fn=half, shuffle=True),
        "plain": {},
    }[kind]
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, drop_last=drop_last, **extra)
    if drop_last and n < batch:
        return  # the loader yields nothing: rejected with a sentence elsewhere
    s = RobustSettings(
        attacks=("fgsm",), eps=(0.05,), n_samples=10_000, seed=seed, sanity="off", device="cpu"
    )
    outcome = run_evaluation(model, loader, s)
    if drop_last and kind != "plain":  # which samples are dropped depends on the order:
        with seeded_loader(loader, seed):  # the documented one, seeded from the test's seed
            expected = _loader_accuracy(model, loader)
    else:
        expected = _loader_accuracy(model, loader)
    assert outcome.numbers["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert outcome.numbers["n"] == ((n // batch) * batch if drop_last else n)


# ------------------------------------------------------------ 4. half precision

HALF_CONFTEST = """
import pytest
import torch

def _make(dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4).to(dtype)
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        y = model(x).float().argmax(1)
    return model, (x, y)

@pytest.fixture(scope="session")
def half_model():
    return _make(torch.float16)[0]

@pytest.fixture(scope="session")
def half_data():
    return _make(torch.float16)[1]

@pytest.fixture(scope="session")
def bf16_model():
    return _make(torch.bfloat16)[0]

@pytest.fixture(scope="session")
def bf16_data():
    return _make(torch.bfloat16)[1]
"""


def test_low_precision_models_keep_the_bound_in_the_input_dtype(pytester):
    pytester.makeconftest(HALF_CONFTEST)
    pytester.makepyfile(
        test_half="""
        import pytest
        import torch

        def check(batch, dtype, eps, norm="linf"):
            assert batch.x_adv.dtype == dtype == batch.x.dtype
            d = batch.x_adv.double() - batch.x.double()
            size = d.abs().amax() if norm == "linf" else d.flatten(1).norm(dim=1).max()
            assert float(size) <= eps
            assert 0 <= float(batch.x_adv.min()) and float(batch.x_adv.max()) <= 1

        @pytest.mark.parametrize("kind", ["half", "bf16"])
        @pytest.mark.parametrize("attack", ["pgd", "fgsm", "gan"])
        def test_linf(request, kind, attack):
            dtype = {"half": torch.float16, "bf16": torch.bfloat16}[kind]
            marker = pytest.mark.robust(threshold=1.0, attack=attack, eps=0.1,
                                        model=f"{kind}_model", data=f"{kind}_data")
            request.applymarker(marker)
            check(request.getfixturevalue("adversarial_batch"), dtype, 0.1)

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.5, norm="l2",
                            model="half_model", data="half_data")
        def test_l2(adversarial_batch):
            check(adversarial_batch, torch.float16, 0.5, "l2")
    """
    )
    result = run(pytester, "--advrobust", "-rA", *FAST_GAN)
    result.assert_outcomes(passed=7)
    assert "left the" not in result.stdout.str()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.03), ("l2", 0.5)])
def test_into_dtype_keeps_every_perturbation_inside_after_rounding(dtype, norm, eps):
    from pytest_advrobust.attacks.base import bound
    from pytest_advrobust.inputs.precision import into_dtype

    g = torch.Generator().manual_seed(3)
    x = torch.rand(256, 3, 5, 5, generator=g).to(dtype)
    wild = x.float() + 3 * eps * torch.randn(x.shape, generator=g)
    out = into_dtype(x, bound(x.float(), wild, eps, norm, (0.0, 1.0)), eps, norm, (0.0, 1.0))
    d = out.double() - x.double()
    sizes = d.abs().flatten(1).amax(1) if norm == "linf" else d.flatten(1).norm(dim=1)
    assert out.dtype == dtype and float(sizes.max()) <= eps
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # nearly all of the budget is kept: rounding moves a coordinate by one unit at most
    assert float(sizes.max()) >= eps * (0.97 if dtype == torch.float16 else 0.9)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.03)])
def test_float32_results_read_inside_eps_however_the_size_is_computed(norm, eps):
    """x + delta rounds in float32; the bound must hold for ``(x_adv - x).abs().max() <= eps``
    computed in float32 and compared as a Python float, as a user writes it."""
    from pytest_advrobust.attacks.base import bound
    from pytest_advrobust.inputs.precision import into_dtype

    g = torch.Generator().manual_seed(5)
    x = torch.rand(512, 64, generator=g)
    raw = bound(x, x + 3 * eps * torch.randn(x.shape, generator=g), eps, norm, (0.0, 1.0))
    assert float((raw - x).abs().max()) > eps  # float32 rounding: the case being fixed
    out = into_dtype(x, raw, eps, norm, (0.0, 1.0))
    assert out.dtype == torch.float32
    assert float((out - x).abs().max()) <= eps
    assert bool(((out - x).abs() <= eps).all())
    assert float((out - raw).abs().max()) <= 2e-7  # a unit in the last place, no more


FLOAT64_CONFTEST = """
import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def robust_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4).repeat(1, 4) * 4.0)
    return model


@pytest.fixture(scope="session")
def robust_data():  # NumPy's default float64, as scikit-learn hands it over
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 256)
    x = rng.uniform(0, 0.4, (256, 16))
    for k in range(4):
        x[:, k::4] += 0.5 * (y == k)[:, None]
    return x, y
"""


def test_float64_arrays_reach_a_float32_model_in_its_own_dtype(pytester):
    pytester.makeconftest(FLOAT64_CONFTEST)
    pytester.makepyfile(
        test_f64="""
        import pytest
        import torch

        @pytest.mark.parametrize("attack", ["pgd", "fgsm", "apgd"])
        def test_attack(request, attack):
            request.applymarker(pytest.mark.robust(threshold=1.0, attack=attack, eps=0.05))
            batch = request.getfixturevalue("adversarial_batch")
            assert batch.x.dtype == batch.x_adv.dtype == torch.float32
            assert batch.report["clean_accuracy"] > 0.9
    """
    )
    result = run(pytester, "--advrobust", "-rA")
    result.assert_outcomes(passed=3)
    assert "raised RuntimeError" not in result.stdout.str()


# ----------------------------------------------------------- 5. channels-last

CHANNELS_CONFTEST = """
import pytest
import torch

def _nhwc():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(90, 6, 6, 3, generator=g)
    w = torch.randn(108, 3, generator=g)
    y = (((x - 0.5) / 0.5).flatten(1) @ w).argmax(1)
    return x, y, w

class NHWC(torch.nn.Module):
    def __init__(self, w, permute):
        super().__init__()
        self.fc = torch.nn.Linear(108, 3, bias=False)
        self.permute = permute
        with torch.no_grad():
            self.fc.weight.copy_(w.t())

    def forward(self, x):
        if self.permute:  # channels-first data, the same network
            x = x.permute(0, 2, 3, 1)
        return self.fc(x.flatten(1))

@pytest.fixture(scope="session")
def robust_model():
    return NHWC(_nhwc()[2], False)

@pytest.fixture(scope="session")
def robust_data():
    x, y, _ = _nhwc()
    return x, y

@pytest.fixture(scope="session")
def nchw_model():
    return NHWC(_nhwc()[2], True)

@pytest.fixture(scope="session")
def nchw_data():
    x, y, _ = _nhwc()
    return x.permute(0, 3, 1, 2).contiguous(), y
"""


def test_channels_last_images_are_normalised_and_drawn_on_their_channel_axis(pytester):
    pytester.makeconftest(CHANNELS_CONFTEST)
    pytester.makepyfile(
        test_layout="""
        import pytest

        P = dict(threshold=1.0, attack="pgd", eps=0.05, steps=5,
                 preprocessing=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))

        @pytest.mark.robust(**P)
        def test_nhwc(adversarial_batch):
            assert adversarial_batch.report["clean_accuracy"] == 1.0

        @pytest.mark.robust(model="nchw_model", data="nchw_data", **P)
        def test_nchw(adversarial_batch):
            assert adversarial_batch.report["clean_accuracy"] == 1.0

        @pytest.mark.robust(channel_axis=-1, **P)
        def test_axis_given(adversarial_batch):
            assert adversarial_batch.report["clean_accuracy"] == 1.0

        @pytest.mark.robust(channel_axis=1, **P)
        def test_wrong_axis():
            pass
    """
    )
    result = run(pytester, "--advrobust", "-rA", "--advrobust-images=pics")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*preprocessing has 3 values per channel but channel_axis=1 of inputs of shape "
            "(90, 6, 6, 3) has size 6; give channel_axis the axis that holds the channels*"
        ]
    )
    assert "model from fixture" not in result.stdout.str()
    from PIL import Image

    nhwc = Image.open(pytester.path / "pics" / "test_layout.py_test_nhwc.png")
    nchw = Image.open(pytester.path / "pics" / "test_layout.py_test_nchw.png")
    from pytest_advrobust.reports.images import TITLE_HEIGHT

    # the same pictures under titles that name each test
    below = (0, TITLE_HEIGHT, nhwc.size[0], nhwc.size[1])
    assert nhwc.size == nchw.size and nhwc.crop(below).tobytes() == nchw.crop(below).tobytes()
    assert (
        nhwc.crop((0, 0, nhwc.size[0], TITLE_HEIGHT)).tobytes()
        != nchw.crop((0, 0, nchw.size[0], TITLE_HEIGHT)).tobytes()
    )


# ---------------------------------------------------------- 6. at chance


def test_clean_accuracy_at_chance_fails_the_gate_and_a_floor_can_be_set(blobs_repo):
    blobs_repo.makeconftest(
        BLOBS_CONFTEST
        + textwrap.dedent("""
        @pytest.fixture(scope="session")
        def shuffled_data():
            x, y, _ = make_blobs()
            return x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]
    """)
    )
    blobs_repo.makepyfile(
        test_chance="""
        import pytest

        PGD = dict(threshold=1.0, attack="pgd", eps=0.1, steps=5, n_samples=150)

        @pytest.mark.robust(data="shuffled_data", **PGD)
        def test_shuffled_labels(): pass

        @pytest.mark.robust(data="shuffled_data", min_clean_accuracy=0, **PGD)
        def test_check_switched_off(): pass

        @pytest.mark.robust(**PGD)
        def test_healthy(): pass

        @pytest.mark.robust(min_clean_accuracy=1.0, **PGD)
        def test_floor_met(): pass
    """
    )
    result = run(blobs_repo, "--advrobust", "-rA")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.re_match_lines(
        [
            r".*clean accuracy 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] \(n=150\) of the model from fixture "
            r"'robust_model' on fixture 'shuffled_data' is not clearly above chance \(0\.\d{3}: "
            r"always predicting the most frequent label, \d, scores 0\.3\d{2} on these 150 "
            r"samples, and guessing with the model's own prediction frequencies 0\.3\d{2}\).*"
        ]
    )
    floor = run(
        blobs_repo,
        "--advrobust",
        "-rA",
        "--advrobust-min-clean-accuracy=0.5",
        "-k",
        "healthy or shuffled_labels",
    )
    floor.assert_outcomes(passed=1, failed=1)
    floor.stdout.fnmatch_lines(["*is below min_clean_accuracy=0.5*"])


# ------------------------------------------------- 7. save and compare together

DEGRADING = BLOBS_CONFTEST + textwrap.dedent("""
    import pathlib

    @pytest.fixture(scope="session")
    def robust_model():
        model = NearestCentre(make_blobs()[2])
        if pathlib.Path(__file__).with_name("DEGRADED").exists():
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                model.fc.weight.add_(0.1 * torch.randn(model.fc.weight.shape, generator=g))
        return model
""")


def test_save_and_compare_in_one_run_keeps_the_regressed_entry(pytester):
    pytester.makeconftest(DEGRADING)
    pytester.makepyfile(
        test_gate="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.1, steps=5, n_samples=120)
        def test_pgd(): pass
    """
    )
    run(pytester, "--advrobust", "--advrobust-save-baseline").assert_outcomes(passed=1)
    path = pytester.path / "advrobust-baseline.json"
    before = json.loads(path.read_text())["tests"]["test_gate.py::test_pgd"]
    (pytester.path / "DEGRADED").write_text("")
    both = run(pytester, "--advrobust", "--advrobust-compare", "--advrobust-save-baseline")
    both.assert_outcomes(failed=1)
    both.stdout.fnmatch_lines(
        [
            "*baseline entries of regressed tests not overwritten "
            "(--advrobust-compare): test_gate.py::test_pgd*"
        ]
    )
    assert json.loads(path.read_text())["tests"]["test_gate.py::test_pgd"] == before
    run(pytester, "--advrobust", "--advrobust-compare").assert_outcomes(failed=1)


# --------------------------------------------------------- 8. clear messages

MESSAGES_CONFTEST = BLOBS_CONFTEST + textwrap.dedent("""
    class OneLogit(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :1] - 0.5

    @pytest.fixture(scope="session")
    def one_logit_model():
        return OneLogit()

    @pytest.fixture(scope="session")
    def normalised_data():
        x, y, _ = make_blobs()
        return (x - 0.5) / 0.25, y

    @pytest.fixture(scope="session")
    def robust_train_data():
        x, y, _ = make_blobs(n=120, d=10)
        return x, y
""")


def test_messages_name_preprocessing_two_logits_and_train_shape(pytester):
    pytester.makeconftest(MESSAGES_CONFTEST)
    pytester.makepyfile(
        test_msg="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", data="normalised_data")
        def test_normalised(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", model="one_logit_model")
        def test_one_logit(): pass

        @pytest.mark.robust(threshold=1.0, attack="gan")
        def test_train_shape(): pass
    """
    )
    result = run(pytester, "--advrobust", "-rA", *FAST_GAN)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*outside bounds=(0, 1); if they are already normalised, give the unnormalised data "
            "and preprocessing=(mean, std) so that eps stays in input units*",
            "*returned one logit per input, shape (256, 1)*"
            "for a binary model's logit z, return torch.cat([[]-z, z[]], dim=1)*",
            "*fixture 'robust_train_data' gives samples of shape (10,) but fixture 'robust_data' "
            "gives (20,)*",
        ]
    )
    assert "steps" not in result.stdout.str()  # checked before any training


# ------------------------------------------ 9. settings for a whole repository

NORMALISING_CONFTEST = BLOBS_CONFTEST + textwrap.dedent("""
    class Normalising(NearestCentre):  # expects (x - 0.5) / 0.25, as trained
        def forward(self, x):
            return self.fc((x * 0.25 + 0.5).flatten(1))

    @pytest.fixture(scope="session")
    def robust_model():
        return Normalising(make_blobs()[2])

    @pytest.fixture(scope="session")
    def wide_data():
        x, y, _ = make_blobs()
        return 2 * x - 1, y

    @pytest.fixture(scope="session")
    def plain():
        return NearestCentre(make_blobs()[2])
""")


def test_preprocessing_and_bounds_set_once_apply_to_unmarked_fixtures(pytester):
    pytester.makeconftest(NORMALISING_CONFTEST)
    pytester.makeini("""
        [pytest]
        advrobust_preprocessing = 0.5;0.25
        advrobust_eps = 0.05
    """)
    pytester.makepyfile(
        test_settings="""
        import pytest

        def test_unmarked(adversarial_batch):
            assert adversarial_batch.settings["preprocessing"] == [[0.5], [0.25]]
            assert adversarial_batch.report["clean_accuracy"] == 1.0

        @pytest.mark.robust(threshold=1.0, attack="pgd", steps=5)
        def test_marked(adversarial_batch):
            assert adversarial_batch.report["clean_accuracy"] == 1.0

        @pytest.mark.robust(threshold=1.0, attack="pgd", steps=5, data="wide_data",
                            preprocessing=None, model="plain", min_clean_accuracy=0)
        def test_bounds_option(adversarial_batch):
            assert adversarial_batch.settings["bounds"] == [-1.0, 1.0]
    """
    )
    result = run(pytester, "--advrobust", "-rA", *FAST_GAN, "-k", "unmarked or marked")
    result.assert_outcomes(passed=2)
    result = run(pytester, "--advrobust", "-rA", "--advrobust-bounds=-1,1", "-k", "bounds_option")
    result.assert_outcomes(passed=1)
    bad = run(pytester, "--advrobust", "--advrobust-preprocessing=0.5")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--advrobust-preprocessing*is not MEAN;STD*"])


# ------------------------------------------------ 10. converted once per session

COUNTING_CONFTEST = """
import pytest
import torch
from torch.utils.data import Dataset

CALLS = {"eval": 0, "train": 0}

class Counting(Dataset):
    def __init__(self, n, seed, name):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        centres = 0.3 + 0.4 * torch.rand(3, 12, generator=torch.Generator().manual_seed(0))
        self.x = (centres[self.y] + 0.03 * torch.randn(n, 12, generator=g)).clamp(0, 1)
        self.name = name

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        CALLS[self.name] += 1
        return self.x[i], self.y[i]

@pytest.fixture(scope="session")
def robust_data():
    return Counting(200, 1, "eval")

@pytest.fixture(scope="session")
def robust_train_data():
    return Counting(300, 2, "train")

@pytest.fixture(scope="session")
def robust_model():
    c = 0.3 + 0.4 * torch.rand(3, 12, generator=torch.Generator().manual_seed(0))
    fc = torch.nn.Linear(12, 3)
    with torch.no_grad():
        fc.weight.copy_(2 * c)
        fc.bias.copy_(-(c ** 2).sum(1))
    return fc
"""


def test_dataset_fixtures_are_converted_once_per_session_and_train_data_lazily(pytester):
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(
        test_once="""
        import pytest
        import conftest

        S = dict(threshold=1.0, n_samples=100, steps=3)

        @pytest.mark.robust(attack="pgd", eps=0.05, **S)
        def test_pgd(): pass

        @pytest.mark.robust(attack="pgd", eps=0.1, **S)
        def test_pgd_wider(): pass

        @pytest.mark.robust(attack="fgsm", eps=0.1, **S)
        def test_fgsm(): pass

        def test_zz_pgd_only_counts():
            assert conftest.CALLS == {"eval": 100, "train": 0}

        @pytest.mark.robust(attack="gan", eps=0.1, **S)
        def test_zzz_gan(): pass

        @pytest.mark.robust(attack="gan", eps=0.05, **S)
        def test_zzz_gan_smaller(): pass

        def test_zzzz_counts():
            assert conftest.CALLS == {"eval": 100, "train": 300}
    """
    )
    result = run(pytester, "--advrobust", "-rA", *FAST_GAN)
    result.assert_outcomes(passed=7)


# --------------------------------------------- 11. a baseline that cannot fall


def test_baseline_at_zero_or_chance_warns_that_it_cannot_regress(blobs_repo):
    blobs_repo.makepyfile(
        test_stuck="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.5, steps=10, n_samples=90)
        def test_broken_at_large_eps(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.02, steps=5, n_samples=90)
        def test_small_eps(): pass
    """
    )
    result = run(blobs_repo, "--advrobust", "-rA", "--advrobust-save-baseline")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert (
        out.count(
            "so it can never fall and --advrobust-compare can never catch a "
            "regression here; use a smaller eps or an eps sweep"
        )
        == 1
    )
    assert (
        "test_broken_at_large_eps: the baseline's adversarial accuracy 0.000 under pgd "
        "at eps=0.5 is at 0" in out
    )
    # the warning points at the user's test, not at the plugin's code
    result.stdout.fnmatch_lines(
        ["*test_stuck.py:*: AdvRobustWarning: test_stuck.py::test_broken_at_large_eps: *"]
    )
    assert "pytest_advrobust" not in out.split("warnings summary")[1]


FRAGILE_CONFTEST = """
import os

@pytest.fixture(scope="session")
def fragile_model(robust_model):
    # FRAGILE=<scale>: seeded noise on the weights; at 0.5 the model keeps 2/3 of its clean
    # accuracy and PGD at eps=0.1 takes it below 1/3, chance for 3 classes (the sound model
    # keeps about half)
    scale = float(os.environ.get("FRAGILE", "0"))
    model = NearestCentre(make_blobs()[2])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.fc.weight.add_(scale * torch.randn(model.fc.weight.shape, generator=g))
    return model
"""


def test_a_compare_judges_the_saved_entry_for_cannot_fall_not_the_run(blobs_repo, monkeypatch):
    blobs_repo.makeconftest(blobs_repo.path.joinpath("conftest.py").read_text() + FRAGILE_CONFTEST)
    blobs_repo.makepyfile(
        test_f="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.1, steps=10, n_samples=90,
                            model="fragile_model", sanity="off")
        def test_fragile(): pass
    """
    )
    stuck = (
        "the baseline's adversarial accuracy {:.3f} under pgd at eps=0.1 is at chance for 3 classes"
    )

    def runs(saved, compared):
        monkeypatch.setenv("FRAGILE", saved)
        run(blobs_repo, "--advrobust", "--advrobust-save-baseline").assert_outcomes(passed=1)
        monkeypatch.setenv("FRAGILE", compared)
        return run(blobs_repo, "--advrobust", "--advrobust-compare")

    # a sound baseline, and a run that fell to chance: the fall is caught, nothing is stuck
    fell = runs("0", "0.5")
    fell.assert_outcomes(failed=1)
    assert "REGRESSED" in fell.stdout.str() and "can never fall" not in fell.stdout.str()
    # a baseline at chance, and a run that is sound again: the warning quotes the baseline
    stuck_baseline = runs("0.5", "0")
    stuck_baseline.assert_outcomes(passed=1)
    saved = json.loads((blobs_repo.path / "advrobust-baseline.json").read_text())
    accuracy = saved["tests"]["test_f.py::test_fragile"]["adversarial_accuracy"]
    assert accuracy < 1 / 3
    assert stuck.format(accuracy) in stuck_baseline.stdout.str()


# ------------------------------------------- baseline compared under a weaker attack


def test_a_baseline_compared_under_a_weaker_attack_warns_instead_of_passing_quietly(blobs_repo):
    test = """
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="{attack}", eps=0.3, steps={steps})
        def test_gate():
            pass
    """
    blobs_repo.makepyfile(test_w=test.format(attack="pgd", steps=20))
    run(blobs_repo, "--advrobust", "--advrobust-save-baseline").assert_outcomes(passed=1)
    for attack, steps, changed in (("fgsm", 20, "attack pgd -> fgsm"), ("pgd", 2, "steps 20 -> 2")):
        blobs_repo.makepyfile(test_w=test.format(attack=attack, steps=steps))
        result = run(blobs_repo, "--advrobust", "--advrobust-compare", "-W", "always::UserWarning")
        result.assert_outcomes(passed=1)
        out = result.stdout.str()
        assert "recorded with other settings" in out and changed in out, out
        assert "--advrobust-save-baseline" in out
