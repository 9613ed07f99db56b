"""A self-contained HTML report of one run: tables and matplotlib plots as data URIs.

It answers "is it good?" first: a summary names the best model by the headline metric
(ndcg at the largest evaluated k of the published lists), its lift over the popularity
baseline, each model's change since the previous complete run, and each model's params.
Then: ranking metrics on held-out interactions (published lists and exact top-N), how
each index is served and what the approximation costs (recall against queries per
second for every swept strategy), the published recommendations (scores per model, each
on its own scale, and how concentrated they are), the run's input and timings, and a
glossary of the metrics. No external files, scripts or fonts; tables scroll inside their
own box only when wider than the window.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from recsys import storage
from recsys.errors import RunError
from recsys.manifest import RunManifest, read_manifest

RANKING_NAMES = ("recall", "ndcg", "precision", "map", "hit_rate", "coverage", "popularity")
METRIC_LABELS = {
    "recall": "Recall",
    "ndcg": "NDCG",
    "precision": "Precision",
    "map": "MAP",
    "hit_rate": "Hit rate",
    "coverage": "Coverage",
    "popularity": "Popularity",
}
HEADLINE = "ndcg"
STAGES = ("fit", "index", "recommend", "similar_items", "evaluate")
BASELINE_HINT = "{name: popular, type: popular}"

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

GLOSSARY = (
    ("Recall@k", "share of a user's held-out items found in their top k, averaged over users."),
    (
        "NDCG@k",
        "like recall@k, but a hit counts more the higher it is in the list (1/log2(rank + 1)), "
        "scaled so that a perfect list scores 1. The headline metric of this report.",
    ),
    ("Precision@k", "share of the top k that are held-out items of the user."),
    (
        "MAP@k",
        "mean average precision: the precision at the rank of each hit, summed and divided by "
        "min(k, held-out items); rewards hits early in the list.",
    ),
    ("Hit rate@k", "share of users with at least one held-out item in their top k."),
    (
        "Coverage@k",
        "distinct items in all users' top k, as a share of the catalog: low means the same few "
        "items for everyone.",
    ),
    (
        "Popularity@k",
        "mean number of training users of the recommended items: high means the model leans on "
        "what is popular anyway.",
    ),
    (
        "Published vs exact top-N",
        "published lists come from the index that serves them; exact top-N from exact search over "
        "the same vectors. The gap is what the approximate search costs in ranking quality.",
    ),
    (
        "Recall vs exact (ANN recall)",
        "share of the exact top k (same metric) that the served index returns; results tied with "
        "the k-th exact score count as found.",
    ),
    ("Queries/s", "queries answered per second on one core, by the served index and by exact search."),
    (
        "Lift",
        "a model's headline metric divided by the popularity baseline's: x1.00 is no better than "
        "recommending the most popular items to everyone.",
    ),
    (
        "Change vs previous",
        "the headline metric minus that of the model of the same name in the previous complete "
        "run; only comparable when the input and the held-out split are the same.",
    ),
)


class Markup(str):
    """Text already escaped: table cells take it as HTML."""


def _esc(value: Any) -> str:
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


def metric_label(key: str) -> str:
    """``hit_rate@10`` -> ``Hit rate@10``."""
    name, _, k = key.partition("@")
    return METRIC_LABELS.get(name, name.replace("_", " ").capitalize()) + (f"@{k}" if k else "")


def _humanize(key: str) -> str:
    return key.replace("_", " ").capitalize()


# ---------------------------------------------------------------- html pieces


def _table(
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
        text = _esc(value if isinstance(value, str) else fmt_value(value))
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


def _pairs(title: str, pairs: list[tuple[str, Any]]) -> str:
    """A two-column table of labelled values."""

    def value(v: Any) -> str:
        text = v if isinstance(v, str) else fmt_value(v)
        css = ' class="text wrap"' if len(text) > 24 else ""
        return f"<td{css}>{_esc(text)}</td>"

    rows = "".join(f'<tr><th class="text">{_esc(k)}</th>{value(v)}</tr>' for k, v in pairs)
    return f'<div><h3>{_esc(title)}</h3><div class="wide"><table>{rows}</table></div></div>'


SINGLE = {"left": 0.12, "right": 0.97, "bottom": 0.12, "top": 0.92}
"""Margins of a one-axes figure (6 x 4.2 in): fixed, since measuring every label's extent
(``tight_layout``) costs more than drawing the figure."""


def _png(figure: Figure, alt: str, margins: dict[str, float] = SINGLE) -> str:
    buffer = io.BytesIO()
    figure.subplots_adjust(**margins)
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _plots(images: list[str | None]) -> str:
    shown = [i for i in images if i]
    return '<div class="plots">' + "".join(shown) + "</div>" if shown else ""


# ---------------------------------------------------------------- the summary


@dataclass
class Summary:
    """What the report's summary says, computed from the manifests (tests read it too)."""

    metric: str | None
    """The headline metric (``ndcg@10``), None without ranking metrics."""
    scores: dict[str, float] = field(default_factory=dict)
    """Headline metric per model that has it, best first."""
    best: str | None = None
    baseline: str | None = None
    """The run's ``popular`` model, if any."""
    lift: dict[str, float] = field(default_factory=dict)
    """Headline metric over the baseline's, per model (none when the baseline scores 0)."""
    previous_run: str | None = None
    previous_scores: dict[str, float | None] = field(default_factory=dict)
    """The previous run's headline metric per model of this run it had (None: not measured)."""
    delta: dict[str, float] = field(default_factory=dict)
    """Headline metric minus the previous run's, per model that has both."""
    comparable: bool = True
    """False when the previous run had another input or held-out split."""


