"""Parquet outputs with explicit schemas (also when empty), streamed ranked lists, and
the run's interaction artefacts (id maps, CSR matrices)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import faults
from recsys.data.interactions import IdKind, IdMap, Interactions
from recsys.errors import RunError
from recsys.storage.files import atomic_path, file_sha256, read_json, read_sparse, write_json, write_sparse
from recsys.storage.layout import DATA_FILES


def _id_type(kind: IdKind) -> pa.DataType:
    return pa.int64() if kind == "int" else pa.string()


ID_MAP_COLUMNS = {"users": "user_id", "items": "item_id"}
"""The id column of ``data/users.parquet`` and ``data/items.parquet``."""


SOURCES = ("model", "popular")
"""Where a recommendation comes from (its ``source``): ``model`` (the model's own score of
the served index) or ``popular`` (the fallback for users a run does not know: the number
of the run's users who interacted with the item)."""


def recommendations_schema(user_kind: IdKind, item_kind: IdKind) -> pa.Schema:
    return pa.schema(
        [
            pa.field("user_id", _id_type(user_kind), nullable=False),
            pa.field("item_id", _id_type(item_kind), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
        ]
    )


def similar_items_schema(item_kind: IdKind) -> pa.Schema:
    return pa.schema(
        [
            pa.field("item_id", _id_type(item_kind), nullable=False),
            pa.field("similar_item_id", _id_type(item_kind), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
        ]
    )


def _ranked_table(
    schema: pa.Schema,
    query_ids: IdMap,
    result_ids: IdMap,
    ids: np.ndarray,
    scores: np.ndarray,
    model: str,
    run_id: str,
    first_row: int = 0,
) -> pa.Table:
    """Long table of (query, result, rank, score) from (q, n) arrays whose row i is query
    ``first_row + i``; -1 places dropped."""
    valid = ids >= 0
    rows, cols = np.nonzero(valid)
    columns = [
        pa.array(query_ids.to_external(rows + first_row), type=schema.field(0).type),
        pa.array(result_ids.to_external(ids[rows, cols]), type=schema.field(1).type),
        pa.array((cols + 1).astype(np.int32), type=pa.int32()),
        pa.array(scores[rows, cols].astype(np.float32), type=pa.float32()),
        pa.repeat(pa.scalar(model, type=pa.string()), len(rows)),
        pa.repeat(pa.scalar(run_id, type=pa.string()), len(rows)),
    ]
    if "source" in schema.names:  # a published list comes from the model, never a fallback
        columns.append(pa.repeat(pa.scalar("model", type=pa.string()), len(rows)))
    return pa.Table.from_arrays(columns, schema=schema)


ROW_GROUP_ROWS = 1_000_000


class RankedWriter:
    """Streams ranked lists (recommendations or similar items) into one parquet file, a
    block of query rows at a time, so that memory holds one row group, not the whole
    table. The file appears (atomically) only when the writer closes without error.

    Use as a context manager; :meth:`write` takes blocks in any order of first_row but
    the file keeps the order of the calls.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        query_ids: IdMap,
        result_ids: IdMap,
        model: str,
        run_id: str,
        row_group_rows: int = ROW_GROUP_ROWS,
    ):
        self.path, self.schema = path, schema
        self.query_ids, self.result_ids = query_ids, result_ids
        self.model, self.run_id = model, run_id
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.size_bytes = 0
        self.sha256 = ""
        """Size and sha256 of the file once written."""
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def __enter__(self) -> RankedWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        return self

    def write(self, first_row: int, ids: np.ndarray, scores: np.ndarray) -> None:
        """Append the lists of query rows first_row .. first_row + len(ids) - 1."""
        table = _ranked_table(
            self.schema, self.query_ids, self.result_ids, ids, scores, self.model, self.run_id, first_row
        )
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=self._pending_rows)
        self._pending, self._pending_rows = [], 0

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if kind is None:
                self._flush()
            self._writer.close()
            if kind is None:
                faults.point("parquet-before-replace")
        except BaseException as failure:
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(kind, error, trace)
        if kind is None:
            self.size_bytes, self.sha256 = self.path.stat().st_size, file_sha256(self.path)


def recommendations_writer(path: Path, users: IdMap, items: IdMap, model: str, run_id: str) -> RankedWriter:
    """A :class:`RankedWriter` with the recommendations schema."""
    return RankedWriter(path, recommendations_schema(users.kind, items.kind), users, items, model, run_id)


def similar_items_writer(path: Path, items: IdMap, model: str, run_id: str) -> RankedWriter:
    """A :class:`RankedWriter` with the similar-items schema."""
    return RankedWriter(path, similar_items_schema(items.kind), items, items, model, run_id)


def write_recommendations(
    path: Path,
    users: IdMap,
    items: IdMap,
    ids: np.ndarray,
    scores: np.ndarray,
    model: str,
    run_id: str,
) -> int:
    """Write recommendations parquet (schema :func:`recommendations_schema`); returns rows."""
    with recommendations_writer(path, users, items, model, run_id) as writer:
        writer.write(0, ids, scores)
    return writer.rows


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        faults.point("parquet-before-replace")


# ---------------------------------------------------------------- interactions artefacts


def write_interactions(directory: Path, interactions: Interactions) -> dict[str, str]:
    """Write id maps (parquet: one column, ``user_id`` or ``item_id``, the row position is
    the internal id) and the CSR matrix (npz) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, id_map in (("users", interactions.users), ("items", interactions.items)):
        column = ID_MAP_COLUMNS[name]
        table = pa.table({column: pa.array(id_map.ids, type=_id_type(id_map.kind))})
        _write_parquet(directory / DATA_FILES[name], table)
    write_sparse(directory / DATA_FILES["user_items"], interactions.user_items)
    write_json(directory / DATA_FILES["stats"], interactions.stats)
    return dict(DATA_FILES)


def commit_parts(folder: Path, names: Sequence[str]) -> None:
    """Make ``folder`` hold exactly the part files ``names``: anything else in it (the
    temporary file of a writer killed mid-write, a part of an earlier attempt) is removed;
    a one-line RunError if a named part is missing."""
    wanted = set(names)
    missing = sorted(name for name in wanted if not (folder / name).is_file())
    if missing:
        raise RunError(f"{folder}: part files missing: {', '.join(missing[:5])}")
    for path in folder.iterdir():
        if path.name not in wanted:
            if path.is_dir() and not path.is_symlink():
                raise RunError(f"{folder}: unexpected folder {path.name} among the part files")
            path.unlink()


def read_ranked_table(paths: Sequence[Path], columns: list[str] | None = None) -> pa.Table:
    """The part files of a published list as one table, in their order."""
    tables = [pq.read_table(path, columns=columns) for path in paths]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def read_ranked_ids(
    paths: Path | Sequence[Path], users: IdMap, items: IdMap, n: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """A published recommendations list (its part files, or one file) as int64 internal
    item ids by rank, one row per user of ``rows`` (internal user ids; all users when
    None), -1 where a user has fewer lists entries. Reads a batch at a time: memory holds
    the result, not the lists."""
    rows = np.arange(len(users)) if rows is None else np.asarray(rows, dtype=np.int64)
    position = np.full(len(users), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    ids = np.full((len(rows), n), -1, dtype=np.int64)
    for path in [paths] if isinstance(paths, Path) else paths:
        _read_ranked_ids_into(ids, position, pq.ParquetFile(path), users, items)
    return ids


def _read_ranked_ids_into(
    ids: np.ndarray, position: np.ndarray, source: pq.ParquetFile, users: IdMap, items: IdMap
) -> None:
    for batch in source.iter_batches(batch_size=ROW_GROUP_ROWS, columns=["user_id", "item_id", "rank"]):
        table = pa.Table.from_batches([batch])
        at = position[users.to_internal(_column_ids(table.column("user_id"), users.kind))]
        keep = at >= 0
        if not keep.any():
            continue
        item_index = items.to_internal(_column_ids(table.column("item_id"), items.kind))
        ranks = table.column("rank").to_numpy().astype(np.int64) - 1
        ids[at[keep], ranks[keep]] = item_index[keep]


def _column_ids(column: pa.ChunkedArray, kind: IdKind) -> np.ndarray:
    return column.to_numpy() if kind == "int" else np.asarray(column.to_pylist(), dtype=object)


def read_id_map(path: Path) -> IdMap:
    """An id map written by :func:`write_interactions` (position = internal id): its one
    column, ``user_id`` or ``item_id`` (``id`` in runs written before the names)."""
    table = pq.read_table(path)
    names = [n for n in ("user_id", "item_id", "id") if n in table.column_names]
    if len(names) != 1:
        raise RunError(f"{path}: expected one id column (user_id or item_id), found {table.column_names}")
    column = table.column(names[0])
    kind: IdKind = "int" if pa.types.is_integer(column.type) else "str"
    return IdMap.from_ids(_column_ids(column, kind), kind)


def read_interactions(directory: Path) -> Interactions:
    """Read what :func:`write_interactions` wrote."""
    users = read_id_map(directory / DATA_FILES["users"])
    items = read_id_map(directory / DATA_FILES["items"])
    user_items = read_sparse(directory / DATA_FILES["user_items"])
    stats = read_json(directory / DATA_FILES["stats"])
    return Interactions(users=users, items=items, user_items=user_items, stats=stats)
