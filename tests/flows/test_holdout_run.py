"""A run with a supplied holdout table publishes ranking metrics that a from-scratch
computation over the published recommendations reproduces."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys.data import generate_interactions


@pytest.fixture(scope="module")
def run(prefect_harness, tmp_path_factory):
    from flows.pipeline import pipeline_flow

    root = tmp_path_factory.mktemp("holdout")
    frame = generate_interactions(n_users=250, n_items=120, n_clusters=5, string_ids=True, seed=8)
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(frame)) < 0.2
    frame[~test_mask].to_parquet(root / "train.parquet", index=False)
    test = frame[test_mask].copy()
    extra = pd.DataFrame(  # a user and an item training never saw
        {"user_id": ["user-new", "user-000001"], "item_id": ["item-000001", "item-new"]}
    )
    test = pd.concat([test[["user_id", "item_id"]], extra], ignore_index=True)
    test.to_parquet(root / "test.parquet", index=False)
    config = {
        "seed": 1,
        "models": [{"name": "als", "type": "als", "params": {"factors": 16, "iterations": 8}}],
        "index": {"n_trees": 10},
        "recommend": {"top_n": 20},
        "evaluate": {"k": [5, 20], "sample_users": 100, "sample_items": 100},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = pipeline_flow(
        config_path=str(root / "c.yaml"),
        interactions=str(root / "train.parquet"),
        holdout=str(root / "test.parquet"),
        output=str(root / "out"),
    )
    return root, manifest, frame[~test_mask], test


def test_ranking_metrics_match_the_published_recommendations(run):
    root, manifest, train, test = run
    entry = manifest["models"]["als"]
    recs = pd.read_parquet(
        root / "out/runs" / manifest["run_id"] / entry["outputs"]["recommendations"]["path"]
    )
    train_users, train_items = set(train["user_id"]), set(train["item_id"])
    seen = set(zip(train["user_id"], train["item_id"], strict=True))
    truth = {}
    for user, item in zip(test["user_id"], test["item_id"], strict=True):
        if user in train_users and item in train_items and (user, item) not in seen:
            truth.setdefault(user, set()).add(item)
    lists = recs.sort_values("rank").groupby("user_id")["item_id"].apply(list).to_dict()
    for k in (5, 20):
        recalls, ndcgs = [], []
        for user, items in truth.items():
            hits = [1 if item in items else 0 for item in lists[user][:k]]
            recalls.append(sum(hits) / len(items))
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            ndcgs.append(dcg / sum(1 / math.log2(r + 2) for r in range(min(k, len(items)))))
        ranking = entry["evaluation"]["ranking"]
        assert ranking[f"recall@{k}"] == pytest.approx(np.mean(recalls), abs=1e-5)
        assert ranking[f"ndcg@{k}"] == pytest.approx(np.mean(ndcgs), abs=1e-5)
        assert ranking["users"] == len(truth)
    exact = entry["evaluation"]["ranking_exact"]
    assert exact["recall@20"] == pytest.approx(entry["evaluation"]["ranking"]["recall@20"], abs=0.02)


def test_holdout_counts_unknown_users_and_items(run):
    _, manifest, _, test = run
    holdout = manifest["holdout"]
    assert holdout["method"] == "supplied"
    assert holdout["pairs"] == len(test)
    assert holdout["unknown_users"] >= 1 and holdout["unknown_items"] >= 1
    assert holdout["pairs_evaluated"] + holdout["pairs_of_unknown_users"] + holdout[
        "pairs_of_unknown_items"
    ] + holdout["pairs_seen_in_training"] == len(test)
