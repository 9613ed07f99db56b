"""implicit trainers: shapes, determinism, a known answer, parameter and input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError, ModelError
from recsys.models import model_param_names, train


def _checkerboard(n_users=60, n_items=40, seed=0):
    """Two groups: users of group g interact with half of the items of group g only."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(n_users) % 2
    item_group = np.arange(n_items) % 2
    mask = (user_group[:, None] == item_group[None, :]) & (rng.random((n_users, n_items)) < 0.5)
    return sp.csr_matrix(mask.astype(np.float32)), user_group, item_group


@pytest.mark.parametrize(
    "model_type, params",
    [
        ("als", {"factors": 8, "iterations": 10}),
        ("bpr", {"factors": 8, "iterations": 80, "num_threads": 1, "learning_rate": 0.05}),
        ("lmf", {"factors": 8, "iterations": 30, "num_threads": 1}),
    ],
)
def test_models_train_finite_factors_of_the_right_shape(model_type, params):
    matrix, _, _ = _checkerboard()
    emb = train(model_type, params, matrix, seed=1)
    assert emb.user_factors.shape[0] == 60 and emb.item_factors.shape[0] == 40
    assert emb.user_factors.dtype == np.float32 and emb.item_factors.dtype == np.float32
    assert np.isfinite(emb.user_factors).all() and np.isfinite(emb.item_factors).all()
    assert emb.dim >= 8


def test_als_knows_the_checkerboard_and_is_deterministic():
    matrix, user_group, item_group = _checkerboard()
    a = train("als", {"factors": 8, "iterations": 10}, matrix, seed=3)
    b = train("als", {"factors": 8, "iterations": 10}, matrix, seed=3)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    scores = a.user_factors @ a.item_factors.T
    scores[matrix.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :3]
    assert (item_group[top] == user_group[:, None]).mean() > 0.95


def test_unknown_parameter_is_named():
    matrix, _, _ = _checkerboard()
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) factorz for als"):
        train("als", {"factorz": 8}, matrix, seed=0)
    assert "factors" in model_param_names("bpr")


def test_empty_matrix_fails_fast():
    with pytest.raises(ModelError, match="no interactions"):
        train("als", {}, sp.csr_matrix((5, 5), dtype=np.float32), seed=0)


def test_no_openblas_thread_warning():
    matrix, _, _ = _checkerboard()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train("als", {"factors": 4, "iterations": 2}, matrix, seed=0)
    assert not [w for w in caught if "OpenBLAS" in str(w.message)]
