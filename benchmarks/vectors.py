"""Precomputed vectors at image-embedding size: Annoy build time, recall@k against exact
cosine similarity over a search_k sweep, queries per second, and peak memory.

Synthetic clustered unit-scale vectors stand in for an encoder's output (no data is
downloaded). Everything is measured in this run, on this machine:

    python benchmarks/vectors.py --items 100000 --dim 512 [--trees 50] [--queries 1000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys.evaluate import sample_rows, sweep_search_k
from recsys.index import AnnoyIndex, build_annoy_index
from recsys.recommend import exclude_items


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise", type=float, default=1.0, help="spread around the centres (harder when larger)"
    )
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    centres = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)
    vectors = centres[rng.integers(0, args.clusters, args.items)]
    vectors += args.noise * rng.normal(size=vectors.shape).astype(np.float32)
    print(
        f"{args.items} x {args.dim} float32 vectors ({vectors.nbytes / 1e9:.2f} GB) "
        f"in {args.clusters} clusters made in {time.perf_counter() - started:.1f}s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "angular.ann"
        started = time.perf_counter()
        manifest = build_annoy_index(vectors, "angular", path, args.trees, seed=0)
        build_seconds = time.perf_counter() - started
        print(
            f"Annoy angular index, {args.trees} trees: built in {build_seconds:.1f}s, "
            f"{manifest.size_bytes / 1e9:.2f} GB on disk"
        )
        index = AnnoyIndex(path, metric="angular")
        items = sample_rows(args.items, args.queries, 1)
        sweep = sweep_search_k(
            index,
            vectors,
            vectors[items],
            args.k,
            exclude_items(items, args.items),
            [args.trees * args.k * m for m in (1, 2, 4, 8, 16, 32, 64)],
            1.01,
            stop_when_slower=False,
        )
    print(f"\nrecall@{args.k} against exact cosine similarity, {args.queries} item queries, one core:")
    print("| search_k | recall@k | Annoy q/s | exact q/s |")
    print("|---|---|---|---|")
    for point in sweep["curve"]:
        print(
            f"| {point['search_k']} | {point['recall_at_k']:.3f} | {point['queries_per_second']:.0f} | "
            f"{sweep['exact_queries_per_second']:.0f} |"
        )
    reached = [p for p in sweep["curve"] if p["recall_at_k"] >= args.target]
    if reached:
        best = reached[0]
        print(
            f"\nsmallest search_k reaching {args.target}: {best['search_k']} "
            f"({best['queries_per_second'] / sweep['exact_queries_per_second']:.1f}x exact search's speed)"
        )
    print(f"peak memory: {peak_rss_mb():.0f} MB (vectors {vectors.nbytes / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
