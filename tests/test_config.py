"""Config: unknown keys named by their dotted path, defaults, per-metric search_k, stable hash."""

from __future__ import annotations

import re

import pytest
import yaml

from recsys.config import PipelineConfig, load_config, parse_config
from recsys.errors import ConfigError

MODELS = [{"name": "als", "type": "als"}]


def test_default_config_loads():
    config = load_config("configs/demo.yaml")
    assert isinstance(config, PipelineConfig)
    assert [m.name for m in config.models] == ["als", "bpr", "lmf", "spectral", "popular"]
    assert [m.type for m in config.models] == ["als", "bpr", "lmf", "spectral", "popular"]
    assert config.models[0].params["factors"] == 64
    assert config.recommend.metric == "dot" and config.similar_items.metric == "angular"
    assert config.index.backend == "auto" and config.index.settings("annoy").n_trees == 50
    assert config.index.settings("annoy").fixed("dot") is None  # tuned to evaluate.target_recall
    assert config.evaluate.target_recall == 0.95 and config.evaluate.split.method == "random"
    assert config.schedule.cron == "0 3 * * *"


def test_minimal_config_gets_documented_defaults():
    config = parse_config({"models": MODELS})
    assert config.seed == 42
    assert config.index.backend == "auto" and config.index.settings("annoy").n_trees == 50
    assert config.index.settings("hnswlib").M == 16 and config.index.settings("faiss").nprobe is None
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
        ({"models": MODELS, "index": {"backend": "nope"}}, "index.backend: unknown backend"),
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
    annoy = parse_config({"models": MODELS, "index": {"n_trees": 7}}).index.settings("annoy")
    assert annoy.search_k is None and annoy.n_trees == 7
    assert annoy.fixed("dot") is None and annoy.fixed("angular") is None


def test_search_k_int_serves_both_metrics():
    annoy = parse_config({"models": MODELS, "index": {"search_k": 777}}).index.settings("annoy")
    assert annoy.fixed("dot") == 777
    assert annoy.fixed("angular") == 777


def test_search_k_mapping_per_metric_with_default_for_the_other():
    both = parse_config({"models": MODELS, "index": {"search_k": {"dot": 9000, "angular": 300}}}).index
    assert both.settings("annoy").fixed("dot") == 9000 and both.settings("annoy").fixed("angular") == 300
    only_dot = parse_config({"models": MODELS, "index": {"search_k": {"dot": 9000}, "n_trees": 3}}).index
    assert (
        only_dot.settings("annoy").fixed("dot") == 9000
        and only_dot.settings("annoy").fixed("angular") is None
    )
    only_angular = parse_config(
        {"models": MODELS, "index": {"annoy": {"search_k": {"angular": 40}, "n_trees": 3}}}
    ).index
    assert only_angular.settings("annoy").fixed("dot") is None
    assert only_angular.settings("annoy").fixed("angular") == 40


def test_search_k_mapping_with_unknown_metric_is_refused():
    with pytest.raises(ConfigError, match="index.search_k"):
        parse_config({"models": MODELS, "index": {"search_k": {"cosine": 10}}}, "x.yaml")
    with pytest.raises(ConfigError, match="index.annoy.search_k"):
        parse_config({"models": MODELS, "index": {"annoy": {"search_k": {"cosine": 10}}}}, "x.yaml")


