"""Splits: shares, per-user guarantees, timestamps, and counting what cannot be scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout, split_table
from recsys.errors import InputError


@pytest.fixture(scope="module")
def table():
    return clean_table(generate_interactions(n_users=200, n_items=120, n_clusters=4, seed=5))


def _pairs(t):
    return set(zip(t.users.tolist(), t.items.tolist(), strict=True))


def test_random_split_per_user_share_and_disjoint(table):
    train, test = split_table(table, "random", fraction=0.25, seed=1)
    assert len(train) + len(test) == len(table)
    assert not _pairs(train) & _pairs(test)
    train_counts = pd.Series(train.users).value_counts()
    test_counts = pd.Series(test.users).value_counts()
    total = pd.Series(table.users).value_counts()
    assert (train_counts.reindex(total.index).fillna(0) >= 1).all()  # every user keeps one
    expected = np.clip(np.floor(total * 0.25), 1, total - 1)
    assert (test_counts.reindex(total.index).fillna(0) == expected).all()
    again, _ = split_table(table, "random", fraction=0.25, seed=1)
    assert _pairs(again) == _pairs(train)


def test_leave_last_takes_the_newest(table):
    train, test = split_table(table, "leave_last", n=2)
    frame = pd.DataFrame({"u": table.users, "t": table.timestamps})
    newest = frame.sort_values("t").groupby("u").tail(2)
    assert len(test) == len(newest)
    assert set(zip(test.users, test.timestamps, strict=True)) == set(
        zip(newest["u"], newest["t"], strict=True)
    )


def test_time_split_is_one_cut(table):
    train, test = split_table(table, "time", fraction=0.2)
    assert train.timestamps.max() <= test.timestamps.min()
    assert abs(len(test) / len(table) - 0.2) < 0.02


def test_time_splits_need_timestamps():
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 3]})
    with pytest.raises(InputError, match="needs a timestamp column"):
        split_table(clean_table(frame), "leave_last", source="t.csv")


def test_map_holdout_counts_what_cannot_be_scored():
    train = interactions_from_table(
        clean_table(pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10]}))
    )
    test = clean_table(
        pd.DataFrame(
            {"user_id": [1, 2, 2, 3, 1], "item_id": [12, 11, 99, 10, 10]}  # 12 and 99 unknown items
        )
    )
    holdout, stats = map_holdout(train, test)
    assert stats == {
        "pairs": 5,
        "pairs_evaluated": 1,  # (2, 11)
        "users_evaluated": 1,
        "unknown_users": 1,  # user 3
        "pairs_of_unknown_users": 1,
        "unknown_items": 2,
        "pairs_of_unknown_items": 2,
        "pairs_seen_in_training": 1,  # (1, 10)
    }
    assert holdout[1, 1] == 1 and holdout.nnz == 1


def test_holdout_with_other_id_types_is_refused():
    train = interactions_from_table(clean_table(pd.DataFrame({"user_id": [1], "item_id": [2]})))
    test = clean_table(pd.DataFrame({"user_id": ["1"], "item_id": ["2"]}))
    with pytest.raises(InputError, match="holdout ids are str/str but training ids are int/int"):
        map_holdout(train, test)
