"""End-to-end time of `recsys run`, split into the work (fit, index build, scoring) and
the pipeline's overhead (everything else: Prefect, reading and validating the table,
evaluation, report, publishing), locally and on a local Dask cluster, in one run.

Generates a synthetic interactions table (``--users`` x ``--items``, taste clusters,
Zipf popularity), then times ``recsys run`` as a separate process (its wall time, as a
scheduler sees it) with one ALS model, and reads the per-stage timings of its manifest.

    python -m benchmarks.pipeline --users 200000 --items 50000 --dask
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from recsys import storage
from recsys.data import generate_interactions

WORK = ("fit", "index", "recommend", "similar_items")


def run(root: Path, name: str, config: dict, table: Path) -> dict:
    (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PREFECT_HOME": str(root / f"prefect-{name}")}
    env.pop("PREFECT_API_URL", None)
    command = [str(Path(sys.executable).with_name("recsys")), "run", "--config", str(root / f"{name}.yaml")]
    command += ["--interactions", str(table), "--output", str(root / name), "--run-id", "bench"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
    manifest = storage.read_json(root / name / "runs" / "bench" / "manifest.json")
    timings = manifest["models"]["als"]["timings"]
    index = {metric: entry["backend"] for metric, entry in manifest["models"]["als"]["indices"].items()}
    return {
        "name": name,
        "wall": wall,
        "timings": timings,
        "index": index,
        "prepare": manifest["timings"]["prepare"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--per-user", type=float, default=30.0, help="mean interactions per user")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--dask", action="store_true", help="also run on a local Dask cluster of 2 workers")
    args = parser.parse_args()
    config = {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": args.factors, "iterations": 15}},
        ],
        "recommend": {"top_n": args.top_n},
        "similar_items": {"top_n": args.top_n},
        "evaluate": {"k": [10, args.top_n]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        frame = generate_interactions(
            args.users, args.items, n_clusters=50, mean_items_per_user=args.per_user
        )
        table = root / "interactions.parquet"
        frame.to_parquet(table)
        print(
            f"{args.users} users x {args.items} items, {len(frame)} interactions "
            f"(generated in {time.perf_counter() - started:.0f} s); "
            f"ALS {args.factors} factors, top-{args.top_n}"
        )
        results = [run(root, "local", config, table)]
        if args.dask:
            dask = {**config, "task_runner": {"type": "dask", "n_workers": 2}}
            results.append(run(root, "dask", dask, table))
    print(
        "\n| runner | wall s | fit | index | recommend | similar_items | evaluate | overhead s | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        t = result["timings"]
        work = sum(t.get(stage, 0.0) for stage in WORK)
        overhead = result["wall"] - work
        print(
            f"| {result['name']} | {result['wall']:.1f} | {t['fit']:.1f} | {t['index']:.1f} | "
            f"{t['recommend']:.1f} | {t['similar_items']:.1f} | {t['evaluate']:.1f} | "
            f"{overhead:.1f} | {overhead / result['wall']:.0%} |"
        )
    print(f"\nindices served by: {json.dumps(results[0]['index'])}")
    if len(results) == 2:
        print(f"dask / local wall time: {results[1]['wall'] / results[0]['wall']:.2f}x")


if __name__ == "__main__":
    main()
