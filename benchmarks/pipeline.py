"""End-to-end time of `recsys run`, split into the work (fit, index build, scoring) and
the pipeline's overhead (everything else: starting Python and Prefect, reading and
validating the table, evaluation, report, publishing), locally and on a local Dask
cluster, in one run.

Generates a synthetic interactions table (``--users`` x ``--items``, taste clusters,
Zipf popularity) or reads ``--table``, then times ``recsys run`` as a separate process
(its wall time, as a scheduler sees it) with one ALS model, and reads the per-stage
timings of its manifest. With ``--server`` the runs are also timed against a running
Prefect server (as scheduled deployments run) instead of the temporary API that each
`recsys run` otherwise starts and stops itself. Each run has a Prefect database of its
own, created before it is timed (as `make setup` creates it).

    python -m benchmarks.pipeline --users 200000 --items 50000 --dask --server
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from recsys import storage
from recsys.data import generate_interactions

WORK = ("fit", "index", "recommend", "similar_items")


@contextlib.contextmanager
def prefect_server(root: Path) -> Iterator[str]:
    """A Prefect server on a free loopback port for the duration; yields its API URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-server"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    command = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2):
                break
            time.sleep(0.5)
        else:
            sys.exit("the Prefect server did not start within 120 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def create_prefect_database(env: dict[str, str]) -> None:
    """Prefect's database in ``env``'s PREFECT_HOME, as on any machine after `make setup`
    (which creates it and boots the temporary API once), so that no timed run pays its
    migrations or the registration of Prefect's block types."""
    upgrade = [str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade", "-y"]
    subprocess.run(upgrade, env=env, check=True, capture_output=True)
    boot = [sys.executable, "-m", "flows.temporary_api"]
    subprocess.run(boot, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])


def run(root: Path, name: str, config: dict, table: Path, api_url: str | None = None) -> dict:
    slug = name.replace(", Prefect server", "-server")
    (root / f"{slug}.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PREFECT_HOME": str(root / f"prefect-{slug}")}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    create_prefect_database(env)
    command = [str(Path(sys.executable).with_name("recsys")), "run", "--config", str(root / f"{slug}.yaml")]
    command += ["--interactions", str(table), "--output", str(root / slug), "--run-id", "bench"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
    manifest = storage.read_json(root / slug / "runs" / "bench" / "manifest.json")
    model = manifest["models"]["als"]
    return {
        "name": name,
        "wall": wall,
        "timings": model["timings"],
        "prepare": manifest["timings"]["prepare"],
        "index": {metric: entry["backend"] for metric, entry in model["indices"].items()},
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
    parser.add_argument("--server", action="store_true", help="also run against a running Prefect server")
    parser.add_argument("--table", help="an interactions table to use instead of generating one")
    args = parser.parse_args()
    config = {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": args.factors, "iterations": 15}},
        ],
        "recommend": {"top_n": args.top_n},
        "similar_items": {"top_n": args.top_n},
        "evaluate": {"k": [10, args.top_n]},
    }
    dask = {**config, "task_runner": {"type": "dask", "n_workers": 2}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        if args.table:
            table = Path(args.table)
            rows = len(pd.read_parquet(table, columns=["user_id"]))
        else:
            frame = generate_interactions(
                args.users, args.items, n_clusters=50, mean_items_per_user=args.per_user
            )
            table = root / "interactions.parquet"
            frame.to_parquet(table)
            rows = len(frame)
        print(
            f"{rows} interactions (ready in {time.perf_counter() - started:.0f} s); "
            f"ALS {args.factors} factors, top-{args.top_n}"
        )
        results = [run(root, "local", config, table)]
        if args.dask:
            results.append(run(root, "dask", dask, table))
        if args.server:
            with prefect_server(root) as url:
                results.append(run(root, "local, Prefect server", config, table, url))
                if args.dask:
                    results.append(run(root, "dask, Prefect server", dask, table, url))
    print(
        "\n| runner | wall s | prepare | fit | index | recommend | similar_items | evaluate "
        "| overhead s | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        t = result["timings"]
        overhead = result["wall"] - sum(t.get(stage, 0.0) for stage in WORK)
        print(
            f"| {result['name']} | {result['wall']:.1f} | {result['prepare']:.1f} | {t['fit']:.1f} | "
            f"{t['index']:.1f} | {t['recommend']:.1f} | {t['similar_items']:.1f} | {t['evaluate']:.1f} | "
            f"{overhead:.1f} | {overhead / result['wall']:.0%} |"
        )
    print(f"\nindices served by: {json.dumps(results[0]['index'])}")
    walls = {result["name"]: result["wall"] for result in results}
    for local, scaled in [("local", "dask"), ("local, Prefect server", "dask, Prefect server")]:
        if local in walls and scaled in walls:
            print(f"{scaled} / {local} wall time: {walls[scaled] / walls[local]:.2f}x")


if __name__ == "__main__":
    main()
