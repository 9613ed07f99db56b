"""Evaluate: recall of the served lists against exact search, and ranking metrics of
the published recommendations on held-out interactions."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from recsys import storage
from recsys.config import PipelineConfig
from recsys.data.interactions import IdMap, Interactions
from recsys.evaluate import RankingSums, ann_recall, combine, ranking_metrics, ranking_sums, sample_rows
from recsys.index import ExactIndex
from recsys.manifest import AnnEvaluation, AnnFigures, Evaluation, ListOutput, Metric, Ranking
from recsys.recommend import exclude_items, search_all
from recsys.stages.index import list_k
from recsys.stages.ranked import allowed_by_rules, open_index
from recsys.stages.results import Evaluated, Indexed, SplitEvaluated
from recsys.storage import RunLayout
from recsys.threads import blas_limit

log = logging.getLogger(__name__)


class ListsPart(NamedTuple):
    """One parquet file of a model's published recommendations and the contiguous range
    of user rows (internal ids) it holds: ``start`` to ``stop``, ``stop`` excluded."""

    path: Path
    start: int
    stop: int


RankingPair = tuple[RankingSums, RankingSums]
"""The ranking sums of the published lists and of exact top-N, for the same users."""

SumsOfParts = Callable[[RunLayout, PipelineConfig, str, list[ListsPart]], RankingPair]
"""How the evaluate stage gets the sums of all the parts of a model's published lists
(:func:`ranking_sums_of_parts` here; the flow may send each part to a Dask worker)."""


def evaluate_stage(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    indexed: Indexed,
    lists: ListOutput | None,
    sums_of_parts: SumsOfParts | None = None,
) -> Evaluated:
    """Recall@k of the served lists against exact search with the same metric, on samples
    of users (recommendations, seen items excluded) and items (similar items, the item
    itself excluded), with queries per second; and, where the run holds interactions
    out, ranking figures of the published recommendations (``lists``), part by part
    (``sums_of_parts``: in this process, from the inputs read here, when None)."""
    entries = indexed.indices
    interactions: Interactions = storage.read_interactions(run.data_dir)
    item_factors = storage.read_array(run.item_factors(model))
    started = time.perf_counter()
    ann: dict[str, AnnFigures] = {}

    def recall(metric: Metric, queries: np.ndarray, exclude: sp.csr_matrix) -> AnnFigures:
        entry = entries[metric]
        index = open_index(entry, item_factors, run.path)
        k = list_k(config, metric)
        measured = ann_recall(index, item_factors, queries, k, exclude=exclude, search_k=entry.query_search_k)
        return AnnFigures.model_validate(measured)

    user_factors = None
    if run.user_factors(model).exists():
        # memory-mapped: the recall reads the sampled users' rows, the ranking a part's rows
        user_factors = storage.read_array(run.user_factors(model), mmap=True)
        users = sample_rows(interactions.n_users, config.evaluate.sample_users, config.seed)
        seen = interactions.user_items[users]
        queries = np.ascontiguousarray(user_factors[users])
        ann["recommendations"] = recall(config.recommend.metric, queries, seen)
    items = sample_rows(interactions.n_items, config.evaluate.sample_items, config.seed + 1)
    itself = exclude_items(items, interactions.n_items)
    ann["similar_items"] = recall(config.similar_items.metric, item_factors[items], itself)
    for label, figures in ann.items():
        log.info(
            "%s: %s recall@%d vs exact %s = %.3f (%.0f queries/s)",
            model,
            label,
            figures.k,
            figures.metric,
            figures.recall_at_k,
            figures.queries_per_second,
        )
    if sums_of_parts is None and lists is not None and run.holdout.exists() and user_factors is not None:
        inputs = RankingInputs.read(run, config, model, interactions, user_factors, item_factors)
        sums_of_parts = functools.partial(ranking_sums_of_parts, inputs=inputs)
    ranking, ranking_exact = published_ranking(run, config, model, lists, sums_of_parts)
    evaluation = Evaluation(ann=AnnEvaluation(**ann), ranking=ranking, ranking_exact=ranking_exact)
    return Evaluated(evaluation=evaluation, seconds=round(time.perf_counter() - started, 3))


def published_ranking(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    lists: ListOutput | None,
    sums_of_parts: SumsOfParts | None = None,
) -> tuple[Ranking | None, Ranking | None]:
    """Ranking figures of a model's published recommendations (``lists``) and of exact
    top-N for the same users, on the run's held-out interactions, part by part
    (``sums_of_parts``: in this process when None); (None, None) where the run holds
    nothing out or the model published no recommendations."""
    if lists is None or not run.holdout.exists() or not run.user_factors(model).exists():
        return None, None
    sums = (sums_of_parts or ranking_sums_of_parts)(run, config, model, published_parts(run, lists))
    return _ranking(model, config, sums)


def published_parts(run: RunLayout, lists: ListOutput) -> list[ListsPart]:
    """The parts of a model's published recommendations, each file with its users."""
    return [ListsPart(run.path(part.path), part.start, part.stop) for part in lists.parts]


