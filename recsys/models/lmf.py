"""``lmf``: implicit's LogisticMatrixFactorization (Johnson's logistic MF, SGD)."""

from __future__ import annotations

from recsys.models._implicit import (
    Factors,
    ImplicitModelType,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
)
from recsys.models.base import FloatRange, IntRange, ModelParams


class LMFParams(ModelParams):
    """Constructor arguments of ``implicit.cpu.lmf.LogisticMatrixFactorization``, with its defaults."""

    factors: Factors = 30
    """Latent factors per user and item (implicit adds bias columns)."""
    learning_rate: PositiveFloat = 1.0
    """Step size of the gradient updates."""
    regularization: NonNegativeFloat = 0.6
    """L2 regularization of the factors."""
    iterations: PositiveInt = 30
    """Passes over the data."""
    neg_prop: PositiveInt = 30
    """Negative samples drawn per positive interaction."""
    num_threads: NonNegativeInt = 0
    """implicit's own threads; 0 uses every core. Deterministic only with 1."""
    random_state: Seed | None = None
    """Seed of the initial factors and of the sampling; the config's ``seed`` when not
    given, null for a different model every fit."""


class LMF(ImplicitModelType):
    name = "lmf"
    params = LMFParams
    implicit_class = "implicit.cpu.lmf:LogisticMatrixFactorization"
    space = {
        "factors": IntRange(8, 256, log=True),
        "learning_rate": FloatRange(0.05, 3.0, log=True),
        "regularization": FloatRange(0.01, 10.0, log=True),
        "iterations": IntRange(10, 60),
    }
