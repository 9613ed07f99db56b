"""Hyper-parameter search for one model on a validation split (Prefect-free).

Each trial trains the model with one parameter set on the training part, ranks every
validation user's unseen items exactly (so the index plays no part) and scores the
lists against the held-out part with :func:`recsys.evaluate.ranking_metrics`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import ValidationError

from recsys.config import ModelConfig, PipelineConfig
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.evaluate import ranking_metrics
from recsys.index import ExactIndex
from recsys.models import MODEL_TYPES, get_model_type, train
from recsys.models.base import params_problems
from recsys.recommend import search_all


class _DefaultSpaces(Mapping[str, dict[str, list[Any]]]):
    """Each registered model type's default tuning space, read from the registry on every
    access (``get_model_type(t).space``); kept for callers of the old ``DEFAULT_SPACES``."""

    def __getitem__(self, model_type: str) -> dict[str, list[Any]]:
        if model_type not in MODEL_TYPES:
            raise KeyError(model_type)
        return MODEL_TYPES[model_type].space

    def __iter__(self) -> Iterator[str]:
        return iter(MODEL_TYPES)

    def __len__(self) -> int:
        return len(MODEL_TYPES)


DEFAULT_SPACES: Mapping[str, dict[str, list[Any]]] = _DefaultSpaces()
"""Deprecated: use ``get_model_type(t).space``."""


def trial_params(
    model: ModelConfig, space: dict[str, list[Any]] | None, method: str, trials: int, seed: int
) -> list[dict[str, Any]]:
    """Parameter sets to try: the full grid (``grid``, cut to ``trials`` if smaller) or
    ``trials`` distinct random draws (``random``, seeded). Each set is the model's own
    params updated by the drawn values."""
    model_type = get_model_type(model.type)
    if model_type.source != "interactions":
        raise ConfigError(f"model {model.name}: a {model.type} model is not trained, so not tuned")
    space = space or model_type.space
    allowed = set(model_type.params.model_fields)
    unknown = sorted(set(space) - allowed)
    if unknown:
        raise ConfigError(f"tune space: unknown parameter(s) {', '.join(unknown)} for {model.type}")
    names = sorted(space)
    grid = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    if method == "grid":
        chosen = grid[:trials]
    elif method == "random":
        rng = np.random.default_rng(seed)
        chosen = [grid[i] for i in rng.permutation(len(grid))[: min(trials, len(grid))]]
    else:
        raise ConfigError(f"tune method must be grid or random, found {method!r}")
    param_sets = [{**model.params, **values} for values in chosen]
    for params in param_sets:  # a value out of range fails now, not after hours of trials
        try:
            model_type.params.model_validate(params)
        except ValidationError as exc:
            raise ConfigError(f"tune space: {model_type.describe_problems(params_problems(exc))}") from None
    return param_sets


def run_trial(
    model: ModelConfig,
    params: dict[str, Any],
    train_items: sp.csr_matrix,
    validation: sp.csr_matrix,
    ks: list[int],
    seed: int,
) -> dict[str, Any]:
    """Train with ``params`` on ``train_items`` and score exact top-max(k) lists of the
    users with validation items. Returns the params, metrics and seconds."""
    started = time.perf_counter()
    embeddings = train(model.type, params, train_items, seed, model.name, show_progress=False)
    users = np.flatnonzero(np.diff(validation.indptr) > 0)
    n = max(ks)
    ids = np.full((train_items.shape[0], n), -1, dtype=np.int64)
    ids[users], _ = search_all(
        ExactIndex(embeddings.item_factors, "dot"),
        embeddings.user_factors[users],
        n,
        train_items[users],
        embeddings.item_factors,
    )
    popularity = np.diff(train_items.tocsc().indptr).astype(np.float64)
    metrics = ranking_metrics(ids, validation, ks, popularity)
    return {"params": params, "metrics": metrics, "seconds": round(time.perf_counter() - started, 3)}


def best_trial(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The trial with the highest ``metric`` (the first of equals)."""
    if not results:
        raise ConfigError("no trials ran")
    if metric not in results[0]["metrics"]:
        raise ConfigError(f"tune metric {metric!r} not measured (have: {', '.join(results[0]['metrics'])})")
    return max(results, key=lambda r: r["metrics"][metric])


def tuned_config(config: PipelineConfig, model_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The config as a dict with one model's params replaced."""
    raw = config.to_dict()
    for model in raw["models"]:
        if model["name"] == model_name:
            model["params"] = params
    return raw


def validation_data(config: PipelineConfig, input_path: str) -> tuple[Interactions, sp.csr_matrix, dict]:
    """Training interactions and a validation CSR over their ids: the input split with the
    config's ``evaluate.split`` (random 20% per user when that is ``none``), seeded with
    ``seed + 7`` so that it differs from the run's own split."""
    from recsys import storage
    from recsys.data.interactions import clean_table, interactions_from_table
    from recsys.data.splits import map_holdout, split_table

    frame, _ = storage.read_interactions_table(input_path)
    table = clean_table(frame, source=str(input_path))
    split = config.evaluate.split
    method = split.method if split.method != "none" else "random"
    train_table, test_table = split_table(table, method, split.fraction, split.n, config.seed + 7, input_path)
    interactions = interactions_from_table(train_table)
    validation, stats = map_holdout(interactions, test_table)
    return interactions, validation, {"method": method, **stats}
