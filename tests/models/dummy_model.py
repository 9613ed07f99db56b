"""A model type defined outside recsys: registered by a test, it must pass the contract.

``mean``: item vectors are a seeded random projection of each item's column of users
(items that share users get close vectors); a user's vector is the mean of the vectors of
the user's items. No training loop, but it ranks by co-occurrence.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, Strict

from recsys.models import Embeddings, ModelParams, ModelType
from recsys.models.base import Choice, Training


class MeanParams(ModelParams):
    factors: Annotated[int, Strict(), Field(ge=1)] = 32
    """Dimension of the random projection."""
    random_state: Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)] | None = None
    """Seed of the projection; the config's seed when not given."""


class MeanModel(ModelType):
    name = "mean"
    params = MeanParams
    space = {"factors": Choice((16, 32))}

    def train(self, params: MeanParams, data: Training) -> Embeddings:
        typed, user_items = params, data.user_items
        rng = np.random.default_rng(typed.random_state)
        n_users, _ = user_items.shape
        projection = rng.standard_normal((n_users, typed.factors)) / np.sqrt(typed.factors)
        item_factors = np.asarray(user_items.T @ projection)
        counts = np.maximum(np.asarray(user_items.sum(axis=1)), 1.0)
        user_factors = np.asarray(user_items @ item_factors) / counts
        return Embeddings(
            user_factors=np.ascontiguousarray(user_factors, dtype=np.float32),
            item_factors=np.ascontiguousarray(item_factors, dtype=np.float32),
        )
