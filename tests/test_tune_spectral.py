"""``recsys tune`` of a spectral model: one SVD per search at the space's largest factors,
truncated and reweighted by every trial, with the trials' metrics and the best params of
a search that fits every trial."""

from __future__ import annotations

import pytest

from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout
from recsys.models import get_model_type
from recsys.models import spectral as spectral_module
from recsys.models.base import BLAS_THREADS
from recsys.tuning import Scorer, carve_validation, tune

SPECTRAL = get_model_type("spectral")


def _config(params: dict, space: dict | None = None, **tune) -> dict:
    space = space or {"factors": {"low": 8, "high": 40}}
    return {
        "models": [{"name": "s", "type": "spectral", "params": params}],
        "recommend": {"top_n": 10},
        "evaluate": {"k": [5, 10]},
        "tune": {"space": {"s": space}, **tune},
    }


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Matrices of a few hundred rows: one BLAS thread, as for models fitted side by side
    (two threads on busy cores make each small SVD many times slower)."""
    token = BLAS_THREADS.set(1)
    yield
    BLAS_THREADS.reset(token)


@pytest.fixture(scope="module")
def data():
    """(train CSR, validation CSR) of 300 users x 120 items."""
    config = parse_config(_config({}))
    table = clean_table(generate_interactions(n_users=300, n_items=120, n_clusters=6, seed=6))
    rows, held_out, _ = carve_validation(config, table)
    interactions = interactions_from_table(rows)
    validation, _ = map_holdout(interactions, held_out)
    return interactions.user_items, validation


@pytest.fixture
def svd_calls(monkeypatch):
    """The k of every SVD the spectral model runs."""
    calls: list[int] = []
    original = spectral_module.top_right_singular

    def counted(matrix, k, *args, **kwargs):
        calls.append(k)
        return original(matrix, k, *args, **kwargs)

    monkeypatch.setattr(spectral_module, "top_right_singular", counted)
    return calls


def test_one_svd_at_the_largest_factors_serves_every_trial(data, svd_calls):
    # oversampling 200: k + 200 >= 120 items, the exact SVD, so a trial equals a fit exactly
    config = parse_config(_config({"factors": 16, "oversampling": 200}))
    result = tune(config, "s", *data, trials=8)
    assert svd_calls == [40] and len(result.trials) == 9
    assert {t["state"] for t in result.trials} == {"complete"}
    assert len({t["params"]["factors"] for t in result.trials}) > 3
    scorer = Scorer(data[0], data[1], [5, 10], 2000, config.seed)
    for trial in result.trials:
        fitted = SPECTRAL.fit({**config.models[0].params, **trial["params"]}, data[0], config.seed)
        direct = scorer.score(fitted.user_factors, fitted.item_factors)
        assert trial["metrics"] == pytest.approx(direct, abs=1e-9), trial["params"]


def test_the_best_params_are_those_of_a_search_that_fits_every_trial(data, svd_calls, monkeypatch):
    config = parse_config(_config({"factors": 16, "oversampling": 200}, sampler="random"))
    cached = tune(config, "s", *data, trials=6)
    monkeypatch.setattr(type(SPECTRAL), "tuning_cache", lambda *args: None)
    fitted = tune(config, "s", *data, trials=6)
    assert len(svd_calls) == 1 + 7  # one for the cached search, one per trial of the other
    assert [t["params"] for t in cached.trials] == [t["params"] for t in fitted.trials]
    assert [t["value"] for t in cached.trials] == pytest.approx([t["value"] for t in fitted.trials], abs=1e-9)
    assert cached.best_params == fitted.best_params and cached.best["number"] == fitted.best["number"]


def test_trials_the_svd_cannot_serve_fit(data, svd_calls):
    # the config's factors 64 lie above the space: trial 0 fits; the rest share the SVD at 40
    result = tune(parse_config(_config({"factors": 64})), "s", *data, trials=3)
    assert sorted(svd_calls) == [40, 64] and len(result.trials) == 4
    svd_calls.clear()
    # a space that searches an SVD setting: every trial runs its own SVD
    space = {"factors": {"low": 8, "high": 40}, "power_iterations": [2, 4]}
    result = tune(parse_config(_config({"factors": 16}, space)), "s", *data, trials=3)
    assert len(svd_calls) == 4 and {t["state"] for t in result.trials} == {"complete"}
