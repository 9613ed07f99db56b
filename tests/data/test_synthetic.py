"""Synthetic interactions: deterministic, documented columns, power-law popularity, taste clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data import build_interactions, generate_interactions
from recsys.data.synthetic import item_clusters

SMALL = {"n_users": 300, "n_items": 200, "n_clusters": 5}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_interactions(**SMALL, seed=7)


def test_same_seed_same_frame_other_seed_other_frame(frame):
    pd.testing.assert_frame_equal(generate_interactions(**SMALL, seed=7), frame)
    other = generate_interactions(**SMALL, seed=8)
    assert not (len(other) == len(frame) and other.equals(frame))


def test_columns_and_dtypes(frame):
    assert list(frame.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert frame["user_id"].dtype == np.int64
    assert frame["item_id"].dtype == np.int64
    assert frame["weight"].dtype == np.float64
    assert pd.api.types.is_datetime64_any_dtype(frame["timestamp"])
    assert frame.notna().all().all()
    assert (frame["weight"] >= 1).all()
    # 1-based ids within the requested sizes
    assert frame["user_id"].between(1, SMALL["n_users"]).all()
    assert frame["item_id"].between(1, SMALL["n_items"]).all()
    assert frame["user_id"].nunique() == SMALL["n_users"]
    # one row per (user, item)
    assert not frame.duplicated(["user_id", "item_id"]).any()


def test_output_is_valid_input(frame):
    data = build_interactions(frame)
    assert data.n_users == SMALL["n_users"]
    assert data.stats["duplicate_rows_merged"] == 0 and data.stats["zero_weight_rows_dropped"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_least_three_items_per_user(seed):
    # few items per user and a small catalog: repeated draws collapse, the floor must still hold
    sparse = generate_interactions(n_users=800, n_items=60, n_clusters=4, mean_items_per_user=3, seed=seed)
    assert sparse.groupby("user_id")["item_id"].nunique().min() >= 3
    per_user = generate_interactions(**SMALL, seed=seed).groupby("user_id").size()
    assert per_user.min() >= 3
    assert per_user.max() <= SMALL["n_items"] // 2


def test_mean_items_per_user_is_roughly_the_requested_mean():
    per_user = generate_interactions(**SMALL, mean_items_per_user=20, seed=1).groupby("user_id").size()
    assert 14 <= per_user.mean() <= 24


def test_popularity_is_power_law_ish(frame):
    counts = frame["item_id"].value_counts().sort_values(ascending=False)
    top = counts.iloc[: SMALL["n_items"] // 10].sum()
    assert top / len(frame) > 0.2  # uniform popularity would give 0.1
    # and the head is much more popular than the median item
    assert counts.iloc[0] > 3 * counts.median()


def test_flatter_exponent_gives_a_flatter_head():
    def head_share(exponent: float) -> float:
        rows = generate_interactions(**SMALL, popularity_exponent=exponent, seed=2)
        return rows["item_id"].value_counts().iloc[: SMALL["n_items"] // 10].sum() / len(rows)

    assert head_share(0.2) < head_share(1.0)


def test_string_ids():
    ints = generate_interactions(n_users=30, n_items=20, n_clusters=2, seed=5)
    strs = generate_interactions(n_users=30, n_items=20, n_clusters=2, seed=5, string_ids=True)
    assert strs["user_id"].map(type).eq(str).all() and strs["item_id"].map(type).eq(str).all()
    assert strs["user_id"].iloc[0] == f"user-{ints['user_id'].iloc[0]:06d}"
    assert strs["item_id"].iloc[0] == f"item-{ints['item_id'].iloc[0]:06d}"
    assert strs["user_id"].str.fullmatch(r"user-\d{6}").all()
    pd.testing.assert_series_equal(strs["weight"], ints["weight"])
    data = build_interactions(strs)
    assert data.users.kind == "str" and data.items.kind == "str"


def test_users_mostly_interact_inside_one_cluster(frame):
    clusters = item_clusters(SMALL["n_items"], SMALL["n_clusters"], seed=7)
    assert clusters.shape == (SMALL["n_items"],)
    assert set(clusters.tolist()) == set(range(SMALL["n_clusters"]))
    rows = frame.assign(cluster=clusters[frame["item_id"].to_numpy() - 1])
    top_share = rows.groupby("user_id")["cluster"].agg(lambda c: c.value_counts().iloc[0] / len(c))
    # in_cluster_share defaults to 0.85: for most users a majority of items share one cluster
    assert (top_share > 0.5).mean() > 0.9
    assert top_share.median() > 0.7
    # a wrong cluster assignment (another seed) shows no such structure
    wrong = item_clusters(SMALL["n_items"], SMALL["n_clusters"], seed=8)
    wrong_share = (
        frame.assign(cluster=wrong[frame["item_id"].to_numpy() - 1])
        .groupby("user_id")["cluster"]
        .agg(lambda c: c.value_counts().iloc[0] / len(c))
    )
    assert (wrong_share > 0.5).mean() < 0.5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        generate_interactions(n_users=0)
    with pytest.raises(ValueError):
        generate_interactions(n_items=10, n_clusters=11)
