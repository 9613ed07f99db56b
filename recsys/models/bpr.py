"""``bpr``: implicit's BayesianPersonalizedRanking (pairwise ranking loss, SGD)."""

from __future__ import annotations

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
from recsys.models.base import FloatRange, IntRange, ModelParams


class BPRParams(ModelParams):
    """Constructor arguments of ``implicit.cpu.bpr.BayesianPersonalizedRanking``, with its defaults."""

    factors: Factors = 100
    """Latent factors per user and item (implicit adds a bias column)."""
    learning_rate: PositiveFloat = 0.01
    """SGD step size."""
    regularization: NonNegativeFloat = 0.01
    """L2 regularization of the factors."""
    iterations: PositiveInt = 100
    """Epochs of sampled (user, liked item, other item) triples."""
    num_threads: NonNegativeInt = 0
    """implicit's own threads; 0 uses every core. Deterministic only with 1."""
    verify_negative_samples: StrictBool = True
    """Resample a negative item that the user has in fact interacted with."""
    random_state: Seed | None = None
    """Seed of the initial factors and of the sampling; the config's ``seed`` when not
    given, null for a different model every fit."""


class BPR(ImplicitModelType):
    name = "bpr"
    params = BPRParams
    implicit_class = "implicit.cpu.bpr:BayesianPersonalizedRanking"
    space = {
        "factors": IntRange(16, 512, log=True),
        "learning_rate": FloatRange(0.001, 0.3, log=True),
        "regularization": FloatRange(1e-5, 0.1, log=True),
        "iterations": IntRange(20, 300, log=True),
    }
