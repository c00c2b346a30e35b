"""``advrobust compare`` and ``advrobust history``: saved JSON reports side by side.

``compare OLD.json NEW.json`` exits 1 when a test's adversarial accuracy fell
by more than the tolerance and beyond noise (the gate's rule,
:func:`~pytest_advrobust.gate.comparison.compare`: the exact paired test on the samples both files
share, or the absolute rule for files without per-sample verdicts),
``history`` prints each test across reports; both exit 2 on a file they
cannot use. Either file may be a JSON report or a baseline file
(:func:`~pytest_advrobust.reports.jsonfiles.load_results`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..reports.jsonfiles import InputError, load_results
from ..reports.tables import text_table
from ..settings.parsing import is_number, non_negative_float, significance_level
from .output import err, out, out_lines

__all__ = ["add_parsers", "run_compare", "run_history"]

Results = Dict[str, Dict[str, Any]]


def add_parsers(commands: Any) -> None:
    """The ``compare`` and ``history`` sub-commands, on ``commands`` (argparse sub-parsers)."""
    from ..settings.robust import DEFAULTS

    comp = commands.add_parser(
        "compare",
        help="compare two JSON reports or baseline files",
        description=(
            "Compare per-test adversarial accuracy between two JSON reports or baseline files; "
            "exit 1 when a test fell by more than the tolerance."
        ),
    )
    comp.set_defaults(run=run_compare)
    comp.add_argument("old", metavar="OLD.json")
    comp.add_argument("new", metavar="NEW.json")
    tolerance = DEFAULTS["tolerance"]
    comp.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=tolerance,
        help=f"allowed drop in adversarial accuracy (default {tolerance})",
    )
    significance = DEFAULTS["significance"]
    comp.add_argument(
        "--significance",
        type=significance_level,
        default=significance,
        help="one-sided level at which the exact paired test must find a fall real "
        f"(default {significance})",
    )
    hist = commands.add_parser(
        "history",
        help="adversarial accuracy of each test across JSON reports",
        description=(
            "Print each test's adversarial accuracy across JSON reports, in the order given "
            "(a folder: its *.json files in name order), with the lowest accuracy its "
            "threshold allows and its baseline."
        ),
    )
    hist.set_defaults(run=run_history)
    hist.add_argument("reports", nargs="+", metavar="REPORT.json|DIR")
    plot_help = "also write a PNG: a line per test, threshold floor and baseline marked"
    hist.add_argument("--plot", metavar="FILE", help=plot_help)
    base_help = "baseline file whose adversarial accuracies to mark"
    hist.add_argument("--baseline", metavar="PATH", help=base_help)


#: The columns of ``compare``: per test both accuracies, the change, and the paired test.
HEADER = ["TEST", "OLD", "NEW", "DELTA", "FOOLED", "ROBUST", "SHARED", "95% CI", "P", "STATUS"]


def _paired_cells(paired: Optional[Dict[str, Any]]) -> List[str]:
    """FOOLED, ROBUST, SHARED, 95% CI and P of a paired comparison (``-`` under the
    absolute rule). P is the one-sided p-value of a fall."""
    if not paired:
        return ["-"] * 5
    lo, hi = paired["delta_ci"]
    p = paired["p_fall"]
    return [
        str(paired["newly_fooled"]),
        str(paired["newly_robust"]),
        str(paired["shared"]),
        f"[{lo:+.3f}, {hi:+.3f}]",
        "<0.001" if p < 0.001 else f"{p:.3f}",
    ]


class _Tally:
    """The rows of ``compare`` and what they add up to."""

    def __init__(self, tolerance: float, significance: float):
        self.tolerance = tolerance
        self.significance = significance
        self.rows = [list(HEADER)]
        self.regressions: List[tuple] = []
        self.notes: List[str] = []
        self.absolute: Dict[str, List[str]] = {}  # why the absolute rule judged: tests
        self.counts = {"compared": 0, "only_old": 0, "only_new": 0, "no_result": 0}

    def add(self, nodeid: str, before: Optional[dict], after: Optional[dict]) -> None:
        cells = [
            f"{r['adversarial_accuracy']:.3f}" if _has_number(r) else "-" for r in (before, after)
        ]
        delta, status, paired = "-", self._status(before, after), ["-"] * 5
        if status is None:
            from ..gate.comparison import compare

            result = compare(before, after, self.tolerance, self.significance)
            self.counts["compared"] += 1
            delta, paired = f"{result.delta:+.3f}", _paired_cells(result.paired)
            status = result.status.upper() if result.fails else result.status
            if result.fails:
                self.regressions.append((nodeid, result.message))
            if result.note:
                self.absolute.setdefault(result.note, []).append(nodeid)
            if result.mismatches:
                settings = ", ".join(result.mismatches)
                self.notes.append(f"{nodeid}: compared across different settings ({settings})")
        self.rows.append([nodeid, *cells, delta, *paired, status])

    def _status(self, before: Optional[dict], after: Optional[dict]) -> Optional[str]:
        """The status of a test that cannot be compared, else ``None``."""
        if after is None:
            self.counts["only_old"] += 1
            return "only in OLD"
        if before is None:
            self.counts["only_new"] += 1
            return "only in NEW"
        if not _has_number(before) or not _has_number(after):
            self.counts["no_result"] += 1
            return "no result in " + ("OLD" if not _has_number(before) else "NEW")
        return None

    def tail(self, old: str, new: str) -> str:
        """`` (3 compared, 1 only in OLD.json)``."""
        counts = self.counts
        extra = [
            f"{counts['only_old']} only in {old}" if counts["only_old"] else "",
            f"{counts['only_new']} only in {new}" if counts["only_new"] else "",
            f"{counts['no_result']} without a result" if counts["no_result"] else "",
        ]
        return f" ({counts['compared']} compared" + "".join(f", {e}" for e in extra if e) + ")"


def _has_number(result: Optional[Dict[str, Any]]) -> bool:
    return result is not None and is_number(result.get("adversarial_accuracy"))


def run_compare(args: argparse.Namespace) -> int:
    """``advrobust compare``; returns the exit status."""
    from ..gate.fingerprint import fingerprint_differences

    try:
        old, old_env = load_results(args.old)
        new, new_env = load_results(args.new)
    except InputError as exc:
        err(str(exc))
        return 2
    tally = _Tally(args.tolerance, args.significance)
    for nodeid in sorted(set(old) | set(new)):
        tally.add(nodeid, old.get(nodeid), new.get(nodeid))
    if len(tally.rows) == 1:
        out(f"no tests in {args.old} or {args.new}")
    else:
        out_lines(text_table(tally.rows, right=(1, 2, 3, 4, 5, 6, 8)))
    differences = fingerprint_differences(old_env, new_env) if (old_env and new_env) else []
    if differences:
        tally.notes.append("environments differ: " + "; ".join(differences))
    for why, nodeids in tally.absolute.items():
        tests = "1 test" if len(nodeids) == 1 else f"{len(nodeids)} tests"
        tally.notes.append(f"{tests} judged by the absolute rule: {why} ({', '.join(nodeids)})")
    out_lines(f"note: {note}" for note in tally.notes)
    tail, regressions = tally.tail(args.old, args.new), tally.regressions
    if not regressions:
        out(f"no regression beyond tolerance {args.tolerance:.3f}{tail}")
        return 0
    word = "regression" if len(regressions) == 1 else "regressions"
    out(f"{len(regressions)} {word} beyond tolerance {args.tolerance:.3f}{tail}:")
    out_lines(f"  {nodeid}: {message}" for nodeid, message in regressions)
    return 1


def run_history(args: argparse.Namespace) -> int:
    """``advrobust history``; returns the exit status."""
    from .history import history_table, load_history, plot_history

    try:
        history = load_history(args.reports)
        baseline: Optional[Results] = load_results(args.baseline)[0] if args.baseline else None
    except InputError as exc:
        err(str(exc))
        return 2
    rows = history_table(history, baseline)
    out_lines(text_table(rows, right=range(1, len(history.runs) + 3)))
    if args.plot:
        out(f"plot written to {plot_history(history, Path(args.plot), baseline)}")
    return 0
