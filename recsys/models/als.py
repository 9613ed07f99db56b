"""``als``: implicit's AlternatingLeastSquares (Hu, Koren and Volinsky's implicit-feedback
ALS, conjugate-gradient solver by default). Folds users in with ALS's own user step."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.errors import ModelError
from recsys.models._implicit import (
    Factors,
    ImplicitModelType,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    StrictBool,
)
from recsys.models.base import FloatRange, Folding, IntRange, ModelParams
from recsys.threads import blas_limit


class ALSParams(ModelParams):
    """Constructor arguments of ``implicit.cpu.als.AlternatingLeastSquares``, with its defaults."""

    factors: Factors = 100
    """Latent factors per user and item."""
    regularization: NonNegativeFloat = 0.01
    """L2 regularization of the factors."""
    alpha: PositiveFloat = 1.0
    """Confidence weight: an interaction of weight w counts as 1 + alpha * w."""
    use_native: StrictBool = True
    """Use implicit's native (Cython) solver instead of the pure-Python one."""
    use_cg: StrictBool = True
    """Conjugate gradient instead of the exact Cholesky solve (faster, nearly as good)."""
    iterations: PositiveInt = 15
    """Alternating passes over users and items."""
    calculate_training_loss: StrictBool = False
    """Log the training loss each iteration (slower)."""
    num_threads: NonNegativeInt = 0
    """implicit's own threads; 0 uses every core."""
    random_state: Seed | None = None
    """Seed of the initial factors; the config's ``seed`` when not given, null for a
    different model every fit."""


class ALS(ImplicitModelType):
    name = "als"
    params = ALSParams
    implicit_class = "implicit.cpu.als:AlternatingLeastSquares"
    space = {
        "factors": IntRange(16, 1024, log=True),
        "regularization": FloatRange(0.01, 1000.0, log=True),
        "alpha": FloatRange(1.0, 100.0, log=True),
        "iterations": IntRange(5, 30),
    }

    def fold(self, params: ALSParams, data: Folding) -> np.ndarray:
        """implicit's own ``recalculate_user``: the least-squares user step of training, with
        the model's regularization and alpha; ``factors`` comes from ``item_factors``.
        item_factors: float32 (n_items, dim); user_items: CSR (users, n_items).
        Returns float32 (users, dim)."""
        typed, item_factors, user_items = params, data.item_factors, data.user_items
        matrix = sp.csr_matrix(user_items, dtype=np.float32)
        if matrix.shape[1] != item_factors.shape[0]:
            raise ModelError(f"user_items has {matrix.shape[1]} items, the model {item_factors.shape[0]}")
        kwargs = {**typed.model_dump(), "factors": item_factors.shape[1]}
        model_class = self.model_class()
        with blas_limit(1):
            model = model_class(**kwargs)
            model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
            model.user_factors = np.zeros((matrix.shape[0], item_factors.shape[1]), dtype=np.float32)
            users = model.recalculate_user(np.arange(matrix.shape[0]), matrix)
        return np.ascontiguousarray(users, dtype=np.float32).reshape(matrix.shape[0], -1)
