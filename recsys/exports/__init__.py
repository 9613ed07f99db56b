"""Exports: copies of a published run in other destinations, by name. Parquet stays the
product; an export is made from a complete published run, after it was published.

A new destination is one file (an :class:`~recsys.exports.base.Exporter` and its
settings model) plus one line in :data:`EXPORTERS`; it is then accepted by the config
(``exports: [{type: NAME, params: {...}}]``, params checked when the config loads) and
run by :func:`run_exports`.

A runner calls, once the run is published::

    results = run_exports(config.exports, root, run_id)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.errors import ConfigError, ExportError, registered
from recsys.exports.base import (
    ExportContext,
    Exporter,
    ExportResult,
    ExportSettings,
    SettingsProblems,
)
from recsys.exports.duckdb import DuckDBExporter

logger = logging.getLogger(__name__)

EXPORTERS: dict[str, Exporter] = {
    "duckdb": DuckDBExporter(),
}
"""Exporters by their config ``type``."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def get_exporter(name: str) -> Exporter:
    """The registered exporter called ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return EXPORTERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown exporter {name!r}: expected one of {', '.join(EXPORTERS)}") from None


def path_settings(exporter: Any) -> tuple[str, ...]:
    """The params of an exporter that are paths (none for an unknown exporter): a config
    file's relative ones resolve against its folder."""
    found = EXPORTERS.get(exporter) if isinstance(exporter, str) else None
    return found.path_settings if found is not None else ()


class ExportConfig(BaseModel):
    """One export of each published run (``exports[]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    """Exporter, one of the registry (``recsys.exports.EXPORTERS``): ``duckdb`` (a DuckDB
    database file; see params)."""
    name: str | None = None
    """Names the export in logs, results and errors (default: its type)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Settings of the exporter, checked against its typed settings model when the config
    loads (unknown names, wrong types, missing keys are refused): each exporter's params
    are listed below."""

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        return registered(get_exporter, value)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"export name {value!r} must be 1-64 characters of letters, digits, '_', '-', "
                "'.', starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _params_fit_the_exporter(self) -> ExportConfig:
        get_exporter(self.type).parse(self.params)  # SettingsProblems: one per key
        return self

    @property
    def label(self) -> str:
        """The export's name: ``name``, else its type."""
        return self.name or self.type

    @property
    def typed_settings(self) -> ExportSettings:
        """``params`` as the exporter's typed settings (defaults filled in)."""
        return get_exporter(self.type).parse(self.params)


def _detail(exc: BaseException) -> str:
    """An exception as one line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__


def run_exports(
    exports: list[ExportConfig], root: str | Path, run_id: str | None = None
) -> list[ExportResult]:
    """Run each export of ``exports`` in turn over the published run ``run_id`` under the
    output root ``root`` (the current run where None), and return what each wrote.

    The run is opened with :func:`recsys.api.open_run` (a one-line ``RunError`` where it
    is missing or incomplete) and held for the exports, so retention cannot remove it
    meanwhile. The first export that fails stops the others with a one-line
    :class:`ExportError` naming the export, its exporter, the run and the destination;
    that destination keeps what it held before. Nothing to export: ``[]``, the run
    unopened."""
    if not exports:
        return []
    from recsys.api import open_run

    results: list[ExportResult] = []
    with open_run(root, run_id) as run:
        mode = str((run.manifest.config.get("output") or {}).get("mode", "0644"))
        for export in exports:
            exporter = get_exporter(export.type)
            settings = exporter.parse(export.params)
            destination = exporter.destination(settings)
            where = f"export {export.label} ({exporter.name}) of run {run.run_id} to {destination}"
            missing = exporter.missing()
            if missing is not None:
                raise ExportError(f"{where}: {missing}", export.label, destination)
            context = ExportContext(name=export.label, file_mode=int(mode, 8))
            try:
                result = exporter.export(run, settings, context)
            except Exception as exc:
                raise ExportError(f"{where} failed: {_detail(exc)}", export.label, destination) from exc
            tables = ", ".join(f"{table} {rows}" for table, rows in result.tables.items())
            logger.info("%s: %s rows in %.2f s", where, tables, result.seconds)
            results.append(result)
    return results


__all__ = [
    "EXPORTERS",
    "ExportConfig",
    "ExportContext",
    "ExportError",
    "ExportResult",
    "ExportSettings",
    "Exporter",
    "SettingsProblems",
    "get_exporter",
    "path_settings",
    "run_exports",
]
