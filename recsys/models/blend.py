"""``blend``: a model made of other models of the same run, its score the weighted sum of
theirs. Its user and item vectors are its parts' vectors side by side, each part's
multiplied by ``sqrt(weight * scale)``, so one dot product gives
``sum(weight * scale * part score)`` and every index, list and lookup serves it as it is.
``scale`` makes each part's scores comparable: the inverse root mean square of the part's
scores over a seeded sample of the training matrix's (user, item) pairs, recorded in the
manifest as ``params.scales``. The parts are trained once per run; the blend reads their
files (the pipeline's train stage), so it is never fitted from a matrix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import field_validator

from recsys.errors import ModelError
from recsys.models.base import Embeddings, Folding, ModelParams, ModelType, Training

SAMPLE_PAIRS = 10_000
"""(user, item) pairs of the training matrix whose scores estimate a part's scale."""


class BlendParams(ModelParams):
    """Which models of the run it blends, and how much each counts (users fold in through
    the parts, where every part can)."""

    parts: dict[str, float]
    """Model name of the same config -> its weight (finite, > 0). Weights of 1.0 give
    every part the same say: each part's scores are first brought to a root mean square of
    1 over the training interactions. Every part must have user vectors (a ``precomputed``
    part needs ``users``)."""
    scales: dict[str, float] | None = None
    """Recorded by the run, never set in a config: the constant each part's scores were
    multiplied by (before its weight), 1 / the root mean square of its scores over a
    seeded sample of the training interactions."""

    @field_validator("parts", mode="before")
    @classmethod
    def _no_bools(cls, parts: Any) -> Any:
        if isinstance(parts, dict):
            for name, weight in parts.items():
                if isinstance(weight, bool):
                    raise ValueError(f"the weight of {name} must be a number")
        return parts

    @field_validator("parts")
    @classmethod
    def _positive_weights(cls, parts: dict[str, float]) -> dict[str, float]:
        if not parts:
            raise ValueError("a blend needs at least one part (model name: weight)")
        for name, weight in parts.items():
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"the weight of {name} must be finite and > 0")
        return parts


def part_scale(
    user_factors: np.ndarray, item_factors: np.ndarray, user_items: sp.csr_matrix, seed: int
) -> float:
    """1 / the root mean square of a part's scores over at most :data:`SAMPLE_PAIRS` of the
    training matrix's (user, item) pairs, drawn with ``seed``; 0 where every sampled score
    is 0 (the caller refuses it)."""
    coo = user_items.tocoo()
    rng = np.random.default_rng(seed)
    if coo.nnz > SAMPLE_PAIRS:
        picked = np.sort(rng.choice(coo.nnz, size=SAMPLE_PAIRS, replace=False))
        rows, cols = coo.row[picked], coo.col[picked]
    else:
        rows, cols = coo.row, coo.col
    users = np.asarray(user_factors[rows], dtype=np.float64)
    items = np.asarray(item_factors[cols], dtype=np.float64)
    rms = float(np.sqrt(np.mean(np.einsum("ij,ij->i", users, items) ** 2)))
    return 1.0 / rms if rms > 0 and math.isfinite(rms) else 0.0


def blend_vectors(vectors: list[np.ndarray], multipliers: list[float]) -> np.ndarray:
    """The parts' vectors side by side, each multiplied by ``sqrt(multiplier)`` (a part's
    weight times its scale): float32."""
    return np.hstack(
        [
            np.asarray(v, dtype=np.float32) * np.float32(math.sqrt(m))
            for v, m in zip(vectors, multipliers, strict=True)
        ]
    ).astype(np.float32, copy=False)


def make_blend(
    name: str,
    params: dict[str, Any],
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    user_items: sp.csr_matrix,
    seed: int,
) -> tuple[Embeddings, dict[str, float]]:
    """The blend of ``parts`` (name -> its user and item factors) and the scale of each,
    as :class:`BlendParams` ``params`` ask. Raises a one-line :class:`ModelError` where a
    part's vectors do not fit the run's users and items or its scores are all 0."""
    typed = BlendParams.model_validate(params)
    n_users, n_items = user_items.shape
    scales: dict[str, float] = {}
    users, items, multipliers = [], [], []
    for part, weight in typed.parts.items():
        user_factors, item_factors = parts[part]
        if user_factors.shape[0] != n_users or item_factors.shape[0] != n_items:
            raise ModelError(
                f"model {name}: part {part} has vectors of {user_factors.shape[0]} users and "
                f"{item_factors.shape[0]} items, the run {n_users} users and {n_items} items"
            )
        scale = part_scale(user_factors, item_factors, user_items, seed)
        if scale <= 0:
            raise ModelError(
                f"model {name}: part {part} scores every sampled training pair 0; it cannot be scaled"
            )
        scales[part] = scale
        users.append(user_factors)
        items.append(item_factors)
        multipliers.append(weight * scale)
    embeddings = Embeddings(
        user_factors=blend_vectors(users, multipliers), item_factors=blend_vectors(items, multipliers)
    )
    return embeddings, scales


def multipliers(params: dict[str, Any]) -> dict[str, float]:
    """Each part's weight times its recorded scale (a published blend's params)."""
    typed = BlendParams.model_validate(params)
    if typed.scales is None or set(typed.scales) != set(typed.parts):
        raise ModelError("a blend's params record no scale for each of its parts")
    return {part: weight * typed.scales[part] for part, weight in typed.parts.items()}


class Blend(ModelType):
    name = "blend"
    params = BlendParams
    source = "vectors"
    space = {}

    def train(self, params: BlendParams, data: Training) -> Embeddings:
        raise ModelError(
            f"model {data.name}: a blend is made of its parts' vectors (params.parts) and is never "
            "trained from a matrix; the pipeline's train stage makes it once its parts are trained"
        )

    def fold(self, params: BlendParams, data: Folding) -> np.ndarray:
        """A blend folds users in through its parts (:meth:`recsys.api.Run.fold_in`), where
        every part can: never from its own item factors alone."""
        raise ModelError(
            "a blend folds users in through its parts, each against its own factors "
            "(recsys.api.Run.fold_in), not against the blend's item factors alone"
        )
