"""What real model repositories hand the plugin (#20), one kind per test.

Each test runs pytest in a subprocess on the instance from the issue and on one
of our own: several inputs, labels that are not class indices, eps in the wrong
units, non-finite input gradients, scripted and wrapped models, models that
change their own state, batch-dependent outputs, and a path option written with
a space.
"""

import json

import pytest

# Labels here are the models' own predictions (so that the numbers are known): often
# imbalanced, so the chance rule is switched off.
FAST = ("--advrobust-threads=1", "--advrobust-gan-steps=20", "--advrobust-min-clean-accuracy=0")


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)


def reports(path):
    return {t["nodeid"].split("::")[-1]: t for t in json.loads(path.read_text())["tests"]}


# ------------------------------------------------------------- several inputs

SEVERAL_CONFTEST = """
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

EPS = 0.05

def make(n=240):
    g = torch.Generator().manual_seed(0)
    image = 0.2 + 0.6 * torch.rand(n, 1, 4, 4, generator=g)  # eps never reaches the bounds
    meta = torch.randn(n, 3, generator=g)
    return image, meta

W = torch.linspace(-1.0, 1.0, 16)
V = torch.tensor([2.0, -1.0, 0.5])

def score(image, meta):
    return image.flatten(1) @ W + meta @ V - 0.1

class TwoInputs(torch.nn.Module):
    def forward(self, image, meta):
        z = score(image, meta)
        return torch.stack([-z, z], dim=1) / 2

class Output(dict):  # as a Hugging Face ModelOutput: the logits as an attribute
    @property
    def logits(self):
        return self["logits"]

class Keyword(torch.nn.Module):  # a Hugging Face style model: keyword inputs
    def forward(self, meta, pixel_values):
        z = score(pixel_values, meta)
        return Output(logits=torch.stack([-z, z], dim=1) / 2)

def labels():
    image, meta = make()
    return (score(image, meta) > 0).long()

class ListItems(Dataset):  # ([image, meta], label), as foolbox#582 and ART#1359
    def __len__(self):
        return 240
    def __getitem__(self, i):
        image, meta = make()
        return [image[i], meta[i]], labels()[i]

class DictItems(ListItems):
    def __getitem__(self, i):
        image, meta = make()
        return {"meta": meta[i], "pixel_values": image[i]}, labels()[i]

def exact_robust_accuracy(image, meta, y):
    # a linear model under L-inf: robust iff right and |z| > eps * ||w||_1
    z = score(image, meta)
    return float((((z > 0).long() == y) & (z.abs() > EPS * W.abs().sum())).double().mean())

@pytest.fixture(scope="session")
def robust_model():
    return TwoInputs()

@pytest.fixture(scope="session")
def robust_data():
    return ListItems()

@pytest.fixture(scope="session")
def tuple_loader():  # ((image, meta), label) batches from a DataLoader
    image, meta = make()
    items = [((image[i], meta[i]), labels()[i]) for i in range(240)]
    return DataLoader(items, batch_size=32)

@pytest.fixture(scope="session")
def keyword_model():
    return Keyword()

@pytest.fixture(scope="session")
def dict_data():
    return DictItems()
"""

