"""The `advrobust` command: compare, cache list/info/clear/prune, warm."""

from __future__ import annotations

import json
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import pytest
from _support import run_cli

import pytest_advrobust
from pytest_advrobust import cli

ENV = {"torch": "2.14.1", "device_kind": "cpu", "seed": 0, "plugin": "0.1.0", "python": "3.11"}


def run_module(*args, cwd, env_extra=None):
    return run_cli(*args, cwd=cwd, env_extra=env_extra, timeout=60)


def json_report(path, accuracies):
    tests = [
        {
            "nodeid": nodeid,
            "attack": "pgd",
            "eps": 0.1,
            "norm": "linf",
            "n": 256,
            "seed": 0,
            "clean_accuracy": 0.9,
            "adversarial_accuracy": adv,
            "gap": None if adv is None else 0.9 - adv,
            "verdict": "pass" if adv is not None else "error",
        }
        for nodeid, adv in sorted(accuracies.items())
    ]
    path.write_text(
        json.dumps(
            {"schema_version": 1, "plugin_version": "0.1.0", "environment": ENV, "tests": tests}
        )
    )
    return path


def baseline_file(path, accuracies, environment=ENV):
    tests = {
        nodeid: {
            "adversarial_accuracy": adv,
            "clean_accuracy": 0.9,
            "attack": "pgd",
            "eps": 0.1,
            "norm": "linf",
            "n": 256,
            "seed": 0,
        }
        for nodeid, adv in accuracies.items()
    }
    path.write_text(json.dumps({"schema_version": 1, "environment": environment, "tests": tests}))
    return path


# ---------------------------------------------------------------- compare


def test_compare_equal_files_exit_zero(tmp_path, capsys):
    old = json_report(tmp_path / "old.json", {"t.py::a": 0.75, "t.py::b": 0.5})
    new = json_report(tmp_path / "new.json", {"t.py::a": 0.75, "t.py::b": 0.5})
    assert cli.main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "t.py::a" in out and "0.750" in out and "+0.000" in out
    assert "no regression beyond tolerance 0.020 (2 compared)" in out


def test_compare_regression_exits_one_and_names_test(tmp_path, capsys):
    old = json_report(tmp_path / "old.json", {"t.py::a": 0.75, "t.py::b": 0.5})
    new = json_report(tmp_path / "new.json", {"t.py::a": 0.669, "t.py::b": 0.51})
    assert cli.main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out
    assert "1 regression beyond tolerance 0.020" in out
    assert "t.py::a: adversarial accuracy fell 0.081 below baseline" in out
    assert "t.py::b: " not in out  # only the regressed test is listed below the table


def test_compare_tolerance_option(tmp_path, capsys):
    old = json_report(tmp_path / "old.json", {"t.py::a": 0.75})
    new = json_report(tmp_path / "new.json", {"t.py::a": 0.70})
    assert cli.main(["compare", str(old), str(new)]) == 1
    assert cli.main(["compare", str(old), str(new), "--tolerance", "0.1"]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(old), str(new), "--tolerance", "-1"]) == 2
    assert "--tolerance" in capsys.readouterr().err


def test_compare_mixes_baseline_and_report_and_lists_one_sided_tests(tmp_path, capsys):
    old = baseline_file(tmp_path / "baseline.json", {"t.py::a": 0.75, "t.py::gone": 0.4})
    new = json_report(
        tmp_path / "new.json", {"t.py::a": 0.80, "t.py::fresh": 0.6, "t.py::err": None}
    )
    assert cli.main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("t.py::")}
    assert lines["t.py::a"].endswith("improved")
    assert lines["t.py::gone"].endswith("only in OLD")
    assert lines["t.py::fresh"].endswith("only in NEW")
    assert "only in NEW" in lines["t.py::err"]
    assert "1 compared, 1 only in" in out


