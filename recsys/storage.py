"""Everything that touches paths: input tables, run folders, parquet outputs, CURRENT.

Publishing protocol (nothing is ever half-written where a reader can see it):

1. A run is written into ``<root>/runs/.staging-<run_id>`` (a hidden folder: readers
   and dataset scanners skip names starting with ``.``).
2. Every file is written to a temp name in its folder, fsynced, then ``os.replace``d.
3. ``manifest.json`` is written last into the staging folder, which is then renamed to
   ``<root>/runs/<run_id>`` in one step; ``_SUCCESS`` is written into it after that.
4. ``<root>/CURRENT`` (the id of the newest complete run) is replaced atomically.

A run folder without ``_SUCCESS`` is incomplete: readers ignore it and the next run
removes it. A failed run never reaches step 3: the previous run and ``CURRENT`` are
untouched. One run at a time publishes to a root (an exclusive lock on
``<root>/.lock``); lookups hold a shared lock on the run they read, which retention
respects.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys import faults
from recsys.data.interactions import IdKind, IdMap, Interactions
from recsys.errors import InputError, RunError

RUN_FORMAT = "recsys-run/1"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INPUT_COLUMNS = ("user_id", "item_id", "weight", "timestamp")


# ---------------------------------------------------------------- input tables


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


def file_sha256(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_interactions_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a raw interactions table (the bundled sample) as parquet or CSV, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return path


# ---------------------------------------------------------------- atomic files


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; on success fsync it and replace ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: Path, payload: Any) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: Path, text: str) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(text)


def write_array(path: Path, array: np.ndarray) -> None:
    with _atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def read_array(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- parquet schemas


def _id_type(kind: IdKind) -> pa.DataType:
    return pa.int64() if kind == "int" else pa.string()


def recommendations_schema(user_kind: IdKind, item_kind: IdKind) -> pa.Schema:
    return pa.schema(
        [
            pa.field("user_id", _id_type(user_kind), nullable=False),
            pa.field("item_id", _id_type(item_kind), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
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
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def __enter__(self) -> RankedWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = _atomic_path(self.path)
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
        if self._pending:
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


def write_similar_items(
    path: Path, items: IdMap, ids: np.ndarray, scores: np.ndarray, model: str, run_id: str
) -> int:
    """Write similar-items parquet (schema :func:`similar_items_schema`); returns rows."""
    with similar_items_writer(path, items, model, run_id) as writer:
        writer.write(0, ids, scores)
    return writer.rows


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        faults.point("parquet-before-replace")


# ---------------------------------------------------------------- interactions artefacts


def write_interactions(directory: Path, interactions: Interactions) -> dict[str, str]:
    """Write id maps (parquet) and the CSR matrix (npz) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, id_map in (("users", interactions.users), ("items", interactions.items)):
        table = pa.table({"id": pa.array(id_map.ids, type=_id_type(id_map.kind))})
        _write_parquet(directory / f"{name}.parquet", table)
    write_sparse(directory / "user_items.npz", interactions.user_items)
    write_json(directory / "stats.json", interactions.stats)
    return {
        "users": "users.parquet",
        "items": "items.parquet",
        "user_items": "user_items.npz",
        "stats": "stats.json",
    }


def write_sparse(path: Path, matrix: sp.csr_matrix) -> None:
    """A CSR matrix as .npz (no pickles), atomically."""
    with _atomic_path(path) as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, matrix, compressed=False)


def read_sparse(path: Path) -> sp.csr_matrix:
    """A float32 CSR matrix written by :func:`write_sparse`."""
    return sp.csr_matrix(sp.load_npz(path), dtype=np.float32)


def read_ranked_ids(
    path: Path, users: IdMap, items: IdMap, n: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """A published recommendations parquet as int64 internal item ids by rank, one row per
    user of ``rows`` (internal user ids; all users when None), -1 where a user has fewer
    lists entries. Reads the file a batch at a time: memory holds the result, not the file."""
    rows = np.arange(len(users)) if rows is None else np.asarray(rows, dtype=np.int64)
    position = np.full(len(users), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    ids = np.full((len(rows), n), -1, dtype=np.int64)
    source = pq.ParquetFile(path)
    for batch in source.iter_batches(batch_size=ROW_GROUP_ROWS, columns=["user_id", "item_id", "rank"]):
        table = pa.Table.from_batches([batch])
        at = position[users.to_internal(_column_ids(table.column("user_id"), users.kind))]
        keep = at >= 0
        if not keep.any():
            continue
        item_index = items.to_internal(_column_ids(table.column("item_id"), items.kind))
        ranks = table.column("rank").to_numpy().astype(np.int64) - 1
        ids[at[keep], ranks[keep]] = item_index[keep]
    return ids


def _column_ids(column: pa.ChunkedArray, kind: IdKind) -> np.ndarray:
    return column.to_numpy() if kind == "int" else np.asarray(column.to_pylist(), dtype=object)


def read_id_map(path: Path) -> IdMap:
    """An id map written by :func:`write_interactions` (position = internal id)."""
    column = pq.read_table(path).column("id")
    kind: IdKind = "int" if pa.types.is_integer(column.type) else "str"
    return IdMap.from_ids(_column_ids(column, kind), kind)


def read_interactions(directory: Path) -> Interactions:
    """Read what :func:`write_interactions` wrote."""
    users = read_id_map(directory / "users.parquet")
    items = read_id_map(directory / "items.parquet")
    user_items = read_sparse(directory / "user_items.npz")
    stats = read_json(directory / "stats.json")
    return Interactions(users=users, items=items, user_items=user_items, stats=stats)


# ---------------------------------------------------------------- runs


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus random hex."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise RunError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '_', '-', '.', "
            "starting with a letter or digit, no '..'"
        )
    return run_id


@dataclass(frozen=True)
class RunPaths:
    """Paths of one run being written (staging) or published (final)."""

    root: Path
    run_id: str
    staging: bool = True

    @property
    def dir(self) -> Path:
        runs = self.root / "runs"
        return runs / (f".staging-{self.run_id}" if self.staging else self.run_id)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def model_dir(self, model: str) -> Path:
        return self.dir / "models" / model

    def relative(self, path: Path) -> str:
        return path.relative_to(self.dir).as_posix()


def start_run(root: str | Path, run_id: str | None = None) -> RunPaths:
    """Create a fresh staging folder for a run; stale staging folders of the same id go."""
    run = RunPaths(Path(root), check_run_id(new_run_id() if run_id is None else run_id))
    if run.dir.exists():
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True)
    return run


