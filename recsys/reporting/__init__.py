"""The HTML reports: one toolkit (:mod:`.html` tables and number formats, :mod:`.plots`
figures as embedded PNG) and the run's ``report.html`` (:mod:`.run_report`)."""

from recsys.reporting.html import Markup, fmt_count, fmt_metric, fmt_seconds, fmt_value
from recsys.reporting.run_forward import ForwardRecord, forward_history, forward_section
from recsys.reporting.run_report import GLOSSARY, render_report
from recsys.reporting.run_summary import Summary, headline_k, metric_label, previous_manifest, summarize

__all__ = [
    "GLOSSARY",
    "ForwardRecord",
    "Markup",
    "Summary",
    "fmt_count",
    "fmt_metric",
    "fmt_seconds",
    "fmt_value",
    "forward_history",
    "forward_section",
    "headline_k",
    "metric_label",
    "previous_manifest",
    "render_report",
    "summarize",
]
