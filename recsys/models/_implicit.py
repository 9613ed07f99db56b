"""What the implicit model types share: param types, one ``fit`` and the factor checks.

A fresh implicit model object per fit (a second ``fit`` on one object continues from the
old factors), BLAS pinned to one thread around construction and fit, after implicit is
imported (implicit is up to 26x slower otherwise, and checks the thread count when a
model is built; :mod:`recsys.threads`), factor shapes
and finiteness checked afterwards. implicit is imported only inside ``fit``, so loading a
config never imports it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field, Strict

from recsys.errors import ModelError
from recsys.models.base import Embeddings, ModelParams, ModelType, Training
from recsys.threads import blas_limit

PositiveInt = Annotated[int, Strict(), Field(ge=1)]
"""An int >= 1; a string, float or bool is refused."""
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
MAX_FACTORS = 8192
"""Most latent factors a model may ask for: its factors take 4 bytes x factors x (users +
items), and each training thread a factors x factors solve on top."""
Factors = Annotated[int, Strict(), Field(ge=1, le=MAX_FACTORS)]
"""Latent factors: an int from 1 to :data:`MAX_FACTORS`."""
PositiveFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
"""A finite float > 0; an int is accepted (YAML ``alpha: 2``), a string or bool is not."""
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]
"""numpy's seed range."""
StrictBool = Annotated[bool, Strict()]


class ImplicitModelType(ModelType):
    """A model type trained by one implicit CPU class (``module:Class``)."""

    implicit_class: ClassVar[str]

    def model_class(self) -> type:
        """The implicit class, imported now (implicit loads only when a model trains)."""
        module, _, attribute = self.implicit_class.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def load(self) -> None:
        self.model_class()

    def train(self, params: ModelParams, data: Training) -> Embeddings:
        """Fit one implicit model (constructor arguments: the params) and return its factors.
        ``data.progress``: called after each iteration (implicit's ``fit(callback=...)``)
        with the iterations done and the model's current user and item factors; what it
        raises propagates out of ``fit`` unchanged."""
        typed, (user_items, _, name, show_progress, progress, given) = params, data
        check_memory(name, user_items.shape, int(getattr(typed, "factors", 0)))
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        matrix = sp.csr_matrix(user_items, dtype=np.float32)
        # implicit checks the BLAS thread count when the model is constructed: pin it first,
        # once implicit is imported (its import loads a BLAS of its own)
        model_class = self.model_class()
        with blas_limit(1):
            model = model_class(**typed.model_dump())
            callback = None
            if progress is not None:

                def callback(iteration: int, *_: Any) -> None:  # ALS: (i, s, loss); BPR: 4 args
                    try:
                        progress(iteration + 1, model.user_factors, model.item_factors)
                    except Exception as exc:
                        raise _FromProgress(exc) from exc

            try:
                model.fit(matrix, show_progress=show_progress, callback=callback)
            except _FromProgress as stop:  # the caller's own exception, not a training error
                raise stop.error from None
            except (TypeError, ValueError) as exc:
                raise ModelError(
                    f"model {name}: {self.name} failed to train with params {given}: {exc}"
                ) from None
            except Exception as exc:  # implicit's ModelFitError: the factors diverged
                if type(exc).__name__ != "ModelFitError":
                    raise
                raise ModelError(_diverged(name, self.name, matrix)) from None
        try:
            return checked_embeddings(
                model.user_factors, model.item_factors, user_items.shape, name, MAX_FACTOR_NORM
            )
        except ModelError:
            raise ModelError(_diverged(name, self.name, matrix)) from None


def factors_bytes(shape: tuple[int, int], factors: int) -> int:
    """The least memory a fit of ``factors`` on a users x items matrix takes: its user and
    item factors in float32, twice (implicit keeps a copy while it solves)."""
    return 2 * 4 * factors * (int(shape[0]) + int(shape[1]))


def check_memory(name: str, shape: tuple[int, int], factors: int) -> None:
    """A one-line :class:`ModelError` before training when the factors alone would not fit
    in the memory available now (a fit would end in a MemoryError, or in the OOM killer)."""
    import psutil

    needed = factors_bytes(shape, factors)
    available = psutil.virtual_memory().available
    if needed > available:
        gib = 2**30
        raise ModelError(
            f"model {name}: {factors} factors for {shape[0]} users and {shape[1]} items need at "
            f"least {needed / gib:.1f} GiB of memory, {available / gib:.1f} GiB are available: "
            "lower factors"
        )


class _FromProgress(Exception):
    """Carries what a ``progress`` callback raised through implicit's ``fit``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _diverged(name: str, model_type: str, matrix: sp.csr_matrix) -> str:
    """Why training produced non-finite or overlong factors, and what to do."""
    largest = float(matrix.data.max()) if matrix.nnz else 0.0
    return (
        f"model {name}: {model_type} training diverged (factors not finite, or longer than "
        f"{MAX_FACTOR_NORM:.0e}); the weight column goes up to {largest:.3g}: rescale it, or "
        "convert the table with "
        "`recsys import table FILE --weighting log` (or bm25), or lower the learning rate / "
        "raise regularization"
    )


MAX_FACTOR_NORM = 1e6
"""A user or item vector that implicit's iterative fits leave longer than this is a
diverged fit, refused: their vectors stayed below a few hundred on the data measured (ALS
up to about 110 at regularization 0.001 and alpha 100), and a learning rate that diverges
gives norms of 1e9 and more. Closed-form fits (spectral) have no bound: their item
vectors scale with item degrees."""


def checked_embeddings(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    shape: tuple[int, int],
    name: str,
    max_norm: float | None = None,
) -> Embeddings:
    """Factors as C-contiguous float32 :class:`Embeddings`, checked against the
    (n_users, n_items) ``shape`` of the training matrix, for finiteness, and against
    ``max_norm`` (each vector's Euclidean norm) where one is given."""
    user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
    item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    n_users, n_items = shape
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
        norms = np.linalg.norm(factors, axis=1) if max_norm is not None and len(factors) else None
        if norms is not None and float(norms.max()) > max_norm:
            raise ModelError(
                f"model {name}: {int((norms > max_norm).sum())} {label} vector(s) have a norm "
                f"past {max_norm:.0e} after training (largest {float(norms.max()):.3g}) "
                "(lower the learning rate or raise regularization)"
            )
    return Embeddings(user_factors=user_factors, item_factors=item_factors)
