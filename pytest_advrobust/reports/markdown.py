"""The CI job summary: one Markdown table of every robust test, failures first.

GitHub Actions renders the Markdown that a step appends to the file named by
``$GITHUB_STEP_SUMMARY`` on the job's summary page. The controller (never an
xdist worker) writes the table once per run: appended to that file, as
GitHub expects, and written whole to the file named by
``--advrobust-markdown`` (ini ``advrobust_markdown``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..gate.comparison import FAILING
from .report import COLUMNS, atomic_write_text, baseline_text, number_cells
from .tables import counted, markdown_cell, markdown_lines

__all__ = [
    "ENV_STEP_SUMMARY",
    "markdown_table",
    "summary_targets",
    "write_run_summary",
    "write_summary",
]

ENV_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"

_HEADER = ["verdict", *COLUMNS, "baseline delta"]


def _baseline(rep: Dict[str, Any]) -> str:
    base = rep.get("baseline") or {}
    text = baseline_text(base)
    return f"**{text}**" if base.get("status") in FAILING else text


def _changed_samples(reports: List[Dict[str, Any]]) -> List[str]:
    """Under the table: per compared test with samples newly fooled, the counts, the
    paired test and the first ids (``#position (id)``)."""
    from ..gate.comparison_text import p_text, sample_list

    lines = []
    for rep in reports:
        paired = (rep.get("baseline") or {}).get("paired")
        if not isinstance(paired, dict) or not paired.get("newly_fooled"):
            continue
        lo, hi = paired["delta_ci"]
        lines.append(
            f"- `{markdown_cell(rep['nodeid'])}`: {paired['newly_fooled']} newly fooled, "
            f"{paired['newly_robust']} newly robust of {paired['shared']} shared samples "
            f"(change {paired['delta']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], fall "
            f"{p_text(paired['p_fall'])}); newly fooled: "
            f"{markdown_cell(sample_list(paired['newly_fooled_samples']))}"
        )
    return ["", "**Samples that changed since the baseline**", "", *lines] if lines else []


def _row(rep: Dict[str, Any]) -> List[str]:
    verdict = rep["verdict"].upper()
    return [
        f"**{verdict}**" if verdict != "PASS" else verdict,
        f"`{rep['nodeid']}`",
        f"{rep['attack']} {rep['norm']}",
        *number_cells(rep),
        _baseline(rep),
    ]


def markdown_table(
    reports: Iterable[Dict[str, Any]],
    title: str = "pytest-advrobust",
    without_numbers: Iterable[str] = (),
) -> str:
    """A Markdown section: a heading, a count line and one table row per test.

    Failing tests come first, then passing ones, each group in node id order.
    Compared tests with samples newly fooled since the baseline are listed under the
    table with the paired test's numbers and the first ids.
    ``without_numbers`` names robust tests that errored before any numbers
    (a bad fixture, say): they are listed under the count, never left out.
    """
    ordered = sorted(reports, key=lambda r: (r["verdict"] == "pass", r["nodeid"]))
    failed = sum(1 for r in ordered if r["verdict"] != "pass")
    lines = [
        f"### {title}",
        "",
        f"{counted(len(ordered), 'robust test')}, {failed} failed, {len(ordered) - failed} passed.",
        "",
        *markdown_lines([_HEADER] + [_row(rep) for rep in ordered]),
        *_changed_samples(ordered),
    ]
    errored = sorted(without_numbers)
    if errored:
        names = ", ".join(f"`{markdown_cell(n)}`" for n in errored)
        lines += [
            "",
            f"**{counted(len(errored), 'more robust test')} ended in an error before any "
            f"numbers** (see the test log): {names}",
        ]
    return "\n".join(lines) + "\n"


def summary_targets(
    option_path: Optional[Path], env: Optional[Mapping[str, str]] = None
) -> List[tuple]:
    """``[(path, append)]``: the option's file (rewritten) and the step summary (appended).

    The same file named twice is written once, appended to."""
    env = os.environ if env is None else env
    targets: List[tuple] = []
    step = env.get(ENV_STEP_SUMMARY, "").strip()
    if step:
        targets.append((Path(step), True))
    if option_path is not None and not any(
        Path(os.path.abspath(p)) == Path(os.path.abspath(option_path)) for p, _ in targets
    ):
        targets.append((Path(option_path), False))
    return targets


def write_summary(
    reports: List[Dict[str, Any]], targets: List[tuple], without_numbers: Iterable[str] = ()
) -> List[Path]:
    """Write the table to every target; return the paths written."""
    text = markdown_table(reports, without_numbers=without_numbers)
    written = []
    for path, append in targets:
        if append:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8", newline="\n") as handle:
                handle.write(text + "\n")
        else:
            atomic_write_text(path, text)
        written.append(path)
    return written


def write_run_summary(
    option_path: Optional[Path], reports: Mapping[str, Dict[str, Any]], errored: Iterable[str]
) -> List[Path]:
    """A run's summary (``reports`` by node id; ``errored``: robust tests that failed or
    errored) to the option's file and the step summary, when either is set."""
    targets = summary_targets(option_path)
    without = sorted(set(errored) - set(reports))
    if not targets or not (reports or without):
        return []
    return write_summary(list(reports.values()), targets, without)
