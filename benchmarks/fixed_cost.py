"""What every `recsys run` pays before and around its work, as a user sees it (wall time
of the command, best of ``--repeats``):

- the demo: ``recsys run --config configs/demo.yaml`` on the bundled sample (five models,
  a random split, each model evaluated then refit), with Prefect's temporary API and
  against a running Prefect server;
- time to the first error: the same command with an input table that does not exist, and
  with one that lacks a column (both refused before Prefect is imported);
- Python, the CLI and Prefect alone: ``recsys --version`` and ``import flows.pipeline``;
- the demo through ``recsys.cli.main`` without the console script, where Prefect starts
  its temporary API itself at the flow's first call (Prefect's own behaviour, for
  comparison).

Prefect's database (PREFECT_HOME) is created once before the timings, as ``make setup``
does, so no run pays its migrations.

    python -m benchmarks.fixed_cost [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.pipeline import create_prefect_database, prefect_server

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
        recsys = str(BIN / "recsys")
        demo = [recsys, "run", "--config", "configs/demo.yaml", "--output", str(root / "out")]
        rows = [
            ("`recsys --version` (Python and the CLI)", best([recsys, "--version"], env, args.repeats)),
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


if __name__ == "__main__":
    main()
