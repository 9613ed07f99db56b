"""Config: unknown keys named, defaults, per-metric search_k, stable hash."""

from __future__ import annotations

import pytest
import yaml

from recsys.config import load_config, parse_config
from recsys.errors import ConfigError

MODELS = [{"name": "als", "type": "als"}]


def test_default_config_loads():
    config = load_config("configs/default.yaml")
    assert [m.name for m in config.models] == ["als", "bpr", "lmf"]
    assert config.recommend.metric == "dot" and config.similar_items.metric == "angular"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"models": MODELS, "modles": []}, "unknown key 'modles'"),
        ({"models": MODELS, "index": {"n_tres": 3}}, "unknown key 'index.n_tres'"),
        ({"models": [{"name": "a", "type": "als", "param": {}}]}, "unknown key 'models.0.param'"),
        ({}, "missing key 'models'"),
        ({"models": [{"name": "a", "type": "svd"}]}, "models.0.type"),
        ({"models": [{"name": "../x", "type": "als"}]}, "model name '../x'"),
        ({"models": MODELS * 2}, "repeated: als"),
        ({"models": MODELS, "schedule": {"cron": "* *"}}, "cron must have 5 fields"),
        ({"models": MODELS, "recommend": {"top_n": 0}}, "recommend.top_n"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_invalid_configs_name_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, "x.yaml")


def test_search_k_forms():
    base = {"models": MODELS}
    default = parse_config(base).index
    assert default.search_k_for("dot") == 100 * default.n_trees
    assert default.search_k_for("angular") == -1
    assert parse_config({**base, "index": {"search_k": 777}}).index.search_k_for("angular") == 777
    mapped = parse_config({**base, "index": {"search_k": {"dot": 9000}}}).index
    assert mapped.search_k_for("dot") == 9000 and mapped.search_k_for("angular") == -1


def test_hash_ignores_key_order_and_sees_values(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump({"seed": 1, "models": MODELS}, sort_keys=True))
    b.write_text("models:\n  - {type: als, name: als}\nseed: 1\n")
    assert load_config(a).sha256() == load_config(b).sha256()
    assert parse_config({"seed": 2, "models": MODELS}).sha256() != load_config(a).sha256()


def test_select_models():
    config = load_config("configs/default.yaml")
    assert [m.name for m in config.select_models(["bpr"])] == ["bpr"]
    with pytest.raises(ConfigError, match="unknown model\\(s\\) svd"):
        config.select_models(["svd"])


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
