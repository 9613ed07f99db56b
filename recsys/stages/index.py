"""Index: build a model's indices (one per metric used: ``dot`` for recommendations,
``angular`` for similar items) through the backend registry, and settle how each is
served by measurement (:mod:`recsys.index.select`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import TypeAdapter

from recsys import storage
from recsys.config import PipelineConfig
from recsys.evaluate import sample_rows, sweep_setting
from recsys.index import BACKENDS, BuildContext, Built, IndexEntry, IndexEntryBase, Sweep, get_backend
from recsys.index.base import Metric
from recsys.index.select import choose
from recsys.progress import Progress
from recsys.recommend import exclude_items
from recsys.stages.results import Indexed
from recsys.storage import RunLayout

log = logging.getLogger(__name__)

_ENTRIES = TypeAdapter(dict[str, IndexEntry])


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


def _tuning_queries(
    run: RunLayout, config: PipelineConfig, model: str, metric: str, item_factors: np.ndarray
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Sampled queries as the index will serve them: users with their seen items excluded
    for the recommendations index, items with themselves excluded for similar items."""
    size = config.evaluate.tune_queries
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
    indices: dict[Metric, IndexEntryBase] = {}
    for metric in metrics_of(config, run.user_factors(model).exists()):  # angular first: feeds re-ranking
        entry = _index_entry(run, config, model, metric, item_factors, built)
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
) -> IndexEntryBase:
    """How one index is served: exact search where the config says so or the catalog is
    small, else the backends' strategies built and served at a configured or swept setting."""
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
    strategies = _strategies(config, context, k)
    files = {name: file for made in strategies for name, file in made.files.items()}
    if not strategies:
        return _entry("exact", metric, f"no {backend} backend serves the {metric} index")
    first = strategies[0]
    if first.configured is not None and backend != "auto":
        chosen = get_backend(first.backend).serve(first, first.configured)
        return _entry(
            first.backend, metric, f"{first.setting} set in the config", files=files, **first.fields, **chosen
        )
    sweeps = _sweeps(run, config, model, metric, item_factors, strategies, k)
    chosen = choose(list(sweeps.items()), backend, config.evaluate.target_recall, k)
    served = next((made for made in strategies if made.backend == chosen["backend"]), None)
    fields = served.fields if served is not None else {}
    return _entry(metric=metric, files=files, tuning=sweeps, **fields, **chosen)


def _strategies(config: PipelineConfig, context: BuildContext, k: int) -> list[Built]:
    """What each approximate backend of ``index.backend`` built for this index (with its
    own settings), in the registry's order."""
    made_here = []
    for candidate in BACKENDS.values():
        if not candidate.approximate or not candidate.supports(context.metric):
            continue
        if config.index.backend not in ("auto", candidate.family):
            continue
        with Progress(log, f"{context.model}: {context.metric} index", "items") as progress:
            progress.phase(f"{candidate.name} build", len(context.item_factors))
            settings = config.index.settings(candidate.family)
            made = candidate.build(replace(context, settings=settings, progress=progress), k)
        if made is not None:
            context.built[(candidate.name, context.metric)] = made
            made_here.append(made)
    return made_here


def _sweeps(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    metric: Metric,
    item_factors: np.ndarray,
    strategies: list[Built],
    k: int,
) -> dict[str, Sweep]:
    """Recall and speed of each strategy over the values of its setting, on sampled queries."""
    queries, exclude = _tuning_queries(run, config, model, metric, item_factors)
    sweeps = {}
    for made in strategies:
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
            )
        sweeps[made.backend] = Sweep.model_validate(sweep)
    return sweeps
