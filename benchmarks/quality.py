"""Ranking quality per model type, published lists against exact top-N, with fit time:
on MovieLens ml-latest-small (ratings >= 3.5 as implicit feedback) and on a larger
synthetic set, each with a random 20% per-user holdout (the split's models are measured;
``evaluate.refit: false``, so nothing is trained twice).

    python -m benchmarks.quality [--ratings ../shared/data/ml-latest-small/ratings.csv]
                                 [--synthetic-users 30000 --synthetic-items 10000]
                                 [--skip-synthetic] [--models als,spectral,...]

Prints one markdown table per data set: fit seconds, recall@k and ndcg@k of the
published lists (as the chosen index serves them) and of exact top-N, and each model's
lift in ndcg over the popularity baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS: dict[str, dict[str, Any]] = {
    "popular": {"type": "popular"},
    "als-default": {
        "type": "als",
        "params": {"factors": 64, "regularization": 0.05, "alpha": 2.0, "iterations": 15},
    },
    "als-strong": {
        "type": "als",
        "params": {"factors": 256, "regularization": 50.0, "alpha": 20.0, "iterations": 15},
    },
    "bpr": {
        "type": "bpr",
        "params": {
            "factors": 64,
            "learning_rate": 0.05,
            "regularization": 0.01,
            "iterations": 100,
            "num_threads": 1,
        },
    },
    "lmf": {
        "type": "lmf",
        "params": {
            "factors": 32,
            "learning_rate": 1.0,
            "regularization": 0.6,
            "iterations": 30,
            "num_threads": 1,
        },
    },
    "spectral": {"type": "spectral", "params": {"factors": 256, "spectral_power": 1.0}},
    "blend": {"type": "blend", "params": {"parts": {"als-strong": 1.0, "spectral": 1.0}}},
}
"""``blend`` blends two of the others: measure it with them (``--models als-strong,spectral,blend``)."""


def measure(name: str, table: Path, models: list[str], k: int, spectral_factors: int) -> None:
    from recsys.config import parse_config
    from recsys.stages.runner import run_local

    chosen = []
    for model in models:
        spec = {"name": model, **MODELS[model]}
        if spec["type"] == "spectral":
            spec["params"] = {**spec["params"], "factors": spectral_factors}
        chosen.append(spec)
    config = parse_config(
        {
            "models": chosen,
            "index": {"backend": "auto"},
            "recommend": {"top_n": k},
            "similar_items": {"top_n": 10},
            "evaluate": {
                "k": [10, k],
                "split": {"method": "random", "fraction": 0.2},
                "refit": False,
                "sample_users": 500,
                "sample_items": 500,
            },
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = run_local(config, table, Path(tmp) / "out")
        wall = time.perf_counter() - started
    inp = manifest.input
    print(
        f"\n### {name}: {inp.users} users x {inp.items} items, {inp.interactions} training interactions, "
        f"{manifest.holdout.pairs_evaluated} held-out pairs of {manifest.holdout.users_evaluated} users "
        f"(whole run {wall:.0f} s)\n"
    )
    popular = next((m.evaluation.ranking for m in manifest.models.values() if m.type == "popular"), None)
    print(
        f"| model | params | fit s | recall@{k} | ndcg@{k} | exact recall@{k} | exact ndcg@{k} "
        "| lift (ndcg) | rec index |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model_name, model in manifest.models.items():
        ranking, exact = model.evaluation.ranking or {}, model.evaluation.ranking_exact or {}
        params = {
            key: value for key, value in model.params.items() if key not in ("random_state", "num_threads")
        }
        lift = f"x{ranking[f'ndcg@{k}'] / popular[f'ndcg@{k}']:.2f}" if popular else "-"
        entry = model.indices["dot"]
        served = entry.backend + (f" {entry.setting[0]} {entry.setting[1]}" if entry.setting else "")
        print(
            f"| {model_name} | {params or '-'} | {model.timings['fit']:.1f} | {ranking[f'recall@{k}']:.4f} | "
            f"{ranking[f'ndcg@{k}']:.4f} | {exact[f'recall@{k}']:.4f} | {exact[f'ndcg@{k}']:.4f} | "
            f"{lift} | {served} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default="../shared/data/ml-latest-small/ratings.csv")
    parser.add_argument("--synthetic-users", type=int, default=30_000)
    parser.add_argument("--synthetic-items", type=int, default=10_000)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    from recsys import storage
    from recsys.data import generate_interactions
    from recsys.storage.importers import read_source, to_implicit

    with tempfile.TemporaryDirectory() as tmp:
        if Path(args.ratings).exists():
            table = Path(tmp) / "movielens.parquet"
            frame = to_implicit(read_source("movielens", args.ratings), min_rating=3.5, weighting="binary")
            storage.write_interactions_table(frame, table)
            measure(
                f"MovieLens {Path(args.ratings).parent.name}", table, models, args.k, spectral_factors=256
            )
        else:
            print(f"{args.ratings}: not found; MovieLens skipped")
        if not args.skip_synthetic:
            table = Path(tmp) / "synthetic.parquet"
            frame = generate_interactions(
                n_users=args.synthetic_users, n_items=args.synthetic_items, n_clusters=40, seed=5
            )
            storage.write_interactions_table(frame, table)
            measure(
                f"synthetic ({args.synthetic_users} x {args.synthetic_items}, 40 taste clusters)",
                table,
                models,
                args.k,
                spectral_factors=512,
            )


if __name__ == "__main__":
    main()
