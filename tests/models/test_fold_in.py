"""Folding users in against a run's item factors, instead of retraining."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data import build_interactions, generate_interactions
from recsys.errors import ModelError
from recsys.index import ExactIndex
from recsys.models import Embeddings, fold_in_users, train

PARAMS = {"factors": 16, "iterations": 15, "regularization": 0.05}


def _top(user_vectors, item_factors, seen, n=10):
    ids, _ = ExactIndex(item_factors, "dot").search(user_vectors, n, exclude=seen)
    return ids


def _overlap(a, b):
    return np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)])


@pytest.fixture(scope="module")
def data():
    return build_interactions(generate_interactions(n_users=600, n_items=200, n_clusters=5, seed=3))


def test_fold_in_of_new_users_is_close_to_a_retrain(data):
    new = np.arange(0, 600, 30)  # 20 users training never sees
    keep = np.setdiff1d(np.arange(data.n_users), new)
    without = train("als", PARAMS, data.user_items[keep], seed=1)
    folded = fold_in_users("als", PARAMS, without, data.user_items[new])
    retrained = train("als", PARAMS, data.user_items, seed=1)
    seen = data.user_items[new]
    overlap = _overlap(
        _top(folded, without.item_factors, seen),
        _top(retrained.user_factors[new], retrained.item_factors, seen),
    )
    assert overlap >= 0.6, overlap
    random_lists = np.random.default_rng(0).integers(0, data.n_items, size=(len(new), 10))
    assert (
        overlap
        > _overlap(random_lists, _top(retrained.user_factors[new], retrained.item_factors, seen)) + 0.4
    )


def test_fold_in_of_known_users_reproduces_their_lists(data):
    model = train("als", PARAMS, data.user_items, seed=2)
    users = np.arange(0, 600, 20)
    folded = fold_in_users("als", PARAMS, model, data.user_items[users])
    seen = data.user_items[users]
    assert (
        _overlap(
            _top(folded, model.item_factors, seen), _top(model.user_factors[users], model.item_factors, seen)
        )
        >= 0.8
    )


def test_only_als_folds_in(data):
    with pytest.raises(ModelError, match="a bpr model cannot fold users in; model types that can: als, "):
        fold_in_users(
            "bpr",
            {},
            Embeddings(np.ones((1, 4), np.float32), np.ones((data.n_items, 4), np.float32)),
            data.user_items[:1],
        )


def test_a_spectral_model_folds_in_through_its_projection(data):
    """The model's extras reach its fold-in: a spectral model's known users fold in to the
    lists it gave them."""
    model = train("spectral", {"factors": 16}, data.user_items, seed=2)
    assert model.extras, "a spectral model keeps its projection"
    users = np.arange(0, 600, 20)
    folded = fold_in_users("spectral", {"factors": 16}, model, data.user_items[users])
    seen = data.user_items[users]
    assert (
        _overlap(
            _top(folded, model.item_factors, seen), _top(model.user_factors[users], model.item_factors, seen)
        )
        >= 0.9
    )
