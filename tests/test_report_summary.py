"""The report's summary of a published list, read a batch at a time, against the same
figures computed on the whole list in memory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys import storage
from recsys.data import generate_interactions
from recsys.reporting.run_plots import (
    MEDIAN_BINS,
    SCORE_BINS,
    concentration,
    read_summaries,
    score_plots,
    summarize_list,
)

CONFIG = {
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "popular", "type": "popular"},
    ],
    "index": {"auto_min_items": 0},
    "recommend": {"top_n": 10},
    "similar_items": {"top_n": 5},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import recsys

    root = tmp_path_factory.mktemp("lists") / "out"
    frame = generate_interactions(n_users=300, n_items=120, n_clusters=4, seed=5)
    return recsys.run_pipeline(frame, CONFIG, output=root)


def _parts(run, name: str) -> list:
    output = run.manifest.models[name].outputs.recommendations
    return [run.dir / path for path in output.files()]


def _assert_same(summary, other) -> None:
    assert summary.rows == other.rows
    np.testing.assert_array_equal(summary.counts, other.counts)
    np.testing.assert_array_equal(summary.edges, other.edges)
    assert summary.median == other.median
    assert summary.items.equals(other.items)
    np.testing.assert_array_equal(summary.times, other.times)


def test_summary_equals_the_whole_list_in_memory(run):
    summaries = read_summaries(run.dir, run.manifest.model_dump(mode="json", exclude_none=True))
    assert list(summaries) == ["als", "popular"]
    for name, summary in summaries.items():
        table = storage.read_ranked_table(_parts(run, name), columns=["item_id", "score"])
        scores = table.column("score").to_numpy()
        assert summary.rows == len(scores) == run.manifest.models[name].outputs.recommendations.rows

        counts, edges = np.histogram(scores, bins=SCORE_BINS)
        np.testing.assert_array_equal(summary.edges, edges)
        np.testing.assert_array_equal(summary.counts, counts)

        width = (float(scores.max()) - float(scores.min())) / MEDIAN_BINS
        assert abs(summary.median - float(np.median(scores))) <= width

        expected = table.column("item_id").to_pandas().value_counts()
        assert dict(zip(summary.items.to_pylist(), summary.times.tolist(), strict=True)) == expected.to_dict()
        assert list(summary.times) == sorted(summary.times, reverse=True)


def test_summary_reads_parts_a_batch_at_a_time(run, tmp_path):
    """The same list as three part files of small row groups, one of them without column
    statistics and with string item ids, read 7 rows at a time: the same summary."""
    whole = summarize_list(_parts(run, "als"))
    table = storage.read_ranked_table(_parts(run, "als"), columns=["item_id", "score"])
    thirds = np.array_split(np.arange(table.num_rows), 3)
    paths = []
    for i, rows in enumerate(thirds):
        paths.append(tmp_path / f"part-{i:05d}.parquet")
        pq.write_table(table.take(rows), paths[-1], row_group_size=50, write_statistics=i != 1)
    assert pq.ParquetFile(paths[0]).metadata.num_row_groups > 1
    assert len(thirds[0]) > 7 * 10
    _assert_same(summarize_list(paths, batch_size=7), whole)

    strings = table.set_column(0, "item_id", pc.cast(table.column("item_id"), pa.string()))
    pq.write_table(strings, tmp_path / "strings.parquet", write_statistics=False)
    by_string = summarize_list([tmp_path / "strings.parquet"], batch_size=7)
    np.testing.assert_array_equal(by_string.counts, whole.counts)
    assert by_string.median == whole.median
    assert dict(zip(by_string.items.to_pylist(), by_string.times.tolist(), strict=True)) == {
        str(item): times for item, times in zip(whole.items.to_pylist(), whole.times.tolist(), strict=True)
    }


def test_median_between_two_distant_middle_scores(tmp_path):
    """An even count whose middle two scores are far apart: the median is their mean."""
    path = tmp_path / "gap.parquet"
    scores = np.array([0, 0, 0, 1, 1, 1], dtype=np.float32)
    pq.write_table(pa.table({"item_id": np.arange(6), "score": scores}), path)
    summary = summarize_list([path], batch_size=2)
    assert summary.median == pytest.approx(0.5, abs=1 / MEDIAN_BINS)
    assert summary.counts[0] == summary.counts[-1] == 3 and summary.counts[1:-1].sum() == 0


def test_empty_list_is_summarized_and_plotted(tmp_path):
    path = tmp_path / "empty.parquet"
    schema = pa.schema([("item_id", pa.int64()), ("score", pa.float32())])
    pq.write_table(schema.empty_table(), path)
    summary = summarize_list([path])
    assert summary.rows == 0 and summary.median is None and len(summary.times) == 0
    expected = np.histogram_bin_edges(np.empty(0, np.float32), bins=SCORE_BINS)  # as plotting no scores
    np.testing.assert_array_equal(summary.edges, expected)
    manifest = {"models": {"empty": {"type": "als"}}}
    assert score_plots(manifest, {"empty": summary}).startswith("<")
    assert concentration({"empty": summary}) is None
