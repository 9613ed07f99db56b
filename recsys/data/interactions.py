"""Validated interactions: id maps for users and items and a users x items CSR matrix.

implicit and Annoy only ever see dense internal ids ``0..n-1``; an :class:`IdMap`
per entity carries the external ids beside the matrix. External ids are either all
integers (kept as int64) or all strings, and keep that type in every output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InputError, QueryError

USER, ITEM, WEIGHT, TIMESTAMP = "user_id", "item_id", "weight", "timestamp"
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
"""The smallest normal float32 (1.18e-38): positive weights below it are refused."""
IdKind = Literal["int", "str"]
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


@dataclass(frozen=True, eq=False)
class IdMap:
    """External ids of one entity, position = internal id.

    ``ids`` is sorted and unique: int64 for integer ids, object (Python ``str``) for
    string ids.
    """

    ids: np.ndarray
    kind: IdKind
    _lookup: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lookup = pd.Index(self.ids, dtype=np.int64 if self.kind == "int" else object)
        if not lookup.is_unique:
            raise ValueError("IdMap ids must be unique")
        object.__setattr__(self, "_lookup", lookup)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_ids(cls, ids: np.ndarray | list, kind: IdKind | None = None) -> IdMap:
        """An IdMap over ids already unique (order kept)."""
        array = np.asarray(ids)
        if kind is None:
            kind = "int" if np.issubdtype(array.dtype, np.integer) else "str"
        array = array.astype(np.int64) if kind == "int" else np.asarray(ids, dtype=object)
        return cls(array, kind)

    def to_internal(self, external: np.ndarray | list, strict: bool = True) -> np.ndarray:
        """Internal ids (int64) of external ids.

        strict: unknown ids raise :class:`QueryError`; otherwise they map to -1.
        """
        typed = np.asarray(external) if self.kind == "int" else None
        if typed is None or not np.issubdtype(typed.dtype, np.integer):
            # Values that are not integers (a string, 1.5, 2**70) can never match an int
            # map: looked up as objects they are unknown ids, not a conversion error.
            typed = np.asarray(external, dtype=object)
        external = typed
        if external.ndim != 1:
            raise QueryError(f"ids must be a flat list of integers or strings, found shape {external.shape}")
        try:
            internal = self._lookup.get_indexer(external).astype(np.int64)
        except (TypeError, ValueError):  # unhashable or nested values: no id of any run
            example = next(
                (v for v in external.tolist() if not isinstance(v, int | str)), external.tolist()[0]
            )
            raise QueryError(
                f"ids must be integers or strings, found {type(example).__name__} {example!r}"
            ) from None
        if strict and (internal < 0).any():
            missing = external[internal < 0]
            raise QueryError(
                f"{len(missing)} unknown id(s), e.g. {missing.tolist()[0]!r} "
                f"(the map holds {len(self)} {self.kind} ids)"
            )
        return internal

    def to_external(self, internal: np.ndarray) -> np.ndarray:
        """External ids at the given internal positions."""
        return self.ids[np.asarray(internal, dtype=np.int64)]

    def parse(self, text: str) -> int | str:
        """An external id typed as this map's ids, from a command-line string."""
        if self.kind == "str":
            return text
        if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
            return int(text)
        try:
            meant = int(text)
        except ValueError:
            raise QueryError(f"id {text!r} is not an integer; this run's ids are integers") from None
        # '01', ' 1', '+1', '1_000' read as 1 by int(): answering for user 1 would answer
        # for someone else than the caller named
        raise QueryError(f"id {text!r} is not written as this run writes integer ids (did you mean {meant}?)")


@dataclass(frozen=True, eq=False)
class Interactions:
    """Validated interactions.

    user_items: float32 CSR of shape (n_users, n_items); duplicates are summed.
    stats: counts of what validation read, merged and dropped.
    """

    users: IdMap
    items: IdMap
    user_items: sp.csr_matrix
    stats: dict[str, int]

    def __post_init__(self) -> None:
        shape = (len(self.users), len(self.items))
        if self.user_items.shape != shape:
            raise ValueError(f"user_items has shape {self.user_items.shape}, ids give {shape}")
        if self.user_items.dtype != np.float32 or not isinstance(self.user_items, sp.csr_matrix):
            raise ValueError("user_items must be a float32 scipy.sparse.csr_matrix")

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def nnz(self) -> int:
        return int(self.user_items.nnz)

    def seen_counts(self) -> np.ndarray:
        """Distinct items per user, int64 of shape (n_users,)."""
        return np.diff(self.user_items.indptr).astype(np.int64)


