"""What operators see of a run in Prefect: the flow run named by the recsys run id, the
pipeline's own log lines sent to the API however the run was started (CLI, deployment,
Dask workers), stable task run names, and artifacts of each published run (a table of
per-model metrics, a link to the report) under keys that keep their history."""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

PROJECT_LOGGERS = ("recsys", "flows")
"""The loggers of the project's code: every module logs under its own name."""


def route_logs() -> None:
    """Send the ``recsys`` and ``flows`` loggers' records to the Prefect API of the
    current run, at INFO: a deployment's runner process and a Dask worker do not
    configure them."""
    from prefect.logging.handlers import APILogHandler

    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
            logger.addHandler(APILogHandler())


def name_flow_run(run_id: str) -> None:
    """Name the current flow run after the recsys run id (the output folder's name)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=run_id)
    except Exception as exc:  # noqa: BLE001  (a name is a convenience: never fail a run for it)
        log.warning("could not name the flow run %s: %s", run_id, exc)


def task_name(stage: str):
    """A task_run_name callable: ``<stage>-<model>`` (``-split`` for the evaluation part),
    or the stage alone: stable across runs, no random suffixes."""

    def name() -> str:
        from prefect.runtime import task_run

        parameters = task_run.parameters or {}
        model = parameters.get("model")
        model_name = getattr(model, "name", model)
        run = parameters.get("run")
        suffix = "-split" if getattr(run, "part", "") else ""
        return f"{stage}-{model_name}{suffix}" if model_name else stage

    return name


def artifact_key(text: str) -> str:
    """An artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "recsys"


def metrics_rows(manifest: Any) -> list[dict[str, Any]]:
    """The rows of the metrics table artifact, one per model: its ranking figures on
    held-out interactions, the recall of its served lists against exact search, its fit
    time, and, where the run measured the current run's lists against what came next
    (``forward``), the figures of that run's model of the same name."""
    forward = manifest.forward
    rows = []
    for name, model in manifest.models.items():
        ranking = model.evaluation.ranking
        ann = model.evaluation.ann
        row: dict[str, Any] = {"model": name, "type": model.type, "dim": model.dim}
        if ranking and ranking.ks:
            k = ranking.ks[-1]
            row[f"ndcg@{k}"] = round(ranking.at("ndcg", k), 4)
            row[f"recall@{k}"] = round(ranking.at("recall", k), 4)
        if ann.recommendations is not None:
            row["ann recall (recommendations)"] = ann.recommendations.recall_at_k
        row["ann recall (similar items)"] = ann.similar_items.recall_at_k
        row["fit s"] = model.timings.get("fit")
        figures = forward.models.get(name) if forward is not None else None
        if figures is not None:
            row["forward hit rate"] = round(figures.hit_rate, 4)
            row[f"forward recall@{figures.top_n}"] = round(figures.recall, 4)
            lift = figures.lift_recall
            row["forward lift (recall)"] = None if lift is None else round(lift, 2)
        rows.append(row)
    return rows


def publish_artifacts(manifest: Any, run_dir: str, deployment: str) -> None:
    """A table artifact of per-model metrics and a markdown artifact linking the report,
    keyed by the deployment name so the UI shows their history across runs."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(f"recsys-{deployment}")
    rows = metrics_rows(manifest)
    forward = manifest.forward
    measured = (
        f"; forward: the lists of run {forward.against} against {forward.pairs} later interactions "
        f"of {forward.users} users ({forward.window})"
        if forward is not None
        else ""
    )
    try:
        create_table_artifact(
            key=f"{key}-metrics",
            table=rows,
            description=f"run {manifest.run_id}: ranking metrics on held-out interactions and recall of "
            f"the served lists against exact search, per model{measured}",
        )
        report = f"{run_dir}/{manifest.report}" if manifest.report else None
        lines = [
            f"# recsys run {manifest.run_id}",
            f"- published to `{run_dir}` ({manifest.purpose})",
            *(
                [f"- held by the promotion gate, not made current: {manifest.promotion.reason}"]
                if manifest.promotion is not None and manifest.promotion.held
                else []
            ),
            f"- input: {manifest.input.users} users x {manifest.input.items} items, "
            f"{manifest.input.interactions} interactions",
            *(
                [
                    f"- the lists of run {forward.against} against what came next ({forward.window}): "
                    + ", ".join(
                        f"{name} hit rate {m.hit_rate:.4f}, recall@{m.top_n} {m.recall:.4f}"
                        for name, m in forward.models.items()
                    )
                ]
                if forward is not None and forward.models
                else []
            ),
            f"- report: [{report}](file://{report})" if report else "- no report",
        ]
        create_markdown_artifact(
            key=f"{key}-report", markdown="\n".join(lines), description="the run's report"
        )
    except Exception as exc:  # noqa: BLE001  (the run is published: artifacts are extra)
        log.warning("could not create the run's artifacts: %s", exc)
