"""The plugin as users meet it: real pytest sessions in a subprocess (torch is involved)."""

import json
import subprocess
import sys
import textwrap

import pytest

PGD = 'attack="pgd", eps=0.2, steps=10, n_samples=120'


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def test_loose_threshold_passes_and_tight_one_fails_with_every_number(blobs_repo):
    blobs_repo.makepyfile(
        test_gate=f"""
        import pytest

        @pytest.mark.robust(threshold=1.0, {PGD})
        def test_loose():
            pass

        @pytest.mark.robust(threshold=0.05, {PGD})
        def test_tight():
            pass
    """
    )
    result = run(blobs_repo, "--advrobust", "-rA")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines(
        [
            r".*robustness gap [01]\.\d{3} > threshold 0\.050 \(clean 1\.000 -> adversarial "
            r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\], n=120, pgd linf eps=0\.2\)",
        ]
    )
    # the summary section has one row per robust test
    result.stdout.fnmatch_lines(
        [
            "*= advrobust =*",
            "test*attack*eps*n*clean*adversarial*gap*threshold*baseline*verdict*",
            "test_gate.py::test_loose*pgd linf*0.2*120*PASS*",
            "test_gate.py::test_tight*pgd linf*0.2*120*FAIL*",
        ]
    )


def test_without_the_flag_robust_tests_are_skipped_naming_it(blobs_repo):
    blobs_repo.makepyfile(
        test_skip=f"""
        import pytest

        @pytest.mark.robust(threshold=0.1, {PGD})
        def test_marked():
            pass

        def test_fixture(adversarial_batch):
            pass

        def test_generator(gan_generator):
            pass

        def test_plain():
            pass
    """
    )
    result = run(blobs_repo, "-rs", "--strict-markers")
    result.assert_outcomes(passed=1, skipped=3)
    reason = "robustness test: pass --advrobust to run it"
    counts = [
        int(ln.split("[", 1)[1].split("]", 1)[0])
        for ln in result.stdout.lines
        if ln.startswith("SKIPPED") and ln.endswith(reason)
    ]
    assert sum(counts) == 3  # all three robust tests, each for the flag
    assert "advrobust ===" not in result.stdout.str()  # no summary section without the flag


