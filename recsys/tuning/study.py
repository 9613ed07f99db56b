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

Work every trial can share is made once per search: the model type's
:meth:`~recsys.models.base.ModelType.tuning_cache` (the spectral type's SVD at the largest
factors of the space), made by the first trial and truncated by every trial it serves
(:meth:`~recsys.models.base.ModelType.fit_cached`); the others fit as before.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import TUNE_METRIC, ModelConfig, PipelineConfig
from recsys.data.interactions import Interactions, InteractionTable
from recsys.errors import ConfigError, ModelError
from recsys.evaluate import RankingMetric, ranking_metrics
from recsys.index import ExactIndex
from recsys.models import get_model_type
from recsys.models.base import Dimension
from recsys.recommend import search_all
from recsys.tuning.space import contains, describe_dimension, model_space, rounded, suggest

log = logging.getLogger(__name__)

VALIDATION_SEED_OFFSET = 7
"""The validation split's seed is the config's ``seed`` + this: another cut than the run's."""
PRUNE_SAMPLE_USERS = 2000
"""Validation users scored at each intermediate report (all of them for the final value)."""
PRUNER_STARTUP_TRIALS = 5
"""Complete trials before the pruner stops any (the baseline is one of them)."""
WARMUP_ITERATIONS = 2
"""No intermediate report, so no pruning, before this many iterations."""


def checkpoints(iterations: int) -> list[int]:
    """Iterations after which a trial reports its intermediate metric: the powers of two
    from max(2, iterations / 8) up to, not including, ``iterations`` (a few per trial, at
    the same iterations across trials, as the median pruner compares like with like)."""
    first = max(WARMUP_ITERATIONS, math.ceil(iterations / 8))
    return [2**e for e in range(1, max(iterations, 1).bit_length() + 1) if first <= 2**e < iterations]


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
    parts: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ids: tuple[Any, Any] | None = None,
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

    A blend searches its weights only (:mod:`recsys.tuning.blend`): its parts are made
    once (``parts``: the vectors of some of them, already made; ``ids``: the training
    users' and items' ids, to align a precomputed part).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_failed_trials()
    settings = config.tune
    (model,) = config.select_models([model_name])
    n_trials = trials if trials is not None else settings.trials
    timeout = timeout if timeout is not None else settings.timeout_seconds
    sampler_name = sampler or settings.sampler
    metric = metric_name(config, metric)
    if model.type == "blend":
        from recsys.tuning.blend import tune_blend

        return tune_blend(
            config,
            model,
            train_items,
            validation,
            trials=n_trials,
            timeout=timeout,
            metric=metric,
            sampler_name=sampler_name,
            split=split or {},
            parts=parts,
            ids=ids,
        )
    space = model_space(config, model)
    pruning = settings.pruning if pruning is None else pruning
    scorer = _scorer(config, metric, train_items, validation)
    search = _Search(config, model, space, metric, train_items, scorer, n_trials)
    study = optuna.create_study(
        direction="maximize", sampler=_sampler(sampler_name, config.seed, n_trials), pruner=_pruner(pruning)
    )
    study.enqueue_trial(search.baseline)
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
        search.objective,
        n_trials=n_trials + 1,
        timeout=timeout,
        catch=(ModelError,),
        callbacks=[search.on_trial],
    )
    seconds = time.perf_counter() - started
    return search.result(sampler_name, pruning, round(seconds, 3), split or {})


def _scorer(
    config: PipelineConfig, metric: str, train_items: sp.csr_matrix, validation: sp.csr_matrix
) -> Scorer:
    """The scorer of every trial: at each ``evaluate.k`` and the metric's k."""
    ks = sorted({*config.evaluate.ks, RankingMetric.parse(metric).k})
    if max(ks) >= train_items.shape[1]:
        raise ConfigError(f"tune: lists of {max(ks)} items need more than the {train_items.shape[1]} items")
    if validation.nnz == 0:
        raise ConfigError("tune: the validation split is empty (too few items per user?)")
    return Scorer(train_items, validation, ks, PRUNE_SAMPLE_USERS, config.seed)


def _sampler(name: str, seed: int, n_trials: int) -> Any:
    """A seeded TPE (``tpe``) or random (``random``) Optuna sampler."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(5, min(10, n_trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"tune sampler must be tpe or random, found {name!r}")


def _pruner(pruning: bool) -> Any:
    """Optuna's median pruner, or a pruner that never prunes."""
    import optuna

    if not pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=WARMUP_ITERATIONS
    )