@contextlib.contextmanager
def root_lock(root: str | Path) -> Iterator[None]:
    """Exclusive lock on an output root: one run publishes at a time."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{root}: another recsys run is writing to this output root") from None
        yield


def clean_stale_staging(root: str | Path) -> list[str]:
    """Remove what killed runs left (call with the root lock held): staging folders, and
    run folders moved into place whose ``_SUCCESS`` was never written."""
    runs = Path(root) / "runs"
    removed = []
    if runs.is_dir():
        for entry in runs.iterdir():
            if not entry.is_dir():
                continue
            hidden = entry.name.startswith((".staging-", ".replaced-", ".deleting-"))
            unfinished = (
                not hidden and not (entry / "_SUCCESS").exists() and (entry / "manifest.json").exists()
            )
            if hidden or unfinished:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def publish_run(run: RunPaths, manifest: dict[str, Any]) -> RunPaths:
    """Publish a staged run: manifest into the staging folder, the folder renamed into
    place, ``_SUCCESS`` written, then ``CURRENT`` pointed at it. A crash before
    ``_SUCCESS`` leaves a run folder without it (incomplete; removed by the next run); a
    crash before ``CURRENT`` moves leaves a complete run that is not current."""
    write_json(run.dir / "manifest.json", manifest)
    _fsync_dir(run.dir)
    final = RunPaths(run.root, run.run_id, staging=False)
    replaced = None
    if final.dir.exists():  # a re-run with the same --run-id replaces that run whole
        replaced = final.dir.with_name(f".replaced-{run.run_id}-{secrets.token_hex(3)}")
        os.replace(final.dir, replaced)
    os.replace(run.dir, final.dir)
    _fsync_dir(final.dir.parent)
    faults.point("publish-before-success")
    write_text(final.dir / "_SUCCESS", run.run_id + "\n")
    _fsync_dir(final.dir)
    faults.point("publish-before-current")
    write_text(run.root / "CURRENT", run.run_id + "\n")
    _fsync_dir(run.root)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return final


@contextlib.contextmanager
def reading(run: RunPaths) -> Iterator[None]:
    """Hold a shared lock on a published run while reading it: retention skips such runs."""
    with open(run.dir / "_SUCCESS") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        yield


def apply_retention(root: str | Path, keep_runs: int) -> list[str]:
    """Delete the oldest complete runs beyond ``keep_runs`` (by creation order of run ids
    as listed, newest first), never CURRENT and never a run a reader holds. Each run goes
    first to a hidden name (one rename), then is removed. Call with the root lock held."""
    current = current_run_id(root)
    complete = [r["run_id"] for r in list_runs(root) if r["status"] == "complete"]
    removed = []
    for run_id in complete[keep_runs:]:
        if run_id == current:
            continue
        run = RunPaths(Path(root), run_id, staging=False)
        with open(run.dir / "_SUCCESS") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a lookup is reading it
            doomed = run.dir.with_name(f".deleting-{run_id}")
            os.replace(run.dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(run_id)
    return removed


def current_run_id(root: str | Path) -> str | None:
    path = Path(root) / "CURRENT"
    if not path.exists():
        return None
    return path.read_text().strip() or None


def open_run(root: str | Path, run_id: str | None = None) -> tuple[RunPaths, dict[str, Any]]:
    """A complete published run (CURRENT by default) and its manifest."""
    root = Path(root)
    run_id = run_id or current_run_id(root)
    if run_id is None:
        raise RunError(f"{root}: no published run (CURRENT is missing); run `recsys run` first")
    run = RunPaths(root, check_run_id(run_id), staging=False)
    if not (run.dir / "_SUCCESS").exists():
        raise RunError(f"{run.dir}: run is missing or incomplete (no _SUCCESS)")
    return run, read_json(run.dir / "manifest.json")


def _published_at(run_dir: Path) -> float:
    """When a run was published (its _SUCCESS), or last changed if it never was."""
    success = run_dir / "_SUCCESS"
    return success.stat().st_mtime if success.exists() else run_dir.stat().st_mtime


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run folder with its status (complete/incomplete) and manifest, newest first."""
    runs_dir = Path(root) / "runs"
    current = current_run_id(root)
    listed = []
    if not runs_dir.is_dir():
        return listed
    entries = [e for e in runs_dir.iterdir() if e.is_dir() and not e.name.startswith((".", "_"))]
    for entry in sorted(entries, key=_published_at, reverse=True):
        complete = (entry / "_SUCCESS").exists()
        manifest = read_json(entry / "manifest.json") if complete else None
        listed.append(
            {
                "run_id": entry.name,
                "status": "complete" if complete else "incomplete",
                "current": entry.name == current,
                "manifest": manifest,
            }
        )
    return listed


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a published (never rewritten) file into a new run, copying if needed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
