"""implicit trainers: shapes, determinism, a known answer, parameter and input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

from recsys.data import build_interactions, generate_interactions
from recsys.errors import ConfigError, ModelError
from recsys.models import Embeddings, model_param_names, train

N_USERS, N_ITEMS = 60, 40

PARAMS = {
    "als": {"factors": 8, "iterations": 10, "regularization": 0.05},
    "bpr": {"factors": 8, "iterations": 100, "num_threads": 1, "learning_rate": 0.05},
    "lmf": {"factors": 8, "iterations": 30, "num_threads": 1},
}


def _checkerboard(n_users: int = N_USERS, n_items: int = N_ITEMS, density: float = 0.5, seed: int = 0):
    """Two blocks: users of group g interact with a random half of the items of group g only."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(n_users) % 2
    item_group = np.arange(n_items) % 2
    mask = (user_group[:, None] == item_group[None, :]) & (rng.random((n_users, n_items)) < density)
    return sp.csr_matrix(mask.astype(np.float32)), user_group, item_group


@pytest.fixture(scope="module")
def checkerboard():
    return _checkerboard()


@pytest.mark.parametrize("model_type", ["als", "bpr", "lmf"])
def test_models_train_finite_float32_factors_of_the_right_shape(model_type, checkerboard):
    matrix, _, _ = checkerboard
    emb = train(model_type, PARAMS[model_type], matrix, seed=1, show_progress=False)
    assert isinstance(emb, Embeddings)
    assert emb.user_factors.dtype == np.float32 and emb.item_factors.dtype == np.float32
    assert emb.user_factors.shape == (N_USERS, emb.dim)
    assert emb.item_factors.shape == (N_ITEMS, emb.dim)
    # implicit may add bias columns (LMF, BPR), never fewer than asked
    assert emb.dim >= 8
    assert np.isfinite(emb.user_factors).all() and np.isfinite(emb.item_factors).all()
    assert emb.user_factors.flags.c_contiguous and emb.item_factors.flags.c_contiguous
    assert np.abs(emb.item_factors).sum() > 0


@pytest.mark.parametrize("model_type", ["als", "bpr", "lmf"])
def test_models_train_on_the_synthetic_sample(model_type):
    data = build_interactions(generate_interactions(n_users=80, n_items=50, n_clusters=3, seed=1))
    params = {**PARAMS[model_type], "iterations": 3}
    emb = train(model_type, params, data.user_items, seed=0, show_progress=False)
    assert emb.user_factors.shape[0] == data.n_users and emb.item_factors.shape[0] == data.n_items
    assert np.isfinite(emb.user_factors).all() and np.isfinite(emb.item_factors).all()


def test_als_same_seed_same_factors(checkerboard):
    matrix, _, _ = checkerboard
    a = train("als", PARAMS["als"], matrix, seed=3, show_progress=False)
    b = train("als", PARAMS["als"], matrix, seed=3, show_progress=False)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    c = train("als", PARAMS["als"], matrix, seed=4, show_progress=False)
    assert not np.array_equal(a.item_factors, c.item_factors)


def test_random_state_in_params_overrides_the_seed(checkerboard):
    matrix, _, _ = checkerboard
    params = {**PARAMS["als"], "iterations": 2}
    a = train("als", {**params, "random_state": 11}, matrix, seed=1, show_progress=False)
    b = train("als", params, matrix, seed=11, show_progress=False)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


def _top_unseen(emb: Embeddings, matrix: sp.csr_matrix, k: int) -> np.ndarray:
    scores = emb.user_factors @ emb.item_factors.T
    scores[matrix.nonzero()] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("model_type", ["als", "bpr", "lmf"])
def test_top_unseen_items_come_from_the_users_own_block(model_type, checkerboard):
    matrix, user_group, item_group = checkerboard
    emb = train(model_type, PARAMS[model_type], matrix, seed=3, show_progress=False)
    top = _top_unseen(emb, matrix, k=3)
    in_block = item_group[top] == user_group[:, None]
    if model_type == "als":
        assert in_block.all()
    else:  # stochastic gradient models: a near-perfect answer
        assert in_block.mean() > 0.95
    # the best unseen item of every user is in the user's block
    assert (item_group[top[:, 0]] == user_group).mean() > 0.95


def test_unknown_parameter_is_named(checkerboard):
    matrix, _, _ = checkerboard
    with pytest.raises(ConfigError, match=r"model m1: unknown parameter\(s\) factorz for als") as caught:
        train("als", {"factorz": 8}, matrix, seed=0, name="m1")
    assert "expected some of: " in str(caught.value) and "factors" in str(caught.value)


