"""attack="generated": conditional sample generator, validity, the real-vs-generated gap.

The plugin-level test trains cold on scikit-learn's digits inside the CI budget;
the API-level tests use short step budgets so that each takes seconds.
"""

import dataclasses
import json
import textwrap

import pytest
import torch
from _support import digits_mlp, digits_tensors

from pytest_advrobust.cache import GanCache
from pytest_advrobust.conditional import store
from pytest_advrobust.conditional.evaluation import (
    check_training_data,
    obtain_networks,
    real_and_generated_numbers,
)
from pytest_advrobust.conditional.training import ClassData, default_config, train_generator
from pytest_advrobust.errors import AdvRobustError
from pytest_advrobust.evaluation.plan import plan_of
from pytest_advrobust.evaluation.run import run_evaluation
from pytest_advrobust.metrics.accuracy import Predictions, wilson_interval
from pytest_advrobust.reports.report import build_report
from pytest_advrobust.runtime import Runtime
from pytest_advrobust.settings.marker import from_marker
from pytest_advrobust.settings.robust import RobustSettings

DIGITS_CONFTEST = textwrap.dedent(
    """
    import pytest
    import torch
    from sklearn.datasets import load_digits

    def digits():
        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        return x, torch.tensor(d.target, dtype=torch.long)

    @pytest.fixture(scope="session")
    def robust_train_data():
        x, y = digits()
        return x[:1200], y[:1200]

    @pytest.fixture(scope="session")
    def robust_data():
        x, y = digits()
        return x[1200:], y[1200:]

    @pytest.fixture(scope="session")
    def robust_model(robust_train_data):
        x, y = robust_train_data
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),
                                    torch.nn.ReLU(), torch.nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()
    """
)

DIGITS_TESTS = textwrap.dedent(
    """
    import pytest
    import torch

    @pytest.mark.robust(threshold=0.1, attack="generated", n_samples=300)
    def test_generated_gap():
        pass

    @pytest.mark.robust(threshold=0.1, attack="generated", n_samples=300)
    def test_sampler_fixture(conditional_generator):
        x, y = conditional_generator.sample(20, seed=1, classes=[3, 7])
        assert x.shape == (20, 1, 8, 8) and sorted(set(y.tolist())) == [3, 7]
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        again, _ = conditional_generator.sample(20, seed=1, classes=[3, 7])
        assert torch.equal(x, again)
        logits = conditional_generator.reference(x)
        assert logits.shape == (20, 10)

    @pytest.mark.robust(threshold=0.1, attack="generated", n_samples=300)
    def test_batch(adversarial_batch, robust_model):
        b = adversarial_batch
        assert b.x.shape == (300, 1, 8, 8)
        assert b.x_adv.shape[0] == b.y_adv.shape[0] == b.report["generated"]["accepted"]
        again = b.evaluate(robust_model)
        assert again["adversarial_accuracy"] == pytest.approx(b.report["adversarial_accuracy"],
                                                              abs=1e-6)
        assert again["gap"] == pytest.approx(b.report["gap"], abs=1e-6)
        assert again["clean_accuracy"] == pytest.approx(b.report["clean_accuracy"], abs=1e-6)
        assert b.eps is None and b.report["eps"] is None
        assert repr(b).startswith("AdversarialBatch(n=300, attack='generated', eps=None, ")
        assert b.real_valid.shape == (300,)
        assert int(b.real_valid.sum()) == b.report["generated"]["real_accepted"]
    """
)


def _run(pytester, *args):
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "--advrobust", "--advrobust-threads=1", *args
    )


def _without_timing(rep):
    """The report minus wall-clock seconds and how the networks were obtained."""
    rep = json.loads(json.dumps(rep))
    rep.pop("training")
    rep["generated"].pop("reference")
    return rep


