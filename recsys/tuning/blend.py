"""``recsys tune --model <blend>``: a search over a blend's weights only.

The blend's parts are made once, on the training part of the validation split, at their
config params (or as the caller hands them over: ``recsys tune --all`` passes the parts
it has just tuned), and each part's scale is estimated once (:func:`part_scale`). A trial
then costs the blend's scoring alone: the parts' vectors side by side, each multiplied by
``sqrt(weight * scale)``, exact top-N lists of the validation users, their metrics.

The space: every part's weight log-uniform in [:data:`WEIGHT_LOW`, :data:`WEIGHT_HIGH`]
except the first part's, fixed at 1.0 (only the ratios of the weights change the lists);
``tune.space.<blend>`` replaces the dimension of any part it names (the first part's too,
which is then searched). Trial 0 measures the config's own weights, as given.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import ModelConfig, PipelineConfig, spec_dimension
from recsys.errors import ConfigError, ModelError
from recsys.models import get_model_type
from recsys.models.base import Dimension, FloatRange
from recsys.models.blend import BlendParams, blend_vectors, part_scale
from recsys.tuning.space import contains, describe_dimension, rounded, suggest

log = logging.getLogger(__name__)

WEIGHT_LOW = 0.05
WEIGHT_HIGH = 20.0
"""The default range of a part's weight (log-uniform), the first part's fixed at 1.0."""

Vectors = tuple[np.ndarray, np.ndarray]


def blend_space(config: PipelineConfig, model: ModelConfig) -> dict[str, Dimension]:
    """Part name -> the dimension of its weight: every part but the first log-uniform in
    [0.05, 20], each replaced by ``tune.space.<blend>.<part>`` where given."""
    parts = list(BlendParams.model_validate(model.params).parts)
    space: dict[str, Dimension] = {part: FloatRange(WEIGHT_LOW, WEIGHT_HIGH, log=True) for part in parts[1:]}
    for name, spec in config.tune.space.get(model.name, {}).items():
        if name not in parts:
            raise ConfigError(f"tune space: {name} is not a part of the blend {model.name}")
        space[name] = spec_dimension(spec)
    if not space:
        raise ConfigError(
            f"model {model.name}: a blend of one part has no weights to tune (only their ratios count)"
        )
    return space


def part_vectors(
    config: PipelineConfig,
    model: ModelConfig,
    train_items: sp.csr_matrix,
    made: dict[str, Vectors] | None = None,
    ids: tuple[Any, Any] | None = None,
) -> dict[str, Vectors]:
    """The (user, item) vectors of each part of the blend ``model`` on ``train_items``:
    those in ``made`` as they are, trained parts fitted once at their config params, a
    blend among the parts made from its own parts at its config weights, precomputed parts
    read and aligned to ``ids`` (the training users' and items' ids)."""
    made = dict(made or {})
    models = {m.name: m for m in config.models}
    out: dict[str, Vectors] = {}
    for part in BlendParams.model_validate(model.params).parts:
        if part not in made:
            made[part] = _part(config, models[part], train_items, made, ids)
        out[part] = made[part]
    return out


def _part(
    config: PipelineConfig,
    part: ModelConfig,
    train_items: sp.csr_matrix,
    made: dict[str, Vectors],
    ids: tuple[Any, Any] | None,
) -> Vectors:
    from recsys.models.blend import make_blend

    model_type = get_model_type(part.type)
    if part.type == "blend":
        inner = part_vectors(config, part, train_items, made, ids)
        embeddings, _ = make_blend(part.name, part.params, inner, train_items, config.seed)
    elif model_type.source == "interactions":
        log.info("blend part %s: training %s once on the training part", part.name, part.type)
        embeddings = model_type.fit(part.params, train_items, config.seed, part.name, False)
    else:
        if ids is None:
            raise ConfigError(f"tune: the {part.type} part {part.name} needs the table's ids to align")
        from recsys.storage.vectors import align, read_vectors

        params = part.params
        users, items = ids
        item_ids, item_vectors = read_vectors(params["items"], params.get("item_ids"), params.get("column"))
        user_ids, user_vectors = read_vectors(
            params["users"], params.get("user_ids"), params.get("column"), "user"
        )
        return (
            align(user_ids, user_vectors, users, params["users"], "user"),
            align(item_ids, item_vectors, items, params["items"], "item"),
        )
    return embeddings.user_factors, embeddings.item_factors


def tune_blend(
    config: PipelineConfig,
    model: ModelConfig,
    train_items: sp.csr_matrix,
    validation: sp.csr_matrix,
    *,
    trials: int,
    timeout: float | None,
    metric: str,
    sampler_name: str,
    split: dict[str, Any],
    parts: dict[str, Vectors] | None = None,
    ids: tuple[Any, Any] | None = None,
) -> Any:
    """Search the weights of the blend ``model`` (see the module); a :class:`TuneResult`
    whose params are the weights by part name and whose ``best_params`` are the blend's
    params with the best trial's ``parts``."""
    import optuna

    from recsys.tuning.study import TuneResult, _sampler, _scorer, _trial_record, format_params

    space = blend_space(config, model)
    weights = dict(BlendParams.model_validate(model.params).parts)
    vectors = part_vectors(config, model, train_items, parts, ids)
    scales = {}
    for part, (users, items) in vectors.items():
        scales[part] = part_scale(users, items, train_items, config.seed)
        if scales[part] <= 0:
            raise ConfigError(f"tune: part {part} of {model.name} scores every sampled training pair 0")
    scorer = _scorer(config, metric, train_items, validation)
    records: list[dict[str, Any]] = []
    best = {"value": -math.inf}

    def objective(trial: Any) -> float:
        if trial.number == 0:  # the config's weights, as given
            drawn = {
                p: suggest(trial, p, d) if contains(d, weights[p]) else weights[p] for p, d in space.items()
            }
        else:
            drawn = {p: rounded(suggest(trial, p, d), d) for p, d in space.items()}
        trial_weights = {p: float(drawn.get(p, 1.0 if trial.number else weights[p])) for p in weights}
        trial.set_user_attr("params", trial_weights)
        multipliers = [trial_weights[p] * scales[p] for p in vectors]
        user_factors = blend_vectors([v[0] for v in vectors.values()], multipliers)
        item_factors = blend_vectors([v[1] for v in vectors.values()], multipliers)
        metrics = scorer.score(user_factors, item_factors)
        trial.set_user_attr("metrics", metrics)
        trial.report(metrics[metric], 1)
        return float(metrics[metric])

    def on_trial(study: Any, frozen: Any) -> None:
        record = _trial_record(frozen)
        records.append(record)
        label = f"trial {frozen.number}/{trials}" + (" (the config's weights)" if frozen.number == 0 else "")
        if record["state"] == "complete":
            best["value"] = max(best["value"], record["value"])
            outcome = f"{metric} {record['value']:.4f} (best {best['value']:.4f})"
        else:
            outcome = f"failed: {record['error'] or 'see the log above'}"
        log.info("%s %s -> %s %.2f s", label, format_params(record["params"]), outcome, record["seconds"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=_sampler(sampler_name, config.seed, trials),
        pruner=optuna.pruners.NopPruner(),
    )
    study.enqueue_trial({p: weights[p] for p, d in space.items() if contains(d, weights[p])})
    log.info(
        "tuning the weights of %s (parts %s, each made once): trial 0 = the config's weights, then %d %s "
        "trials%s, by %s; space: %s",
        model.name,
        ", ".join(weights),
        trials,
        sampler_name,
        f" or {timeout:g} s" if timeout else "",
        metric,
        "; ".join(f"{p} {describe_dimension(d)}" for p, d in space.items()),
    )
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials + 1, timeout=timeout, catch=(ModelError,), callbacks=[on_trial])
    seconds = round(time.perf_counter() - started, 3)
    complete = [r for r in records if r["state"] == "complete"]
    if not complete:
        raise ConfigError(f"tune: no trial of {model.name} completed (see the errors above)")
    winner = max(complete, key=lambda r: r["value"])
    return TuneResult(
        model=model.name,
        model_type=model.type,
        metric=metric,
        sampler=sampler_name,
        pruning=False,
        space={p: describe_dimension(d) for p, d in space.items()},
        trials=records,
        baseline=records[0],
        best=winner,
        best_params={
            **{k: v for k, v in model.params.items() if k != "scales"},
            "parts": dict(winner["params"]),
        },
        seconds=seconds,
        split=split,
    )