def test_several_unknown_parameters_are_all_named(checkerboard):
    matrix, _, _ = checkerboard
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) alpah, lr for bpr"):
        train("bpr", {"lr": 0.1, "alpah": 1.0, "factors": 4}, matrix, seed=0)


def test_bad_parameter_value_is_a_domain_error_not_a_raw_type_error(checkerboard):
    matrix, _, _ = checkerboard
    with pytest.raises(
        ModelError, match="model m2: invalid parameter\\(s\\) for als: factors: .*integer, found 'eight'"
    ) as caught:
        train("als", {"factors": "eight"}, matrix, seed=0, name="m2", show_progress=False)
    # refused before implicit sees it, as the config error it is
    assert isinstance(caught.value, ConfigError)


def test_unknown_model_type(checkerboard):
    matrix, _, _ = checkerboard
    with pytest.raises(ConfigError, match="unknown model type 'svd'"):
        train("svd", {}, matrix, seed=0)


def test_model_param_names():
    for model_type in ("als", "bpr", "lmf"):
        names = model_param_names(model_type)
        assert "factors" in names and "random_state" in names
        assert "self" not in names and "dtype" not in names
    assert "alpha" in model_param_names("als")
    assert "learning_rate" in model_param_names("bpr")


@pytest.mark.parametrize("shape", [(5, 5), (0, 0), (3, 0)])
def test_empty_matrix_fails_fast(shape):
    with pytest.raises(ModelError, match="model m: no interactions to train on"):
        train("als", {}, sp.csr_matrix(shape, dtype=np.float32), seed=0, name="m")


def _openblas_warnings(caught) -> list:
    return [w for w in caught if issubclass(w.category, RuntimeWarning) and "OpenBLAS" in str(w.message)]


def test_als_fit_does_not_warn_about_openblas_threads(checkerboard, monkeypatch):
    import implicit.utils

    matrix, _, _ = checkerboard
    # implicit warns once per process: reset that flag (the check itself runs unchanged)
    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)
    assert any(lib["internal_api"] == "openblas" for lib in threadpool_info()), "implicit warns for OpenBLAS"
    # give BLAS two threads (the tests pin it to one through the environment): the
    # warning only fires then, so this is what train must guard against
    with threadpool_limits(limits=2, user_api="blas"):
        from implicit.cpu.als import AlternatingLeastSquares

        with warnings.catch_warnings(record=True) as control:
            warnings.simplefilter("always")
            AlternatingLeastSquares(factors=2)
        assert _openblas_warnings(control), "control: implicit should warn with 2 BLAS threads"
        monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train("als", {"factors": 4, "iterations": 2}, matrix, seed=0, show_progress=False)
        assert not _openblas_warnings(caught), [str(w.message) for w in caught]
        # the limit is restored after the fit
        assert max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas") == 2


def test_a_diverging_learning_rate_fails_the_fit_with_one_line():
    """LMF at learning_rate 1e9 ends with finite factors of norm ~1e9: refused, not published."""
    frame = generate_interactions(n_users=300, n_items=200, n_clusters=4, seed=5)
    data = build_interactions(frame)
    with pytest.raises(ModelError) as caught:
        train("lmf", {"factors": 16, "learning_rate": 1e9}, data.user_items, seed=1, name="lmf")
    message = str(caught.value)
    assert "lmf training diverged" in message and "longer than 1e+06" in message and "\n" not in message


def test_factor_norms_past_the_bound_are_refused_and_below_it_kept():
    from recsys.models._implicit import MAX_FACTOR_NORM, checked_embeddings

    users = np.ones((3, 4), dtype=np.float32)
    items = np.ones((5, 4), dtype=np.float32) * (MAX_FACTOR_NORM / 2 / 2)  # norm MAX / 2
    assert checked_embeddings(users, items, (3, 5), "m", MAX_FACTOR_NORM).item_factors.shape == (5, 4)
    items[2] *= 4  # norm 2 * MAX
    with pytest.raises(ModelError, match="1 item vector\\(s\\) have a norm past 1e\\+06"):
        checked_embeddings(users, items, (3, 5), "m", MAX_FACTOR_NORM)
    # closed-form fits (spectral) give no bound: long vectors are kept
    assert checked_embeddings(users, items, (3, 5), "m").item_factors.shape == (5, 4)
