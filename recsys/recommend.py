"""Batch top-N recommendations and similar items from any index backend.

Recommendations never contain an item the user has already seen, and similar items
never contain the item itself. Where the approximate index returns fewer than N
results after filtering, the missing places are filled from exact search over the
remaining items: lists are never padded with seen items or sentinel scores.

Per-run item rules (``recommend.include_items`` / ``exclude_items``) arrive as one mask
of the items that may be returned (``allowed``), applied inside the search, before the
top N, never by cutting finished lists: exact search asks for N plus every disallowed
item where there are few of them, else scores the allowed items only (as every search
does where few items are allowed); an approximate index is asked for more results, the
disallowed ones are dropped and short rows are filled by exact search over the allowed
items, like rows short of unseen items. Memory stays one flag per item (and at most one
copy of the allowed items' vectors), whatever the number of users: the rules are never
spelt out per user.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recsys.errors import QueryError
from recsys.index.base import SearchIndex
from recsys.index.exact import ExactIndex

DEFAULT_BATCH = 2048
RESTRICTED_SHARE = 8
"""Where at most 1 / RESTRICTED_SHARE of the catalog may be recommended, every query is
answered by exact search over the allowed items, not by the approximate index: it would
return mostly items that are then dropped."""
EXACT_EXTRA = 1024
"""Exact search with at most this many items disallowed asks the whole catalog for n plus
that many (exact, and no copy of the vectors); with more, it searches a copy of the
allowed items' vectors."""


def allowed_items(
    n_items: int, include: np.ndarray | None = None, exclude: np.ndarray | None = None
) -> np.ndarray | None:
    """bool (n_items,): the items that may be recommended, from the internal ids of an
    include list (only these) and an exclude list (never these); None where every item
    may be."""
    if include is None and (exclude is None or len(exclude) == 0):
        return None
    allowed = np.zeros(n_items, dtype=bool) if include is not None else np.ones(n_items, dtype=bool)
    if include is not None:
        allowed[np.asarray(include, dtype=np.int64)] = True
    if exclude is not None:
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    return allowed


INCLUDE_KEY = b"recsys.include_items"
"""Schema metadata of an item rules table: whether an include list was given (it may
match no item of an evaluation part, which must then allow none, not all)."""


class ItemIds(Protocol):
    """The run's item id map (:class:`recsys.data.interactions.IdMap`), as used here."""

    kind: str

    def __len__(self) -> int: ...

    def to_internal(self, external: np.ndarray, strict: bool = True) -> np.ndarray: ...

    def to_external(self, internal: np.ndarray) -> np.ndarray: ...


def item_rules_table(items: ItemIds, include: np.ndarray | None, exclude: np.ndarray | None) -> pa.Table:
    """The run's item rules (internal ids of an include and an exclude list) as the table
    the run keeps: ``item_id`` (typed as the run's), ``rule`` (``include``/``exclude``)."""
    parts = [(ids, rule) for ids, rule in ((include, "include"), (exclude, "exclude")) if ids is not None]
    internal = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(ids, np.int64) for ids, _ in parts])
    rules = [rule for ids, rule in parts for _ in range(len(ids))]
    id_type = pa.int64() if items.kind == "int" else pa.string()
    return pa.table(
        {
            "item_id": pa.array(items.to_external(internal).tolist(), type=id_type),
            "rule": pa.array(rules, type=pa.string()),
        }
    ).replace_schema_metadata({INCLUDE_KEY: b"1" if include is not None else b"0"})


def allowed_by_table(table: pa.Table, items: ItemIds) -> np.ndarray | None:
    """The ``allowed`` mask of a table made by :func:`item_rules_table` (None where every
    item may be recommended)."""
    rules = np.asarray(table.column("rule").to_pylist(), dtype=object)
    column = table.column("item_id")
    ids = column.to_numpy() if items.kind == "int" else np.asarray(column.to_pylist(), dtype=object)
    internal = items.to_internal(ids) if len(ids) else np.array([], dtype=np.int64)
    included = (table.schema.metadata or {}).get(INCLUDE_KEY) == b"1"
    return allowed_items(
        len(items),
        include=internal[rules == "include"] if included else None,
        exclude=internal[rules == "exclude"],
    )


