"""``spectral``: the ideal low-pass graph filter of GF-CF (Shen et al., CIKM 2021, "How
Powerful is Graph Convolution for Recommendation?") written as embeddings.

With R the users x items matrix, D_u and D_i its row and column sums and
R~ = D_u^-1/2 R D_i^-1/2, take the top-k singular values S_k and right singular vectors
V_k of R~ (a seeded randomized SVD). Then::

    user vectors  r_u D_i^-1/2 V_k S_k^spectral_power      (n_users, k)
    item vectors  D_i^item_exponent V_k                    (n_items, k)

so a score is r_u D_i^-1/2 V_k S_k^p V_k^T D_i^e: with spectral_power 0 and
item_exponent 0.5 exactly GF-CF's filter. Scores are dot products, so the model goes
through the same indices, lists, evaluation and publishing as every other, and a new
user folds in exactly: its vector is a sparse product with the projection
D_i^-1/2 V_k S_k^p, saved beside the factors (no solve).
"""

from __future__ import annotations

import logging
from typing import Annotated

import numpy as np
import scipy.sparse as sp
from pydantic import Field, Strict

from recsys.errors import ModelError
from recsys.models._implicit import Factors, NonNegativeInt, Seed, check_memory, checked_embeddings
from recsys.models.base import (
    Embeddings,
    FloatRange,
    Folding,
    IntRange,
    ModelParams,
    ModelType,
    Training,
    blas_threads,
)
from recsys.progress import Progress
from recsys.threads import blas_limit

FOLD_IN = "fold_in_projection"
log = logging.getLogger(__name__)


class SpectralParams(ModelParams):
    """The filter's size and shape, and the randomized SVD's effort."""

    factors: Factors = 256
    """k: singular vectors kept (the filter's pass band). Larger is closer to the full
    filter; 1024 is a good size for tens of thousands of items."""
    spectral_power: Annotated[float, Strict(), Field(ge=0, le=4, allow_inf_nan=False)] = 1.0
    """Weight of each singular direction in the user vector: S_k^spectral_power (0: the
    ideal low-pass filter of GF-CF)."""
    item_exponent: Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)] = 0.5
    """Item vectors are D_i^item_exponent V_k (0.5: GF-CF)."""
    oversampling: NonNegativeInt = 10
    """Extra random directions of the randomized SVD (accuracy of the last singular vectors)."""
    power_iterations: NonNegativeInt = 4
    """Power iterations of the randomized SVD (accuracy where singular values are close)."""
    random_state: Seed | None = None
    """Seed of the random projection; the config's ``seed`` when not given."""


def _inverse_sqrt(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    positive = values > 0
    out[positive] = 1.0 / np.sqrt(values[positive])
    return out


def _power(values: np.ndarray, exponent: float) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    positive = values > 0
    out[positive] = values[positive] ** exponent
    return out


def top_right_singular(
    matrix: sp.csr_matrix,
    k: int,
    oversampling: int,
    iterations: int,
    seed: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k singular values (descending) and right singular vectors (n_cols, k) of a
    sparse matrix: Halko, Martinsson and Tropp's randomized SVD with power iterations,
    orthonormalised at every step; exact (dense) where k + oversampling reaches the
    smaller side. progress: told each phase and the power iterations done."""
    n_rows, n_cols = matrix.shape
    width = min(k + oversampling, n_rows, n_cols)
    progress = progress or Progress(log, "spectral SVD")
    if width >= min(n_rows, n_cols):
        progress.phase(f"dense SVD of {n_rows:,} x {n_cols:,}")
        _, values, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        return values[:k], vt[:k].T
    rng = np.random.default_rng(seed)
    progress.phase(f"range of {width} columns")
    basis = np.linalg.qr(matrix @ rng.standard_normal((n_cols, width)))[0]
    progress.phase("power iterations", iterations)
    for step in range(iterations):
        basis = np.linalg.qr(matrix @ np.linalg.qr(matrix.T @ basis)[0])[0]
        progress(step + 1)
    progress.phase(f"SVD of {width} x {n_cols:,}")
    small = np.asarray((matrix.T @ basis).T)  # basis^T matrix, (width, n_cols)
    _, values, vt = np.linalg.svd(small, full_matrices=False)
    return values[:k], vt[:k].T


class Spectral(ModelType):
    name = "spectral"
    params = SpectralParams
    space = {
        "factors": IntRange(64, 2048, log=True),
        "spectral_power": FloatRange(0.0, 2.0),
        "item_exponent": FloatRange(0.0, 1.0),
    }

    def train(self, params: SpectralParams, data: Training) -> Embeddings:
        typed, name = params, data.name
        matrix = sp.csr_matrix(data.user_items, dtype=np.float64)
        n_users, n_items = matrix.shape
        if typed.factors > min(n_users, n_items):
            raise ModelError(
                f"model {name}: factors {typed.factors} is more than the {min(n_users, n_items)} "
                f"singular vectors a {n_users} x {n_items} matrix has"
            )
        check_memory(name, matrix.shape, typed.factors)
        item_degree = np.asarray(matrix.sum(axis=0)).ravel()
        user_scale = _inverse_sqrt(np.asarray(matrix.sum(axis=1)).ravel())
        item_scale = _inverse_sqrt(item_degree)
        normalised = sp.diags(user_scale) @ matrix @ sp.diags(item_scale)
        # the SVD's dense products and QR use every core (implicit's models want one BLAS
        # thread), or one where models are fitted side by side
        with blas_limit(blas_threads()), Progress(log, f"{name}: spectral SVD") as svd_progress:
            values, vectors = top_right_singular(
                sp.csr_matrix(normalised),
                typed.factors,
                typed.oversampling,
                typed.power_iterations,
                typed.random_state,
                svd_progress,
            )
            svd_progress.phase("user vectors")
            projection = (item_scale[:, None] * vectors) * (values**typed.spectral_power)[None, :]
            user_factors = np.asarray(matrix @ projection)
            item_factors = _power(item_degree, typed.item_exponent)[:, None] * vectors
        embeddings = checked_embeddings(user_factors, item_factors, matrix.shape, name)
        return Embeddings(
            embeddings.user_factors,
            embeddings.item_factors,
            extras={FOLD_IN: np.ascontiguousarray(projection, dtype=np.float32)},
        )

    def fold(self, params: SpectralParams, data: Folding) -> np.ndarray:
        """Exact: the new users' rows times the fold-in projection D_i^-1/2 V_k S_k^p."""
        user_items, extras = data.user_items, data.extras
        if FOLD_IN not in extras:
            raise ModelError("this spectral model was saved without its fold-in projection")
        projection = extras[FOLD_IN]
        if user_items.shape[1] != projection.shape[0]:
            raise ModelError(f"user_items has {user_items.shape[1]} items, the model {projection.shape[0]}")
        return np.ascontiguousarray(
            sp.csr_matrix(user_items, dtype=np.float32) @ projection, dtype=np.float32
        )
