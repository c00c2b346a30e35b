"""README's promises, one test per sentence (#20): the ``adversarial_batch`` contract,
and determinism on one machine (bit for bit) and across machines (the same samples,
seeds and budgets; numbers within a few samples)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROMISE_CONFTEST = """
import hashlib
import json
import os
import pytest
import torch

g = torch.Generator().manual_seed(0)
x = torch.rand(300, 12, generator=g, dtype=torch.float64)  # float64 data, float32 model

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(12, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

@pytest.fixture(scope="session")
def robust_model():
    return Net().eval()

@pytest.fixture(scope="session")
def robust_data(robust_model):
    with torch.no_grad():
        y = robust_model(x.float()).argmax(1)
    y[::7] = (y[::7] + 1) % 4  # some samples the model gets wrong without any attack
    return x, y

def digest(t):
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()

def record(batch, name):
    with open(os.environ["DIGESTS"], "a") as fh:
        fh.write(json.dumps({"test": name, "x": digest(batch.x), "y": digest(batch.y),
                             "x_adv": digest(batch.x_adv)}) + "\\n")
"""

PROMISE_TESTS = """
import pytest
import torch
from conftest import record, x as data

# labels from an untrained network: imbalanced, so the chance rule is switched off
ATTACKS = dict(threshold=1.0, eps=0.05, n_samples=150, seed=3, min_clean_accuracy=0.0)

@pytest.mark.robust(attack="pgd", steps=10, **ATTACKS)
def test_pgd(adversarial_batch, robust_model):
    contract(adversarial_batch, robust_model)
    record(adversarial_batch, "pgd")

@pytest.mark.robust(attack=["fgsm", "apgd"], steps=10, **ATTACKS)
def test_worst_case(adversarial_batch, robust_model):
    contract(adversarial_batch, robust_model)
    record(adversarial_batch, "worst")

def contract(b, model):
    # x, y: n_samples evaluation samples, rows of the data, CPU, the model's dtype
    assert len(b) == 150 and b.x.device.type == "cpu" and b.x.dtype == torch.float32
    rows = {tuple(r.tolist()) for r in data.float()}
    assert all(tuple(r.tolist()) in rows for r in b.x)
    # x_adv: same shape and dtype, within eps in the norm and inside bounds, in that dtype
    assert b.x_adv.shape == b.x.shape and b.x_adv.dtype == b.x.dtype
    assert float((b.x_adv - b.x).abs().max()) <= 0.05
    assert 0 <= float(b.x_adv.min()) and float(b.x_adv.max()) <= 1
    # a sample wrong without any attack is x itself
    with torch.no_grad():
        wrong = model(b.x).argmax(1) != b.y
        assert bool(wrong.any()) and torch.equal(b.x_adv[wrong], b.x[wrong])
        fooled = model(b.x_adv).argmax(1) != b.y
    # the report's numbers are the model's on x and x_adv, and evaluate() gives them again
    assert b.report["clean_accuracy"] == round(float((~wrong).double().mean()), 6)
    assert b.report["adversarial_accuracy"] == round(float((~fooled).double().mean()), 6)
    numbers = b.evaluate(model)
    for key in ("clean_accuracy", "adversarial_accuracy", "gap"):
        assert round(numbers[key], 6) == b.report[key]
"""


def _run(pytester, name, *args):
    digests = pytester.path / f"{name}.jsonl"
    pytester.makeconftest(PROMISE_CONFTEST)
    pytester.makepyfile(test_promise=PROMISE_TESTS)
    import os

    os.environ["DIGESTS"] = str(digests)
    try:
        result = pytester.runpytest_subprocess(
            "-p", "no:randomly", "--advrobust", f"--advrobust-json={name}.json", *args
        )
    finally:
        del os.environ["DIGESTS"]
    result.assert_outcomes(passed=2)
    reports = json.loads((pytester.path / f"{name}.json").read_text())["tests"]
    numbers = {r["nodeid"]: (r["clean_accuracy"], r["adversarial_accuracy"]) for r in reports}
    lines = [json.loads(line) for line in digests.read_text().splitlines()]
    return numbers, {d["test"]: d for d in lines}


def test_adversarial_batch_contract_and_determinism_on_one_machine(pytester):
    first = _run(pytester, "first", "--advrobust-threads=1")
    # another process, another order, xdist workers: the same numbers and x_adv, bit for bit
    xdist = _run(pytester, "xdist", "--advrobust-threads=1", "-p", "xdist", "-n", "2")
    alone = _run(pytester, "alone", "--advrobust-threads=1", "-k", "worst or pgd", "-p", "no:xdist")
    assert xdist == first and alone == first


def test_across_machines_the_samples_and_budgets_are_the_same(pytester):
    # another thread count stands for another machine: sums in another order
    one = _run(pytester, "one", "--advrobust-threads=1")
    two = _run(pytester, "two", "--advrobust-threads=2")
    for test in ("pgd", "worst"):
        assert one[1][test]["x"] == two[1][test]["x"] and one[1][test]["y"] == two[1][test]["y"]
    for nodeid, (clean, adv) in one[0].items():
        clean2, adv2 = two[0][nodeid]
        assert clean == clean2 and abs(adv - adv2) <= 3 / 150  # a few samples at most


def test_readme_states_both_promises():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "Evaluation is deterministic on one machine:" in text
    assert "Across machines that is not promised:" in text
    assert "The evaluation samples, the seeds and the step budgets stay the same" in text
    assert "whatever the machine's load, the order of the tests and with or without xdist" in text


@pytest.mark.parametrize("sentence", ["a sample the model gets wrong without any attack is `x`"])
def test_readme_states_the_adversarial_batch_contract(sentence):
    assert sentence in " ".join((ROOT / "README.md").read_text().split())
