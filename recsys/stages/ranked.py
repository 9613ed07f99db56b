"""Recommend and similar items: every user's top-N unseen items and every item's top-N
similar items, scored block by block (locally or in shards on Dask workers) and
streamed into the model's parquet files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys import storage
from recsys.config import PipelineConfig
from recsys.errors import QueryError
from recsys.index import IndexEntryBase, SearchIndex, get_backend
from recsys.progress import Progress
from recsys.recommend import allowed_by_table, exclude_items, search_batches
from recsys.stages.results import Indexed, ListSpec, Ranked, RankedKind
from recsys.storage import RunLayout
from recsys.threads import blas_limit

log = logging.getLogger(__name__)


def open_index(
    entry: IndexEntryBase,
    item_factors: np.ndarray,
    resolve: Callable[[str], Path],
    threads: int | None = None,
) -> SearchIndex:
    """The index an entry describes, opened by its backend (checks before loading).
    resolve: a path as the manifest records it -> the file; threads: query threads."""
    return get_backend(entry.backend).open(entry, item_factors, resolve, threads)


@dataclass
class RankedJob:
    """What scoring one kind of ranked list of one model needs: queries (memory-mapped),
    the items each query must never get, the index entry to ask and how many results;
    for recommendations, the items the run's rules allow (None: all)."""

    kind: RankedKind
    queries: np.ndarray
    exclude: sp.csr_matrix
    item_factors: np.ndarray
    entry: IndexEntryBase
    n: int
    allowed: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.queries)


def list_spec(config: PipelineConfig, kind: RankedKind) -> ListSpec:
    """The spec of ``recommendations`` (``recommend`` of the config) or ``similar_items``."""
    section = config.recommend if kind == "recommendations" else config.similar_items
    return ListSpec(kind=kind, metric=section.metric, top_n=section.top_n)


def ranked_job(run: RunLayout, spec: ListSpec, model: str, indexed: Indexed) -> RankedJob:
    """The inputs of ``recommendations`` (users, seen items excluded) or ``similar_items``
    (items, the item itself excluded) of one model, read from the run folder."""
    entry, n = indexed.entry(spec.metric), spec.top_n
    item_factors = storage.read_array(run.item_factors(model), mmap=True)
    if spec.kind == "recommendations":
        queries = storage.read_array(run.user_factors(model), mmap=True)
        exclude = storage.read_sparse(run.data_file("user_items"))
        return RankedJob(spec.kind, queries, exclude, item_factors, entry, n, allowed_by_rules(run))
    n_items = len(item_factors)
    if n >= n_items:
        raise QueryError(f"similar items top_n must be below the {n_items} items, found {n}")
    exclude = exclude_items(np.arange(n_items), n_items)
    return RankedJob(spec.kind, item_factors, exclude, item_factors, entry, n)


def allowed_by_rules(run: RunLayout) -> np.ndarray | None:
    """The items a run's recommendations may contain (``recommend.include_items`` /
    ``exclude_items``, resolved by prepare): a bool per item, or None (every item)."""
    if not run.item_rules.exists():
        return None
    return allowed_by_table(pq.read_table(run.item_rules), storage.read_id_map(run.data_file("items")))


def open_job_index(run: RunLayout, job: RankedJob, threads: int | None = None) -> SearchIndex:
    """The index that serves a job, opened from its file (checks first)."""
    return open_index(job.entry, np.ascontiguousarray(job.item_factors), run.path, threads=threads)


