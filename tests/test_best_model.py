"""The run's best model: the manifest names the model with the highest headline metric
on the held-out interactions, and the lookups answer from it when no model is named."""

from __future__ import annotations

import json

import pytest

import recsys
from recsys.data import generate_interactions
from recsys.stages.publish import best_model, headline_metric

CONFIG = {
    "models": [
        {"name": "popular", "type": "popular"},
        {"name": "spectral", "type": "spectral", "params": {"factors": 16}},
        {"name": "weak", "type": "als", "params": {"factors": 2, "iterations": 1, "regularization": 500.0}},
    ],
    "recommend": {"top_n": 10},
    "similar_items": {"top_n": 5},
    "evaluate": {"k": [5, 10], "split": {"method": "random", "fraction": 0.2}},
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("best") / "out"
    frame = generate_interactions(n_users=200, n_items=120, n_clusters=4, seed=1)
    run = recsys.run_pipeline(frame, CONFIG, output=root, run_id="r1")
    return root, frame, run


def test_the_manifest_names_the_model_best_on_the_held_out_part(published):
    _, _, run = published
    manifest = run.manifest
    figures = {name: entry.evaluation.ranking.get("ndcg@10") for name, entry in manifest.models.items()}
    assert manifest.best_model == max(figures, key=figures.get) == "spectral", figures
    assert json.loads(manifest.to_json())["best_model"] == "spectral"


def test_lookups_answer_from_the_best_model_when_none_is_named(published, capsys):
    root, frame, _ = published
    user = frame["user_id"].iloc[0]
    with recsys.open_run(root) as run:
        assert run.model()[0] == "spectral"
        default = run.recommend([user])
        assert default["model"].tolist() == run.recommend([user], model="spectral")["model"].tolist()
        assert default["item_id"].tolist() == run.recommend([user], model="spectral")["item_id"].tolist()
        assert set(default["model"]) == {"spectral"}
    from recsys.cli.parser import build_parser

    args = build_parser().parse_args(["recommend", "--user", str(user), "--output", str(root), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "spectral"


def test_no_ranking_figures_no_best_model(published):
    from recsys.config import parse_config

    _, _, run = published
    config = parse_config(CONFIG)
    assert headline_metric(config).k == 10
    unmeasured = {
        name: entry.model_copy(update={"evaluation": entry.evaluation.model_copy(update={"ranking": None})})
        for name, entry in run.manifest.models.items()
    }
    assert best_model(config, unmeasured) is None
    assert run.manifest.model_copy(update={"best_model": None}).model()[0] == "popular"  # the first
