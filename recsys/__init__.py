"""recsys: batch recommendations from an interactions table.

The library is pure: it never imports Prefect. ``flows/`` orchestrates it and
``recsys.cli`` is the command-line front door. The Python API: ``recsys.open_run(root)``
answers from a published run (:mod:`recsys.api`); ``recsys.run_pipeline(frame, config)``
trains and publishes one without Prefect (the stages of :mod:`recsys.stages.runner`) and
returns it opened: this package sits above both, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from recsys.api import Run
    from recsys.config import PipelineConfig

__version__ = "0.1.0"

__all__ = ["__version__", "open_run", "run_pipeline"]


def run_pipeline(
    interactions: pd.DataFrame | str | Path,
    config: PipelineConfig | dict[str, Any],
    output: str | Path | None = None,
    run_id: str | None = None,
) -> Run:
    """Train, index, recommend, evaluate and publish from a DataFrame (or a table's path)
    and a config (object or mapping); returns the published run, opened
    (:class:`recsys.api.Run`)."""
    # imported here: `import recsys` stays light for the CLI's help and errors
    from recsys.api import open_run
    from recsys.config import PipelineConfig, parse_config
    from recsys.stages.runner import run_local

    if not isinstance(config, PipelineConfig):
        config = parse_config(config, "config")
    root = Path(output or config.output.root)
    manifest = run_local(config, interactions, root, run_id)
    return open_run(root, manifest.run_id)


def __getattr__(name: str) -> Any:
    if name == "open_run":
        from recsys.api import open_run

        return open_run
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")
