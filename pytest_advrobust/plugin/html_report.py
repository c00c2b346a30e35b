"""pytest-html integration: each robust test's numbers and pictures in its row.

Registered by the plugin only when pytest-html is loaded (``-p no:html`` and a
machine without pytest-html see nothing of it, just as the xdist hooks).
Each robust test gets

* a ``robustness`` column in the results table: verdict, gap and threshold;
* an HTML extra (``pytest_html.extras.html``) with the numbers (clean and
  adversarial accuracy with their 95% intervals, gap, threshold, baseline
  delta, verdict; under ``--advrobust-compare`` the samples that changed since
  the baseline, with the paired test's interval and p-value) and the gallery,
  the gallery of the newly fooled samples and, for sweeps, the curve as
  ``data:image/png;base64`` images inside the HTML itself, so that the file
  stands alone with or without ``--self-contained-html``.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Callable, Dict, List, Optional

import pytest

from ..errors import MissingPackage
from ..reports.report import baseline_text, eps_cell

__all__ = ["HtmlHooks", "numbers_html", "report_of", "verdict_cell"]


def report_of(report: Any) -> Optional[Dict[str, Any]]:
    """The advrobust report dict carried in a test report's user properties."""
    for name, value in getattr(report, "user_properties", ()):
        if name == "advrobust_report":
            return json.loads(value)
    return None


def _f(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def _interval(ci: Any) -> str:
    return f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else ""


def _baseline(rep: Dict[str, Any]) -> str:
    base = rep.get("baseline") or {}
    if base.get("delta") is not None:
        return f"{baseline_text(base)} (baseline {_f(base.get('adversarial_accuracy'))})"
    return str(base.get("status") or "-")


def _paired_rows(rep: Dict[str, Any]) -> List[tuple]:
    """The paired comparison's counts, interval and p-value, and the changed samples."""
    from ..gate.comparison_text import p_text, sample_list

    paired = (rep.get("baseline") or {}).get("paired")
    if not isinstance(paired, dict):
        return []
    lo, hi = paired["delta_ci"]
    rows = [
        (
            "samples that changed",
            f"{paired['newly_fooled']} newly fooled, {paired['newly_robust']} newly robust of "
            f"{paired['shared']} shared; change {paired['delta']:+.3f}, 95% CI "
            f"[{lo:+.3f}, {hi:+.3f}]; fall {p_text(paired['p_fall'])}",
        )
    ]
    for key, label in (
        ("newly_fooled_samples", "newly fooled"),
        ("newly_robust_samples", "newly robust"),
    ):
        if paired.get(key):
            rows.append((label, sample_list(paired[key])))
    return rows


def verdict_cell(rep: Optional[Dict[str, Any]]) -> str:
    """The ``robustness`` column: the verdict, gap and threshold, and for a failure the
    reason the gate gave (the first line of its message)."""
    if rep is None:
        return ""
    text = f"{rep['verdict'].upper()} gap {_f(rep['gap'])} / threshold {_f(rep['threshold'])}"
    failure = (rep.get("failure") or "").strip()
    if rep["verdict"] == "fail" and failure:
        text += f": {failure.splitlines()[0]}"
    return text


def numbers_html(rep: Dict[str, Any]) -> str:
    """A small two-column table of one test's numbers."""
    rows = [
        ("verdict", rep["verdict"].upper()),
        ("attack", f"{rep['attack']} {rep['norm']}"),
        ("eps", eps_cell(rep)),
        ("n", str(rep["n"])),
        ("clean accuracy", _f(rep["clean_accuracy"]) + _interval(rep.get("clean_ci"))),
        (
            "adversarial accuracy",
            _f(rep["adversarial_accuracy"]) + _interval(rep.get("adversarial_ci")),
        ),
        ("gap" + (" (relative)" if rep.get("metric") == "relative" else ""), _f(rep["gap"])),
        ("threshold", _f(rep["threshold"])),
        ("baseline delta", _baseline(rep)),
        *_paired_rows(rep),
        ("attack success rate", _f(rep.get("attack_success_rate"))),
    ]
    if rep.get("sanity"):
        rows.append(("sanity flags", ", ".join(f["flag"] for f in rep["sanity"])))
    if rep.get("failure"):
        rows.insert(1, ("why it failed", rep["failure"]))
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table class='advrobust-numbers'>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<img class='advrobust-picture' alt='{html.escape(alt, quote=True)}' "
        f"style='max-width:100%' src='data:image/png;base64,{data}'/>"
    )


class HtmlHooks:
    """pytest-html hooks; ``outcome_of(item)`` gives a robust item's evaluation (or None)
    and ``missing(exc)`` is told once pictures need a package that is not installed."""

    def __init__(
        self, outcome_of: Callable[[pytest.Item], Any], missing: Callable[[MissingPackage], None]
    ):
        self.outcome_of = outcome_of
        self.missing = missing

    def _pictures(self, item: pytest.Item, rep: Dict[str, Any]) -> List[str]:
        from ..reports.images import png_bytes
        from ..reports.pictures import curve_of, gallery_of, newly_fooled_of

        outcome = self.outcome_of(item)
        if outcome is None:
            return []
        gallery = gallery_of(item.nodeid, outcome, rep)
        out = (
            []
            if gallery is None
            else [_img(png_bytes(gallery), f"adversarial gallery of {item.nodeid}")]
        )
        fooled = (
            None if outcome.generated is not None else newly_fooled_of(item.nodeid, outcome, rep)
        )
        if fooled is not None:
            alt = f"samples newly fooled since the baseline in {item.nodeid}"
            out.append(_img(png_bytes(fooled), alt))
        try:
            fig = curve_of(item.nodeid, rep)
        except MissingPackage as exc:
            self.missing(exc)
            fig = None
        if fig is not None:
            out.append(_img(png_bytes(fig), f"robustness curve of {item.nodeid}"))
        return out

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any):
        report = yield
        if report.when != "call" or not item.config.getoption("htmlpath", None):
            return report
        rep = report_of(report)
        if rep is None:
            return report
        from pytest_html import extras

        parts = [numbers_html(rep)] + self._pictures(item, rep)
        block = "<div class='advrobust'>" + "".join(parts) + "</div>"
        report.extras = list(getattr(report, "extras", [])) + [extras.html(block)]
        return report

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: List[str]) -> None:
        cells.insert(2, '<th class="sortable" data-column-type="advrobust">robustness</th>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: Any, cells: List[str]) -> None:
        rep = report_of(report) if report.when == "call" else None
        cells.insert(2, f'<td class="col-advrobust">{html.escape(verdict_cell(rep))}</td>')
