"""Hyper-parameter search for one model on a validation split (Prefect-free, on Optuna).

The validation split is carved from the training data only: with an ``evaluate.split``
the input is first split exactly as a run splits it and only the training part is kept;
then a random ``tune.validation_fraction`` of each user's items is held out, seeded with
``seed + 7``. A supplied ``evaluate.holdout`` table is never read.

Trial 0 measures the config's own params (enqueued, so the report always shows what the
search gained over them); then ``tune.trials`` trials draw each param from its dimension
(the model type's ``space``, or ``tune.space`` of the config) with a seeded TPE or random
sampler. Each trial trains on the training part, ranks every validation user's unseen
items exactly (no index plays a part) and scores the lists with
:func:`recsys.evaluate.ranking_metrics`. Part-way through training (at a few
power-of-two iterations) the metric of at most 2,000 sampled validation users is
reported, and Optuna's MedianPruner stops a trial below the median of the complete trials
at the same iteration.
"""

from __future__ import annotations

import base64
import html
import inspect
import io
import itertools
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml
from pydantic import ValidationError

from recsys.config import (
    DEFAULT_CONFIG,
    MODEL_PATH_PARAMS,
    PATH_KEYS,
    TUNE_METRIC,
    ModelConfig,
    PipelineConfig,
    spec_dimension,
)
from recsys.data.interactions import Interactions, InteractionTable
from recsys.errors import ConfigError, ModelError
from recsys.evaluate import ranking_metrics
from recsys.index import ExactIndex
from recsys.models import MODEL_TYPES, get_model_type
from recsys.models.base import Choice, Dimension, FloatRange, IntRange, params_problems
from recsys.recommend import search_all

log = logging.getLogger(__name__)

VALIDATION_SEED_OFFSET = 7
"""The validation split's seed is the config's ``seed`` + this: another cut than the run's."""
PRUNE_SAMPLE_USERS = 2000
"""Validation users scored at each intermediate report (all of them for the final value)."""
PRUNER_STARTUP_TRIALS = 5
"""Complete trials before the pruner stops any (the baseline is one of them)."""
WARMUP_ITERATIONS = 2
"""No intermediate report, so no pruning, before this many iterations."""


# ------------------------------------------------------------------ search spaces


def as_dimension(value: Any) -> Dimension:
    """A search dimension; a list or tuple of values (the old format) is a :class:`Choice`."""
    if isinstance(value, IntRange | FloatRange | Choice):
        return value
    if isinstance(value, list | tuple) and value:
        return Choice(tuple(value))
    raise ConfigError(f"not a search dimension: {value!r} (expected IntRange, FloatRange or Choice)")


def dimension_values(dimension: Dimension) -> tuple[Any, ...]:
    """The values that bound a dimension: both ends of a range, every value of a choice
    (each must be a valid value of the param)."""
    if isinstance(dimension, Choice):
        return dimension.values
    return (dimension.low, dimension.high)


def describe_dimension(dimension: Dimension) -> str:
    """``16 .. 1024 (log)``, ``0.01 .. 1000.0``, ``one of 32, 64``."""
    if isinstance(dimension, Choice):
        return "one of " + ", ".join(str(v) for v in dimension.values)
    return f"{dimension.low} .. {dimension.high}" + (" (log)" if dimension.log else "")


def model_space(config: PipelineConfig, model: ModelConfig) -> dict[str, Dimension]:
    """One model's search space: its type's ``space``, each param overridden by the
    config's ``tune.space.<model name>`` (checked when the config loaded)."""
    model_type = get_model_type(model.type)
    if model_type.source != "interactions":
        raise ConfigError(f"model {model.name}: a {model.type} model is not trained, so not tuned")
    space = {name: as_dimension(dimension) for name, dimension in model_type.space.items()}
    for name, spec in config.tune.space.get(model.name, {}).items():
        space[name] = spec_dimension(spec)
    if not space:
        raise ConfigError(
            f"model {model.name}: the {model.type} type has no tuning space; give one as "
            f"tune.space.{model.name} in the config"
        )
    unknown = sorted(set(space) - set(model_type.params.model_fields))
    if unknown:
        raise ConfigError(f"tune space: unknown parameter(s) {', '.join(unknown)} for {model.type}")
    return space


