"""Offline-safe Prefect defaults, applied before Prefect is imported.

These machines have no internet: analytics and telemetry must be off so nothing waits
on it, and the temporary local API (used when no server is configured) gets time to
start on a fresh database. Values already in the environment win.
"""

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "recsys,flows",
    "PREFECT_UI_ENABLED": "false",
    # recsys's log lines go to the flow run when there is one; the same stages also run
    # without a flow (recsys.run_pipeline), where there is nothing to send them to
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def apply_defaults() -> None:
    """Set each default that the environment does not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


apply_defaults()
