"""HTML pieces of the reports: escaping, number formats and tables that scroll inside
their own box."""

from __future__ import annotations

import html
import math
from typing import Any


class Markup(str):
    """Text already escaped: table cells take it as HTML."""


def esc(value: Any) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


# ---------------------------------------------------------------- number formats


def fmt_seconds(value: float | None) -> str:
    """0.1, 1.2, 12, 1,234 (below 0.05 s: <0.1, but 0 stays 0)."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    if abs(value) < 0.05:
        return "<0.1"
    return f"{value:.1f}" if abs(value) < 10 else f"{value:,.0f}"


def fmt_metric(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def fmt_count(value: float | None) -> str:
    return "" if value is None else f"{round(value):,}"


def fmt_value(value: Any) -> str:
    """A cell's default format: counts with thousands separators, other floats with 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return fmt_count(value)
    if isinstance(value, float):
        return fmt_metric(value) if abs(value) < 1000 else fmt_count(value)
    return str(value)


def html_table(
    header: list[str],
    rows: list[list[Any]],
    text_columns: int | tuple[int, ...] = 1,
    long: tuple[int, ...] = (),
    highlight: int | None = None,
) -> str:
    """A table in its own scroll box. Text columns (the first ``text_columns``, or those
    listed) are left-aligned; columns in ``long`` wrap; row ``highlight`` is marked.
    Values are formatted by :func:`fmt_value` unless they are strings already."""
    text_at = set(range(text_columns)) if isinstance(text_columns, int) else set(text_columns)

    def cell(tag: str, i: int, value: Any) -> str:
        text = esc(value if isinstance(value, str) else fmt_value(value))
        if i in long and tag == "td":
            return f'<td class="text long"><div>{text}</div></td>'
        css = ' class="text"' if i in text_at or i in long else ""
        return f"<{tag}{css}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        ('<tr class="best">' if j == highlight else "<tr>")
        + "".join(cell("td", i, v) for i, v in enumerate(r))
        + "</tr>"
        for j, r in enumerate(rows)
    )
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def pairs_card(title: str, pairs: list[tuple[str, Any]]) -> str:
    """A two-column table of labelled values."""

    def value(v: Any) -> str:
        text = v if isinstance(v, str) else fmt_value(v)
        css = ' class="text wrap"' if len(text) > 24 else ""
        return f"<td{css}>{esc(text)}</td>"

    rows = "".join(f'<tr><th class="text">{esc(k)}</th>{value(v)}</tr>' for k, v in pairs)
    return f'<div><h3>{esc(title)}</h3><div class="wide"><table>{rows}</table></div></div>'
