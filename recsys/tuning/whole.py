"""``recsys tune --all``: every model of the config the search can improve, in turn, then
the blends' weights over the tuned parts, within one budget.

Order: the trained models in the order of the config (a ``precomputed`` model is not
trained; a type without a search space, such as ``popular``, has nothing to search unless
``tune.space`` gives one), then the blends (a blend of blends after the blends it is made
of), each over its parts at their tuned params, made once for all the blends.

Budget: every model gets ``trials`` trials after its baseline (``--trials``,
``tune.trials``); ``timeout`` (``--timeout``, ``tune.timeout_seconds``) bounds the whole
search: each model in turn gets an equal share of what is left of it (left / models
still to tune), so time a quick search leaves goes to the ones after it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import ModelConfig, PipelineConfig, parse_config
from recsys.errors import ConfigError
from recsys.models import get_model_type
from recsys.models.blend import BlendParams
from recsys.tuning.study import TuneResult, tune

log = logging.getLogger(__name__)


def tuned_models(config: PipelineConfig) -> tuple[list[ModelConfig], dict[str, str]]:
    """The models ``--all`` tunes, in order (trained ones, then blends, each after the
    blends among its parts), and those it leaves as they are, with why."""
    trained, blends, skipped = [], [], {}
    for model in config.models:
        model_type = get_model_type(model.type)
        searched = model.name in config.tune.space
        if model.type == "blend":
            if len(BlendParams.model_validate(model.params).parts) > 1 or searched:
                blends.append(model)
            else:
                skipped[model.name] = "a blend of one part has no weights to tune"
        elif model_type.source != "interactions":
            skipped[model.name] = f"a {model.type} model is not trained"
        elif not model_type.space and not searched:
            skipped[model.name] = (
                f"the {model.type} type has no search space (tune.space.{model.name} gives one)"
            )
        else:
            trained.append(model)
    ordered, pending = [], list(blends)
    while pending:
        done = {m.name for m in ordered}
        ready = [
            m
            for m in pending
            if all(p in done or p not in {b.name for b in pending} for p in m.params["parts"])
        ]
        ordered += ready
        pending = [m for m in pending if m not in ready]
    if not trained and not ordered:
        raise ConfigError("tune --all: no model of the config has params to search")
    return trained + ordered, skipped


def tune_all(
    config: PipelineConfig,
    train_items: sp.csr_matrix,
    validation: sp.csr_matrix,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    metric: str | None = None,
    sampler: str | None = None,
    split: dict[str, Any] | None = None,
    ids: tuple[Any, Any] | None = None,
) -> list[TuneResult]:
    """Tune every model :func:`tuned_models` names, in turn (see the module for the
    budget): one :class:`TuneResult` per model, blends last, over the tuned parts."""
    from recsys.tuning.blend import part_vectors
    from recsys.tuning.outputs import tuned_models_config

    models, skipped = tuned_models(config)
    for name, why in skipped.items():
        log.info("tune --all: %s kept as it is (%s)", name, why)
    timeout = timeout if timeout is not None else config.tune.timeout_seconds
    started = time.perf_counter()
    results: list[TuneResult] = []
    current = config
    made: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, model in enumerate(models):
        share = None
        if timeout is not None:
            left = timeout - (time.perf_counter() - started)
            share = max(left / (len(models) - i), 0.001)  # trial 0 always runs
        parts = None
        if model.type == "blend":
            (blend,) = current.select_models([model.name])
            made.update(part_vectors(current, blend, train_items, made, ids))
            parts = made
        result = tune(
            current,
            model.name,
            train_items,
            validation,
            trials=trials,
            timeout=share,
            metric=metric,
            sampler=sampler,
            split=split,
            parts=parts,
            ids=ids,
        )
        results.append(result)
        current = parse_config(tuned_models_config(current, {model.name: result.best_params}))
    return results