class RestrictedIndex:
    """Exact search over the allowed items only, with the interface (and the ids) of an
    index over the whole catalog: ``exclude`` has a column per item of the catalog."""

    def __init__(self, vectors: np.ndarray, metric: str, allowed: np.ndarray, threads: int | None = None):
        self.metric = metric
        self.n_items = len(allowed)
        self.ids = np.flatnonzero(allowed).astype(np.int64)
        self._position = np.full(self.n_items, -1, dtype=np.int64)
        self._position[self.ids] = np.arange(len(self.ids))
        self._exact = (
            ExactIndex(np.asarray(vectors[self.ids], dtype=np.float32), metric, threads=threads)
            if len(self.ids)
            else None
        )

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, search_k: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k allowed items per query (ids of the catalog), best first; -1 / -inf where
        fewer than k allowed items are not excluded."""
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if self._exact is None or len(queries) == 0:
            return ids, scores
        inner_exclude = None
        if exclude is not None:
            coo = exclude.tocoo()
            columns = self._position[coo.col]
            kept = columns >= 0
            inner_exclude = sp.csr_matrix(
                (np.ones(int(kept.sum()), dtype=np.float32), (coo.row[kept], columns[kept])),
                shape=(len(queries), len(self.ids)),
            )
        width = min(k, len(self.ids))
        found, found_scores = self._exact.search(queries, width, exclude=inner_exclude)
        ids[:, :width] = np.where(found >= 0, self.ids[np.maximum(found, 0)], -1)
        scores[:, :width] = found_scores
        return ids, scores


def _keep_allowed(
    ids: np.ndarray, scores: np.ndarray, allowed: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first n allowed results of each row, in order (-1 / -inf after them)."""
    keep = ids >= 0
    keep[keep] = allowed[ids[keep]]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :n]
    kept_ids = np.take_along_axis(ids, order, axis=1)
    kept_scores = np.take_along_axis(scores, order, axis=1)
    valid = np.take_along_axis(keep, order, axis=1)
    kept_ids[~valid] = -1
    kept_scores[~valid] = -np.inf
    return kept_ids, kept_scores


def _asked_for(n: int, n_items: int, n_allowed: int) -> int:
    """Results to ask an approximate index for, so that n allowed ones are usually among
    them: n plus every disallowed item while there are few, else twice the expected
    share of disallowed ones (short rows are filled by exact search anyway)."""
    denied = n_items - n_allowed
    extra = min(denied, max(2 * n, math.ceil(2 * n * denied / max(n_allowed, 1))))
    return min(n_items, n + extra)


def _top_up(
    ids: np.ndarray,
    scores: np.ndarray,
    queries: np.ndarray,
    exclude: sp.csr_matrix | None,
    exact_index: Callable[[], ExactIndex | RestrictedIndex],
) -> None:
    """Fill the -1 places of rows in place with the best items not yet in the row
    (exact_index is called only when some row is short)."""
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short) == 0:
        return
    exact = exact_index()
    k = ids.shape[1]
    n_items = exact.n_items
    taken_rows, taken_cols = [], []
    for position, row in enumerate(short):
        present = ids[row][ids[row] >= 0]
        taken_cols.append(present)
        taken_rows.append(np.full(len(present), position))
    skip = sp.csr_matrix(
        (
            np.ones(sum(map(len, taken_cols)), dtype=np.float32),
            (np.concatenate(taken_rows), np.concatenate(taken_cols)),
        ),
        shape=(len(short), n_items),
    )
    if exclude is not None:
        skip = skip + exclude[short]
    extra_ids, extra_scores = exact.search(queries[short], k, exclude=skip)
    for position, row in enumerate(short):
        keep = ids[row] >= 0
        merged_ids = np.concatenate([ids[row][keep], extra_ids[position]])
        merged_scores = np.concatenate([scores[row][keep], extra_scores[position]])
        order = np.argsort(-merged_scores, kind="stable")[:k]
        ids[row], scores[row] = merged_ids[order], merged_scores[order]


