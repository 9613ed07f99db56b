"""Batch scoring speed, all measured in one run on this machine, as ratios.

For synthetic factors with a realistic norm spread (log-normal item norms, clustered
directions) and random seen items, times top-N with seen items removed for every user:

- the matrix-product limit: users x items x dim float32 products alone (no top-k);
- implicit's exact ``recommend`` (all users, filter_already_liked_items);
- the project's exact path (``ExactIndex`` through ``recommend_all``);
- Annoy's dot index and angular candidates re-ranked by dot, at the smallest setting
  reaching recall@10 >= 0.95 against exact search on a sample;
- what ``index.backend: auto`` serves: the fastest of these that reaches the target.

With ``--ratings`` (a MovieLens ``ratings.csv``) the same table is made for ALS factors
trained on that real set. Peak RSS of the process is printed after each catalog.

    python benchmarks/speed.py --items 10000,100000,1000000 --users 5000 --dim 64
    python benchmarks/speed.py --items 0 --ratings ../shared/data/ml-latest-small/ratings.csv
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

from recsys.evaluate import sample_rows, sweep_search_k, sweep_setting
from recsys.index import AnnoyIndex, ExactIndex, build_annoy_index
from recsys.index.annoy_index import default_search_ks
from recsys.index.rerank import RerankIndex, default_candidates
from recsys.recommend import recommend_all


def factors(n_users: int, n_items: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    items = centres[rng.integers(0, 50, n_items)] + 0.7 * rng.normal(size=(n_items, dim))
    items *= rng.lognormal(0, 0.5, size=(n_items, 1))  # popular items have larger norms
    users = centres[rng.integers(0, 50, n_users)] + 0.7 * rng.normal(size=(n_users, dim))
    return users.astype(np.float32) / np.sqrt(dim), items.astype(np.float32) / np.sqrt(dim)


def seen_items(n_users: int, n_items: int, per_user: int, seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n_items, size=(n_users, per_user)).ravel()
    rows = np.repeat(np.arange(n_users), per_user)
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def matmul_blocks(users: np.ndarray, items: np.ndarray, block: int, chunk: int = 8192) -> None:
    """The products alone on every core: blocks of users, one thread each with BLAS at one
    thread (whole-BLAS threading is slower on these small products), times cache-sized
    chunks of items written into a reused buffer per thread."""

    def products(start: int) -> None:
        queries = users[start : start + block]
        buffer = np.empty((len(queries), min(chunk, len(items))), dtype=np.float32)
        for first in range(0, len(items), chunk):
            last = min(first + chunk, len(items))
            out = buffer.reshape(-1)[: len(queries) * (last - first)].reshape(len(queries), last - first)
            np.matmul(queries, items[first:last].T, out=out)

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(products, range(0, len(users), block)))


def implicit_recommend(users, items, seen, n):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=users.shape[1])
    model.user_factors, model.item_factors = users, items
    return model.recommend(np.arange(len(users)), seen, N=n, filter_already_liked_items=True)


def real_factors(ratings: str, dim: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """ALS factors trained on a MovieLens ratings.csv (ratings >= 3.5 as interactions)."""
    import pandas as pd

    from recsys.data.interactions import build_interactions
    from recsys.models import train

    table = pd.read_csv(ratings).rename(columns={"userId": "user_id", "movieId": "item_id"})
    table = table[table["rating"] >= 3.5].assign(weight=1.0)
    interactions = build_interactions(table[["user_id", "item_id", "weight"]])
    model = train(
        "als", {"factors": dim, "iterations": 15, "regularization": 0.05}, interactions.user_items, 0
    )
    return model.user_factors, model.item_factors, interactions.user_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000")
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seen", type=int, default=30)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--annoy-users", type=int, default=1000, help="users Annoy strategies are timed on")
    parser.add_argument("--ratings", help="also time ALS factors trained on this MovieLens ratings.csv")
    args = parser.parse_args()
    blas = {
        (i["internal_api"], i.get("architecture"), i["num_threads"])
        for i in threadpool_info()
        if i["user_api"] == "blas"
    }
    print(f"BLAS: {sorted(blas)}")
    print("| items | path | seconds | users/s | vs implicit | vs matmul limit | recall@10 |")
    print("|---|---|---|---|---|---|---|")
    catalogs = [(int(x), "synthetic") for x in args.items.split(",") if int(x) > 0]
    if args.ratings:
        catalogs.append((0, Path(args.ratings).parent.name))
    for n_items, source in catalogs:
        if n_items:
            users, items = factors(args.users, n_items, args.dim)
            seen = seen_items(args.users, n_items, args.seen)
        else:
            users, items, seen = real_factors(args.ratings, args.dim)
            n_items = len(items)
        n_users = len(users)
        # the limit: the fastest of a few block heights (the product is bound by writing scores)
        limit = min(timed(matmul_blocks, users, items, block) for block in (32, 128, 512))
        base = timed(implicit_recommend, users, items, seen, args.n)
        exact = timed(recommend_all, ExactIndex(items, "dot"), users, seen, items, args.n)
        rows = [
            ("matmul limit", limit, float("nan")),
            ("implicit recommend", base, 1.0),
            ("exact path", exact, 1.0),
        ]
        with tempfile.TemporaryDirectory() as tmp:
            for metric in ("dot", "angular"):
                build_annoy_index(items, metric, Path(tmp) / f"{metric}.ann", args.trees, 0)
            dot, angular = AnnoyIndex(Path(tmp) / "dot.ann"), AnnoyIndex(Path(tmp) / "angular.ann")
            sample = sample_rows(n_users, 300, 2)
            # Annoy strategies run one query at a time: timed on the first --annoy-users users
            # (their users/s is what the table compares; seconds are scaled to all users)
            few = np.arange(min(n_users, args.annoy_users))
            q, ex = users[sample], seen[sample]
            tuned = sweep_search_k(
                dot, items, q, args.n, ex, default_search_ks(args.trees, args.n, n_items), 0.95, False
            )
            if tuned["search_k"] is not None:
                seconds = timed(
                    recommend_all, dot, users[few], seen[few], items, args.n, search_k=tuned["search_k"]
                ) * (n_users / len(few))
                rows.append(
                    (f"annoy dot search_k {tuned['search_k']}", seconds, tuned["curve"][-1]["recall_at_k"])
                )
            reranked = sweep_setting(
                lambda c, angular=angular, items=items: RerankIndex(angular, items, c),
                "candidates",
                items,
                q,
                args.n,
                ex,
                default_candidates(args.n, n_items),
                0.95,
                False,
                "dot",
            )
            if reranked["candidates"] is not None:
                index = RerankIndex(angular, items, reranked["candidates"])
                seconds = timed(recommend_all, index, users[few], seen[few], items, args.n) * (
                    n_users / len(few)
                )
                rows.append(
                    (
                        f"annoy rerank {reranked['candidates']} candidates",
                        seconds,
                        reranked["curve"][-1]["recall_at_k"],
                    )
                )
        served = min(rows[2:], key=lambda row: row[1])  # auto: the fastest reaching the target
        rows.append((f"**default (auto): {served[0]}**", served[1], served[2]))
        label = f"{n_items} ({source})" if source != "synthetic" else str(n_items)
        for name, seconds, recall in rows:
            print(
                f"| {label} | {name} | {seconds:.2f} | {n_users / seconds:.0f} | "
                f"{base / seconds:.2f}x | "
                f"{limit / seconds:.0%} | {'' if np.isnan(recall) else f'{recall:.3f}'} |"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"| {label} | peak RSS of the process so far: {peak:.2f} GiB | | | | | |")


if __name__ == "__main__":
    main()
