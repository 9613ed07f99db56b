"""Embedding models: the registry of model types, and ``train`` / ``fold_in_users`` over it.

Adding a model type is one file of this package (a :class:`ModelType` with its typed
params and tuning space) plus one line in :data:`MODEL_TYPES`; the contract tests in
``tests/models/test_model_contract.py`` then run on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.models.als import ALS
from recsys.models.base import Embeddings, ModelParams, ModelParamsError, ModelType
from recsys.models.blend import Blend
from recsys.models.bpr import BPR
from recsys.models.lmf import LMF
from recsys.models.popular import Popular
from recsys.models.precomputed import Precomputed
from recsys.models.spectral import Spectral

MODEL_TYPES: dict[str, ModelType] = {
    "als": ALS(),
    "bpr": BPR(),
    "lmf": LMF(),
    "spectral": Spectral(),
    "popular": Popular(),
    "precomputed": Precomputed(),
    "blend": Blend(),
}
"""Model types by their config ``type``."""


def get_model_type(name: str) -> ModelType:
    """The registered type called ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return MODEL_TYPES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model type {name!r}: expected one of {', '.join(MODEL_TYPES)}") from None


def model_param_names(model_type: str) -> list[str]:
    """The params a model of this type accepts (the fields of its params model)."""
    return list(get_model_type(model_type).params.model_fields)


def train(
    model_type: str,
    params: dict[str, Any],
    user_items: sp.csr_matrix,
    seed: int,
    name: str = "model",
    show_progress: bool | None = None,
) -> Embeddings:
    """Fit one model of a registered type on a users x items CSR matrix: see
    :meth:`ModelType.fit`. ``random_state`` defaults to ``seed``."""
    return get_model_type(model_type).fit(params, user_items, seed, name, show_progress)


def fold_in_users(
    model_type: str, params: dict[str, Any], model: Embeddings, user_items: sp.csr_matrix
) -> np.ndarray:
    """User vectors for new or changed users against a trained model's fixed item factors
    and the other arrays it keeps (a spectral model's projection): see
    :meth:`ModelType.fold_in`. Returns float32 (users, dim)."""
    return get_model_type(model_type).fold_in(params, model.item_factors, user_items, model.extras)


__all__ = [
    "MODEL_TYPES",
    "Embeddings",
    "ModelParams",
    "ModelParamsError",
    "ModelType",
    "fold_in_users",
    "get_model_type",
    "model_param_names",
    "train",
]
