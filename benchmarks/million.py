"""Top-10 recommendations at a million items: each index path against implicit's exact
``recommend`` (all timed users, ``filter_already_liked_items``), measured in one run.

Cases (``--cases``):

- ``clustered``: 1M items x 64 factors drawn around 50 cluster centres with log-normal item
  norms, users around the same centres;
- ``unclustered``: standard normal users, items of standard normal directions with
  log-normal norms;
- ``real``: ALS factors trained on a MovieLens ``ratings.csv`` (``--ratings``; the small
  real case: ml-latest-small has under 10k items);
- ``wide``: 30k users x 41k items x 1024 factors (the spectral model's size): exact scoring
  against implicit, and what the index stage's ``auto`` probe chooses there.

Every user has ``--seen`` random seen items, removed from the lists. Paths: implicit's
``recommend``; the exact path (``ExactIndex`` through ``recommend_all``, as the recommend
stage serves it); Annoy's dot index, faiss's inverted file and hnswlib's graph, each at the
smallest setting reaching recall@10 >= 0.95 against exact search on a sample of 500 users
(the index stage's sweep). Each path is timed over the same users, best of ``--repeats``;
recall@10 is measured on all of them against the exact path. Peak RSS is the process's
after each path (it only grows).

    python -m benchmarks.million --cases clustered,unclustered,real,wide \\
        --ratings ../shared/data/ml-latest-small/ratings.csv
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from benchmarks.speed import (
    factors,
    implicit_recommend,
    movielens_table,
    seen_items,
    trained,
    unclustered_factors,
)
from recsys.evaluate import recall_at_k, sample_rows, sweep_setting
from recsys.index import BACKENDS, BuildContext, ExactIndex, Sweep
from recsys.index.annoy_index import AnnoySettings
from recsys.index.select import choose
from recsys.recommend import recommend_all

K = 10
TARGET = 0.95
TUNE_QUERIES = 500


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def best_of(repeats: int, function: Callable[[], tuple[np.ndarray, np.ndarray]]):
    """(seconds, result) of the fastest of ``repeats`` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def context_for(items: np.ndarray, folder: Path, trees: int, built: dict, family: str) -> BuildContext:
    """The build context of one backend: Annoy with ``trees`` trees, the others at their
    default settings."""
    return BuildContext(
        model="bench",
        metric="dot",
        item_factors=items,
        path_for=lambda suffix: folder / f"dot.{suffix}",
        relative=lambda path: path.name,
        seed=0,
        settings=AnnoySettings(n_trees=trees) if family == "annoy" else None,
        built=built,
    )


def run_case(name: str, users, items, seen, args) -> list[tuple]:
    """Rows (path, setting, build seconds, seconds, recall, peak GiB) of one case."""
    n_users = len(users)
    rows = []
    base, (implicit_ids, implicit_scores) = best_of(
        args.repeats, lambda: implicit_recommend(users, items, seen, K)
    )
    exact_seconds, (exact_ids, exact_scores) = best_of(
        args.repeats, lambda: recommend_all(ExactIndex(items, "dot"), users, seen, items, K)
    )
    implicit_recall = recall_at_k(
        np.asarray(implicit_ids, dtype=np.int64), exact_ids, K, implicit_scores, exact_scores
    )
    rows.append(("implicit recommend", "", 0.0, base, implicit_recall, peak_gib()))
    rows.append(("exact path", "", 0.0, exact_seconds, 1.0, peak_gib()))
    sample = sample_rows(n_users, TUNE_QUERIES, 2)
    with tempfile.TemporaryDirectory() as tmp:
        built: dict = {}
        for backend_name in args.backends.split(","):
            backend = BACKENDS[backend_name]
            started = time.perf_counter()
            made = backend.build(context_for(items, Path(tmp), args.trees, built, backend.family), K)
            build_seconds = time.perf_counter() - started
            print(f"  {name}: {backend_name} built in {build_seconds:.1f} s", flush=True)
            sweep = sweep_setting(
                made.index_for,
                made.setting,
                items,
                users[sample],
                K,
                seen[sample],
                made.values,
                TARGET,
                False,
                "dot",
            )
            chosen = sweep[made.setting]
            if chosen is None:
                rows.append(
                    (backend_name, f"no {made.setting} reached {TARGET}", build_seconds, np.nan, np.nan, 0)
                )
                continue
            index = made.index_for(chosen)
            search_k = chosen if made.setting_is_search_k else -1
            seconds, (ids, scores) = best_of(
                args.repeats, lambda index=index, k=search_k: recommend_all(index, users, seen, items, K, k)
            )
            recall = recall_at_k(ids, exact_ids, K, scores, exact_scores)
            rows.append(
                (backend_name, f"{made.setting} {chosen}", build_seconds, seconds, recall, peak_gib())
            )
            del made, index
    return [(name, n_users, len(items), base, *row) for row in rows]


