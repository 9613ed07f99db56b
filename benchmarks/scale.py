"""Wall time and peak memory of the whole pipeline at growing sizes, with a memory model
fitted from them.

Runs ``recsys run`` (the console script, as a separate process) with one ALS model (64
factors), top-20 recommendations and similar items, ``index.backend: auto`` and the
config's default evaluation (no held-out split: recall of the served lists against exact
search on 1,000 sampled users and items), on tables generated here for each size
(``USERSxITEMSxINTERACTIONS``, ``k`` and ``M`` allowed): seeded numpy, 50 taste clusters,
Zipf item popularity, a log-normal number of items per user (at least 3), play-count
weights and timestamps, no duplicate (user, item) pair; the same size and seed always
give the same table. Tables are written as parquet into a scratch folder (``--scratch``,
a new temporary folder by default), never into the repository.

Per size and mode (``local``: scoring in the flow's process; ``dask``: ``task_runner:
{type: dask, n_workers: 2}``, a local cluster whose worker processes are children of the
flow) it reports the stages' wall time (the published manifest's ``timings`` and the
model's), the command's wall time, the output's size on disk, and the peak RSS of every
process of the run's tree: the flow (the ``recsys run`` process), the temporary Prefect
API it starts, each Dask worker. Peaks are read from ``/proc/<pid>/status`` (VmHWM, a
high-water mark, so its last reading is the process's peak) every ``--poll`` seconds;
VmRSS of the flow is sampled at the same time and cut into the pipeline's phases by the
timestamps of the run's log lines, which gives each phase's peak. With four or more
sizes of a mode (``--from`` merges earlier ``--output`` files), each phase's peak is
fitted as ``bytes = base + a * users + b * items + c * interactions`` (non-negative
least squares).

    python -m benchmarks.scale --quick
    python -m benchmarks.scale --mode local --output scale-local.json
    python -m benchmarks.scale --fit-only --from scale-local.json scale-dask.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from scipy.optimize import nnls

REPO = Path(__file__).resolve().parents[1]
SIZES = "125kx25kx3.125M,500kx25kx6.25M,2Mx100kx50M"
QUICK = "20kx5kx400k,80kx5kx800k"
N_CLUSTERS = 50
IN_CLUSTER = 0.85
GIB = 2**30

# The phases of a run, in order, and the log line that starts each (the first match of a
# later phase moves on; phases never go back).
PHASES = [
    ("startup", None),
    ("prepare", re.compile(r"Beginning flow run")),
    ("forward", re.compile(r"Task run 'prepare-data' - Finished")),
    ("train", re.compile(r"Task run 'forward' - Finished")),
    ("index", re.compile(r"Task run 'train-als' - Finished")),
    ("recommend", re.compile(r"Task run 'index-als' - Finished")),
    (
        "similar_items",
        re.compile(r"Task run 'recommend-als' - Finished|recommend: shard (\d+)/\1\b"),
    ),
    ("evaluate", re.compile(r"Task run 'similar-als' - Finished|similar items: shard (\d+)/\1\b")),
    ("report_publish", re.compile(r"Task run 'evaluate-als' - Finished")),
    ("exit", re.compile(r"Flow run '.*' - Finished in state")),
]
STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) \|")


def parse_size(text: str) -> tuple[int, int, int]:
    def number(part: str) -> int:
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1].lower(), 1)
        return round(float(part[:-1] if scale > 1 else part) * scale)

    parts = text.lower().split("x")
    if len(parts) != 3:
        raise SystemExit(f"a size is USERSxITEMSxINTERACTIONS, not {text!r}")
    users, items, rows = (number(part) for part in parts)
    if users < 10 or items < 100 or rows < 3 * users or rows > users * items // 2:
        raise SystemExit(f"size {text!r}: need users >= 10, items >= 100, 3 <= rows per user <= items / 2")
    return users, items, rows


# -- the table ------------------------------------------------------------------------


def draw_items(rng: np.random.Generator, users: np.ndarray, taste: dict) -> np.ndarray:
    """One item per row of ``users``: from the user's taste cluster by popularity
    (``IN_CLUSTER`` of rows), else from the whole catalog by popularity."""
    u = rng.random(len(users))
    home = rng.random(len(users)) < IN_CLUSTER
    items = np.empty(len(users), dtype=np.int64)
    away = ~home
    items[away] = np.minimum(np.searchsorted(taste["global_cdf"], u[away]), len(taste["global_cdf"]) - 1)
    cluster = taste["user_cluster"][users[home]]
    # cluster c's cdf runs from c to c + 1 in one sorted array, so one search serves all
    position = np.searchsorted(taste["cluster_cdf"], cluster + u[home])
    position = np.clip(position, taste["starts"][cluster], taste["starts"][cluster + 1] - 1)
    items[home] = taste["order"][position]
    return items


def distinct(keys: np.ndarray) -> np.ndarray:
    """The sorted distinct values (np.unique's hash path is many times slower here)."""
    keys = np.sort(keys)
    keep = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def generate_table(n_users: int, n_items: int, n_rows: int, path: Path, seed: int = 0) -> None:
    """Exactly ``n_rows`` distinct (user, item) rows, every user with at least one, written
    to ``path`` (int64 ids from 1, float64 weight, timestamp) in a shuffled order."""
    rng = np.random.default_rng(seed)
    item_cluster = rng.permutation(np.arange(n_items) % N_CLUSTERS)
    popularity = (rng.permutation(n_items) + 1.0) ** -1.0
    order = np.argsort(item_cluster, kind="stable")
    sorted_cluster = item_cluster[order]
    starts = np.searchsorted(sorted_cluster, np.arange(N_CLUSTERS + 1))
    cluster_cdf = np.empty(n_items)
    for c in range(N_CLUSTERS):
        p = popularity[order[starts[c] : starts[c + 1]]]
        cluster_cdf[starts[c] : starts[c + 1]] = c + np.cumsum(p) / p.sum()
    taste = {
        "global_cdf": np.cumsum(popularity) / popularity.sum(),
        "cluster_cdf": cluster_cdf,
        "starts": starts,
        "order": order,
        "user_cluster": rng.integers(0, N_CLUSTERS, size=n_users),
    }
    mean = n_rows / n_users
    sigma = 0.8
    counts = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=n_users)
    counts = np.clip(np.round(counts * 1.15), 3, max(3, n_items // 2)).astype(np.int64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    keys = distinct(users * n_items + draw_items(rng, users, taste))
    del users
    while len(keys) < n_rows:  # repeated draws of popular items: draw more for random users
        extra = rng.integers(0, n_users, size=int((n_rows - len(keys)) * 1.5) + 1000)
        keys = distinct(np.concatenate([keys, extra * n_items + draw_items(rng, extra, taste)]))
    if len(keys) > n_rows:  # drop at random, never a user's first row
        user_of = keys // n_items
        first = np.ones(len(keys), dtype=bool)
        first[1:] = user_of[1:] != user_of[:-1]
        del user_of
        spare = np.flatnonzero(~first)
        keep = np.ones(len(keys), dtype=bool)
        keep[rng.choice(spare, size=len(keys) - n_rows, replace=False)] = False
        keys = keys[keep]
        del keep, spare, first
    keys = keys[rng.permutation(len(keys))]
    start = np.datetime64("2026-01-01T00:00:00", "s").astype(np.int64)
    table = pa.table(
        {
            "user_id": keys // n_items + 1,
            "item_id": keys % n_items + 1,
            "weight": rng.geometric(0.4, size=len(keys)).astype(np.float64),
            "timestamp": pa.array(start + rng.integers(0, 180 * 86400, size=len(keys)), pa.timestamp("s")),
        }
    )
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial, row_group_size=1_000_000)
    partial.replace(path)


# -- memory of a process tree -----------------------------------------------------------


def status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid`` in bytes ({} once it is gone)."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                found[key] = int(value.split()[0]) * 1024
    return found


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def role(pid: int, root: int) -> str:
    if pid == root:
        return "flow"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "uvicorn" in command or "prefect server" in command:
        return "api"
    if "resource_tracker" in command:
        return "resource tracker"
    if "spawn_main" in command or "forkserver" in command:
        return "dask worker"
    return "other: " + command[:80]


@dataclass
class Tree:
    """What the poller saw of one process tree."""

    root: int
    peaks: dict[int, int] = field(default_factory=dict)  # pid -> last VmHWM (its peak)
    roles: dict[int, str] = field(default_factory=dict)
    flow_rss: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, VmRSS)
    tree_rss_peak: int = 0  # the largest sum of VmRSS over the tree in one poll

    def poll(self) -> None:
        now = time.time()
        pending, seen, total = [self.root], set(), 0
        while pending:
            pid = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            figures = status(pid)
            if not figures:
                continue
            if self.roles.get(pid, "other").startswith("other"):  # a fork not yet exec'd reads as other
                self.roles[pid] = role(pid, self.root)
            self.peaks[pid] = max(self.peaks.get(pid, 0), figures.get("VmHWM", 0))
            total += figures.get("VmRSS", 0)
            if pid == self.root:
                self.flow_rss.append((now, figures.get("VmRSS", 0)))
            pending += children(pid)
        self.tree_rss_peak = max(self.tree_rss_peak, total)