def headline_k(manifest: RunManifest) -> int | None:
    """The largest k of the published lists' ndcg in the run, or None without ranking metrics."""
    ks = [
        int(key.split("@")[1])
        for model in manifest.models.values()
        for key in (model.evaluation.ranking or {})
        if key.startswith(f"{HEADLINE}@")
    ]
    return max(ks) if ks else None


def _same_evaluation(a: RunManifest, b: RunManifest) -> bool:
    def key(m: RunManifest) -> tuple[Any, ...]:
        h = m.holdout
        split = (h.method, h.fraction, h.n, h.sha256) if h else None
        return (m.input.sha256, split)

    return key(a) == key(b)


def summarize(manifest: RunManifest, previous: RunManifest | None = None) -> Summary:
    """Best model by the headline metric, lift over the popularity baseline, and change
    against the previous complete run."""
    k = headline_k(manifest)
    metric = f"{HEADLINE}@{k}" if k is not None else None
    baseline = next((n for n, m in manifest.models.items() if m.type == "popular"), None)
    summary = Summary(metric=metric, baseline=baseline)
    if previous is not None:
        summary.previous_run = previous.run_id
        summary.comparable = _same_evaluation(manifest, previous)
    if metric is None:
        return summary
    scores = {
        name: model.evaluation.ranking[metric]
        for name, model in manifest.models.items()
        if model.evaluation.ranking and metric in model.evaluation.ranking
    }
    summary.scores = dict(sorted(scores.items(), key=lambda pair: -pair[1]))
    summary.best = next(iter(summary.scores))
    base = summary.scores.get(baseline) if baseline else None
    if base:
        summary.lift = {name: score / base for name, score in summary.scores.items()}
    if previous is not None:
        for name, score in summary.scores.items():
            before = previous.models.get(name)
            if before is None:
                continue
            value = (before.evaluation.ranking or {}).get(metric)
            summary.previous_scores[name] = value
            if value is not None:
                summary.delta[name] = score - value
    return summary


