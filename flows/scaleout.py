"""Scoring on Dask workers through Prefect's Dask task runner (``task_runner.type: dask``).

Users (and items, for similar items) are split into shards of ``task_runner.shard_rows``
rows. Each shard is a Prefect task run on a Dask worker, which opens the run folder and
the index file by path (indices do not pickle), writes the shard's lists as one part file
of the list's dataset into the run's staging folder on the shared output root
(atomically) and returns only the part's entry: path, rows, size and sha256. The flow
never holds the lists: it commits the parts (in order, every query once, nothing else in
the folder) into the same layout a local run writes.

Every worker reports to the flow's Prefect API: the API URL is put into the settings the
tasks carry and into the workers' environment, so no worker starts a temporary API of its
own (PITFALLS: each would, and leave it running after a crash).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.evaluate_parts import ranking_on_workers
from flows.observe import route_logs, task_name
from recsys import stages
from recsys.config import ModelConfig, PipelineConfig, TaskRunnerConfig
from recsys.errors import ConfigError
from recsys.manifest import ListOutput, ListPart
from recsys.stages.runner import worker_threads
from recsys.storage import RunLayout

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)

# Environment of local workers: analytics off, and the flow's API. BLAS threads need no
# variable: each shard sets its own limit (recsys.threads), as on workers a user started.
WORKER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


@task(name="score-shard", cache_policy=NO_CACHE, task_run_name="{kind}-{model}-{start}")
def score_shard(
    run: RunLayout,
    spec: stages.ListSpec,
    model: str,
    indexed: stages.Indexed,
    kind: str,
    number: int,
    start: int,
    stop: int,
    threads: int,
) -> ListPart:
    route_logs()
    return stages.score_part(run, spec, model, indexed, number, start, stop, threads=threads)


# ---------------------------------------------------------------- a model's stages on a worker
#
# With Dask each model's stages are tasks on the workers: the flow's threads (one per model
# chain, as many as there are workers) only submit them and wait. A worker reads the run
# folder by path and writes the model's files into it; BLAS gets the worker's threads.


@task(name="prepare-data", cache_policy=NO_CACHE, task_run_name="prepare-data")
def prepare_on_worker(
    run: RunLayout, config: PipelineConfig, input_path: str | None, holdout: str | None, threads: int
) -> stages.Prepared:
    route_logs()
    with worker_threads(threads):
        return stages.prepare_stage(run, config, input_path, holdout)


@task(name="train", cache_policy=NO_CACHE, task_run_name=task_name("train"))
def train_on_worker(
    run: RunLayout, config: PipelineConfig, model: ModelConfig, threads: int
) -> stages.Trained:
    route_logs()
    with worker_threads(threads):
        return stages.train_stage(run, config, model)


@task(name="build-indices", cache_policy=NO_CACHE, task_run_name=task_name("index"))
def index_on_worker(run: RunLayout, config: PipelineConfig, model: str, threads: int) -> stages.Indexed:
    route_logs()
    with worker_threads(threads):
        return stages.index_stage(run, config, model)


@task(name="evaluate-split", cache_policy=NO_CACHE, task_run_name=task_name("evaluate"))
def holdout_on_worker(
    run: RunLayout, config: PipelineConfig, model: str, indexed: stages.Indexed, threads: int
) -> stages.SplitEvaluated:
    route_logs()
    with worker_threads(threads):
        return stages.holdout_stage(run, config, model, indexed)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name=task_name("evaluate"))
def recall_on_worker(
    run: RunLayout, config: PipelineConfig, model: str, indexed: stages.Indexed, threads: int
) -> stages.Evaluated:
    """Recall of the served lists against exact search (the ranking figures of the
    published lists are measured part by part: :mod:`flows.evaluate_parts`)."""
    route_logs()
    with worker_threads(threads):
        return stages.evaluate_stage(run, config, model, indexed, None)


def worker_steps(runner: DaskTaskRunner, settings: TaskRunnerConfig) -> dict[str, Any]:
    """The :class:`recsys.stages.runner.Steps` fields of a run on Dask: preparing the
    data, and each model's training, index builds, scoring and evaluation, as tasks on
    the workers, the models side by side (a chain per worker); the flow keeps carry-over,
    the manifest, the report and publishing."""
    threads = settings.threads_per_worker

    def on_worker(stage: Any, **parameters: Any) -> Any:
        return runner.submit(stage, parameters={**parameters, "threads": threads}).result()

    def prepare(
        run: RunLayout, config: PipelineConfig, input_path: str | Path | None, holdout: str | Path | None
    ) -> stages.Prepared:
        paths = {
            "input_path": str(input_path) if input_path else None,
            "holdout": str(holdout) if holdout else None,
        }
        return on_worker(prepare_on_worker, run=run, config=config, **paths)

    def train(run: RunLayout, config: PipelineConfig, model: ModelConfig) -> stages.Trained:
        log.info("%s: trained, indexed and evaluated on the Dask workers", model.name)
        return on_worker(train_on_worker, run=run, config=config, model=model)

    def index(run: RunLayout, config: PipelineConfig, model: str) -> stages.Indexed:
        return on_worker(index_on_worker, run=run, config=config, model=model)

    def holdout(
        run: RunLayout, config: PipelineConfig, model: str, indexed: stages.Indexed
    ) -> stages.SplitEvaluated:
        return on_worker(holdout_on_worker, run=run, config=config, model=model, indexed=indexed)

    def ranked(
        run: RunLayout, spec: stages.ListSpec, model: str, indexed: stages.Indexed, part_rows: int
    ) -> stages.Ranked:
        # parts of the workers' shards: task_runner.shard_rows, at least two per worker
        return ranked_on_workers(runner, settings, run, spec, model, indexed)

    def evaluate(
        run: RunLayout, config: PipelineConfig, model: str, indexed: stages.Indexed, lists: ListOutput | None
    ) -> stages.Evaluated:
        started = time.perf_counter()
        recall = on_worker(recall_on_worker, run=run, config=config, model=model, indexed=indexed)
        # the ranking figures part by part on the workers, where the lists are
        sums = functools.partial(ranking_on_workers, runner)
        ranking, exact = stages.published_ranking(run, config, model, lists, sums_of_parts=sums)
        evaluation = recall.evaluation.model_copy(update={"ranking": ranking, "ranking_exact": exact})
        return stages.Evaluated(evaluation=evaluation, seconds=round(time.perf_counter() - started, 3))

    return {
        "prepare": prepare,
        "train": train,
        "index": index,
        "holdout": holdout,
        "recommend": ranked,
        "similar": ranked,
        "evaluate": evaluate,
        "chains": settings.n_workers,
    }


def current_api_url() -> str:
    """The URL of the Prefect API the running flow reports to (a temporary one included)."""
    from prefect.client.orchestration import get_client

    return str(get_client(sync_client=True).api_url).rstrip("/")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_api_reachable(api_url: str, address: str) -> None:
    """Workers of a cluster on other hosts cannot reach an API on this host's loopback
    (Prefect's temporary API listens there): refuse before any work is sent."""
    api_host = urlsplit(api_url).hostname or ""
    scheduler_host = urlsplit(address).hostname or ""
    if api_host in LOOPBACK and scheduler_host not in LOOPBACK:
        raise ConfigError(
            f"task_runner.address {address} needs a Prefect API its workers can reach, not {api_url}: "
            "run `prefect server start --host 0.0.0.0` and set PREFECT_API_URL on this host and the workers"
        )


@contextlib.contextmanager
def dask_runner(config: PipelineConfig) -> Iterator[DaskTaskRunner | None]:
    """A started DaskTaskRunner for the run (None for ``task_runner.type: local``), with the
    flow's API URL in the settings that submitted tasks carry to the workers."""
    if config.task_runner.type != "dask":
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    api_url = current_api_url()
    settings = config.task_runner
    if settings.address:
        check_api_reachable(api_url, settings.address)
        runner = DaskTaskRunner(address=settings.address)
        where = settings.address
    else:
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.n_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "silence_logs": logging.ERROR,
                "env": {**WORKER_ENV, "PREFECT_API_URL": api_url},
            }
        )
        where = f"a local cluster of {settings.n_workers} worker processes"
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines are per connection
    log.info("scoring on Dask: %s (shards of at most %d rows)", where, settings.shard_rows)
    with temporary_settings(updates={PREFECT_API_URL: api_url}), runner:
        yield runner


