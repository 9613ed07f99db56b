"""The recsys pipeline flow: the stages of ``recsys.stages.runner`` (prepare -> forward ->
per model train -> index -> recommend -> similar items -> evaluate -> report -> publish),
each a Prefect task. Tasks pass paths and the stages' typed results, never index objects (Annoy indices do not
pickle)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

import flows.settings  # noqa: F401  (Prefect defaults before prefect loads)
from flows.observe import name_flow_run, publish_artifacts, route_logs, task_name
from flows.scaleout import dask_runner, worker_steps
from recsys import stages, storage
from recsys.config import DEFAULT_CONFIG, ModelConfig, PipelineConfig, TaskRunnerConfig, resolve_inputs
from recsys.exports import ExportConfig, ExportResult, run_exports
from recsys.manifest import Forward, ListOutput, RunManifest
from recsys.stages.forward import forward_stage
from recsys.stages.runner import Steps, execute, held_error
from recsys.storage import RunLayout

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

__all__ = ["DEFAULT_CONFIG", "pipeline_flow", "resolve_inputs"]


@task(name="prepare-data", cache_policy=NO_CACHE, task_run_name="prepare-data")
def prepare_data(
    run: RunLayout, config: PipelineConfig, input_path: str | None, holdout: str | None
) -> stages.Prepared:
    return stages.prepare_stage(run, config, input_path, holdout)


@task(name="forward", cache_policy=NO_CACHE, task_run_name="forward")
def forward(
    run: RunLayout, config: PipelineConfig, input_path: str | None, prepared: stages.Prepared
) -> Forward | None:
    return forward_stage(run, config, input_path, prepared)


@task(name="train", cache_policy=NO_CACHE, task_run_name=task_name("train"))
def train_model(run: RunLayout, config: PipelineConfig, model: ModelConfig) -> stages.Trained:
    return stages.train_stage(run, config, model)


@task(name="build-indices", cache_policy=NO_CACHE, task_run_name=task_name("index"))
def build_indices(run: RunLayout, config: PipelineConfig, model: str) -> stages.Indexed:
    return stages.index_stage(run, config, model)


@task(name="recommend", cache_policy=NO_CACHE, task_run_name=task_name("recommend"))
def recommend(
    run: RunLayout, spec: stages.ListSpec, model: str, indexed: stages.Indexed, part_rows: int
) -> stages.Ranked:
    return stages.ranked_stage(run, spec, model, indexed, part_rows)


@task(name="similar-items", cache_policy=NO_CACHE, task_run_name=task_name("similar"))
def similar_items(
    run: RunLayout, spec: stages.ListSpec, model: str, indexed: stages.Indexed, part_rows: int
) -> stages.Ranked:
    return stages.ranked_stage(run, spec, model, indexed, part_rows)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name=task_name("evaluate"))
def evaluate(
    run: RunLayout, config: PipelineConfig, model: str, indexed: stages.Indexed, lists: ListOutput | None
) -> stages.Evaluated:
    return stages.evaluate_stage(run, config, model, indexed, lists)


@task(name="evaluate-split", cache_policy=NO_CACHE, task_run_name=task_name("evaluate"))
def evaluate_split(
    run: RunLayout, config: PipelineConfig, model: str, indexed: stages.Indexed
) -> stages.SplitEvaluated:
    return stages.holdout_stage(run, config, model, indexed)


@task(name="report", cache_policy=NO_CACHE, task_run_name="report")
def write_report(run: RunLayout, manifest: RunManifest) -> str:
    return stages.report_stage(run, manifest)


@task(name="publish", cache_policy=NO_CACHE, task_run_name="publish")
def publish(transaction: storage.PublishTransaction, manifest: RunManifest, move_current: bool) -> RunLayout:
    return transaction.publish(manifest.to_json(), move_current)


@task(name="export", cache_policy=NO_CACHE, task_run_name="export")
def export(exports: list[ExportConfig], root: str | Path, run_id: str) -> list[ExportResult]:
    return run_exports(exports, root, run_id)


def flow_steps(runner: DaskTaskRunner | None = None, settings: TaskRunnerConfig | None = None) -> Steps:
    """The stages as Prefect tasks. With a Dask task runner, preparing the data and each
    model's stages run as tasks on its workers, the models side by side, and the lists
    are scored and evaluated shard by shard there (:func:`flows.scaleout.worker_steps`)."""
    if runner is None:
        return Steps(
            prepare=prepare_data,
            forward=forward,
            train=train_model,
            index=build_indices,
            recommend=recommend,
            similar=similar_items,
            evaluate=evaluate,
            holdout=evaluate_split,
            report=write_report,
            publish=publish,
            export=export,
        )

    return dataclasses.replace(flow_steps(), **worker_steps(runner, settings or TaskRunnerConfig()))


@flow(name="recsys-pipeline", log_prints=True)
def pipeline_flow(
    config_path: str | None = None,
    interactions: str | None = None,
    output: str | None = None,
    run_id: str | None = None,
    models: list[str] | None = None,
    holdout: str | None = None,
    config: PipelineConfig | None = None,
    gate: bool = True,
) -> dict[str, Any]:
    """Train, index, recommend, evaluate and publish one run.

    config: the loaded config (``recsys run`` has read and checked it already); else it
    is read from ``config_path`` (deployments pass a path).
    models: names of the config's models to (re)train; the others are carried over
    from the current run when it was made from the same input. holdout: a test table
    for ranking metrics (overrides ``evaluate.holdout``). gate: false skips the promotion
    gate (``recsys run --no-gate``). Returns the manifest. A run the promotion gate holds
    is published complete but not current, and the flow run ends Failed with the reason
    as its message (calling the flow raises :class:`recsys.errors.PromotionHeld`).
    """
    route_logs()
    config, input_path, root = resolve_inputs(config_path, interactions, output, config)
    run_id = storage.check_run_id(run_id or storage.new_run_id())
    name_flow_run(run_id)
    with dask_runner(config) as runner:
        manifest, published, removed, exported = execute(
            config, input_path, root, run_id, models, holdout, flow_steps(runner, config.task_runner), gate
        )
    if removed:
        print(f"retention: removed {len(removed)} old run(s): {', '.join(removed)}")
    for result in exported:
        tables = ", ".join(f"{table} ({rows:,} rows)" for table, rows in result.tables.items())
        print(f"exported {result.name} ({result.exporter}) to {result.destination}: {tables}")
    held = held_error(manifest)
    if manifest.purpose != "production":
        kind = "published evaluation run (CURRENT not moved)"
    elif held is not None:
        kind = "published held run (failed the promotion gate; CURRENT not moved)"
    else:
        kind = "published run"
    print(f"{kind} {manifest.run_id} to {published.dir}")
    publish_artifacts(manifest, str(published.dir), config.schedule.deployment_name)
    if held is not None:
        return Failed(message=str(held), data=held)
    return manifest.model_dump(mode="json", exclude_none=True)
