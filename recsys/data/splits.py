"""Train/test splits of a clean interaction table, for held-out ranking metrics.

- ``random``: per user, a random share of the user's items (users with >= 2 items;
  at least one item stays in training).
- ``leave_last``: per user, the last ``n`` items by timestamp (users with more than n).
- ``time``: one global cut: the latest ``fraction`` of interactions by timestamp.
- a supplied holdout table (``recsys run --holdout``), used as given.

Held-out users or items that training never saw cannot be scored: they are counted
(see :func:`map_holdout`), never silently dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.interactions import Interactions, InteractionTable
from recsys.errors import InputError


def _need_timestamps(table: InteractionTable, method: str, source: str) -> np.ndarray:
    if table.timestamps is None:
        raise InputError(f"{source}: split method '{method}' needs a timestamp column, found none")
    missing = int(np.isnan(table.timestamps).sum())
    if missing:
        raise InputError(f"{source}: split method '{method}' needs timestamps; {missing} row(s) have none")
    return table.timestamps


def split_table(
    table: InteractionTable,
    method: str,
    fraction: float = 0.2,
    n: int = 1,
    seed: int = 0,
    source: str = "interactions",
) -> tuple[InteractionTable, InteractionTable]:
    """(train, test) rows of a clean, deduplicated table."""
    users = pd.factorize(table.users)[0]
    if method == "random":
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(table)), users))
        counts = np.bincount(users)
        position = np.empty(len(table), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position[order] = np.arange(len(table)) - np.repeat(starts, counts)
        n_test = np.where(counts >= 2, np.clip(np.floor(counts * fraction), 1, counts - 1), 0)
        test = position < n_test[users]
    elif method == "leave_last":
        timestamps = _need_timestamps(table, method, source)
        order = np.lexsort((-timestamps, users))  # newest first within each user
        counts = np.bincount(users)
        position = np.empty(len(table), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position[order] = np.arange(len(table)) - np.repeat(starts, counts)
        test = (position < n) & (counts[users] > n)
    elif method == "time":
        timestamps = _need_timestamps(table, method, source)
        cut = np.quantile(timestamps, 1.0 - fraction)
        test = timestamps > cut
    else:
        raise ValueError(f"unknown split method {method!r}")
    if not test.any() or test.all():
        raise InputError(
            f"{source}: split '{method}' left {int(test.sum())} of {len(table)} interactions for testing"
        )
    return table.take(~test), table.take(test)


def map_holdout(train: Interactions, test: InteractionTable) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """Held-out (user, item) pairs as a CSR over the training ids, with what was dropped.

    Pairs whose user or item training never saw cannot be scored, and pairs already in
    training can never be recommended (seen items are filtered): both are counted.
    """
    if test.user_kind != train.users.kind or test.item_kind != train.items.kind:
        raise InputError(
            f"holdout ids are {test.user_kind}/{test.item_kind} but training ids are "
            f"{train.users.kind}/{train.items.kind} (user/item)"
        )
    user_index = train.users.to_internal(test.users, strict=False)
    item_index = train.items.to_internal(test.items, strict=False)
    known = (user_index >= 0) & (item_index >= 0)
    rows, cols = user_index[known], item_index[known]
    in_train = np.asarray(train.user_items[rows, cols]).ravel() > 0 if known.any() else np.zeros(0, bool)
    keep = ~in_train
    holdout = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])),
        shape=train.user_items.shape,
        dtype=np.float32,
    )
    holdout.sum_duplicates()
    holdout.data[:] = 1.0
    unknown_users = user_index < 0
    unknown_items = (item_index < 0) & ~unknown_users
    stats = {
        "pairs": int(len(test)),
        "pairs_evaluated": int(holdout.nnz),
        "users_evaluated": int((np.diff(holdout.indptr) > 0).sum()),
        "unknown_users": int(len(np.unique(test.users[unknown_users]))),
        "pairs_of_unknown_users": int(unknown_users.sum()),
        "unknown_items": int(len(np.unique(test.items[unknown_items]))),
        "pairs_of_unknown_items": int(unknown_items.sum()),
        "pairs_seen_in_training": int(in_train.sum()),
    }
    return holdout, stats
