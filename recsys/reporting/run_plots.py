"""The run report's figures: recall against speed of every swept index, ranking quality
per model, and the published recommendations' scores and concentration."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


SCORE_BINS = 40
"""Bins of each model's score histogram."""

MEDIAN_BINS = 4000
"""Bins of the fine histogram the median is read from: it is accurate to 1/4000 of the
range of the scores."""

BATCH_ROWS = 1 << 16
"""Rows of a published list read at a time."""


@dataclass(frozen=True)
class ListSummary:
    """What the report shows of one published list, read a batch at a time: the score
    histogram (``counts`` in the bins ``edges``, ``SCORE_BINS`` of them over the scores'
    range, as ``np.histogram(scores, bins=SCORE_BINS)`` gives), the median score (from a
    histogram of ``MEDIAN_BINS`` bins over the same range, interpolated in its bin: within
    one such bin, 1/4000 of the range, of the exact median; None when the list is empty)
    and the times each item is recommended (``items`` and ``times``, most recommended
    first). Memory holds one row group of the two columns as the reader decodes it, one
    batch and the items, never the whole list."""

    rows: int
    counts: np.ndarray
    edges: np.ndarray
    median: float | None
    items: pa.Array
    times: np.ndarray


def summarize_list(paths: Sequence[Path], batch_size: int = BATCH_ROWS) -> ListSummary:
    """The summary of a published list from its part files, in two streamed reads: the
    range of the scores (the parquet statistics of each row group, or a read of the score
    column where a row group has none), then the histograms and the items' tallies. One
    part file is open at a time."""
    schema = pq.read_schema(paths[0])
    dtype = schema.field("score").type.to_pandas_dtype()
    low, high = _score_range(paths, batch_size)
    score_range = (dtype(low), dtype(high)) if low is not None else None
    counts = np.zeros(SCORE_BINS, dtype=np.int64)
    fine = np.zeros(MEDIAN_BINS, dtype=np.int64)
    tally = _Tally(schema.field("item_id").type, batch_size)
    rows = 0
    for batch in _batches(paths, ["item_id", "score"], batch_size):
        scores = batch.column("score").to_numpy(zero_copy_only=False)
        rows += len(scores)
        counts += np.histogram(scores, bins=SCORE_BINS, range=score_range)[0]
        fine += np.histogram(scores, bins=MEDIAN_BINS, range=score_range)[0]
        tally.add(batch.column("item_id"))
    edges = np.histogram_bin_edges(np.empty(0, dtype=dtype), bins=SCORE_BINS, range=score_range)
    fine_edges = np.histogram_bin_edges(np.empty(0, dtype=dtype), bins=MEDIAN_BINS, range=score_range)
    items, times = tally.result()
    return ListSummary(rows, counts, edges, _median(fine, fine_edges), items, times)


