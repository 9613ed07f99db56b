"""The spectral model against a dense reference: GF-CF's ideal low-pass filter, with
its spectral weight, on small matrices; the randomized SVD against the exact one; a
larger SVD truncated against a fit; and exact fold-in."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ModelError
from recsys.models import get_model_type
from recsys.models.base import BLAS_THREADS
from recsys.models.spectral import FOLD_IN, SpectralBasis

SPECTRAL = get_model_type("spectral")


def _matrix(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density) * rng.integers(1, 4, (n_users, n_items))
    dense[:, dense.sum(axis=0) == 0] = 0
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] += 1  # every user has one
    dense[rng.integers(0, n_users, n_items), np.arange(n_items)] += 1  # every item has one
    return sp.csr_matrix(dense.astype(np.float32))


def _reference(matrix: sp.csr_matrix, k: int, power: float, exponent: float) -> np.ndarray:
    """Scores r_u D_i^-1/2 V_k S_k^p V_k^T D_i^e from a dense, exact SVD."""
    dense = matrix.toarray().astype(np.float64)
    d_u, d_i = dense.sum(axis=1), dense.sum(axis=0)
    normalised = dense / np.sqrt(d_u)[:, None] / np.sqrt(d_i)[None, :]
    _, values, vt = np.linalg.svd(normalised, full_matrices=False)
    v, s = vt[:k].T, values[:k]
    return (dense / np.sqrt(d_i)[None, :]) @ v @ np.diag(s**power) @ v.T @ np.diag(d_i**exponent)


@pytest.mark.parametrize(
    ("k", "power", "exponent"), [(5, 0.0, 0.5), (8, 1.0, 0.5), (12, 2.0, 0.0), (19, 0.5, 1.0)]
)
def test_scores_equal_the_dense_filter(k, power, exponent):
    matrix = _matrix(30, 20, 0.2, seed=k)
    params = {"factors": k, "spectral_power": power, "item_exponent": exponent, "oversampling": 100}
    embeddings = SPECTRAL.fit(params, matrix, seed=0)  # k + oversampling >= 20: the exact SVD
    assert embeddings.dim == k
    scores = embeddings.user_factors.astype(np.float64) @ embeddings.item_factors.T
    np.testing.assert_allclose(scores, _reference(matrix, k, power, exponent), rtol=1e-4, atol=1e-5)


def test_gf_cf_ideal_filter_with_power_0():
    """spectral_power 0, item_exponent 0.5: r_u D^-1/2 V V^T D^1/2, GF-CF's ideal low-pass."""
    matrix = _matrix(25, 18, 0.25, seed=4)
    params = {"factors": 6, "spectral_power": 0.0, "item_exponent": 0.5, "oversampling": 100}
    embeddings = SPECTRAL.fit(params, matrix, seed=0)
    dense = matrix.toarray().astype(np.float64)
    d_i = dense.sum(axis=0)
    normalised = dense / np.sqrt(dense.sum(axis=1))[:, None] / np.sqrt(d_i)[None, :]
    v = np.linalg.svd(normalised)[2][:6].T
    ideal = dense @ np.diag(d_i**-0.5) @ v @ v.T @ np.diag(d_i**0.5)
    np.testing.assert_allclose(
        embeddings.user_factors @ embeddings.item_factors.T, ideal, rtol=1e-4, atol=1e-5
    )


def test_randomized_svd_matches_the_exact_one():
    """On data with taste clusters (a spectral gap after the clusters, as real data has a
    decaying spectrum) the randomized SVD finds the same filter as the exact one."""
    from recsys.data import build_interactions, generate_interactions

    matrix = build_interactions(
        generate_interactions(n_users=400, n_items=300, n_clusters=8, seed=7)
    ).user_items
    params = {"factors": 8, "spectral_power": 1.0, "oversampling": 10, "power_iterations": 4}
    embeddings = SPECTRAL.fit(params, matrix, seed=3)
    scores = embeddings.user_factors.astype(np.float64) @ embeddings.item_factors.T
    reference = _reference(matrix, 8, 1.0, 0.5)
    assert np.abs(scores - reference).max() <= 1e-3 * np.abs(reference).max()
    again = SPECTRAL.fit(params, matrix, seed=3)  # seeded: the same factors
    np.testing.assert_array_equal(again.item_factors, embeddings.item_factors)


