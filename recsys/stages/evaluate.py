"""Evaluate: recall of the served lists against exact search, and ranking metrics of
the published recommendations on held-out interactions."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from recsys import storage
from recsys.config import PipelineConfig
from recsys.data.interactions import Interactions
from recsys.evaluate import ann_recall, ranking_metrics, sample_rows
from recsys.index import ExactIndex
from recsys.manifest import AnnEvaluation, AnnFigures, Evaluation, Metric, Ranking
from recsys.recommend import exclude_items, search_all
from recsys.stages.index import list_k
from recsys.stages.ranked import allowed_by_rules, open_index
from recsys.stages.results import Evaluated, Indexed, SplitEvaluated
from recsys.storage import RunLayout

log = logging.getLogger(__name__)


def evaluate_stage(run: RunLayout, config: PipelineConfig, model: str, indexed: Indexed) -> Evaluated:
    """Recall@k of the served lists against exact search with the same metric, on samples
    of users (recommendations, seen items excluded) and items (similar items, the item
    itself excluded), with queries per second."""
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
        user_factors = storage.read_array(run.user_factors(model))
        users = sample_rows(interactions.n_users, config.evaluate.sample_users, config.seed)
        seen = interactions.user_items[users]
        ann["recommendations"] = recall(config.recommend.metric, user_factors[users], seen)
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
    ranking = ranking_exact = None
    if run.holdout.exists() and user_factors is not None:
        ranking, ranking_exact = _ranking(run, config, model, interactions, user_factors, item_factors)
    evaluation = Evaluation(ann=AnnEvaluation(**ann), ranking=ranking, ranking_exact=ranking_exact)
    return Evaluated(evaluation=evaluation, seconds=round(time.perf_counter() - started, 3))


def _ranking(
    run: RunLayout,
    config: PipelineConfig,
    model: str,
    interactions: Interactions,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
) -> tuple[Ranking, Ranking]:
    """Ranking metrics of the published recommendations, and of exact top-N for the same
    users, against the held-out interactions."""
    holdout = storage.read_sparse(run.holdout)
    users = np.flatnonzero(np.diff(holdout.indptr) > 0)
    published = storage.read_ranked_ids(
        sorted(run.ranked(model, "recommendations").glob("part-*.parquet")),
        interactions.users,
        interactions.items,
        config.recommend.top_n,
        rows=users,
    )
    return _metrics(
        config,
        model,
        interactions,
        holdout[users],
        published,
        user_factors[users],
        item_factors,
        users,
        allowed_by_rules(run),
    )


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
    popularity = np.diff(interactions.user_items.tocsc().indptr).astype(np.float64)
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
    return ranking, ranking_exact
