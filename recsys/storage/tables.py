"""Input tables: parquet or CSV/TSV (optionally gzipped) interactions, read with a
one-line :class:`InputError` naming the file, and fingerprinted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import InputError
from recsys.storage.files import atomic_path, file_sha256

INPUT_COLUMNS = ("user_id", "item_id", "weight", "timestamp")


def read_any_table(path: str | Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a parquet or CSV/TSV table (optionally gzipped), only ``columns`` if given
    (those present; a table with none of them comes back with its header only).

    Raises :class:`InputError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a parquet or CSV file")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            schema = pq.read_schema(path)
            wanted = schema.names if columns is None else [c for c in columns if c in schema.names]
            if not wanted:
                return pd.DataFrame(columns=schema.names)
            return pq.read_table(path, columns=wanted).to_pandas()
        if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            sep = "\t" if ".tsv" in name else ","
            usecols = None if columns is None else (lambda c: c in columns)
            frame = pd.read_csv(path, sep=sep, usecols=usecols, low_memory=False)
            if frame.columns.empty:
                return pd.DataFrame(columns=pd.read_csv(path, sep=sep, nrows=0).columns)
            return frame
        raise InputError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}: expected .parquet or .csv"
        )
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None


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