def _id_column(frame: pd.DataFrame, column: str, source: str) -> tuple[np.ndarray, IdKind]:
    values = frame[column]
    missing = int(values.isna().sum())
    if missing:
        raise InputError(f"{source}: {missing} row(s) have a missing {column}")
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise InputError(f"{source}: column {column} must hold integers or strings, found booleans")
    if pd.api.types.is_integer_dtype(dtype):
        if pd.api.types.is_unsigned_integer_dtype(dtype):
            too_large = int((values > np.iinfo(np.int64).max).sum())
            if too_large:
                raise InputError(
                    f"{source}: {too_large} value(s) of column {column} are above the int64 "
                    f"maximum {np.iinfo(np.int64).max} (ids are kept as int64)"
                )
        return values.to_numpy(dtype=np.int64), "int"
    if pd.api.types.is_float_dtype(dtype):
        raise InputError(
            f"{source}: column {column} must hold integers or strings, found {dtype} "
            "(floating-point ids are ambiguous)"
        )
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        array = values.to_numpy(dtype=object)
        if len(array) and all(type(v) is int for v in array):  # a CSV of integers past int64
            outside = int(sum(not INT64_MIN <= v <= INT64_MAX for v in array))
            if outside:
                raise InputError(
                    f"{source}: {outside} value(s) of column {column} are outside the int64 range "
                    f"{INT64_MIN} .. {INT64_MAX} (ids are kept as int64)"
                )
            return array.astype(np.int64), "int"
        not_str = np.fromiter((not isinstance(v, str) for v in array), bool, len(array))
        if not_str.any():
            example = array[not_str][0]
            raise InputError(
                f"{source}: column {column} mixes types: {int(not_str.sum())} of {len(array)} "
                f"values are not strings (e.g. {example!r})"
            )
        empty = int((values.str.len() == 0).sum())
        if empty:
            raise InputError(f"{source}: {empty} row(s) have an empty {column}")
        nul = int(values.str.contains("\x00", regex=False).sum())
        if nul:
            raise InputError(f"{source}: {nul} row(s) have a NUL character in {column}")
        return array, "str"
    raise InputError(f"{source}: column {column} must hold integers or strings, found {dtype}")


def _weights(frame: pd.DataFrame, source: str) -> np.ndarray:
    if WEIGHT not in frame.columns:
        return np.ones(len(frame), dtype=np.float64)
    values = frame[WEIGHT]
    if not (pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values)):
        raise InputError(f"{source}: column weight must be numeric, found {values.dtype}")
    weights = values.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = int(np.isnan(weights).sum())
    if missing:
        raise InputError(f"{source}: {missing} row(s) have a missing or NaN weight")
    infinite = int(np.isinf(weights).sum())
    if infinite:
        raise InputError(f"{source}: {infinite} row(s) have an infinite weight")
    negative = int((weights < 0).sum())
    if negative:
        raise InputError(f"{source}: {negative} row(s) have a negative weight (expected >= 0)")
    # models train on float32: a positive weight below its smallest normal number becomes
    # 0 or loses its precision there, and the model learns from nothing
    tiny = (weights > 0) & (weights < FLOAT32_TINY)
    if tiny.any():
        raise InputError(
            f"{source}: {int(tiny.sum())} row(s) have a positive weight below {FLOAT32_TINY:.3g}, "
            f"the smallest float32 (smallest found {weights[tiny].min():.3g}): rescale the column"
        )
    return weights


TimestampKind = Literal["number", "datetime"]
"""What a ``timestamp`` column holds: numbers (kept as they are) or dates and times
(seconds since 1970-01-01 UTC)."""


def timestamp_kind(frame: pd.DataFrame) -> TimestampKind | None:
    """``number`` or ``datetime`` for the ``timestamp`` column of a raw table, None without one."""
    if TIMESTAMP not in frame.columns:
        return None
    return "number" if pd.api.types.is_numeric_dtype(frame[TIMESTAMP].dtype) else "datetime"


