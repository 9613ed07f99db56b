"""The Python API over a published run (recsys.open_run), and recsys.run_pipeline,
Prefect-free: the answers equal the published lists, every file is verified, a bad
manifest is one line."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

import recsys
from recsys import storage
from recsys.data import generate_interactions
from recsys.errors import QueryError, RunError

CONFIG = {
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 16, "iterations": 5}},
        {"name": "bpr", "type": "bpr", "params": {"factors": 16, "iterations": 20, "num_threads": 1}},
    ],
    "index": {"backend": "annoy", "n_trees": 10},
    "recommend": {"top_n": 10},
    "similar_items": {"top_n": 5},
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookup") / "out"
    frame = generate_interactions(n_users=200, n_items=120, n_clusters=4, seed=1)
    run = recsys.run_pipeline(frame, CONFIG, output=root, run_id="r1")
    return root, frame, run


def test_run_pipeline_publishes_and_opens(published):
    root, frame, run = published
    assert storage.current_run_id(root) == "r1" and run.run_id == "r1"
    assert run.models == ["als", "bpr"]
    assert run.manifest.input.users == frame["user_id"].nunique()
    again = recsys.open_run(root)
    assert again.manifest == run.manifest


def test_recommend_equals_the_published_lists(published):
    root, frame, _ = published
    with recsys.open_run(root) as run:
        lists = run.recommendations("als")
        columns = ["user_id", "item_id", "rank", "score", "model", "run_id", "source"]
        assert list(lists.columns) == columns and set(lists["source"]) == {"model"}
        users = lists["user_id"].unique()[:5].tolist()
        answer = run.recommend(users, model="als")
    assert list(answer.columns) == columns and set(answer["source"]) == {"model"}
    assert answer["user_id"].tolist() == lists[lists["user_id"].isin(users)]["user_id"].tolist()
    expected = lists[lists["user_id"].isin(users)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        answer[["user_id", "item_id", "rank"]], expected[["user_id", "item_id", "rank"]]
    )
    seen = frame.groupby("user_id")["item_id"].apply(set)
    for user, items in answer.groupby("user_id")["item_id"]:
        assert not set(items) & seen[user]


def test_similar_by_item_and_vector(published):
    root, _, run = published
    item = run.interactions.items.ids[3]
    answer = run.similar(items=[item], n=4, model="bpr")
    assert len(answer) == 4 and item not in answer["similar_item_id"].tolist()
    vector = np.asarray(run.item_factors("bpr")[3])
    nearest = run.similar(vector=vector, n=1, model="bpr")
    assert nearest["similar_item_id"].tolist() == [item]
    with pytest.raises(QueryError, match="dimension"):
        run.similar(vector=np.ones(3), model="bpr")
    with pytest.raises(QueryError, match="unknown id"):
        run.similar(items=[10**9])


def test_fold_in_and_popular_fallback(published):
    _, frame, run = published
    user_rows = frame[frame["user_id"] == frame["user_id"].iloc[0]]
    new_user = user_rows.assign(user_id=10**9)
    folded = run.fold_in(new_user, n=10)
    assert set(folded["user_id"]) == {10**9} and not set(folded["item_id"]) & set(user_rows["item_id"])
    popular = run.popular(3)
    counts = frame.drop_duplicates(["user_id", "item_id"])["item_id"].value_counts()
    assert popular["score"].tolist() == sorted(popular["score"], reverse=True)
    assert popular["score"].iloc[0] == counts.iloc[0]
    fallback = run.recommend([10**9 + 1], n=3, fallback="popular")
    assert fallback["model"].unique().tolist() == ["popular"] and len(fallback) == 3
    assert fallback["source"].unique().tolist() == ["popular"]
    assert list(popular.columns) == ["item_id", "rank", "score", "model", "run_id", "source"]
    assert set(popular["run_id"]) == {run.run_id} and set(popular["source"]) == {"popular"}
    with pytest.raises(QueryError, match="unknown id"):
        run.recommend([10**9 + 1])


def _copy_run(published, tmp_path):
    import shutil

    root, _, _ = published
    shutil.copytree(root, tmp_path / "out")
    return tmp_path / "out", tmp_path / "out" / "runs" / "r1"


def test_a_flipped_bit_is_refused_not_ranked(published, tmp_path):
    root, run_dir = _copy_run(published, tmp_path)
    path = run_dir / "models" / "als" / "item_factors.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    run = recsys.open_run(root)
    with pytest.raises(RunError, match="checksum does not match"):
        run.recommend([run.interactions.users.ids[0]], model="als")


def test_paths_leaving_the_run_are_refused(published, tmp_path):
    root, run_dir = _copy_run(published, tmp_path)
    outside = tmp_path / "elsewhere.npy"
    target = run_dir / "models" / "als" / "item_factors.npy"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(outside, target)
    run = recsys.open_run(root)
    with pytest.raises(RunError, match="outside the run folder"):
        run.item_factors("als")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["models"]["als"]["factors"]["item"] = "../../../elsewhere.npy"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match="invalid manifest: .*must be relative to the run folder"):
        recsys.open_run(root)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["models"]["als"].pop("dim"), "models.als.dim: Field required"),
        (lambda m: m["models"]["als"].update(dims=3), "models.als.dims: unknown field"),
        (
            lambda m: m["models"]["als"]["indices"]["dot"].update(backend="nope"),
            "unknown index backend 'nope'",
        ),
        (lambda m: m["files"].pop("models/als/item_factors.npy"), "not listed with a checksum"),
        (lambda m: m.update(format="recsys-run/1"), "format 'recsys-run/1'"),
    ],
)
def test_a_manifest_that_does_not_validate_is_one_line(published, tmp_path, edit, message):
    root, run_dir = _copy_run(published, tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    edit(manifest)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=message) as caught:
        recsys.open_run(root)
    assert "\n" not in str(caught.value) and str(run_dir / "manifest.json") in str(caught.value)