def score_blocks(
    index: SearchIndex,
    job: RankedJob,
    start: int = 0,
    stop: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first_row, ids, scores) blocks of the top-n lists of query rows start..stop."""
    stop = job.rows if stop is None else stop
    queries = job.queries[start:stop]  # memory-mapped: each batch is read as it is searched
    for first, ids, scores in search_batches(
        index,
        queries,
        job.n,
        job.exclude[start:stop],
        job.item_factors,
        job.entry.query_search_k,
        progress=progress,
        allowed=job.allowed,
    ):
        yield start + first, ids, scores


# A worker scores many shards of the same job: it reads the job's inputs and opens (and
# checks) the index once, not once per shard.
_WORKER_JOBS: dict[tuple[str, ...], tuple[RankedJob, SearchIndex]] = {}


def score_shard(
    run: RunLayout,
    spec: ListSpec,
    model: str,
    indexed: Indexed,
    start: int,
    stop: int,
    threads: int = 1,
) -> tuple[int, np.ndarray, np.ndarray]:
    """The lists of query rows start..stop as one block (ids int32, scores float32): the
    unit of work of a Dask worker, which reads the run folder and opens the index file
    itself, by path. BLAS is pinned to one thread here, whatever the worker's environment."""
    # keyed on the files too: a long-lived worker may see the same run id written again
    inputs = [run.item_factors(model)]
    if spec.kind == "recommendations":
        inputs += [run.user_factors(model), run.data_file("user_items")]
        inputs += [run.item_rules] if run.item_rules.exists() else []
    stamps = [f"{path.stat().st_mtime_ns}:{path.stat().st_size}" for path in inputs]
    key = (str(run.dir), model, spec.model_dump_json(), indexed.model_dump_json(), str(threads), *stamps)
    if key not in _WORKER_JOBS:
        _WORKER_JOBS.clear()
        job = ranked_job(run, spec, model, indexed)
        _WORKER_JOBS[key] = (job, open_job_index(run, job, threads))
    job, index = _WORKER_JOBS[key]
    with blas_limit(1):
        blocks = list(score_blocks(index, job, start, stop))
    ids = np.concatenate([block[1] for block in blocks]).astype(np.int32)
    scores = np.concatenate([block[2] for block in blocks])
    return start, ids, scores


def ranked_rows(run: RunLayout, model: str, kind: RankedKind) -> int:
    """Queries of ``kind``: users with vectors for recommendations (0 for a model without
    user vectors), items for similar items."""
    path = run.user_factors(model) if kind == "recommendations" else run.item_factors(model)
    return len(storage.read_array(path, mmap=True)) if path.exists() else 0


def shard_bounds(rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most shard_rows rows covering 0..rows."""
    return [(start, min(start + shard_rows, rows)) for start in range(0, rows, max(1, shard_rows))]


def write_ranked(
    run: RunLayout, model: str, kind: RankedKind, blocks: Iterable[tuple[int, np.ndarray, np.ndarray]]
) -> Ranked:
    """Stream blocks of lists into the model's ``<kind>.parquet`` (one row group per
    ~1M rows; the file appears only when complete)."""
    started = time.perf_counter()
    items = storage.read_id_map(run.data_file("items"))
    path = run.ranked(model, kind)
    if kind == "recommendations":
        users = storage.read_id_map(run.data_file("users"))
        writer = storage.recommendations_writer(path, users, items, model, run.run_id)
    else:
        writer = storage.similar_items_writer(path, items, model, run.run_id)
    with writer:
        for first_row, ids, scores in blocks:
            writer.write(first_row, ids, scores)
    return Ranked(
        kind=kind, path=run.relative(path), rows=writer.rows, seconds=round(time.perf_counter() - started, 3)
    )


def ranked_stage(run: RunLayout, spec: ListSpec, model: str, indexed: Indexed) -> Ranked:
    """Top-N unseen items for every user (``recommendations``), or top-N similar items for
    every item, never itself (``similar_items``), streamed to parquet a block at a time.
    A model without user vectors has no recommendations."""
    if ranked_rows(run, model, spec.kind) == 0:
        log.info("%s: no user vectors, no recommendations", model)
        return Ranked(kind=spec.kind, seconds=0.0)
    job = ranked_job(run, spec, model, indexed)
    index = open_job_index(run, job)
    what, unit = ("recommend", "users") if spec.kind == "recommendations" else ("similar items", "items")
    with Progress(log, f"{model}: {what}", unit, job.rows, done_line=True) as progress:
        return write_ranked(run, model, job.kind, score_blocks(index, job, progress=progress))
