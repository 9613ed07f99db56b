"""Ranking metrics and tuned Annoy settings on MovieLens ml-latest-small, per model.

Imports ratings.csv (ratings >= 3.5 as implicit feedback), runs the pipeline flow with
configs/movielens-annoy.yaml (random 20% per-user holdout, Annoy serving every index with
search_k tuned to recall 0.95), and prints the ranking metrics of the published lists and
of exact top-N, and the search_k chosen per index with the recall and speed reached.

    python benchmarks/movielens.py [--ratings ../shared/data/ml-latest-small/ratings.csv]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default="../shared/data/ml-latest-small/ratings.csv")
    parser.add_argument("--config", default="configs/movielens-annoy.yaml")
    args = parser.parse_args()

    from flows.settings import apply_defaults

    apply_defaults()
    from flows.pipeline import pipeline_flow
    from recsys import storage
    from recsys.storage.importers import read_source, to_implicit

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "movielens.parquet"
        frame = to_implicit(read_source("movielens", args.ratings), min_rating=3.5, weighting="binary")
        storage.write_interactions_table(frame, table)
        manifest = pipeline_flow(
            config_path=args.config, interactions=str(table), output=str(Path(tmp) / "out")
        )

    inp, holdout = manifest["input"], manifest["holdout"]
    print(
        f"\n{args.ratings}: {len(frame)} ratings >= 3.5; "
        f"training {inp['users']} users x {inp['items']} items, "
        f"{inp['interactions']} interactions; holdout {holdout['pairs_evaluated']} pairs of "
        f"{holdout['users_evaluated']} users ({holdout['pairs_of_unknown_items']} pairs of unseen items)"
    )
    ks = sorted(
        {
            int(key.split("@")[1])
            for m in manifest["models"].values()
            for key in m["evaluation"]["ranking"]
            if "@" in key
        }
    )
    metrics = [f"{name}@{k}" for k in ks for name in ("recall", "ndcg", "map", "coverage")]
    print("\n| model | lists | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    for name, model in manifest["models"].items():
        for label, kind in (("published", "ranking"), ("exact", "ranking_exact")):
            values = " | ".join(f"{model['evaluation'][kind][m]:.4f}" for m in metrics)
            print(f"| {name} | {label} | {values} |")
    print("\n| model | index | strategy | setting | recall@k vs exact | Annoy q/s | exact q/s | served by |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model in manifest["models"].items():
        for metric, entry in model["indices"].items():
            for strategy, sweep in entry.get("tuning", {}).items():
                setting = sweep["setting"]
                chosen = sweep[setting]
                point = next((p for p in sweep["curve"] if p[setting] == chosen), sweep["curve"][-1])
                served = entry["backend"] + (f" ({setting} {entry[setting]})" if setting in entry else "")
                print(
                    f"| {name} | {metric} | {strategy} | {setting} {point[setting]} | "
                    f"{point['recall_at_k']:.3f} | {point['queries_per_second']:.0f} | "
                    f"{sweep['exact_queries_per_second']:.0f} | {served} |"
                )


if __name__ == "__main__":
    main()
