"""A tuned blend of ALS and spectral against its parts, on held-out interactions.

For each data set (MovieLens ml-latest-small, ratings >= 3.5 as implicit feedback, and a
table of ``recsys generate``) the script:

1. holds out 20% of each user's items once (``split_table``, method random, seed 42) and
   writes ``train.parquet`` and ``test.parquet``; nothing after this step reads the test
   table except the final ``recsys run --holdout``;
2. writes a config with ``popular``, ``als``, ``spectral``, ``blend`` (als 1.0, spectral
   1.0) and ``tuned`` (the same blend, whose weights are searched), ``evaluate.split:
   none``;
3. optionally (``--tune-parts N``) tunes ALS's and spectral's params first: ``recsys tune
   --all`` on the training table; ``blend`` is put back to 1:1 over the tuned parts;
4. ``recsys tune --model tuned --interactions train.parquet``: the blend's weights, on a
   validation split carved from the training table only;
5. ``recsys run --interactions train.parquet --holdout test.parquet`` with the tuned
   config, and prints recall@20 and ndcg@20 of every model's published lists (the
   manifest's ``evaluation.ranking``) with the lift over the popular model.

    python benchmarks/blend.py [--ratings ../shared/data/ml-latest-small/ratings.csv]
                               [--users 20000 --items 10000] [--trials 20]
                               [--tune-parts 0] [--skip-movielens] [--skip-synthetic]
                               [--keep DIR]

Every command run is printed before the table, so each step can be repeated by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RECSYS = str(Path(sys.executable).parent / "recsys")
SEED = 42
K = 20


def config_for(spectral_factors: int) -> dict[str, Any]:
    return {
        "seed": SEED,
        "models": [
            {"name": "popular", "type": "popular"},
            {
                "name": "als",
                "type": "als",
                "params": {"factors": 256, "regularization": 50.0, "alpha": 14.0, "iterations": 20},
            },
            {"name": "spectral", "type": "spectral", "params": {"factors": spectral_factors}},
            {"name": "blend", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 1.0}}},
            {"name": "tuned", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 1.0}}},
        ],
        "index": {"backend": "exact"},
        "recommend": {"top_n": K},
        "similar_items": {"top_n": 10},
        "evaluate": {"k": [10, K], "split": {"method": "none"}, "sample_users": 200, "sample_items": 200},
    }


def sh(command: list[str], log: list[str]) -> str:
    log.append(shlex.join(command))
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(command)}")
    log[-1] += f"   # {time.perf_counter() - started:.0f} s"
    return done.stdout


def split(table: Path, folder: Path, log: list[str]) -> tuple[Path, Path]:
    """20% of each user's items held out once, at random (seed 42)."""
    from recsys.data.splits import split_table
    from recsys.stages.prepare import validate_table
    from recsys.storage.tables import write_interactions_table

    train, test = split_table(validate_table(table, keep=False), "random", 0.2, seed=SEED)
    paths = []
    for part, name in ((train, "train"), (test, "test")):
        path = folder / f"{name}.parquet"
        frame = pd.DataFrame({"user_id": part.users, "item_id": part.items, "weight": part.weights})
        write_interactions_table(frame, path)
        paths.append(path)
    log.append(
        f"# split_table({table.name}, 'random', 0.2, seed={SEED}) -> train.parquet ({len(train)} rows), "
        f"test.parquet ({len(test)} rows)"
    )
    return paths[0], paths[1]