def previous_manifest(root: str | Path, run_id: str) -> RunManifest | None:
    """The newest complete run under ``root`` published before ``run_id`` (any complete
    run but ``run_id`` when ``run_id`` is not published yet), or None if there is none or
    it cannot be read."""
    try:
        runs = storage.list_runs(root)
        listed = [entry["run_id"] for entry in runs]
        if run_id in listed:
            runs = runs[listed.index(run_id) + 1 :]
        for entry in runs:
            if entry["status"] == "complete" and entry["run_id"] != run_id:
                return read_manifest(storage.RunLayout(Path(root), entry["run_id"], staging=False))
    except RunError:
        return None
    return None


def _params_text(model: Any) -> str:
    params = {k: v for k, v in model.params.items() if k != "random_state"}
    if not params:
        return "defaults"
    return ", ".join(
        f"{k}={v if isinstance(v, str | int | float) else json.dumps(v)}" for k, v in params.items()
    )


def _delta_markup(delta: float, before: float) -> Markup:
    if abs(delta) < 5e-5:
        return Markup('<span class="same">&plusmn;0.0000</span>')
    relative = f" ({delta / before:+.1%})" if before and abs(delta / before) >= 0.0005 else ""
    css = "up" if delta > 0 else "down"
    return Markup(f'<span class="{css}">{delta:+.4f}{html.escape(relative)}</span>')


def _no_change(summary: Summary, name: str) -> str:
    """Why a model has no change against the previous run."""
    return "not measured before" if name in summary.previous_scores else "new"


def _summary_section(manifest: RunManifest, summary: Summary) -> str:
    metric = summary.metric
    label = metric_label(metric) if metric else None
    sentences: list[str] = []
    warn = False
    if metric is None:
        warn = True
        sentences.append(
            "<strong>No held-out interactions in this run</strong>, so nothing here says how good the "
            "recommendations are or which model is best. Set <code>evaluate.split</code> in the config "
            "(for example <code>split: {method: random}</code>, or <code>leave_last</code> / "
            "<code>time</code>) or pass <code>--holdout TABLE</code> to <code>recsys run</code>."
        )
    else:
        best, score = summary.best, summary.scores[summary.best]
        sentences.append(f"Best model by {label}: <strong>{_esc(best)}</strong> ({fmt_metric(score)}).")
        if summary.baseline is None:
            sentences.append(
                "No popularity baseline was run, so there is no lift to report: add "
                f"<code>{_esc(BASELINE_HINT)}</code> to <code>models</code> in the config."
            )
        elif summary.baseline not in summary.scores:
            sentences.append(
                f"The popularity baseline <strong>{_esc(summary.baseline)}</strong> has no {label}."
            )
        elif best == summary.baseline:
            warn = True
            sentences.append(
                "<strong>The popularity baseline is best</strong>: no model beats recommending the most "
                "popular items to everyone."
            )
        elif summary.lift:
            base = summary.scores[summary.baseline]
            sentences.append(
                f"That is <strong>x{summary.lift[best]:.2f}</strong> the popularity baseline "
                f"<strong>{_esc(summary.baseline)}</strong> ({fmt_metric(base)})."
            )
        else:
            sentences.append(f"The popularity baseline scores 0 at {label}: no lift can be computed.")
    if summary.previous_run is None:
        sentences.append("No previous complete run to compare with.")
    elif metric is not None:
        changes = []
        for name in summary.scores:
            before = summary.previous_scores.get(name)
            if name in summary.delta and before is not None:
                changes.append(f"{_esc(name)} {_delta_markup(summary.delta[name], before)}")
            else:
                changes.append(f"{_esc(name)} {_no_change(summary, name)}")
        caveat = (
            ""
            if summary.comparable
            else " Its input or held-out split differs from this run's, so the change mixes data and model."
        )
        sentences.append(
            f"Change of {label} since the previous complete run <code>{_esc(summary.previous_run)}</code>: "
            + ", ".join(changes)
            + "."
            + caveat
        )
    verdict = (
        f'<div class="verdict{" warn" if warn else ""}">'
        + "".join(f"<p>{s}</p>" for s in sentences)
        + "</div>"
    )

    names = list(summary.scores) + [n for n in manifest.models if n not in summary.scores]
    k = metric.split("@")[1] if metric else None
    header = ["Model"]
    if metric:
        header += [label, "Lift vs popular"] + (["Change vs previous"] if summary.previous_run else [])
        header.append(f"Recall@{k}")
    header += ["Type", "Dim", "Params"]
    rows = []
    for name in names:
        model = manifest.models[name]
        row: list[Any] = [name]
        if metric:
            ranking = model.evaluation.ranking or {}
            row.append(fmt_metric(ranking.get(metric)))
            if name == summary.baseline:
                row.append("baseline")
            else:
                row.append(f"x{summary.lift[name]:.2f}" if name in summary.lift else "")
            if summary.previous_run:
                before = summary.previous_scores.get(name)
                row.append(
                    _delta_markup(summary.delta[name], before)
                    if name in summary.delta
                    else _no_change(summary, name)
                )
            row.append(fmt_metric(ranking.get(f"recall@{k}")))
        params = _params_text(model)
        if model.carried_over_from:
            params += f" (carried over from {model.carried_over_from})"
        row += [model.type, model.dim, params]
        rows.append(row)
    n = len(header)
    table = _table(header, rows, (0, n - 3), long=(n - 1,), highlight=0 if summary.best else None)
    return "<h2>Summary</h2>" + verdict + table


