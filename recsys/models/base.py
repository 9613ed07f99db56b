"""What every model type is: its typed params, its tuning space, ``fit`` and ``fold_in``.

A model type is one file of this package plus one line in the registry
(:data:`recsys.models.MODEL_TYPES`); the contract tests in ``tests/models`` then run on it.
This module imports only :mod:`recsys.errors` of the project.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, ValidationError

from recsys.errors import ConfigError, ModelError

Source = Literal["interactions", "vectors"]


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Factors of one model.

    user_factors: float32 (n_users, dim); item_factors: float32 (n_items, dim).
    The dot product of a user row and an item row is the model's score.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Other float32 arrays a type needs later (its fold-in projection), saved with the
    factors under their names and handed back to :meth:`ModelType.fold_in`."""

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


@dataclass(frozen=True)
class IntRange:
    """A whole-number search dimension (``log``: sampled on a log scale)."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """A real-number search dimension (``log``: sampled on a log scale)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """A search dimension over listed values."""

    values: tuple[Any, ...]


Dimension = IntRange | FloatRange | Choice

Progress = Callable[[int, np.ndarray, np.ndarray], None]
"""``progress(iterations_done, user_factors, item_factors)``: see :meth:`ModelType.fit`."""


class ModelParams(BaseModel):
    """Typed params of one model type: unknown keys are refused, values are checked
    against their documented ranges when the config loads, not when training starts."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelParamsError(ConfigError, ModelError):
    """A model's params do not fit its type: a config problem, raised where a model is
    fitted (so callers that catch either ConfigError or ModelError see it)."""


class ParamsProblem(NamedTuple):
    """One problem of a params mapping. ``key`` is the param's name, ``kind`` is
    ``unknown``, ``missing`` or ``invalid``; ``message`` says what was expected and found."""

    key: str
    kind: Literal["unknown", "missing", "invalid"]
    message: str


def params_problems(error: ValidationError) -> list[ParamsProblem]:
    """The problems of a params model's ValidationError, one per key, each on one line."""
    problems: list[ParamsProblem] = []
    seen: set[str] = set()
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<params>"
        if key in seen:  # a union reports one error per member: the first says enough
            continue
        seen.add(key)
        if item["type"] == "extra_forbidden":
            problems.append(ParamsProblem(key, "unknown", "unknown key"))
        elif item["type"] == "missing":
            problems.append(ParamsProblem(key, "missing", "missing key"))
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(ParamsProblem(key, "invalid", f"{message}, found {item['input']!r}"))
    return problems


BLAS_THREADS: ContextVar[int | None] = ContextVar("recsys_blas_threads", default=None)
"""BLAS threads a fit may use for its dense algebra; None: every core. Models fitted side
by side (``run.parallel_models``) get one each, so they share the cores."""


def blas_threads() -> int:
    return BLAS_THREADS.get() or os.cpu_count() or 1


class Training(NamedTuple):
    """What a fit gets besides its validated params (:meth:`ModelType.train`)."""

    user_items: sp.csr_matrix
    """users x items, float weights, at least one interaction."""
    seed: int
    name: str = "model"
    """The model's name, for messages."""
    show_progress: bool | None = None
    """A library's own progress bar: None shows it on a terminal only."""
    progress: Progress | None = None
    """Called after each iteration (see :meth:`ModelType.fit`)."""
    given: dict[str, Any] | None = None
    """The params as the config gave them, for messages."""


class Folding(NamedTuple):
    """What a fold-in gets besides its validated params (:meth:`ModelType.fold`)."""

    item_factors: np.ndarray
    """float32 (n_items, dim), fixed."""
    user_items: sp.csr_matrix
    """The users to fold in: CSR (users, n_items)."""
    extras: dict[str, np.ndarray]
    """The arrays the fit saved beside the factors (:attr:`Embeddings.extras`)."""


