"""What ``index.backend: auto`` chooses by whole cost, against each fixed backend, in one run.

Generates one interactions table (``--users`` x ``--items``, taste clusters, Zipf
popularity), then runs the pipeline once per backend choice (``auto``, ``annoy``,
``hnswlib``, ``faiss``, ``exact``; the ones whose library is missing are left out) with
one ALS model and the same seed, and reads each run's manifest: the index stage's
seconds split into build (the files' build seconds) and probe (the rest: recall/speed
sweeps, the build estimates, exact search's baseline), the serving seconds (the
recommend and similar_items stages), and the total (index stage + serving). Ratios are
each choice's total over exact search's, measured in the same run. ``auto``'s reasons
(the three times of its choice and exact search's) are printed per index.

    python -m benchmarks.auto_cost --users 12000 --items 150000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import recsys
from recsys.data import generate_interactions
from recsys.index.registry import missing_extra

CHOICES = ("auto", "exact", "faiss", "hnswlib", "annoy")


def measure(frame, backend: str, args, root: Path) -> dict:
    config = {
        "seed": 7,
        "models": [{"name": "als", "type": "als", "params": {"factors": args.factors, "iterations": 5}}],
        "index": {"backend": backend},
        "recommend": {"top_n": args.top_n},
        "similar_items": {"top_n": args.top_n},
    }
    run = recsys.run_pipeline(frame, config, output=root / backend, run_id="bench")
    model = run.manifest.models["als"]
    timings = model.timings
    entries = {
        metric: entry.model_dump(mode="json", exclude_none=True) for metric, entry in model.indices.items()
    }
    build = sum(f["build_seconds"] for e in entries.values() for f in e.get("files", {}).values())
    index = timings.get("index", 0.0)
    serve = timings.get("recommend", 0.0) + timings.get("similar_items", 0.0)
    return {
        "backend": backend,
        "build": build,
        "probe": max(index - build, 0.0),
        "serve": serve,
        "total": index + serve,
        "served_by": ", ".join(f"{metric}: {e['backend']}" for metric, e in sorted(entries.items())),
        "reasons": {metric: e["reason"] for metric, e in entries.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=12_000)
    parser.add_argument("--items", type=int, default=150_000)
    parser.add_argument("--per-user", type=float, default=30.0, help="mean interactions per user")
    parser.add_argument(
        "--popularity",
        type=float,
        default=1.0,
        help="exponent of the items' Zipf popularity (lower: flatter, more of the catalog touched)",
    )
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--backends", default=",".join(CHOICES), help="comma-separated choices to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    frame = generate_interactions(
        n_users=args.users,
        n_items=args.items,
        mean_items_per_user=args.per_user,
        popularity_exponent=args.popularity,
        seed=7,
    )
    print(
        f"{args.users:,} users x {args.items:,} items ({frame['item_id'].nunique():,} with interactions), "
        f"{len(frame):,} interactions, {args.factors} factors",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="recsys-auto-cost-") as tmp:
        for backend in args.backends.split(","):
            if backend not in ("auto", "exact") and missing_extra(backend) is not None:
                print(f"{backend}: not installed, left out")
                continue
            rows.append(measure(frame, backend, args, Path(tmp)))
            row = rows[-1]
            print(
                f"{backend}: build {row['build']:.1f} s, probe {row['probe']:.1f} s, "
                f"serve {row['serve']:.1f} s, total {row['total']:.1f} s ({row['served_by']})",
                flush=True,
            )
    exact = next((row["total"] for row in rows if row["backend"] == "exact"), None)
    print("\n| index.backend | build s | probe s | serve s | total s | vs exact | served by |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['total'] / exact:.2f}x" if exact else "-"
        print(
            f"| {row['backend']} | {row['build']:.1f} | {row['probe']:.1f} | {row['serve']:.1f} | "
            f"{row['total']:.1f} | {ratio} | {row['served_by']} |"
        )
    for row in rows:
        if row["backend"] == "auto":
            for metric, reason in sorted(row["reasons"].items()):
                print(f"auto, {metric} index: {reason}")


if __name__ == "__main__":
    main()