def _promotion_section(manifest: RunManifest) -> str:
    """The promotion gate's verdict: held (with the reason and how to promote the run by
    hand), passed, or off; and its checks against the run that was current."""
    promotion = manifest.promotion
    if promotion is None:
        return ""
    run_id = _esc(manifest.run_id)
    if promotion.held:
        sentences = [
            f"<strong>Held by the promotion gate</strong>: this run is complete but was not made "
            f"current. {_esc(promotion.reason)}.",
            f"<code>CURRENT</code> and <code>latest</code> stay on <code>{_esc(promotion.against)}</code>; "
            f"<code>recsys promote {run_id}</code> makes this run current after verifying its files.",
        ]
    elif promotion.gate == "off":
        sentences = ["Made current without the promotion gate (turned off)."]
    elif promotion.against is None:
        sentences = ["Made current: the first run of this output root, nothing to check against."]
    else:
        sentences = [
            f"Made current: passed the promotion gate against <code>{_esc(promotion.against)}</code>."
        ]
    verdict = (
        f'<div class="verdict{" warn" if promotion.held else ""}">'
        + "".join(f"<p>{s}</p>" for s in sentences)
        + "</div>"
    )
    table = ""
    if promotion.checks:
        counts = ("users", "items", "interactions")
        rows = [
            [
                check.name,
                (fmt_count if check.name in counts else fmt_metric)(check.current),
                (fmt_count if check.name in counts else fmt_metric)(check.candidate),
                f"{0.0 - check.drop:+.1%}",
                f"-{check.limit * 100:g}%",
                "passed" if check.passed else "failed",
            ]
            for check in promotion.checks
        ]
        header = ["Check", f"Run {promotion.against}", "This run", "Change", "Limit", "Result"]
        table = _table(header, rows)
    return "<h2>Promotion</h2>" + verdict + table


# ---------------------------------------------------------------- plots


def _recall_curves(manifest: dict[str, Any]) -> str | None:
    figure = Figure(figsize=(6, 4.2))
    axes = figure.subplots()
    target = None
    exact_speeds = []
    for name, model in manifest["models"].items():
        for metric, entry in model.get("indices", {}).items():
            for strategy, sweep in (entry.get("tuning") or {}).items():
                curve = sweep.get("curve") or []
                if not curve:
                    continue
                target = sweep.get("target_recall", target)
                qps = [p["queries_per_second"] for p in curve]
                recall = [p["recall_at_k"] for p in curve]
                axes.plot(qps, recall, marker="o", markersize=4, label=f"{name} {metric} {strategy}")
                exact_speeds.append(sweep["exact_queries_per_second"])
    if not axes.lines:
        return None
    for speed in exact_speeds:
        axes.axvline(speed, linestyle=":", color="grey", linewidth=0.8)
    if target is not None:
        axes.axhline(target, linestyle="--", color="red", linewidth=1, label=f"target {target}")
    axes.set_xscale("log")
    axes.set_xlabel("queries per second (dotted: exact search)")
    axes.set_ylabel("recall@k against exact search")
    axes.set_title("Recall vs speed per index and strategy")
    axes.legend(fontsize=7, loc="best")
    return _png(figure, "Recall against queries per second for every swept index strategy")


