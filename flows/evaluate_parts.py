"""Ranking figures of the published recommendations, part by part on Dask workers.

Each part (one parquet file of lists and its contiguous range of user rows) is a Prefect
task run on a worker, which reads the run folder by path, measures the part's held-out
users (their published lists and exact top-N) and returns only the part's ranking sums
(:class:`recsys.evaluate.RankingSums`, a few KB). The flow adds the sums of all parts
and divides once: the figures are those of one pass over all the users.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.observe import route_logs
from recsys.config import PipelineConfig
from recsys.stages.evaluate import ListsPart, RankingPair, combine_pairs, ranking_part
from recsys.storage import RunLayout

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)


@task(name="evaluate-part", cache_policy=NO_CACHE, task_run_name="evaluate-{model}-{start}")
def evaluate_part(
    run: RunLayout, config: PipelineConfig, model: str, path: Path, start: int, stop: int
) -> RankingPair:
    """The ranking sums (published lists, exact top-N) of user rows start..stop, whose
    lists the parquet file ``path`` holds."""
    route_logs()
    return ranking_part(run, config, model, ListsPart(Path(path), start, stop))


def ranking_on_workers(
    runner: DaskTaskRunner, run: RunLayout, config: PipelineConfig, model: str, parts: list[ListsPart]
) -> RankingPair:
    """The ranking sums of all the parts of a model's published lists, one task per part
    on the Dask workers, added up in the flow (the ``sums_of_parts`` of
    :func:`recsys.stages.evaluate.evaluate_stage`)."""
    if not parts:
        raise ValueError(f"{model}: no parts of published recommendations to evaluate")
    log.info("%s: ranking figures of %d part(s) on the Dask workers", model, len(parts))
    futures = []
    for part in parts:
        parameters = {"run": run, "config": config, "model": model, "path": part.path}
        parameters.update(start=part.start, stop=part.stop)
        futures.append(runner.submit(evaluate_part, parameters=parameters))
    return combine_pairs(future.result() for future in futures)
