"""Config: unknown keys named by their dotted path, defaults, per-metric search_k, stable hash."""

from __future__ import annotations

import re

import pytest
import yaml

from recsys.config import PipelineConfig, load_config, parse_config
from recsys.errors import ConfigError

MODELS = [{"name": "als", "type": "als"}]


def test_default_config_loads():
    config = load_config("configs/default.yaml")
    assert isinstance(config, PipelineConfig)
    assert [m.name for m in config.models] == ["als", "bpr", "lmf"]
    assert [m.type for m in config.models] == ["als", "bpr", "lmf"]
    assert config.models[0].params["factors"] == 64
    assert config.recommend.metric == "dot" and config.similar_items.metric == "angular"
    assert config.index.backend == "auto" and config.index.n_trees == 50
    assert config.index.search_k_for("dot") is None  # tuned to evaluate.target_recall
    assert config.evaluate.target_recall == 0.95 and config.evaluate.split.method == "random"
    assert config.schedule.cron == "0 3 * * *"


def test_minimal_config_gets_documented_defaults():
    config = parse_config({"models": MODELS})
    assert config.seed == 42
    assert config.index.backend == "auto" and config.index.n_trees == 50
    assert config.recommend.top_n == 20 and config.recommend.metric == "dot"
    assert config.similar_items.metric == "angular"
    assert config.output.root == "data/outputs"
    assert config.models[0].params == {}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"models": MODELS, "modles": []}, "unknown key 'modles'"),
        ({"models": MODELS, "index": {"n_tres": 3}}, "unknown key 'index.n_tres'"),
        (
            {"models": MODELS, "evaluate": {"split": {"methd": "random"}}},
            "unknown key 'evaluate.split.methd'",
        ),
        ({"models": [{"name": "a", "type": "als", "param": {}}]}, "unknown key 'models.0.param'"),
        ({"models": MODELS, "schedule": {"crn": "0 3 * * *"}}, "unknown key 'schedule.crn'"),
    ],
)
def test_unknown_keys_are_named_with_their_dotted_path(raw, message):
    with pytest.raises(ConfigError, match=f"^x.yaml: invalid config: .*{message}"):
        parse_config(raw, "x.yaml")


def test_several_problems_are_all_reported():
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": MODELS, "foo": 1, "index": {"bar": 2}}, "x.yaml")
    assert "unknown key 'foo'" in str(caught.value)
    assert "unknown key 'index.bar'" in str(caught.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "missing key 'models'"),
        ({"seed": 1}, "missing key 'models'"),
        ({"models": []}, "models"),
        ({"models": [{"type": "als"}]}, "missing key 'models.0.name'"),
        ({"models": [{"name": "a", "type": "svd"}]}, "models.0.type"),
        ({"models": [{"name": "a", "type": "ALS"}]}, "models.0.type"),
        ({"models": MODELS * 2}, "repeated: als"),
        ({"models": [*MODELS, {"name": "b", "type": "bpr"}, {"name": "b", "type": "lmf"}]}, "repeated: b"),
        ({"models": MODELS, "schedule": {"cron": "* *"}}, "cron must have 5 fields, found 2"),
        ({"models": MODELS, "schedule": {"cron": "0 3 * * * *"}}, "cron must have 5 fields, found 6"),
        ({"models": MODELS, "schedule": {"cron": ""}}, "cron must have 5 fields, found 0"),
        ({"models": MODELS, "recommend": {"top_n": 0}}, "recommend.top_n"),
        ({"models": MODELS, "recommend": {"metric": "cosine"}}, "recommend.metric"),
        ({"models": MODELS, "index": {"n_trees": 0}}, "index.n_trees"),
        ({"models": MODELS, "index": {"backend": "faiss"}}, "index.backend"),
        ({"models": MODELS, "evaluate": {"k": 50}}, "evaluate.k 50 is above recommend.top_n 20"),
        ([1, 2], "expected a mapping at the top level, found list"),
        (None, "expected a mapping at the top level, found NoneType"),
    ],
)
def test_invalid_configs_name_the_problem(raw, message):
    with pytest.raises(ConfigError, match=f"^x.yaml: .*{message}"):
        parse_config(raw, "x.yaml")


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "a\\b", "/abs", "..", ".hidden", "", "-dash", "a b", "x" * 65, "é", "als\n", "a\x00"],
)
def test_model_names_that_are_unsafe_in_paths_are_refused(name):
    with pytest.raises(ConfigError, match="models.0.name: .*must be 1-64 characters"):
        parse_config({"models": [{"name": name, "type": "als"}]}, "x.yaml")