def checkpoints(iterations: int) -> list[int]:
    """Iterations after which a trial reports its intermediate metric: the powers of two
    from max(2, iterations / 8) up to, not including, ``iterations`` (a few per trial, at
    the same iterations across trials, as the median pruner compares like with like)."""
    first = max(WARMUP_ITERATIONS, math.ceil(iterations / 8))
    return [2**e for e in range(1, max(iterations, 1).bit_length() + 1) if first <= 2**e < iterations]


def _suggest(trial: Any, name: str, dimension: Dimension) -> Any:
    if isinstance(dimension, IntRange):
        return trial.suggest_int(name, dimension.low, dimension.high, log=dimension.log)
    if isinstance(dimension, FloatRange):
        return trial.suggest_float(name, dimension.low, dimension.high, log=dimension.log)
    return trial.suggest_categorical(name, list(dimension.values))


def _contains(dimension: Dimension, value: Any) -> bool:
    if isinstance(dimension, Choice):
        return value in dimension.values
    return isinstance(value, int | float) and dimension.low <= value <= dimension.high


def _rounded(value: Any, dimension: Dimension) -> Any:
    """A drawn float to 4 significant digits (within its range): the value measured is the
    value written to the config, and it reads like one a person would write."""
    if not isinstance(dimension, FloatRange) or not isinstance(value, float):
        return value
    return min(max(float(f"{value:.4g}"), dimension.low), dimension.high)


# ------------------------------------------------------------------ validation split


def carve_validation(
    config: PipelineConfig, table: InteractionTable, source: str = "interactions"
) -> tuple[InteractionTable, InteractionTable, dict[str, Any]]:
    """(training, validation, info) rows for tuning, from the clean input ``table``.

    With an ``evaluate.split``, the table is first split exactly as a run splits it and
    only the training part is kept; validation is then a random
    ``tune.validation_fraction`` of each user's items of that part, seeded with
    ``seed + 7``: no held-out pair of the run is ever used to choose params."""
    from recsys.data.splits import split_table

    split = config.evaluate.split
    if split.method != "none":
        table, _ = split_table(table, split.method, split.fraction, split.n, config.seed, source)
    fraction = config.tune.validation_fraction
    seed = config.seed + VALIDATION_SEED_OFFSET
    train, validation = split_table(table, "random", fraction, 1, seed, source)
    info = {"run_split": split.method, "method": "random", "fraction": fraction, "seed": seed}
    return train, validation, info


def validation_data(config: PipelineConfig, input_path: str) -> tuple[Interactions, sp.csr_matrix, dict]:
    """Training interactions and a validation CSR over their ids (see
    :func:`carve_validation`), with what the split kept and dropped."""
    from recsys import storage
    from recsys.data.interactions import clean_table, interactions_from_table
    from recsys.data.splits import map_holdout

    frame, _ = storage.read_interactions_table(input_path)
    table = clean_table(frame, source=str(input_path))
    train, held_out, info = carve_validation(config, table, str(input_path))
    interactions = interactions_from_table(train)
    validation, stats = map_holdout(interactions, held_out)
    return interactions, validation, {**info, "training_interactions": interactions.nnz, **stats}


# ------------------------------------------------------------------ scoring