def print_rows(rows: list[tuple]) -> None:
    for case, n_users, n_items, base, path, setting, build, seconds, recall, peak in rows:
        if np.isnan(seconds):
            print(f"| {case} | {path} | {setting} | {build:.1f} | | | | |")
            continue
        print(
            f"| {case} ({n_items:,} items, {n_users:,} users) | {path} | {setting} | "
            f"{build:.1f} | {n_users / seconds:,.0f} | {base / seconds:.2f}x | {recall:.3f} | {peak:.2f} |"
        )


def wide_case(args) -> None:
    """30k users x 41k items x 1024: exact scoring against implicit on ``--wide-users``
    users, then the index stage's auto probe (every approximate backend built and swept
    on 500 sampled users, :func:`recsys.index.select.choose`)."""
    n_users, n_items, dim = 30_000, 41_000, 1024
    users, items = factors(n_users, n_items, dim)
    seen = seen_items(n_users, n_items, args.seen)
    timed_users = np.arange(min(args.wide_users, n_users))
    q, s = users[timed_users], seen[timed_users]
    base, _ = best_of(args.repeats, lambda: implicit_recommend(q, items, s, K))
    exact, _ = best_of(args.repeats, lambda: recommend_all(ExactIndex(items, "dot"), q, s, items, K))
    print(f"\n1024 factors, {n_items:,} items, timed on {len(q):,} of {n_users:,} users:")
    print("| path | users/s | vs implicit |\n|---|---|---|")
    print(f"| implicit recommend | {len(q) / base:,.0f} | 1.00x |")
    print(f"| exact path | {len(q) / exact:,.0f} | {base / exact:.2f}x |")
    sample = sample_rows(n_users, TUNE_QUERIES, 2)
    sweeps = []
    with tempfile.TemporaryDirectory() as tmp:
        built: dict = {}
        for backend in BACKENDS.values():
            if not backend.approximate or not backend.supports("dot"):
                continue
            started = time.perf_counter()
            made = backend.build(context_for(items, Path(tmp), args.trees, built, backend.family), K)
            if made is None:
                continue
            build_seconds = time.perf_counter() - started
            sweep = sweep_setting(
                made.index_for, made.setting, items, users[sample], K, seen[sample], made.values, TARGET,
                True, "dot",
            )  # fmt: skip
            sweeps.append((made.backend, Sweep.model_validate(sweep)))
            last = sweep["curve"][-1]
            print(
                f"probe {made.backend}: built {build_seconds:.1f} s; {made.setting} {last[made.setting]:.0f} "
                f"recall@10 {last['recall_at_k']:.3f} at {last['queries_per_second']:.0f} queries/s "
                f"(exact {sweep['exact_queries_per_second']:.0f})",
                flush=True,
            )
    chosen = choose(sweeps, "auto", TARGET, K)
    print(f"auto chooses: {chosen['backend']} ({chosen['reason']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="clustered,unclustered")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=2000, help="users timed in the 1M cases")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seen", type=int, default=30)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="annoy,faiss,hnswlib")
    parser.add_argument("--wide-users", type=int, default=5000, help="users timed in the 1024-factor case")
    parser.add_argument("--ratings", help="MovieLens ratings.csv for the real case")
    args = parser.parse_args()
    blas = sorted(
        {(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"}
    )
    print(f"BLAS: {blas}")
    rows = []
    for case in args.cases.split(","):
        if case == "wide":
            wide_case(args)
            continue
        if case == "clustered":
            users, items = factors(args.users, args.items, args.dim)
        elif case == "unclustered":
            users, items = unclustered_factors(args.users, args.items, args.dim)
        elif case == "real":
            params = {"factors": args.dim, "iterations": 15, "regularization": 0.05}
            users, items, interactions = trained(movielens_table(args.ratings), "als", params)
            seen = interactions.user_items
            rows += run_case(f"real: {Path(args.ratings).parent.name}", users, items, seen, args)
            continue
        else:
            raise SystemExit(f"unknown case {case!r}: expected clustered, unclustered, real or wide")
        seen = seen_items(args.users, args.items, args.seen)
        rows += run_case(case, users, items, seen, args)
    if rows:
        print("\n| case | path | setting | build s | users/s | vs implicit | recall@10 | peak RSS GiB |")
        print("|---|---|---|---|---|---|---|---|")
        print_rows(rows)


if __name__ == "__main__":
    main()