SEVERAL_TESTS = """
import pytest
import torch
from conftest import EPS, exact_robust_accuracy

def check(batch, first=0):
    inputs, adv = batch.inputs(), batch.inputs(adversarial=True)
    if isinstance(inputs, dict):
        image, meta = inputs["pixel_values"], inputs["meta"]
        assert torch.equal(adv["meta"], meta)  # the other input passes through unchanged
        changed = (adv["pixel_values"] - image).abs().max()
    else:
        image, meta = inputs
        assert torch.equal(adv[1], meta)
        changed = (adv[0] - image).abs().max()
    assert 0 < changed <= EPS + 1e-6
    expected = exact_robust_accuracy(image, meta, batch.y)
    assert batch.report["adversarial_accuracy"] == round(expected, 6)  # reports keep 6 digits

@pytest.mark.robust(threshold=1.0, attack="pgd", eps=EPS, steps=10, n_samples=120)
def test_list_items(adversarial_batch):
    check(adversarial_batch)

@pytest.mark.robust(threshold=1.0, attack="pgd", eps=EPS, steps=10, n_samples=120,
                    data="tuple_loader")
def test_tuple_loader(adversarial_batch):
    check(adversarial_batch)

@pytest.mark.robust(threshold=1.0, attack="apgd-t", eps=EPS, steps=20, n_samples=120,
                    model="keyword_model", data="dict_data", attack_input="pixel_values")
def test_keyword_inputs(adversarial_batch):
    check(adversarial_batch)

@pytest.mark.robust(threshold=1.0, eps=EPS, n_samples=120)
def test_default_attack(adversarial_batch):
    image, meta = adversarial_batch.inputs()
    exact = exact_robust_accuracy(image, meta, adversarial_batch.y)
    # no attack can do better than the exact robust accuracy of a linear model
    assert adversarial_batch.report["adversarial_accuracy"] >= round(exact, 6)
    assert torch.equal(adversarial_batch.inputs(adversarial=True)[1], meta)

@pytest.mark.robust(threshold=1.0, attack="pgd", eps=EPS, attack_input="mask")
def test_unknown_input(): pass
"""


def test_models_with_several_inputs(pytester):
    pytester.makeconftest(SEVERAL_CONFTEST)
    pytester.makepyfile(test_several=SEVERAL_TESTS)
    result = run(pytester, "--advrobust", "-rA", *FAST)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*attack_input='mask' names no input of fixture 'robust_data'; its samples have "
            "inputs 0, 1 (a position for a list or tuple, a key for a dict)*"
        ]
    )
    assert "Traceback" not in result.stdout.str()


# ------------------------------------------------------------ labels as names

LABELS_CONFTEST = """
import enum
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

class Animal(enum.Enum):
    CAT = 1
    DOG = 2

x = torch.rand(60, 4, generator=torch.Generator().manual_seed(0))

class Named(Dataset):
    def __len__(self):
        return 60
    def __getitem__(self, i):
        return x[i], ("cat", "dog")[i % 2]

@pytest.fixture(scope="session")
def robust_model():
    return torch.nn.Linear(4, 2)

@pytest.fixture(scope="session")
def robust_data():  # ART#688: numpy string labels
    return x, np.array(["cat", "dog"] * 30)

@pytest.fixture(scope="session")
def loader_names():
    return DataLoader(Named(), batch_size=16)

@pytest.fixture(scope="session")
def enum_labels():
    return [(x[i], Animal.CAT if i % 2 else Animal.DOG) for i in range(60)]
"""


