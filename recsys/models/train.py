"""Train user and item embeddings with implicit.

A fresh implicit model object per fit (a second ``fit`` on one object continues
from the old factors), BLAS pinned to one thread around the fit (implicit is up to
26x slower otherwise), factor shapes and finiteness checked afterwards.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.errors import ConfigError, ModelError


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Factors of one model.

    user_factors: float32 (n_users, dim); item_factors: float32 (n_items, dim).
    The dot product of a user row and an item row is the model's score.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray

    def __post_init__(self) -> None:
        for name in ("user_factors", "item_factors"):
            array = getattr(self, name)
            if array.ndim != 2 or array.dtype != np.float32:
                raise ModelError(f"{name} must be a 2-d float32 array, found {array.dtype} {array.shape}")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ModelError(
                f"user and item factors differ in dimension: {self.user_factors.shape[1]} "
                f"vs {self.item_factors.shape[1]}"
            )

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])


def _model_class(model_type: str) -> type:
    if model_type == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares
    if model_type == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking
    if model_type == "lmf":
        from implicit.cpu.lmf import LogisticMatrixFactorization

        return LogisticMatrixFactorization
    raise ConfigError(f"unknown model type {model_type!r}: expected als, bpr or lmf")


def model_param_names(model_type: str) -> list[str]:
    """Constructor parameters the implicit model of this type accepts."""
    signature = inspect.signature(_model_class(model_type).__init__)
    return [name for name in signature.parameters if name not in ("self", "dtype")]


def train(
    model_type: str,
    params: dict[str, Any],
    user_items: sp.csr_matrix,
    seed: int,
    name: str = "model",
    show_progress: bool | None = None,
) -> Embeddings:
    """Fit one implicit model on a users x items CSR matrix and return its factors.

    params: constructor arguments of the implicit model; unknown names raise
    :class:`ConfigError`. ``random_state`` defaults to ``seed``.
    """
    if user_items.nnz == 0:
        raise ModelError(f"model {name}: no interactions to train on")
    allowed = model_param_names(model_type)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model {name}: unknown parameter(s) {', '.join(unknown)} for {model_type} "
            f"(expected some of: {', '.join(allowed)})"
        )
    kwargs = {"random_state": seed, **params}
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    matrix = sp.csr_matrix(user_items, dtype=np.float32)
    # implicit checks the BLAS thread count when the model is constructed: pin it first.
    with threadpool_limits(limits=1, user_api="blas"):
        try:
            model = _model_class(model_type)(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model {name}: invalid parameters for {model_type}: {exc}") from None
        try:
            model.fit(matrix, show_progress=show_progress)
        except (TypeError, ValueError) as exc:
            # implicit checks most parameter values only when fitting (factors: "8")
            raise ModelError(
                f"model {name}: {model_type} failed to train with params {params}: {exc}"
            ) from None
    user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    n_users, n_items = user_items.shape
    if user_factors.shape[0] != n_users or item_factors.shape[0] != n_items:
        raise ModelError(
            f"model {name}: factor shapes {user_factors.shape} / {item_factors.shape} do not "
            f"match the {n_users} users x {n_items} items matrix"
        )
    for label, factors in (("user", user_factors), ("item", item_factors)):
        bad = int((~np.isfinite(factors)).any(axis=1).sum())
        if bad:
            raise ModelError(
                f"model {name}: {bad} {label} vector(s) are not finite after training "
                "(lower the learning rate or raise regularization)"
            )
    return Embeddings(user_factors=user_factors, item_factors=item_factors)


def fold_in_users(
    model_type: str, params: dict[str, Any], item_factors: np.ndarray, user_items: sp.csr_matrix
) -> np.ndarray:
    """User vectors for new or changed users against fixed item factors, without retraining.

    For ALS this is implicit's own ``recalculate_user``: the least-squares user step of
    training, with the model's regularization and alpha. user_items: CSR (users, n_items).
    Returns float32 (users, dim).
    """
    if model_type != "als":
        raise ModelError(f"folding users in needs an ALS model; this one is {model_type}")
    from implicit.cpu.als import AlternatingLeastSquares

    kwargs = {k: v for k, v in params.items() if k in model_param_names("als")}
    kwargs["factors"] = item_factors.shape[1]
    matrix = sp.csr_matrix(user_items, dtype=np.float32)
    if matrix.shape[1] != item_factors.shape[0]:
        raise ModelError(f"user_items has {matrix.shape[1]} items, the model {item_factors.shape[0]}")
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(**kwargs)
        model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        model.user_factors = np.zeros((matrix.shape[0], item_factors.shape[1]), dtype=np.float32)
        users = model.recalculate_user(np.arange(matrix.shape[0]), matrix)
    return np.ascontiguousarray(users, dtype=np.float32).reshape(matrix.shape[0], -1)