def test_digits_cold_run_then_cache_hit_same_json(pytester):
    pytester.makeconftest(DIGITS_CONFTEST)
    pytester.makepyfile(test_digits=DIGITS_TESTS)
    cache = pytester.path / "cache"
    args = (
        f"--advrobust-cache-dir={cache}",
        "--advrobust-json=r.json",
        f"--advrobust-images={pytester.path / 'img'}",
        "--junitxml=j.xml",
    )
    first = _run(pytester, *args, "--advrobust-save-baseline")
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["*test_generated_gap*generated */300 valid*-*300*PASS*cold*"])
    doc = json.loads((pytester.path / "r.json").read_text())
    rep = {t["nodeid"].split("::")[-1]: t for t in doc["tests"]}["test_generated_gap"]
    g = rep["generated"]
    assert rep["training"]["mode"] == "cold" and rep["training"]["steps"] > 0
    assert g["drawn"] == 300 and g["acceptance_rate"]["value"] >= 0.5
    assert g["reference_accuracy"]["value"] >= 0.9
    assert rep["gap"] == pytest.approx(rep["clean_accuracy"] - rep["adversarial_accuracy"])
    # The gap's real side is the validity-matched one; all real samples are reported beside it.
    assert rep["clean_accuracy"] == g["real_accuracy_valid"]["value"]
    assert rep["clean_ci"] == g["real_accuracy_valid"]["ci"]
    assert 0 < g["real_accepted"] <= 300
    assert g["real_acceptance_rate"]["value"] == pytest.approx(g["real_accepted"] / 300)
    assert g["gap_all_real"] == pytest.approx(
        g["real_accuracy_all"]["value"] - rep["adversarial_accuracy"], abs=1e-6
    )
    lo, hi = rep["adversarial_ci"]
    assert lo <= rep["adversarial_accuracy"] <= hi
    junit = (pytester.path / "j.xml").read_text()
    assert 'name="advrobust_acceptance_rate"' in junit
    assert 'name="advrobust_real_acceptance_rate"' in junit
    stats = GanCache(cache).stats()
    assert stats.get("train") == 2  # generator and reference, once for all tests

    second = _run(pytester, *args, "--advrobust-compare")
    second.assert_outcomes(passed=3)
    doc2 = json.loads((pytester.path / "r.json").read_text())
    rep2 = {t["nodeid"].split("::")[-1]: t for t in doc2["tests"]}["test_generated_gap"]
    assert rep2["training"] == dict(rep2["training"], mode="cached", steps=0)
    assert rep2["generated"]["reference"]["steps"] == 0
    assert rep2["baseline"]["status"] == "ok" and rep2["baseline"]["delta"] == 0.0
    rep2["baseline"] = rep["baseline"]
    assert _without_timing(rep2) == _without_timing(rep)
    assert GanCache(cache).stats().get("train") == 2


def test_the_gate_fails_a_gap_over_the_threshold(pytester):
    pytester.makeconftest(
        DIGITS_CONFTEST
        + textwrap.dedent(
            """
        class Marked(torch.nn.Module):
            # Reads a marker pixel that the real evaluation data carries; generated
            # samples lack it, so this model is right on real data only.
            def forward(self, x):
                return 10.0 * x.flatten(1)[:, 54:64]

        @pytest.fixture(scope="session")
        def marked_model():
            return Marked()

        @pytest.fixture(scope="session")
        def marked_data(robust_data):
            x, y = robust_data
            x = x.clone().flatten(1)
            x[:, 54:64] = 0.0
            x[torch.arange(len(y)), 54 + y] = 1.0
            return x.view(-1, 1, 8, 8), y
        """
        )
    )
    pytester.makepyfile(
        test_gate=textwrap.dedent(
            """
        import pytest

        @pytest.mark.robust(threshold=0.2, attack="generated", n_samples=200,
                            model="marked_model", data="marked_data")
        def test_marked():
            pass
        """
        )
    )
    cache = f"--advrobust-cache-dir={pytester.path / 'c'}"
    warm = _run(pytester, cache, "--advrobust-gan-steps=300", "--advrobust-warm", "-rs")
    warm.assert_outcomes(skipped=1)
    warm.stdout.fnmatch_lines(
        ["*advrobust warm: sample generator: cold, reference classifier: cold*"]
    )
    result = _run(
        pytester, cache, "--advrobust-gan-steps=300", f"--advrobust-images={pytester.path / 'img'}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_marked*generated */200 valid*FAIL*cached*"])
    png = pytester.path / "img" / "test_gate.py_test_marked-generated-wrong.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result.stdout.fnmatch_lines(
        [
            (
                "*generation gap 0.* > threshold 0.200 (real 1.000 on * of "
                "200 valid real samples (all real 1.000) -> generated 0.* "
                "of 200 valid generated samples*"
            )
        ]
    )


BAD_CASES = {
    "one_class": (
        "y == 4",
        (
            "attack='generated' needs training data with at least 2 classes, but fixture "
            "'robust_train_data' has only class 4; give it labelled samples*"
        ),
    ),
    "few": (
        "(y != 9) | (torch.cumsum(y == 9, 0) <= 2)",
        (
            "attack='generated' needs at least 5 training samples of every class, but fixture "
            "'robust_train_data' has 2 of class 9; give it more*"
        ),
    ),
    "unknown": (
        "y != 9",
        (
            "evaluation data from fixture 'robust_data' has class 9, which the sample generator's "
            "training data (fixture 'robust_train_data') lacks; add *"
        ),
    ),
}


