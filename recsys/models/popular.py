"""``popular``: the popularity baseline as a model, evaluated and published like any
other, so that every model's lift over it can be read off the same tables.

Item vectors are ``[log1p(users of the item), 1]`` and every user's vector is ``[1, 0]``:
a user's score for an item is log1p of its number of users (the same order as the
count), the same list for everyone but for the items already seen. Similar items are the
items of most similar popularity (the angle between the 2-d vectors).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.models.base import Embeddings, Folding, ModelParams, ModelType, Training


class PopularParams(ModelParams):
    """The baseline has no params."""


class Popular(ModelType):
    name = "popular"
    params = PopularParams
    personalized = False
    space = {}

    def train(self, params: PopularParams, data: Training) -> Embeddings:
        matrix = sp.csr_matrix(data.user_items)
        users_per_item = np.diff(matrix.tocsc().indptr).astype(np.float64)
        item_factors = np.column_stack([np.log1p(users_per_item), np.ones_like(users_per_item)])
        user_factors = np.tile([1.0, 0.0], (matrix.shape[0], 1))
        return Embeddings(
            item_factors=item_factors.astype(np.float32), user_factors=user_factors.astype(np.float32)
        )

    def fold(self, params: PopularParams, data: Folding) -> np.ndarray:
        """Every user, new or not, gets the same vector: the most popular unseen items."""
        return np.tile(np.array([1.0, 0.0], dtype=np.float32), (data.user_items.shape[0], 1))
