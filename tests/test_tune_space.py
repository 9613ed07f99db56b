"""Search spaces: every registered type's dimensions fit its params model; the config's
``tune`` section is validated when it loads, and its overrides are what trials draw from."""

from __future__ import annotations

import pytest

from recsys.config import TuneConfig, parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout
from recsys.errors import ConfigError
from recsys.models import MODEL_TYPES
from recsys.models.base import Choice, FloatRange, IntRange
from recsys.tuning import carve_validation, checkpoints, dimension_values, model_space, tune


@pytest.mark.parametrize("name", [n for n, t in MODEL_TYPES.items() if t.source == "interactions"])
def test_every_space_value_fits_the_params_model(name):
    model_type = MODEL_TYPES[name]
    fields = model_type.params.model_fields
    for param, dimension in model_type.space.items():
        assert param in fields, f"{name}: space names unknown param {param!r}"
        assert isinstance(dimension, IntRange | FloatRange | Choice), f"{name}.{param}: {dimension!r}"
        if not isinstance(dimension, Choice):
            assert dimension.low <= dimension.high and (not dimension.log or dimension.low > 0)
            ints = isinstance(dimension, IntRange)
            assert all(isinstance(v, int) == ints for v in (dimension.low, dimension.high))
        for value in dimension_values(dimension):
            model_type.params.model_validate({param: value})  # raises if out of bounds


def test_the_implicit_spaces_reach_the_settings_that_work():
    assert MODEL_TYPES["als"].space == {
        "factors": IntRange(16, 1024, log=True),
        "regularization": FloatRange(0.01, 1000, log=True),
        "alpha": FloatRange(1, 100, log=True),
        "iterations": IntRange(5, 30),
    }
    assert MODEL_TYPES["bpr"].space == {
        "factors": IntRange(16, 512, log=True),
        "learning_rate": FloatRange(0.001, 0.3, log=True),
        "regularization": FloatRange(1e-5, 0.1, log=True),
        "iterations": IntRange(20, 300, log=True),
    }
    assert MODEL_TYPES["lmf"].space == {
        "factors": IntRange(8, 256, log=True),
        "learning_rate": FloatRange(0.05, 3, log=True),
        "regularization": FloatRange(0.01, 10, log=True),
        "iterations": IntRange(10, 60),
    }


def _config(**tune) -> dict:
    return {
        "models": [
            {"name": "a", "type": "als", "params": {"iterations": 3, "factors": 8}},
            {"name": "v", "type": "precomputed", "params": {"items": "v.parquet"}},
        ],
        "recommend": {"top_n": 10},
        "evaluate": {"k": 10},
        "tune": tune,
    }


def test_tune_defaults():
    tune_config = TuneConfig()
    assert (tune_config.trials, tune_config.timeout_seconds, tune_config.metric) == (20, None, None)
    assert (tune_config.sampler, tune_config.pruning, tune_config.validation_fraction) == ("tpe", True, 0.2)
    assert tune_config.space == {}
    assert all(field.description for field in TuneConfig.model_fields.values()), "a docstring per field"


@pytest.mark.parametrize(
    "tune_section, message",
    [
        (
            {"space": {"b": {"factors": [8]}}},
            r"tune: space\.b: no model named 'b' \(the config defines a, v\)",
        ),
        ({"space": {"v": {"factors": [8]}}}, r"tune: space\.v: a precomputed model is not trained"),
        ({"space": {"a": {"factorz": [8]}}}, r"tune: space\.a\.factorz: unknown parameter for als"),
        ({"space": {"a": {"factors": {"low": 8.0, "high": 64}}}}, r"space\.a\.factors: 8\.0 is refused"),
        ({"space": {"a": {"factors": {"low": 0, "high": 64}}}}, r"space\.a\.factors: 0 is refused"),
        ({"space": {"a": {"alpha": [1.0, -2.0]}}}, r"space\.a\.alpha: -2\.0 is refused"),
        ({"space": {"a": {"factors": {"low": 64, "high": 8}}}}, "low 64 is above high 8"),
        ({"space": {"a": {"alpha": {"low": 0, "high": 1.0, "log": True}}}}, "a log range needs low > 0"),
        ({"space": {"a": {"factors": {"low": 8, "high": 9, "step": 1}}}}, r"unknown key 'tune\.space\.a"),
        ({"space": {"a": {"factors": 8}}}, r"expected \{low, high\[, log\]\} or a list of values"),
        ({"space": {"a": {"factors": []}}}, "at least 1 item"),
        ({"metric": "mrr@10"}, "metric must look like ndcg@10"),
        ({"trials": 0}, "tune.trials"),
        ({"timeout_seconds": 0}, "tune.timeout_seconds"),
        ({"validation_fraction": 1.0}, "tune.validation_fraction"),
        ({"sampler": "grid"}, "tune.sampler"),
        ({"trails": 3}, "unknown key 'tune.trails'"),
    ],
)
def test_bad_tune_sections_are_refused_when_the_config_loads(tune_section, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(**tune_section), "c.yaml")


def test_an_override_replaces_the_default_dimension_and_is_what_trials_draw():
    config = parse_config(
        _config(
            space={
                "a": {
                    "factors": [4, 6],
                    "regularization": {"low": 0.5, "high": 2.0},
                    "iterations": {"low": 2, "high": 3},
                    "use_cg": [True, False],
                }
            }
        )
    )
    space = model_space(config, config.models[0])
    assert space == {
        "factors": Choice((4, 6)),
        "regularization": FloatRange(0.5, 2.0),
        "alpha": MODEL_TYPES["als"].space["alpha"],  # not overridden: the type's own
        "iterations": IntRange(2, 3),
        "use_cg": Choice((True, False)),
    }
    assert config.to_dict()["tune"]["space"]["a"]["iterations"] == {"low": 2, "high": 3, "log": False}
    assert parse_config(config.to_dict()) == config  # the written config loads again

    table = clean_table(generate_interactions(n_users=120, n_items=50, n_clusters=4, seed=5))
    train, held_out, _ = carve_validation(config, table)
    interactions = interactions_from_table(train)
    validation, _ = map_holdout(interactions, held_out)
    result = tune(config, "a", interactions.user_items, validation, trials=6, pruning=False)
    assert result.trials[0]["params"]["factors"] == 8  # the config's own value, outside the choices
    for trial in result.trials[1:]:
        params = trial["params"]
        assert params["factors"] in (4, 6) and params["use_cg"] in (True, False)
        assert 0.5 <= params["regularization"] <= 2.0 and params["iterations"] in (2, 3)
        assert 1.0 <= params["alpha"] <= 100.0


def test_checkpoints_are_a_few_shared_powers_of_two():
    assert checkpoints(15) == [2, 4, 8]
    assert checkpoints(30) == [4, 8, 16]
    assert checkpoints(300) == [64, 128, 256]
    assert checkpoints(2) == [] and checkpoints(1) == []
    assert set(checkpoints(16)) & set(checkpoints(20)) == {4, 8}