class Scorer:
    """Ranking metrics of exact top-max(k) lists of the validation users (their training
    items excluded), for all of them or for a fixed sample of at most ``sample`` users."""

    def __init__(
        self, train_items: sp.csr_matrix, validation: sp.csr_matrix, ks: list[int], sample: int, seed: int
    ) -> None:
        self.train_items = train_items.tocsr()
        self.validation = validation.tocsr()
        self.ks = ks
        self.users = np.flatnonzero(np.diff(self.validation.indptr) > 0)
        rng = np.random.default_rng(seed)
        self.sample = np.sort(rng.choice(self.users, size=min(sample, len(self.users)), replace=False))
        mask = np.zeros(self.validation.shape[0], dtype=np.float32)
        mask[self.sample] = 1.0
        self.sample_validation = sp.csr_matrix(sp.diags(mask) @ self.validation)
        self.popularity = np.diff(self.train_items.tocsc().indptr).astype(np.float64)

    def score(
        self, user_factors: np.ndarray, item_factors: np.ndarray, sample: bool = False
    ) -> dict[str, Any]:
        users, holdout = (self.sample, self.sample_validation) if sample else (self.users, self.validation)
        n = max(self.ks)
        item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        queries = np.ascontiguousarray(user_factors[users], dtype=np.float32)
        ids = np.full((self.train_items.shape[0], n), -1, dtype=np.int64)
        ids[users], _ = search_all(
            ExactIndex(item_factors, "dot"), queries, n, self.train_items[users], item_factors
        )
        return ranking_metrics(ids, holdout, self.ks, self.popularity)


# ------------------------------------------------------------------ the study