def search_batches(
    index: SearchIndex,
    queries: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None,
    exact_vectors: np.ndarray,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
    allowed: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first_row, ids, scores) blocks of the top-n per query.

    exclude: CSR (len(queries), n_items) of items never to return for each query.
    exact_vectors: the indexed vectors, used to fill places the index left empty.
    allowed: optional bool (n_items,) of the items that may be returned to any query (the
    run's item rules; see :func:`allowed_items`).
    Rows come back with fewer than n valid ids (-1 after them) only where fewer than n
    items are allowed and not excluded.
    """
    if not 1 <= n <= index.n_items:
        raise QueryError(f"n must be between 1 and the {index.n_items} items, found {n}")
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (index.n_items,):
            raise ValueError(f"allowed must have one flag per item ({index.n_items}), found {allowed.shape}")
        if allowed.all():
            allowed = None
    if allowed is not None:
        yield from _search_allowed(
            index, queries, n, exclude, exact_vectors, allowed, search_k, batch_size, progress
        )
        return
    # the exact index for top-ups (a normalised copy of every vector for angular) is built
    # only if some row comes back short, once per call
    built: list[ExactIndex] = [index] if isinstance(index, ExactIndex) else []

    def exact() -> ExactIndex:
        if not built:
            built.append(ExactIndex(exact_vectors, index.metric))
        return built[0]

    total = len(queries)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        block_exclude = exclude[start:stop] if exclude is not None else None
        ids, scores = index.search(queries[start:stop], n, exclude=block_exclude, search_k=search_k)
        _top_up(ids, scores, queries[start:stop], block_exclude, exact)
        if progress is not None:
            progress(stop, total)
        yield start, ids, scores


def _search_allowed(
    index: SearchIndex,
    queries: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None,
    exact_vectors: np.ndarray,
    allowed: np.ndarray,
    search_k: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """:func:`search_batches` where only the ``allowed`` items may be returned."""
    n_allowed = int(allowed.sum())
    built: list[RestrictedIndex] = []

    def restricted() -> RestrictedIndex:
        if not built:
            if isinstance(index, ExactIndex):  # its vectors (normalised for angular), its threads
                built.append(RestrictedIndex(index.vectors, index.metric, allowed, index.threads))
            else:
                built.append(RestrictedIndex(exact_vectors, index.metric, allowed))
        return built[0]

    n_denied = index.n_items - n_allowed
    if isinstance(index, ExactIndex) and n_denied <= EXACT_EXTRA:
        mode, asked = "exact", min(index.n_items, n + n_denied)  # n allowed among them, if any
    elif isinstance(index, ExactIndex) or n_allowed * RESTRICTED_SHARE <= index.n_items:
        mode, asked = "restricted", n
    else:
        mode, asked = "approximate", _asked_for(n, index.n_items, n_allowed)
    total = len(queries)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        block_exclude = exclude[start:stop] if exclude is not None else None
        if mode == "restricted":  # exact: a short row has no allowed unseen item left to add
            ids, scores = restricted().search(queries[start:stop], n, exclude=block_exclude)
        else:
            ids, scores = index.search(queries[start:stop], asked, exclude=block_exclude, search_k=search_k)
            ids, scores = _keep_allowed(ids, scores, allowed, n)
            if mode == "approximate":
                _top_up(ids, scores, queries[start:stop], block_exclude, restricted)
        if progress is not None:
            progress(stop, total)
        yield start, ids, scores


def recommend_all(
    index: SearchIndex,
    user_factors: np.ndarray,
    user_items: sp.csr_matrix,
    item_factors: np.ndarray,
    n: int,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n unseen items for every user (only ``allowed`` items, if given).

    user_factors: float32 (n_users, dim); user_items: CSR (n_users, n_items) of seen
    items. Returns ids int64 (n_users, n) and scores float32 (n_users, n), best first;
    -1 / -inf only where a user has fewer than n unseen (allowed) items.
    """
    return search_all(
        index, user_factors, n, user_items, item_factors, search_k, batch_size, progress, allowed
    )


def similar_all(
    index: SearchIndex,
    item_factors: np.ndarray,
    n: int,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n most similar items for every item, never the item itself.

    Returns ids int64 (n_items, n) and scores float32 (n_items, n), best first.
    """
    n_items = len(item_factors)
    if n >= n_items:
        raise QueryError(f"similar items top_n must be below the {n_items} items, found {n}")
    itself = exclude_items(np.arange(n_items), n_items)
    return search_all(index, item_factors, n, itself, item_factors, search_k, batch_size, progress)


def search_all(
    index: SearchIndex,
    queries: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None,
    exact_vectors: np.ndarray,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_batches` gathered into ids int64 (q, n) and scores float32 (q, n)."""
    ids = np.empty((len(queries), n), dtype=np.int64)
    scores = np.empty((len(queries), n), dtype=np.float32)
    for start, block_ids, block_scores in search_batches(
        index, queries, n, exclude, exact_vectors, search_k, batch_size, progress, allowed
    ):
        ids[start : start + len(block_ids)] = block_ids
        scores[start : start + len(block_ids)] = block_scores
    return ids, scores


def exclude_items(items: np.ndarray, n_items: int) -> sp.csr_matrix:
    """CSR (len(items), n_items) that excludes item ``items[i]`` from query row i: the
    exclusion for similar-item queries, so that an item is never similar to itself."""
    items = np.asarray(items, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), (np.arange(len(items)), items)),
        shape=(len(items), n_items),
    )
