"""The pipeline's stages as plain functions: Prefect-free, path-in and small-dict-out.

Each stage reads only what the previous stage wrote into the run folder, so any stage
can be re-run alone, and returns a small JSON-able dict that goes into the manifest.
``flows/`` wraps each stage in a Prefect task.

Run folder (paths relative to it, as the manifest records them)::

    data/users.parquet, data/items.parquet    external ids, position = internal id
    data/user_items.npz                       CSR (users x items) of seen items
    models/<name>/user_factors.npy            float32 (users, dim)
    models/<name>/item_factors.npy            float32 (items, dim)
    models/<name>/<metric>.ann (+ .ann.json)  Annoy index and its manifest
    models/<name>/recommendations.parquet
    models/<name>/similar_items.parquet
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys import __version__, faults, storage
from recsys.config import ModelConfig, PipelineConfig
from recsys.data.interactions import Interactions, clean_table, interactions_from_table
from recsys.data.splits import map_holdout, split_table
from recsys.errors import ConfigError, ModelError, QueryError, RunError
from recsys.evaluate import (
    ann_recall,
    default_search_ks,
    ranking_metrics,
    sample_rows,
    sweep_search_k,
    sweep_setting,
)
from recsys.index import AnnoyIndex, ExactIndex, build_annoy_index
from recsys.index.rerank import RerankIndex
from recsys.models import train
from recsys.recommend import SearchIndex, exclude_items, search_all, search_batches
from recsys.storage import RunPaths

log = logging.getLogger("recsys.pipeline")


def _progress(label: str) -> Callable[[int, int], None]:
    """A callback that logs progress at most every ~10% of the work."""
    state = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if done >= total or done / total >= state["next"]:
            log.info("%s: %d/%d (%.0f%%)", label, done, total, 100.0 * done / total)
            state["next"] = done / total + 0.1

    return report


# ---------------------------------------------------------------- prepare


def _prepare_from_vectors(run: RunPaths, config: PipelineConfig, started: float) -> dict[str, Any]:
    """Id maps of a run of precomputed vectors only: the items (and users, if any) of the
    first precomputed model; no interactions, so nothing is excluded as seen."""
    import scipy.sparse as sp

    from recsys.data.interactions import IdMap
    from recsys.data.vectors import read_vectors

    params = config.models[0].params
    items, _ = read_vectors(params["items"], params.get("item_ids"), params.get("column"))
    if params.get("users"):
        users, _ = read_vectors(params["users"], params.get("user_ids"), params.get("column"), "user")
    else:
        users = IdMap.from_ids(np.array([], dtype=np.int64), "int")
    stats = {
        "rows": 0,
        "zero_weight_rows_dropped": 0,
        "duplicate_rows_merged": 0,
        "interactions": 0,
        "users": len(users),
        "items": len(items),
    }
    interactions = Interactions(
        users=users,
        items=items,
        user_items=sp.csr_matrix((len(users), len(items)), dtype=np.float32),
        stats=stats,
    )
    files = storage.write_interactions(run.data_dir, interactions)
    source = Path(params["items"])
    return {
        "input": {
            "path": str(source.resolve()),
            "size_bytes": source.stat().st_size,
            "sha256": storage.file_sha256(source),
            **stats,
            "user_id_type": users.kind,
            "item_id_type": items.kind,
        },
        "data": {key: run.relative(run.data_dir / name) for key, name in files.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }


def prepare_stage(
    run: RunPaths,
    config: PipelineConfig,
    input_path: str | Path | None,
    holdout_path: str | Path | None = None,
) -> dict[str, Any]:
    """Read and validate the interactions table, split off held-out interactions if the
    config says so (or read a supplied holdout table); write id maps, the training CSR
    matrix and the holdout CSR."""
    started = time.perf_counter()
    if input_path is None:
        return _prepare_from_vectors(run, config, started)
    frame, fingerprint = storage.read_interactions_table(input_path)
    table = clean_table(frame, source=str(input_path))
    del frame
    holdout_path = holdout_path or config.evaluate.holdout
    split = config.evaluate.split
    test = None
    holdout_info: dict[str, Any] | None = None
    if holdout_path:
        holdout_frame, holdout_fingerprint = storage.read_interactions_table(holdout_path)
        test = clean_table(holdout_frame, source=str(holdout_path))
        holdout_info = {"method": "supplied", **holdout_fingerprint}
    elif split.method != "none":
        table, test = split_table(table, split.method, split.fraction, split.n, config.seed, str(input_path))
        holdout_info = {"method": split.method, "fraction": split.fraction, "n": split.n}
    interactions = interactions_from_table(table)
    for section, top_n, limit in (
        ("recommend", config.recommend.top_n, interactions.n_items),
        ("similar_items", config.similar_items.top_n, interactions.n_items - 1),
    ):
        if top_n > limit:
            raise ConfigError(
                f"{section}.top_n is {top_n} but {input_path} has only {interactions.n_items} "
                f"items (at most {limit} possible)"
            )
    files = storage.write_interactions(run.data_dir, interactions)
    log.info(
        "read %s: %d rows -> %d users x %d items, %d interactions (%d duplicate rows merged)",
        input_path,
        interactions.stats["rows"],
        interactions.n_users,
        interactions.n_items,
        interactions.nnz,
        interactions.stats["duplicate_rows_merged"],
    )
    result: dict[str, Any] = {
        "input": {
            **fingerprint,
            **interactions.stats,
            "user_id_type": interactions.users.kind,
            "item_id_type": interactions.items.kind,
        },
        "data": {key: run.relative(run.data_dir / name) for key, name in files.items()},
    }
    if test is not None and holdout_info is not None:
        holdout, holdout_stats = map_holdout(interactions, test)
        storage.write_sparse(run.data_dir / "holdout.npz", holdout)
        result["data"]["holdout"] = run.relative(run.data_dir / "holdout.npz")
        result["holdout"] = {**holdout_info, **holdout_stats}
        log.info(
            "holdout (%s): %d pairs, %d evaluated for %d users; %d pairs of unknown users, "
            "%d of unknown items, %d already in training",
            holdout_info["method"],
            holdout_stats["pairs"],
            holdout_stats["pairs_evaluated"],
            holdout_stats["users_evaluated"],
            holdout_stats["pairs_of_unknown_users"],
            holdout_stats["pairs_of_unknown_items"],
            holdout_stats["pairs_seen_in_training"],
        )
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


# ---------------------------------------------------------------- train


def train_stage(run: RunPaths, config: PipelineConfig, model: ModelConfig) -> dict[str, Any]:
    """Fit one implicit model; write its user and item factors."""
    interactions = storage.read_interactions(run.data_dir)
    if model.type == "precomputed":
        return _precomputed_stage(run, model, interactions)
    log.info("%s: training %s on %d interactions", model.name, model.type, interactions.nnz)
    started = time.perf_counter()
    embeddings = train(model.type, model.params, interactions.user_items, config.seed, model.name)
    fit_seconds = time.perf_counter() - started
    faults.point("after-fit")
    directory = run.model_dir(model.name)
    directory.mkdir(parents=True, exist_ok=True)
    storage.write_array(directory / "user_factors.npy", embeddings.user_factors)
    storage.write_array(directory / "item_factors.npy", embeddings.item_factors)
    log.info("%s: trained in %.1fs, %d factors", model.name, fit_seconds, embeddings.dim)
    return {
        "type": model.type,
        "params": {"random_state": config.seed, **model.params},
        "dim": embeddings.dim,
        "factors": {
            "user": run.relative(directory / "user_factors.npy"),
            "item": run.relative(directory / "item_factors.npy"),
        },
        "timings": {"fit": round(fit_seconds, 3)},
    }


def _precomputed_stage(run: RunPaths, model: ModelConfig, interactions: Interactions) -> dict[str, Any]:
    """Read, validate and align a precomputed model's vectors to the run's ids."""
    from recsys.data.vectors import align, read_vectors

    started = time.perf_counter()
    params = model.params
    ids, vectors = read_vectors(params["items"], params.get("item_ids"), params.get("column"))
    item_factors = align(ids, vectors, interactions.items, params["items"], "item")
    directory = run.model_dir(model.name)
    directory.mkdir(parents=True, exist_ok=True)
    storage.write_array(directory / "item_factors.npy", item_factors)
    factors = {"item": run.relative(directory / "item_factors.npy")}
    if params.get("users") and interactions.n_users:
        user_ids, user_vectors = read_vectors(
            params["users"], params.get("user_ids"), params.get("column"), "user"
        )
        if user_vectors.shape[1] != item_factors.shape[1]:
            raise ModelError(
                f"model {model.name}: user vectors have dimension {user_vectors.shape[1]}, "
                f"item vectors {item_factors.shape[1]}"
            )
        storage.write_array(
            directory / "user_factors.npy",
            align(user_ids, user_vectors, interactions.users, params["users"], "user"),
        )
        factors["user"] = run.relative(directory / "user_factors.npy")
    log.info(
        "%s: read %d precomputed item vectors of dimension %d",
        model.name,
        len(item_factors),
        item_factors.shape[1],
    )
    return {
        "type": model.type,
        "params": dict(params),
        "dim": int(item_factors.shape[1]),
        "factors": factors,
        "timings": {"fit": round(time.perf_counter() - started, 3)},
    }


def _has_users(run: RunPaths, model: str) -> bool:
    return (run.model_dir(model) / "user_factors.npy").exists()


def _metrics(config: PipelineConfig, with_users: bool = True) -> list[str]:
    """Metrics of the indices a model needs: recommendations only where it has users."""
    return sorted({config.similar_items.metric} | ({config.recommend.metric} if with_users else set()))


def _index_path(run: RunPaths, model: str, metric: str) -> Path:
    return run.model_dir(model) / f"{metric}.ann"


def _item_factors(run: RunPaths, model: str) -> np.ndarray:
    return storage.read_array(run.model_dir(model) / "item_factors.npy")


# ---------------------------------------------------------------- index


def _tuning_queries(
    run: RunPaths, config: PipelineConfig, model: str, metric: str, item_factors: np.ndarray
) -> tuple[np.ndarray, sp.csr_matrix, int]:
    """Sampled queries as the index will serve them: users with their seen items excluded
    for the recommendations index, items with themselves excluded for similar items."""
    size = config.evaluate.tune_queries
    if metric == config.recommend.metric:
        interactions = storage.read_interactions(run.data_dir)
        users = sample_rows(interactions.n_users, size, config.seed + 2)
        user_factors = storage.read_array(run.model_dir(model) / "user_factors.npy", mmap=True)
        queries = np.asarray(user_factors[users], dtype=np.float32)
        k = min(max(config.evaluate.ks), config.recommend.top_n)
        return queries, interactions.user_items[users], k
    items = sample_rows(len(item_factors), size, config.seed + 3)
    k = min(max(config.evaluate.ks), config.similar_items.top_n)
    return item_factors[items], exclude_items(items, len(item_factors)), k


def index_stage(run: RunPaths, config: PipelineConfig, model: str) -> dict[str, Any]:
    """Build the model's indices, one per metric used (``dot`` and ``angular`` by default),
    and settle how each is served: Annoy with a configured or tuned search_k, or exact
    search (``backend: exact``, or ``auto`` where Annoy cannot reach the target recall
    faster than exact search)."""
    item_factors = _item_factors(run, model)
    seed = config.index.seed if config.index.seed is not None else config.seed
    backend = config.index.backend
    started = time.perf_counter()
    indices: dict[str, Any] = {}
    opened: dict[str, AnnoyIndex] = {}
    for metric in _metrics(config, _has_users(run, model)):  # angular first: feeds the dot re-ranking
        entry: dict[str, Any] = {"backend": "exact", "metric": metric}
        indices[metric] = entry
        if backend == "exact":
            entry["reason"] = "index.backend is exact"
            continue
        path = _index_path(run, model, metric)
        built = time.perf_counter()
        manifest = build_annoy_index(item_factors, metric, path, config.index.n_trees, seed)
        entry["annoy"] = {
            "path": run.relative(path),
            "manifest": run.relative(path.with_name(path.name + ".json")),
            "n_trees": manifest.n_trees,
            "seed": manifest.seed,
            "n_items": manifest.n_items,
            "dim": manifest.dim,
            "size_bytes": manifest.size_bytes,
            "sha256": manifest.sha256,
            "build_seconds": round(time.perf_counter() - built, 3),
        }
        index = AnnoyIndex(path, metric=metric, dim=manifest.dim, verify_checksum=False)
        opened[metric] = index
        configured = config.index.search_k_for(metric)  # type: ignore[arg-type]
        if configured is not None and backend == "annoy":
            entry.update(backend="annoy", search_k=configured, reason="search_k set in the config")
            log.info("%s: %s index served by annoy (%s)", model, metric, entry["reason"])
            continue
        queries, exclude, k = _tuning_queries(run, config, model, metric, item_factors)
        target = config.evaluate.target_recall
        search_ks = (
            [configured]
            if configured is not None
            else default_search_ks(manifest.n_trees, k, len(item_factors))
        )
        options = [
            (
                "annoy",
                sweep_search_k(
                    index, item_factors, queries, k, exclude, search_ks, target, backend == "auto"
                ),
            )
        ]
        if metric == "dot" and "angular" in opened and configured is None:
            angular = opened["angular"]
            options.append(
                (
                    "annoy-rerank",
                    sweep_setting(
                        lambda c, angular=angular: RerankIndex(angular, item_factors, c),
                        "candidates",
                        item_factors,
                        queries,
                        k,
                        exclude,
                        default_candidates(k, len(item_factors)),
                        target,
                        backend == "auto",
                        "dot",
                    ),
                )
            )
            entry["candidates_from"] = indices["angular"]["annoy"]["path"]
        entry["tuning"] = {name: sweep for name, sweep in options}
        entry.update(_choose(options, backend, target, k))
        log.info("%s: %s index served by %s (%s)", model, metric, entry["backend"], entry["reason"])
    return {"indices": indices, "timings": {"index": round(time.perf_counter() - started, 3)}}


def default_candidates(k: int, n_items: int) -> list[int]:
    """Candidate counts to sweep for re-ranking: 2k, 4k, 8k, ... up to the catalog."""
    values, value = [], 2 * k
    while value < n_items:
        values.append(value)
        value *= 2
    return [*values, n_items]


def _choose(options: list[tuple[str, dict[str, Any]]], backend: str, target: float, k: int) -> dict[str, Any]:
    """How an index is served, from the sweeps of each strategy (in order: the index's own
    search_k, then angular candidates re-ranked). ``auto``: the fastest setting reaching
    the target recall, or exact search when that is faster (a choice by measured speed).
    ``annoy``: the first strategy reaching the target (a choice by recall only, so
    reproducible), else the best recall."""
    reached = []
    for name, sweep in options:
        value = sweep[sweep["setting"]]
        if value is not None:
            point = next(p for p in sweep["curve"] if p[sweep["setting"]] == value)
            reached.append((point["queries_per_second"], name, sweep["setting"], value, sweep))
    exact_qps = options[0][1]["exact_queries_per_second"]
    if reached:
        # auto: the fastest; annoy: the first strategy reaching the target, so that the
        # choice depends on recall only and re-runs give the same files
        qps, name, setting, value, _ = max(reached, key=lambda r: r[0]) if backend == "auto" else reached[0]
        if backend == "annoy" or qps > exact_qps:
            slower = "" if qps > exact_qps else f"; exact search is faster here ({exact_qps:.0f} queries/s)"
            return {
                "backend": name,
                setting: value,
                "reason": f"fastest setting reaching recall@{k} {target}: {setting} {value} "
                f"at {qps:.0f} queries/s{slower}",
            }
        return {
            "backend": "exact",
            "reason": f"Annoy reaches recall@{k} {target} at best {qps:.0f} queries/s ({name}, {setting} "
            f"{value}), exact search is faster ({exact_qps:.0f} queries/s)",
        }
    if backend == "annoy":
        name, sweep = options[0]
        best = max(sweep["curve"], key=lambda p: p["recall_at_k"])
        return {
            "backend": name,
            "search_k": best["search_k"],
            "reason": f"no setting reached recall@{k} {target}; best was {best['recall_at_k']:.3f}",
        }
    return {
        "backend": "exact",
        "reason": f"no setting reached recall@{k} {target} while faster than exact search",
    }


def open_index(
    run_dir: Path, index_entry: dict[str, Any], item_factors: np.ndarray, threads: int | None = None
) -> SearchIndex:
    """Open a model's index as its manifest entry describes (checks before loading).
    threads: query threads (default: every core)."""
    if index_entry["backend"] == "exact":
        return ExactIndex(item_factors, index_entry["metric"], threads=threads)
    if index_entry["backend"] == "annoy-rerank":
        angular = AnnoyIndex(
            run_dir / index_entry["candidates_from"],
            metric="angular",
            dim=item_factors.shape[1],
            threads=threads,
        )
        return RerankIndex(angular, item_factors, int(index_entry["candidates"]))
    return AnnoyIndex(
        run_dir / index_entry["annoy"]["path"],
        metric=index_entry["metric"],
        dim=item_factors.shape[1],
        threads=threads,
    )


def _search_k(index_entry: dict[str, Any]) -> int:
    return int(index_entry.get("search_k", -1))


# ---------------------------------------------------------------- recommend / similar

RANKED_KINDS = ("recommendations", "similar_items")


@dataclass
class RankedJob:
    """What scoring one kind of ranked list of one model needs: queries (memory-mapped),
    the items each query must never get, the index to ask and how many results."""

    kind: str
    queries: np.ndarray
    exclude: sp.csr_matrix
    item_factors: np.ndarray
    entry: dict[str, Any]
    n: int

    @property
    def rows(self) -> int:
        return len(self.queries)


def ranked_job(
    run: RunPaths, config: PipelineConfig, model: str, indices: dict[str, Any], kind: str
) -> RankedJob:
    """The inputs of ``recommendations`` (users, seen items excluded) or ``similar_items``
    (items, the item itself excluded) of one model, read from the run folder."""
    item_factors = storage.read_array(run.model_dir(model) / "item_factors.npy", mmap=True)
    if kind == "recommendations":
        queries = storage.read_array(run.model_dir(model) / "user_factors.npy", mmap=True)
        exclude = storage.read_sparse(run.data_dir / "user_items.npz")
        entry, n = indices[config.recommend.metric], config.recommend.top_n
        return RankedJob(kind, queries, exclude, item_factors, entry, n)
    if kind != "similar_items":
        raise ValueError(f"kind must be one of {RANKED_KINDS}, found {kind!r}")
    n_items = len(item_factors)
    entry, n = indices[config.similar_items.metric], config.similar_items.top_n
    if n >= n_items:
        raise QueryError(f"similar items top_n must be below the {n_items} items, found {n}")
    exclude = exclude_items(np.arange(n_items), n_items)
    return RankedJob(kind, item_factors, exclude, item_factors, entry, n)


def open_job_index(run_dir: Path, job: RankedJob, threads: int | None = None) -> SearchIndex:
    """The index that serves a job, opened from its file (checks first)."""
    return open_index(run_dir, job.entry, np.ascontiguousarray(job.item_factors), threads=threads)


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
        _search_k(job.entry),
        progress=progress,
    ):
        yield start + first, ids, scores


# A worker scores many shards of the same job: it reads the job's inputs and opens (and
# checks) the index once, not once per shard.
_WORKER_JOBS: dict[tuple[str, ...], tuple[RankedJob, SearchIndex]] = {}


def score_shard(
    run: RunPaths,
    config: PipelineConfig,
    model: str,
    indices: dict[str, Any],
    kind: str,
    start: int,
    stop: int,
    threads: int = 1,
) -> tuple[int, np.ndarray, np.ndarray]:
    """The lists of query rows start..stop as one block (ids int32, scores float32): the
    unit of work of a Dask worker, which reads the run folder and opens the index file
    itself, by path. BLAS is pinned to one thread here, whatever the worker's environment."""
    # keyed on the files too: a long-lived worker may see the same run id written again
    inputs = [run.model_dir(model) / "item_factors.npy"]
    if kind == "recommendations":
        inputs += [run.model_dir(model) / "user_factors.npy", run.data_dir / "user_items.npz"]
    stamps = [f"{path.stat().st_mtime_ns}:{path.stat().st_size}" for path in inputs]
    key = (str(run.dir), model, kind, json.dumps(indices, sort_keys=True), str(threads), *stamps)
    if key not in _WORKER_JOBS:
        _WORKER_JOBS.clear()
        job = ranked_job(run, config, model, indices, kind)
        _WORKER_JOBS[key] = (job, open_job_index(run.dir, job, threads))
    job, index = _WORKER_JOBS[key]
    with threadpool_limits(limits=1, user_api="blas"):
        blocks = list(score_blocks(index, job, start, stop))
    ids = np.concatenate([block[1] for block in blocks]).astype(np.int32)
    scores = np.concatenate([block[2] for block in blocks])
    return start, ids, scores