@dataclass
class TuneResult:
    """What a search found. ``trials``: one record per trial (see :func:`tune`);
    ``best_params``: the model's params with the best trial's values (what is written)."""

    model: str
    model_type: str
    metric: str
    sampler: str
    pruning: bool
    space: dict[str, str]
    trials: list[dict[str, Any]]
    baseline: dict[str, Any]
    best: dict[str, Any]
    best_params: dict[str, Any]
    seconds: float
    split: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        states = [t["state"] for t in self.trials]
        return {state: states.count(state) for state in ("complete", "pruned", "failed")}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FailedTrialFilter(logging.Filter):
    """Drops Optuna's warning (with traceback) for a trial that failed with a caught
    ModelError: the trial's own line says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Trial ") and " failed with" in record.getMessage())


def _quiet_failed_trials() -> None:
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _FailedTrialFilter) for f in logger.filters):
        logger.addFilter(_FailedTrialFilter())


def metric_name(config: PipelineConfig, metric: str | None = None) -> str:
    """The metric a search maximises: ``metric``, else ``tune.metric``, else ndcg at the
    largest ``evaluate.k``; :class:`ConfigError` if it is not ``<name>@<k>``."""
    metric = metric or config.tune.metric or f"ndcg@{max(config.evaluate.ks)}"
    if not TUNE_METRIC.fullmatch(metric):
        raise ConfigError(
            f"tune metric must look like ndcg@10 (precision, recall, ndcg, map, hit_rate or "
            f"coverage at a cut-off), found {metric!r}"
        )
    return metric


def format_params(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def tune(
    config: PipelineConfig,
    model_name: str,
    train_items: sp.csr_matrix,
    validation: sp.csr_matrix,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    metric: str | None = None,
    sampler: str | None = None,
    pruning: bool | None = None,
    split: dict[str, Any] | None = None,
) -> TuneResult:
    """Search one model's params: trial 0 measures the config's own params, then up to
    ``trials`` trials (``tune.trials``) within ``timeout`` seconds (``tune.timeout_seconds``;
    a running trial finishes), maximising ``metric`` on ``validation``.

    train_items: CSR (users, items) to train on; validation: CSR over the same ids, non-zero
    = a held-out item of the user. Each trial record: ``number``, ``baseline``, ``state``
    (complete, pruned or failed), ``params`` (the searched values; the rest are the
    config's), ``value`` (the metric), ``metrics`` (every ranking metric at each k),
    ``intermediate`` (iteration -> metric on the sampled users), ``pruned_at``, ``error``,
    ``seconds``. Raises :class:`ConfigError` for a model that cannot be tuned, a bad
    metric, or when no trial completes.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_failed_trials()
    settings = config.tune
    (model,) = config.select_models([model_name])
    model_type = get_model_type(model.type)
    space = model_space(config, model)
    n_trials = trials if trials is not None else settings.trials
    timeout = timeout if timeout is not None else settings.timeout_seconds
    sampler_name = sampler or settings.sampler
    pruning = settings.pruning if pruning is None else pruning
    metric = metric_name(config, metric)
    ks = sorted({*config.evaluate.ks, int(metric.split("@")[1])})
    if max(ks) >= train_items.shape[1]:
        raise ConfigError(f"tune: lists of {max(ks)} items need more than the {train_items.shape[1]} items")
    if validation.nnz == 0:
        raise ConfigError("tune: the validation split is empty (too few items per user?)")
    scorer = Scorer(train_items, validation, ks, PRUNE_SAMPLE_USERS, config.seed)

    typed = model_type.parse_params(model.params, model.name)
    baseline = {name: getattr(typed, name) for name in space}
    outside = [f"{name}={value}" for name, value in baseline.items() if not _contains(space[name], value)]
    if outside:
        log.info("the config's %s lie(s) outside the search space: measured as given", ", ".join(outside))

    if sampler_name == "tpe":
        chosen: Any = optuna.samplers.TPESampler(
            seed=config.seed, n_startup_trials=max(5, min(10, n_trials // 3))
        )
    elif sampler_name == "random":
        chosen = optuna.samplers.RandomSampler(seed=config.seed)
    else:
        raise ConfigError(f"tune sampler must be tpe or random, found {sampler_name!r}")
    pruner: Any = (
        optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=WARMUP_ITERATIONS)
        if pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(direction="maximize", sampler=chosen, pruner=pruner)
    study.enqueue_trial(baseline)
    supports_progress = "progress" in inspect.signature(model_type.fit).parameters
    records: list[dict[str, Any]] = []
    best_value = -math.inf

    def objective(trial: Any) -> float:
        if trial.number == 0:  # the enqueued baseline: a value outside the space is used as given
            drawn = {
                name: _suggest(trial, name, d) if _contains(d, baseline[name]) else baseline[name]
                for name, d in space.items()
            }
        else:
            drawn = {name: _rounded(_suggest(trial, name, d), d) for name, d in space.items()}
        trial.set_user_attr("params", drawn)
        params = {**model.params, **drawn}
        iterations = getattr(model_type.parse_params(params, model.name), "iterations", None)
        marks = set(checkpoints(iterations)) if supports_progress and isinstance(iterations, int) else set()

        def progress(done: int, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
            if done not in marks:
                return
            if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
                raise ModelError(f"model {model.name}: factors not finite after {done} iterations (diverged)")
            value = scorer.score(user_factors, item_factors, sample=True).get(metric, 0.0)
            trial.report(value, done)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at iteration {done}")

        try:
            extra = {"progress": progress} if marks else {}
            embeddings = model_type.fit(params, train_items, config.seed, model.name, False, **extra)
            metrics = scorer.score(embeddings.user_factors, embeddings.item_factors)
        except ModelError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("metrics", metrics)
        if not supports_progress or iterations is None:  # no iterations to report: once, at the end
            trial.report(metrics[metric], 1)
        return float(metrics[metric])

    def on_trial(study: Any, frozen: Any) -> None:
        nonlocal best_value
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(
            frozen.state.name, frozen.state.name.lower()
        )
        intermediate = {
            int(step): round(float(v), 6) for step, v in sorted(frozen.intermediate_values.items())
        }
        seconds = frozen.duration.total_seconds() if frozen.duration else 0.0
        record = {
            "number": frozen.number,
            "baseline": frozen.number == 0,
            "state": state,
            "params": frozen.user_attrs.get("params", {}),
            "value": frozen.value if state == "complete" else None,
            "metrics": frozen.user_attrs.get("metrics") if state == "complete" else None,
            "intermediate": intermediate,
            "pruned_at": max(intermediate) if state == "pruned" and intermediate else None,
            "error": frozen.user_attrs.get("error"),
            "seconds": round(seconds, 3),
        }
        records.append(record)
        label = f"trial {frozen.number}/{n_trials}" + (" (the config's params)" if frozen.number == 0 else "")
        if state == "complete":
            best_value = max(best_value, record["value"])
            outcome = f"{metric} {record['value']:.4f} (best {best_value:.4f})"
        elif state == "pruned":
            last = intermediate.get(record["pruned_at"], float("nan"))
            outcome = f"pruned at iteration {record['pruned_at']} ({metric} {last:.4f} then)"
        else:
            outcome = f"failed: {record['error'] or 'see the log above'}"
        log.info("%s %s -> %s %.1f s", label, format_params(record["params"]), outcome, seconds)

    log.info(
        "tuning %s (%s): trial 0 = the config's params, then %d %s trials%s, by %s%s; space: %s",
        model.name,
        model.type,
        n_trials,
        sampler_name,
        f" or {timeout:g} s" if timeout else "",
        metric,
        ", pruning" if pruning else "",
        "; ".join(f"{name} {describe_dimension(d)}" for name, d in space.items()),
    )
    started = time.perf_counter()
    study.optimize(
        objective, n_trials=n_trials + 1, timeout=timeout, catch=(ModelError,), callbacks=[on_trial]
    )
    seconds = time.perf_counter() - started
    complete = [r for r in records if r["state"] == "complete"]
    if not complete:
        raise ConfigError(f"tune: no trial of {model.name} completed (see the errors above)")
    best = max(complete, key=lambda r: r["value"])  # the first of equals: the baseline wins a tie
    return TuneResult(
        model=model.name,
        model_type=model.type,
        metric=metric,
        sampler=sampler_name,
        pruning=pruning,
        space={name: describe_dimension(d) for name, d in space.items()},
        trials=records,
        baseline=records[0],
        best=best,
        best_params={**model.params, **best["params"]},
        seconds=round(seconds, 3),
        split=split or {},
    )


def best_trial(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The trial with the highest ``metric`` among those with metrics (the first of equals)."""
    measured = [r for r in results if r.get("metrics")]
    if not measured:
        raise ConfigError("no trials ran")
    if metric not in measured[0]["metrics"]:
        raise ConfigError(f"tune metric {metric!r} not measured (have: {', '.join(measured[0]['metrics'])})")
    return max(measured, key=lambda r: r["metrics"][metric])


# ------------------------------------------------------------------ outputs


def tuned_config(
    config: PipelineConfig,
    model_name: str,
    params: dict[str, Any],
    input_path: str | Path | None = None,
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """The config as a dict with one model's params replaced and ``input.path`` set to
    ``input_path``, the table the search ran on (when given: ``--interactions``).

    folder: where the tuned config is written. A relative path in a config file resolves
    against the file's folder, so every path of the config (input, output root, holdout,
    item rules, precomputed vectors) is written relative to ``folder`` (absolute where the
    two share no folder but the root): the tuned config then names the same files as the
    run it was tuned for, wherever it is run from. Paths the config holds relative (its
    defaults, ``output.root: data/outputs``) are relative to the working directory."""
    raw = config.to_dict()
    for model in raw["models"]:
        if model["name"] == model_name:
            model["params"] = params
    if input_path is not None:
        raw["input"]["path"] = str(input_path)
    if folder is not None:
        _paths_relative_to(raw, Path(folder))
    return raw


def _paths_relative_to(raw: dict[str, Any], folder: Path) -> None:
    """Rewrite the path values of a config dict (those ``load_config`` resolves) relative to
    ``folder``, in place."""
    base = os.path.abspath(folder)

    def relative(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        absolute = os.path.abspath(value)  # relative values: to the working directory
        if os.path.commonpath([absolute, base]) == os.path.sep:
            return absolute
        return os.path.relpath(absolute, base)

    for section, key in PATH_KEYS:
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section][key] = relative(raw[section][key])
    for model in raw.get("models") or []:
        if model.get("type") == "precomputed" and isinstance(model.get("params"), dict):
            for key in MODEL_PATH_PARAMS:
                if key in model["params"]:
                    model["params"][key] = relative(model["params"][key])


def output_paths(target: str | Path) -> dict[str, Path]:
    """The config, ``<config>.trials.json`` and ``<config>.report.html`` (suffix replaced)."""
    target = Path(target)
    return {
        "config": target,
        "trials": target.with_suffix(".trials.json"),
        "report": target.with_suffix(".report.html"),
    }


def default_output(model: str) -> str:
    """Where ``recsys tune`` writes the tuned config without ``--output``."""
    return f"configs/{model}-tuned.yaml"


def input_files(
    config: PipelineConfig, config_path: str | Path | None, input_path: str | Path | None
) -> list[str]:
    """Every file a search reads: the config file, the interactions table, and the files
    the config names (holdout, item rules, precomputed vectors). An output is never any
    of them (:func:`check_outputs`)."""
    raw = config.to_dict()
    files = [str(config_path or DEFAULT_CONFIG), input_path]
    files += [(raw.get(section) or {}).get(key) for section, key in PATH_KEYS if section != "output"]
    for model in raw.get("models") or []:
        if model.get("type") == "precomputed" and isinstance(model.get("params"), dict):
            files += [model["params"].get(key) for key in MODEL_PATH_PARAMS]
    return [str(f) for f in files if isinstance(f, str | Path) and str(f)]


def check_outputs(target: str | Path, inputs: list[str], force: bool = False) -> dict[str, Path]:
    """The three files :func:`write_outputs` writes, checked before anything runs: none of
    them is one of the search's ``inputs`` (refused even with ``force``), a folder or a
    special file; an existing one is replaced only with ``force`` (``--force``). A
    one-line ConfigError otherwise."""
    from recsys import storage

    paths = output_paths(target)
    for key, path in paths.items():
        option = "--output" if key == "config" else f"--output's {key} file"
        storage.check_output(path, inputs, force, option)
    return paths


def write_outputs(
    result: TuneResult,
    config: PipelineConfig,
    target: str | Path,
    input_path: str | Path | None = None,
    force: bool = False,
    inputs: list[str] | None = None,
) -> dict[str, Path]:
    """Write the tuned config (with a header line), all trials as JSON and the HTML report.
    The config keeps ``input_path``, the table the search ran on, and its paths are written
    relative to its own folder (:func:`tuned_config`). Returns their paths. Refused as
    :func:`check_outputs` says (``inputs``: the config's files and ``input_path`` by
    default): never an input, an existing file only with ``force``."""
    from recsys import storage

    if inputs is None:
        inputs = input_files(config, None, input_path)[1:]  # the config file is not known here
    paths = check_outputs(target, inputs, force)
    paths["config"].parent.mkdir(parents=True, exist_ok=True)
    counts = result.counts()
    best, baseline = result.best, result.baseline
    if best["baseline"]:
        verdict = "no trial beat the config's own params"
    else:
        verdict = f"the config's params: {baseline['value']:.4f}" if baseline["value"] is not None else ""
    fraction = result.split.get("fraction")
    on = f" on a {fraction:.0%} validation split of the training part" if fraction else ""
    header = (
        f"# {result.model}: best of {len(result.trials)} {result.sampler} trials "
        f"({counts['pruned']} pruned) by {result.metric} = {best['value']:.4f}"
        f"{f' ({verdict})' if verdict else ''}{on}\n"
    )
    raw = tuned_config(config, result.model, result.best_params, input_path, paths["config"].parent)
    storage.write_text(paths["config"], header + yaml.safe_dump(raw, sort_keys=False))
    storage.write_json(paths["trials"], result.to_dict())
    storage.write_text(paths["report"], report_html(result))
    return paths


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; font-size: 0.9em; }
tr.best td { background: #eef7ee; }
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    else:
        text = "" if value is None else str(value)
    return html.escape(text)


def _param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _html_table(header: list[str], rows: list[list[Any]], text_columns: int = 1, marks: Any = None) -> str:
    def row(tag: str, values: list[Any]) -> str:
        return "".join(
            f"<{tag}{' class=text' if i < text_columns else ''}>{_cell(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(
        f"<tr{' class=best' if marks and marks(i) else ''}>{row('td', r)}</tr>" for i, r in enumerate(rows)
    )
    return f"<table><tr>{row('th', header)}</tr>{body}</table>"


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode() + '">'


def _trials_plot(result: TuneResult) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4))
    axes = figure.add_subplot()
    complete = [t for t in result.trials if t["state"] == "complete"]
    pruned = [t for t in result.trials if t["state"] == "pruned" and t["intermediate"]]
    axes.scatter([t["number"] for t in complete], [t["value"] for t in complete], s=18, label="complete")
    if pruned:
        axes.scatter(
            [t["number"] for t in pruned],
            [t["intermediate"][t["pruned_at"]] for t in pruned],
            marker="x",
            color="grey",
            s=18,
            label="pruned (value when stopped, sampled users)",
        )
    running, best = [], -math.inf
    for t in sorted(complete, key=lambda t: t["number"]):
        best = max(best, t["value"])
        running.append((t["number"], best))
    running.append((max(t["number"] for t in result.trials), best))
    axes.step(*zip(*running, strict=True), where="post", color="C2", label="best so far")
    if result.baseline["value"] is not None:
        axes.axhline(result.baseline["value"], color="C1", linestyle="--", label="the config's params")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {result.metric}")
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def _params_plot(result: TuneResult) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    complete = [t for t in result.trials if t["state"] == "complete"]
    names = [n for n in result.space if any(isinstance(t["params"].get(n), int | float) for t in complete)]
    if not names or len(complete) < 2:
        return ""
    figure = Figure(figsize=(3 * len(names), 3))
    for i, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), i + 1)
        points = [
            (t["params"][name], t["value"])
            for t in complete
            if isinstance(t["params"].get(name), int | float)
        ]
        axes.scatter(*zip(*points, strict=True), s=14)
        best = result.best["params"].get(name)
        if isinstance(best, int | float):
            axes.axvline(best, color="C2", linewidth=1)
        if "(log)" in result.space[name]:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(name)
        if i == 0:
            axes.set_ylabel(result.metric)
    return _png(figure)


def report_html(result: TuneResult) -> str:
    """A self-contained page: the best params against the config's, the validation
    metrics of both, the metric per trial with the running best, and every trial."""
    best, baseline = result.best, result.baseline
    counts = result.counts()
    names = list(result.space)
    params_rows = [
        [n, result.space[n], _param_text(baseline["params"].get(n)), _param_text(best["params"].get(n))]
        for n in names
    ]
    metric_rows = []
    for key in best.get("metrics") or {}:
        if key == "users":
            continue
        old = (baseline.get("metrics") or {}).get(key)
        new = best["metrics"][key]
        change = f"{(new / old - 1):+.1%}" if old else ""
        metric_rows.append([key, old, new, change])
    gain = (
        f"{best['value']:.4f} against {baseline['value']:.4f} with the config's params "
        f"({best['value'] / baseline['value'] - 1:+.1%})"
        if baseline["value"]
        else f"{best['value']:.4f}"
    )
    trial_rows = [
        [
            t["number"],
            t["state"] + (f" at {t['pruned_at']}" if t["pruned_at"] else ""),
            format_params(t["params"]),
            t["value"],
            t["seconds"],
        ]
        for t in result.trials
    ]
    split = result.split
    split_text = (
        f"{split.get('fraction', 0):.0%} of each user's items of the training part "
        f"(seed {split.get('seed')}), run split: {split.get('run_split')}; "
        f"{split.get('training_interactions', '?')} training interactions, "
        f"{split.get('pairs_evaluated', '?')} validation pairs of {split.get('users_evaluated', '?')} users"
        if split
        else "given"
    )
    summary = (
        f"{len(result.trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed), {result.sampler} sampler, pruning {'on' if result.pruning else 'off'}, "
        f"{result.seconds:.1f} s. Trial 0 is the config's own params. Validation: {split_text}."
    )
    body = (
        f"<h1>recsys tune: {html.escape(result.model)} ({html.escape(result.model_type)})</h1>"
        f"<p>Best validation {html.escape(result.metric)}: <b>{html.escape(gain)}</b>, "
        f"trial {best['number']}.</p><p class=note>{html.escape(summary)}</p>"
        "<h2>Params</h2>"
        + _html_table(["param", "searched", "the config's", "best"], params_rows)
        + "<h2>Validation metrics</h2>"
        + _html_table(["metric", "the config's params", "best", "change"], metric_rows)
        + "<h2>Trials</h2>"
        + _trials_plot(result)
        + _params_plot(result)
        + _html_table(
            ["trial", "state", "params", result.metric, "seconds"],
            trial_rows,
            text_columns=3,
            marks=lambda i: result.trials[i]["number"] == best["number"],
        )
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>recsys tune {html.escape(result.model)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


# ------------------------------------------------------------------ the old grid helpers


class _DefaultSpaces(Mapping[str, dict[str, Dimension]]):
    """Each registered model type's default tuning space, read from the registry on every
    access (``get_model_type(t).space``); kept for callers of the old ``DEFAULT_SPACES``."""

    def __getitem__(self, model_type: str) -> dict[str, Dimension]:
        if model_type not in MODEL_TYPES:
            raise KeyError(model_type)
        return MODEL_TYPES[model_type].space

    def __iter__(self) -> Iterator[str]:
        return iter(MODEL_TYPES)

    def __len__(self) -> int:
        return len(MODEL_TYPES)


DEFAULT_SPACES: Mapping[str, dict[str, Dimension]] = _DefaultSpaces()
"""Deprecated: use ``get_model_type(t).space``."""


def trial_params(
    model: ModelConfig, space: Mapping[str, Any] | None, method: str, trials: int, seed: int
) -> list[dict[str, Any]]:
    """Deprecated (``recsys tune`` searches with Optuna): parameter sets of a space of
    :class:`Choice` dimensions (or lists): the full grid (``grid``, cut to ``trials``) or
    ``trials`` distinct seeded random draws (``random``), each the model's own params
    updated by the drawn values."""
    model_type = get_model_type(model.type)
    if model_type.source != "interactions":
        raise ConfigError(f"model {model.name}: a {model.type} model is not trained, so not tuned")
    dimensions = {name: as_dimension(d) for name, d in (space or model_type.space).items()}
    unknown = sorted(set(dimensions) - set(model_type.params.model_fields))
    if unknown:
        raise ConfigError(f"tune space: unknown parameter(s) {', '.join(unknown)} for {model.type}")
    ranges = sorted(name for name, d in dimensions.items() if not isinstance(d, Choice))
    if ranges:
        raise ConfigError(f"tune space: {', '.join(ranges)} are ranges, not a grid: use `recsys tune`")
    names = sorted(dimensions)
    values = [dimensions[n].values for n in names]  # type: ignore[union-attr]
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    if method == "grid":
        chosen = grid[:trials]
    elif method == "random":
        rng = np.random.default_rng(seed)
        chosen = [grid[i] for i in rng.permutation(len(grid))[: min(trials, len(grid))]]
    else:
        raise ConfigError(f"tune method must be grid or random, found {method!r}")
    param_sets = [{**model.params, **drawn} for drawn in chosen]
    for params in param_sets:  # a value out of range fails now, not after hours of trials
        try:
            model_type.params.model_validate(params)
        except ValidationError as exc:
            raise ConfigError(f"tune space: {model_type.describe_problems(params_problems(exc))}") from None
    return param_sets