def _ranking_bars(manifest: dict[str, Any], k: int) -> str | None:
    names = [n for n, m in manifest["models"].items() if m.get("evaluation", {}).get("ranking")]
    if not names:
        return None
    figure = Figure(figsize=(6, 4.2))
    axes = figure.subplots()
    labels = [f"recall@{k}", f"ndcg@{k}"]
    width = 0.8 / (2 * len(labels))
    x = np.arange(len(names))
    for j, label in enumerate(labels):
        for i, kind in enumerate(("ranking", "ranking_exact")):
            values = [(manifest["models"][n]["evaluation"].get(kind) or {}).get(label, 0.0) for n in names]
            offset = (2 * j + i - (2 * len(labels) - 1) / 2) * width
            axes.bar(
                x + offset,
                values,
                width,
                color=f"C{j}",
                label=f"{metric_label(label)} {'published' if i == 0 else 'exact'}",
                hatch="" if i == 0 else "//",
                alpha=0.9 if i == 0 else 0.45,
            )
    axes.set_xticks(x, names)
    axes.set_ylabel("on held-out interactions")
    axes.set_title(f"Ranking quality at {k}: published vs exact top-N")
    axes.legend(fontsize=7)
    return _png(figure, f"Recall@{k} and NDCG@{k} per model, published lists and exact top-N")


