"""Deterministic synthetic interactions: power-law item popularity and taste clusters.

Each item belongs to one of ``n_clusters`` tastes and has a Zipf-like popularity.
Each user has a home taste; most of their interactions are drawn from items of that
taste (weighted by popularity), the rest from the whole catalog by popularity. So a
good model recommends a user's own taste, and similar items share a taste.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def generate_interactions(
    n_users: int = 3000,
    n_items: int = 1500,
    n_clusters: int = 12,
    mean_items_per_user: float = 30.0,
    in_cluster_share: float = 0.85,
    popularity_exponent: float = 1.0,
    string_ids: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """A table with user_id, item_id, weight (play counts, float) and timestamp.

    The same arguments always give the same table. Item popularity follows
    ``rank ** -popularity_exponent``; items per user follow a log-normal with the
    given mean (at least 3, at most half the catalog).
    """
    if n_users < 1 or n_items < 2 or not 1 <= n_clusters <= n_items:
        raise ValueError("need n_users >= 1, n_items >= 2 and 1 <= n_clusters <= n_items")
    rng = np.random.default_rng(seed)
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters)  # no empty cluster
    popularity = (rng.permutation(n_items) + 1.0) ** -popularity_exponent
    global_p = popularity / popularity.sum()
    cluster_items = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    cluster_p = [popularity[ix] / popularity[ix].sum() for ix in cluster_items]

    user_cluster = rng.integers(0, n_clusters, size=n_users)
    sigma = 0.8
    counts = rng.lognormal(np.log(mean_items_per_user) - sigma**2 / 2, sigma, size=n_users)
    counts = np.clip(np.round(counts), 3, max(3, n_items // 2)).astype(np.int64)

    users, items = [], []
    for user, (cluster, count) in enumerate(zip(user_cluster, counts, strict=True)):
        n_home = min(int(rng.binomial(count, in_cluster_share)), len(cluster_items[cluster]))
        home = rng.choice(cluster_items[cluster], size=n_home, replace=False, p=cluster_p[cluster])
        away = rng.choice(n_items, size=int(count - n_home), replace=True, p=global_p)
        chosen = np.unique(np.concatenate([home, away]))
        short = min(3, n_items) - len(chosen)
        if short > 0:
            # Repeated draws left fewer than 3 distinct items: top up from the rest of the
            # catalog by popularity, with a per-user generator so the main stream (and so
            # every other user's rows) stays as it was.
            rest = np.setdiff1d(np.arange(n_items), chosen)
            extra = np.random.default_rng([seed, user]).choice(
                rest, size=short, replace=False, p=popularity[rest] / popularity[rest].sum()
            )
            chosen = np.unique(np.concatenate([chosen, extra]))
        users.append(np.full(len(chosen), user, dtype=np.int64))
        items.append(chosen)
    user_idx = np.concatenate(users)
    item_idx = np.concatenate(items)
    weight = rng.geometric(0.4, size=len(user_idx)).astype(np.float64)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    seconds = np.sort(rng.integers(0, 180 * 86400, size=len(user_idx)))
    order = rng.permutation(len(user_idx))
    frame = pd.DataFrame(
        {
            "user_id": user_idx[order] + 1,
            "item_id": item_idx[order] + 1,
            "weight": weight,
            "timestamp": start + seconds.astype("timedelta64[s]"),
        }
    )
    if string_ids:
        frame["user_id"] = np.array([f"user-{u:06d}" for u in frame["user_id"]], dtype=object)
        frame["item_id"] = np.array([f"item-{i:06d}" for i in frame["item_id"]], dtype=object)
    return frame


def item_clusters(n_items: int, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Taste cluster of each item id (1-based ids, position id-1) for the same arguments."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n_items) % n_clusters)
