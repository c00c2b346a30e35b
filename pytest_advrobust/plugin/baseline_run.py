"""The run's own files: the baseline's environment check before the run, and after it the
JSON report, the Markdown summary and the baseline's save."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest

from ..errors import AdvRobustError, AdvRobustWarning


def current_environment(values: Dict[str, Any]) -> Dict[str, Any]:
    """The fingerprint (versions, device, seed) of the environment this run measures in."""
    from ..inputs.model import resolve_device
    from ..reports.baseline import environment_fingerprint

    try:
        device = str(resolve_device(values["device"]))
    except AdvRobustError:
        device = "cpu"
    return environment_fingerprint(device, values["seed"])


def check_fingerprint(
    config: pytest.Config, baseline: Tuple[Path, Callable[[], Any]], values, notes: List[str]
) -> None:
    """Warn (once, at configuration time, and in ``notes``) when the baseline at
    ``baseline[0]``, read by ``baseline[1]``, was recorded in another environment than
    this run's (``values``: its options)."""
    from ..reports.baseline import fingerprint_differences

    path, load = baseline
    try:
        recorded = load()
    except AdvRobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not recorded or not recorded.get("environment"):
        return
    diffs = fingerprint_differences(recorded["environment"], current_environment(values))
    if diffs:
        msg = (
            f"baseline {path.name} was recorded in another environment "
            f"({'; '.join(diffs)}); numbers may differ for that reason alone"
        )
        notes.append(msg)
        config.issue_config_time_warning(AdvRobustWarning(msg), stacklevel=2)


def write_json(path: Path, reports: List[Dict[str, Any]], values: Dict[str, Any], notes) -> None:
    """``--advrobust-json``: the run's reports with its environment, noted in ``notes``."""
    from .. import __version__
    from ..reports.report import write_json_report

    write_json_report(path, reports, current_environment(values), __version__)
    notes.append(f"JSON report written to {path}")


def write_markdown(path: Optional[Path], reports, errored, notes: List[str]) -> None:
    """The Markdown summary (``--advrobust-markdown``, the CI job summary), noted in
    ``notes``."""
    from ..reports.markdown import write_run_summary

    for written in write_run_summary(path, reports, errored):
        notes.append(f"Markdown summary written to {written}")


def files_narrowed_by_args(config: pytest.Config) -> Set[str]:
    """Test files (as in node ids) that the command line narrowed to some of their
    tests (``tests/test_x.py::test_y``): this run did not collect them in full."""
    files = set()
    for arg in config.args:
        if "::" not in str(arg):
            continue
        path = os.path.abspath(
            os.path.join(config.invocation_params.dir, str(arg).split("::", 1)[0])
        )
        rel = os.path.relpath(path, config.rootpath)
        if not rel.startswith(os.pardir):
            files.add(Path(rel).as_posix())
    return files


@dataclass(frozen=True)
class RunBaseline:
    """What ``--advrobust-save-baseline`` writes: this run's ``reports`` to ``path`` in
    ``mode``, over the ``existing`` baseline, for the tests this run ``collected``
    (``compare``: entries of regressed tests stay as they were)."""

    path: Path
    mode: str
    existing: Any
    collected: Set[str]
    reports: List[Dict[str, Any]]
    compare: bool
    values: Dict[str, Any]


def save_run_baseline(config: pytest.Config, run: RunBaseline, notes: List[str]) -> None:
    """``--advrobust-save-baseline``: write this run's entries, keeping the rest; what it
    did goes to ``notes``."""
    from ..reports.baseline import save_baseline

    collected = set(run.collected)
    # Entries of test files that this run did not collect in full are kept, unless
    # the file is gone: a partial run must not prune the rest of the suite.
    narrowed = files_narrowed_by_args(config)
    collected_files = {nodeid.split("::", 1)[0] for nodeid in run.collected}
    for nodeid in (run.existing or {}).get("tests", {}):
        path = nodeid.split("::", 1)[0]
        if (path not in collected_files or path in narrowed) and (
            Path(config.rootpath) / path
        ).exists():
            collected.add(nodeid)
    reports = run.reports
    if run.compare:  # a run that regresses does not move its own baseline
        held = [
            r["nodeid"] for r in reports if (r.get("baseline") or {}).get("status") == "regressed"
        ]
        reports = [r for r in reports if r["nodeid"] not in held]
        if held:
            notes.append(
                "baseline entries of regressed tests not overwritten "
                "(--advrobust-compare): " + ", ".join(held)
            )
    result = save_baseline(
        run.path,
        reports,
        mode=run.mode,
        existing=run.existing,
        collected=collected,
        environment=current_environment(run.values),
    )
    notes.append(
        f"baseline written to {result.path}: {len(result.written)} "
        f"entries written, {len(result.kept)} kept"
    )
    if result.pruned:
        notes.append(
            "pruned baseline entries of tests that no longer exist: " + ", ".join(result.pruned)
        )
