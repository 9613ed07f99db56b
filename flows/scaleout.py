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
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.observe import route_logs
from recsys import stages
from recsys.config import PipelineConfig, TaskRunnerConfig
from recsys.errors import ConfigError
from recsys.manifest import ListPart
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