def ranked_on_workers(
    runner: DaskTaskRunner,
    settings: TaskRunnerConfig,
    run: RunLayout,
    spec: stages.ListSpec,
    model: str,
    indexed: stages.Indexed,
) -> stages.Ranked:
    """Score one kind of ranked list (``spec``) of one model shard by shard on the Dask
    workers, each writing its shard's part file, and commit the parts. The flow holds
    only the parts' entries; at most two shards per worker are in flight."""
    kind = spec.kind
    rows = stages.ranked_rows(run, model, kind)
    if rows == 0:
        log.info("%s: no user vectors, no recommendations", model)
        return stages.Ranked(kind=kind, seconds=0.0)
    started = time.perf_counter()
    # at least two shards per worker, so that every worker has work (50k items in one
    # shard of 50k would keep one worker busy and the other idle)
    workers = settings.n_workers
    shard_rows = min(settings.shard_rows, max(100, -(-rows // (2 * workers))))
    bounds = stages.shard_bounds(rows, shard_rows)
    log.info("%s: %d shards of up to %d rows on the Dask workers", model, len(bounds), shard_rows)
    in_flight = max(2, 2 * workers)
    label = "recommend" if kind == "recommendations" else "similar items"
    pending: deque[Any] = deque()  # Prefect futures, oldest first
    parts: list[ListPart] = []

    def oldest() -> None:
        parts.append(pending.popleft().result())
        log.info("%s: %s: shard %d/%d", model, label, len(parts), len(bounds))

    try:
        for number, (start, stop) in enumerate(bounds):
            parameters = {"run": run, "spec": spec, "model": model, "indexed": indexed, "kind": kind}
            parameters.update(number=number, start=start, stop=stop, threads=settings.threads_per_worker)
            pending.append(runner.submit(score_shard, parameters=parameters))
            if len(pending) >= in_flight:
                oldest()
        while pending:
            oldest()
    finally:
        for future in pending:  # a failed shard: the others are not waited for
            with contextlib.suppress(Exception):
                future.cancel()
    return stages.commit_ranked(run, model, kind, parts, rows, time.perf_counter() - started)
