"""Precomputed vectors (an image or text encoder's, another training job's): reading and
validation, the same checks trained factors get.

Layouts:
- parquet with ``id`` (or ``item_id`` / ``user_id``) and one fixed-size list<float>
  column (``vector`` by default, or the only list column);
- parquet with the id column and one float column per dimension;
- ``.npy`` float matrix (n, dim) with a separate id table (parquet or CSV, column ``id``
  or the first column) of n rows, in the same order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.interactions import IdKind, IdMap
from recsys.data.vectors import check_vector_rows, vector_problem
from recsys.errors import InputError
from recsys.storage.files import kind_of

ID_COLUMNS = ("id", "item_id", "user_id")


def _ids_from_column(column: pa.ChunkedArray, path: Path) -> tuple[np.ndarray, IdKind]:
    if column.null_count:
        raise InputError(f"{path}: {column.null_count} row(s) have a missing id")
    if pa.types.is_integer(column.type):
        return column.to_numpy().astype(np.int64), "int"
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.asarray(column.to_pylist(), dtype=object), "str"
    raise InputError(f"{path}: ids must be integers or strings, found {column.type}")


def _read_id_table(path: Path, expected: int) -> tuple[np.ndarray, IdKind]:
    from recsys.storage.tables import read_any_table

    frame = read_any_table(path)
    name = next(
        (c for c in ID_COLUMNS if c in frame.columns), frame.columns[0] if len(frame.columns) else None
    )
    if name is None:
        raise InputError(f"{path}: no id column")
    if len(frame) != expected:
        raise InputError(f"{path}: has {len(frame)} ids for {expected} vectors")
    return _ids_from_column(pa.chunked_array([pa.array(frame[name].tolist())]), path)


def read_vectors(
    path: str | Path, ids_path: str | Path | None = None, column: str | None = None, what: str = "item"
) -> tuple[IdMap, np.ndarray]:
    """(ids, float32 matrix (n, dim)) from one of the layouts above, validated: one
    dimension, finite values, non-zero norms, unique ids (each a one-line error)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.suffix == ".npy":
        if ids_path is None:
            raise InputError(f"{path}: .npy vectors need an id table ({what}_ids in the params)")
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a numeric .npy matrix ({exc})") from None
        if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
            raise InputError(f"{path}: expected a 2-d numeric matrix, found {matrix.dtype} {matrix.shape}")
        ids, kind = _read_id_table(Path(ids_path), len(matrix))
    elif path.suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
        id_name = next((c for c in ID_COLUMNS if c in table.column_names), None)
        if id_name is None:
            raise InputError(f"{path}: no id column (expected one of {', '.join(ID_COLUMNS)})")
        ids, kind = _ids_from_column(table.column(id_name), path)
        lists = [
            f.name for f in table.schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
        ]
        name = column or ("vector" if "vector" in lists else (lists[0] if len(lists) == 1 else None))
        if name is not None:
            values = table.column(name).combine_chunks()
            lengths = (
                values.value_lengths().to_numpy(zero_copy_only=False)
                if hasattr(values, "value_lengths")
                else None
            )
            if values.null_count:
                raise InputError(f"{path}: {values.null_count} row(s) have no {name}")
            if lengths is not None and len(np.unique(lengths)) > 1:
                counts = np.unique(lengths, return_counts=True)
                raise InputError(
                    f"{path}: column {name} has vectors of {len(counts[0])} different dimensions "
                    f"({', '.join(f'{n} x {d}' for d, n in zip(*counts, strict=True))})"
                )
            flat = values.flatten().to_numpy(zero_copy_only=False)
            matrix = flat.reshape(len(ids), -1) if len(ids) else flat.reshape(0, 0)
        else:
            floats = [
                c
                for c in table.column_names
                if c != id_name and pa.types.is_floating(table.schema.field(c).type)
            ]
            if not floats:
                raise InputError(f"{path}: no vector column (a list column or float columns)")
            matrix = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in floats])
    else:
        raise InputError(f"{path}: unsupported vector file {path.suffix!r}: expected .parquet or .npy")
    return _validated(ids, kind, np.asarray(matrix, dtype=np.float32), path, what)


def _validated(
    ids: np.ndarray, kind: IdKind, matrix: np.ndarray, path: Path, what: str
) -> tuple[IdMap, np.ndarray]:
    if len(ids) == 0 or matrix.size == 0:
        raise InputError(f"{path}: no {what} vectors")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f"{path}: {int((counts > 1).sum())} {what} id(s) appear more than once, "
            f"e.g. {unique[counts > 1][0]!r}"
        )
    check_vector_rows(matrix, f"{what} vectors", InputError, f"{path}: ")
    return IdMap.from_ids(ids, kind), np.ascontiguousarray(matrix)


def align(vectors_ids: IdMap, matrix: np.ndarray, run_ids: IdMap, path: str, what: str) -> np.ndarray:
    """Rows of ``matrix`` in the order of the run's id map; every run id needs a vector."""
    positions = vectors_ids.to_internal(run_ids.ids, strict=False)
    missing = positions < 0
    if missing.any():
        raise InputError(
            f"{path}: {int(missing.sum())} {what}(s) of the run have no vector, "
            f"e.g. {run_ids.ids[missing][0]!r}"
        )
    return np.ascontiguousarray(matrix[positions])


def read_query_vector(path: str | Path) -> np.ndarray:
    """One query vector, float32 (1, dim), from a .npy (dim,) or (1, dim), or a one-row
    parquet (a list column or float columns)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    kind = kind_of(path)  # a FIFO or a device would block the reader
    if kind is not None:
        raise InputError(f"{path}: is {kind}, expected a .npy or parquet file")
    if path.suffix == ".npy":
        try:
            vector = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
        if not np.issubdtype(vector.dtype, np.number) or not (
            vector.ndim == 1 or (vector.ndim == 2 and vector.shape[0] == 1)
        ):
            raise InputError(
                f"{path}: expected one numeric vector, (dim,) or (1, dim); "
                f"found {vector.dtype} {vector.shape}"
            )
    elif path.suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
        if table.num_rows != 1:
            raise InputError(f"{path}: expected one row, found {table.num_rows}")
        lists = [
            f.name for f in table.schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
        ]
        if len(lists) > 1:
            raise InputError(f"{path}: expected one list column, found {len(lists)}: {', '.join(lists)}")
        if lists:
            values = table.column(lists[0]).to_pylist()[0]
            if values is None or any(v is None for v in values):
                raise InputError(f"{path}: the vector has missing values")
            vector = np.asarray(values, dtype=np.float32)
        else:
            vector = np.asarray(
                [
                    table.column(c)[0].as_py()
                    for c in table.column_names
                    if pa.types.is_floating(table.schema.field(c).type)
                ],
                dtype=np.float32,
            )
    else:
        raise InputError(f"{path}: unsupported vector file {path.suffix!r}: expected .npy or .parquet")
    vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if vector.shape[1] == 0:
        raise InputError(f"{path}: no vector values found (a list column or float columns)")
    if vector_problem(vector, "query vectors"):
        raise InputError(f"{path}: the query vector must be finite with non-zero norm")
    return vector
