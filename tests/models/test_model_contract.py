"""The contract of every registered model type, and of a type registered from outside.

Parametrised over ``MODEL_TYPES``: a new type inherits every check. The checks themselves
are plain functions in ``contract.py``.
"""

from __future__ import annotations

import inspect

import pytest

from recsys.config import parse_config
from recsys.errors import ConfigError, ModelError
from recsys.models import MODEL_TYPES, get_model_type, model_param_names, train
from recsys.models._implicit import ImplicitModelType
from tests.models import contract
from tests.models.dummy_model import MeanModel, MeanParams

TRAINED = [name for name, model_type in MODEL_TYPES.items() if model_type.source == "interactions"]
READ = [name for name, model_type in MODEL_TYPES.items() if model_type.source == "vectors"]
IMPLICIT = [name for name, model_type in MODEL_TYPES.items() if isinstance(model_type, ImplicitModelType)]

MINIMAL = {"precomputed": {"items": "vectors.parquet"}, "blend": {"parts": {"als": 1.0}}}
"""Valid params of the types that require some."""


def _params(name: str) -> dict:
    """8 factors, one thread, the type's defaults otherwise."""
    return contract.contract_params(MODEL_TYPES[name])


@pytest.mark.parametrize("name", list(MODEL_TYPES))
def test_params_model(name):
    contract.check_params_model(MODEL_TYPES[name], MINIMAL.get(name, _params(name)))


@pytest.mark.parametrize("name", list(MODEL_TYPES))
def test_registry_key_is_the_types_name(name):
    assert MODEL_TYPES[name].name == name and get_model_type(name) is MODEL_TYPES[name]
    assert model_param_names(name) == list(MODEL_TYPES[name].params.model_fields)


@pytest.mark.parametrize("name", TRAINED)
def test_fit_gives_finite_float32_factors(name):
    contract.check_fit_gives_finite_float32_factors(MODEL_TYPES[name], _params(name))


@pytest.mark.parametrize("name", TRAINED)
def test_same_seed_same_factors(name):
    contract.check_same_seed_same_factors(MODEL_TYPES[name], _params(name))


@pytest.mark.parametrize("name", TRAINED)
def test_empty_matrix_is_refused(name):
    contract.check_empty_matrix_is_refused(MODEL_TYPES[name], _params(name))


@pytest.mark.parametrize("name", TRAINED)
def test_fold_in_gives_user_vectors_or_a_model_error(name):
    contract.check_fold_in(MODEL_TYPES[name], _params(name))


@pytest.mark.parametrize("name", TRAINED)
def test_known_answer_on_two_blocks(name):
    contract.check_known_answer(MODEL_TYPES[name], _params(name))


@pytest.mark.parametrize("name", READ)
def test_types_that_read_vectors_are_never_fitted(name):
    matrix, _, _ = contract.checkerboard()
    with pytest.raises(ModelError, match="model p: .*never trained"):
        MODEL_TYPES[name].fit(MINIMAL.get(name, {}), matrix, seed=0, name="p")


@pytest.mark.parametrize("name", IMPLICIT)
def test_implicit_params_are_implicits_constructor_arguments_with_its_defaults(name):
    model_type = MODEL_TYPES[name]
    signature = inspect.signature(model_type.model_class().__init__)
    expected = {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if key not in ("self", "dtype")
    }
    fields = model_type.params.model_fields
    assert {key: field.default for key, field in fields.items()} == expected
    assert all(field.description for field in fields.values()), "a docstring per field"


def test_unknown_model_type_names_the_registered_ones():
    with pytest.raises(ConfigError) as caught:
        get_model_type("svd")
    assert (
        str(caught.value)
        == "unknown model type 'svd': expected one of als, bpr, lmf, spectral, popular, precomputed, blend"
    )
    with pytest.raises(ConfigError, match="unknown model type 'svd'"):
        train("svd", {}, contract.checkerboard()[0], seed=0)


# ------------------------------------------------------- a type registered from outside


@pytest.fixture
def mean_type(monkeypatch):
    monkeypatch.setitem(MODEL_TYPES, "mean", MeanModel())
    return MODEL_TYPES["mean"]


def test_a_registered_type_passes_the_contract(mean_type):
    contract.check_all(mean_type, contract.contract_params(mean_type))
    # and trains through the public wrapper
    emb = train("mean", {"factors": 4}, contract.checkerboard()[0], seed=0)
    assert emb.dim == 4


def test_the_config_accepts_a_registered_type_with_its_params(mean_type):
    config = parse_config({"models": [{"name": "m", "type": "mean", "params": {"factors": 16}}]})
    assert config.models[0].typed_params == MeanParams(factors=16)
    assert config.models[0].params == {"factors": 16}
    with pytest.raises(ConfigError, match=r"unknown key 'models\.0\.params\.factorz' \(mean params: factors"):
        parse_config({"models": [{"name": "m", "type": "mean", "params": {"factorz": 16}}]}, "x.yaml")
    with pytest.raises(
        ConfigError, match="expected one of als, bpr, lmf, spectral, popular, precomputed, blend, mean$"
    ):
        parse_config({"models": [{"name": "m", "type": "mode"}]}, "x.yaml")


def test_tuning_reads_a_registered_types_space(mean_type):
    from recsys.tuning import model_space

    config = parse_config({"models": [{"name": "m", "type": "mean"}]})
    assert model_space(config, config.models[0]) == mean_type.space


def test_an_unregistered_type_is_refused():
    assert "mean" not in MODEL_TYPES
    with pytest.raises(ConfigError, match="models.0.type: unknown model type 'mean'"):
        parse_config({"models": [{"name": "m", "type": "mean"}]}, "x.yaml")


def test_a_registered_type_runs_through_the_whole_pipeline(mean_type, tmp_path):
    """Trained, indexed, scored, evaluated, published and answered from like any type."""
    import recsys
    from recsys.data import generate_interactions

    frame = generate_interactions(n_users=100, n_items=60, n_clusters=3, seed=4)
    config = {
        "models": [{"name": "co", "type": "mean", "params": {"factors": 8}}],
        "index": {"backend": "exact"},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
    }
    run = recsys.run_pipeline(frame, config, output=tmp_path / "out")
    entry = run.manifest.models["co"]
    assert entry.type == "mean" and entry.dim == 8
    lists = run.recommendations("co")
    assert len(lists) == 100 * 5 and set(lists["model"]) == {"co"}
    user = lists["user_id"].iloc[0]
    assert run.recommend([user])["item_id"].tolist() == lists[lists["user_id"] == user]["item_id"].tolist()
