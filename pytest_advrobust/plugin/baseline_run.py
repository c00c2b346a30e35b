"""The run's own baseline: the environment check before the run and the save after it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Set

import pytest

from ..errors import AdvRobustError, AdvRobustWarning

if TYPE_CHECKING:  # pragma: no cover
    from .session import AdvRobustSession


def current_environment(values: Dict[str, Any]) -> Dict[str, Any]:
    """The fingerprint (versions, device, seed) of the environment this run measures in."""
    from ..inputs.model import resolve_device
    from ..reports.baseline import environment_fingerprint

    try:
        device = str(resolve_device(values["device"]))
    except AdvRobustError:
        device = "cpu"
    return environment_fingerprint(device, values["seed"])


def check_fingerprint(session: AdvRobustSession) -> None:
    """Warn (once, at configuration time) when the baseline was recorded elsewhere."""
    from ..reports.baseline import fingerprint_differences

    try:
        baseline = session.load_baseline()
    except AdvRobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not baseline or not baseline.get("environment"):
        return
    diffs = fingerprint_differences(baseline["environment"], current_environment(session.values))
    if diffs:
        msg = (
            f"baseline {session.baseline_path.name} was recorded in another environment "
            f"({'; '.join(diffs)}); numbers may differ for that reason alone"
        )
        session.notes.append(msg)
        session.config.issue_config_time_warning(AdvRobustWarning(msg), stacklevel=2)


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


def save_run_baseline(session: AdvRobustSession) -> None:
    """``--advrobust-save-baseline``: write this run's entries, keeping the rest."""
    from ..reports.baseline import save_baseline

    config = session.config
    existing = session.load_baseline()
    collected = set(session.collected)
    # Entries of test files that this run did not collect in full are kept, unless
    # the file is gone: a partial run must not prune the rest of the suite.
    narrowed = files_narrowed_by_args(config)
    collected_files = {nodeid.split("::", 1)[0] for nodeid in session.collected}
    for nodeid in (existing or {}).get("tests", {}):
        path = nodeid.split("::", 1)[0]
        if (path not in collected_files or path in narrowed) and (
            Path(config.rootpath) / path
        ).exists():
            collected.add(nodeid)
    reports = list(session.reports.values())
    if session.compare:  # a run that regresses does not move its own baseline
        held = [
            r["nodeid"] for r in reports if (r.get("baseline") or {}).get("status") == "regressed"
        ]
        reports = [r for r in reports if r["nodeid"] not in held]
        if held:
            session.notes.append(
                "baseline entries of regressed tests not overwritten "
                "(--advrobust-compare): " + ", ".join(held)
            )
    result = save_baseline(
        session.baseline_path,
        reports,
        mode=session.save_baseline,
        existing=existing,
        collected=collected,
        environment=current_environment(session.values),
    )
    session.notes.append(
        f"baseline written to {result.path}: {len(result.written)} "
        f"entries written, {len(result.kept)} kept"
    )
    if result.pruned:
        session.notes.append(
            "pruned baseline entries of tests that no longer exist: " + ", ".join(result.pruned)
        )