def watch(tree: Tree, done: threading.Event, interval: float) -> None:
    while not done.is_set():
        tree.poll()
        done.wait(interval)


# -- one run ---------------------------------------------------------------------------


def config_for(mode: str) -> dict:
    config = {
        "models": [{"name": "als", "type": "als", "params": {"factors": 64}}],
        "index": {"backend": "auto"},
        "recommend": {"top_n": 20},
        "similar_items": {"top_n": 20},
    }
    if mode == "dask":
        config["task_runner"] = {"type": "dask", "n_workers": 2}
    return config


def phase_starts(lines: list[str], day: dt.date) -> list[tuple[str, float]]:
    """(phase, epoch s at which it started) from the run's log lines."""
    starts: list[tuple[str, float]] = []
    current = 0
    for line in lines:
        stamp = STAMP.match(line)
        if not stamp:
            continue
        for position in range(current + 1, len(PHASES)):
            name, pattern = PHASES[position]
            if pattern is not None and pattern.search(line):
                hours, minutes, seconds, millis = (int(part) for part in stamp.groups())
                moment = dt.datetime.combine(day, dt.time(hours, minutes, seconds, millis * 1000))
                starts.append((name, moment.timestamp()))
                current = position
                break
    return starts


def phase_peaks(samples: list[tuple[float, int]], starts: list[tuple[str, float]], began: float) -> dict:
    """The largest VmRSS sample of the flow in each phase (bytes)."""
    bounds = [("startup", began), *starts, ("end", float("inf"))]
    peaks = {}
    for (name, low), (_, high) in zip(bounds, bounds[1:], strict=False):
        inside = [rss for moment, rss in samples if low <= moment < high]
        if inside:
            peaks[name] = max(inside)
    return peaks


