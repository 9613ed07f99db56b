"""The contract every model type keeps, as plain functions.

``test_model_contract.py`` runs them on every registered type (so a new type inherits
them) and on a dummy type registered by a test. Each takes the type and the params to fit
with; :func:`contract_params` gives small ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recsys.errors import ModelError
from recsys.models import Embeddings, ModelType
from recsys.models.base import Choice

N_USERS, N_ITEMS = 60, 40


def checkerboard(
    n_users: int = N_USERS, n_items: int = N_ITEMS, density: float = 0.5, seed: int = 0
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Two blocks: users of group g interact with a random half of the items of group g
    only. Returns the float32 CSR (n_users, n_items), user groups and item groups."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(n_users) % 2
    item_group = np.arange(n_items) % 2
    mask = (user_group[:, None] == item_group[None, :]) & (rng.random((n_users, n_items)) < density)
    return sp.csr_matrix(mask.astype(np.float32)), user_group, item_group


def contract_params(model_type: ModelType, **overrides: Any) -> dict[str, Any]:
    """Small params for a quick fit: 8 factors and one thread where the type has those
    fields (one thread makes the SGD models deterministic), the type's defaults otherwise."""
    fields = model_type.params.model_fields
    params = {key: value for key, value in (("factors", 8), ("num_threads", 1)) if key in fields}
    return {**params, **overrides}


def check_fit_gives_finite_float32_factors(model_type: ModelType, params: dict[str, Any]) -> Embeddings:
    matrix, _, _ = checkerboard()
    embeddings = model_type.fit(params, matrix, seed=1, name="contract", show_progress=False)
    assert isinstance(embeddings, Embeddings)
    assert embeddings.user_factors.dtype == np.float32 and embeddings.item_factors.dtype == np.float32
    assert embeddings.dim >= 1
    assert embeddings.user_factors.shape == (N_USERS, embeddings.dim)
    assert embeddings.item_factors.shape == (N_ITEMS, embeddings.dim)
    assert np.isfinite(embeddings.user_factors).all() and np.isfinite(embeddings.item_factors).all()
    assert np.abs(embeddings.item_factors).sum() > 0
    return embeddings


def check_same_seed_same_factors(model_type: ModelType, params: dict[str, Any]) -> None:
    matrix, _, _ = checkerboard()
    first = model_type.fit(params, matrix, seed=3, show_progress=False)
    second = model_type.fit(params, matrix, seed=3, show_progress=False)
    np.testing.assert_array_equal(first.user_factors, second.user_factors)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)


def check_empty_matrix_is_refused(model_type: ModelType, params: dict[str, Any]) -> None:
    for shape in [(5, 5), (0, 0), (3, 0)]:
        with pytest.raises(ModelError, match="model m: no interactions to train on"):
            model_type.fit(params, sp.csr_matrix(shape, dtype=np.float32), seed=0, name="m")


def _refused(model_type: ModelType, params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model_type.params.model_validate(params)
    assert [error["loc"][0] for error in caught.value.errors()] == [key], caught.value.errors()


def check_params_model(model_type: ModelType, minimal: dict[str, Any] | None = None) -> None:
    """The params model: its defaults are accepted (when nothing is required), ``minimal``
    (valid params, at least the required ones) is accepted and frozen, an unknown key and
    out-of-range values of the common fields are refused, and every value of the default
    tuning space is valid."""
    minimal = minimal or {}
    fields = model_type.params.model_fields
    typed = model_type.params.model_validate(minimal)
    if not any(field.is_required() for field in fields.values()):
        assert model_type.params.model_validate({}) == model_type.params()
    if fields:
        first = next(iter(fields))
        with pytest.raises(ValidationError, match="frozen"):
            setattr(typed, first, getattr(typed, first))
    _refused(model_type, {**minimal, "factorz": 8}, "factorz")
    for key, bad in [
        ("factors", 0),
        ("factors", -1),
        ("factors", "8"),
        ("factors", 1.5),
        ("factors", True),
        ("iterations", 0),
        ("learning_rate", math.nan),
        ("learning_rate", 0),
        ("alpha", math.nan),
        ("alpha", math.inf),
        ("alpha", "2"),
        ("regularization", math.nan),
        ("regularization", -0.1),
        ("random_state", -1),
        ("random_state", 2**40),
    ]:
        if key in fields:
            _refused(model_type, {**minimal, key: bad}, key)
    for key in ("learning_rate", "alpha", "regularization"):
        if key in fields:  # a YAML int is a valid float
            assert getattr(model_type.params.model_validate({**minimal, key: 2}), key) == 2.0
    for key, dimension in model_type.space.items():
        assert key in fields, f"tuning space of {model_type.name} names unknown param {key!r}"
        values = dimension.values if isinstance(dimension, Choice) else (dimension.low, dimension.high)
        for value in values:
            model_type.params.model_validate({**minimal, key: value})


def check_fold_in(model_type: ModelType, params: dict[str, Any]) -> None:
    """Either (users, dim) float32 user vectors or a ModelError, nothing else."""
    matrix, _, _ = checkerboard()
    embeddings = model_type.fit(params, matrix, seed=1, show_progress=False)
    try:
        users = model_type.fold_in(params, embeddings.item_factors, matrix[:7], embeddings.extras)
    except ModelError:
        return
    assert users.dtype == np.float32 and users.shape == (7, embeddings.dim)
    assert np.isfinite(users).all()


def check_known_answer(model_type: ModelType, params: dict[str, Any]) -> None:
    """On two disjoint blocks of users x items, a user's best unseen items are in the
    user's own block (random scores would put half of them in the other)."""
    matrix, user_group, item_group = checkerboard()
    embeddings = model_type.fit(params, matrix, seed=3, show_progress=False)
    scores = embeddings.user_factors @ embeddings.item_factors.T
    if not model_type.personalized:  # a baseline: the same order of items for every user
        assert (np.argsort(-scores, axis=1, kind="stable") == np.argsort(-scores[0], kind="stable")).all()
        return
    scores[matrix.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    in_block = item_group[top] == user_group[:, None]
    assert (item_group[top[:, 0]] == user_group).mean() > 0.95
    assert in_block.mean() > 0.9


def check_all(model_type: ModelType, params: dict[str, Any]) -> None:
    """The whole contract of a type trained on interactions."""
    check_params_model(model_type, params)
    check_fit_gives_finite_float32_factors(model_type, params)
    check_same_seed_same_factors(model_type, params)
    check_empty_matrix_is_refused(model_type, params)
    check_fold_in(model_type, params)
    check_known_answer(model_type, params)