class _Search:
    """One model's search: Optuna's objective (train, report part-way, score) and its
    callback that records and logs each trial."""

    def __init__(
        self,
        config: PipelineConfig,
        model: ModelConfig,
        space: dict[str, Dimension],
        metric: str,
        train_items: sp.csr_matrix,
        scorer: Scorer,
        n_trials: int,
    ) -> None:
        self.seed = config.seed
        self.model = model
        self.model_type = get_model_type(model.type)
        self.space = space
        self.metric = metric
        self.train_items = train_items
        self.scorer = scorer
        self.supports_progress = "progress" in inspect.signature(self.model_type.fit).parameters
        self.n_trials = n_trials
        self.cache: Any = None
        self.cache_made = False
        self.records: list[dict[str, Any]] = []
        self.best_value = -math.inf
        typed = self.model_type.parse_params(model.params, model.name)
        self.baseline = {name: getattr(typed, name) for name in space}
        outside = [
            f"{name}={value}" for name, value in self.baseline.items() if not contains(space[name], value)
        ]
        if outside:
            log.info("the config's %s lie(s) outside the search space: measured as given", ", ".join(outside))

    def draw(self, trial: Any) -> dict[str, Any]:
        """A trial's values of the searched params."""
        if trial.number == 0:  # the enqueued baseline: a value outside the space is used as given
            return {
                name: suggest(trial, name, d) if contains(d, self.baseline[name]) else self.baseline[name]
                for name, d in self.space.items()
            }
        return {name: rounded(suggest(trial, name, d), d) for name, d in self.space.items()}

    def objective(self, trial: Any) -> float:
        drawn = self.draw(trial)
        trial.set_user_attr("params", drawn)
        params = {**self.model.params, **drawn}
        iterations = getattr(self.model_type.parse_params(params, self.model.name), "iterations", None)
        reports = self.supports_progress and isinstance(iterations, int)
        marks = set(checkpoints(iterations)) if reports else set()
        try:
            embeddings = self._cached(params)
            if embeddings is None:
                extra = {"progress": self._progress(trial, marks)} if marks else {}
                embeddings = self.model_type.fit(
                    params, self.train_items, self.seed, self.model.name, False, **extra
                )
            metrics = self.scorer.score(embeddings.user_factors, embeddings.item_factors)
        except ModelError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("metrics", metrics)
        if not self.supports_progress or iterations is None:  # no iterations to report: once, at the end
            trial.report(metrics[self.metric], 1)
        return float(metrics[self.metric])

    def _cached(self, params: dict[str, Any]) -> Any:
        """The trial's embeddings from the search's shared work (made by the first trial that
        asks), or None: the trial fits. Shared work that fails (memory) is logged and skipped."""
        if not self.cache_made:
            self.cache_made = True
            try:
                self.cache = self.model_type.tuning_cache(
                    self.model.params, self.space, self.train_items, self.seed, self.model.name
                )
            except ModelError as exc:
                log.info("%s: no work shared between trials (%s): each trial fits", self.model.name, exc)
        if self.cache is None:
            return None
        return self.model_type.fit_cached(self.cache, params, self.seed, self.model.name)

    def _progress(self, trial: Any, marks: set[int]) -> Any:
        """The model's progress callback: the metric of the sampled users at each of
        ``marks``, reported to Optuna, which may stop the trial there."""
        import optuna

        def progress(done: int, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
            if done not in marks:
                return
            if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
                raise ModelError(
                    f"model {self.model.name}: factors not finite after {done} iterations (diverged)"
                )
            value = self.scorer.score(user_factors, item_factors, sample=True).get(self.metric, 0.0)
            trial.report(value, done)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at iteration {done}")

        return progress

    def on_trial(self, study: Any, frozen: Any) -> None:
        record = _trial_record(frozen)
        self.records.append(record)
        number, state = frozen.number, record["state"]
        label = f"trial {number}/{self.n_trials}" + (" (the config's params)" if number == 0 else "")
        if state == "complete":
            self.best_value = max(self.best_value, record["value"])
            outcome = f"{self.metric} {record['value']:.4f} (best {self.best_value:.4f})"
        elif state == "pruned":
            last = record["intermediate"].get(record["pruned_at"], float("nan"))
            outcome = f"pruned at iteration {record['pruned_at']} ({self.metric} {last:.4f} then)"
        else:
            outcome = f"failed: {record['error'] or 'see the log above'}"
        log.info("%s %s -> %s %.1f s", label, format_params(record["params"]), outcome, record["seconds"])

    def result(self, sampler: str, pruning: bool, seconds: float, split: dict[str, Any]) -> TuneResult:
        """What the search found; :class:`ConfigError` when no trial completed."""
        complete = [r for r in self.records if r["state"] == "complete"]
        if not complete:
            raise ConfigError(f"tune: no trial of {self.model.name} completed (see the errors above)")
        best = max(complete, key=lambda r: r["value"])  # the first of equals: the baseline wins a tie
        return TuneResult(
            model=self.model.name,
            model_type=self.model.type,
            metric=self.metric,
            sampler=sampler,
            pruning=pruning,
            space={name: describe_dimension(d) for name, d in self.space.items()},
            trials=self.records,
            baseline=self.records[0],
            best=best,
            best_params={**self.model.params, **best["params"]},
            seconds=seconds,
            split=split,
        )


def _trial_record(frozen: Any) -> dict[str, Any]:
    """The record of a finished Optuna trial (see :func:`tune`)."""
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(
        frozen.state.name, frozen.state.name.lower()
    )
    intermediate = {int(step): round(float(v), 6) for step, v in sorted(frozen.intermediate_values.items())}
    seconds = frozen.duration.total_seconds() if frozen.duration else 0.0
    return {
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
