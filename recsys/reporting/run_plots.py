"""The run report's figures: recall against speed of every swept index, ranking quality
per model, and the published recommendations' scores and concentration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys import storage
from recsys.reporting.plots import new_figure, png
from recsys.reporting.run_summary import metric_label


def recall_curves(manifest: dict[str, Any]) -> str | None:
    figure = new_figure(6, 4.2)
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
    return png(figure, "Recall against queries per second for every swept index strategy")


def ranking_bars(manifest: dict[str, Any], k: int) -> str | None:
    names = [n for n, m in manifest["models"].items() if m.get("evaluation", {}).get("ranking")]
    if not names:
        return None
    figure = new_figure(6, 4.2)
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
    return png(figure, f"Recall@{k} and NDCG@{k} per model, published lists and exact top-N")


def read_recommendations(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    tables = {}
    for name, model in manifest["models"].items():
        output = model.get("outputs", {}).get("recommendations")
        paths = [run_dir / part["path"] for part in output["parts"]] if output else []
        if paths and all(path.is_file() for path in paths):
            tables[name] = storage.read_ranked_table(paths, columns=["item_id", "score"])
    return tables


def score_plots(manifest: dict[str, Any], tables: dict[str, Any]) -> str | None:
    """One small histogram per model: scores of different models are on different scales."""
    if not tables:
        return None
    n = len(tables)
    columns = min(n, 3)
    rows = -(-n // columns)
    figure = new_figure(3.1 * columns if n > 1 else 6, 2.5 * rows + 0.3)
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
    return png(figure, "Histogram of recommendation scores, one per model", margins)


def concentration(tables: dict[str, Any]) -> str | None:
    if not tables:
        return None
    figure = new_figure(6, 4.2)
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
    return png(figure, "Times each item is recommended, by rank, per model")
