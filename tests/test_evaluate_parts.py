"""Ranking figures of published lists evaluated part by part (one parquet file and one
contiguous range of user rows each) add up to the figures of all the lists at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import recsys
from recsys import storage
from recsys.config import PipelineConfig, parse_config
from recsys.data import generate_interactions
from recsys.evaluate import RankingSums
from recsys.manifest import ListOutput
from recsys.stages.evaluate import (
    ListsPart,
    RankingInputs,
    combine_pairs,
    part_ranking_sums,
    published_parts,
    ranking_part,
    ranking_sums_of_parts,
)
from recsys.storage import RunLayout

CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 16, "iterations": 5}}],
    "index": {"backend": "annoy", "n_trees": 10},
    "recommend": {"top_n": 10, "metric": "angular"},
    "similar_items": {"top_n": 5},
    "evaluate": {"k": [3, 10], "split": {"method": "random", "fraction": 0.2}, "refit": False},
}
N_USERS = 300


def published_run(root: Path) -> tuple[RunLayout, PipelineConfig, recsys.api.Run]:
    """A small published run whose held-out interactions stay in it (no refit)."""
    frame = generate_interactions(n_users=N_USERS, n_items=150, n_clusters=5, seed=2)
    run = recsys.run_pipeline(frame, CONFIG, output=root, run_id="r1")
    return RunLayout(root, "r1", staging=False), parse_config(CONFIG, "config"), run


def split_lists(run: RunLayout, model: str, bounds: list[tuple[int, int]]) -> list[ListsPart]:
    """The model's recommendations written again as one parquet file per range of user
    rows, each holding only the lists of its users."""
    users = storage.read_id_map(run.data_file("users"))
    table = pq.read_table(run.ranked(model, "recommendations"))
    rows = users.to_internal(table.column("user_id").to_numpy())
    folder = run.model_dir(model) / "parts"
    folder.mkdir(exist_ok=True)
    parts = []
    for number, (start, stop) in enumerate(bounds):
        path = folder / f"part-{number:05d}.parquet"
        pq.write_table(table.filter((rows >= start) & (rows < stop)), path)
        parts.append(ListsPart(path, start, stop))
    return parts


def evaluation_lists(opened: recsys.api.Run) -> ListOutput:
    """The published recommendations of the run's ``als``: its parts."""
    lists = opened.manifest.models["als"].outputs.recommendations
    assert lists is not None
    return lists


def assert_same_figures(found: RankingSums, expected: RankingSums) -> None:
    assert found.users == expected.users > 0
    got, want = found.metrics(digits=None), expected.metrics(digits=None)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return published_run(tmp_path_factory.mktemp("parts") / "out")


def test_the_published_parts_give_the_published_figures(published):
    run, config, opened = published
    evaluation = opened.manifest.models["als"].evaluation
    lists = evaluation_lists(opened)
    ranking, exact = ranking_sums_of_parts(run, config, "als", published_parts(run, lists))
    assert ranking.metrics() == evaluation.ranking.root
    assert exact.metrics() == evaluation.ranking_exact.root
    assert evaluation.ranking.users > 200


def test_parts_in_their_own_files_add_up_to_the_whole(published):
    run, config, opened = published
    whole = ranking_sums_of_parts(run, config, "als", published_parts(run, evaluation_lists(opened)))
    # uneven ranges, an empty one, a one-user one
    parts = split_lists(run, "als", [(0, 41), (41, 41), (41, 42), (42, 200), (200, N_USERS)])
    split = ranking_sums_of_parts(run, config, "als", parts)
    for found, expected in zip(split, whole, strict=True):
        assert_same_figures(found, expected)
    # each part reads only its own file: a part given another part's file finds no lists
    inputs = RankingInputs.read(run, config, "als")
    wrong, _ = part_ranking_sums(inputs, config, ListsPart(parts[0].path, 42, 200))
    right, _ = part_ranking_sums(inputs, config, parts[3])
    assert wrong.users == right.users > 0
    assert wrong.places.sum() == 0 < right.places.sum()


def test_a_worker_reads_the_run_itself_and_gets_the_same_sums(published):
    run, config, _ = published
    parts = split_lists(run, "als", [(0, 100), (100, 250), (250, N_USERS)])
    local = ranking_sums_of_parts(run, config, "als", parts)
    on_worker = combine_pairs(ranking_part(run, config, "als", part) for part in parts)
    for found, expected in zip(on_worker, local, strict=True):
        assert_same_figures(found, expected)
        np.testing.assert_array_equal(found.items, expected.items)


def test_parts_outside_the_users_are_refused(published):
    run, config, _ = published
    path = run.ranked("als", "recommendations")
    with pytest.raises(ValueError, match="outside the 300 users"):
        ranking_sums_of_parts(run, config, "als", [ListsPart(path, 250, N_USERS + 1)])
    with pytest.raises(ValueError, match="no parts"):
        ranking_sums_of_parts(run, config, "als", [])
