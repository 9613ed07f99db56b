"""Peak memory of publishing top-N recommendations for every user.

Writes a run folder with synthetic factors (``--users`` x ``--items``, seen items per
user) and then, each in a fresh process so that its peak RSS is its own:

- ``inputs``: loads what scoring needs (factors, interactions, the exact index) and
  stops: the floor any way of scoring must pay;
- ``streamed``: the pipeline's recommend stage: lists streamed to parquet a block of
  users at a time (row groups of ~1M rows);
- ``in memory``: the same lists gathered for all users first and written as one table
  (what a pandas-style ``users x N rows`` frame costs).

    python -m benchmarks.memory --users 1000000 --items 10000 --top-n 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.speed import factors, seen_items
from recsys import storage
from recsys.config import PipelineConfig
from recsys.data.interactions import IdMap, Interactions
from recsys.storage import RunLayout

MODES = ("inputs", "streamed", "in memory")
REPO = Path(__file__).resolve().parents[1]


def prepare(root: Path, users: int, items: int, dim: int, seen: int) -> RunLayout:
    run = RunLayout(root, "bench")
    user_factors, item_factors = factors(users, items, dim)
    user_items = seen_items(users, items, seen)
    interactions = Interactions(
        users=IdMap.from_ids(np.arange(users), "int"),
        items=IdMap.from_ids(np.arange(items), "int"),
        user_items=user_items,
        stats={},
    )
    storage.write_interactions(run.data_dir, interactions)
    run.model_dir("als").mkdir(parents=True, exist_ok=True)
    storage.write_array(run.model_dir("als") / "user_factors.npy", user_factors)
    storage.write_array(run.model_dir("als") / "item_factors.npy", item_factors)
    return run


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over
    exec from the parent, which would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(root: Path, top_n: int, mode: str) -> dict:
    """Run in a fresh process: score (or only load) and report peak RSS."""
    from recsys import stages as pipeline
    from recsys.stages.results import Indexed

    run = RunLayout(root, "bench")
    config = PipelineConfig.model_validate(
        {"models": [{"name": "als", "type": "als"}], "recommend": {"top_n": top_n}, "evaluate": {"k": 10}}
    )
    indexed = Indexed(
        indices={"dot": {"backend": "exact", "metric": "dot", "reason": "benchmark"}}, seconds=0
    )
    spec = pipeline.list_spec(config, "recommendations")
    started = time.perf_counter()
    rows = 0
    if mode == "inputs":
        job = pipeline.ranked_job(run, spec, "als", indexed)
        np.asarray(job.queries).sum()  # touch the memory-mapped user factors
        pipeline.open_job_index(run, job)
    elif mode == "streamed":
        rows = pipeline.ranked_stage(run, spec, "als", indexed, config.task_runner.shard_rows).rows
    else:
        from recsys.recommend import recommend_all

        job = pipeline.ranked_job(run, spec, "als", indexed)
        index = pipeline.open_job_index(run, job)
        ids, scores = recommend_all(index, np.asarray(job.queries), job.exclude, job.item_factors, top_n)
        interactions = storage.read_interactions(run.data_dir)
        path = run.model_dir("als") / "recommendations_in_memory.parquet"
        rows = storage.write_recommendations(
            path, interactions.users, interactions.items, ids, scores, "als", run.run_id
        )
    peak_mib = peak_rss_mib()
    return {
        "mode": mode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_mib": round(peak_mib),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seen", type=int, default=20, help="seen items per user")
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.root), args.top_n, args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = prepare(root, args.users, args.items, args.dim, args.seen)
        sizes = {
            "user factors": args.users * args.dim * 4,
            "item factors": args.items * args.dim * 4,
            "seen items (CSR)": storage.read_sparse(run.data_dir / "user_items.npz").data.nbytes * 3,
        }
        print(f"{args.users} users x {args.items} items x {args.dim} dims, top-{args.top_n}")
        for name, size in sizes.items():
            print(f"  {name}: {size / 2**20:.0f} MiB")
        results = []
        for mode in MODES:
            command = [sys.executable, "-m", "benchmarks.memory", "--measure", mode, "--root", tmp]
            command += ["--top-n", str(args.top_n)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        streamed = run.model_dir("als") / "recommendations.parquet"
        groups = pq.ParquetFile(streamed).metadata.num_row_groups
        floor = results[0]["peak_mib"]
        print("\n| mode | seconds | rows | peak RSS MiB | over inputs |")
        print("|---|---|---|---|---|")
        for result in results:
            print(
                f"| {result['mode']} | {result['seconds']} | {result['rows']} | {result['peak_mib']} | "
                f"{result['peak_mib'] - floor:+d} MiB |"
            )
        print(f"\nstreamed file: {streamed.stat().st_size / 2**20:.0f} MiB in {groups} row groups")


if __name__ == "__main__":
    main()
