"""The Optuna study of ``recsys tune``: the config's own params measured first, pruning
through the models' ``progress`` callback, failed trials recorded, the time budget."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout
from recsys.errors import ModelError
from recsys.models import MODEL_TYPES, train
from recsys.tuning import Scorer, carve_validation, checkpoints, tune
from tests.models.dummy_model import MeanModel


def _split(config, seed=6, users=300, items=120):
    table = clean_table(generate_interactions(n_users=users, n_items=items, n_clusters=6, seed=seed))
    rows, held_out, _ = carve_validation(config, table)
    interactions = interactions_from_table(rows)
    validation, _ = map_holdout(interactions, held_out)
    return interactions.user_items, validation


def _config(params: dict, model_type: str = "als", **tune) -> dict:
    return {
        "models": [{"name": "m", "type": model_type, "params": params}],
        "recommend": {"top_n": 10},
        "evaluate": {"k": [5, 10]},
        "tune": tune,
    }


def test_trial_0_is_the_configs_own_params_measured_as_given():
    config = parse_config(
        _config(
            {"factors": 12, "regularization": 5000.0, "iterations": 3},
            space={"m": {"factors": [16, 32], "iterations": {"low": 2, "high": 4}}},
        )
    )
    data = _split(config)
    result = tune(config, "m", *data, trials=2)
    baseline = result.trials[0]
    # factors 12 is not a choice and regularization 5000 is above 1000: both measured as given
    assert baseline["baseline"] and result.baseline is baseline
    assert baseline["params"] == {"factors": 12, "regularization": 5000.0, "alpha": 1.0, "iterations": 3}
    embeddings = train("als", config.models[0].params, data[0], config.seed, show_progress=False)
    direct = Scorer(data[0], data[1], [5, 10], 2000, 0).score(
        embeddings.user_factors, embeddings.item_factors
    )
    assert baseline["metrics"] == direct and baseline["value"] == direct["ndcg@10"]
    assert all(t["params"]["factors"] in (16, 32) for t in result.trials[1:])


def test_pruning_stops_trials_that_are_clearly_worse():
    # regularization up to 1e5 makes about half of the draws useless; 16 iterations each
    config = parse_config(
        _config(
            {"iterations": 16, "factors": 16, "num_threads": 1},
            sampler="random",
            space={
                "m": {
                    "regularization": {"low": 0.01, "high": 100000.0, "log": True},
                    "factors": [8, 16],
                    "iterations": [16],
                }
            },
        )
    )
    result = tune(config, "m", *_split(config), trials=20)
    states = [t["state"] for t in result.trials]
    assert states.count("pruned") >= 1 and states[:5] == ["complete"] * 5, states
    complete = [t for t in result.trials if t["state"] == "complete"]
    for trial in (t for t in result.trials if t["state"] == "pruned"):
        step = trial["pruned_at"]
        assert step in checkpoints(16) and trial["value"] is None and trial["metrics"] is None
        earlier = [t["intermediate"][step] for t in complete if t["number"] < trial["number"]]
        assert trial["intermediate"][step] < np.median(earlier)
    assert result.best["state"] == "complete"
    off = tune(config, "m", *_split(config), trials=20, pruning=False)
    assert {t["state"] for t in off.trials} == {"complete"}


def test_progress_reaches_every_iteration_and_what_it_raises_propagates():
    matrix = _split(parse_config(_config({})))[0]

    class Stop(Exception):
        pass

    for name in ("als", "bpr", "lmf"):
        seen = []

        def progress(done, user_factors, item_factors, seen=seen):
            assert user_factors.shape[0] == matrix.shape[0] and item_factors.shape[0] == matrix.shape[1]
            seen.append(done)

        MODEL_TYPES[name].fit(
            {"factors": 4, "iterations": 5, "num_threads": 1},
            matrix,
            0,
            show_progress=False,
            progress=progress,
        )
        assert seen == [1, 2, 3, 4, 5], name
        for error in (Stop("enough"), TypeError("a bug in the callback")):

            def failing(done, *_, error=error):
                if done == 2:
                    raise error

            with pytest.raises(type(error)) as caught:
                MODEL_TYPES[name].fit({"factors": 4, "iterations": 5}, matrix, 0, progress=failing)
            assert caught.value is error


def test_a_failed_trial_is_recorded_and_the_search_goes_on(monkeypatch):
    config = parse_config(_config({"iterations": 3, "factors": 8}, space={"m": {"factors": [8, 64]}}))
    als = type(MODEL_TYPES["als"])
    fit = als.fit

    def diverging(self, params, *args, **kwargs):
        if params["factors"] == 64:
            raise ModelError("model m: als training diverged")
        return fit(self, params, *args, **kwargs)

    monkeypatch.setattr(als, "fit", diverging)
    result = tune(config, "m", *_split(config), trials=6, pruning=False)
    failed = [t for t in result.trials if t["state"] == "failed"]
    assert failed and all(t["error"] == "model m: als training diverged" for t in failed)
    assert result.best["params"]["factors"] == 8 and result.counts()["failed"] == len(failed)


def test_the_time_budget_ends_the_search():
    config = parse_config(_config({"iterations": 3, "factors": 8}, timeout_seconds=0.001))
    result = tune(config, "m", *_split(config), trials=50)
    assert len(result.trials) == 1 and result.best is result.baseline  # trial 0 always runs


def test_a_type_without_iterations_reports_once(monkeypatch):
    monkeypatch.setitem(MODEL_TYPES, "mean", MeanModel())
    config = parse_config(_config({"factors": 8}, model_type="mean"))
    result = tune(config, "m", *_split(config), trials=3)
    assert [t["params"] for t in result.trials][0] == {"factors": 8}
    assert all(t["params"]["factors"] in (8, 16, 32) for t in result.trials)
    assert all(list(t["intermediate"]) == [1] for t in result.trials)
    assert {t["state"] for t in result.trials} == {"complete"}