def measure(name: str, table: Path, folder: Path, args: argparse.Namespace, spectral_factors: int) -> None:
    log: list[str] = []
    started = time.perf_counter()
    train, test = split(table, folder, log)
    config = folder / "blend.yaml"
    config.write_text(yaml.safe_dump(config_for(spectral_factors), sort_keys=False))
    log.append(f"# {config.name}: {json.dumps(config_for(spectral_factors)['models'])}")
    if args.tune_parts:
        parts = folder / "parts-tuned.yaml"
        sh(
            [
                RECSYS,
                "tune",
                "--quiet",
                "--all",
                "--config",
                str(config),
                "--interactions",
                str(train),
                "--trials",
                str(args.tune_parts),
                "--output",
                str(parts),
                "--force",
            ],
            log,
        )
        tuned_parts = yaml.safe_load(parts.read_text())
        for model in tuned_parts["models"]:
            if model["type"] == "blend":  # blends start again from 1:1 over the tuned parts
                model["params"]["parts"] = {"als": 1.0, "spectral": 1.0}
        config = folder / "parts-tuned-1to1.yaml"
        config.write_text(yaml.safe_dump(tuned_parts, sort_keys=False))
        log.append(f"# {config.name}: {parts.name} with both blends at als 1.0, spectral 1.0")
    tuned = folder / "tuned.yaml"
    sh(
        [
            RECSYS,
            "tune",
            "--quiet",
            "--model",
            "tuned",
            "--config",
            str(config),
            "--interactions",
            str(train),
            "--trials",
            str(args.trials),
            "--output",
            str(tuned),
            "--force",
        ],
        log,
    )
    out = sh(
        [
            RECSYS,
            "run",
            "--quiet",
            "--json",
            "--config",
            str(tuned),
            "--interactions",
            str(train),
            "--holdout",
            str(test),
            "--output",
            str(folder / "out"),
        ],
        log,
    )
    manifest = json.loads(out)["manifest"]
    wall = time.perf_counter() - started

    inp, holdout = manifest["input"], manifest["holdout"]
    print(
        f"\n### {name}: training {inp['users']} users x {inp['items']} items, {inp['interactions']} "
        f"interactions; holdout {holdout['pairs_evaluated']} pairs of {holdout['users_evaluated']} users "
        f"(all steps {wall / 60:.1f} min)\n"
    )
    for line in log:
        print(f"    {line}")
    models = manifest["models"]
    base = models["popular"]["evaluation"]["ranking"]
    print(f"\n| model | params | recall@{K} | ndcg@{K} | lift (recall) | lift (ndcg) |")
    print("|---|---|---|---|---|---|")
    for model_name, model in models.items():
        ranking = model["evaluation"]["ranking"]
        params = model.get("params") or {}
        if model["type"] == "blend":
            shown = ", ".join(f"{part} {weight:.3g}" for part, weight in params["parts"].items())
        else:
            shown = (
                ", ".join(
                    f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                    for key, value in params.items()
                    if key not in ("random_state", "num_threads", "oversampling", "power_iterations")
                )
                or "-"
            )
        recall, ndcg = ranking[f"recall@{K}"], ranking[f"ndcg@{K}"]
        print(
            f"| {model_name} | {shown} | {recall:.4f} | {ndcg:.4f} | x{recall / base[f'recall@{K}']:.2f} "
            f"| x{ndcg / base[f'ndcg@{K}']:.2f} |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default="../shared/data/ml-latest-small/ratings.csv")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=20, help="blend weight trials (recsys tune --model)")
    parser.add_argument(
        "--tune-parts",
        type=int,
        default=0,
        help="first tune ALS and spectral (recsys tune --all), N trials each",
    )
    parser.add_argument("--skip-movielens", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument(
        "--keep", help="folder to keep the tables, configs and runs in (default: a temporary one)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp).resolve()
        if not args.skip_movielens:
            folder = root / "movielens"
            folder.mkdir(parents=True, exist_ok=True)
            table = folder / "movielens.parquet"
            log: list[str] = []
            sh(
                [
                    RECSYS,
                    "import",
                    "--quiet",
                    "movielens",
                    args.ratings,
                    "--output",
                    str(table),
                    "--min-rating",
                    "3.5",
                    "--weighting",
                    "binary",
                    "--force",
                ],
                log,
            )
            print(f"    {log[0]}")
            measure(f"MovieLens {Path(args.ratings).parent.name}", table, folder, args, spectral_factors=256)
        if not args.skip_synthetic:
            folder = root / "synthetic"
            folder.mkdir(parents=True, exist_ok=True)
            table = folder / "synthetic.parquet"
            log = []
            sh(
                [
                    RECSYS,
                    "generate",
                    "--quiet",
                    "--output",
                    str(table),
                    "--users",
                    str(args.users),
                    "--items",
                    str(args.items),
                    "--clusters",
                    "40",
                    "--seed",
                    "5",
                    "--force",
                ],
                log,
            )
            print(f"    {log[0]}")
            measure(
                f"synthetic {args.users} x {args.items} (recsys generate, 40 clusters, seed 5)",
                table,
                folder,
                args,
                spectral_factors=256,
            )


if __name__ == "__main__":
    main()
