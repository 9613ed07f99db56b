"""Index: build a model's indices (one per metric used: ``dot`` for recommendations,
``angular`` for similar items) through the backend registry, and settle how each is
served by measurement (:mod:`recsys.index.select`)."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import TypeAdapter

from recsys import storage
from recsys.config import PipelineConfig
from recsys.evaluate import exact_baseline, sample_rows, sweep_setting
from recsys.index import BACKENDS, BuildContext, Built, IndexEntry, IndexEntryBase, Sweep, get_backend
from recsys.index.base import Backend, IndexFile, Metric
from recsys.index.select import Costs, choose
from recsys.progress import Progress
from recsys.recommend import exclude_items
from recsys.stages.results import Indexed
from recsys.storage import RunLayout

log = logging.getLogger(__name__)

_ENTRIES = TypeAdapter(dict[str, IndexEntry])

MIN_PROBE_QUERIES = 200
"""``auto`` probes on a tenth of the queries a run serves, at least this many (and never
more than ``evaluate.tune_queries`` nor than the run serves)."""
ESTIMATE_ITEMS = 20_000
MIN_ESTIMATE_ITEMS = 1_000
"""``auto`` times a build on an eighth of the catalog (at most ``ESTIMATE_ITEMS`` items;
none where that is under ``MIN_ESTIMATE_ITEMS``) before building over all of it, and
builds nothing whose estimated build alone costs more than the least whole cost found
so far (exact search's serving of the run at first)."""


def parse_indices(indices: Indexed | Mapping[str, Any]) -> dict[str, IndexEntryBase]:
    """Index entries by metric, typed: from the index stage's result, typed entries or
    their JSON form."""
    if isinstance(indices, Indexed):
        return dict(indices.indices)
    return _ENTRIES.validate_python(dict(indices))


def metrics_of(config: PipelineConfig, with_users: bool = True) -> list[str]:
    """Metrics of the indices a model needs: recommendations only where it has users."""
    return sorted({config.similar_items.metric} | ({config.recommend.metric} if with_users else set()))


def list_k(config: PipelineConfig, metric: str) -> int:
    """The k at which an index's recall is measured: the largest evaluate.k, at most the
    top_n of the lists it serves."""
    top_n = config.recommend.top_n if metric == config.recommend.metric else config.similar_items.top_n
    return min(max(config.evaluate.ks), top_n)


def served_queries(run: RunLayout, config: PipelineConfig, model: str, metric: str, n_items: int) -> int:
    """The queries a run asks an index: every user where it serves recommendations,
    every item where it serves similar items (both where one metric serves both)."""
    served = n_items if metric == config.similar_items.metric else 0
    if metric == config.recommend.metric and run.user_factors(model).exists():
        served += len(storage.read_array(run.user_factors(model), mmap=True))
    return served


def probe_size(config: PipelineConfig, served: int) -> int:
    """Queries ``auto`` probes an index on: a tenth of those the run serves, at least
    :data:`MIN_PROBE_QUERIES`, at most ``evaluate.tune_queries`` and what the run serves."""
    return max(1, min(config.evaluate.tune_queries, served, max(MIN_PROBE_QUERIES, served // 10)))


def _tuning_queries(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    metric: str,
    item_factors: np.ndarray,
    size: int | None = None,
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Sampled queries as the index will serve them: users with their seen items excluded
    for the recommendations index, items with themselves excluded for similar items
    (``size`` of them, else ``evaluate.tune_queries``)."""
    size = size if size is not None else config.evaluate.tune_queries
    if metric == config.recommend.metric:
        interactions = storage.read_interactions(run.data_dir)
        users = sample_rows(interactions.n_users, size, config.seed + 2)
        user_factors = storage.read_array(run.user_factors(model), mmap=True)
        return np.asarray(user_factors[users], dtype=np.float32), interactions.user_items[users]
    items = sample_rows(len(item_factors), size, config.seed + 3)
    return item_factors[items], exclude_items(items, len(item_factors))


def index_stage(run: RunLayout, config: PipelineConfig, model: str) -> Indexed:
    """Build the model's indices and settle how each is served: a backend at a configured
    or tuned setting, or exact search (``backend: exact``, or ``auto`` where no
    approximate strategy reaches the target recall faster than exact search)."""
    item_factors = storage.read_array(run.item_factors(model))
    started = time.perf_counter()
    built: dict[tuple[str, str], Built] = {}
    estimates: dict[str, float | None] = {}
    indices: dict[Metric, IndexEntryBase] = {}
    for metric in metrics_of(config, run.user_factors(model).exists()):  # angular first: feeds re-ranking
        entry = _index_entry(run, config, model, metric, item_factors, built, estimates)
        log.info("%s: %s index served by %s (%s)", model, metric, entry.backend, entry.reason)
        indices[metric] = entry
    return Indexed(indices=indices, seconds=round(time.perf_counter() - started, 3))


def _entry(backend: str, metric: str, reason: str, **fields: Any) -> IndexEntryBase:
    """The entry of an index served by ``backend``, as that backend's entry model."""
    return get_backend(backend).entry(backend=backend, metric=metric, reason=reason, **fields)


def _index_entry(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    metric: Metric,
    item_factors: np.ndarray,
    built: dict[tuple[str, str], Built],
    estimates: dict[str, float | None],
) -> IndexEntryBase:
    """How one index is served: exact search where the config says so or the catalog is
    small, else the backends' strategies built and served at a configured or swept setting.
    ``estimates``: the build estimates of ``auto`` made for this model's other index."""
    backend = config.index.backend
    if backend == "exact":
        return _entry("exact", metric, "index.backend is exact")
    if backend == "auto" and len(item_factors) < config.index.auto_min_items:
        reason = (
            f"{len(item_factors)} items, fewer than index.auto_min_items "
            f"({config.index.auto_min_items}): exact search, no approximate index probed"
        )
        return _entry("exact", metric, reason)
    seed = config.index.seed if config.index.seed is not None else config.seed
    context = BuildContext(
        model=model,
        metric=metric,
        item_factors=item_factors,
        path_for=lambda suffix: run.index_file(model, metric, suffix),
        relative=run.relative,
        seed=seed,
        built=built,
    )
    k = list_k(config, metric)
    if backend == "auto":
        return _auto_entry(run, config, model, context, k, estimates)
    strategies = _strategies(config, context, k)
    files = {name: file for made in strategies for name, file in made.files.items()}
    if not strategies:
        return _entry("exact", metric, f"no {backend} backend serves the {metric} index")
    first = strategies[0]
    if first.configured is not None:
        chosen = get_backend(first.backend).serve(first, first.configured)
        return _entry(
            first.backend, metric, f"{first.setting} set in the config", files=files, **first.fields, **chosen
        )
    queries, exclude = _tuning_queries(run, config, model, metric, item_factors)
    sweeps = _sweeps(config, model, metric, item_factors, strategies, k, queries, exclude)
    chosen = choose(list(sweeps.items()), backend, config.evaluate.target_recall, k)
    served = next((made for made in strategies if made.backend == chosen["backend"]), None)
    fields = served.fields if served is not None else {}
    return _entry(metric=metric, files=files, tuning=sweeps, **fields, **chosen)


def _auto_entry(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    context: BuildContext,
    k: int,
    estimates: dict[str, float | None],
) -> IndexEntryBase:
    """``auto``: exact search timed on a probe sample sized to the run, then each strategy
    in the order of its estimated build (those without an estimate first, in the
    registry's order) built and swept within ``index.probe_seconds`` unless its
    estimated build alone costs more than the least whole cost found so far (exact
    search's serving at first) or would outlast the probe's time (:func:`build_skipped`),
    and the least whole cost chosen
    (:func:`recsys.index.select.choose_by_cost`).

    A backend's build estimate is made once per model (in ``estimates``, by backend) and
    serves both its indices: the same item vectors, count and settings, built for the
    other metric. Timed sample builds were most of ``auto``'s probe (2.3 s of 3.2 s at
    75,881 items), twice over."""
    metric, item_factors = context.metric, context.item_factors
    served = served_queries(run, config, model, metric, len(item_factors))
    queries, exclude = _tuning_queries(run, config, model, metric, item_factors, probe_size(config, served))
    baseline = exact_baseline(item_factors, queries, k, exclude, metric)
    costs = Costs(served=served, exact_queries_per_second=baseline[2])
    deadline = time.perf_counter() + config.index.probe_seconds
    bar = costs.serve(costs.exact_queries_per_second)
    strategies: list[Built] = []
    sweeps: dict[str, Sweep] = {}
    estimated = []
    for order, candidate in enumerate(_candidates(config, metric)):
        settings = config.index.settings(candidate.family)
        if candidate.name not in estimates:
            estimates[candidate.name] = estimate_build(candidate, replace(context, settings=settings), k)
        estimate = estimates[candidate.name]
        estimated.append((estimate if estimate is not None else -1.0, order, candidate, settings))
    for estimate, _order, candidate, settings in sorted(estimated, key=lambda e: e[:2]):
        if time.perf_counter() >= deadline:
            log.info("%s: %s index: index.probe_seconds spent, %s not built", model, metric, candidate.name)
            continue
        skipped = build_skipped(estimate, bar, deadline - time.perf_counter())
        if skipped is not None:
            log.info("%s: %s index: %s not built (%s)", model, metric, candidate.name, skipped)
            continue
        made = _build(context, candidate, settings, k)
        if made is None:
            continue
        strategies.append(made)
        costs.build[made.backend] = round(_files_seconds(made), 3)
        sweeps.update(
            _sweeps(
                config, model, metric, item_factors, [made], k, queries, exclude, baseline, deadline, costs
            )
        )
        swept = sweeps.get(made.backend)
        if swept is not None and swept.chosen is not None:
            bar = min(bar, costs.total(made.backend, swept.point(swept.chosen)["queries_per_second"]))
    files = {name: file for made in strategies for name, file in made.files.items()}
    chosen = choose(list(sweeps.items()), "auto", config.evaluate.target_recall, k, costs)
    served_by = next((made for made in strategies if made.backend == chosen["backend"]), None)
    fields = served_by.fields if served_by is not None else {}
    tuning = {"tuning": sweeps} if sweeps else {}
    return _entry(metric=metric, files=files, **tuning, **fields, **chosen)


def build_skipped(estimate: float, bar: float, left: float) -> str | None:
    """Why ``auto`` does not build a strategy whose build is estimated at ``estimate``
    seconds (negative: no estimate): the build alone costs more than ``bar``, the least
    whole cost found so far, or would still run when the ``left`` seconds of
    ``index.probe_seconds`` are spent, so that the strategy could not be probed (and a
    strategy not probed is never chosen). None: build it."""
    if estimate < 0:
        return None
    if estimate > bar:
        return f"estimated build {estimate:.1f} s > {bar:.1f} s, the least whole cost so far"
    if estimate > left:
        return f"estimated build {estimate:.1f} s > the {max(left, 0.0):.1f} s left of index.probe_seconds"
    return None


def _files_seconds(made: Built) -> float:
    """Build seconds of the files a strategy serves from (its own, or those it reads)."""
    records = [*made.files.values(), *(v for v in made.fields.values() if isinstance(v, IndexFile))]
    return sum(record.build_seconds for record in records)


def estimate_build(candidate: Backend, context: BuildContext, k: int) -> float | None:
    """Seconds a build over the whole catalog is expected to take, from a timed build
    over an eighth of it (at most :data:`ESTIMATE_ITEMS` items, scaled by n log n); None
    for a catalog too small to be worth the estimate or a backend that builds nothing
    of its own."""
    n_items = len(context.item_factors)
    size = min(ESTIMATE_ITEMS, n_items // 8)
    if size < MIN_ESTIMATE_ITEMS:
        return None
    sample = np.asarray(context.item_factors[sample_rows(n_items, size, context.seed)])
    with tempfile.TemporaryDirectory(prefix="recsys-estimate-") as tmp:
        trial = replace(
            context,
            item_factors=sample,
            path_for=lambda suffix: Path(tmp) / f"estimate.{suffix}",
            relative=lambda path: Path(path).name,
            built={},
            progress=None,
        )
        started = time.perf_counter()
        made = candidate.build(trial, k)
        seconds = time.perf_counter() - started
    if made is None:
        return None
    return seconds * (n_items / size) * math.log(n_items) / math.log(size)


def _candidates(config: PipelineConfig, metric: str) -> list[Backend]:
    """The approximate backends of ``index.backend`` serving ``metric``, in the registry's order."""
    return [
        candidate
        for candidate in BACKENDS.values()
        if candidate.approximate
        and candidate.supports(metric)
        and config.index.backend in ("auto", candidate.family)
    ]


def _build(context: BuildContext, candidate: Backend, settings: Any, k: int) -> Built | None:
    """One backend's build of this index (recorded in ``context.built``), or None."""
    with Progress(log, f"{context.model}: {context.metric} index", "items") as progress:
        progress.phase(f"{candidate.name} build", len(context.item_factors))
        made = candidate.build(replace(context, settings=settings, progress=progress), k)
    if made is not None:
        context.built[(candidate.name, context.metric)] = made
    return made


def _strategies(config: PipelineConfig, context: BuildContext, k: int) -> list[Built]:
    """What each approximate backend of ``index.backend`` built for this index (with its
    own settings), in the registry's order."""
    made_here = []
    for candidate in _candidates(config, context.metric):
        made = _build(context, candidate, config.index.settings(candidate.family), k)
        if made is not None:
            made_here.append(made)
    return made_here


def _sweeps(
    config: PipelineConfig,
    model: str,
    metric: Metric,
    item_factors: np.ndarray,
    strategies: list[Built],
    k: int,
    queries: np.ndarray,
    exclude: sp.csr_matrix,
    baseline: tuple[np.ndarray, np.ndarray, float] | None = None,
    deadline: float | None = None,
    costs: Costs | None = None,
) -> dict[str, Sweep]:
    """Recall and speed of each strategy over the values of its setting, on sampled
    queries; none swept once the ``deadline`` has passed, the probe seconds of each
    recorded in ``costs``."""
    sweeps = {}
    for made in strategies:
        if deadline is not None and time.perf_counter() >= deadline:
            log.info("%s: %s index: index.probe_seconds spent, %s not probed", model, metric, made.backend)
            continue
        started = time.perf_counter()
        with Progress(log, f"{model}: {metric} index", "settings") as progress:
            progress.phase(f"{made.backend} probe of {made.setting}", len(made.values))
            sweep = sweep_setting(
                made.index_for,
                made.setting,
                item_factors,
                queries,
                k,
                exclude,
                made.values,
                config.evaluate.target_recall,
                config.index.backend == "auto",
                metric,
                progress=progress,
                baseline=baseline,
                deadline=deadline,
            )
        if costs is not None:
            costs.probe[made.backend] = round(time.perf_counter() - started, 3)
        sweeps[made.backend] = Sweep.model_validate(sweep)
    return sweeps
