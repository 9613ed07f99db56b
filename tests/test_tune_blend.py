"""``recsys tune`` of a blend: its parts made once, its weights searched, the tuned config
valid; ``--all``: every trained model, then the blends over the tuned parts."""

from __future__ import annotations

import pytest

from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout
from recsys.errors import ConfigError
from recsys.models import MODEL_TYPES
from recsys.tuning import carve_validation, tune, tuned_config


def _split(config):
    table = clean_table(generate_interactions(n_users=200, n_items=80, n_clusters=5, seed=3))
    rows, held_out, _ = carve_validation(config, table)
    interactions = interactions_from_table(rows)
    validation, _ = map_holdout(interactions, held_out)
    return interactions.user_items, validation


def _config(**tune) -> dict:
    return {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3, "num_threads": 1}},
            {"name": "spectral", "type": "spectral", "params": {"factors": 8}},
            {"name": "pop", "type": "popular"},
            {"name": "mix", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 2.0}}},
        ],
        "recommend": {"top_n": 10},
        "evaluate": {"k": [5, 10]},
        "tune": tune,
    }


def _count_fits(monkeypatch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in ("als", "spectral"):
        cls = type(MODEL_TYPES[name])
        fit = cls.fit

        def counted(self, params, *args, fit=fit, name=name, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return fit(self, params, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", counted)
    return counts


def test_a_blend_trains_each_part_once_and_searches_its_weights(monkeypatch):
    config = parse_config(_config())
    counts = _count_fits(monkeypatch)
    result = tune(config, "mix", *_split(config), trials=6)
    assert counts == {"als": 1, "spectral": 1}
    assert len(result.trials) == 7 and result.trials[0]["params"] == {"als": 1.0, "spectral": 2.0}
    assert set(result.space) == {"spectral"}  # the first part's weight is fixed at 1.0
    for trial in result.trials[1:]:
        assert trial["params"]["als"] == 1.0 and 0.05 <= trial["params"]["spectral"] <= 20
    assert result.best_params == {"parts": result.best["params"]}
    raw = tuned_config(config, "mix", result.best_params)
    tuned = parse_config(raw)
    assert tuned.models[3].params["parts"] == result.best["params"]
    assert max(t["value"] for t in result.trials if t["value"] is not None) == result.best["value"]


def test_a_blend_space_from_the_config():
    config = parse_config(_config(space={"mix": {"als": {"low": 0.5, "high": 2.0}, "spectral": [1.0, 3.0]}}))
    result = tune(config, "mix", *_split(config), trials=4, sampler="random")
    assert all(
        0.5 <= t["params"]["als"] <= 2 and t["params"]["spectral"] in (1.0, 2.0, 3.0) for t in result.trials
    )
    for space, problem in (({"pop": [1.0]}, "not a part"), ({"als": {"low": 0.0, "high": 2.0}}, "> 0")):
        with pytest.raises(ConfigError, match=problem):
            parse_config(_config(space={"mix": space}))


def test_all_tunes_every_trained_model_then_the_blend_over_the_tuned_parts(monkeypatch, tmp_path):
    from recsys.config import load_config
    from recsys.tuning import tune_all, write_all_outputs

    small = {"als": {"factors": [4, 8], "iterations": [2, 3]}, "spectral": {"factors": [4, 8]}}
    config = parse_config(_config(space=small))
    data = _split(config)
    counts = _count_fits(monkeypatch)
    results = tune_all(config, *data, trials=3, sampler="random")
    assert [r.model for r in results] == ["als", "spectral", "mix"]  # pop: nothing to search
    # each search's trials, then the blend's parts once more, at their tuned params
    assert counts["als"] == 4 + 1 and counts["spectral"] <= 4 + 1
    paths = write_all_outputs(results, config, tmp_path / "tuned.yaml")
    tuned = load_config(paths["config"])
    params = {m.name: m.params for m in tuned.models}
    for result in results:
        assert params[result.model] == result.best_params
    assert params["pop"] == config.models[2].params and tuned.evaluate == config.evaluate
    assert paths["config"].read_text().count("\n# ") + 1 == 3  # a header line per model
    # the budget: each model an equal share of what is left; trial 0 always runs
    quick = tune_all(config, *data, trials=50, timeout=0.01)
    assert [len(r.trials) for r in quick] == [1, 1, 1]


def test_the_command_takes_a_model_or_all_and_checks_every_model_before_prefect(tmp_path, capsys):
    import yaml

    from recsys.cli import main

    for argv in (["tune"], ["tune", "--all", "--model", "als"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    config = _config()
    config["models"] = [m for m in config["models"] if m["type"] in ("popular",)]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["tune", "--all", "--config", str(path), "--interactions", str(tmp_path / "x.parquet")]) == 2
    assert "no model of the config has params to search" in capsys.readouterr().err
