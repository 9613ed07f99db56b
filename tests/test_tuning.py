"""Hyper-parameter search: trial sets, scoring, and the tune flow writing a usable config."""

from __future__ import annotations

import itertools
import json

import pytest
import yaml

from recsys.config import ModelConfig, load_config
from recsys.data import generate_interactions
from recsys.errors import ConfigError
from recsys.tuning import best_trial, trial_params

ALS = ModelConfig(name="als", type="als", params={"iterations": 3})


def test_grid_and_random_trials():
    space = {"factors": [8, 16], "regularization": [0.01, 0.1]}
    grid = trial_params(ALS, space, "grid", 10, seed=0)
    assert len(grid) == 4 and all(p["iterations"] == 3 for p in grid)
    assert {(p["factors"], p["regularization"]) for p in grid} == {(8, 0.01), (8, 0.1), (16, 0.01), (16, 0.1)}
    first = trial_params(ALS, space, "random", 3, seed=5)
    assert first == trial_params(ALS, space, "random", 3, seed=5)
    assert len(first) == 3 and len({json.dumps(p, sort_keys=True) for p in first}) == 3
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) factorz"):
        trial_params(ALS, {"factorz": [1]}, "grid", 1, 0)


def test_default_space_comes_from_the_model_type():
    from recsys.models import get_model_type
    from recsys.tuning import DEFAULT_SPACES

    trials = trial_params(ALS, None, "grid", 1000, seed=0)
    space = get_model_type("als").space
    assert len(trials) == len(list(itertools.product(*space.values())))
    assert {p["alpha"] for p in trials} == set(space["alpha"])
    assert DEFAULT_SPACES["als"] == space and "bpr" in DEFAULT_SPACES


def test_space_values_are_checked_before_any_trial():
    with pytest.raises(ConfigError, match="tune space: invalid parameter\\(s\\) for als: factors: .*found 0"):
        trial_params(ALS, {"factors": [8, 0]}, "grid", 10, seed=0)
    vectors = ModelConfig(name="v", type="precomputed", params={"items": "v.parquet"})
    with pytest.raises(ConfigError, match="a precomputed model is not trained, so not tuned"):
        trial_params(vectors, None, "grid", 10, seed=0)


def test_best_trial_by_metric():
    results = [
        {"params": {"a": 1}, "metrics": {"ndcg@10": 0.2}},
        {"params": {"a": 2}, "metrics": {"ndcg@10": 0.3}},
    ]
    assert best_trial(results, "ndcg@10")["params"] == {"a": 2}
    with pytest.raises(ConfigError, match="not measured"):
        best_trial(results, "mrr@5")


def test_tune_flow_writes_a_config_the_pipeline_accepts(prefect_harness, tmp_path):
    from flows.tune import tune_flow

    generate_interactions(n_users=200, n_items=80, n_clusters=4, seed=1).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "als", "type": "als", "params": {"iterations": 3}}],
                "recommend": {"top_n": 10},
                "evaluate": {"k": [5, 10]},
            }
        )
    )
    result = tune_flow(
        model="als",
        config_path=str(tmp_path / "c.yaml"),
        interactions=str(tmp_path / "t.parquet"),
        trials=2,
        output=str(tmp_path / "best.yaml"),
    )
    assert len(result["trials"]) == 2
    best = max(result["trials"], key=lambda t: t["metrics"]["ndcg@10"])
    tuned = load_config(tmp_path / "best.yaml")
    assert tuned.models[0].params == best["params"]
    trials = json.loads((tmp_path / "best.trials.json").read_text())
    assert trials["metric"] == "ndcg@10" and len(trials["trials"]) == 2
    assert not list(tmp_path.glob(".tune-*"))