def _timestamps(frame: pd.DataFrame, source: str) -> np.ndarray | None:
    """Timestamps as a float64 ordering key (seconds since the epoch, UTC, for dates),
    NaN where missing."""
    if TIMESTAMP not in frame.columns:
        return None
    values = frame[TIMESTAMP]
    if pd.api.types.is_bool_dtype(values.dtype):
        raise InputError(f"{source}: column timestamp must hold dates or numbers, found booleans")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        parsed = pd.to_datetime(values, utc=True, errors="coerce")
    except (TypeError, ValueError):
        parsed = pd.Series(pd.NaT, index=values.index)
    bad = int((parsed.isna() & values.notna()).sum())
    if bad:
        raise InputError(f"{source}: {bad} value(s) of column timestamp are not dates or numbers")
    # nanoseconds since the epoch (UTC) as integers: ten times faster than Timedelta seconds
    nanos = parsed.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
    seconds = nanos / 1e9
    seconds[parsed.isna().to_numpy()] = np.nan
    return seconds


@dataclass(frozen=True, eq=False)
class InteractionTable:
    """Validated interaction rows, one per distinct (user, item) once deduplicated.

    users / items: external ids (int64 or object); weights: float64 > 0;
    timestamps: float64 ordering key (NaN where missing) or None without the column;
    timestamp_kind: what the column held (numbers, or dates as seconds since the epoch).
    """

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    timestamps: np.ndarray | None
    user_kind: IdKind
    item_kind: IdKind
    stats: dict[str, int]
    timestamp_kind: TimestampKind | None = None

    def __len__(self) -> int:
        return len(self.weights)

    def take(self, rows: np.ndarray) -> InteractionTable:
        """The rows selected by an index or boolean mask (stats kept)."""
        ts = None if self.timestamps is None else self.timestamps[rows]
        return InteractionTable(
            self.users[rows],
            self.items[rows],
            self.weights[rows],
            ts,
            self.user_kind,
            self.item_kind,
            dict(self.stats),
            self.timestamp_kind,
        )


KNOWN_LAYOUTS = (
    ({"userId", "movieId"}, "MovieLens ratings", "movielens"),
    ({"userID", "artistID"}, "Last.fm (HetRec) user_artists", "lastfm-hetrec"),
)


def import_hint(columns: list[str]) -> str:
    """A pointer to ``recsys import`` where the columns look like a known public data set."""
    for needed, what, fmt in KNOWN_LAYOUTS:
        if needed <= set(columns):
            return (
                f"; this looks like {what}: convert it with `recsys import {fmt} FILE --output FILE.parquet`"
            )
    if len(columns) >= 2:
        return (
            "; name the columns user_id and item_id, or convert with "
            "`recsys import table FILE --map user=COL,item=COL --output FILE.parquet`"
        )
    return ""


def check_columns(columns: list[str], source: str) -> None:
    """The id columns are there: else an InputError listing the file's own columns, with a
    hint to ``recsys import`` where they look like a known data set."""
    missing = [c for c in (USER, ITEM) if c not in columns]
    if missing:
        found = ", ".join(columns) or "none"
        raise InputError(
            f"{source}: missing column {', '.join(missing)} (found columns: {found})" + import_hint(columns)
        )