def test_help_shows_the_group_and_markers_lists_robust(pytester):
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        [
            "*adversarial robustness tests (pytest-advrobust)*",
            "*--advrobust *",
            "*--advrobust-device*",
            "*--advrobust-seed*",
            "*--advrobust-samples*",
            "*--advrobust-eps*",
            "*--advrobust-json*",
        ]
    )
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.robust(threshold*"])


def test_strict_markers_are_clean_with_the_flag(blobs_repo):
    blobs_repo.makepyfile(
        test_strict=f"""
        import pytest

        @pytest.mark.robust(threshold=1.0, {PGD})
        def test_marked():
            pass
    """
    )
    run(blobs_repo, "--advrobust", "--strict-markers").assert_outcomes(passed=1)


BAD_INPUT_CONFTEST = """
import math
import pytest
import torch

@pytest.fixture
def wrong_shape_model():
    return lambda x: x.flatten(1)[:, :1]

@pytest.fixture
def nan_model():
    lin = torch.nn.Linear(20, 3)
    return lambda x: lin(x) * float("nan")

@pytest.fixture
def empty_data():
    return torch.zeros(0, 20), torch.zeros(0, dtype=torch.long)

@pytest.fixture
def unlabelled_data():
    return torch.rand(10, 20)

@pytest.fixture
def big_inputs():
    return torch.rand(10, 20) * 5, torch.zeros(10, dtype=torch.long)
"""


def test_bad_input_errors_the_test_with_one_sentence(blobs_repo):
    blobs_repo.makeconftest(
        blobs_repo.path.joinpath("conftest.py").read_text() + textwrap.dedent(BAD_INPUT_CONFTEST)
    )
    blobs_repo.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.robust(attack="pgd")
        def test_no_threshold(): pass

        @pytest.mark.robust(threshold="high", attack="pgd")
        def test_threshold_not_a_number(): pass

        @pytest.mark.robust(threshold=1.5, attack="pgd")
        def test_threshold_outside(): pass

        @pytest.mark.robust(threshold=0.1, attack="deepfool")
        def test_unknown_attack(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", eps=0)
        def test_eps_zero(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", steps=0)
        def test_steps_zero(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", model="no_such_model")
        def test_model_missing(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", model="wrong_shape_model")
        def test_model_shape(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", model="nan_model")
        def test_nan_logits(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", data="empty_data")
        def test_empty(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", data="unlabelled_data")
        def test_unlabelled(): pass

        @pytest.mark.robust(threshold=0.1, attack="pgd", data="big_inputs")
        def test_outside_bounds(): pass
    """
    )
    result = run(blobs_repo, "--advrobust", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=12)
    out = result.stdout.str()
    expected = [
        "robust marker needs a threshold",
        "robust marker argument threshold='high' is not a number",
        "robust marker argument threshold=1.5 must lie in [0, 1]",
        "robust marker argument attack='deepfool' names unknown attack 'deepfool'",
        "robust marker argument eps=0 must be positive",
        "robust marker argument steps=0 must be at least 1",
        "fixture 'no_such_model' not found",
        "model from fixture 'wrong_shape_model' returned one logit per input, shape (256, 1), "
        "but logits need at least 2 classes: for a binary model's logit z, return "
        "torch.cat([-z, z], dim=1)",
        "model from fixture 'nan_model' returned NaN logits",
        "fixture 'empty_data' gave no samples",
        "fixture 'unlabelled_data' gave inputs without labels",
        "inputs from fixture 'big_inputs' span [",
    ]
    for text in expected:
        assert text in out, text
    # one sentence each, no torch traceback
    assert "Traceback" not in out
    assert "torch/nn/modules" not in out


@pytest.mark.parametrize(
    "args, word",
    [
        (["--advrobust-seed=-1"], "--advrobust-seed"),
        (["--advrobust-samples=zero"], "--advrobust-samples"),
        (["--advrobust-eps=0"], "--advrobust-eps"),
        (["--advrobust-device=tpu"], "--advrobust-device"),
        (["--advrobust-sanity=max"], "--advrobust-sanity"),
        (["--advrobust-significance=0"], "--advrobust-significance"),
    ],
)
def test_a_bad_option_value_stops_the_run_naming_the_option(pytester, args, word):
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert word in result.stderr.str()


def test_a_bad_ini_value_stops_the_run_naming_the_ini_key(pytester):
    pytester.makeini("[pytest]\nadvrobust_samples = many\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "advrobust_samples" in result.stderr.str()


def test_same_seed_gives_identical_reports(blobs_repo):
    blobs_repo.makepyfile(
        test_det="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack=["fgsm", "pgd"], eps=0.1, steps=5,
                            random_start=True, restarts=2, n_samples=90)
        def test_a(): pass
    """
    )
    docs = []
    for i in range(2):
        run(  # evaluated both times (--advrobust-retrain), not read back from the store
            blobs_repo,
            "--advrobust",
            f"--advrobust-json=r{i}.json",
            "--advrobust-seed=3",
            "--advrobust-retrain",
        ).assert_outcomes(passed=1)
        doc = json.loads((blobs_repo.path / f"r{i}.json").read_text())
        for rep in doc["tests"]:  # wall time is the one number the seed cannot fix
            for counts in rep["cost"].values():
                assert counts.pop("seconds") >= 0
        docs.append(doc["tests"])
    assert docs[0] == docs[1]  # the pass counts included
    assert docs[0][0]["seed"] == 3


def test_json_report_and_junit_properties(blobs_repo):
    blobs_repo.makepyfile(
        test_rep=f"""
        import pytest

        @pytest.mark.robust(threshold=1.0, {PGD}, metric="relative")
        def test_a(): pass
    """
    )
    result = run(
        blobs_repo, "--advrobust", "--advrobust-json=out/report.json", "--junitxml=junit.xml"
    )
    result.assert_outcomes(passed=1)
    doc = json.loads((blobs_repo.path / "out" / "report.json").read_text())
    assert doc["schema_version"] == 1
    (rep,) = doc["tests"]
    for key in (
        "clean_accuracy",
        "clean_ci",
        "adversarial_accuracy",
        "adversarial_ci",
        "gap",
        "clean_loss",
        "adversarial_loss",
        "loss_gap",
        "per_class",
        "attack_success_rate",
        "n",
        "eps",
        "attack",
        "verdict",
    ):
        assert key in rep, key
    assert rep["metric"] == "relative"
    assert rep["gap"] == pytest.approx(
        (rep["clean_accuracy"] - rep["adversarial_accuracy"]) / rep["clean_accuracy"], abs=1e-6
    )
    assert rep["loss_gap"] == pytest.approx(rep["adversarial_loss"] - rep["clean_loss"], abs=1e-5)
    assert set(rep["per_class"]) == {"0", "1", "2"}
    lo, hi = rep["adversarial_ci"]
    assert lo <= rep["adversarial_accuracy"] <= hi
    xml = (blobs_repo.path / "junit.xml").read_text()
    assert 'name="advrobust_gap"' in xml and 'name="advrobust_report"' in xml


def test_adversarial_batch_fixture_and_its_evaluate(blobs_repo):
    blobs_repo.makepyfile(
        test_batch=f"""
        import pytest
        import torch

        @pytest.mark.robust(threshold=1.0, {PGD})
        def test_batch(adversarial_batch, robust_model):
            b = adversarial_batch
            assert b.x_adv.shape == b.x.shape and len(b) == 120
            assert float((b.x_adv - b.x).abs().max()) <= 0.2 + 1e-6
            assert b.settings["attacks"] == ["pgd"] and b.eps == 0.2
            numbers = b.evaluate(robust_model)
            assert numbers["adversarial_accuracy"] == b.report["adversarial_accuracy"]
            assert numbers["clean_accuracy"] == b.report["clean_accuracy"]

    """
    )
    run(blobs_repo, "--advrobust").assert_outcomes(passed=1)


def test_model_comes_back_exactly_as_it_came(blobs_repo):
    blobs_repo.makepyfile(
        test_restore="""
        import pytest
        import torch

        SNAP = {}

        @pytest.fixture(scope="session")
        def robust_model():
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.Dropout(0.0),
                                    torch.nn.Linear(8, 3))
            m.train()
            m[0].weight.requires_grad_(False)
            SNAP["state"] = {k: v.clone() for k, v in m.state_dict().items()}
            SNAP["modes"] = [x.training for x in m.modules()]
            SNAP["grads"] = [p.requires_grad for p in m.parameters()]
            return m

        @pytest.mark.robust(threshold=1.0, attack=["fgsm", "pgd"], eps=0.1, steps=3,
                            n_samples=60, min_clean_accuracy=0)  # an untrained model
        def test_attack(): pass

        def test_after(robust_model):
            m = robust_model
            for k, v in m.state_dict().items():
                assert torch.equal(v, SNAP["state"][k]), k
            assert [x.training for x in m.modules()] == SNAP["modes"]
            assert [p.requires_grad for p in m.parameters()] == SNAP["grads"]
            assert all(p.grad is None for p in m.parameters())
            assert next(m.parameters()).device.type == "cpu"
    """
    )
    run(blobs_repo, "--advrobust", "--advrobust-sanity=off").assert_outcomes(passed=2)


def test_custom_attack_through_the_hook(blobs_repo):
    blobs_repo.makeconftest(
        blobs_repo.path.joinpath("conftest.py").read_text()
        + textwrap.dedent("""
        import torch

        def corner(model, x, y, cfg, ctx):
            return (x + cfg.eps).clamp(*cfg.bounds)

        def escape(model, x, y, cfg, ctx):
            return x + 2 * cfg.eps

        def pytest_advrobust_register_attacks(register):
            register("corner", corner)
            register("escape", escape)
    """)
    )
    blobs_repo.makepyfile(
        test_custom="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="corner", eps=0.05, n_samples=30)
        def test_corner(): pass

        @pytest.mark.robust(threshold=1.0, attack="escape", eps=0.05, n_samples=30,
                            bounds=None)
        def test_escape(): pass
    """
    )
    result = run(blobs_repo, "--advrobust", "--advrobust-sanity=off")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*attack 'escape' left the linf ball*"])


def test_preprocessing_wraps_the_model(blobs_repo):
    blobs_repo.makepyfile(
        test_pre="""
        import pytest
        import torch

        @pytest.fixture
        def normalised_model(robust_model):
            # expects (x - 0.5) / 0.25: the same classifier behind a normalisation
            inner = robust_model
            return lambda z: inner(z * 0.25 + 0.5)

        @pytest.mark.robust(threshold=1.0, attack="pgd", eps=0.05, steps=5, n_samples=60,
                            model="normalised_model", preprocessing=(0.5, 0.25))
        def test_pre(adversarial_batch):
            assert adversarial_batch.report["clean_accuracy"] == 1.0
    """
    )
    run(blobs_repo, "--advrobust", "--advrobust-sanity=off").assert_outcomes(passed=1)


def test_importing_the_plugin_does_not_import_torch():
    code = (
        "import sys, pytest_advrobust.plugin, pytest_advrobust.settings.robust, "
        "pytest_advrobust.reports.report, pytest_advrobust.plugin.hookspecs; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_pytest_run_without_the_flag_never_imports_torch(pytester):
    pytester.makeconftest("""
        import sys
        def pytest_sessionfinish(session):
            print("TORCH LOADED" if "torch" in sys.modules else "TORCH NOT LOADED")
    """)
    pytester.makepyfile(test_x="def test_x(): pass")
    result = run(pytester, "-s")
    result.stdout.fnmatch_lines(["*TORCH NOT LOADED*"])


def test_global_random_state_and_threads_are_left_as_they_were(blobs_repo):
    blobs_repo.makeconftest(
        blobs_repo.path.joinpath("conftest.py").read_text()
        + textwrap.dedent("""
        SEEN = {}

        def pytest_configure(config):
            torch.set_num_threads(2)

        @pytest.fixture(scope="session", autouse=True)
        def _seeded(robust_model, robust_data):  # after the fixtures that draw numbers
            torch.manual_seed(123)

        def spy(model, x, y, cfg, ctx):
            SEEN["threads"] = torch.get_num_threads()
            return x

        def pytest_advrobust_register_attacks(register):
            register("spy", spy)
    """)
    )
    blobs_repo.makepyfile(
        test_rng="""
        import pytest
        import torch
        import conftest

        @pytest.mark.robust(threshold=1.0, attack="spy", eps=0.1, n_samples=30,
                            random_start=True)
        def test_a():
            assert conftest.SEEN["threads"] == 1

        def test_b():
            expected = torch.rand(1, generator=torch.Generator().manual_seed(123))
            assert torch.equal(torch.rand(1), expected)  # as if test_a never ran
            assert torch.get_num_threads() == 2
    """
    )
    run(
        blobs_repo,
        "--advrobust",
        "--advrobust-threads=1",
        "-p",
        "no:randomly",
        "--advrobust-sanity=off",
    ).assert_outcomes(passed=2)


def test_fixture_names_come_from_ini(pytester):
    pytester.makeconftest(
        textwrap.dedent("""
        import pytest
        import torch

        @pytest.fixture(scope="session")
        def classifier():
            torch.manual_seed(0)
            return torch.nn.Linear(4, 2)

        @pytest.fixture(scope="session")
        def eval_set():
            g = torch.Generator().manual_seed(0)
            return torch.rand(40, 4, generator=g), torch.arange(40) % 2
    """)
    )
    pytester.makeini(
        "[pytest]\nadvrobust_model_fixture = classifier\nadvrobust_data_fixture = eval_set\n"
    )
    pytester.makepyfile(
        test_names="""
        import pytest

        @pytest.mark.robust(threshold=1.0, attack="fgsm", eps=0.05,
                            min_clean_accuracy=0)  # an untrained model
        def test_a(adversarial_batch):
            assert len(adversarial_batch) == 40
    """
    )
    result = pytester.runpytest_subprocess("--advrobust", "--advrobust-sanity=off")
    result.assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nadvrobust_model_fixture = not a name\n")
    result = pytester.runpytest_subprocess("--advrobust")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "advrobust_model_fixture" in result.stderr.str()


def test_the_cache_folder_comes_from_the_environment(blobs_repo, monkeypatch, tmp_path):
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("ADVROBUST_CACHE_DIR", str(cache))
    blobs_repo.makepyfile(
        test_env="""
        import pytest

        @pytest.mark.robust(threshold=1.0, eps=0.1, n_samples=60)
        def test_gan(): pass
    """
    )
    run(
        blobs_repo, "--advrobust", "--advrobust-sanity=off", "--advrobust-gan-steps=20"
    ).assert_outcomes(passed=1)
    # the GAN attack's generator of this model family
    assert len(list(cache.glob("*.safetensors"))) == 1
    assert not (blobs_repo.path / ".pytest_cache" / "d" / "advrobust").exists()
