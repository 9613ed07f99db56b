"""Launching the flows from the command line: the flows package (and Prefect) imported with
the settings checked, Prefect's console log on stdout and an API to report to.

The commands of ``recsys`` that orchestrate import this module inside the command, once
their inputs are checked; nothing here imports Prefect before :func:`import_flows` runs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any


def import_flows(debug: bool = False, meanwhile: Callable[[], None] | None = None) -> Any:
    """Import the flows package (and Prefect) with Prefect's console log on stdout, and an
    API to report to: the configured one; the temporary server the console script started
    before any import (:mod:`recsys.console`), once it answers; else (:func:`recsys.cli.main`
    called from Python) the one Prefect starts itself. Returns :mod:`flows.pipeline`.

    ``meanwhile`` runs before waiting for the temporary API this process started (not
    with another API): work the command would do later anyway, done while the API boots
    on the other core instead of after it.

    Progress goes to stdout; stderr is kept for the one-line error. Prefect re-reads
    its logging config when its temporary API starts, so the setting goes through the
    environment.
    """
    from flows import temporary_api
    from flows.settings import apply_defaults

    temporary_api.check_settings()  # a bad profile or setting: one line, not Prefect's traceback
    apply_defaults()  # before Prefect loads its settings
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM", "ext://sys.stdout")

    with temporary_api.settings_errors_in_one_line(debug):
        import flows.pipeline as pipeline_module

    if not debug:
        for name in _PREFECT_RUN_LOGGERS:
            logging.getLogger(name).addFilter(_strip_traceback)
    api = temporary_api.started()
    if api is not None:
        logging.getLogger("prefect").info(
            "Starting temporary server on %s (set PREFECT_API_URL to use a running one)",
            api.url.removesuffix("/api"),
        )
        if meanwhile is not None:
            meanwhile()
        api.wait_ready(temporary_api.startup_timeout())
    else:
        from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

        if PREFECT_API_URL.value():
            temporary_api.check_api(PREFECT_API_URL.value(), PREFECT_API_KEY.value())
    return pipeline_module


_PREFECT_RUN_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def _strip_traceback(record: logging.LogRecord) -> bool:
    """Keep Prefect's failure records to their one-line message (``--debug`` keeps all).

    A logger-level filter: Prefect replaces its handlers when its temporary API
    starts, but leaves the filters of its loggers alone.
    """
    record.exc_info = None
    record.exc_text = None
    return True
