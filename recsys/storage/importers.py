"""Importers: public data sets and any table into the pipeline's input format.

Each reader returns a frame with ``user_id``, ``item_id``, ``weight`` and, where the
source has one, ``timestamp``. :func:`to_implicit` then turns explicit ratings into
implicit feedback (a minimum rating) and reweights (none, binary, log confidence,
BM25, TF-IDF). The files are read from where the user keeps them; nothing is fetched.

| format | file | layout |
|---|---|---|
| movielens-100k | ``u.data`` | tab-separated ``user item rating timestamp``, no header |
| movielens-1m | ``ratings.dat`` | ``UserID::MovieID::Rating::Timestamp``, no header |
| movielens | ``ratings.csv`` (ml-latest-small, ml-25m) | CSV ``userId,movieId,rating,timestamp`` |
| lastfm-hetrec | ``user_artists.dat`` | tab-separated ``userID artistID weight`` with header |
| lastfm-360k | ``usersha1-artmbid-artname-plays.tsv`` | tab-separated ``user mbid name plays`` |
| table | any CSV / parquet | columns named by a mapping |
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InputError

FORMATS = ("movielens-100k", "movielens-1m", "movielens", "lastfm-hetrec", "lastfm-360k", "table")
WEIGHTINGS = ("none", "binary", "log", "bm25", "tfidf")


def _read(path: Path, reader: Callable[[], pd.DataFrame], expected: str) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        return reader()
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a {expected} file ({str(exc).splitlines()[0]})") from None


def _check_columns(frame: pd.DataFrame, path: Path, expected: int, what: str) -> None:
    if frame.shape[1] != expected:
        raise InputError(f"{path}: expected {expected} columns ({what}), found {frame.shape[1]}")


def read_movielens_100k(path: Path) -> pd.DataFrame:
    names = ["user_id", "item_id", "weight", "timestamp"]
    frame = _read(path, lambda: pd.read_csv(path, sep="\t", header=None), "MovieLens u.data")
    _check_columns(frame, path, 4, "user item rating timestamp")
    frame.columns = names
    return frame


def read_movielens_1m(path: Path) -> pd.DataFrame:
    frame = _read(
        path,
        lambda: pd.read_csv(path, sep="::", header=None, engine="python", encoding="latin-1"),
        "MovieLens ratings.dat",
    )
    _check_columns(frame, path, 4, "UserID::MovieID::Rating::Timestamp")
    frame.columns = ["user_id", "item_id", "weight", "timestamp"]
    return frame


def read_movielens_csv(path: Path) -> pd.DataFrame:
    frame = _read(path, lambda: pd.read_csv(path), "MovieLens ratings.csv")
    return map_columns(
        frame, {"user": "userId", "item": "movieId", "weight": "rating", "timestamp": "timestamp"}, path
    )


def read_lastfm_hetrec(path: Path) -> pd.DataFrame:
    frame = _read(path, lambda: pd.read_csv(path, sep="\t"), "HetRec user_artists.dat")
    return map_columns(frame, {"user": "userID", "item": "artistID", "weight": "weight"}, path)


def read_lastfm_360k(path: Path) -> pd.DataFrame:
    """Artists by MusicBrainz id, or by name where the id is empty."""
    frame = _read(
        path,
        lambda: pd.read_csv(
            path,
            sep="\t",
            header=None,
            quoting=csv.QUOTE_NONE,
            dtype={0: str, 1: str, 2: str},
            na_filter=False,
            on_bad_lines="skip",
        ),
        "Last.fm 360K tsv",
    )
    _check_columns(frame, path, 4, "user artist-mbid artist-name plays")
    artist = frame[1].where(frame[1] != "", "name:" + frame[2])
    plays = pd.to_numeric(frame[3], errors="coerce")
    return pd.DataFrame({"user_id": frame[0], "item_id": artist, "weight": plays})


def map_columns(frame: pd.DataFrame, mapping: dict[str, str], path: Path | str = "table") -> pd.DataFrame:
    """Rename source columns to the input contract: mapping of user/item/weight/timestamp
    to the source's column names (user and item required)."""
    unknown = set(mapping) - {"user", "item", "weight", "timestamp"}
    if unknown:
        raise InputError(f"column mapping: unknown target(s) {', '.join(sorted(unknown))}")
    for target in ("user", "item"):
        if target not in mapping:
            raise InputError(f"column mapping: {target}=<column> is required")
    sources = list(mapping.values())
    twice = sorted({source for source in sources if sources.count(source) > 1})
    if twice:
        targets = [t for t, source in mapping.items() if source == twice[0]]
        raise InputError(
            f"column mapping: column {twice[0]} is mapped to {' and '.join(targets)}; "
            "map each target to a column of its own"
        )
    missing = [source for source in mapping.values() if source not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise InputError(f"{path}: missing column {', '.join(missing)} (found columns: {found})")
    mapped = frame[list(mapping.values())].rename(columns={v: CONTRACT[k] for k, v in mapping.items()})
    # the source's own columns are no longer what the table holds: validation that names
    # the file's columns (frame.attrs["columns"]) must see the mapped ones
    mapped.attrs["columns"] = list(mapped.columns)
    return mapped


CONTRACT = {"user": "user_id", "item": "item_id", "weight": "weight", "timestamp": "timestamp"}
"""Mapping targets and the input contract's column each becomes."""


def table_mapping(columns: list[str], mapping: dict[str, str] | None) -> dict[str, str]:
    """The mapping of a ``table`` import: the one given (by default ``user=user_id,
    item=item_id``), plus every column already named as the contract names it (``weight``,
    ``timestamp``, ...) for a target the mapping leaves out, unless the mapping reads that
    column for another target. A column named ``weight`` is a weight, mapped or not."""
    full = dict(mapping) if mapping is not None else {"user": "user_id", "item": "item_id"}
    for target, column in CONTRACT.items():
        if target not in full and column in columns and column not in full.values():
            full[target] = column
    return full


def parse_mapping(text: str) -> dict[str, str]:
    """``user=userId,item=movieId,weight=rating`` -> a mapping."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InputError(f"column mapping: expected target=column, found {part!r}")
        target, column = (p.strip() for p in part.split("=", 1))
        mapping[target] = column
    return mapping


def read_source(fmt: str, path: str | Path, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Read one of :data:`FORMATS` into the input contract's columns."""
    path = Path(path)
    if fmt == "movielens-100k":
        return read_movielens_100k(path)
    if fmt == "movielens-1m":
        return read_movielens_1m(path)
    if fmt == "movielens":
        return read_movielens_csv(path)
    if fmt == "lastfm-hetrec":
        return read_lastfm_hetrec(path)
    if fmt == "lastfm-360k":
        return read_lastfm_360k(path)
    if fmt == "table":
        from recsys.storage.tables import read_any_table

        frame = read_any_table(path)
        return map_columns(frame, table_mapping([str(c) for c in frame.columns], mapping), path)
    raise InputError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def to_implicit(
    frame: pd.DataFrame, min_rating: float | None = None, weighting: str = "none"
) -> pd.DataFrame:
    """Explicit ratings to implicit feedback and weighting.

    min_rating: keep rows with weight >= min_rating (the rating becomes the weight).
    Rows whose rating is zero or negative are dropped whatever the weighting (binary or
    log weighting would otherwise make them positive); ``attrs["dropped_not_positive"]``
    counts them.
    weighting: ``none`` (as is), ``binary`` (1.0), ``log`` (log confidence 1 + log1p(w)),
    ``bm25`` / ``tfidf`` (implicit's item-user reweighting, K1=100, B=0.8 for BM25).
    """
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
    frame = frame.copy()
    if "weight" not in frame.columns:
        frame["weight"] = 1.0
    if isinstance(frame["weight"].dtype, pd.BooleanDtype) or frame["weight"].dtype == bool:
        raise InputError("the weight column holds booleans, not ratings or counts")
    frame["weight"] = pd.to_numeric(frame["weight"], errors="coerce")  # text: NaN, counted below
    if frame["weight"].isna().any():
        raise InputError(f"{int(frame['weight'].isna().sum())} row(s) have a missing or non-numeric weight")
    if min_rating is not None:
        frame = frame[frame["weight"] >= min_rating]
        if frame.empty:
            raise InputError(f"no rows have a rating of at least {min_rating}")
    if weighting in ("bm25", "tfidf") and frame.duplicated(["user_id", "item_id"]).any():
        aggregations = {"weight": "sum", **({"timestamp": "max"} if "timestamp" in frame.columns else {})}
        frame = frame.groupby(["user_id", "item_id"], as_index=False, sort=False).agg(aggregations)
    positive = frame["weight"].to_numpy(dtype=np.float64) > 0
    if not positive.all():  # a zero or negative rating is no interaction to learn from
        frame = frame[positive]
        if frame.empty:
            raise InputError(
                "no rows have a positive rating (zero and negative ratings are not interactions)"
            )
    dropped = int((~positive).sum())
    weights = frame["weight"].to_numpy(dtype=np.float64)
    if weighting == "binary":
        weights = np.ones_like(weights)
    elif weighting == "log":
        weights = 1.0 + np.log1p(np.clip(weights, 0, None))
    elif weighting in ("bm25", "tfidf"):
        from implicit.nearest_neighbours import bm25_weight, tfidf_weight

        users = pd.factorize(frame["user_id"])[0]
        items = pd.factorize(frame["item_id"])[0]
        item_users = sp.coo_matrix((weights, (items, users))).tocsr()
        weighted = bm25_weight(item_users, K1=100, B=0.8) if weighting == "bm25" else tfidf_weight(item_users)
        # idf is log(n_items) - log1p(items of the user): never below 0 on real data, but a
        # user with every item would get a negative weight; such rows become weight 0.
        weights = np.clip(np.asarray(weighted.tocsr()[items, users]).ravel(), 0.0, None)
    frame = frame.assign(weight=weights.astype(np.float64)).reset_index(drop=True)
    frame.attrs["dropped_not_positive"] = dropped
    return frame
