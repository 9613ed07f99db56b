"""`recsys run --holdout` with the spectral model at 1024 factors and the popularity
baseline: the ranking metrics in the manifest equal a from-scratch computation over the
published lists, and the CLI shows each model's lift over the baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from recsys.cli import main
from recsys.data import generate_interactions


def _from_scratch(lists: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, k: int) -> dict[str, float]:
    """recall@k and ndcg@k over the users with a held-out item that training knows."""
    known_users, known_items = set(train["user_id"]), set(train["item_id"])
    seen = set(zip(train["user_id"], train["item_id"], strict=True))
    held = test[test["user_id"].isin(known_users) & test["item_id"].isin(known_items)]
    held = held[[(u, i) not in seen for u, i in zip(held["user_id"], held["item_id"], strict=True)]]
    relevant = held.groupby("user_id")["item_id"].apply(set)
    top = lists[lists["rank"] <= k].sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].apply(list)
    recalls, ndcgs = [], []
    for user, items in relevant.items():
        ranked = top.get(user, [])
        gains = [1.0 / np.log2(rank + 2) for rank, item in enumerate(ranked) if item in items]
        ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(k, len(items))))
        recalls.append(len(gains) / len(items))
        ndcgs.append(sum(gains) / ideal)
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs))}


def test_spectral_1024_and_popular_through_recsys_run(prefect_harness, tmp_path, capsys):
    frame = generate_interactions(n_users=1500, n_items=1200, n_clusters=10, seed=21)
    rng = np.random.default_rng(0)
    test_rows = rng.random(len(frame)) < 0.2
    train, test = frame[~test_rows], frame[test_rows]
    train.to_parquet(tmp_path / "train.parquet", index=False)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    config = {
        "models": [
            {"name": "spectral", "type": "spectral", "params": {"factors": 1024}},
            {"name": "popular", "type": "popular"},
        ],
        "index": {"backend": "exact"},
        "recommend": {"top_n": 20},
        "similar_items": {"top_n": 10},
        "evaluate": {"k": [10, 20], "sample_users": 200, "sample_items": 200},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    argv = ["run", "--config", str(tmp_path / "c.yaml"), "--interactions", str(tmp_path / "train.parquet")]
    code = main([*argv, "--holdout", str(tmp_path / "test.parquet"), "--output", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    import recsys

    run = recsys.open_run(tmp_path / "out")
    assert run.manifest.models["spectral"].dim == 1024
    figures = {}
    for name in ("spectral", "popular"):
        ranking = run.manifest.models[name].evaluation.ranking
        for k in (10, 20):
            expected = _from_scratch(run.recommendations(name), train, test, k)
            for key, value in expected.items():
                assert abs(ranking[key] - value) < 1e-6, (name, key, ranking[key], value)
        figures[name] = ranking["ndcg@20"]
    assert figures["spectral"] > 2 * figures["popular"]  # the clusters are there to be found
    lift = f"x{figures['spectral'] / figures['popular']:.2f}"
    assert "lift_vs_popular" in printed and lift in printed