@pytest.mark.parametrize("name", ["als", "ALS_64", "bpr-v2", "m.1", "0", "x" * 64])
def test_safe_model_names_are_accepted(name):
    assert parse_config({"models": [{"name": name, "type": "als"}]}).models[0].name == name


def test_search_k_default_per_metric():
    index = parse_config({"models": MODELS, "index": {"n_trees": 7}}).index
    assert index.search_k is None
    assert index.search_k_for("dot") is None and index.search_k_for("angular") is None


def test_search_k_int_serves_both_metrics():
    index = parse_config({"models": MODELS, "index": {"search_k": 777}}).index
    assert index.search_k_for("dot") == 777
    assert index.search_k_for("angular") == 777


def test_search_k_mapping_per_metric_with_default_for_the_other():
    both = parse_config({"models": MODELS, "index": {"search_k": {"dot": 9000, "angular": 300}}}).index
    assert both.search_k_for("dot") == 9000 and both.search_k_for("angular") == 300
    only_dot = parse_config({"models": MODELS, "index": {"search_k": {"dot": 9000}, "n_trees": 3}}).index
    assert only_dot.search_k_for("dot") == 9000 and only_dot.search_k_for("angular") is None
    only_angular = parse_config(
        {"models": MODELS, "index": {"search_k": {"angular": 40}, "n_trees": 3}}
    ).index
    assert only_angular.search_k_for("dot") is None and only_angular.search_k_for("angular") == 40


def test_search_k_mapping_with_unknown_metric_is_refused():
    with pytest.raises(ConfigError, match="index.search_k"):
        parse_config({"models": MODELS, "index": {"search_k": {"cosine": 10}}}, "x.yaml")


def test_hash_ignores_key_order(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(
        yaml.safe_dump(
            {
                "seed": 1,
                "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
                "index": {"n_trees": 5, "search_k": {"dot": 10, "angular": 20}},
            },
            sort_keys=True,
        )
    )
    b.write_text(
        "index:\n  search_k: {angular: 20, dot: 10}\n  n_trees: 5\n"
        "models:\n  - {params: {iterations: 3, factors: 8}, type: als, name: als}\n"
        "seed: 1\n"
    )
    digest = load_config(a).sha256()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert load_config(b).sha256() == digest
    assert load_config(a).sha256() == digest  # stable across loads


def test_hash_sees_explicit_defaults_as_equal_and_values_as_different():
    base = {"seed": 1, "models": MODELS}
    digest = parse_config(base).sha256()
    assert parse_config({**base, "recommend": {"top_n": 20, "metric": "dot"}}).sha256() == digest
    assert parse_config({**base, "seed": 2}).sha256() != digest
    assert parse_config({**base, "recommend": {"top_n": 21}}).sha256() != digest
    assert (
        parse_config({**base, "models": [{"name": "als", "type": "als", "params": {"factors": 8}}]}).sha256()
        != digest
    )
    assert parse_config({**base, "models": [{"name": "als", "type": "bpr"}]}).sha256() != digest


def test_select_models():
    config = load_config("configs/default.yaml")
    assert [m.name for m in config.select_models(["bpr"])] == ["bpr"]
    # config order, not argument order
    assert [m.name for m in config.select_models(["lmf", "als"])] == ["als", "lmf"]
    with pytest.raises(ConfigError, match=r"unknown model\(s\) svd: the config defines als, bpr, lmf"):
        config.select_models(["svd"])
    with pytest.raises(ConfigError, match="nope"):
        config.select_models(["als", "nope"])


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "config file not found" in str(caught.value)


def test_yaml_syntax_error_names_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - {name: als, type: als\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert str(bad) in str(caught.value)
    assert "not valid YAML" in str(caught.value)


def test_config_that_is_a_folder_or_empty_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(empty))}: expected a mapping"):
        load_config(empty)


def test_invalid_values_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("models:\n  - {name: als, type: als}\nindex:\n  n_tres: 3\n")
    with pytest.raises(
        ConfigError, match=f"^{re.escape(str(path))}: invalid config: unknown key 'index.n_tres'"
    ):
        load_config(path)