def _batches(paths: Sequence[Path], columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    for path in paths:
        with pq.ParquetFile(path) as source:
            yield from source.iter_batches(batch_size=batch_size, columns=columns)


def _score_range(paths: Sequence[Path], batch_size: int) -> tuple[float | None, float | None]:
    """The smallest and largest score (None, None for an empty list)."""
    lows, highs = [], []
    for path in paths:
        metadata = pq.read_metadata(path)
        column = metadata.schema.names.index("score")
        for group in range(metadata.num_row_groups):
            meta = metadata.row_group(group)
            if meta.num_rows == 0:
                continue
            stats = meta.column(column).statistics
            if stats is None or not stats.has_min_max:
                return _read_score_range(paths, batch_size)
            lows.append(stats.min)
            highs.append(stats.max)
    return (min(lows), max(highs)) if lows else (None, None)


def _read_score_range(paths: Sequence[Path], batch_size: int) -> tuple[float | None, float | None]:
    low = high = None
    for batch in _batches(paths, ["score"], batch_size):
        bounds = pc.min_max(batch.column("score"))
        if bounds["min"].is_valid:
            low = bounds["min"].as_py() if low is None else min(low, bounds["min"].as_py())
            high = bounds["max"].as_py() if high is None else max(high, bounds["max"].as_py())
    return low, high


def _median(counts: np.ndarray, edges: np.ndarray) -> float | None:
    """The median of values binned as ``counts`` in ``edges``: the mean of the middle one or
    two values, each placed in its bin by its rank among the bin's values."""
    total = int(counts.sum())
    if total == 0:
        return None
    cumulative = np.cumsum(counts)
    middle = [(total - 1) // 2, total // 2]
    bins = np.searchsorted(cumulative, middle, side="right")
    before = cumulative[bins] - counts[bins]
    within = (np.asarray(middle) - before + 0.5) / counts[bins]
    low, high = edges[bins].astype(np.float64), edges[bins + 1].astype(np.float64)
    return float(np.mean(low + within * (high - low)))


class _Tally:
    """Times each value of a column was seen, added a batch at a time: each batch's
    counts are kept as they come and merged when they outgrow the merged counts, so memory
    grows with the distinct values, not with the rows."""

    def __init__(self, kind: pa.DataType, batch_size: int) -> None:
        self.values = pa.array([], type=kind)
        self.times = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[pa.Array, np.ndarray]] = []
        self.pending_rows = 0
        self.batch_size = batch_size

    def add(self, column: pa.Array) -> None:
        counted = pc.value_counts(column)
        self.pending.append((counted.field("values"), counted.field("counts").to_numpy()))
        self.pending_rows += len(counted)
        if self.pending_rows > max(self.batch_size, len(self.values)):
            self._merge()

    def _merge(self) -> None:
        values = pa.concat_arrays([self.values, *(values for values, _ in self.pending)])
        times = np.concatenate([self.times, *(times for _, times in self.pending)])
        encoded = pc.dictionary_encode(values)
        summed = np.bincount(encoded.indices.to_numpy(), weights=times, minlength=len(encoded.dictionary))
        self.values, self.times = encoded.dictionary, summed.astype(np.int64)
        self.pending, self.pending_rows = [], 0

    def result(self) -> tuple[pa.Array, np.ndarray]:
        """The values and their times, most seen first (ties by value)."""
        if self.pending:
            self._merge()
        table = pa.table({"value": self.values, "times": self.times})
        order = pc.sort_indices(table, sort_keys=[("times", "descending"), ("value", "ascending")])
        return self.values.take(order), self.times[order.to_numpy()]


def read_summaries(run_dir: Path, manifest: dict[str, Any]) -> dict[str, ListSummary]:
    """The summary of each model's published recommendations whose part files are all there."""
    summaries = {}
    for name, model in manifest["models"].items():
        output = model.get("outputs", {}).get("recommendations")
        paths = [run_dir / part["path"] for part in output["parts"]] if output else []
        if paths and all(path.is_file() for path in paths):
            summaries[name] = summarize_list(paths)
    return summaries


def score_plots(manifest: dict[str, Any], summaries: dict[str, ListSummary]) -> str | None:
    """One small histogram per model: scores of different models are on different scales."""
    if not summaries:
        return None
    n = len(summaries)
    columns = min(n, 3)
    rows = -(-n // columns)
    figure = new_figure(3.1 * columns if n > 1 else 6, 2.5 * rows + 0.3)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes, (name, summary) in zip(grid, summaries.items(), strict=False):
        axes.hist(summary.edges[:-1], bins=summary.edges, weights=summary.counts, color="C0")
        if summary.median is not None:
            axes.axvline(summary.median, color="black", linewidth=0.8, linestyle="--")
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


def concentration(summaries: dict[str, ListSummary]) -> str | None:
    """Times each item is recommended, by rank, on log axes: models with empty lists have
    no curve (None when no model has one)."""
    shown = {name: summary for name, summary in summaries.items() if summary.rows}
    if not shown:
        return None
    figure = new_figure(6, 4.2)
    axes = figure.subplots()
    for name, summary in shown.items():
        values = summary.times
        axes.plot(np.arange(1, len(values) + 1), values, label=f"{name} ({len(values):,} items)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("item rank by times recommended")
    axes.set_ylabel("times recommended")
    axes.set_title("How concentrated the recommendations are")
    axes.legend(fontsize=7)
    return png(figure, "Times each item is recommended, by rank, per model")