def run_once(scratch: Path, table: Path, size: tuple[int, int, int], mode: str, poll: float) -> dict:
    users, items, rows = size
    slug = f"{mode}-{users}x{items}x{rows}"
    folder = scratch / slug
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config_for(mode)))
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.pop("PREFECT_API_URL", None)
    upgrade = [str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade", "-y"]
    subprocess.run(upgrade, env=env, check=True, capture_output=True)  # as after `make setup`
    command = [str(Path(sys.executable).with_name("recsys")), "run", "--config", str(folder / "config.yaml")]
    command += ["--interactions", str(table), "--output", str(folder / "out"), "--run-id", "bench"]
    log = folder / "run.log"
    began = time.time()
    started = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=folder)
        tree = Tree(process.pid)
        done = threading.Event()
        poller = threading.Thread(target=watch, args=(tree, done, poll), daemon=True)
        poller.start()
        code = process.wait()
        done.set()
        poller.join()
    wall = time.perf_counter() - started
    lines = log.read_text(errors="replace").splitlines()
    starts = phase_starts(lines, dt.date.fromtimestamp(began))
    result = {
        "mode": mode,
        "users": users,
        "items": items,
        "interactions": rows,
        "exit_status": code,
        "wall_s": round(wall, 1),
        "peak_bytes": {
            "flow": tree.peaks.get(tree.root, 0),
            **{
                f"{tree.roles[pid]} {pid}": peak
                for pid, peak in sorted(tree.peaks.items())
                if pid != tree.root and tree.roles[pid] in ("api", "dask worker")
            },
        },
        "tree_rss_peak_bytes": tree.tree_rss_peak,
        "flow_phase_peak_bytes": phase_peaks(tree.flow_rss, starts, began),
        "phase_starts_s": {name: round(moment - began, 1) for name, moment in starts},
        "log": str(log),
    }
    if code != 0:
        reached = starts[-1][0] if starts else "startup"
        result["failed"] = {"phase": reached, "last_lines": lines[-15:]}
        return result
    manifest = json.loads((folder / "out" / "runs" / "bench" / "manifest.json").read_text())
    model = manifest["models"]["als"]
    result["timings"] = {**manifest["timings"], **model["timings"]}
    result["indices"] = {metric: entry["backend"] for metric, entry in model["indices"].items()}
    result["run_bytes"] = sum(f.stat().st_size for f in (folder / "out").rglob("*") if f.is_file())
    result["input"] = {key: manifest["input"][key] for key in ("rows", "users", "items", "interactions")}
    return result