def _duplicate_pairs(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """True for each row whose (user, item) pair came before: one int64 key per pair
    (hashed codes), which is faster than comparing the two columns."""
    user_codes, _ = pd.factorize(users)
    item_codes, item_uniques = pd.factorize(items)
    keys = user_codes.astype(np.int64) * len(item_uniques) + item_codes
    return pd.Series(keys).duplicated().to_numpy()


def _checked_rows(
    frame: pd.DataFrame, source: str
) -> tuple[np.ndarray, IdKind, np.ndarray, IdKind, np.ndarray, np.ndarray | None]:
    """The row checks of :func:`clean_table`, in its order: user ids, item ids, weights,
    timestamps; returns each column's values (and the ids' kinds)."""
    user_values, user_kind = _id_column(frame, USER, source)
    item_values, item_kind = _id_column(frame, ITEM, source)
    return user_values, user_kind, item_values, item_kind, _weights(frame, source), _timestamps(frame, source)


@dataclass(frozen=True)
class RowFacts:
    """What one batch of a table's rows says toward the checks of the whole table
    (:func:`check_rows`): the ids' kinds, the rows and those of a positive weight, the
    largest weight, the distinct items of positive weight and the timestamps' kind."""

    user_kind: IdKind
    item_kind: IdKind
    rows: int
    positive: int
    max_weight: float
    items: np.ndarray
    timestamp_kind: TimestampKind | None


def check_rows(frame: pd.DataFrame, source: str = "interactions") -> RowFacts:
    """Every check :func:`clean_table` makes row by row, on one batch of a table's rows
    (at least one), without building the table: what a table read a batch at a time needs
    to be refused or passed in the memory of a batch. The checks of the whole table
    (empty, every weight 0, summed duplicates overflowing float32, one id kind
    throughout) are the caller's, from the facts of every batch."""
    check_columns([str(c) for c in frame.attrs.get("columns", frame.columns)], source)
    _, user_kind, item_values, item_kind, weights, timestamps = _checked_rows(frame, source)
    positive = weights > 0
    return RowFacts(
        user_kind=user_kind,
        item_kind=item_kind,
        rows=len(frame),
        positive=int(positive.sum()),
        max_weight=float(weights.max()) if len(weights) else 0.0,
        items=pd.unique(item_values[positive]),
        timestamp_kind=timestamp_kind(frame) if timestamps is not None else None,
    )


def clean_table(frame: pd.DataFrame, source: str = "interactions") -> InteractionTable:
    """Validate a raw interactions table; drop zero weights; sum duplicate (user, item) rows
    (keeping the latest timestamp).

    Raises :class:`InputError` naming the source, the column and the count for: an
    empty table, a missing column, missing/empty/mistyped ids, missing, non-finite or
    negative weights, unparseable timestamps.
    """
    check_columns([str(c) for c in frame.attrs.get("columns", frame.columns)], source)
    if len(frame) == 0:
        raise InputError(f"{source}: the table is empty (0 rows)")
    user_values, user_kind, item_values, item_kind, weights, timestamps = _checked_rows(frame, source)

    positive = weights > 0
    zero_weight = int((~positive).sum())
    if zero_weight == len(frame):
        raise InputError(f"{source}: all {len(frame)} rows have weight 0; nothing to learn from")
    rows = len(frame)
    if zero_weight:
        user_values, item_values, weights = user_values[positive], item_values[positive], weights[positive]
        timestamps = None if timestamps is None else timestamps[positive]
    grouped = pd.DataFrame({"u": user_values, "i": item_values, "w": weights})
    if timestamps is not None:
        grouped["t"] = timestamps
    duplicated = _duplicate_pairs(user_values, item_values)
    if duplicated.any():
        aggregations = {"w": "sum", **({"t": "max"} if timestamps is not None else {})}
        grouped = grouped.groupby(["u", "i"], sort=False, as_index=False).agg(aggregations)
    if not np.isfinite(grouped["w"].to_numpy()).all() or (grouped["w"] > np.finfo(np.float32).max).any():
        raise InputError(f"{source}: summed weights overflow float32")
    return InteractionTable(
        users=grouped["u"].to_numpy(dtype=np.int64 if user_kind == "int" else object),
        items=grouped["i"].to_numpy(dtype=np.int64 if item_kind == "int" else object),
        weights=grouped["w"].to_numpy(dtype=np.float64),
        timestamps=None if timestamps is None else grouped["t"].to_numpy(dtype=np.float64),
        user_kind=user_kind,
        item_kind=item_kind,
        stats={
            "rows": rows,
            "zero_weight_rows_dropped": zero_weight,
            "duplicate_rows_merged": int(duplicated.sum()),
        },
        timestamp_kind=timestamp_kind(frame) if timestamps is not None else None,
    )


def interactions_from_table(table: InteractionTable) -> Interactions:
    """Id maps (sorted external ids) and the float32 users x items CSR of a clean table."""
    user_codes, user_ids = pd.factorize(table.users, sort=True)
    item_codes, item_ids = pd.factorize(table.items, sort=True)
    users = IdMap.from_ids(np.asarray(user_ids), table.user_kind)
    items = IdMap.from_ids(np.asarray(item_ids), table.item_kind)
    user_items = sp.csr_matrix(
        (table.weights.astype(np.float32), (user_codes.astype(np.int64), item_codes.astype(np.int64))),
        shape=(len(users), len(items)),
        dtype=np.float32,
    )
    user_items.sort_indices()
    stats = {
        **table.stats,
        "interactions": int(user_items.nnz),
        "users": len(users),
        "items": len(items),
    }
    return Interactions(users=users, items=items, user_items=user_items, stats=stats)


def build_interactions(frame: pd.DataFrame, source: str = "interactions") -> Interactions:
    """Validate a raw table (:func:`clean_table`) and build id maps and the CSR matrix."""
    return interactions_from_table(clean_table(frame, source))