@dataclass
class RankingInputs:
    """What the ranking figures of any part of a model's published lists need, read once:
    the id maps of the lists, the seen items and held-out items of every user, the
    vectors, the items' training popularity, the run's item rules (``allowed``) and the
    exact index of top-N."""

    users: IdMap
    items: IdMap
    user_items: sp.csr_matrix
    holdout: sp.csr_matrix
    user_factors: np.ndarray
    popularity: np.ndarray
    allowed: np.ndarray | None
    exact: ExactIndex
    item_factors: np.ndarray

    @classmethod
    def read(
        cls,
        run: RunLayout,
        config: PipelineConfig,
        model: str,
        interactions: Interactions | None = None,
        user_factors: np.ndarray | None = None,
        item_factors: np.ndarray | None = None,
        threads: int | None = None,
    ) -> RankingInputs:
        """From the run folder, vectors memory-mapped; what the caller has read already
        (interactions, vectors) is not read again. threads: of the exact search."""
        if interactions is None:
            interactions = storage.read_interactions(run.data_dir)
        if user_factors is None:
            user_factors = storage.read_array(run.user_factors(model), mmap=True)
        if item_factors is None:
            item_factors = storage.read_array(run.item_factors(model), mmap=True)
        return cls(
            users=interactions.users,
            items=interactions.items,
            user_items=interactions.user_items,
            holdout=storage.read_sparse(run.holdout),
            user_factors=user_factors,
            popularity=_popularity(interactions),
            allowed=allowed_by_rules(run),
            exact=ExactIndex(item_factors, config.recommend.metric, threads=threads),
            item_factors=item_factors,
        )


def part_ranking_sums(inputs: RankingInputs, config: PipelineConfig, part: ListsPart) -> RankingPair:
    """The ranking sums of the users of one part (``start`` to ``stop``) that have any
    held-out item: their lists as the part's file publishes them, and exact top-N under
    the run's item rules. A part without held-out users reads nothing."""
    n_users = inputs.holdout.shape[0]
    if not 0 <= part.start <= part.stop <= n_users:
        raise ValueError(f"part rows {part.start}..{part.stop} outside the {n_users} users")
    ks, n_items = config.evaluate.ks, inputs.holdout.shape[1]
    held = np.diff(inputs.holdout.indptr[part.start : part.stop + 1]) > 0
    users = part.start + np.flatnonzero(held)
    if len(users) == 0:
        return RankingSums.empty(ks, n_items), RankingSums.empty(ks, n_items)
    top_n = config.recommend.top_n
    published = storage.read_ranked_ids(part.path, inputs.users, inputs.items, top_n, rows=users)
    exact = _exact_top(config, inputs, users)
    holdout = inputs.holdout[users]
    return (
        ranking_sums(published, holdout, ks, inputs.popularity),
        ranking_sums(exact, holdout, ks, inputs.popularity),
    )


def combine_pairs(pairs: Iterable[RankingPair]) -> RankingPair:
    """The sums of all the parts: published and exact, each added up."""
    published, exact = zip(*pairs, strict=True)
    return combine(published), combine(exact)


def ranking_sums_of_parts(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    parts: list[ListsPart],
    inputs: RankingInputs | None = None,
) -> RankingPair:
    """The ranking sums of all the parts of a model's published lists, one part after
    another in this process (the inputs read once)."""
    if not parts:
        raise ValueError(f"{model}: no parts of published recommendations to evaluate")
    inputs = inputs or RankingInputs.read(run, config, model)
    return combine_pairs(part_ranking_sums(inputs, config, part) for part in parts)


# A worker evaluates many parts of the same model: it reads the inputs once, not per part.
_WORKER_INPUTS: dict[tuple[str, ...], RankingInputs] = {}


