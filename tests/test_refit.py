"""With a held-out split the models are evaluated on it, then refit on all the input:
the published lists never miss what was held out and never contain an input
interaction. Without refit the run is an evaluation run and CURRENT stays."""

from __future__ import annotations

import pandas as pd
import pytest

import recsys
from recsys import storage
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.stages.runner import run_local

CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 4}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 10},
    "similar_items": {"top_n": 5},
    "evaluate": {"k": [5, 10], "split": {"method": "random", "fraction": 0.25}},
}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refit")
    frame = generate_interactions(n_users=150, n_items=80, n_clusters=4, seed=12)
    return frame, storage.write_interactions_table(frame, folder / "t.parquet"), folder


def test_published_lists_come_from_all_the_input(table):
    frame, path, folder = table
    manifest = run_local(parse_config(CONFIG), path, folder / "out", run_id="refit")
    pairs = frame[["user_id", "item_id"]].drop_duplicates()
    assert manifest.input.interactions == len(pairs)  # all of it, not 75%
    assert manifest.purpose == "production" and storage.current_run_id(folder / "out") == "refit"
    assert manifest.holdout.pairs_evaluated > 0 and manifest.data.holdout is None
    ranking = manifest.models["als"].evaluation.ranking
    assert ranking["users"] > 0 and 0 < ranking["recall@10"] <= 1
    run = recsys.open_run(folder / "out")
    lists = run.recommendations("als")
    leaked = lists.merge(pairs, on=["user_id", "item_id"])
    assert leaked.empty, f"{len(leaked)} published rows are input interactions"
    assert (
        lists.groupby("user_id").size().eq(10).all()
        and lists["user_id"].nunique() == frame["user_id"].nunique()
    )
    assert not [f for f in manifest.files if f.startswith("evaluation/")]
    assert not (folder / "out" / "runs" / "refit" / "evaluation").exists()


def test_without_refit_the_run_is_for_evaluation_only(table):
    frame, path, folder = table
    config = {**CONFIG, "evaluate": {**CONFIG["evaluate"], "refit": False}}
    refit = recsys.open_run(folder / "out", "refit").manifest
    manifest = run_local(parse_config(config), path, folder / "out", run_id="eval-only")
    assert manifest.purpose == "evaluation"
    assert storage.current_run_id(folder / "out") == "refit"  # CURRENT did not move
    assert manifest.input.interactions < refit.input.interactions  # trained on the split only
    # the same model measured on the same split: the same figures either way
    assert manifest.models["als"].evaluation.ranking_exact == refit.models["als"].evaluation.ranking_exact
    listed = {row["run_id"]: row for row in storage.list_runs(folder / "out")}
    assert listed["eval-only"]["status"] == "complete" and not listed["eval-only"]["current"]
    lists = recsys.open_run(folder / "out", "eval-only").recommendations("als")
    assert isinstance(lists, pd.DataFrame) and len(lists) > 0
