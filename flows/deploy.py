"""The scheduled deployment of the pipeline flow (cron from the config).

``recsys deploy`` serves it against a Prefect server; the runner process started by
``serve`` polls the server and runs the flow on schedule. At most one scheduled run
of the deployment runs at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.schedules import Cron

import flows.settings  # noqa: F401  (Prefect defaults before prefect loads)
from flows.pipeline import pipeline_flow
from recsys.config import load_config


def build_deployment(config_path: str, interactions: str | None = None, output: str | None = None) -> Any:
    """A RunnerDeployment of the pipeline flow with the config's cron schedule. Paths are
    absolute (the config's own resolve against its folder), so the scheduled runs do not
    depend on the directory the deployment is served from."""
    config = load_config(config_path)
    parameters: dict[str, Any] = {"config_path": str(Path(config_path).resolve())}
    if interactions:
        parameters["interactions"] = str(Path(interactions).resolve())
    if output:
        parameters["output"] = str(Path(output).resolve())
    return pipeline_flow.to_deployment(
        name=config.schedule.deployment_name,
        schedules=[Cron(config.schedule.cron, timezone=config.schedule.timezone)],
        parameters=parameters,
        concurrency_limit=1,
        description="recsys: train, index, recommend, evaluate and publish a run",
        tags=["recsys"],
    )


def serve_deployment(deployment: Any) -> None:
    """Register the deployment with the server and run its schedule (blocks)."""
    from prefect import serve

    serve(deployment)
