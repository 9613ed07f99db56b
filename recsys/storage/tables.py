"""Input tables: parquet or CSV/TSV (optionally gzipped) interactions, read with a
one-line :class:`InputError` naming the file, and fingerprinted."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import InputError
from recsys.storage.files import atomic_path, file_sha256, kind_of

INPUT_COLUMNS = ("user_id", "item_id", "weight", "timestamp")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        return "csv"
    raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}: expected .parquet or .csv")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a parquet or CSV file")
    kind = kind_of(path)  # a FIFO or a device would block the reader, or never end
    if kind is not None:
        raise InputError(f"{path}: is {kind}, expected a parquet or CSV file")


def _unreadable(path: Path, exc: BaseException) -> InputError:
    """The one-line error of a file that cannot be read, naming what it really is."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, pd.errors.EmptyDataError):
        return InputError(f"{path}: the file is empty")
    if isinstance(exc, EOFError | gzip.BadGzipFile | zlib.error) or (
        path.name.lower().endswith(".gz") and isinstance(exc, OSError)
    ):
        return InputError(f"{path}: not a readable gzip file, truncated or corrupt ({detail})")
    if isinstance(exc, PermissionError):
        return InputError(f"{path}: cannot read the file (permission denied)")
    if _kind(path) == "parquet":
        return InputError(f"{path}: not a readable parquet file ({detail})")
    return InputError(f"{path}: not a readable CSV file ({detail})")


_READ_ERRORS = (pa.ArrowException, OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[str]:
    """Check a table's file and give its kind (parquet or csv); what goes wrong reading it
    inside is one :class:`InputError` naming the file."""
    _check_file(path)
    kind = _kind(path)
    try:
        yield kind
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _csv_header(path: Path) -> tuple[str, list[str]]:
    """A CSV/TSV file's separator and its header's columns."""
    sep = "\t" if ".tsv" in path.name.lower() else ","
    return sep, [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]


def table_columns(path: str | Path) -> list[str]:
    """The columns of a parquet or CSV table, from its schema or header only (fast: the
    rows are not read)."""
    path = Path(path)
    with _reading(path) as kind:
        return list(pq.read_schema(path).names) if kind == "parquet" else _csv_header(path)[1]


def read_any_table(path: str | Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a parquet or CSV/TSV table (optionally gzipped), only ``columns`` if given
    (those present; a table with none of them comes back with its header only). The
    file's own columns are in ``frame.attrs["columns"]``.

    Raises :class:`InputError` naming the file and what is wrong with it.
    """
    path = Path(path)
    with _reading(path) as kind:
        if kind == "parquet":
            schema = pq.read_schema(path)
            wanted = schema.names if columns is None else [c for c in columns if c in schema.names]
            frame = pq.read_table(path, columns=wanted).to_pandas() if wanted else pd.DataFrame()
            frame.attrs["columns"] = list(schema.names)
            return frame
        sep, header = _csv_header(path)
        usecols = None if columns is None else (lambda c: c in columns)
        frame = pd.read_csv(path, sep=sep, usecols=usecols, low_memory=False)
        frame.attrs["columns"] = header
        return frame


BATCH_ROWS = 262_144
"""Rows per batch of :func:`iter_table_batches`: about 8 MB of the four input columns."""


def iter_table_batches(
    path: str | Path, columns: tuple[str, ...] = INPUT_COLUMNS, rows: int = BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    """The rows of a parquet or CSV/TSV table (optionally gzipped) as frames of at most
    ``rows`` rows, in file order, each typed as :func:`read_any_table` types the whole
    table (a CSV's types are inferred per batch) and carrying the file's own columns in
    ``frame.attrs["columns"]``: a table read in memory of a batch, whatever its size. A
    table of no rows gives one empty frame.

    Raises :class:`InputError` naming the file and what is wrong with it.
    """
    path = Path(path)
    with _reading(path) as kind, contextlib.ExitStack() as stack:
        if kind == "parquet":
            reader = stack.enter_context(pq.ParquetFile(path))
            names = list(reader.schema_arrow.names)
            wanted = [c for c in columns if c in names]
            batches = reader.iter_batches(batch_size=rows, columns=wanted) if wanted else iter(())
            frames = (pa.Table.from_batches([batch]).to_pandas() for batch in batches)
            empty = reader.schema_arrow.empty_table().select(wanted).to_pandas() if wanted else pd.DataFrame()
        else:
            sep, names = _csv_header(path)
            usecols = lambda c: c in columns  # noqa: E731
            frames = stack.enter_context(
                pd.read_csv(path, sep=sep, usecols=usecols, low_memory=False, chunksize=rows)
            )
            empty = pd.read_csv(path, sep=sep, usecols=usecols, nrows=0)
        yielded = False
        for frame in frames:
            frame.attrs["columns"] = names
            yielded = True
            yield frame
        if not yielded:
            empty.attrs["columns"] = names
            yield empty


def read_interactions_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read the input contract's columns of a parquet or CSV table and fingerprint the
    file: returns the frame and ``{"path", "size_bytes", "sha256"}``."""
    frame = read_any_table(path, INPUT_COLUMNS)
    path = Path(path)
    fingerprint = {
        "path": str(path.resolve()),
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    return frame, fingerprint


def write_interactions_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a raw interactions table (the bundled sample) as parquet or CSV, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return path
