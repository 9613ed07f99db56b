"""An exporter in one file, as a new destination would be written: each list of the run
as a CSV file in a folder, written beside its target and renamed onto it."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from recsys import storage
from recsys.exports.base import ExportContext, Exporter, ExportResult, ExportSettings


class CsvSettings(ExportSettings):
    """A folder of CSV files."""

    folder: str
    """The folder the files are written to (created)."""
    separator: str = ","
    """Between the fields of a line."""


class CsvExporter(Exporter):
    """Every list of the run as one CSV file, all models."""

    name = "csv"
    settings = CsvSettings
    path_settings = ("folder",)

    def export(self, run, settings: ExportSettings, context: ExportContext) -> ExportResult:
        assert isinstance(settings, CsvSettings)
        start = time.perf_counter()
        folder = Path(settings.folder)
        folder.mkdir(parents=True, exist_ok=True)
        tables = {}
        for kind in ("recommendations", "similar_items"):
            frame = pd.concat([getattr(run, kind)(model) for model in run.models], ignore_index=True)
            with storage.atomic_path(folder / f"{kind}.csv", context.file_mode) as tmp:
                frame.to_csv(tmp, sep=settings.separator, index=False)
            tables[kind] = len(frame)
        return ExportResult(
            name=context.name,
            exporter=self.name,
            run_id=run.run_id,
            destination=str(folder),
            tables=tables,
            seconds=time.perf_counter() - start,
        )