def test_top_level_annoy_keys_are_the_annoy_section():
    """``index.n_trees`` / ``index.search_k`` (earlier configs) are ``index.annoy``'s: the
    same config, the same hash; given both ways with different values, one line."""
    old = parse_config({"models": MODELS, "index": {"n_trees": 5, "search_k": {"dot": 10}}})
    new = parse_config({"models": MODELS, "index": {"annoy": {"n_trees": 5, "search_k": {"dot": 10}}}})
    both = parse_config({"models": MODELS, "index": {"n_trees": 5, "annoy": {"n_trees": 5}}})
    assert old == new and old.sha256() == new.sha256()
    assert both.index.settings("annoy").n_trees == 5
    assert "n_trees" not in old.to_dict()["index"] and old.to_dict()["index"]["annoy"]["n_trees"] == 5
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": MODELS, "index": {"n_trees": 5, "annoy": {"n_trees": 7}}}, "x.yaml")
    assert (
        str(caught.value)
        == "x.yaml: invalid config: index.n_trees: 5 here and 7 in index.annoy.n_trees: set one"
    )


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (
            {"anoy": {"n_trees": 5}},
            "unknown key 'index.anoy' (index keys: backend, auto_min_items, probe_seconds, seed, annoy, ",
        ),
        ({"annoy": {"n_tres": 5}}, "unknown key 'index.annoy.n_tres' (index.annoy keys: n_trees, search_k)"),
        ({"hnswlib": {"M": 1}}, "index.hnswlib.M: Input should be greater than or equal to 2, found 1"),
        ({"faiss": {"nprobe": "x"}}, "index.faiss.nprobe: Input should be a valid integer"),
        ({"annoy": [1]}, "index.annoy: Input should be a valid dictionary"),
    ],
)
def test_backend_sections_are_checked_by_their_backend(index, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": MODELS, "index": index}, "x.yaml")
    assert str(caught.value).startswith(f"x.yaml: invalid config: {message}")
    assert "\n" not in str(caught.value)


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
    config = load_config("configs/demo.yaml")
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


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("models:\n  - name: als\n    type: [als\n", ":4:1:", "expected ',' or ']'"),
        ("models:\n  - name: als\n  type: als\n", ":3:3:", "expected <block end>"),
        ("seed: 1\nindex: {}\nseed: 2\n", ":3:1:", "duplicate key 'seed'"),
        ("seed:\t1\n", ":1:6:", "'\\t' that cannot start any token"),
    ],
)
def test_yaml_error_names_the_file_line_and_column(tmp_path, text, where, problem):
    """One line as an editor reads it: path:line:column, never PyYAML's <unicode string>."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}{where} not valid YAML: "), message
    assert problem in message and "<unicode string>" not in message and "\n" not in message


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


# ------------------------------------------------------------------ typed model params


def _model(type_: str, params: dict) -> dict:
    return {"models": [{"name": "m", "type": type_, "params": params}]}


@pytest.mark.parametrize(
    "type_, params, message",
    [
        (
            "als",
            {"factorz": 64},
            r"unknown key 'models\.0\.params\.factorz' \(als params: alpha, calculate_training_loss, "
            r"factors, ",
        ),
        ("als", {"iterations": 0}, r"models\.0\.params\.iterations: .*greater than or equal to 1, found 0"),
        ("als", {"factors": -1}, r"models\.0\.params\.factors: .*greater than or equal to 1, found -1"),
        ("als", {"factors": "8"}, r"models\.0\.params\.factors: .*valid integer, found '8'"),
        ("als", {"factors": 1.5}, r"models\.0\.params\.factors: .*valid integer, found 1\.5"),
        ("als", {"regularization": float("nan")}, r"models\.0\.params\.regularization: .*finite number"),
        ("als", {"alpha": 0}, r"models\.0\.params\.alpha: .*greater than 0"),
        ("als", {"use_cg": "yes"}, r"models\.0\.params\.use_cg: .*valid boolean"),
        ("bpr", {"learning_rate": 0}, r"models\.0\.params\.learning_rate: .*greater than 0, found 0"),
        ("lmf", {"learning_rate": float("inf")}, r"models\.0\.params\.learning_rate: .*finite number"),
        ("lmf", {"neg_prop": 0}, r"models\.0\.params\.neg_prop: .*greater than or equal to 1"),
        (
            "bpr",
            {"random_state": -1},
            r"models\.0\.params\.random_state: .*greater than or equal to 0, found -1",
        ),
        (
            "als",
            {"random_state": 2**40},
            r"models\.0\.params\.random_state: .*less than or equal to 4294967295, found 1099511627776",
        ),
        ("bpr", {"alpha": 1.0}, r"unknown key 'models\.0\.params\.alpha' \(bpr params: "),
        ("precomputed", {}, r"missing key 'models\.0\.params\.items'"),
        ("precomputed", {"items": "v.parquet", "factors": 8}, r"unknown key 'models\.0\.params\.factors'"),
        (
            "svd",
            {},
            r"models\.0\.type: unknown model type 'svd': "
            r"expected one of als, bpr, lmf, spectral, popular, precomputed, blend$",
        ),
    ],
)
def test_model_params_are_checked_when_the_config_loads(type_, params, message):
    with pytest.raises(ConfigError, match=f"^x.yaml: invalid config: {message}") as caught:
        parse_config(_model(type_, params), "x.yaml")
    assert "\n" not in str(caught.value) and "Value error" not in str(caught.value)


def test_every_params_problem_is_named_on_one_line():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "models": [
                    {"name": "a", "type": "als", "params": {"factorz": 64, "iterations": 0}},
                    {"name": "b", "type": "bpr", "params": {"learning_rate": 0}},
                ],
                "index": {"n_tres": 3},
            },
            "x.yaml",
        )
    message = str(caught.value)
    assert "\n" not in message
    for part in ("models.0.params.factorz", "models.0.params.iterations", "models.1.params.learning_rate"):
        assert part in message
    assert "unknown key 'index.n_tres'" in message


def test_a_params_problem_in_a_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - {name: als, type: als, params: {factorz: 64}}\n")
    with pytest.raises(
        ConfigError, match=f"^{re.escape(str(path))}: invalid config: unknown key 'models.0.params.factorz'"
    ):
        load_config(path)


def test_valid_params_load_as_given_and_typed():
    from recsys.models.als import ALSParams
    from recsys.models.precomputed import PrecomputedParams

    params = {"factors": 8, "alpha": 2, "regularization": 0.05, "use_cg": False, "random_state": 2**32 - 1}
    model = parse_config(_model("als", params)).models[0]
    assert model.params == params and isinstance(model.params["alpha"], int)  # as the user wrote it
    typed = model.typed_params
    assert isinstance(typed, ALSParams)
    assert typed.factors == 8 and typed.alpha == 2.0 and isinstance(typed.alpha, float)
    assert typed.use_cg is False and typed.iterations == 15  # implicit's default
    assert parse_config(_model("lmf", {})).models[0].typed_params.factors == 30
    vectors = parse_config(_model("precomputed", {"items": "v.parquet", "column": "embedding"})).models[0]
    assert vectors.typed_params == PrecomputedParams(items="v.parquet", column="embedding")


def test_default_config_params_are_typed():
    config = load_config("configs/demo.yaml")
    names = [type(m.typed_params).__name__ for m in config.models]
    assert names == ["ALSParams", "BPRParams", "LMFParams", "SpectralParams", "PopularParams"]
    assert config.models[1].typed_params.num_threads == 1
