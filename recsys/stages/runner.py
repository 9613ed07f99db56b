"""The whole pipeline in this process, without an orchestrator: the same stages and the
same publish transaction as the Prefect flow (``flows/pipeline.py``), one after the
other. The Python API's ``recsys.run_pipeline`` uses it; so can any scheduler."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import storage
from recsys.config import PipelineConfig, parse_config
from recsys.manifest import RunManifest
from recsys.stages.evaluate import evaluate_stage
from recsys.stages.index import index_stage
from recsys.stages.prepare import prepare_stage
from recsys.stages.publish import (
    assemble_manifest,
    carry_over_models,
    merge_model_results,
    report_stage,
    seal_manifest,
)
from recsys.stages.ranked import recommend_stage, similar_stage
from recsys.stages.train import train_stage


def run_local(
    config: PipelineConfig,
    input_path: str | Path | None,
    root: str | Path,
    run_id: str | None = None,
    models: list[str] | None = None,
    holdout: str | Path | None = None,
) -> RunManifest:
    """Prepare, per model train -> index -> recommend -> similar items -> evaluate, then
    report and publish; returns the published manifest."""
    selected = config.select_models(models) if models else list(config.models)
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    with storage.PublishTransaction(root, run_id, config.retention.keep_runs) as transaction:
        run = transaction.run
        prepared = prepare_stage(run, config, input_path, holdout)
        results = {}
        for model in selected:
            trained = train_stage(run, config, model)
            indexed = index_stage(run, config, model.name)
            indices = indexed["indices"]
            results[model.name] = merge_model_results(
                trained,
                indexed,
                recommend_stage(run, config, model.name, indices),
                similar_stage(run, config, model.name, indices),
                evaluate_stage(run, config, model.name, indices),
            )
        results.update(carry_over_models(run, config, prepared, set(results)))
        timings = {
            "prepare": prepared["seconds"],
            "total_before_publish": round(time.perf_counter() - started, 3),
        }
        manifest = assemble_manifest(run, config, prepared, results, created_at, timings)
        report = report_stage(run, manifest.model_dump(mode="json", exclude_none=True))
        sealed = seal_manifest(run, manifest, report)
        transaction.publish(sealed.model_dump(mode="json", exclude_none=True))
    return sealed


def run_pipeline(
    interactions: pd.DataFrame | str | Path,
    config: PipelineConfig | dict[str, Any],
    output: str | Path | None = None,
    run_id: str | None = None,
) -> Any:
    """Train, index, recommend, evaluate and publish from a DataFrame (or a table's path)
    and a config (object or mapping); returns the published run, opened
    (:class:`recsys.lookup.Run`)."""
    from recsys.lookup import open_run

    if not isinstance(config, PipelineConfig):
        config = parse_config(config, "config")
    root = Path(output or config.output.root)
    if isinstance(interactions, pd.DataFrame):
        with tempfile.TemporaryDirectory(prefix="recsys-input-") as tmp:
            path = storage.write_interactions_table(interactions, Path(tmp) / "interactions.parquet")
            manifest = run_local(config, path, root, run_id)
    else:
        manifest = run_local(config, interactions, root, run_id)
    return open_run(root, manifest.run_id)
