"""`recsys recommend` / `recsys similar` with --json keep the ids' types: integers stay
numbers, strings stay strings (also strings of digits), for users and items."""

from __future__ import annotations

import json

import pytest

from recsys.cli import main
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.stages.runner import run_local

CONFIG = {
    "seed": 2,
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 4},
    "similar_items": {"top_n": 4},
    "evaluate": {"sample_users": 20, "sample_items": 20},
}


@pytest.fixture(scope="module", params=["int", "str"])
def published(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"json-{request.param}")
    frame = generate_interactions(n_users=50, n_items=30, n_clusters=3, seed=6)
    if request.param == "str":  # strings of digits: they must not come back as numbers
        frame = frame.assign(user_id=frame["user_id"].astype(str), item_id=frame["item_id"].astype(str))
    frame.to_parquet(folder / "in.parquet", index=False)
    run_local(parse_config(CONFIG), folder / "in.parquet", folder / "out", "r1")
    return folder / "out", frame, int if request.param == "int" else str


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_recommend_keeps_the_types(published, capsys):
    out, frame, kind = published
    user = frame["user_id"].tolist()[0]
    answer = _json(capsys, ["recommend", "--user", str(user), "--output", str(out), "--json"])
    assert answer["user"] == user and type(answer["user"]) is kind
    assert answer["results"] and all(type(row["item_id"]) is kind for row in answer["results"])
    unknown = "999999"
    fallback = _json(
        capsys, ["recommend", "--user", unknown, "--fallback", "popular", "--output", str(out), "--json"]
    )
    assert fallback["user"] == kind(unknown) and type(fallback["user"]) is kind
    assert all(type(row["item_id"]) is kind for row in fallback["results"])


def test_similar_keeps_the_types(published, capsys):
    out, frame, kind = published
    item = frame["item_id"].tolist()[0]
    answer = _json(capsys, ["similar", "--item", str(item), "--output", str(out), "--json"])
    assert answer["item"] == item and type(answer["item"]) is kind
    assert answer["results"] and all(type(row["item_id"]) is kind for row in answer["results"])
