"""A self-contained HTML report of one run: tables and matplotlib plots as data URIs.

Sections: the run and its input, how each model's indices are served, ranking metrics of
the published lists against exact top-N, and plots: recall against queries per second
for every swept strategy, ranking metrics per model, score and popularity distributions
of the published recommendations. No external files, scripts or fonts.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from recsys.manifest import RunManifest

RANKING_NAMES = ("recall", "ndcg", "precision", "map", "hit_rate", "coverage", "popularity")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.plots img { max-width: 48%; margin: 0.5%; border: 1px solid #eee; }
.note { color: #666; font-size: 0.9em; }
.wide { overflow-x: auto; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], text_columns: int = 1) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        css = ' class="text"' if i < text_columns else ""
        return f"<{tag}{css}>{_esc(_fmt(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode() + '">'


def _recall_curves(manifest: dict[str, Any]) -> str | None:
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    target = None
    for name, model in manifest["models"].items():
        for metric, entry in model.get("indices", {}).items():
            for strategy, sweep in (entry.get("tuning") or {}).items():
                curve = sweep.get("curve") or []
                if not curve:
                    continue
                target = sweep.get("target_recall", target)
                qps = [p["queries_per_second"] for p in curve]
                recall = [p["recall_at_k"] for p in curve]
                axes.plot(qps, recall, marker="o", label=f"{name} {metric} {strategy}")
                axes.axvline(sweep["exact_queries_per_second"], linestyle=":", color="grey", linewidth=0.8)
    if not axes.lines:
        return None
    if target is not None:
        axes.axhline(target, linestyle="--", color="red", linewidth=1, label=f"target {target}")
    axes.set_xscale("log")
    axes.set_xlabel("queries per second (dotted: exact search)")
    axes.set_ylabel("recall@k against exact")
    axes.set_title("Recall vs speed per index and strategy")
    axes.legend(fontsize=7)
    return _png(figure)


def _ranking_bars(manifest: dict[str, Any], k: int) -> str | None:
    names = [n for n, m in manifest["models"].items() if m.get("evaluation", {}).get("ranking")]
    if not names:
        return None
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    labels = [f"recall@{k}", f"ndcg@{k}"]
    width = 0.8 / (2 * len(labels))
    x = np.arange(len(names))
    for j, label in enumerate(labels):
        for i, kind in enumerate(("ranking", "ranking_exact")):
            values = [manifest["models"][n]["evaluation"][kind].get(label, 0.0) for n in names]
            offset = (2 * j + i - (2 * len(labels) - 1) / 2) * width
            axes.bar(
                x + offset,
                values,
                width,
                label=f"{label} {'published' if i == 0 else 'exact'}",
                hatch="" if i == 0 else "//",
                alpha=0.9 if i == 0 else 0.5,
            )
    axes.set_xticks(x, names)
    axes.set_ylabel("on held-out interactions")
    axes.set_title(f"Ranking quality at {k}: published vs exact top-N")
    axes.legend(fontsize=7)
    return _png(figure)


def _distributions(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    scores, counts = {}, {}
    for name, model in manifest["models"].items():
        path = run_dir / model.get("outputs", {}).get("recommendations", "")
        if not path.is_file():
            continue
        table = pq.read_table(path, columns=["item_id", "score"])
        scores[name] = table.column("score").to_numpy()
        items = table.column("item_id").to_pandas()
        counts[name] = items.value_counts().to_numpy()
    images = []
    if scores:
        figure = Figure(figsize=(6, 4))
        axes = figure.subplots()
        for name, values in scores.items():
            axes.hist(values, bins=50, histtype="step", label=name)
        axes.set_xlabel("score of recommended items")
        axes.set_ylabel("recommendations")
        axes.set_title("Score distribution of published recommendations")
        axes.legend(fontsize=7)
        images.append(_png(figure))
        figure = Figure(figsize=(6, 4))
        axes = figure.subplots()
        for name, values in counts.items():
            axes.plot(np.arange(1, len(values) + 1), values, label=f"{name} ({len(values)} items)")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("item rank by times recommended")
        axes.set_ylabel("times recommended")
        axes.set_title("How concentrated the recommendations are")
        axes.legend(fontsize=7)
        images.append(_png(figure))
    return images


def render_report(run_dir: Path, manifest: RunManifest | dict[str, Any]) -> str:
    """The report of a run folder (published or staging) as one HTML string. The manifest
    is validated first: a field the report reads can never be missing or renamed."""
    typed = manifest if isinstance(manifest, RunManifest) else RunManifest.model_validate(manifest)
    manifest = typed.model_dump(mode="json", exclude_none=True)
    inp = manifest["input"]
    parts = [
        f"<h1>recsys run {_esc(manifest['run_id'])}</h1>",
        f"<p>created {_esc(manifest['created_at'])}, config sha256 "
        f"<code>{_esc(manifest['config_sha256'][:16])}</code></p>",
        _table(
            ["input", "rows", "users", "items", "interactions", "duplicates merged", "zero weights"],
            [
                [
                    inp["path"],
                    inp["rows"],
                    inp["users"],
                    inp["items"],
                    inp["interactions"],
                    inp["duplicate_rows_merged"],
                    inp["zero_weight_rows_dropped"],
                ]
            ],
        ),
    ]
    holdout = manifest.get("holdout")
    if holdout:
        keys = [k for k in holdout if k not in ("path", "sha256", "size_bytes")]
        parts.append("<h2>Held-out interactions</h2>" + _table(keys, [[holdout[k] for k in keys]], len(keys)))
    parts.append("<h2>Models and how their indices are served</h2>")
    rows, timing_rows = [], []
    stages = ["fit", "index", "recommend", "similar_items", "evaluate"]
    for name, model in manifest["models"].items():
        timing_rows.append(
            [name, model["type"], model.get("dim", ""), model.get("carried_over_from", "")]
            + [model.get("timings", {}).get(stage, "") for stage in stages]
        )
        for metric, entry in typed.models[name].indices.items():
            setting = entry.setting[1] if entry.setting else ""
            rows.append([name, metric, entry.backend, setting, entry.reason])
    parts.append(
        _table(["model", "type", "dim", "carried over from"] + [f"{s} s" for s in stages], timing_rows, 4)
    )
    parts.append(_table(["model", "index", "served by", "setting", "reason"], rows, 5))
    ann_rows = []
    for name, model in manifest["models"].items():
        for kind, figures in (model.get("evaluation", {}).get("ann") or {}).items():
            ann_rows.append(
                [
                    name,
                    kind,
                    figures["metric"],
                    figures["backend"],
                    figures["k"],
                    figures["recall_at_k"],
                    figures["queries_per_second"],
                    figures["exact_queries_per_second"],
                ]
            )
    parts.append("<h2>Served lists against exact search</h2>")
    parts.append(
        _table(["model", "lists", "metric", "backend", "k", "recall@k", "q/s", "exact q/s"], ann_rows, 4)
    )
    parts.append("<h2>Ranking metrics on held-out interactions</h2>")
    ranked = {
        n: m["evaluation"] for n, m in manifest["models"].items() if m.get("evaluation", {}).get("ranking")
    }
    k_max = None
    if ranked:
        first = next(iter(ranked.values()))["ranking"]
        ks = sorted({int(key.split("@")[1]) for key in first if "@" in key})
        k_max = ks[-1]
        header = ["model", "lists"] + [f"{n}@{k}" for k in ks for n in RANKING_NAMES]
        rows = []
        for name, evaluation in ranked.items():
            for label, kind in (("published", "ranking"), ("exact top-N", "ranking_exact")):
                values = evaluation.get(kind) or {}
                rows.append([name, label] + [values.get(h, "") for h in header[2:]])
        parts.append(_table(header, rows, 2))
        parts.append(f'<p class="note">{first.get("users", 0)} users with held-out items.</p>')
    else:
        parts.append('<p class="note">No held-out interactions: set evaluate.split or pass --holdout.</p>')
    images = [_recall_curves(manifest)]
    if k_max is not None:
        images.append(_ranking_bars(manifest, k_max))
    images += _distributions(run_dir, manifest)
    parts.append('<h2>Plots</h2><div class="plots">' + "".join(i for i in images if i) + "</div>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>recsys run '
        f"{_esc(manifest['run_id'])}</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