def test_labels_that_are_not_class_indices(pytester):
    pytester.makeconftest(LABELS_CONFTEST)
    pytester.makepyfile(
        test_labels="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd")
        def test_numpy_strings(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", data="loader_names")
        def test_loader_strings(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", data="enum_labels")
        def test_enum_members(): pass
        """
    )
    result = run(pytester, "--advrobust", "-rA")
    result.assert_outcomes(errors=3)
    out = result.stdout.str()
    for fixture, shown, kind in (
        ("robust_data", "'cat', 'dog'", "str"),
        ("loader_names", "'cat', 'dog'", "str"),
        ("enum_labels", "<Animal.DOG: 2>", "Animal"),  # items one by one: the first
    ):
        assert (
            f"fixture {fixture!r} gave labels that are not class indices ({shown}, of type "
            f"{kind}); give each label as the index of its class in the model's logits, in "
            "the order of the model's outputs"
        ) in out
    assert "TypeError" not in out and "Traceback" not in out


# ------------------------------------------------------------ eps in the wrong units


def test_eps_that_cannot_be_meant(blobs_repo):
    blobs_repo.makepyfile(
        test_eps="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=8)
        def test_pixel_levels(): pass  # foolbox#247: eps=8 on data in [0, 1]

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=2, bounds=(-1, 1))
        def test_range_of_two(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.001)
        def test_divided_twice(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=3, norm="l2")
        def test_l2_is_not_judged(): pass

        @pytest.mark.robust(threshold=1.0, attack="pgd")
        def test_option(): pass
        """
    )
    result = run(blobs_repo, "--advrobust", "-rA", "--advrobust-eps=255", "-k", "not option")
    result.assert_outcomes(passed=2, errors=2, warnings=1)
    out = result.stdout.str()
    assert (
        "robust marker argument eps=8 is at least as wide as the range of bounds (0, 1), so the "
        "attack could replace every input by any other and every model would score 0; eps is "
        "in the units of the inputs: for 8 levels of 255 write eps=8/255 (= 0.03137)"
    ) in out
    assert "eps=2 is at least as wide as the range of bounds (-1, 1)" in out
    assert "write eps=2/255*2 (= 0.01569)" in out
    assert "robust marker argument eps=0.001 is below one 8-bit step of the range of bounds" in out
    option = run(blobs_repo, "--advrobust", "-rA", "--advrobust-eps=255", "-k", "option")
    option.assert_outcomes(errors=1)
    option.stdout.fnmatch_lines(["*--advrobust-eps (ini advrobust_eps)=255 is at least as wide*"])


# ------------------------------------------------- non-finite input gradients

NAN_GRADIENT_CONFTEST = """
import pytest
import torch

g = torch.Generator().manual_seed(0)
x = torch.rand(96, 8, generator=g)
x[::3, :2] = 0.0  # a third of the samples sit where sqrt and log have no finite slope
W = torch.randn(8, 3, generator=g)

class Sqrt(torch.nn.Module):  # ART#824
    def forward(self, x):
        return torch.sqrt(x) @ W

def safe_log(x):  # finite values, but the unused branch makes the gradient NaN at 0
    return torch.where(x > 0, torch.log(x), torch.zeros_like(x))

class Log(torch.nn.Module):
    def forward(self, x):
        return safe_log(x) @ W

@pytest.fixture(scope="session")
def robust_model():
    return Sqrt()

@pytest.fixture(scope="session")
def log_model():
    return Log()

@pytest.fixture(scope="session")
def robust_data():
    return x, (torch.sqrt(x) @ W).argmax(1)

@pytest.fixture(scope="session")
def log_data():
    return x, (safe_log(x) @ W).argmax(1)
"""


def test_non_finite_gradients_are_the_models_property(pytester):
    pytester.makeconftest(NAN_GRADIENT_CONFTEST)
    pytester.makepyfile(
        test_nan="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", norm="l2", eps=0.5)
        def test_sqrt_l2(): pass

        @pytest.mark.robust(threshold=1.0, attack=["fgsm", "apgd"], eps=0.1,
                            model="log_model", data="log_data")
        def test_log_linf(): pass
        """
    )
    result = run(pytester, "--advrobust", "-rA", "--advrobust-json=r.json", *FAST)
    result.assert_outcomes(passed=2, warnings=2)
    out = result.stdout.str()
    assert "returned NaN" not in out
    for fixture in ("robust_model", "log_model"):
        assert (
            f"sanity flag gradients: The input gradient of the cross-entropy of the model from "
            f"fixture {fixture!r} contains NaN or inf for 32 of 96 samples (33.3%)"
        ) in out
    for t in reports(pytester.path / "r.json").values():
        assert [f["flag"] for f in t["sanity"]] == ["gradients"]
        assert 0 < t["adversarial_accuracy"] <= t["clean_accuracy"]


# --------------------------------------------------- scripted, traced, compiled

WRAPPED_CONFTEST = """
import pytest
import torch

g = torch.Generator().manual_seed(0)
x = torch.rand(200, 10, generator=g)

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(10, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

@pytest.fixture(scope="session")
def plain_model():
    return Net().eval()

@pytest.fixture(scope="session")
def robust_model(plain_model):  # auto-attack#94
    return torch.jit.script(Net().eval())

@pytest.fixture(scope="session")
def traced_model():
    return torch.jit.trace(Net().eval(), x[:4])

@pytest.fixture(scope="session")
def compiled_model():
    return torch.compile(Net().eval(), backend="eager")

@pytest.fixture(scope="session")
def parallel_model():
    return torch.nn.DataParallel(Net().eval())

@pytest.fixture(scope="session")
def robust_data(plain_model):
    with torch.no_grad():
        return x, plain_model(x).argmax(1)
"""


def test_scripted_traced_compiled_and_wrapped_models(pytester):
    pytester.makeconftest(WRAPPED_CONFTEST)
    pytester.makepyfile(
        test_wrapped="""
        import pytest

        PGD = dict(threshold=1.0, attack="pgd", eps=0.1, steps=10, n_samples=100)

        @pytest.mark.robust(model="plain_model", **PGD)
        def test_plain(): pass

        @pytest.mark.robust(**PGD)
        def test_scripted(): pass

        @pytest.mark.robust(model="traced_model", **PGD)
        def test_traced(): pass

        @pytest.mark.robust(model="compiled_model", **PGD)
        def test_compiled(): pass

        @pytest.mark.robust(model="parallel_model", **PGD)
        def test_parallel(): pass

        @pytest.mark.robust(threshold=1.0, n_samples=100)
        def test_scripted_default_attack(): pass
        """
    )
    result = run(pytester, "--advrobust", "-rA", "--advrobust-json=r.json", *FAST)
    result.assert_outcomes(passed=6)
    assert "register_forward_hook" not in result.stdout.str()
    tests = reports(pytester.path / "r.json")
    plain = tests["test_plain"]
    for name in ("test_scripted", "test_traced", "test_compiled", "test_parallel"):
        for field in ("clean_accuracy", "adversarial_accuracy"):
            assert tests[name][field] == plain[field], (name, field)
        assert tests[name]["cost"] == {
            "pgd": dict(plain["cost"]["pgd"], seconds=tests[name]["cost"]["pgd"]["seconds"])
        }
    assert tests["test_scripted_default_attack"]["cost"]["gan"]["forward_per_sample"] > 3


# ---------------------------------------------------- models that keep state

STATEFUL_CONFTEST = """
import pytest
import torch

g = torch.Generator().manual_seed(0)
x = torch.rand(240, 6, generator=g)
W = torch.randn(6, 3, generator=g)

class RunningMean(torch.nn.Module):  # ART#908: a forward that updates its own buffer
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(6))

    def forward(self, x):
        self.mean.mul_(0.9).add_(0.1 * x.detach().mean(0))
        return (x - self.mean) @ W

class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("w", W.clone())

    def forward(self, x):
        self.calls += 1
        return x @ self.w + 0.01 * self.calls

MODELS = {"robust_model": RunningMean(), "counter_model": torch.jit.script(Counter())}
FIRST = {k: {n: b.clone() for n, b in m.named_buffers()} for k, m in MODELS.items()}

@pytest.fixture(scope="session")
def robust_model():
    return MODELS["robust_model"]

@pytest.fixture(scope="session")
def counter_model():
    return MODELS["counter_model"]

@pytest.fixture(scope="session")
def robust_data():
    return x, (x @ W).argmax(1)
"""

STATEFUL_TESTS = """
import pytest
import torch
from conftest import FIRST, MODELS

PGD = dict(threshold=1.0, attack="pgd", eps=0.1, steps=10)

@pytest.mark.robust(n_samples=200, **PGD)
def test_before(): pass

@pytest.mark.robust(n_samples=100, **PGD)
def test_running_mean(): pass

@pytest.mark.robust(n_samples=150, model="counter_model", **PGD)
def test_counter(): pass

def test_handed_back_as_they_came():
    for name, model in MODELS.items():
        for key, buf in model.named_buffers():
            assert torch.equal(buf, FIRST[name][key]), (name, key)
"""


def test_models_that_change_their_own_state(pytester):
    pytester.makeconftest(STATEFUL_CONFTEST)
    pytester.makepyfile(test_state=STATEFUL_TESTS)
    result = run(pytester, "--advrobust", "-rA", "--advrobust-json=all.json", *FAST)
    assert result.parseoutcomes()["passed"] == 4
    alone = run(  # evaluated again, not read back from the first run's stored evaluations
        pytester,
        "--advrobust",
        "-k",
        "running_mean or counter",
        "--advrobust-json=alone.json",
        "--advrobust-retrain",
        *FAST,
    )
    assert alone.parseoutcomes()["passed"] == 2
    everything, only = reports(pytester.path / "all.json"), reports(pytester.path / "alone.json")
    for name in ("test_running_mean", "test_counter"):
        for field in ("clean_accuracy", "adversarial_accuracy", "gap"):
            assert everything[name][field] == only[name][field]  # no order dependence
        flags = [f["flag"] for f in everything[name]["sanity"]]
        assert "stateful" in flags and "nondeterministic" not in flags
    out = result.stdout.str()
    assert "The model from fixture 'robust_model' changes its own state" in out
    assert "changed its buffers (mean)" in out and "changed its buffers (calls)" in out


# --------------------------------------------------------- batch dependence

BATCH_CONFTEST = """
import pytest
import torch

g = torch.Generator().manual_seed(0)
x = torch.rand(120, 8, generator=g)

class BatchStats(torch.nn.Module):  # foolbox#325: no running statistics
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 4)
        self.bn = torch.nn.BatchNorm1d(4, track_running_stats=False)

    def forward(self, x):
        return self.bn(self.fc(x))