class ModelType(ABC):
    """One kind of model. Subclasses set the class attributes and implement ``train`` (and
    ``fold`` where they can fold users in); ``fit`` and ``fold_in`` check around them.

    Instances are stateless: every ``fit`` builds a fresh model, so one instance serves
    every config and thread.
    """

    name: ClassVar[str]
    """Registry key, the ``type`` of a model in the config."""
    params: ClassVar[type[ModelParams]]
    """The typed params model that a config's ``params`` must satisfy."""
    source: ClassVar[Source] = "interactions"
    """``interactions``: ``fit`` trains on the users x items matrix. ``vectors``: the model
    reads vectors made elsewhere (the pipeline stage reads them; ``fit`` is not used)."""
    personalized: ClassVar[bool] = True
    """False for a baseline that ranks items the same way for everyone (``popular``)."""
    space: ClassVar[dict[str, Dimension]] = {}
    """Default tuning space of ``recsys tune``: param name -> its search dimension."""

    def parse_params(self, params: dict[str, Any], name: str = "model") -> ModelParams:
        """``params`` validated against :attr:`params`; :class:`ModelParamsError` names every
        unknown key and every bad value (``model m1: unknown parameter(s) factorz for als ...``)."""
        try:
            return self.params.model_validate(params)
        except ValidationError as exc:
            raise ModelParamsError(f"model {name}: {self.describe_problems(params_problems(exc))}") from None

    def describe_problems(self, problems: list[ParamsProblem]) -> str:
        """One line for a list of params problems of this type."""
        parts = []
        unknown = sorted(p.key for p in problems if p.kind == "unknown")
        if unknown:
            parts.append(
                f"unknown parameter(s) {', '.join(unknown)} for {self.name} "
                f"(expected some of: {', '.join(sorted(self.params.model_fields))})"
            )
        missing = sorted(p.key for p in problems if p.kind == "missing")
        if missing:
            parts.append(f"missing parameter(s) {', '.join(missing)} for {self.name}")
        invalid = [f"{p.key}: {p.message}" for p in problems if p.kind == "invalid"]
        if invalid:
            parts.append(f"invalid parameter(s) for {self.name}: {'; '.join(invalid)}")
        return "; ".join(parts)

    def load(self) -> None:
        """Import what fitting needs, now. Called before models are fitted side by side:
        a library imported from two threads at once can deadlock on its import locks."""
        return None

    def fit(
        self,
        params: dict[str, Any],
        user_items: sp.csr_matrix,
        seed: int,
        name: str = "model",
        show_progress: bool | None = None,
        *,
        progress: Progress | None = None,
    ) -> Embeddings:
        """Train on a users x items CSR matrix (float weights) and return the factors.

        params: the config's params of this type, validated here; ``seed`` is the default
        of a ``random_state`` param. Same params, matrix and seed, same factors (where the
        type's params make it deterministic). Raises :class:`ModelError` for an empty
        matrix or unusable factors, :class:`ModelParamsError` for bad params.

        progress: where the type trains in iterations, called after each one as
        ``progress(iterations_done, user_factors, item_factors)`` with the current factors
        (read them, do not keep or change them); an exception it raises stops training and
        propagates out of ``fit`` (``recsys tune`` prunes trials this way). Types without
        iterations, or that do not support it, may ignore it.

        Every type shares these checks; what it does is :meth:`train`.
        """
        if self.source == "interactions" and user_items.nnz == 0:
            raise ModelError(f"model {name}: no interactions to train on")
        seeded = {"random_state": seed, **params} if "random_state" in self.params.model_fields else params
        typed = self.parse_params(seeded, name)
        return self.train(typed, Training(user_items, seed, name, show_progress, progress, params))

    @abstractmethod
    def train(self, params: Any, data: Training) -> Embeddings:
        """The type's own training, on params already validated (an instance of
        :attr:`params`) and a non-empty matrix (``data.user_items``): see :meth:`fit`."""

    def tuning_cache(
        self,
        params: dict[str, Any],
        space: dict[str, Dimension],
        user_items: sp.csr_matrix,
        seed: int,
        name: str,
    ) -> Any | None:
        """Work every trial of ``recsys tune`` on ``user_items`` can share (the spectral type's
        SVD at the space's largest factors), made once for the whole search; ``params``: the
        config's params of the model, ``space``: the searched dimensions. None (the default):
        each trial fits."""
        return None

    def fit_cached(self, cache: Any, params: dict[str, Any], seed: int, name: str) -> Embeddings | None:
        """A trial's factors from the :meth:`tuning_cache` of its training matrix, equal in
        meaning to :meth:`fit` at ``params``; None where the cache cannot serve them (the trial
        fits)."""
        return None

    def fold_in(
        self,
        params: dict[str, Any],
        item_factors: np.ndarray,
        user_items: sp.csr_matrix,
        extras: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """User vectors for new or changed users against fixed item factors, without
        retraining. item_factors: float32 (n_items, dim); user_items: CSR (users, n_items);
        extras: the arrays the fit saved beside the factors (:attr:`Embeddings.extras`).
        Returns float32 (users, dim). Types that cannot fold in raise :class:`ModelError`;
        what a type that can does is :meth:`fold`."""
        if type(self).fold is ModelType.fold:
            from recsys.models import MODEL_TYPES

            able = [name for name, t in MODEL_TYPES.items() if t.folds_in]
            raise ModelError(
                f"a {self.name} model cannot fold users in; model types that can: {', '.join(able)}"
            )
        return self.fold(
            self.parse_params(params, "fold-in"), Folding(item_factors, user_items, extras or {})
        )

    def fold(self, params: Any, data: Folding) -> np.ndarray:
        """The type's own fold-in (types that can fold users in override it): see :meth:`fold_in`."""
        raise NotImplementedError

    @property
    def folds_in(self) -> bool:
        """Whether the type can fold new users in (it overrides :meth:`fold`)."""
        return type(self).fold is not ModelType.fold

    def __repr__(self) -> str:
        return f"<model type {self.name!r} ({type(self).__name__})>"