def test_compare_notes_environment_and_settings_differences(tmp_path, capsys):
    old = baseline_file(
        tmp_path / "old.json", {"t.py::a": 0.75}, environment=dict(ENV, torch="2.13.0")
    )
    new = json_report(tmp_path / "new.json", {"t.py::a": 0.75})
    data = json.loads(new.read_text())
    data["tests"][0]["eps"] = 0.2
    new.write_text(json.dumps(data))
    assert cli.main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "environments differ: torch 2.13.0 -> 2.14.1" in out
    assert "eps 0.1 -> 0.2" in out


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "no such file"),
        ("{broken", "not valid JSON"),
        ('{"something": 1}', "neither an advrobust JSON report nor a baseline file"),
        ('{"schema_version": 2, "tests": []}', "schema_version 2"),
        ('{"schema_version": 1, "tests": [{"adversarial_accuracy": 0.5}]}', "no nodeid"),
        ('{"schema_version": 1, "tests": 3}', "neither a list nor an object"),
    ],
)
def test_compare_unreadable_input_exits_two(tmp_path, capsys, content, fragment):
    good = json_report(tmp_path / "good.json", {"t.py::a": 0.75})
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert cli.main(["compare", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("advrobust: cannot read ") and str(bad) in err
    assert fragment in err
    assert "\n" not in err and "Traceback" not in err


def test_compare_subprocess(tmp_path):
    old = json_report(tmp_path / "old.json", {"t.py::a": 0.75})
    json_report(tmp_path / "same.json", {"t.py::a": 0.75})
    worse = json_report(tmp_path / "worse.json", {"t.py::a": 0.5})

    ok = run_module("compare", "old.json", "same.json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "no regression" in ok.stdout

    bad = run_module("compare", str(old), str(worse), cwd=tmp_path)
    assert bad.returncode == 1
    assert "t.py::a: adversarial accuracy fell 0.250 below baseline" in bad.stdout

    missing = run_module("compare", "old.json", "nope.json", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "advrobust: cannot read nope.json: no such file"


def test_usage_errors_and_help(capsys):
    assert cli.main([]) == 2
    assert cli.main(["bogus"]) == 2
    assert cli.main(["cache"]) == 2
    capsys.readouterr()
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("cache", "compare", "warm"):
        assert word in out
    assert cli.main(["--version"]) == 0
    assert pytest_advrobust.__version__ in capsys.readouterr().out


# ---------------------------------------------------------------- warm


def test_warm_passes_pytest_args_through(monkeypatch):
    calls = []

    def fake_main(args):
        calls.append(list(args))
        return 3

    monkeypatch.setattr(pytest, "main", fake_main)
    assert cli.main(["warm", "-x", "-k", "gan", "tests/robust"]) == 3
    assert cli.main(["warm"]) == 3
    assert cli.main(["warm", "--", "-q"]) == 3
    assert calls == [
        ["--advrobust", "--advrobust-warm", "-x", "-k", "gan", "tests/robust"],
        ["--advrobust", "--advrobust-warm"],
        ["--advrobust", "--advrobust-warm", "-q"],
    ]


# ---------------------------------------------------------------- cache (stand-in GanCache)


@dataclass
class FakeEntry:
    key: str
    family: str
    created: float
    size: int
    meta: Dict[str, Any]
    valid: bool


class FakeCache:
    """A stand-in with GanCache's interface: one sub-folder per entry."""

    def __init__(self, root, warn=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def entries(self):
        out = []
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            meta = json.loads((d / "meta.json").read_text())
            out.append(
                FakeEntry(
                    d.name, meta["family"], meta["created"], 2048, meta, not (d / "bad").exists()
                )
            )
        return out

    def remove(self, key):
        import shutil

        shutil.rmtree(self.root / key)

    def foreign(self):
        return []

    def clear(self, other_versions=False):
        entries = self.entries()
        for e in entries:
            self.remove(e.key)
        return len(entries)

    def prune(self, keep=None, older_than_days=None, other_versions=False):
        entries = sorted(self.entries(), key=lambda e: e.created, reverse=True)
        doomed = []
        for i, e in enumerate(entries):
            if (keep is not None and i >= keep) or (
                older_than_days is not None and e.created < time.time() - older_than_days * 86400
            ):
                doomed.append(e.key)
        for key in doomed:
            self.remove(key)
        return doomed

    def stats(self):
        return {"entries": len(self.entries())}


def fake_resolve(option_value, ini_value, env, rootdir):
    if option_value:
        return Path(option_value)
    if env.get("ADVROBUST_CACHE_DIR"):
        return Path(env["ADVROBUST_CACHE_DIR"])
    return Path(rootdir) / ".pytest_cache" / "d" / "advrobust"


@pytest.fixture
def fake_cache(monkeypatch):
    module = types.ModuleType("pytest_advrobust.cache")
    module.GanCache = FakeCache
    module.resolve_cache_dir = fake_resolve
    monkeypatch.setitem(sys.modules, "pytest_advrobust.cache", module)
    monkeypatch.setattr(pytest_advrobust, "cache", module, raising=False)
    monkeypatch.delenv("ADVROBUST_CACHE_DIR", raising=False)
    return module


def make_entry(root, key, age_days=0.0, bad=False):
    d = Path(root) / key
    d.mkdir(parents=True)
    meta = {"family": "conv", "created": time.time() - age_days * 86400, "steps": 300}
    (d / "meta.json").write_text(json.dumps(meta))
    if bad:
        (d / "bad").write_text("")


def test_cache_list_with_entries(tmp_path, capsys, fake_cache):
    make_entry(tmp_path, "aaaa1111", age_days=2)
    make_entry(tmp_path, "bbbb2222", bad=True)
    assert cli.main(["cache", "--cache-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "KEY",
        "MODEL",
        "ATTACK",
        "STRENGTH",
        "CREATED",
        "SIZE",
        "FAMILY",
        "VALID",
    ]
    assert out[1].startswith("bbbb2222") and out[1].endswith("NO")  # newest first
    assert out[2].startswith("aaaa1111") and out[2].endswith("yes")
    assert "2.0 KiB" in out[1]
    assert out[3].startswith(f"2 entries, 4.0 KiB in {tmp_path}") and "1 damaged" in out[3]


def test_cache_dir_after_action_and_from_environment(tmp_path, capsys, fake_cache, monkeypatch):
    make_entry(tmp_path, "cccc3333")
    assert cli.main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "cccc3333" in capsys.readouterr().out
    monkeypatch.setenv("ADVROBUST_CACHE_DIR", str(tmp_path))
    assert cli.main(["cache", "list"]) == 0
    assert "cccc3333" in capsys.readouterr().out


def test_cache_default_folder_is_pytest_cache(tmp_path, capsys, fake_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_entry(tmp_path / ".pytest_cache" / "d" / "advrobust", "dddd4444")
    assert cli.main(["cache", "list"]) == 0
    assert "dddd4444" in capsys.readouterr().out


def test_cache_list_empty_and_missing_folder(tmp_path, capsys, fake_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["cache", "list", "--cache-dir", str(empty)]) == 0
    assert capsys.readouterr().out.strip() == f"no cache entries in {empty}"
    missing = tmp_path / "missing"
    assert cli.main(["cache", "list", "--cache-dir", str(missing)]) == 0
    assert "does not exist" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--cache-dir", str(missing)]) == 0
    assert cli.main(["cache", "prune", "--keep", "1", "--cache-dir", str(missing)]) == 0
    assert not missing.exists()  # looking never creates the folder


def test_cache_info(tmp_path, capsys, fake_cache):
    make_entry(tmp_path, "abcdef0123")
    make_entry(tmp_path, "abc999")
    assert cli.main(["cache", "info", "abcdef", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "key:     abcdef0123" in out and '"steps": 300' in out
    assert cli.main(["cache", "info", "abc", "--cache-dir", str(tmp_path)]) == 1
    assert "matches 2 entries" in capsys.readouterr().err
    assert cli.main(["cache", "info", "zzz", "--cache-dir", str(tmp_path)]) == 1
    assert "no cache entry zzz" in capsys.readouterr().err


def test_cache_clear_and_prune(tmp_path, capsys, fake_cache):
    make_entry(tmp_path, "old1", age_days=40)
    make_entry(tmp_path, "mid1", age_days=10)
    make_entry(tmp_path, "new1", age_days=0)
    make_entry(tmp_path, "new2", age_days=0.5)
    assert cli.main(["cache", "prune", "--older-than", "30", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "removed old1" in out and "pruned 1 entry" in out
    assert cli.main(["cache", "prune", "--keep", "2", "--cache-dir", str(tmp_path)]) == 0
    assert "removed mid1" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new1", "new2"]
    assert cli.main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert f"removed 2 entries from {tmp_path}" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["cache", "prune", "--keep", "-1", "--cache-dir", str(tmp_path)]) == 2


def test_real_cache_missing_folder_is_not_created(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pytest_advrobust.cache")
    monkeypatch.delenv("ADVROBUST_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["cache", "list"]) == 0
    expected = tmp_path / ".pytest_cache" / "d" / "advrobust"
    assert capsys.readouterr().out.strip() == f"no cache entries: {expected} does not exist"
    assert cli.main(["cache", "clear"]) == 0
    assert cli.main(["cache", "info", "abc"]) == 1
    assert not (tmp_path / ".pytest_cache").exists()


# ---------------------------------------------------------------- cache (the real GanCache)


@pytest.fixture
def gan_cache(tmp_path, monkeypatch):
    cache = pytest.importorskip("pytest_advrobust.cache")
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("ADVROBUST_CACHE_DIR", raising=False)
    root = tmp_path / "gan-cache"
    store = cache.GanCache(root)
    store.store("key-one", {"w": torch.zeros(8)}, {"family": "conv-28", "steps": 300})
    store.store("key-two", {"w": torch.ones(16)}, {"family": "mlp-8"})
    return store


def test_real_cache_list_info_prune_clear(gan_cache, capsys):
    root = str(gan_cache.root)
    assert cli.main(["cache", "list", "--cache-dir", root]) == 0
    out = capsys.readouterr().out
    assert "key-one" in out and "conv-28" in out and "key-two" in out and "mlp-8" in out
    assert "2 entries" in out and "damaged" not in out

    assert cli.main(["cache", "info", "key-o", "--cache-dir", root]) == 0
    out = capsys.readouterr().out
    assert "key:     key-one" in out and "valid:   yes" in out and '"steps": 300' in out

    # damage one entry: it shows as invalid, and prune removes it
    weights = gan_cache.weights_path("key-two")
    weights.write_bytes(b"\0" * weights.stat().st_size)
    assert cli.main(["cache", "list", "--cache-dir", root]) == 0
    assert "1 damaged" in capsys.readouterr().out
    assert cli.main(["cache", "info", "key-two", "--cache-dir", root]) == 0
    assert "valid:   NO (" in capsys.readouterr().out
    assert cli.main(["cache", "prune", "--cache-dir", root]) == 0
    assert "removed key-two" in capsys.readouterr().out
    assert [e.key for e in gan_cache.entries()] == ["key-one"]

    assert cli.main(["cache", "clear", "--cache-dir", root]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert gan_cache.entries() == []
    assert cli.main(["cache", "list", "--cache-dir", root]) == 0
    assert capsys.readouterr().out.strip() == f"no cache entries in {root}"


def test_real_cache_subprocess_list_and_clear(gan_cache, tmp_path):
    env = {"ADVROBUST_CACHE_DIR": str(gan_cache.root)}
    listed = run_module("cache", "list", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "key-one" in listed.stdout and "2 entries" in listed.stdout
    cleared = run_module("cache", "clear", cwd=tmp_path, env_extra=env)
    assert cleared.returncode == 0, cleared.stderr
    assert "removed 2 entries" in cleared.stdout
    assert gan_cache.entries() == []
