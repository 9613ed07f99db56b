"""DuckDB: a published run as one database file, for SQL over the lists without parquet.

Tables (``table_prefix`` before each name): ``recommendations`` and ``similar_items`` with
the published columns and types of every model of the run (docs/tables.md), and
``runs``, one row: the run's id, when it was created (UTC) and its models. The file is
written beside the destination under a hidden temporary name and renamed onto it
(``os.replace``): a reader opens the previous database or the new one whole, and a failed
export leaves the previous one as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from recsys.exports.base import ExportContext, Exporter, ExportResult, ExportSettings

if TYPE_CHECKING:
    from recsys.api import Run

CONTROLLED = {("runs",), ("CURRENT",), ("latest",), (".lock",)}
"""What recsys writes in an output root: never an export's destination."""
ID_TYPES = {"int": "BIGINT", "str": "VARCHAR"}
"""The SQL type of ids by the manifest's ``input.user_id_type`` / ``item_id_type``."""


class DuckDBSettings(ExportSettings):
    """A DuckDB database file."""

    path: str = Field(min_length=1)
    """The database file, replaced whole by each export (its folder is created). A relative
    path set in a config file resolves against the config file's folder."""
    table_prefix: str = ""
    """Put before each table's name (``recsys_`` gives ``recsys_recommendations``): letters,
    digits and ``_``, not starting with a digit."""

    @field_validator("table_prefix")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("a table prefix must be letters, digits and '_', not starting with a digit")
        return value


def _columns(run: Run, kind: str) -> list[tuple[str, str]]:
    """The columns of a published list and their SQL types, ids typed as the run's."""
    user = ID_TYPES[run.manifest.input.user_id_type]
    item = ID_TYPES[run.manifest.input.item_id_type]
    ranked = [("rank", "INTEGER"), ("score", "FLOAT"), ("model", "VARCHAR"), ("run_id", "VARCHAR")]
    if kind == "recommendations":
        return [("user_id", user), ("item_id", item), *ranked, ("source", "VARCHAR")]
    return [("item_id", item), ("similar_item_id", item), *ranked]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _created_at(value: str) -> dt.datetime:
    """The manifest's ``created_at`` as a UTC timestamp without zone (DuckDB ``TIMESTAMP``)."""
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def write_tables(connection: Any, run: Run, prefix: str) -> dict[str, int]:
    """The run's tables in an open DuckDB connection; rows written per table."""
    written: dict[str, int] = {}
    for kind in ("recommendations", "similar_items"):
        columns = _columns(run, kind)
        table = _quoted(prefix + kind)
        connection.execute(f"CREATE TABLE {table} ({', '.join(f'{_quoted(c)} {t}' for c, t in columns)})")
        selected = ", ".join(_quoted(c) for c, _ in columns)
        for name, entry in run.manifest.models.items():
            if entry.outputs.get(kind) is None:  # a model of item vectors only publishes no recommendations
                continue
            parts = [str(path) for path in run.list_files(name, kind)]  # verified against the manifest
            connection.execute(f"INSERT INTO {table} SELECT {selected} FROM read_parquet(?)", [parts])
        written[prefix + kind] = int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    runs = _quoted(prefix + "runs")
    connection.execute(f"CREATE TABLE {runs} (run_id VARCHAR, created_at TIMESTAMP, models VARCHAR[])")
    connection.execute(
        f"INSERT INTO {runs} VALUES (?, ?, ?)",
        [run.run_id, _created_at(run.manifest.created_at), run.models],
    )
    written[prefix + "runs"] = 1
    return written


class DuckDBExporter(Exporter):
    """A DuckDB database file with the run's recommendations, similar items and a ``runs`` row."""

    name = "duckdb"
    settings = DuckDBSettings
    path_settings = ("path",)
    requires = ("duckdb",)
    extra = "exports"

    def export(self, run: Run, settings: ExportSettings, context: ExportContext) -> ExportResult:
        import duckdb

        from recsys import storage  # here: loading a config does not import pandas and pyarrow

        assert isinstance(settings, DuckDBSettings)
        start = time.perf_counter()
        path = Path(settings.path)
        kind = storage.kind_of(path)
        if kind is not None:
            raise ValueError(f"{kind} is there: refused (only a database file is replaced)")
        root, target = run.layout.root.resolve(), path.resolve()
        if target.is_relative_to(root) and target.relative_to(root).parts[:1] in CONTROLLED:
            raise ValueError(
                f"it is {root}'s {target.relative_to(root).parts[0]}, which recsys writes: refused "
                "(runs never change; export beside them)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with storage.atomic_path(path, context.file_mode) as tmp:
            try:
                connection = duckdb.connect(str(tmp))
                try:
                    tables = write_tables(connection, run, settings.table_prefix)
                    connection.execute("CHECKPOINT")
                finally:
                    connection.close()
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{tmp}.wal").unlink()
                raise
        storage.fsync_dir(path.parent)  # the rename itself survives a power loss
        return ExportResult(
            name=context.name,
            exporter=self.name,
            run_id=run.run_id,
            destination=str(path),
            tables=tables,
            seconds=round(time.perf_counter() - start, 3),
        )
