"""The recsys pipeline flow: prepare -> per model (train -> index -> recommend ->
similar items -> evaluate) -> publish. Tasks pass paths and small dicts, never index
objects (Annoy indices do not pickle)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import flows.settings  # noqa: F401  (Prefect defaults before prefect loads)
from flows.scaleout import dask_runner, ranked_on_workers
from recsys import stages, storage
from recsys.config import DEFAULT_CONFIG, ModelConfig, PipelineConfig, resolve_inputs
from recsys.storage import RunPaths

__all__ = ["DEFAULT_CONFIG", "pipeline_flow", "resolve_inputs"]


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(
    run: RunPaths, config: PipelineConfig, input_path: str | None, holdout: str | None
) -> dict[str, Any]:
    return stages.prepare_stage(run, config, input_path, holdout)


@task(name="train", cache_policy=NO_CACHE, task_run_name="train-{model.name}")
def train_model(run: RunPaths, config: PipelineConfig, model: ModelConfig) -> dict[str, Any]:
    return stages.train_stage(run, config, model)


@task(name="build-indices", cache_policy=NO_CACHE, task_run_name="index-{model}")
def build_indices(run: RunPaths, config: PipelineConfig, model: str) -> dict[str, Any]:
    return stages.index_stage(run, config, model)


@task(name="recommend", cache_policy=NO_CACHE, task_run_name="recommend-{model}")
def recommend(run: RunPaths, config: PipelineConfig, model: str, indices: dict) -> dict[str, Any]:
    return stages.recommend_stage(run, config, model, indices)


@task(name="similar-items", cache_policy=NO_CACHE, task_run_name="similar-{model}")
def similar_items(run: RunPaths, config: PipelineConfig, model: str, indices: dict) -> dict[str, Any]:
    return stages.similar_stage(run, config, model, indices)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-{model}")
def evaluate(run: RunPaths, config: PipelineConfig, model: str, indices: dict) -> dict[str, Any]:
    return stages.evaluate_stage(run, config, model, indices)


@task(name="report", cache_policy=NO_CACHE)
def write_report(run: RunPaths, manifest: dict[str, Any]) -> str:
    return stages.report_stage(run, manifest)


@task(name="publish", cache_policy=NO_CACHE)
def publish(transaction: storage.PublishTransaction, manifest: dict[str, Any]) -> str:
    return str(transaction.publish(manifest).dir)


def model_flow(
    run: RunPaths, config: PipelineConfig, model: ModelConfig, runner: Any = None
) -> dict[str, Any]:
    """All stages of one model; returns its manifest entry. With a Dask task runner, the
    recommendations and similar items are scored shard by shard on its workers."""
    trained = train_model(run, config, model)
    indexed = build_indices(run, config, model.name)
    indices = indexed["indices"]
    if runner is None:
        recommended = recommend(run, config, model.name, indices)
        similar = similar_items(run, config, model.name, indices)
    else:
        recommended = ranked_on_workers(runner, run, config, model.name, indices, "recommendations")
        similar = ranked_on_workers(runner, run, config, model.name, indices, "similar_items")
    return stages.merge_model_results(
        trained, indexed, recommended, similar, evaluate(run, config, model.name, indices)
    )


@flow(name="recsys-pipeline", log_prints=True)
def pipeline_flow(
    config_path: str | None = None,
    interactions: str | None = None,
    output: str | None = None,
    run_id: str | None = None,
    models: list[str] | None = None,
    holdout: str | None = None,
    config: PipelineConfig | None = None,
) -> dict[str, Any]:
    """Train, index, recommend, evaluate and publish one run.

    config: the loaded config (``recsys run`` has read and checked it already); else it
    is read from ``config_path`` (deployments pass a path).
    models: names of the config's models to (re)train; the others are carried over
    from the current run when it was made from the same input. holdout: a test table
    for ranking metrics (overrides ``evaluate.holdout``). Returns the manifest.
    """
    config, input_path, root = resolve_inputs(config_path, interactions, output, config)
    selected = config.select_models(models) if models else list(config.models)
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    with storage.PublishTransaction(root, run_id, config.retention.keep_runs) as transaction:
        run = transaction.run
        prepared = prepare_data(run, config, input_path, holdout)
        with dask_runner(config) as runner:
            results = {model.name: model_flow(run, config, model, runner) for model in selected}
        results.update(stages.carry_over_models(run, config, prepared, set(results)))
        timings = {
            "prepare": prepared["seconds"],
            "total_before_publish": round(time.perf_counter() - started, 3),
        }
        manifest = stages.assemble_manifest(run, config, prepared, results, created_at, timings)
        report = write_report(run, manifest.model_dump(mode="json", exclude_none=True))
        sealed = stages.seal_manifest(run, manifest, report)
        run_dir = publish(transaction, sealed.model_dump(mode="json", exclude_none=True))
    if transaction.removed:
        print(f"retention: removed {len(transaction.removed)} old run(s): {', '.join(transaction.removed)}")
    print(f"published run {run.run_id} to {run_dir}")
    return sealed.model_dump(mode="json", exclude_none=True)