# -- reporting -------------------------------------------------------------------------

STAGES = ["prepare", "fit", "index", "recommend", "similar_items", "evaluate", "total_before_publish"]


def gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def size_label(result: dict) -> str:
    return f"{result['users']:,} x {result['items']:,} x {result['interactions']:,}"


def print_tables(results: list[dict]) -> None:
    print("\n| mode | users x items x interactions | wall s | " + " | ".join(STAGES) + " |")
    print("|---|---|---|" + "---|" * len(STAGES))
    for r in results:
        t = r.get("timings", {})
        cells = [f"{t[s]:.1f}" if s in t else "" for s in STAGES]
        failed = f" (failed in {r['failed']['phase']})" if "failed" in r else ""
        print(f"| {r['mode']}{failed} | {size_label(r)} | {r['wall_s']:.1f} | " + " | ".join(cells) + " |")
    print(
        "\n| mode | users x items x interactions | flow peak GiB | API peak GiB | worker peaks GiB "
        "| tree peak GiB | run on disk GiB | indices |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        peaks = r["peak_bytes"]
        api = [v for k, v in peaks.items() if k.startswith("api")]
        workers = [v for k, v in peaks.items() if k.startswith("dask worker")]
        print(
            f"| {r['mode']} | {size_label(r)} | {gib(peaks['flow'])} | {gib(max(api)) if api else ''} | "
            f"{', '.join(gib(w) for w in workers)} | {gib(r['tree_rss_peak_bytes'])} | "
            f"{gib(r['run_bytes']) if 'run_bytes' in r else ''} | {json.dumps(r.get('indices', {}))} |"
        )
    phases = [name for name, _ in PHASES]
    print("\nflow's peak RSS (GiB) by phase:")
    print("| mode | users x items x interactions | " + " | ".join(phases) + " |")
    print("|---|---|" + "---|" * len(phases))
    for r in results:
        by = r["flow_phase_peak_bytes"]
        print(
            f"| {r['mode']} | {size_label(r)} | "
            + " | ".join(gib(by[p]) if p in by else "" for p in phases)
            + " |"
        )


def print_ratios(results: list[dict]) -> None:
    for mode in ("local", "dask"):
        done = [r for r in results if r["mode"] == mode and "failed" not in r]
        for small in done:
            for large in done:
                if large["users"] == 4 * small["users"]:
                    ratio = large["peak_bytes"]["flow"] / small["peak_bytes"]["flow"]
                    worker = [
                        max((v for k, v in r["peak_bytes"].items() if k.startswith("dask")), default=0)
                        for r in (small, large)
                    ]
                    extra = f"; worker peak {worker[1] / worker[0]:.2f}x" if worker[0] else ""
                    print(
                        f"{mode}: flow peak at {large['users']:,} users / at {small['users']:,} users "
                        f"(items x{large['items'] / small['items']:g}, interactions "
                        f"x{large['interactions'] / small['interactions']:g}): {ratio:.2f}x{extra}"
                    )


def fit_model(results: list[dict]) -> dict:
    """Per mode and phase: base + bytes per user, per item and per interaction
    (non-negative least squares over the sizes; needs four sizes or more)."""
    model: dict = {}
    for mode in ("local", "dask"):
        done = [r for r in results if r["mode"] == mode and "failed" not in r]
        if len({(r["users"], r["items"], r["interactions"]) for r in done}) < 4:
            continue
        x = np.array([[1.0, r["users"], r["items"], r["interactions"]] for r in done])
        targets = {"flow peak": [r["peak_bytes"]["flow"] for r in done]}
        for name, _ in PHASES:
            if all(name in r["flow_phase_peak_bytes"] for r in done):
                targets[name] = [r["flow_phase_peak_bytes"][name] for r in done]
        workers = [
            max((v for k, v in r["peak_bytes"].items() if k.startswith("dask")), default=0) for r in done
        ]
        if all(workers):
            targets["worker peak"] = workers
        model[mode] = {}
        for name, y in targets.items():
            scale = x.max(axis=0)  # columns of like size, then no negative bytes
            coef = nnls(x / scale, np.asarray(y, dtype=float))[0] / scale
            worst = float(np.max(np.abs(x @ coef - y)))
            model[mode][name] = {
                "base_bytes": coef[0],
                "per_user": coef[1],
                "per_item": coef[2],
                "per_interaction": coef[3],
                "worst_residual_bytes": worst,
            }
    return model


def print_model(model: dict) -> None:
    for mode, rows in model.items():
        print(f"\n{mode}: peak RSS = base + a*users + b*items + c*interactions (non-negative least squares)")
        print("| phase | base GiB | bytes/user | bytes/item | bytes/interaction | worst residual GiB |")
        print("|---|---|---|---|---|---|")
        for name, m in rows.items():
            print(
                f"| {name} | {gib(m['base_bytes'])} | {m['per_user']:.0f} | {m['per_item']:.0f} | "
                f"{m['per_interaction']:.1f} | {gib(m['worst_residual_bytes'])} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=SIZES, help=f"USERSxITEMSxINTERACTIONS, comma-separated ({SIZES})")
    parser.add_argument("--quick", action="store_true", help=f"small sizes for a try in minutes ({QUICK})")
    parser.add_argument("--mode", choices=["local", "dask", "both"], default="both")
    parser.add_argument("--output", help="write the figures as JSON")
    parser.add_argument(
        "--from",
        dest="merge",
        nargs="*",
        default=[],
        help="earlier --output files to report and fit with these",
    )
    parser.add_argument(
        "--fit-only", action="store_true", help="run nothing: report and fit the --from files"
    )
    parser.add_argument("--scratch", help="folder for the tables and runs (default: a new temporary folder)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (tables are reused from it)"
    )
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between readings of /proc")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results: list[dict] = []
    for path in args.merge:
        results += json.loads(Path(path).read_text())["results"]
    if not args.fit_only:
        sizes = [parse_size(text) for text in (QUICK if args.quick else args.sizes).split(",")]
        modes = ["local", "dask"] if args.mode == "both" else [args.mode]
        scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="recsys-scale-"))
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            for size in sizes:
                table = scratch / "tables" / f"{size[0]}x{size[1]}x{size[2]}-seed{args.seed}.parquet"
                if not table.exists():
                    table.parent.mkdir(parents=True, exist_ok=True)
                    started = time.perf_counter()
                    generate_table(*size, table, seed=args.seed)
                    print(
                        f"table {size[0]:,} x {size[1]:,} x {size[2]:,}: generated in "
                        f"{time.perf_counter() - started:.0f} s, {table.stat().st_size / GIB:.2f} GiB",
                        flush=True,
                    )
                for mode in modes:
                    result = run_once(scratch, table, size, mode, args.poll)
                    results.append(result)
                    status_text = "failed in " + result["failed"]["phase"] if "failed" in result else "done"
                    print(
                        f"{mode} {size[0]:,} x {size[1]:,} x {size[2]:,}: {status_text}, "
                        f"{result['wall_s']:.0f} s, flow peak {gib(result['peak_bytes']['flow'])} GiB",
                        flush=True,
                    )
                    if args.output:  # after every run: a long series keeps what it measured
                        Path(args.output).write_text(json.dumps({"results": results}, indent=1))
        finally:
            if not args.keep:
                shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{os.cpu_count()} cores; {os.getloadavg()[0]:.1f} load (1 min) at the end")
    print_tables(results)
    print()
    print_ratios(results)
    model = fit_model(results)
    print_model(model)
    if args.output:
        Path(args.output).write_text(json.dumps({"results": results, "model": model}, indent=1))


if __name__ == "__main__":
    main()
