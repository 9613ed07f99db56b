"""Batch scoring speed against implicit's ``recommend`` and against the machine's product
rate, all measured in one run on this machine.

Top-N with seen items removed for every user, on several kinds of factors:

- ``clustered``: synthetic users and items drawn around 50 taste centres, log-normal item
  norms (popular items have larger norms);
- ``unclustered``: standard normal users; items with standard normal directions and
  log-normal norms;
- with ``--ratings`` (a MovieLens ``ratings.csv``): ALS and spectral factors trained on it;
- with ``--generated USERSxITEMS``: ALS factors trained on a generated table
  (:mod:`recsys.data.synthetic`, as ``recsys generate`` writes), where the pipeline's
  recommend stage (scoring streamed to parquet from a run folder) is timed as well.

Paths, each the best of ``--repeats`` timings: implicit's exact ``recommend`` (all users,
``filter_already_liked_items``, BLAS at one thread as implicit asks), the project's exact
path (``ExactIndex`` through ``recommend_all``), Annoy's dot index and angular candidates
re-ranked by dot at the smallest setting reaching recall@10 >= 0.95 against exact search
on a sample, and what ``index.backend: auto`` serves (the fastest reaching the target).
Similar items on the exact path as the pipeline computes them (``similar_all``: items as
queries, each item excluded from its own list, ``index.metric`` dot and angular), timed on
the first ``--users`` items as queries (at most the catalog), so that its share of the
product rate compares with the recommendations' share.

The product rate is the reference every path is compared with: the best of
``--repeats`` timings of plain BLAS products ``U_block @ V.T`` (float32, blocks of 256
users, written into a reused buffer) with BLAS allowed every core for this measurement
only, in GFLOP/s (2 x users x items x factors flops). A path's share of it is its own
effective rate (the flops of scoring every user against every item over its seconds)
divided by the product rate: top-k selection, seen-item removal and threading included.

    python benchmarks/speed.py --items 10000,100000,1000000 --users 5000 --dim 64 \\
        --ratings ../shared/data/ml-latest-small/ratings.csv --generated 60000x8000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

from recsys.evaluate import sample_rows, sweep_search_k, sweep_setting
from recsys.index import AnnoyIndex, ExactIndex, build_annoy_index
from recsys.index.annoy_index import default_search_ks
from recsys.index.rerank import RerankIndex, default_candidates
from recsys.recommend import exclude_items, recommend_all, search_all

PRODUCT_BLOCK = 256
"""Users per block of the product-rate measurement."""
PRODUCT_USERS = 1024
"""Users the product rate is measured on (a rate: more users would only take longer)."""
PRODUCT_TILE = 4096
"""Items per tile of the cache-sized products."""


def factors(n_users: int, n_items: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered synthetic factors: users and items around 50 taste centres, log-normal
    item norms."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    items = centres[rng.integers(0, 50, n_items)] + 0.7 * rng.normal(size=(n_items, dim))
    items *= rng.lognormal(0, 0.5, size=(n_items, 1))  # popular items have larger norms
    users = centres[rng.integers(0, 50, n_users)] + 0.7 * rng.normal(size=(n_users, dim))
    scale = np.sqrt(dim)
    return (users / scale).astype(np.float32), (items / scale).astype(np.float32)


def unclustered_factors(n_users: int, n_items: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unclustered synthetic factors: standard normal users; items with standard normal
    directions and log-normal norms."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, dim))
    directions = rng.normal(size=(n_items, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    items = directions * rng.lognormal(0, 0.5, size=(n_items, 1))
    return users.astype(np.float32), items.astype(np.float32)


def seen_items(n_users: int, n_items: int, per_user: int, seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n_items, size=(n_users, per_user)).ravel()
    rows = np.repeat(np.arange(n_users), per_user)
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def best_of(repeats: int, function: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """The fastest of ``repeats`` timings (the least disturbed on a shared machine)."""
    return min(timed(function, *args, **kwargs) for _ in range(repeats))


def all_cores() -> threadpool_limits:
    """BLAS allowed every core (the product-rate measurement only)."""
    return threadpool_limits(limits=os.cpu_count(), user_api="blas")


def blas_kernels() -> str:
    """The BLAS libraries numpy and scipy load, as threadpoolctl reports them with every
    core allowed: internal_api, architecture, num_threads."""
    with all_cores():
        found = {
            f"{i['internal_api']} {i.get('version') or ''} {i.get('architecture') or ''} "
            f"num_threads={i['num_threads']}".replace("  ", " ")
            for i in threadpool_info()
            if i["user_api"] == "blas"
        }
    return "; ".join(sorted(found))


def product_rate(users: np.ndarray, items: np.ndarray, repeats: int) -> float:
    """The machine's product rate for this catalog in GFLOP/s: the best of several ways
    to compute ``U @ V.T`` (float32, reused output buffers), each best of ``repeats``
    timings, so that no path that computes the products can beat it:

    - multi-threaded BLAS (every core) on blocks of PRODUCT_BLOCK users, whole rows;
    - one single-threaded BLAS product per core in parallel threads, each on its own
      blocks of users, whole rows (as the exact path scores small catalogs);
    - the same on tiles of PRODUCT_BLOCK users x PRODUCT_TILE items, whose scores stay in
      cache (as the exact path scores large catalogs).
    """
    users = np.ascontiguousarray(users[:PRODUCT_USERS], dtype=np.float32)
    items_t = np.ascontiguousarray(items.T, dtype=np.float32)
    cores = os.cpu_count() or 1
    blocks = [users[start : start + PRODUCT_BLOCK] for start in range(0, len(users), PRODUCT_BLOCK)]

    def whole_rows_multithreaded(buffer: np.ndarray) -> None:
        for block in blocks:
            np.matmul(block, items_t, out=buffer[: len(block)])

    def per_core(width: int) -> Callable[[], None]:
        buffers = [np.empty((PRODUCT_BLOCK, min(width, len(items))), dtype=np.float32) for _ in range(cores)]

        def worker(index: int) -> None:
            buffer = buffers[index]
            for block in blocks[index::cores]:
                for lo in range(0, len(items), width):
                    chunk = items_t[:, lo : lo + width]
                    np.matmul(block, chunk, out=buffer[: len(block), : chunk.shape[1]])

        def run() -> None:
            with ThreadPoolExecutor(cores) as pool:
                list(pool.map(worker, range(cores)))

        return run

    flops = 2.0 * len(users) * len(items) * items.shape[1]
    rates = []
    with all_cores():
        buffer = np.empty((PRODUCT_BLOCK, len(items)), dtype=np.float32)
        whole_rows_multithreaded(buffer)  # first touch of the buffer
        rates.append(flops / best_of(repeats, whole_rows_multithreaded, buffer))
    with threadpool_limits(limits=1, user_api="blas"):
        for width in (len(items), PRODUCT_TILE):
            run = per_core(width)
            run()
            rates.append(flops / best_of(repeats, run))
    return max(rates) / 1e9


def implicit_recommend(users: np.ndarray, items: np.ndarray, seen: sp.csr_matrix, n: int) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=users.shape[1])
    model.user_factors, model.item_factors = users, items
    # implicit's own advice: BLAS at one thread (its top-k runs in its own threads)
    with threadpool_limits(limits=1, user_api="blas"):
        return model.recommend(np.arange(len(users)), seen, N=n, filter_already_liked_items=True)


def exact_recommend(users: np.ndarray, items: np.ndarray, seen: sp.csr_matrix, n: int) -> Any:
    """The exact path's recommendations through a new index: an inner-product search over
    a wide catalog puts the items in norm order on its first search, which a run pays."""
    return recommend_all(ExactIndex(items, "dot"), users, seen, items, n)


def similar_items(metric: str, items: np.ndarray, n_queries: int, n: int) -> Any:
    """Similar items of the first n_queries items as ``similar_all`` computes them (the
    items as queries, each item excluded from its own list), through a new index."""
    queries = np.arange(n_queries)
    return search_all(ExactIndex(items, metric), items[queries], n, exclude_items(queries, len(items)), items)


def movielens_table(ratings: str) -> Any:
    """A MovieLens ratings.csv as an interactions table (ratings >= 3.5)."""
    import pandas as pd

    table = pd.read_csv(ratings).rename(columns={"userId": "user_id", "movieId": "item_id"})
    return table[table["rating"] >= 3.5].assign(weight=1.0)[["user_id", "item_id", "weight"]]


def trained(table: Any, model_type: str, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Any]:
    """Factors of a registered model type (``recsys.models``) trained on a table."""
    from recsys.data.interactions import build_interactions
    from recsys.models import train

    interactions = build_interactions(table)
    model = train(model_type, params, interactions.user_items, 0, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
        interactions,
    )


def stage_seconds(
    users: np.ndarray, items: np.ndarray, interactions: Any, n: int, repeats: int
) -> tuple[float, float]:
    """The pipeline's recommend stage on these factors in a run folder (memory-mapped
    inputs, lists streamed to parquet): best of ``repeats`` seconds of the whole stage and
    of its scoring alone (the stage's blocks, not written)."""
    from recsys import stages, storage
    from recsys.config import PipelineConfig
    from recsys.stages.results import Indexed
    from recsys.storage import RunLayout

    with tempfile.TemporaryDirectory() as tmp:
        run = RunLayout(Path(tmp), "bench")
        storage.write_interactions(run.data_dir, interactions)
        run.model_dir("als").mkdir(parents=True, exist_ok=True)
        storage.write_array(run.user_factors("als"), users)
        storage.write_array(run.item_factors("als"), items)
        config = PipelineConfig.model_validate(
            {"models": [{"name": "als", "type": "als"}], "recommend": {"top_n": n}, "evaluate": {"k": n}}
        )
        indexed = Indexed(
            indices={"dot": {"backend": "exact", "metric": "dot", "reason": "benchmark"}}, seconds=0
        )
        spec = stages.list_spec(config, "recommendations")

        def scoring() -> None:
            job = stages.ranked_job(run, spec, "als", indexed)
            for _ in stages.score_blocks(stages.open_job_index(run, job), job):
                pass

        part_rows = config.task_runner.shard_rows
        whole = best_of(repeats, stages.ranked_stage, run, spec, "als", indexed, part_rows)
        return whole, best_of(repeats, scoring)


@dataclass
class Catalog:
    label: str
    users: np.ndarray
    items: np.ndarray
    seen: sp.csr_matrix
    interactions: Any = None  # a trained table's interactions: its recommend stage is timed
    annoy: bool = True


def annoy_rows(catalog: Catalog, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """Annoy's dot index and re-ranked angular candidates at the smallest setting reaching
    recall@N 0.95 on a sample, timed on the first --annoy-users users (seconds scaled to
    all users: their users/s is what the table compares)."""
    users, items, seen, n = catalog.users, catalog.items, catalog.seen, args.n
    n_users, n_items = len(users), len(items)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for metric in ("dot", "angular"):
            build_annoy_index(items, metric, Path(tmp) / f"{metric}.ann", args.trees, 0)
        dot, angular = AnnoyIndex(Path(tmp) / "dot.ann"), AnnoyIndex(Path(tmp) / "angular.ann")
        sample = sample_rows(n_users, 300, 2)
        few = np.arange(min(n_users, args.annoy_users))
        q, ex = users[sample], seen[sample]
        scale = n_users / len(few)
        tuned = sweep_search_k(dot, items, q, n, ex, default_search_ks(args.trees, n, n_items), 0.95, False)
        if tuned["search_k"] is not None:
            seconds = best_of(
                args.repeats, recommend_all, dot, users[few], seen[few], items, n, search_k=tuned["search_k"]
            )
            rows.append(
                (
                    f"annoy dot search_k {tuned['search_k']}",
                    seconds * scale,
                    tuned["curve"][-1]["recall_at_k"],
                )
            )
        reranked = sweep_setting(
            lambda c: RerankIndex(angular, items, c),
            "candidates",
            items,
            q,
            n,
            ex,
            default_candidates(n, n_items),
            0.95,
            False,
            "dot",
        )
        if reranked["candidates"] is not None:
            index = RerankIndex(angular, items, reranked["candidates"])
            seconds = best_of(args.repeats, recommend_all, index, users[few], seen[few], items, n)
            rows.append(
                (
                    f"annoy rerank {reranked['candidates']} candidates",
                    seconds * scale,
                    reranked["curve"][-1]["recall_at_k"],
                )
            )
    return rows


def catalogs(args: argparse.Namespace) -> Iterator[Catalog]:
    """The factor kinds, made (or trained) one at a time as the table reaches them."""
    for n_items in [int(x) for x in args.items.split(",") if int(x) > 0]:
        for kind in args.kinds.split(","):
            make = {"clustered": factors, "unclustered": unclustered_factors}[kind]
            users, items = make(args.users, n_items, args.dim)
            seen = seen_items(args.users, n_items, args.seen)
            annoy = not args.no_annoy and n_items <= args.annoy_max_items
            yield Catalog(f"{n_items} {kind}", users, items, seen, annoy=annoy)
    if args.ratings:
        table = movielens_table(args.ratings)
        name = Path(args.ratings).parent.name
        for model_type, params in (
            ("als", {"factors": args.dim, "iterations": 15, "regularization": 0.05}),
            ("spectral", {"factors": args.dim}),
        ):
            users, items, interactions = trained(table, model_type, params)
            label = f"{len(items)} {name} {model_type}"
            yield Catalog(label, users, items, interactions.user_items, annoy=not args.no_annoy)
    if args.generated:
        from recsys.data.synthetic import generate_interactions

        n_users, n_items = (int(x) for x in args.generated.lower().split("x"))
        table = generate_interactions(n_users=n_users, n_items=n_items, seed=0)
        users, items, interactions = trained(
            table, "als", {"factors": args.dim, "iterations": 15, "regularization": 0.05}
        )
        label = f"{len(items)} generated {len(users)} users als"
        yield Catalog(label, users, items, interactions.user_items, interactions, annoy=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000", help="synthetic catalog sizes (0: none)")
    parser.add_argument("--kinds", default="clustered,unclustered", help="synthetic factor kinds")
    parser.add_argument("--users", type=int, default=5000, help="users of the synthetic catalogs")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seen", type=int, default=30, help="seen items per synthetic user")
    parser.add_argument("--repeats", type=int, default=3, help="timings per path; the best counts")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--annoy-users", type=int, default=300, help="users Annoy strategies are timed on")
    parser.add_argument("--no-annoy", action="store_true", help="implicit and the exact path only")
    parser.add_argument(
        "--annoy-max-items", type=int, default=100_000, help="Annoy strategies up to this catalog size"
    )
    parser.add_argument("--ratings", help="also ALS and spectral factors trained on a MovieLens ratings.csv")
    parser.add_argument("--generated", help="also ALS factors trained on a generated table, e.g. 60000x8000")
    args = parser.parse_args()
    print(f"BLAS: {blas_kernels()}; {os.cpu_count()} cores")
    print(
        "| items | factors | users | path | seconds | users/s | vs implicit | GFLOP/s | "
        "% of product rate | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for catalog in catalogs(args):
        users, items, seen, n = catalog.users, catalog.items, catalog.seen, args.n
        n_users, n_items, dim = len(users), len(items), items.shape[1]
        size, kind = catalog.label.split(" ", 1)
        rate = product_rate(users, items, args.repeats)  # measured beside the paths it bounds
        base = best_of(args.repeats, implicit_recommend, users, items, seen, n)
        exact = best_of(args.repeats, exact_recommend, users, items, seen, n)
        rows = [("implicit recommend", base, 1.0), ("exact path", exact, 1.0)]
        similar = min(n_users, n_items)
        for metric in ("dot", "angular"):
            seconds = best_of(args.repeats, similar_items, metric, items, similar, n)
            # scaled to n_users queries: the table compares rates
            rows.append(
                (f"similar items, exact path ({metric}, {similar} items)", seconds * n_users / similar, 1.0)
            )
        if catalog.annoy:
            rows += annoy_rows(catalog, args)
            served = min(rows[1:], key=lambda row: row[1])  # auto: the fastest reaching the target
            rows.append((f"**default (auto): {served[0]}**", served[1], served[2]))
        if catalog.interactions is not None:
            whole, scoring = stage_seconds(users, items, catalog.interactions, n, args.repeats)
            rows.append(("recommend stage, scoring only (run folder)", scoring, 1.0))
            rows.append(("recommend stage, to parquet (run folder)", whole, 1.0))
        flops = 2.0 * n_users * n_items * dim
        print(
            f"| {size} | {kind} | {n_users} | product rate (BLAS, every core) | "
            f"{flops / rate / 1e9:.2f} | {n_users * rate * 1e9 / flops:.0f} | "
            f"{base * rate * 1e9 / flops:.2f}x | {rate:.0f} | 100% | |"
        )
        for name, seconds, recall in rows:
            gflops = flops / seconds / 1e9
            print(
                f"| {size} | {kind} | {n_users} | {name} | {seconds:.2f} | {n_users / seconds:.0f} | "
                f"{base / seconds:.2f}x | {gflops:.0f} | {gflops / rate:.0%} | {recall:.3f} |"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(
            f"| {size} | {kind} | | peak RSS of the process so far: {peak:.2f} GiB | | | | | | |", flush=True
        )


if __name__ == "__main__":
    main()
