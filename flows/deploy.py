"""The scheduled deployment of the pipeline flow (cron from the config).

``recsys deploy`` serves it against a Prefect server; the runner process started by
``serve`` polls the server and runs the flow on schedule. At most one scheduled run
of the deployment runs at a time.
"""

from __future__ import annotations

from typing import Any

from prefect.schedules import Cron

import flows.settings  # noqa: F401  (Prefect defaults before prefect loads)
from flows.pipeline import pipeline_flow
from recsys.config import load_config


def build_deployment(config_path: str) -> Any:
    """A RunnerDeployment of the pipeline flow with the config's cron schedule."""
    config = load_config(config_path)
    return pipeline_flow.to_deployment(
        name=config.schedule.deployment_name,
        schedules=[Cron(config.schedule.cron, timezone=config.schedule.timezone)],
        parameters={"config_path": config_path},
        concurrency_limit=1,
        description="recsys: train, index, recommend, evaluate and publish a run",
        tags=["recsys"],
    )


def serve_deployment(deployment: Any) -> None:
    """Register the deployment with the server and run its schedule (blocks)."""
    from prefect import serve

    serve(deployment)