def test_bad_input_gets_one_sentence(pytester):
    # robust_train_data depends on the test's name, so that one run covers every case.
    pytester.makeconftest(
        DIGITS_CONFTEST.replace(
            '@pytest.fixture(scope="session")\ndef robust_train_data():',
            "@pytest.fixture\ndef robust_train_data(request):",
        )
        .replace(
            "    return x[:1200], y[:1200]",
            "    x, y = x[:1200], y[:1200]\n"
            "    keep = {"
            + ", ".join(f"'test_{k}': {v[0]}" for k, v in BAD_CASES.items())
            + "}[request.node.name]\n"
            "    return x[keep], y[keep]",
        )
        .replace(
            "def robust_model(robust_train_data):\n    x, y = robust_train_data",
            "def robust_model():\n    x, y = digits()",
        )
    )
    pytester.makepyfile(
        test_bad="import pytest\n"
        + "".join(
            f"\n@pytest.mark.robust(threshold=0.1, attack='generated', n_samples=50)\n"
            f"def test_{k}():\n    pass\n"
            for k in BAD_CASES
        )
    )
    result = _run(pytester, f"--advrobust-cache-dir={pytester.path / 'c'}", "-rE")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([v[1] for v in BAD_CASES.values()], consecutive=False)
    assert "Traceback" not in result.stdout.str()


def test_marker_validity_and_combining_are_checked():
    base = RobustSettings()
    assert from_marker({"attack": "generated", "validity": 0.8}, (0.1,), base).validity == 0.8
    with pytest.raises(AdvRobustError, match=r"validity=1.5 must lie in \[0.5, 1\)"):
        from_marker({"attack": "generated", "validity": 1.5}, (0.1,), base)
    settings = from_marker({"attack": ["generated", "pgd"]}, (0.1,), base)
    x, y = digits_tensors(200)
    with pytest.raises(AdvRobustError, match="cannot be combined with perturbation attacks"):
        run_evaluation(digits_mlp(x, y, steps=5), (x, y), settings)


def test_check_training_data_rejects_float_labels():
    with pytest.raises(AdvRobustError, match="needs integer class labels"):
        check_training_data(torch.zeros(10), "robust_train_data")


# ------------------------------------------------------------------ API level, short budgets


@pytest.fixture
def digits_case(one_torch_thread):
    x, y = digits_tensors()
    model = digits_mlp(x[:1200], y[:1200], steps=60)
    settings = RobustSettings(
        threshold=1.0, attacks=("generated",), n_samples=100, gan_steps=40, validity=0.5
    )
    store.clear_memo()
    yield model, (x[1200:], y[1200:]), (x[:1200], y[:1200]), settings
    store.clear_memo()


def _evaluate(case, cache_dir=None, **kw):
    model, data, train, settings = case
    out = run_evaluation(model, data, settings, train_data=train, runtime=Runtime(cache_dir, **kw))
    return out, build_report("t::x", out)


def test_same_seed_gives_identical_json_and_weights(digits_case):
    _, rep1 = _evaluate(digits_case)
    store.clear_memo()
    _, rep2 = _evaluate(digits_case)
    assert rep1["training"]["mode"] == rep2["training"]["mode"] == "cold"
    assert json.dumps(_without_timing(rep1), sort_keys=True) == json.dumps(
        _without_timing(rep2), sort_keys=True
    )
    x, y = digits_case[2]
    cfg = dataclasses.replace(default_config(1200), steps=5)
    data = ClassData(x, y, torch.arange(10))
    w1 = train_generator(data, cfg, (0, 1)).network.state_dict()
    w2 = train_generator(data, cfg, (0, 1)).network.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    cfg1 = dataclasses.replace(cfg, seed=1)
    w3 = train_generator(data, cfg1, (0, 1)).network.state_dict()
    assert not torch.equal(w1["fc.weight"], w3["fc.weight"])