def ranked_rows(run: RunPaths, model: str, kind: str) -> int:
    """Queries of ``kind``: users with vectors for recommendations (0 for a model without
    user vectors), items for similar items."""
    name = "user_factors.npy" if kind == "recommendations" else "item_factors.npy"
    path = run.model_dir(model) / name
    return len(storage.read_array(path, mmap=True)) if path.exists() else 0


def shard_bounds(rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most shard_rows rows covering 0..rows."""
    return [(start, min(start + shard_rows, rows)) for start in range(0, rows, max(1, shard_rows))]


def write_ranked(
    run: RunPaths, model: str, kind: str, blocks: Iterable[tuple[int, np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Stream blocks of lists into the model's ``<kind>.parquet`` (one row group per
    ~1M rows; the file appears only when complete). Returns the stage's manifest part."""
    started = time.perf_counter()
    interactions_dir = run.data_dir
    items = storage.read_id_map(interactions_dir / "items.parquet")
    path = run.model_dir(model) / f"{kind}.parquet"
    if kind == "recommendations":
        users = storage.read_id_map(interactions_dir / "users.parquet")
        writer = storage.recommendations_writer(path, users, items, model, run.run_id)
    else:
        writer = storage.similar_items_writer(path, items, model, run.run_id)
    with writer:
        for first_row, ids, scores in blocks:
            writer.write(first_row, ids, scores)
    timing = "recommend" if kind == "recommendations" else "similar_items"
    return {
        "outputs": {kind: run.relative(path)},
        "rows": {kind: writer.rows},
        "timings": {timing: round(time.perf_counter() - started, 3)},
    }


def recommend_stage(
    run: RunPaths, config: PipelineConfig, model: str, indices: dict[str, Any]
) -> dict[str, Any]:
    """Top-N unseen items for every user, streamed to parquet a block of users at a time."""
    if not _has_users(run, model):
        log.info("%s: no user vectors, no recommendations", model)
        return {"timings": {"recommend": 0.0}}
    job = ranked_job(run, config, model, indices, "recommendations")
    index = open_job_index(run.dir, job)
    return write_ranked(
        run, model, job.kind, score_blocks(index, job, progress=_progress(f"{model}: recommend"))
    )


def similar_stage(
    run: RunPaths, config: PipelineConfig, model: str, indices: dict[str, Any]
) -> dict[str, Any]:
    """Top-N similar items for every item (never itself), streamed to parquet."""
    job = ranked_job(run, config, model, indices, "similar_items")
    index = open_job_index(run.dir, job)
    blocks = score_blocks(index, job, progress=_progress(f"{model}: similar items"))
    return write_ranked(run, model, job.kind, blocks)


# ---------------------------------------------------------------- evaluate


def evaluate_stage(
    run: RunPaths, config: PipelineConfig, model: str, indices: dict[str, Any]
) -> dict[str, Any]:
    """Recall@k of the served lists against exact search with the same metric, on samples
    of users (recommendations, seen items excluded) and items (similar items, the item
    itself excluded), with queries per second."""
    interactions: Interactions = storage.read_interactions(run.data_dir)
    item_factors = _item_factors(run, model)
    started = time.perf_counter()
    ann: dict[str, Any] = {}
    user_factors = None
    if _has_users(run, model):
        user_factors = storage.read_array(run.model_dir(model) / "user_factors.npy")
        users = sample_rows(interactions.n_users, config.evaluate.sample_users, config.seed)
        k_rec = min(max(config.evaluate.ks), config.recommend.top_n)
        rec_entry = indices[config.recommend.metric]
        ann["recommendations"] = ann_recall(
            open_index(run.dir, rec_entry, item_factors),
            item_factors,
            user_factors[users],
            k_rec,
            exclude=interactions.user_items[users],
            search_k=_search_k(rec_entry),
        )
    items = sample_rows(interactions.n_items, config.evaluate.sample_items, config.seed + 1)
    k_sim = min(max(config.evaluate.ks), config.similar_items.top_n)
    sim_entry = indices[config.similar_items.metric]
    itself = exclude_items(items, interactions.n_items)
    ann["similar_items"] = ann_recall(
        open_index(run.dir, sim_entry, item_factors),
        item_factors,
        item_factors[items],
        k_sim,
        exclude=itself,
        search_k=_search_k(sim_entry),
    )
    for label, figures in ann.items():
        log.info(
            "%s: %s recall@%d vs exact %s = %.3f (%.0f queries/s)",
            model,
            label,
            figures["k"],
            figures["metric"],
            figures["recall_at_k"],
            figures["queries_per_second"],
        )
    evaluation: dict[str, Any] = {"ann": ann}
    holdout_path = run.data_dir / "holdout.npz"
    if holdout_path.exists() and user_factors is not None:
        evaluation.update(
            _ranking_stage(run, config, model, interactions, user_factors, item_factors, holdout_path)
        )
    return {"evaluation": evaluation, "timings": {"evaluate": round(time.perf_counter() - started, 3)}}


def _ranking_stage(
    run: RunPaths,
    config: PipelineConfig,
    model: str,
    interactions: Interactions,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    holdout_path: Path,
) -> dict[str, Any]:
    """Ranking metrics of the published recommendations, and of exact top-N for the same
    users, against the held-out interactions."""
    holdout = storage.read_sparse(holdout_path)
    top_n = config.recommend.top_n
    users = np.flatnonzero(np.diff(holdout.indptr) > 0)
    holdout = holdout[users]
    published = storage.read_ranked_ids(
        run.model_dir(model) / "recommendations.parquet",
        interactions.users,
        interactions.items,
        top_n,
        rows=users,
    )
    popularity = np.diff(interactions.user_items.tocsc().indptr).astype(np.float64)
    exact, _ = search_all(
        ExactIndex(item_factors, config.recommend.metric),
        user_factors[users],
        top_n,
        interactions.user_items[users],
        item_factors,
    )
    ranking = ranking_metrics(published, holdout, config.evaluate.ks, popularity)
    ranking_exact = ranking_metrics(exact, holdout, config.evaluate.ks, popularity)
    k = max(config.evaluate.ks)
    log.info(
        "%s: recall@%d %.4f, ndcg@%d %.4f on %d held-out users (exact top-N: %.4f, %.4f)",
        model,
        k,
        ranking.get(f"recall@{k}", float("nan")),
        k,
        ranking.get(f"ndcg@{k}", float("nan")),
        ranking.get("users", 0),
        ranking_exact.get(f"recall@{k}", float("nan")),
        ranking_exact.get(f"ndcg@{k}", float("nan")),
    )
    return {"ranking": ranking, "ranking_exact": ranking_exact}


# ---------------------------------------------------------------- publish


def merge_model_results(*parts: dict[str, Any]) -> dict[str, Any]:
    """Merge stage results of one model: dict values merge one level deep."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def carry_over_models(
    run: RunPaths, config: PipelineConfig, prepared: dict[str, Any], trained: set[str]
) -> dict[str, Any]:
    """Models of the config not trained in this run, carried from the current run.

    A run with ``--models als`` retrains als only; the other models' published files are
    hard-linked from the current run when it was made from the same input file, so the
    new run stays complete for downstream readers.
    """
    wanted = [m.name for m in config.models if m.name not in trained]
    if not wanted:
        return {}
    try:
        previous, manifest = storage.open_run(run.root)
    except RunError:
        log.warning("no current run to carry %s over from", ", ".join(wanted))
        return {}
    if manifest["input"]["sha256"] != prepared["input"]["sha256"]:
        log.warning(
            "not carrying %s over from run %s: its input differs",
            ", ".join(wanted),
            previous.run_id,
        )
        return {}
    carried = {}
    for name in wanted:
        entry = manifest["models"].get(name)
        if entry is None:
            continue
        source, target = previous.model_dir(name), run.model_dir(name)
        for path in source.rglob("*"):
            if path.is_file():
                storage.link_or_copy(path, target / path.relative_to(source))
        carried[name] = {
            **entry,
            "carried_over_from": entry.get("carried_over_from", previous.run_id),
        }
        log.info("%s: carried over from run %s", name, previous.run_id)
    return carried


def report_stage(run: RunPaths, manifest: dict[str, Any]) -> str:
    """Write the run's self-contained ``report.html``; returns its path relative to the run."""
    from recsys.report import render_report

    path = run.dir / "report.html"
    storage.write_text(path, render_report(run.dir, manifest))
    return run.relative(path)


def build_manifest(
    run: RunPaths,
    config: PipelineConfig,
    prepared: dict[str, Any],
    models: dict[str, Any],
    created_at: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The run manifest (paths relative to the run folder)."""
    return {
        "format": storage.RUN_FORMAT,
        "run_id": run.run_id,
        "created_at": created_at,
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recsys_version": __version__,
        "config": config.to_dict(),
        "config_sha256": config.sha256(),
        "input": prepared["input"],
        "data": prepared["data"],
        "holdout": prepared.get("holdout"),
        "timings": timings,
        "models": models,
    }
