"""Hyper-parameter search: seeded draws, unknown params refused, the best by the metric,
and the tune flow writing a config the pipeline accepts."""

from __future__ import annotations

import json

import pytest
import yaml

from recsys.config import ModelConfig, load_config, parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout
from recsys.errors import ConfigError
from recsys.models import get_model_type
from recsys.tuning import carve_validation, model_space, tune

ALS = ModelConfig(name="als", type="als", params={"iterations": 3})


def _config(**tune) -> dict:
    return {
        "models": [{"name": "als", "type": "als", "params": {"iterations": 4, "factors": 8}}],
        "recommend": {"top_n": 10},
        "evaluate": {"k": [5, 10]},
        "tune": tune,
    }


@pytest.fixture(scope="module")
def data():
    """A validation split of a small synthetic table: (train CSR, validation CSR)."""
    config = parse_config(_config())
    table = clean_table(generate_interactions(n_users=150, n_items=60, n_clusters=4, seed=2))
    train, held_out, _ = carve_validation(config, table)
    interactions = interactions_from_table(train)
    validation, _ = map_holdout(interactions, held_out)
    return interactions.user_items, validation


def test_same_seed_same_draws_and_values(data):
    config = parse_config(_config(space={"als": {"iterations": {"low": 2, "high": 4}}}))
    first = tune(config, "als", *data, trials=4)
    again = tune(config, "als", *data, trials=4)
    assert [t["params"] for t in first.trials] == [t["params"] for t in again.trials]
    assert [t["value"] for t in first.trials] == [t["value"] for t in again.trials]
    other = tune(config.model_copy(update={"seed": 7}), "als", *data, trials=4)
    assert [t["params"] for t in other.trials][1:] != [t["params"] for t in first.trials][1:]
    random = tune(config, "als", *data, trials=4, sampler="random")
    assert [t["params"] for t in random.trials] == [
        t["params"] for t in tune(config, "als", *data, trials=4, sampler="random").trials
    ]


def test_the_best_is_the_complete_trial_with_the_highest_metric(data):
    config = parse_config(_config(space={"als": {"iterations": {"low": 2, "high": 4}}}))
    result = tune(config, "als", *data, trials=5, metric="recall@5")
    complete = [t for t in result.trials if t["state"] == "complete"]
    assert result.metric == "recall@5"
    assert result.best["value"] == max(t["value"] for t in complete) == result.best["metrics"]["recall@5"]
    assert result.best_params == {"iterations": 4, "factors": 8, **result.best["params"]}


def test_unknown_params_are_refused():
    with pytest.raises(ConfigError, match=r"tune: space\.als\.factorz: unknown parameter for als"):
        parse_config(_config(space={"als": {"factorz": [8]}}), "c.yaml")


def test_space_values_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"space\.als\.factors: 0 is refused: .*greater than or equal to 1"):
        parse_config(_config(space={"als": {"factors": [8, 0]}}), "c.yaml")
    vectors = ModelConfig(name="v", type="precomputed", params={"items": "v.parquet"})
    config = parse_config({"models": [vectors.model_dump()]})
    with pytest.raises(ConfigError, match="a precomputed model is not trained, so not tuned"):
        model_space(config, vectors)
    with pytest.raises(ConfigError, match=r"tune: space\.v: a precomputed model is not trained"):
        parse_config({"models": [vectors.model_dump()], "tune": {"space": {"v": {"factors": [8]}}}})


def test_default_space_comes_from_the_model_type():
    config = parse_config(_config())
    assert model_space(config, config.models[0]) == get_model_type("als").space


def test_tune_flow_writes_a_config_the_pipeline_accepts(prefect_harness, tmp_path):
    from flows.tune import tune_flow

    generate_interactions(n_users=200, n_items=80, n_clusters=4, seed=1).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_config(space={"als": {"iterations": [2, 3]}})))
    result = tune_flow(
        model="als",
        config_path=str(tmp_path / "c.yaml"),
        interactions=str(tmp_path / "t.parquet"),
        trials=2,
        output=str(tmp_path / "best.yaml"),
    )
    assert len(result["trials"]) == 3  # the config's params, then 2 drawn
    best = max((t for t in result["trials"] if t["value"] is not None), key=lambda t: t["value"])
    assert result["best_value"] == best["value"]
    tuned = load_config(tmp_path / "best.yaml")
    assert (
        tuned.models[0].params == {"iterations": 4, "factors": 8, **best["params"]} == result["best_params"]
    )
    assert (tmp_path / "best.yaml").read_text().startswith("# als: best of 3 tpe trials")
    trials = json.loads((tmp_path / "best.trials.json").read_text())
    assert trials["metric"] == "ndcg@10" and len(trials["trials"]) == 3
    assert "data:image/png;base64," in (tmp_path / "best.report.html").read_text()
    assert not list(tmp_path.glob(".tune-*"))