def test_cache_hit_trains_zero_steps_and_the_model_is_untouched(digits_case, tmp_path):
    model = digits_case[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    _, rep1 = _evaluate(digits_case, tmp_path)
    store.clear_memo()
    _, rep2 = _evaluate(digits_case, tmp_path)
    assert rep1["training"]["steps"] == 40 and rep2["training"]["steps"] == 0
    assert rep2["training"]["mode"] == "cached"
    assert rep2["generated"]["reference"]["mode"] == "cached"
    assert rep2["adversarial_accuracy"] == rep1["adversarial_accuracy"]
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert GanCache(tmp_path).stats() == {"train": 2, "hit": 2}
    assert not list(tmp_path.glob("*.pt")) and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_damaged_entry_is_set_aside_and_retrained(digits_case, tmp_path):
    _, rep1 = _evaluate(digits_case, tmp_path)
    key = rep1["training"]["key"]
    weights = GanCache(tmp_path).weights_path(key)
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\xff" * 8
    weights.write_bytes(bytes(data))
    store.clear_memo()
    warnings = []
    _, rep2 = _evaluate(digits_case, tmp_path, warn=warnings.append)
    assert rep2["training"]["mode"] == "cold" and rep2["training"]["steps"] == 40
    assert rep2["generated"]["reference"]["mode"] == "cached"
    assert len(warnings) == 1 and f"entry {key} is damaged" in warnings[0]
    assert list((tmp_path / "quarantine").glob(f"{key}.*"))
    assert _without_timing(rep2) == _without_timing(rep1)


def test_changed_training_data_warm_starts_the_generator(tmp_path, one_torch_thread):
    x, y = digits_tensors(600)
    cfg = dataclasses.replace(default_config(600), steps=40)
    store.clear_memo()
    cached = Runtime(tmp_path)
    _, cold = store.obtain(
        "generator", ClassData(x, y, torch.arange(10)), cfg, (0, 1), "cpu", cached
    )
    store.clear_memo()
    _, warm = store.obtain(
        "generator", ClassData(x[:500], y[:500], torch.arange(10)), cfg, (0, 1), "cpu", cached
    )
    assert (cold["mode"], cold["steps"]) == ("cold", 40)
    assert (warm["mode"], warm["steps"]) == ("warm", 10) and warm["key"] != cold["key"]
    store.clear_memo()


def _predictions(correct, loss=None):
    correct = torch.tensor(correct, dtype=torch.bool)
    loss = torch.zeros(len(correct)) if loss is None else torch.tensor(loss)
    return Predictions(
        pred=torch.zeros(len(correct), dtype=torch.long), loss=loss, correct=correct, num_classes=10
    )


def test_real_side_is_judged_by_the_same_validity_filter():
    # 10 real samples: the model gets the 7 clear ones right and the 3 hard ones wrong; the
    # reference rejects exactly the 3 hard ones, as it rejects unclear generated samples.
    y = torch.arange(10) % 2
    clean = _predictions([1] * 7 + [0] * 3, loss=[0.1] * 7 + [2.0] * 3)
    valid = torch.tensor([True] * 7 + [False] * 3)
    adv = _predictions([1] * 8, loss=[0.1] * 8)
    num = real_and_generated_numbers(y, clean, y[:8], adv, "absolute", valid)
    assert num["clean_accuracy"] == 1.0 and num["gap"] == 0.0
    assert num["clean_ci"] == list(wilson_interval(7, 7))
    assert num["clean_loss"] == pytest.approx(0.1) and num["loss_gap"] == pytest.approx(0.0)
    real = num["real"]
    assert real["accuracy_all"]["value"] == 0.7 and real["accuracy_valid"]["value"] == 1.0
    assert real["accepted"] == 7 and real["acceptance_rate"]["value"] == 0.7
    assert real["gap_all"] == pytest.approx(-0.3)
    assert num["n"] == 10
    # Without a mask every real sample counts: the unmatched gap of -0.3.
    unmatched = real_and_generated_numbers(y, clean, y[:8], adv, "absolute")
    assert unmatched["gap"] == pytest.approx(-0.3) and unmatched["clean_accuracy"] == 0.7
    with pytest.raises(AdvRobustError, match="none of the 10 real evaluation samples passed"):
        real_and_generated_numbers(y, clean, y[:8], adv, "absolute", torch.zeros(10, dtype=bool))


def test_valid_real_samples_are_those_the_reference_is_confident_on(digits_case):
    model, (x, y), (tx, ty), settings = digits_case
    out = run_evaluation(model, (x, y), settings, train_data=(tx, ty))
    sampling = plan_of(settings).sampling
    _, ref, _ = obtain_networks(tx, ty, sampling, torch.device("cpu"), Runtime())
    with torch.no_grad():
        own = torch.softmax(ref(out.x), 1).gather(1, out.y[:, None]).squeeze(1)
        right = model(out.x).argmax(1) == out.y
    assert torch.equal(out.real_valid, own >= settings.validity)
    assert 0 < int(out.real_valid.sum()) < len(out.y)  # the filter drops some real samples
    g = out.generated
    assert out.numbers["clean_accuracy"] == pytest.approx(
        float(right[out.real_valid].double().mean())
    )
    assert g["real_accuracy_all"]["value"] == pytest.approx(float(right.double().mean()), abs=1e-6)
    assert g["real_accepted"] == int(out.real_valid.sum())