def test_fold_in_is_exact():
    matrix = _matrix(60, 40, 0.15, seed=2)
    embeddings = SPECTRAL.fit({"factors": 10}, matrix, seed=0)
    folded = SPECTRAL.fold_in({"factors": 10}, embeddings.item_factors, matrix[:9], embeddings.extras)
    np.testing.assert_allclose(folded, embeddings.user_factors[:9], rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="fold-in projection"):
        SPECTRAL.fold_in({"factors": 10}, embeddings.item_factors, matrix[:9], {})
    assert embeddings.extras[FOLD_IN].shape == (40, 10)


def test_more_factors_than_the_matrix_has_is_one_line():
    with pytest.raises(ModelError, match="factors 50 is more than the 18 singular vectors"):
        SPECTRAL.fit({"factors": 50}, _matrix(25, 18, 0.2, seed=1), seed=0, name="s")


def _scores(embeddings) -> np.ndarray:
    return embeddings.user_factors.astype(np.float64) @ embeddings.item_factors.T


def test_a_larger_svd_truncated_gives_the_scores_of_a_fit():
    """Where the SVD is exact (k + oversampling >= 20 items), the basis at 19 truncated to
    k gives the embeddings a fit at k gives, extras included."""
    matrix = _matrix(30, 20, 0.2, seed=5)
    basis = SpectralBasis.compute(matrix, 19, (100, 4, 0))
    for k, power, exponent in [(5, 0.0, 0.5), (8, 1.0, 0.5), (12, 2.0, 0.0), (19, 0.5, 1.0)]:
        params = {"factors": k, "spectral_power": power, "item_exponent": exponent, "oversampling": 100}
        fitted = SPECTRAL.fit(params, matrix, seed=0)
        truncated = basis.embeddings(k, power, exponent)
        np.testing.assert_allclose(_scores(truncated), _scores(fitted), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(truncated.extras[FOLD_IN], fitted.extras[FOLD_IN], rtol=1e-5, atol=1e-6)
        assert SPECTRAL.fit_cached(basis, params, 0, "s") is not None
    assert SPECTRAL.fit_cached(basis, {"factors": 5, "oversampling": 10}, 0, "s") is None  # other SVD
    with pytest.raises(ModelError, match="factors 20 is more than the 19 of this SVD"):
        basis.embeddings(20, 1.0, 0.5)


@pytest.fixture
def one_blas_thread():
    """Small dense algebra: one BLAS thread (two on busy cores make it many times slower)."""
    token = BLAS_THREADS.set(1)
    yield
    BLAS_THREADS.reset(token)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.usefixtures("one_blas_thread")
def test_a_larger_randomized_svd_truncated_is_more_accurate(seed):
    """The leading k directions of a randomized SVD at 60 have 50 more directions of
    oversampling than a run at k: closer to the exact filter (one power iteration, little
    oversampling and no spectral gap, so the run at k is visibly rough)."""
    matrix = _matrix(200, 150, 0.1, seed=seed)
    reference = _reference(matrix, 10, 1.0, 0.5)
    fitted = SPECTRAL.fit({"factors": 10, "power_iterations": 1, "oversampling": 5}, matrix, seed=seed)
    truncated = SpectralBasis.compute(matrix, 60, (5, 1, seed)).embeddings(10, 1.0, 0.5)
    error = np.abs(_scores(truncated) - reference).max()
    assert error < np.abs(_scores(fitted) - reference).max()
    assert error < 0.35 * np.abs(reference).max()
