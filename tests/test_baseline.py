"""Baseline files: round trip, comparison, save modes, pruning, atomic writes, fingerprints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pytest_advrobust
from pytest_advrobust.errors import AdvRobustError
from pytest_advrobust.reports import baseline as bl

ENV = {"torch": "2.14.1", "device_kind": "cpu", "seed": 0, "plugin": "0.1.0", "python": "3.11"}


def report(nodeid, adv=0.75, clean=0.9, **extra):
    rep = {
        "nodeid": nodeid,
        "attack": "pgd",
        "attacks": ["pgd"],
        "norm": "linf",
        "eps": 0.1,
        "n": 512,
        "seed": 0,
        "metric": "absolute",
        "threshold": 0.3,
        "settings": {"attack": "pgd", "eps": 0.1, "steps": 40, "bounds": (0.0, 1.0)},
        "clean_accuracy": clean,
        "adversarial_accuracy": adv,
        "gap": None if adv is None else clean - adv,
        "per_class": {"0": adv},
        "verdict": "pass",
    }
    rep.update(extra)
    return rep


def save(path, reports, *, mode="all", collected=None, environment=ENV):
    existing = bl.load_baseline(path)
    return bl.save_baseline(
        path, reports, mode=mode, existing=existing, collected=collected, environment=environment
    )


# ---------------------------------------------------------------- round trip


def test_missing_file_loads_as_none(tmp_path):
    assert bl.load_baseline(tmp_path / "nope.json") is None


def test_round_trip(tmp_path):
    path = tmp_path / "robust-baseline.json"
    result = save(path, [report("t.py::b", adv=0.5), report("t.py::a", adv=0.75)])
    assert result.path == path
    assert result.written == ["t.py::a", "t.py::b"]
    assert result.kept == [] and result.pruned == []

    loaded = bl.load_baseline(path)
    assert loaded["schema_version"] == 2
    assert loaded["environment"] == ENV
    entry = loaded["tests"]["t.py::a"]
    assert set(entry) == {
        "adversarial_accuracy",
        "clean_accuracy",
        "gap",
        "attack",
        "eps",
        "norm",
        "n",
        "seed",
        "settings",
        "environment",
        "samples",
    }
    assert entry["adversarial_accuracy"] == 0.75
    assert entry["clean_accuracy"] == 0.9
    assert entry["gap"] == pytest.approx(0.15)
    assert entry["settings"]["bounds"] == [0.0, 1.0]
    assert entry["environment"] == ENV
    assert loaded["tests"]["t.py::b"]["adversarial_accuracy"] == 0.5


def test_file_format_is_diff_friendly(tmp_path):
    path = tmp_path / "b.json"
    save(path, [report("t.py::z"), report("t.py::a")])
    text = path.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert list(data["tests"]) == ["t.py::a", "t.py::z"]


def test_errored_reports_are_not_recorded(tmp_path):
    path = tmp_path / "b.json"
    result = save(path, [report("t.py::ok"), report("t.py::err", adv=None, verdict="error")])
    assert result.written == ["t.py::ok"]
    assert list(bl.load_baseline(path)["tests"]) == ["t.py::ok"]


# ---------------------------------------------------------------- compare


def entry(adv):
    return {
        "adversarial_accuracy": adv,
        "attack": "pgd",
        "eps": 0.1,
        "norm": "linf",
        "n": 512,
        "seed": 0,
    }


OLD_FORMAT = (
    "; judged by the absolute rule: the baseline entry has no per-sample verdicts (it was "
    "saved by an older version); save the baseline again to compare sample by sample"
)


def test_compare_ok_within_tolerance():
    c = bl.compare(entry(0.75), report("t", adv=0.74), 0.02)
    assert c.status == "ok" and not c.regressed
    assert c.baseline == 0.75 and c.current == 0.74
    assert c.delta == pytest.approx(-0.01)
    assert c.tolerance == 0.02
    assert "within tolerance" in c.message
    assert c.to_report() == {
        "adversarial_accuracy": 0.75,
        "delta": c.delta,
        "tolerance": 0.02,
        "status": "ok",
        "rule": "absolute",
        "significance": 0.05,
        "paired": None,
        "note": OLD_FORMAT.split(": ", 1)[1],
    }


def test_compare_regressed_message_carries_every_number():
    c = bl.compare(entry(0.75), report("t", adv=0.669), 0.02)
    assert c.status == "regressed" and c.regressed
    assert c.delta == pytest.approx(-0.081)
    assert c.message == (
        "adversarial accuracy fell 0.081 below baseline "
        "(baseline 0.750 -> current 0.669, delta -0.081, tolerance 0.020)" + OLD_FORMAT
    )


def test_compare_boundary_is_not_a_regression():
    # exactly tolerance below (with float noise) stays ok
    c = bl.compare(entry(0.7), report("t", adv=0.7 - 0.02), 0.02)
    assert c.status == "ok"
    assert bl.compare(entry(0.5), report("t", adv=0.5), 0.0).status == "ok"
    assert bl.compare(entry(0.5), report("t", adv=0.499), 0.0).status == "regressed"


def test_compare_improved():
    c = bl.compare(entry(0.70), report("t", adv=0.75), 0.02)
    assert c.status == "improved"
    assert c.delta == pytest.approx(0.05)
    assert "rose 0.050 above baseline" in c.message
    assert "delta +0.050" in c.message


def test_compare_missing():
    c = bl.compare(None, report("t", adv=0.6), 0.02)
    assert c.status == "missing"
    assert c.baseline is None and c.delta is None and c.current == 0.6
    assert "no baseline entry" in c.message


def test_compare_notes_different_settings():
    old = dict(entry(0.75), eps=0.05)
    c = bl.compare(old, report("t", adv=0.75), 0.02)
    assert c.status == "ok"
    assert c.mismatches == ["eps 0.05 -> 0.1"]
    assert "eps 0.05 -> 0.1" in c.message


def test_compare_rejects_bad_input():
    with pytest.raises(ValueError, match="tolerance"):
        bl.compare(entry(0.5), report("t"), -0.1)
    with pytest.raises(ValueError, match="adversarial_accuracy"):
        bl.compare(entry(0.5), report("t", adv=None), 0.02)


def test_missing_policies_are_the_options_choices():
    assert bl.MISSING_POLICIES == ("fail", "warn", "skip")


# ---------------------------------------------------------------- save modes


def test_save_mode_new_only_adds_missing_entries(tmp_path):
    path = tmp_path / "b.json"
    save(path, [report("t.py::a", adv=0.75)])
    result = save(path, [report("t.py::a", adv=0.10), report("t.py::b", adv=0.6)], mode="new")
    assert result.written == ["t.py::b"]
    assert result.kept == ["t.py::a"]
    tests = bl.load_baseline(path)["tests"]
    assert tests["t.py::a"]["adversarial_accuracy"] == 0.75  # untouched
    assert tests["t.py::b"]["adversarial_accuracy"] == 0.6


def test_save_mode_all_rewrites_entries(tmp_path):
    path = tmp_path / "b.json"
    save(path, [report("t.py::a", adv=0.75), report("t.py::b", adv=0.6)])
    new_env = dict(ENV, torch="2.15.0")
    result = save(path, [report("t.py::a", adv=0.70)], environment=new_env)
    assert result.written == ["t.py::a"]
    assert result.kept == ["t.py::b"]  # still collected (collected=None), not run
    data = bl.load_baseline(path)
    assert data["tests"]["t.py::a"]["adversarial_accuracy"] == 0.70
    assert data["tests"]["t.py::a"]["environment"] == new_env
    assert data["tests"]["t.py::b"]["environment"] == ENV
    assert data["environment"] == new_env


def test_save_prunes_tests_no_longer_collected(tmp_path):
    path = tmp_path / "b.json"
    save(path, [report("t.py::a"), report("t.py::gone"), report("t.py::idle")])
    collected = {"t.py::a", "t.py::idle", "t.py::new"}
    result = save(path, [report("t.py::a"), report("t.py::new")], collected=collected)
    assert result.pruned == ["t.py::gone"]
    assert result.kept == ["t.py::idle"]
    assert result.written == ["t.py::a", "t.py::new"]
    assert sorted(bl.load_baseline(path)["tests"]) == ["t.py::a", "t.py::idle", "t.py::new"]


def test_save_rejects_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        bl.save_baseline(
            tmp_path / "b.json", [], mode="some", existing=None, collected=None, environment=ENV
        )


def test_save_without_changes_leaves_file_alone(tmp_path):
    path = tmp_path / "b.json"
    save(path, [report("t.py::a")])
    os.utime(path, (1_000_000, 1_000_000))
    result = save(path, [report("t.py::a", adv=0.1)], mode="new", environment=dict(ENV, torch="9"))
    assert result.written == [] and result.kept == ["t.py::a"]
    assert path.stat().st_mtime == 1_000_000


# ---------------------------------------------------------------- atomic write


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "b.json"
    path.write_text("old content that is much longer than nothing " * 100)
    os.chmod(path, 0o640)
    old_inode = path.stat().st_ino
    save_result = bl.save_baseline(
        path, [report("t.py::a")], existing=None, collected=None, environment=ENV
    )
    assert save_result.written == ["t.py::a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    assert path.stat().st_ino != old_inode  # replaced by rename, not rewritten in place
    assert (path.stat().st_mode & 0o777) == 0o640  # permissions survive
    assert json.loads(path.read_text())["tests"]["t.py::a"]["adversarial_accuracy"] == 0.75


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    save(path, [report("t.py::a")])
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bl.os, "replace", boom)
    with pytest.raises(AdvRobustError) as info:
        save(path, [report("t.py::a", adv=0.1)])
    assert str(path) in str(info.value) and "--advrobust-baseline" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_save_creates_parent_folder(tmp_path):
    path = tmp_path / "sub" / "dir" / "b.json"
    save(path, [report("t.py::a")])
    assert bl.load_baseline(path)["tests"]["t.py::a"]["n"] == 512


# ---------------------------------------------------------------- damaged files


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ("", "is empty"),
        ("[1, 2]", "JSON object"),
        ('{"tests": {}}', "no schema_version"),
        (
            '{"schema_version": 7, "tests": {}}',
            "schema_version 7, which this plugin cannot read (it reads 1 and 2)",
        ),
        ('{"schema_version": 1, "tests": []}', "'tests'"),
        ('{"schema_version": 1, "tests": {"t::a": {"adversarial_accuracy": "high"}}}', "t::a"),
    ],
)
def test_damaged_file_raises_one_sentence(tmp_path, content, fragment):
    path = tmp_path / "robust-baseline.json"
    path.write_text(content)
    with pytest.raises(AdvRobustError) as info:
        bl.load_baseline(path)
    message = str(info.value)
    assert str(path) in message
    assert "--advrobust-baseline" in message
    assert fragment in message
    assert "\n" not in message
    assert info.value.__cause__ is None


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(AdvRobustError, match="folder"):
        bl.load_baseline(tmp_path)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_differences():
    new = dict(ENV, torch="2.14.1", device_kind="cuda:NVIDIA H200")
    old = dict(ENV, torch="2.13.0")
    assert bl.fingerprint_differences(old, new) == [
        "torch 2.13.0 -> 2.14.1",
        "device_kind cpu -> cuda:NVIDIA H200",
    ]
    assert bl.fingerprint_differences(ENV, dict(ENV)) == []
    partial = {k: v for k, v in ENV.items() if k != "python"}
    assert bl.fingerprint_differences(partial, ENV) == ["python (not recorded) -> 3.11"]
    assert bl.fingerprint_differences(None, {"extra": 1}) == ["extra (not recorded) -> 1"]


def test_environment_fingerprint_cpu():
    torch = pytest.importorskip("torch")
    fp = bl.environment_fingerprint("cpu", 3)
    assert fp == {
        "torch": torch.__version__,
        "device_kind": "cpu",
        "seed": 3,
        "plugin": pytest_advrobust.__version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    assert bl.environment_fingerprint(torch.device("cpu"), 0)["device_kind"] == "cpu"


def test_environment_fingerprint_names_cuda_card():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    fp = bl.environment_fingerprint("cuda:0", 0)
    assert fp["device_kind"] == f"cuda:{torch.cuda.get_device_name(0)}"
    assert fp["device_kind"] == bl.environment_fingerprint("cuda", 0)["device_kind"]


def test_module_does_not_import_torch():
    root = Path(pytest_advrobust.__file__).resolve().parents[1]
    code = textwrap.dedent(
        """
        import sys
        import pytest_advrobust.reports.baseline
        print("torch" in sys.modules)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
