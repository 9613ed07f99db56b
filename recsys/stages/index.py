"""Index: build a model's indices (one per metric used: ``dot`` for recommendations,
``angular`` for similar items) through the backend registry, and settle how each is
served by measurement (:mod:`recsys.index.select`)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import TypeAdapter

from recsys import storage
from recsys.config import PipelineConfig
from recsys.evaluate import sample_rows, sweep_setting
from recsys.index import BACKENDS, BuildContext, Built, IndexEntry, IndexEntryBase, Sweep
from recsys.index.select import choose
from recsys.progress import Progress
from recsys.recommend import exclude_items
from recsys.storage import RunLayout

log = logging.getLogger(__name__)

_ENTRIES = TypeAdapter(dict[str, IndexEntry])


def parse_indices(indices: dict[str, Any]) -> dict[str, IndexEntryBase]:
    """Index entries as the index stage returned them (JSON-able), typed."""
    return _ENTRIES.validate_python(indices)


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


def index_stage(run: RunLayout, config: PipelineConfig, model: str) -> dict[str, Any]:
    """Build the model's indices and settle how each is served: a backend at a configured
    or tuned setting, or exact search (``backend: exact``, or ``auto`` where no
    approximate strategy reaches the target recall faster than exact search)."""
    item_factors = storage.read_array(run.item_factors(model))
    seed = config.index.seed if config.index.seed is not None else config.seed
    backend = config.index.backend
    target = config.evaluate.target_recall
    started = time.perf_counter()
    built: dict[tuple[str, str], Built] = {}
    indices: dict[str, dict[str, Any]] = {}
    for metric in metrics_of(config, run.user_factors(model).exists()):  # angular first: feeds re-ranking
        entry: dict[str, Any] = {"backend": "exact", "metric": metric}
        indices[metric] = entry
        if backend == "exact":
            entry["reason"] = "index.backend is exact"
            continue
        if backend == "auto" and len(item_factors) < config.index.auto_min_items:
            entry["reason"] = (
                f"{len(item_factors)} items, fewer than index.auto_min_items "
                f"({config.index.auto_min_items}): exact search, no approximate index probed"
            )
            continue
        context = BuildContext(
            model=model,
            metric=metric,
            item_factors=item_factors,
            path_for=lambda suffix, metric=metric: run.index_file(model, metric, suffix),
            relative=run.relative,
            n_trees=config.index.n_trees,
            seed=seed,
            built=built,
        )
        k = list_k(config, metric)
        configured = config.index.search_k_for(metric)  # type: ignore[arg-type]
        strategies = []
        for candidate in BACKENDS.values():
            if not candidate.approximate or not candidate.supports(metric):
                continue
            if backend != "auto" and candidate.family != backend:
                continue
            with Progress(log, f"{model}: {metric} index", "items") as progress:
                progress.phase(f"{candidate.name} build", len(item_factors))
                context.progress = progress
                made = candidate.build(context, k, configured)
            if made is None:
                continue
            built[(candidate.name, metric)] = made
            entry.update(made.fields)
            strategies.append((candidate, made))
        if not strategies:
            entry["reason"] = f"no {backend} backend serves the {metric} index"
        elif configured is not None and backend != "auto":
            first, made = strategies[0]
            entry.update(
                backend=first.name, **first.serve(made, configured), reason="search_k set in the config"
            )
        else:
            queries, exclude = _tuning_queries(run, config, model, metric, item_factors)
            sweeps = []
            for _, made in strategies:
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
                        target,
                        backend == "auto",
                        metric,
                        progress=progress,
                    )
                sweeps.append((made.backend, sweep))
            entry["tuning"] = dict(sweeps)
            entry.update(choose([(n, Sweep.model_validate(s)) for n, s in sweeps], backend, target, k))
        log.info("%s: %s index served by %s (%s)", model, metric, entry["backend"], entry["reason"])
    parse_indices(indices)  # every entry as its backend defines it
    return {"indices": indices, "timings": {"index": round(time.perf_counter() - started, 3)}}