def ranking_part(run: RunLayout, config: PipelineConfig, model: str, part: ListsPart) -> RankingPair:
    """The ranking sums of one part, as a Dask worker computes them: it reads the run
    folder itself, by path (once per run while the files do not change), and pins BLAS
    to one thread, whatever the worker's environment."""
    files = [run.data_file(name) for name in ("users", "items", "user_items")]
    files += [run.holdout, run.user_factors(model), run.item_factors(model)]
    files += [run.item_rules] if run.item_rules.exists() else []
    stamps = [f"{path}:{path.stat().st_mtime_ns}:{path.stat().st_size}" for path in files]
    key = (str(run.dir), model, config.recommend.model_dump_json(), *stamps)
    if key not in _WORKER_INPUTS:
        _WORKER_INPUTS.clear()
        _WORKER_INPUTS[key] = RankingInputs.read(run, config, model, threads=1)
    with blas_limit(1):
        return part_ranking_sums(_WORKER_INPUTS[key], config, part)


def _ranking(model: str, config: PipelineConfig, sums: RankingPair) -> tuple[Ranking, Ranking]:
    """The published figures of the sums of all the parts."""
    ranking, ranking_exact = (Ranking(part.metrics()) for part in sums)
    _log_ranking(model, config, ranking, ranking_exact)
    return ranking, ranking_exact


def holdout_stage(part: RunLayout, config: PipelineConfig, model: str, indexed: Indexed) -> SplitEvaluated:
    """Ranking metrics of a model trained on the training split (the run's evaluation
    part), on the held-out interactions: its top-N lists as its index serves them, and
    exact top-N. Nothing of it is published; the run's lists come from the refit model."""
    started = time.perf_counter()
    entry = indexed.entry(config.recommend.metric)
    interactions = storage.read_interactions(part.data_dir)
    item_factors = storage.read_array(part.item_factors(model))
    user_factors = storage.read_array(part.user_factors(model))
    holdout = storage.read_sparse(part.holdout)
    users = np.flatnonzero(np.diff(holdout.indptr) > 0)
    top_n = config.recommend.top_n
    allowed = allowed_by_rules(part)  # the run's item rules, resolved against this part's items
    served, _ = search_all(
        open_index(entry, item_factors, part.path),
        user_factors[users],
        top_n,
        interactions.user_items[users],
        item_factors,
        entry.query_search_k,
        allowed=allowed,
    )
    ranking, ranking_exact = _metrics(
        config,
        model,
        interactions,
        holdout[users],
        served,
        user_factors[users],
        item_factors,
        users,
        allowed,
    )
    return SplitEvaluated(
        ranking=ranking, ranking_exact=ranking_exact, seconds=round(time.perf_counter() - started, 3)
    )


def _metrics(
    config: PipelineConfig,
    model: str,
    interactions: Interactions,
    holdout: sp.csr_matrix,
    served: np.ndarray,
    queries: np.ndarray,
    item_factors: np.ndarray,
    users: np.ndarray,
    allowed: np.ndarray | None = None,
) -> tuple[Ranking, Ranking]:
    """Ranking metrics of served top-N lists and of exact top-N for the same users (both
    under the run's item rules: ``allowed``)."""
    popularity = _popularity(interactions)
    exact, _ = search_all(
        ExactIndex(item_factors, config.recommend.metric),
        queries,
        config.recommend.top_n,
        interactions.user_items[users],
        item_factors,
        allowed=allowed,
    )
    ranking = Ranking(ranking_metrics(served, holdout, config.evaluate.ks, popularity))
    ranking_exact = Ranking(ranking_metrics(exact, holdout, config.evaluate.ks, popularity))
    _log_ranking(model, config, ranking, ranking_exact)
    return ranking, ranking_exact


def _exact_top(config: PipelineConfig, inputs: RankingInputs, users: np.ndarray) -> np.ndarray:
    """Exact top-N of ``users`` (internal ids), seen items excluded, under the item rules."""
    exact, _ = search_all(
        inputs.exact,
        np.asarray(inputs.user_factors[users]),
        config.recommend.top_n,
        inputs.user_items[users],
        inputs.item_factors,
        allowed=inputs.allowed,
    )
    return exact


def _popularity(interactions: Interactions) -> np.ndarray:
    """Training interactions per item."""
    return np.diff(interactions.user_items.tocsc().indptr).astype(np.float64)


def _log_ranking(model: str, config: PipelineConfig, ranking: Ranking, ranking_exact: Ranking) -> None:
    k = max(config.evaluate.ks)
    log.info(
        "%s: recall@%d %.4f, ndcg@%d %.4f on %d held-out users (exact top-N: %.4f, %.4f)",
        model,
        k,
        ranking.at("recall", k),
        k,
        ranking.at("ndcg", k),
        ranking.users,
        ranking_exact.at("recall", k),
        ranking_exact.at("ndcg", k),
    )