class Centred(torch.nn.Module):  # features centred on the batch mean
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        if x.shape[0] < 3:
            raise ValueError("needs a batch of at least 3 samples")
        return self.fc(x - x.mean(0, keepdim=True))

@pytest.fixture(scope="session")
def robust_model():
    return BatchStats().eval()

@pytest.fixture(scope="session")
def centred_model():
    return Centred().eval()

@pytest.fixture(scope="session")
def robust_data(robust_model):
    with torch.no_grad():
        return x, robust_model(x).argmax(1)

@pytest.fixture(scope="session")
def centred_data(centred_model):
    with torch.no_grad():
        return x, centred_model(x).argmax(1)
"""


def test_batch_dependent_outputs(pytester):
    pytester.makeconftest(BATCH_CONFTEST)
    pytester.makepyfile(
        test_batch="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.2, steps=20, batch_size=8)
        def test_batch_norm(): pass

        @pytest.mark.robust(threshold=1.0, attack=["pgd", "apgd"], eps=0.2, steps=20,
                            batch_size=7, model="centred_model", data="centred_data")
        def test_centred(): pass
        """
    )
    result = run(pytester, "--advrobust", "-rA", "--advrobust-json=r.json", *FAST)
    result.assert_outcomes(passed=2, warnings=2)
    out = result.stdout.str()
    assert "Expected more than 1 value per channel" not in out and "ValueError" not in out
    for fixture in ("robust_model", "centred_model"):
        assert (
            f"sanity flag batch_dependent: The model from fixture {fixture!r} gives other "
            "outputs for the same samples in batches of 8 than in one batch of 120"
        ) in out
    for t in reports(pytester.path / "r.json").values():
        assert [f["flag"] for f in t["sanity"]] == ["batch_dependent"]


