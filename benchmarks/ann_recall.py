"""Recall of Annoy against exact search, and queries per second, over a search_k sweep.

Trains one ALS model on an interactions table (the bundled sample by default), builds
the dot and angular indices, and for each search_k prints recall@k of the served lists
(seen items excluded for recommendations, the item itself for similar items) against
exact search with the same metric, with queries/s of Annoy and of exact search, all
measured in this run.

    python benchmarks/ann_recall.py [--interactions PATH] [--factors 64] [--k 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from recsys import storage
from recsys.data import build_interactions
from recsys.evaluate import ann_recall, sample_rows
from recsys.index import AnnoyIndex, build_annoy_index
from recsys.models import train
from recsys.recommend import exclude_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default="data/sample/interactions.parquet")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--n-trees", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--search-k", default="500,1000,2000,5000,10000,20000,50000")
    args = parser.parse_args()

    frame, _ = storage.read_interactions_table(args.interactions)
    data = build_interactions(frame, args.interactions)
    print(f"{args.interactions}: {data.n_users} users x {data.n_items} items, {data.nnz} interactions")
    started = time.perf_counter()
    emb = train("als", {"factors": args.factors, "iterations": args.iterations}, data.user_items, 42)
    print(f"ALS {args.factors} factors trained in {time.perf_counter() - started:.1f}s")
    users = sample_rows(data.n_users, args.queries, 1)
    items = sample_rows(data.n_items, args.queries, 2)
    itself = exclude_items(items, data.n_items)
    sweeps = [int(s) for s in args.search_k.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for metric, queries, exclude in (
            ("dot", emb.user_factors[users], data.user_items[users]),
            ("angular", emb.item_factors[items], itself),
        ):
            path = Path(tmp) / f"{metric}.ann"
            started = time.perf_counter()
            build_annoy_index(emb.item_factors, metric, path, args.n_trees, 42)
            build_seconds = time.perf_counter() - started
            index = AnnoyIndex(path, metric)
            for search_k in [-1, *sweeps]:
                figures = ann_recall(index, emb.item_factors, queries, args.k, exclude, search_k)
                rows.append((metric, build_seconds, figures))
    print(f"\n{'index':8} {'search_k':>9} {'recall@' + str(args.k):>10} {'ann q/s':>9} {'exact q/s':>10}")
    for metric, _, f in rows:
        print(
            f"{metric:8} {f['search_k']:>9} {f['recall_at_k']:>10.3f} "
            f"{f['queries_per_second']:>9.0f} {f['exact_queries_per_second']:>10.0f}"
        )


if __name__ == "__main__":
    main()