def _read_recommendations(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    tables = {}
    for name, model in manifest["models"].items():
        path = run_dir / model.get("outputs", {}).get("recommendations", "")
        if path.is_file():
            tables[name] = pq.read_table(path, columns=["item_id", "score"])
    return tables


def _score_plots(manifest: dict[str, Any], tables: dict[str, Any]) -> str | None:
    """One small histogram per model: scores of different models are on different scales."""
    if not tables:
        return None
    n = len(tables)
    columns = min(n, 3)
    rows = -(-n // columns)
    figure = Figure(figsize=(3.1 * columns if n > 1 else 6, 2.5 * rows + 0.3))
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes, (name, table) in zip(grid, tables.items(), strict=False):
        values = table.column("score").to_numpy()
        axes.hist(values, bins=40, color="C0")
        if len(values):
            axes.axvline(float(np.median(values)), color="black", linewidth=0.8, linestyle="--")
        axes.set_title(f"{name} ({manifest['models'][name]['type']})", fontsize=9)
        axes.set_xlabel("score (this model's own scale)", fontsize=8)
        axes.tick_params(labelsize=7)
    grid[0].set_ylabel("recommendations", fontsize=8)
    for axes in grid[n:]:
        axes.set_visible(False)
    figure.suptitle("Scores of published recommendations per model (dashed: median)", fontsize=10)
    height = 2.5 * rows + 0.3  # inches: title and axis labels keep their size as rows are added
    margins = {
        "left": 0.4 / figure.get_figwidth() + 0.06,
        "right": 0.98,
        "bottom": 0.45 / height,
        "top": 1 - 0.5 / height,
        "wspace": 0.35,
        "hspace": 0.9 / 2.5,
    }
    return _png(figure, "Histogram of recommendation scores, one per model", margins)


def _concentration(tables: dict[str, Any]) -> str | None:
    if not tables:
        return None
    figure = Figure(figsize=(6, 4.2))
    axes = figure.subplots()
    for name, table in tables.items():
        values = table.column("item_id").to_pandas().value_counts().to_numpy()
        axes.plot(np.arange(1, len(values) + 1), values, label=f"{name} ({len(values):,} items)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("item rank by times recommended")
    axes.set_ylabel("times recommended")
    axes.set_title("How concentrated the recommendations are")
    axes.legend(fontsize=7)
    return _png(figure, "Times each item is recommended, by rank, per model")


# ---------------------------------------------------------------- sections


def _ranking_section(manifest: dict[str, Any], k: int | None) -> str:
    parts = ["<h2>Ranking quality on held-out interactions</h2>"]
    ranked = {
        n: m["evaluation"] for n, m in manifest["models"].items() if m.get("evaluation", {}).get("ranking")
    }
    if not ranked or k is None:
        parts.append('<p class="note">No held-out interactions: set evaluate.split or pass --holdout.</p>')
        return "".join(parts)
    first = next(iter(ranked.values()))["ranking"]
    ks = sorted(
        {int(key.split("@")[1]) for e in ranked.values() for key in e["ranking"] if "@" in key}, reverse=True
    )
    for at in ks:
        keys = [f"{name}@{at}" for name in RANKING_NAMES]
        rows = []
        for name, evaluation in ranked.items():
            for label, kind in (("published", "ranking"), ("exact top-N", "ranking_exact")):
                values = evaluation.get(kind) or {}
                cells = [
                    (f"{values[key]:,.1f}" if key.startswith("popularity@") else fmt_metric(values[key]))
                    if key in values
                    else ""
                    for key in keys
                ]
                rows.append([name, label, *cells])
        title = f"At {at}" + (" (headline)" if at == k else "")
        parts.append(f"<h3>{title}</h3>" + _table(["Model", "Lists", *map(metric_label, keys)], rows, 2))
    users = fmt_count(first.get("users", 0))
    parts.append(f'<p class="note">Averaged over {users} users with held-out items.</p>')
    parts.append(_plots([_ranking_bars(manifest, k)]))
    return "".join(parts)


def _serving_section(typed: RunManifest, manifest: dict[str, Any]) -> str:
    rows = []
    for name, model in typed.models.items():
        for metric, entry in model.indices.items():
            setting = f"{entry.setting[0]} {entry.setting[1]:,}" if entry.setting else "—"
            rows.append([name, metric, entry.backend, setting, entry.reason])
    ann_rows = []
    for name, model in manifest["models"].items():
        for kind, figures in (model.get("evaluation", {}).get("ann") or {}).items():
            ann_rows.append(
                [
                    name,
                    _humanize(kind),
                    figures["metric"],
                    figures["backend"],
                    figures["k"],
                    fmt_metric(figures["recall_at_k"]),
                    fmt_count(figures["queries_per_second"]),
                    fmt_count(figures["exact_queries_per_second"]),
                    figures["queries"],
                ]
            )
    return (
        "<h2>Serving: approximate against exact search</h2>"
        + "<h3>How each index is served</h3>"
        + _table(["Model", "Index", "Served by", "Setting", "Reason"], rows, 4, long=(4,))
        + "<h3>Served lists against exact search</h3>"
        + _table(
            [
                "Model",
                "Lists",
                "Index",
                "Served by",
                "k",
                "Recall vs exact",
                "Queries/s",
                "Exact queries/s",
                "Queries",
            ],
            ann_rows,
            4,
        )
        + _plots([_recall_curves(manifest)])
    )


def _details_section(manifest: dict[str, Any]) -> str:
    inp = manifest["input"]
    cards = [
        _pairs(
            "Input",
            [
                ("Path", inp["path"]),
                ("Rows", inp["rows"]),
                ("Users", inp["users"]),
                ("Items", inp["items"]),
                ("Interactions", inp["interactions"]),
                ("Duplicate rows merged", inp["duplicate_rows_merged"]),
                ("Zero-weight rows dropped", inp["zero_weight_rows_dropped"]),
            ],
        )
    ]
    holdout = manifest.get("holdout")
    if holdout:
        method = holdout["method"]
        skip = {"sha256", "size_bytes", "fraction", "n"}
        pairs = [("Method", method)]
        if method in ("random", "time") and "fraction" in holdout:
            pairs.append(("Fraction", f"{holdout['fraction']:.0%}"))
        if method == "leave_last" and "n" in holdout:
            pairs.append(("Items per user", holdout["n"]))
        pairs += [(_humanize(k), v) for k, v in holdout.items() if k not in skip | {"method"}]
        cards.append(_pairs("Held-out interactions", pairs))
    run_timings = [(_humanize(k), fmt_seconds(v) + " s") for k, v in manifest.get("timings", {}).items()]
    if run_timings:
        cards.append(_pairs("Run timings", run_timings))
    models = manifest["models"]
    extra = sorted({s for m in models.values() for s in m.get("timings", {}) if s not in STAGES})
    stages = [*STAGES, *extra]
    carried = any(m.get("carried_over_from") for m in models.values())
    header = ["Model", *(["Carried over from"] if carried else []), *(f"{_humanize(s)} (s)" for s in stages)]
    rows = [
        [name, *([m.get("carried_over_from", "")] if carried else [])]
        + [fmt_seconds(m.get("timings", {}).get(s)) for s in stages]
        for name, m in models.items()
    ]
    return (
        "<h2>Run details</h2>"
        + f'<div class="cards">{"".join(cards)}</div>'
        + "<h3>Timings per model</h3>"
        + _table(header, rows, 2 if carried else 1)
    )


def _glossary() -> str:
    items = "".join(f"<dt>{_esc(term)}</dt><dd>{_esc(text)}</dd>" for term, text in GLOSSARY)
    return f'<h2>Glossary</h2><dl class="glossary">{items}</dl>'


def _validated(manifest: RunManifest | dict[str, Any]) -> RunManifest:
    return manifest if isinstance(manifest, RunManifest) else RunManifest.model_validate(manifest)


def render_report(
    run_dir: Path,
    manifest: RunManifest | dict[str, Any],
    previous: RunManifest | dict[str, Any] | None = None,
) -> str:
    """The report of a run folder (published or staging) as one HTML string; ``previous``
    is the previous complete run's manifest (:func:`previous_manifest`), for the change
    of each model's headline metric. Manifests are validated first: a field the report
    reads can never be missing or renamed."""
    typed = _validated(manifest)
    before = _validated(previous) if previous is not None else None
    manifest = typed.model_dump(mode="json", exclude_none=True)
    run_dir = Path(run_dir)
    summary = summarize(typed, before)
    k = headline_k(typed)
    inp = typed.input
    context = f"{inp.interactions:,} interactions, {inp.users:,} users, {inp.items:,} items"
    if typed.holdout:
        h = typed.holdout
        share = f" {h.fraction:.0%}" if h.method in ("random", "time") and h.fraction is not None else ""
        context += f"; held out: {h.method}{share}, {h.pairs_evaluated:,} interactions"
        context += f" of {h.users_evaluated:,} users"
    else:
        context += "; nothing held out"
    purpose = "Evaluation run (trained on the split, not refit)" if typed.purpose == "evaluation" else "Run"
    tables = _read_recommendations(run_dir, manifest)
    parts = [
        f"<h1>recsys run {_esc(typed.run_id)}</h1>",
        f'<p class="meta">{purpose} created {_esc(typed.created_at)}, recsys {_esc(typed.recsys_version)}, '
        f"config sha256 <code>{_esc(typed.config_sha256[:16])}</code></p>",
        f'<p class="meta">{_esc(context)}</p>',
        _promotion_section(typed),
        _summary_section(typed, summary),
        _ranking_section(manifest, k),
        _serving_section(typed, manifest),
        "<h2>Published recommendations</h2>"
        '<p class="note">Scores are inner products of each model\'s own vectors: their scale differs '
        "between models, so each model has its own plot.</p>"
        + _plots([_score_plots(manifest, tables), _concentration(tables)]),
        _details_section(manifest),
        _glossary(),
    ]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>recsys run {_esc(typed.run_id)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )
