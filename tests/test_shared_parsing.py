"""The pieces the plugin and the ``advrobust`` command share: value parsers, the table
renderer and the JSON reader."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from pytest_advrobust.reports import jsonfiles, tables
from pytest_advrobust.settings import parsing


@pytest.mark.parametrize(
    "parse, text, value",
    [
        (parsing.non_negative_int, "3", 3),
        (parsing.non_negative_int, " 0 ", 0),
        (parsing.integer(1), "12", 12),
        (parsing.non_negative_float, "0.25", 0.25),
        (parsing.non_negative_float, "0", 0.0),
        (parsing.real(0.0, 1.0), "1", 1.0),
        (parsing.non_negative_float, "8/255", 8 / 255),  # eps as it is often written
    ],
)
def test_parsers_accept_values_in_range(parse, text, value):
    out = parse(text)
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (parsing.non_negative_int, "-1", "'-1' must be at least 0"),
        (parsing.non_negative_int, "1.5", "'1.5' is not an integer"),
        (parsing.integer(1), "0", "'0' must be at least 1"),
        (parsing.non_negative_float, "abc", "'abc' is not a number"),
        (parsing.non_negative_float, "1/0", "'1/0' is not a number"),
        (parsing.non_negative_float, "8/x", "'8/x' is not a number"),
        (parsing.non_negative_float, "-0.1", "'-0.1' must be a finite number of at least 0"),
        (parsing.non_negative_float, "nan", "'nan' must be a finite number of at least 0"),
        (parsing.non_negative_float, "inf", "'inf' must be a finite number of at least 0"),
        (parsing.real(0.0, 1.0), "1.5", "'1.5' must lie in [0, 1]"),
    ],
)
def test_parsers_reject_with_one_sentence(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert str(info.value) == message


def test_argparse_names_the_option_with_the_parsers_sentence(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--keep", type=parsing.non_negative_int)
    assert parser.parse_args(["--keep", "4"]).keep == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["--keep", "-2"])
    assert "argument --keep: '-2' must be at least 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value, expected",
    [(1, True), (0.5, True), (True, False), (math.nan, False), (math.inf, False), ("1", False)],
)
def test_is_number(value, expected):
    assert parsing.is_number(value) is expected


def test_text_table_aligns_columns_and_drops_trailing_spaces():
    rows = [["TEST", "OLD", "STATUS"], ["a", "0.500", "ok"], ["longer", "10.250", ""]]
    lines = tables.text_table(rows, right=(1,))
    assert lines == [
        "TEST       OLD  STATUS",
        "a        0.500  ok",
        "longer  10.250",
    ]
    # every column starts at the same offset on every line
    starts = [len("TEST  "), len("TEST       OLD  ")]
    assert [lines[1][s - 2 : s] for s in starts] == ["  ", "  "]


def test_text_table_rule_under_the_header_and_no_rows():
    lines = tables.text_table([["a", "bb"], ["ccc", "d"]], rule=True)
    assert lines == ["a    bb", "---  --", "ccc  d"]
    assert tables.text_table([]) == []


def test_markdown_lines_escape_cells():
    lines = tables.markdown_lines([["test", "gap"], ["t.py::a|b", "line\none\\"]])
    assert lines == [
        "| test | gap |",
        "| --- | --- |",
        "| t.py::a\\|b | line one\\\\ |",
    ]


@pytest.mark.parametrize(
    "content, kind, detail",
    [
        (None, "missing", ""),
        ("", "empty", " (line 1)"),
        ("{\n  broken", "invalid", " (line 2)"),
    ],
)
def test_read_json_names_the_problem(tmp_path, content, kind, detail):
    with pytest.raises(jsonfiles.UnreadableJson) as info:
        jsonfiles.read_json(_file(tmp_path, content))
    assert (info.value.kind, info.value.detail) == (kind, detail)


def test_read_json_folder_and_content(tmp_path):
    with pytest.raises(jsonfiles.UnreadableJson) as info:
        jsonfiles.read_json(tmp_path)
    assert info.value.kind == "folder"
    (tmp_path / "ok.json").write_text(json.dumps({"tests": []}))
    assert jsonfiles.read_json(tmp_path / "ok.json") == {"tests": []}


def test_load_results_reads_reports_and_baselines_alike(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {"environment": {"seed": 0}, "tests": [{"nodeid": "t::a", "adversarial_accuracy": 0.5}]}
        )
    )
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"tests": {"t::a": {"adversarial_accuracy": 0.5}}}))
    from_report, env = jsonfiles.load_results(str(report))
    from_baseline, no_env = jsonfiles.load_results(str(baseline))
    assert from_report == from_baseline == {"t::a": {"nodeid": "t::a", "adversarial_accuracy": 0.5}}
    assert env == {"seed": 0} and no_env == {}


#: File content (None: no file) -> what ``load_results`` says after ``cannot read PATH:``.
LOAD_PROBLEMS = {
    None: "no such file",
    "": "not valid JSON (line 1)",
    "[]": "neither an advrobust JSON report nor a baseline file",
    '{"schema_version": 2, "tests": []}': "schema_version 2 is not one this version reads",
    '{"tests": [{"x": 1}]}': "a test in its 'tests' list has no nodeid",
    '{"tests": 3}': "its 'tests' field is neither a list nor an object",
}


@pytest.mark.parametrize("content", list(LOAD_PROBLEMS))
def test_load_results_says_what_is_wrong_in_one_sentence(tmp_path, content):
    path = _file(tmp_path, content)
    with pytest.raises(jsonfiles.InputError) as info:
        jsonfiles.load_results(str(path))
    assert str(info.value).startswith(f"cannot read {path}: {LOAD_PROBLEMS[content]}")


def _file(folder: Path, content: Optional[str]) -> Path:
    path = folder / "r.json"
    if content is not None:
        path.write_text(content)
    return path


def test_history_under_python_m_reports_an_unreadable_file_in_one_line(tmp_path):
    # `python -m pytest_advrobust.cli` runs cli.py as __main__: the reader must not live
    # there, or history's import of it makes a second InputError class that main() misses.
    (tmp_path / "empty.json").write_text("")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    command = [sys.executable, "-m", "pytest_advrobust.cli", "history", "empty.json"]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr == "advrobust: cannot read empty.json: not valid JSON (line 1)\n"