# ------------------------------------------------- a path option and a space


@pytest.mark.parametrize(
    "option, value",
    [("--advrobust-cache-dir", "restored-cache"), ("--advrobust-json", "report.json")],
    ids=["cache-dir-issue", "json-own"],
)
def test_path_option_written_with_a_space(pytester, option, value):
    pytester.makeini("[pytest]\nadvrobust_eps = 0.05\n")
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    (pytester.path / "restored-cache").mkdir()
    result = run(pytester, option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"{option} {value}: write {option}={value} (with '='); pytest reads a value after a "
        "space as a test path before it knows this option, which can choose another rootdir "
        "and leave your ini file unread"
    ) in result.stderr.str()
    fixed = run(pytester, f"{option}={value}")
    fixed.assert_outcomes(passed=1)


def test_a_guarded_model_grows_its_smallest_batch_without_a_probe():
    # gan_generator and `advrobust warm` call the model without the evaluation's probe
    import torch

    from pytest_advrobust.inputs.calls import guarded

    class BatchStats(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.bn = torch.nn.BatchNorm1d(3, track_running_stats=False)

        def forward(self, x):
            return self.bn(self.fc(x))

    net = guarded(BatchStats().eval())
    x = torch.rand(10, 4)
    assert net(x).shape == (10, 3) and net.min_batch == 1
    assert net(x[:1]).shape == (1, 3)  # padded with earlier samples, one row back
    assert net.min_batch == 2 and net.record.padded_calls == 1
