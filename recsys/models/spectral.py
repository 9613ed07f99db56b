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

The SVD is the whole cost; factors, spectral_power and item_exponent only reweight its
output. A :class:`SpectralBasis` holds the SVD at some k and gives the embeddings of any
factors up to k: a fit makes one at k = factors, ``recsys tune`` one at the largest factors
of its search space, which every trial truncates (a trial then costs its scoring). The
leading k directions of a randomized SVD run at k_max >= k are at least as accurate as a
separate run at k: they come from a random subspace of width k_max + oversampling, i.e.
with k_max - k more oversampling, and the error bounds of the randomized SVD (Halko,
Martinsson and Tropp, SIAM Review 2011) only shrink as oversampling grows; where k_max +
oversampling reaches the smaller side of the matrix the SVD is the exact one, so the
truncation is exactly the smaller SVD. Trials that change oversampling, power_iterations
or random_state change the SVD itself and fit as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, Strict

from recsys.errors import ModelError
from recsys.models._implicit import Factors, NonNegativeInt, Seed, check_memory, checked_embeddings
from recsys.models.base import (
    Choice,
    Dimension,
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
SVD_SETTINGS = ("oversampling", "power_iterations", "random_state")
"""Params of the SVD itself: a trial that changes one cannot reuse another's SVD."""
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


@dataclass(frozen=True, eq=False)
class SpectralBasis:
    """The top singular values and right singular vectors of one matrix's degree-normalised
    R~, with what turns any leading part of them into embeddings (:meth:`embeddings`)."""

    matrix: sp.csr_matrix
    """The users x items matrix (float64) the SVD is of."""
    values: np.ndarray
    """S: the top singular values, descending (k,)."""
    vectors: np.ndarray
    """V: the right singular vectors (n_items, k)."""
    item_degree: np.ndarray
    """D_i: the items' column sums."""
    settings: tuple[int, int, int | None]
    """(oversampling, power_iterations, random_state) the SVD ran with."""

    @property
    def k(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def compute(
        cls,
        user_items: sp.csr_matrix,
        k: int,
        settings: tuple[int, int, int | None],
        name: str = "model",
    ) -> SpectralBasis:
        """The seeded randomized SVD of ``user_items``' R~ at k (``settings``: oversampling,
        power iterations, seed); :class:`ModelError` where k is more than the matrix has or
        the vectors would not fit in memory."""
        matrix = sp.csr_matrix(user_items, dtype=np.float64)
        check_factors(name, matrix.shape, k)
        check_memory(name, matrix.shape, k)
        item_degree = np.asarray(matrix.sum(axis=0)).ravel()
        user_scale = _inverse_sqrt(np.asarray(matrix.sum(axis=1)).ravel())
        normalised = sp.diags(user_scale) @ matrix @ sp.diags(_inverse_sqrt(item_degree))
        oversampling, iterations, seed = settings
        # the SVD's dense products and QR use every core (implicit's models want one BLAS
        # thread), or one where models are fitted side by side
        with blas_limit(blas_threads()), Progress(log, f"{name}: spectral SVD") as progress:
            values, vectors = top_right_singular(
                sp.csr_matrix(normalised), k, oversampling, iterations, seed, progress
            )
        return cls(matrix, values, vectors, item_degree, settings)

    def embeddings(
        self, factors: int, spectral_power: float, item_exponent: float, name: str = "model"
    ) -> Embeddings:
        """The spectral model's embeddings at ``factors`` (at most :attr:`k`: the leading
        singular directions), ``spectral_power`` and ``item_exponent``, with the fold-in
        projection among the extras."""
        if factors > self.k:
            raise ModelError(f"model {name}: factors {factors} is more than the {self.k} of this SVD")
        values, vectors = self.values[:factors], self.vectors[:, :factors]
        with blas_limit(blas_threads()):
            weights = values**spectral_power
            projection = (_inverse_sqrt(self.item_degree)[:, None] * vectors) * weights[None, :]
            user_factors = np.asarray(self.matrix @ projection)
            item_factors = _power(self.item_degree, item_exponent)[:, None] * vectors
        embeddings = checked_embeddings(user_factors, item_factors, self.matrix.shape, name)
        return Embeddings(
            embeddings.user_factors,
            embeddings.item_factors,
            extras={FOLD_IN: np.ascontiguousarray(projection, dtype=np.float32)},
        )


def check_factors(name: str, shape: tuple[int, int], factors: int) -> None:
    """:class:`ModelError` where ``factors`` is more than the singular vectors of the matrix."""
    if factors > min(shape):
        raise ModelError(
            f"model {name}: factors {factors} is more than the {min(shape)} "
            f"singular vectors a {shape[0]} x {shape[1]} matrix has"
        )


def largest(dimension: Dimension) -> int:
    """The largest value a factors dimension can draw."""
    if isinstance(dimension, Choice):
        return int(max(dimension.values))
    return int(dimension.high)


class Spectral(ModelType):
    name = "spectral"
    params = SpectralParams
    space = {
        "factors": IntRange(64, 2048, log=True),
        "spectral_power": FloatRange(0.0, 2.0),
        "item_exponent": FloatRange(0.0, 1.0),
    }

    def train(self, params: SpectralParams, data: Training) -> Embeddings:
        basis = SpectralBasis.compute(data.user_items, params.factors, _settings(params), data.name)
        return basis.embeddings(params.factors, params.spectral_power, params.item_exponent, data.name)

    def tuning_cache(
        self,
        params: dict[str, Any],
        space: dict[str, Dimension],
        user_items: sp.csr_matrix,
        seed: int,
        name: str,
    ) -> SpectralBasis | None:
        """One SVD at the largest factors of ``space`` (the config's factors where the space
        does not search them; at most what the matrix has), with the config's oversampling,
        power_iterations and random_state; None where the space searches one of those three
        (each trial's SVD would differ)."""
        if user_items.nnz == 0 or any(setting in space for setting in SVD_SETTINGS):
            return None
        typed = self.parse_params({"random_state": seed, **params}, name)
        k = largest(space["factors"]) if "factors" in space else typed.factors
        k = min(k, min(user_items.shape))
        log.info("%s: one spectral SVD at %d factors for every trial", name, k)
        return SpectralBasis.compute(user_items, k, _settings(typed), name)

    def fit_cached(self, cache: Any, params: dict[str, Any], seed: int, name: str) -> Embeddings | None:
        """The trial's embeddings from the shared SVD; None for factors beyond it or other
        SVD settings."""
        typed = self.parse_params({"random_state": seed, **params}, name)
        if not isinstance(cache, SpectralBasis) or cache.settings != _settings(typed):
            return None
        if typed.factors > cache.k:
            return None
        return cache.embeddings(typed.factors, typed.spectral_power, typed.item_exponent, name)

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


def _settings(params: SpectralParams) -> tuple[int, int, int | None]:
    """(oversampling, power_iterations, random_state): what makes one SVD differ from another."""
    return (params.oversampling, params.power_iterations, params.random_state)
