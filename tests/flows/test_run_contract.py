"""End to end on Prefect's test harness: a table the project never saw (string ids),
published as the contract says; a bad table publishes nothing."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from recsys.data import generate_interactions
from recsys.errors import InputError
from recsys.index import BACKENDS

TOP_N = 10


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "seed": 7,
                "models": [
                    {"name": "als", "type": "als", "params": {"factors": 16, "iterations": 5}},
                    {
                        "name": "bpr",
                        "type": "bpr",
                        "params": {"factors": 16, "iterations": 20, "num_threads": 1},
                    },
                ],
                "index": {"n_trees": 10, "auto_min_items": 0},  # probe Annoy on this small catalog
                "recommend": {"top_n": TOP_N},
                "similar_items": {"top_n": TOP_N},
                "evaluate": {"k": 10, "sample_users": 200, "sample_items": 150},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def string_table(tmp_path_factory):
    frame = generate_interactions(n_users=300, n_items=150, n_clusters=6, string_ids=True, seed=11)
    path = tmp_path_factory.mktemp("input") / "events.parquet"
    frame.to_parquet(path, index=False)
    return path, frame


@pytest.fixture(scope="module")
def published(prefect_harness, config_path, string_table, tmp_path_factory):
    from flows.pipeline import pipeline_flow

    root = tmp_path_factory.mktemp("out")
    manifest = pipeline_flow(
        config_path=str(config_path), interactions=str(string_table[0]), output=str(root)
    )
    return root, manifest


def test_run_folder_manifest_and_current(published, string_table):
    root, manifest = published
    run_dir = root / "runs" / manifest["run_id"]
    assert (root / "CURRENT").read_text().strip() == manifest["run_id"]
    assert (run_dir / "_SUCCESS").exists()
    on_disk = json.loads((run_dir / "manifest.json").read_text())
    assert on_disk == manifest
    assert len(manifest["config_sha256"]) == 64
    assert manifest["input"]["rows"] == len(string_table[1])
    assert manifest["input"]["users"] == string_table[1]["user_id"].nunique()
    assert manifest["input"]["items"] == string_table[1]["item_id"].nunique()
    assert manifest["input"]["user_id_type"] == "str"
    assert set(manifest["models"]) == {"als", "bpr"}
    for entry in manifest["models"].values():
        assert set(entry["timings"]) >= {"fit", "index", "recommend", "similar_items", "evaluate"}
        for metric in ("dot", "angular"):
            index = entry["indices"][metric]
            annoy = index["files"]["annoy"]
            assert (run_dir / annoy["path"]).stat().st_size == annoy["size_bytes"]
            assert annoy["params"]["n_trees"] == 10 and len(annoy["sha256"]) == 64
            assert index["backend"] in BACKENDS and index["reason"]
            tuning = index["tuning"]["annoy"]
            assert tuning["target_recall"] == 0.95 and tuning["curve"]
            if index["backend"] == "annoy":
                assert index["search_k"] == tuning["search_k"]
            if index["backend"] != "exact":  # the served strategy's own sweep chose its setting
                served = index["tuning"][index["backend"]]
                assert served[served["setting"]] == index[served["setting"]]
            if metric == "dot":  # angular candidates re-ranked by dot: measured too
                assert index["tuning"]["annoy-rerank"]["curve"]
        for output in entry["outputs"].values():
            assert not output["path"].startswith("/")
            assert (run_dir / output["path"]).is_dir()
            assert [part["path"] for part in output["parts"]] == [
                f"{output['path']}/{path.name}" for path in sorted((run_dir / output["path"]).iterdir())
            ]
    # nothing hidden left behind
    assert not [p.name for p in (root / "runs").iterdir() if p.name.startswith(".")]


def test_recommendations_meet_the_contract(published, string_table):
    root, manifest = published
    run_dir = root / "runs" / manifest["run_id"]
    frame = string_table[1]
    seen = set(zip(frame["user_id"], frame["item_id"], strict=True))
    for name, entry in manifest["models"].items():
        table = pq.read_table(run_dir / entry["outputs"]["recommendations"]["path"])
        assert table.schema.field("user_id").type == "string"
        assert table.schema.field("score").type == "float"
        recs = table.to_pandas()
        assert set(recs["model"]) == {name} and set(recs["run_id"]) == {manifest["run_id"]}
        assert recs.groupby("user_id").size().eq(TOP_N).all()
        assert recs["user_id"].nunique() == frame["user_id"].nunique()
        assert (recs.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, TOP_N + 1)))).all()
        ordered = recs.sort_values(["user_id", "rank"])
        assert (ordered.groupby("user_id")["score"].diff().dropna() <= 1e-6).all()
        assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"], strict=True))
        assert manifest["models"][name]["rows"]["recommendations"] == len(recs)


def test_similar_items_never_the_item_itself(published):
    root, manifest = published
    run_dir = root / "runs" / manifest["run_id"]
    for entry in manifest["models"].values():
        sims = pd.read_parquet(run_dir / entry["outputs"]["similar_items"]["path"])
        assert not (sims["item_id"] == sims["similar_item_id"]).any()
        assert sims.groupby("item_id").size().eq(TOP_N).all()
        assert not sims.duplicated(["item_id", "similar_item_id"]).any()


def test_recall_figures_in_manifest(published):
    _, manifest = published
    for entry in manifest["models"].values():
        ann = entry["evaluation"]["ann"]
        assert ann["recommendations"]["metric"] == "dot"
        assert ann["similar_items"]["metric"] == "angular"
        for figures in ann.values():
            assert figures["recall_at_k"] >= 0.9
            assert figures["queries_per_second"] > 0 and figures["queries"] > 0


def test_table_without_item_id_publishes_nothing(published, config_path, tmp_path):
    from flows.pipeline import pipeline_flow

    root, manifest = published
    before = sorted(p.name for p in (root / "runs").iterdir())
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"user_id": ["a", "b"], "weight": [1.0, 2.0]}).to_parquet(bad)
    with pytest.raises(InputError, match="missing column item_id"):
        pipeline_flow(config_path=str(config_path), interactions=str(bad), output=str(root))
    assert (root / "CURRENT").read_text().strip() == manifest["run_id"]
    assert sorted(p.name for p in (root / "runs").iterdir()) == before
