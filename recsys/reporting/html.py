"""HTML pieces of the reports: escaping, number formats, tables that scroll inside their
own box, verdict boxes, and the page shell with its style sheet."""

from __future__ import annotations

import html
import math
from typing import Any

STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
  margin: 0; padding: 1.25rem clamp(0.75rem, 3vw, 2.5rem) 2.5rem; line-height: 1.45; }
h1 { font-size: 1.45rem; margin: 0 0 0.3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 2.2rem 0 0.6rem; padding-bottom: 0.25rem;
  border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
p, dl { max-width: 70rem; }
.meta { color: #57606a; margin: 0.15rem 0; overflow-wrap: anywhere; }
.note { color: #57606a; font-size: 0.9em; }
.verdict { border-left: 4px solid #2da44e; background: #f3fbf5; padding: 0.5rem 1rem;
  margin: 0.6rem 0 1rem; max-width: 70rem; }
.verdict.warn { border-left-color: #bf8700; background: #fff8e1; }
.verdict p { margin: 0.35rem 0; }
.wide { overflow-x: auto; max-width: 100%; margin: 0.4rem 0 1rem; }
table { border-collapse: collapse; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d8dee4; padding: 4px 10px; text-align: right; white-space: nowrap;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.text, th.text { text-align: left; }
td.long { white-space: normal; }
td.long > div { min-width: 15rem; max-width: 40rem; }
td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 8rem; }
tr.best td { background: #f3fbf5; }
.up { color: #1a7f37; } .down { color: #cf222e; }
.cards { display: flex; flex-wrap: wrap; gap: 0 2.5rem; align-items: flex-start; }
.cards > div { min-width: 0; max-width: 100%; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; margin: 0.5rem 0 1rem; align-items: flex-start; }
.plots img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
code { font-size: 0.88em; background: #f6f8fa; padding: 0.05em 0.3em; border-radius: 4px; }
dl.glossary dt { font-weight: 600; margin-top: 0.5rem; }
dl.glossary dd { margin: 0.1rem 0 0 1.5rem; }
"""
"""The report's style sheet: tables in scroll boxes (``.wide``), text and long columns,
the best row, verdict boxes, cards of labelled values and rows of plots."""


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


def verdict(sentences: list[str], warn: bool = False) -> str:
    """A box of sentences (HTML), green, or amber with ``warn``."""
    return (
        f'<div class="verdict{" warn" if warn else ""}">'
        + "".join(f"<p>{s}</p>" for s in sentences)
        + "</div>"
    )


def page(title: str, body: str, style: str = STYLE) -> str:
    """A whole self-contained page: no external files, scripts or fonts."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{style}</style></head>"
        f"<body>{body}</body></html>\n"
    )
