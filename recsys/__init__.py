"""recsys: batch recommendations from an interactions table.

The library is pure: it never imports Prefect. ``flows/`` orchestrates it and
``recsys.cli`` is the command-line front door. The Python API: ``recsys.open_run(root)`` answers
from a published run (:mod:`recsys.lookup`); ``recsys.run_pipeline(frame, config)``
trains and publishes one without Prefect (:mod:`recsys.stages.runner`).
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "open_run", "run_pipeline"]


def __getattr__(name: str) -> Any:
    # imported on first use: `import recsys` stays light for the CLI's help and errors
    if name == "open_run":
        from recsys.lookup import open_run

        return open_run
    if name == "run_pipeline":
        from recsys.stages.runner import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")
