"""Stored evaluations (#18): what the key covers, damaged entries, how many are kept.

The plugin-level checks (identical JSON, nothing trained or attacked, every change
recomputes) are in ``test_gate_samples.py``; these call :func:`run_evaluation` directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _support import digits_mlp, digits_tensors

from pytest_advrobust.cache import GanCache
from pytest_advrobust.evaluation.code_digest import code_digest
from pytest_advrobust.evaluation.run import run_evaluation
from pytest_advrobust.evaluation.store import EVALUATIONS, KEEP_PER_TEST
from pytest_advrobust.runtime import Runtime
from pytest_advrobust.settings.robust import RobustSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = RobustSettings(threshold=1.0, attacks=("pgd",), eps=(0.1,), steps=5, n_samples=100)


@pytest.fixture(scope="module")
def digits():
    x, y = digits_tensors(400)
    return x, y, digits_mlp(x, y, steps=60)


def evaluate(model, data, cache_dir, **tools):
    return run_evaluation(model, data, SETTINGS, runtime=Runtime(cache_dir, **tools))


def test_a_second_evaluation_is_read_back_with_the_same_tensors(digits, tmp_path):
    x, y, model = digits
    first = evaluate(model, (x, y), tmp_path)
    second = evaluate(model, (x, y), tmp_path)
    assert not first.reused and second.reused
    assert torch.equal(first.x_adv, second.x_adv) and first.x_adv.dtype == second.x_adv.dtype
    for a, b in ((first.clean, second.clean), (first.adv, second.adv)):
        assert torch.equal(a.pred, b.pred) and torch.equal(a.correct, b.correct)
        assert torch.equal(a.loss, b.loss)
    assert first.numbers == second.numbers and first.sanity == second.sanity
    assert first.sample_record() == second.sample_record()
    # the weights only: no pickle next to them
    names = sorted(p.suffix for p in (tmp_path / EVALUATIONS).glob("*.*") if p.is_file())
    assert names == [".json", ".jsonl", ".lock", ".safetensors"]


def test_without_a_cache_folder_nothing_is_stored(digits):
    x, y, model = digits
    assert not evaluate(model, (x, y), None).reused
    assert not evaluate(model, (x, y), None).reused


def test_a_damaged_entry_is_set_aside_and_the_evaluation_runs_again(digits, tmp_path):
    x, y, model = digits
    first = evaluate(model, (x, y), tmp_path)
    (weights,) = (tmp_path / EVALUATIONS).glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    said = []
    again = evaluate(model, (x, y), tmp_path, warn=said.append)
    assert not again.reused and torch.equal(again.x_adv, first.x_adv)
    assert len(said) == 1 and "is damaged" in said[0] and "checksum" in said[0]
    assert list((tmp_path / EVALUATIONS / "quarantine").iterdir())
    assert evaluate(model, (x, y), tmp_path).reused  # stored again


def test_only_the_newest_evaluations_of_a_test_are_kept(digits, tmp_path):
    x, y, model = digits
    for step in range(KEEP_PER_TEST + 2):  # one "commit" after another
        with torch.no_grad():
            model[1].bias.add_(1e-3 * step)
        evaluate(model, (x, y), tmp_path)
    cache = GanCache(tmp_path / EVALUATIONS)
    assert len(cache.entries()) == KEEP_PER_TEST
    # another test (other settings) keeps its own
    run_evaluation(model, (x, y), replace(SETTINGS, steps=6), runtime=Runtime(tmp_path))
    assert len(cache.entries()) == KEEP_PER_TEST + 1


def test_the_threshold_and_tolerance_do_not_key_an_evaluation(digits, tmp_path):
    x, y, model = digits
    evaluate(model, (x, y), tmp_path)
    other = replace(SETTINGS, threshold=0.2, tolerance=0.05, significance=0.01)
    out = run_evaluation(model, (x, y), other, runtime=Runtime(tmp_path))
    assert out.reused and out.settings.threshold == 0.2


# --------------------------------------------------------------------- code digest

MODEL_SOURCE = """
import torch

SIZES = {"a", "b", "c"}

def helper(x):
    return x * 2 if "a" in SIZES else x

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(helper(x))
"""


def digest_in_subprocess(folder: Path, hash_seed: str) -> str:
    code = "import sys; sys.path.insert(0, '.'); import netmod; "
    code += "from pytest_advrobust.evaluation.code_digest import code_digest; "
    code += "print(code_digest(netmod.Net()))"
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_code_digest_is_the_same_in_every_process_and_follows_edits(tmp_path):
    (tmp_path / "netmod.py").write_text(textwrap.dedent(MODEL_SOURCE))
    # a set constant is written in another order under another hash seed
    first, second = digest_in_subprocess(tmp_path, "1"), digest_in_subprocess(tmp_path, "2")
    assert first == second
    # an edit to a helper the forward calls, weights unchanged
    (tmp_path / "netmod.py").write_text(textwrap.dedent(MODEL_SOURCE).replace("x * 2", "x * 3"))
    assert digest_in_subprocess(tmp_path, "1") != first


def test_the_code_digest_leaves_torch_out_and_sees_the_models_own_module():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert code_digest(net) == code_digest(torch.nn.Sequential(torch.nn.ReLU()))

    def attack(model, x, y, cfg, ctx):
        return x

    assert code_digest(attack) != code_digest(net)  # this test module's code


def test_the_cache_command_lists_and_clears_stored_evaluations(digits, tmp_path, capsys):
    from pytest_advrobust import cli

    x, y, model = digits
    evaluate(model, (x, y), tmp_path)
    assert cli.main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 stored evaluations, " in out and str(tmp_path / EVALUATIONS) in out
    assert cli.main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0
    assert "pruned 0 stored evaluations" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert f"removed 1 stored evaluations from {tmp_path / EVALUATIONS}" in capsys.readouterr().out
    assert not GanCache(tmp_path / EVALUATIONS).entries()
    assert not evaluate(model, (x, y), tmp_path).reused
