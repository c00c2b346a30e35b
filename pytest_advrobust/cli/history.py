"""``advrobust history``: each test's adversarial accuracy across saved JSON reports.

Reports are read in the order given; a folder stands for the ``*.json`` files
in it, in file-name order (name them by date or build number). The table has
one row per test and one column per report; ``--plot FILE`` draws one line
per test with matplotlib, with the lowest adversarial accuracy its threshold
allows in each report (dashed: clean accuracy minus the threshold, or clean x
(1 - threshold) for ``metric="relative"``, never below 0), the reports whose
verdict was fail (red crosses) and its baseline adversarial accuracy (dotted)
in the same colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "History",
    "expand_paths",
    "floor_of",
    "floors",
    "history_figure",
    "history_table",
    "load_history",
    "plot_history",
]

Reports = Dict[str, Dict[str, Any]]


class History:
    """The reports in order: ``labels[i]`` names ``runs[i]`` ({nodeid: test report})."""

    def __init__(self, labels: List[str], runs: List[Reports]):
        self.labels, self.runs = labels, runs

    @property
    def tests(self) -> List[str]:
        return sorted({nodeid for run in self.runs for nodeid in run})

    def series(self, nodeid: str, field: str = "adversarial_accuracy") -> List[Optional[float]]:
        out: List[Optional[float]] = []
        for run in self.runs:
            value = (run.get(nodeid) or {}).get(field)
            out.append(float(value) if isinstance(value, (int, float)) else None)
        return out


def expand_paths(paths: Sequence[str]) -> List[Path]:
    """Files as given; a folder becomes its ``*.json`` files in name order."""
    out: List[Path] = []
    for text in paths:
        p = Path(text)
        out.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    return out


def load_history(paths: Sequence[str]) -> History:
    """Read the reports; raises :class:`~pytest_advrobust.reports.jsonfiles.InputError` (one
    sentence) on a bad file."""
    from ..reports.jsonfiles import InputError, load_results

    files = expand_paths(paths)
    if not files:
        raise InputError(f"no JSON reports in {', '.join(paths)}")
    runs = [load_results(str(f))[0] for f in files]
    return History([f.stem for f in files], runs)


def floor_of(rep: Dict[str, Any]) -> Optional[float]:
    """The lowest adversarial accuracy the threshold allows for this report (never below
    0: a threshold above the clean accuracy allows any adversarial accuracy)."""
    clean, threshold = rep.get("clean_accuracy"), rep.get("threshold")
    if not isinstance(clean, (int, float)) or not isinstance(threshold, (int, float)):
        return None
    if rep.get("metric") == "relative":
        return max(0.0, float(clean) * (1.0 - float(threshold)))
    return max(0.0, float(clean) - float(threshold))


def _baseline_of(rep: Dict[str, Any]) -> Optional[float]:
    base = rep.get("baseline")
    if isinstance(base, dict) and isinstance(base.get("adversarial_accuracy"), (int, float)):
        return float(base["adversarial_accuracy"])
    return None


def _last(history: History, nodeid: str) -> Dict[str, Any]:
    return next((run[nodeid] for run in reversed(history.runs) if nodeid in run), {})


def marks(
    history: History, nodeid: str, baseline: Optional[Dict[str, Any]] = None
) -> Tuple[Optional[float], Optional[float]]:
    """``(threshold floor, baseline accuracy)`` of a test, from its newest report
    (the baseline file, when given, wins over the reports' own baseline field)."""
    last = _last(history, nodeid)
    base = None
    if baseline and isinstance(baseline.get(nodeid), dict):
        value = baseline[nodeid].get("adversarial_accuracy")
        base = float(value) if isinstance(value, (int, float)) else None
    return floor_of(last), base if base is not None else _baseline_of(last)


def history_table(history: History, baseline: Optional[Dict[str, Any]] = None) -> List[List[str]]:
    """Rows (header first): test, one column per report, the floor and the baseline."""
    rows = [["TEST", *history.labels, "FLOOR", "BASELINE"]]
    for nodeid in history.tests:
        cells = ["-" if v is None else f"{v:.3f}" for v in history.series(nodeid)]
        floor, base = marks(history, nodeid, baseline)
        rows.append(
            [
                nodeid,
                *cells,
                "-" if floor is None else f"{floor:.3f}",
                "-" if base is None else f"{base:.3f}",
            ]
        )
    return rows


def floors(history: History, nodeid: str) -> List[Optional[float]]:
    """The threshold floor of a test in each report (``None`` where it is missing)."""
    return [floor_of(run[nodeid]) if nodeid in run else None for run in history.runs]


def history_figure(history: History, baseline: Optional[Dict[str, Any]] = None) -> Any:
    """The matplotlib figure: a line per test, its floor in each report dashed (so the
    floor a failing build was judged by is drawn), failed reports crossed in red, and its
    baseline dotted, in the test's colour."""
    from ..reports.images import _matplotlib

    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(history.labels)))
    colours = [f"C{i % 10}" for i in range(len(history.tests))]
    for nodeid, colour in zip(history.tests, colours):
        series = history.series(nodeid)
        pts = [(x, v) for x, v in zip(xs, series) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colour, label=nodeid)
        fl = [(x, f) for x, f in zip(xs, floors(history, nodeid)) if f is not None]
        if fl:
            step = "steps-mid" if len(fl) > 1 else "default"
            ax.plot(
                [p[0] for p in fl],
                [p[1] for p in fl],
                color=colour,
                linestyle="--",
                linewidth=1,
                drawstyle=step,
                marker="_" if len(fl) == 1 else None,
            )
        failed = [
            (x, v)
            for x, v, run in zip(xs, series, history.runs)
            if v is not None and (run.get(nodeid) or {}).get("verdict") == "fail"
        ]
        if failed:
            ax.scatter(
                [p[0] for p in failed],
                [p[1] for p in failed],
                marker="x",
                color="tab:red",
                s=60,
                zorder=4,
            )
        base = marks(history, nodeid, baseline)[1]
        if base is not None:
            ax.axhline(base, color=colour, linestyle=":", linewidth=1.5)
    ax.set_xticks(xs)
    ax.set_xticklabels(history.labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("adversarial accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(
        "adversarial accuracy per report (dashed: threshold floor, x: failed, dotted: baseline)",
        fontsize="small",
    )
    ax.legend(loc="best", fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_history(history: History, path: Path, baseline: Optional[Dict[str, Any]] = None) -> Path:
    """Write the PNG of :func:`history_figure`."""
    fig = history_figure(history, baseline)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
