"""What every `recsys run` pays before and around its work, as a user sees it (wall time
of the command, best of ``--repeats``):

- the demo: ``recsys run --config configs/demo.yaml`` on the bundled sample (five models,
  a random split, each model evaluated then refit), with Prefect's temporary API and
  against a running Prefect server;
- time to the first error: the same command with an input table that does not exist, and
  with one that lacks a column (both refused before Prefect is imported);
- Python, the CLI and Prefect alone: ``recsys --version``, ``recsys --help`` (neither
  imports Prefect, numpy or pandas) and ``import flows.pipeline``;
- with ``--sizes``: the overhead of a run with one ALS model (wall time beyond fit, index
  build and scoring) as a share of its wall time on generated tables of each size (users
  x items), with the manifest's per-stage split (:mod:`benchmarks.pipeline`): `recsys run`
  with its temporary API, against a running Prefect server, and the same stages without
  Prefect (``recsys.run_pipeline``);
- the demo through ``recsys.cli.main`` without the console script, where Prefect starts
  its temporary API itself at the flow's first call (Prefect's own behaviour, for
  comparison).

Prefect's database (PREFECT_HOME) is created once before the timings, as ``make setup``
does, so no run pays its migrations.

    python -m benchmarks.fixed_cost [--repeats 3] [--sizes 40000x20000,200000x50000]
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

import pandas as pd

from benchmarks.pipeline import WORK, create_prefect_database, prefect_server
from benchmarks.pipeline import run as pipeline_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str], expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        sys.exit(f"{' '.join(command)}: exit {done.returncode}, expected {expect}\n{done.stderr[-2000:]}")
    return seconds


def best(command: list[str], env: dict[str, str], repeats: int, expect: int = 0) -> float:
    return min(timed(command, env, expect) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sizes", default="", help="users x items of the timed ALS runs, e.g. 40000x20000,200000x50000"
    )
    args = parser.parse_args()
    sample = ROOT / "data" / "sample" / "interactions.parquet"
    if not sample.exists():
        subprocess.run([str(BIN / "recsys"), "generate", "--output", str(sample)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "PREFECT_HOME": str(root / "prefect")}
        env.pop("PREFECT_API_URL", None)
        create_prefect_database(env)
        broken = root / "no-item.csv"
        pd.read_parquet(sample).drop(columns=["item_id"]).head(1000).to_csv(broken, index=False)
        nan_weight = root / "nan-weight.parquet"
        with_nan = pd.read_parquet(sample)
        with_nan.loc[with_nan.index[-1], "weight"] = float("nan")
        with_nan.to_parquet(nan_weight)
        recsys = str(BIN / "recsys")
        demo = [recsys, "run", "--config", "configs/demo.yaml", "--output", str(root / "out")]
        rows = [
            ("`recsys --version` (Python and the CLI)", best([recsys, "--version"], env, args.repeats)),
            ("`recsys --help`", best([recsys, "--help"], env, args.repeats)),
            (
                "`import flows.pipeline` (Prefect and the flow)",
                best([sys.executable, "-c", "import flows.pipeline"], env, args.repeats),
            ),
            (
                "first error: input file missing",
                best([*demo, "--interactions", str(root / "missing.parquet")], env, args.repeats, 2),
            ),
            (
                "first error: input without an item_id column",
                best([*demo, "--interactions", str(broken)], env, args.repeats, 2),
            ),
            (
                "first error: a NaN weight in the last row",
                best([*demo, "--interactions", str(nan_weight)], env, args.repeats, 2),
            ),
            ("demo run, temporary API", best(demo, env, args.repeats)),
            (
                "demo run, temporary API started by Prefect at the flow's first call",
                best(
                    [
                        sys.executable,
                        "-c",
                        "import sys; from recsys.cli import main; sys.exit(main(sys.argv[1:]))",
                    ]
                    + demo[1:],
                    env,
                    args.repeats,
                ),
            ),
        ]
        with prefect_server(root) as url:
            rows.append(
                (
                    "demo run, running Prefect server",
                    best(demo, {**env, "PREFECT_API_URL": url}, args.repeats),
                )
            )
    print(f"best of {args.repeats}; {os.cpu_count()} cores\n")
    print("| what | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",") if size]
    if sizes:
        overheads()
    for users, items in sizes:
        overhead(users, items)


def overheads() -> None:
    print(
        "\n| table | runner | wall s | prepare | fit | index | recommend | similar_items | evaluate "
        "| overhead s | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")


RUNNERS = ("recsys run, temporary API", "recsys run, Prefect server", "recsys.run_pipeline, no Prefect")


def overhead(users: int, items: int) -> None:
    """One run of one ALS model on a generated table of ``users`` x ``items``, three ways:
    `recsys run` with the temporary API it starts, `recsys run` against a running Prefect
    server (as scheduled deployments run), and the same stages without Prefect
    (``recsys.run_pipeline`` in a process of its own): what Prefect's orchestration adds."""
    from recsys.data import generate_interactions

    config = {
        "models": [{"name": "als", "type": "als", "params": {"factors": 64, "iterations": 15}}],
        "recommend": {"top_n": 20},
        "similar_items": {"top_n": 20},
        "evaluate": {"k": [10, 20]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = root / "interactions.parquet"
        generate_interactions(users, items, n_clusters=50, mean_items_per_user=30.0).to_parquet(table)
        results = [pipeline_run(root, "local", config, table)]
        with prefect_server(root) as url:
            results.append(pipeline_run(root, "local, Prefect server", config, table, url))
        results.append(without_prefect(root, config, table))
    for runner, result in zip(RUNNERS, results, strict=True):
        t = result["timings"]
        spent = result["wall"] - sum(t.get(stage, 0.0) for stage in WORK)
        print(
            f"| {users} x {items} | {runner} | {result['wall']:.1f} | {result['prepare']:.1f} | "
            f"{t['fit']:.1f} | {t['index']:.1f} | {t['recommend']:.1f} | {t['similar_items']:.1f} | "
            f"{t['evaluate']:.1f} | {spent:.1f} | {spent / result['wall']:.0%} |",
            flush=True,
        )


def without_prefect(root: Path, config: dict, table: Path) -> dict:
    """The same run through ``recsys.run_pipeline`` (no flow, no API), timed as a process."""
    output = root / "no-prefect"
    script = (
        "import json, sys, recsys; "
        "recsys.run_pipeline(sys.argv[1], json.loads(sys.argv[2]), output=sys.argv[3], run_id='bench')"
    )
    command = [sys.executable, "-c", script, str(table), json.dumps(config), str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"recsys.run_pipeline failed:\n{done.stderr[-3000:]}")
    manifest = json.loads((output / "runs" / "bench" / "manifest.json").read_text())
    return {
        "wall": wall,
        "timings": manifest["models"]["als"]["timings"],
        "prepare": manifest["timings"]["prepare"],
    }


if __name__ == "__main__":
    main()
