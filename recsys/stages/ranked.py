"""Recommend and similar items: every user's top-N unseen items and every item's top-N
similar items, scored block by block and written as a parquet dataset per list: one part
file per range of ``part_rows`` queries, written where it is scored (in the flow's
process, or by the Dask worker that scored the shard), then committed by the flow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys import faults, storage
from recsys.config import PipelineConfig
from recsys.data.interactions import IdMap
from recsys.errors import QueryError
from recsys.index import IndexEntryBase, SearchIndex, get_backend
from recsys.manifest import ListOutput, ListPart
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
    the external ids of queries and results; for recommendations, the items the run's
    rules allow (None: all)."""

    kind: RankedKind
    queries: np.ndarray
    exclude: sp.csr_matrix
    item_factors: np.ndarray
    entry: IndexEntryBase
    n: int
    query_ids: IdMap
    result_ids: IdMap
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
    items = storage.read_id_map(run.data_file("items"))
    if spec.kind == "recommendations":
        queries = storage.read_array(run.user_factors(model), mmap=True)
        exclude = storage.read_sparse(run.data_file("user_items"), mmap=True)  # a shard reads its rows
        users = storage.read_id_map(run.data_file("users"))
        allowed = allowed_by_rules(run)
        return RankedJob(spec.kind, queries, exclude, item_factors, entry, n, users, items, allowed)
    n_items = len(item_factors)
    if n >= n_items:
        raise QueryError(f"similar items top_n must be below the {n_items} items, found {n}")
    exclude = exclude_items(np.arange(n_items), n_items)
    return RankedJob(spec.kind, item_factors, exclude, item_factors, entry, n, items, items)


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


def write_part(
    run: RunLayout,
    model: str,
    job: RankedJob,
    number: int,
    start: int,
    stop: int,
    blocks: Iterable[tuple[int, np.ndarray, np.ndarray]],
) -> ListPart:
    """Stream the lists of queries start..stop into part ``number`` of the model's list
    dataset (the file appears, atomically, only when complete); its manifest entry."""
    path = run.ranked_part(model, job.kind, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    if job.kind == "recommendations":
        writer = storage.recommendations_writer(path, job.query_ids, job.result_ids, model, run.run_id)
    else:
        writer = storage.similar_items_writer(path, job.result_ids, model, run.run_id)
    with writer:
        for first_row, ids, scores in blocks:
            writer.write(first_row, ids, scores)
            faults.hold("hold-mid-part")
    return ListPart(
        path=run.relative(path),
        start=start,
        stop=stop,
        rows=writer.rows,
        size_bytes=writer.size_bytes,
        sha256=writer.sha256,
    )


def score_part(
    run: RunLayout,
    spec: ListSpec,
    model: str,
    indexed: Indexed,
    number: int,
    start: int,
    stop: int,
    threads: int = 1,
) -> ListPart:
    """Score the lists of query rows start..stop and write them as part ``number``: the
    unit of work of a Dask worker, which reads the run folder and opens the index file
    itself, by path, and returns only the part's entry (path, rows, size, sha256). BLAS
    is pinned to one thread here, whatever the worker's environment. Scoring is
    deterministic, so a shard scored again (a retry) writes the same file."""
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
        return write_part(run, model, job, number, start, stop, score_blocks(index, job, start, stop))


def ranked_rows(run: RunLayout, model: str, kind: RankedKind) -> int:
    """Queries of ``kind``: users with vectors for recommendations (0 for a model without
    user vectors), items for similar items."""
    path = run.user_factors(model) if kind == "recommendations" else run.item_factors(model)
    return len(storage.read_array(path, mmap=True)) if path.exists() else 0


def shard_bounds(rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most shard_rows rows covering 0..rows."""
    return [(start, min(start + shard_rows, rows)) for start in range(0, rows, max(1, shard_rows))]


def commit_ranked(
    run: RunLayout, model: str, kind: RankedKind, parts: list[ListPart], rows: int, seconds: float
) -> Ranked:
    """The list dataset made of ``parts`` (in query order, covering queries 0..rows): the
    folder keeps exactly those files (leftovers of writers killed mid-write, parts of an
    earlier attempt removed), each checked against its size; the stage's result."""
    output = ListOutput(path=run.relative(run.ranked(model, kind)), parts=parts)
    if output.queries != rows:
        raise QueryError(f"{model}: {kind} parts cover {output.queries} of {rows} queries")
    folder = run.ranked(model, kind)
    storage.commit_parts(folder, [part.path.rpartition("/")[2] for part in parts])
    for part in parts:
        size = run.path(part.path).stat().st_size
        if size != part.size_bytes:
            raise QueryError(f"{part.path}: {size} bytes, its writer reported {part.size_bytes}")
    storage.fsync_dir(folder)
    return Ranked(kind=kind, output=output, seconds=round(seconds, 3))


def ranked_stage(run: RunLayout, spec: ListSpec, model: str, indexed: Indexed, part_rows: int) -> Ranked:
    """Top-N unseen items for every user (``recommendations``), or top-N similar items for
    every item, never itself (``similar_items``), streamed to the parts of the list
    dataset a block at a time (``part_rows`` queries per part: ``task_runner.shard_rows``).
    A model without user vectors has no recommendations."""
    rows = ranked_rows(run, model, spec.kind)
    if rows == 0:
        log.info("%s: no user vectors, no recommendations", model)
        return Ranked(kind=spec.kind, seconds=0.0)
    started = time.perf_counter()
    job = ranked_job(run, spec, model, indexed)
    index = open_job_index(run, job)
    what, unit = ("recommend", "users") if spec.kind == "recommendations" else ("similar items", "items")
    parts = []
    with Progress(log, f"{model}: {what}", unit, job.rows, done_line=True) as progress:
        for number, (start, stop) in enumerate(shard_bounds(rows, part_rows)):

            def report(done: int, _total: int, start: int = start) -> None:
                progress(start + done, rows)

            blocks = score_blocks(index, job, start, stop, progress=report)
            parts.append(write_part(run, model, job, number, start, stop, blocks))
    return commit_ranked(run, model, spec.kind, parts, rows, time.perf_counter() - started)
