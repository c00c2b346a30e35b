"""The one table renderer: plain text (the terminal summary, every ``advrobust`` table)
and Markdown (the CI job summary).

Rows are lists of strings, the header first. In plain text, columns are two
spaces apart and as wide as their widest cell; trailing spaces are dropped.
"""

from __future__ import annotations

from typing import Container, List, Sequence

__all__ = ["counted", "markdown_cell", "markdown_lines", "text_table"]


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, with an ``s`` unless ``n`` is one: ``1 flag``, ``2 flags``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def text_table(
    rows: Sequence[Sequence[str]], right: Container[int] = (), rule: bool = False
) -> List[str]:
    """Lines of a table: columns in ``right`` (by index) right-aligned, the others left.

    ``rule=True`` puts a line of dashes under the header. No rows, no lines.
    """
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    if rule:
        lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def markdown_cell(text: object) -> str:
    """A Markdown table cell: backslashes and pipes escaped, on one line."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_lines(rows: Sequence[Sequence[str]]) -> List[str]:
    """Lines of a Markdown (GitHub) table, the header first, every cell escaped."""
    header, *body = rows
    lines = [
        "| " + " | ".join(markdown_cell(c) for c in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    return lines + ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in body]
