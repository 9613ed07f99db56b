"""`recsys run --models als` retrains one model and carries the others over; a re-run
with the same run id replaces that run whole with the same content."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from recsys.data import generate_interactions


@pytest.fixture(scope="module")
def setup(prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    config = {
        "seed": 3,
        "models": [
            {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
            {"name": "bpr", "type": "bpr", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
        ],
        "index": {"n_trees": 5, "backend": "annoy"},  # auto would choose by measured speed
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "evaluate": {"sample_users": 50, "sample_items": 50},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=3, seed=4)
    frame.to_csv(root / "events.csv", index=False)
    return root


def _run(root, **kwargs):
    from flows.pipeline import pipeline_flow

    return pipeline_flow(
        config_path=str(root / "c.yaml"),
        interactions=str(root / "events.csv"),
        output=str(root / "out"),
        **kwargs,
    )


def test_retrain_one_model_carries_the_other(setup):
    first = _run(setup, run_id="r1")
    second = _run(setup, run_id="r2", models=["als"])
    out = setup / "out"
    assert (out / "CURRENT").read_text().strip() == "r2"
    assert "carried_over_from" not in second["models"]["als"]
    assert second["models"]["bpr"]["carried_over_from"] == "r1"
    bpr_old = out / "runs/r1" / first["models"]["bpr"]["outputs"]["recommendations"]["path"]
    bpr_new = out / "runs/r2" / second["models"]["bpr"]["outputs"]["recommendations"]["path"]
    parts = [path.name for path in sorted(bpr_old.iterdir())]
    assert parts and [path.name for path in sorted(bpr_new.iterdir())] == parts
    assert all((bpr_new / part).read_bytes() == (bpr_old / part).read_bytes() for part in parts)
    assert set(pd.read_parquet(bpr_new)["run_id"]) == {"r1"}  # rows say which run made them
    assert set(pd.read_parquet(out / "runs/r2/models/als/recommendations.parquet")["run_id"]) == {"r2"}
    # integer ids from CSV stay integers
    assert pd.read_parquet(bpr_new)["user_id"].dtype == "int64"


def test_same_run_id_twice_gives_the_same_files(setup):
    out = setup / "out"
    first = _run(setup, run_id="again")
    files = {
        p.relative_to(out): p.read_bytes()
        for p in (out / "runs/again").rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "report.html")  # these hold timings
    }
    second = _run(setup, run_id="again")
    again = {
        p.relative_to(out): p.read_bytes()
        for p in (out / "runs/again").rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "report.html")  # these hold timings
    }
    assert again.keys() == files.keys()
    different = [str(k) for k in files if files[k] != again[k]]
    assert different == []
    manifest = json.loads((out / "runs/again/manifest.json").read_text())
    assert manifest["config_sha256"] == first["config_sha256"] == second["config_sha256"]
    assert (
        manifest["models"]["als"]["indices"]["dot"]["files"]["annoy"]["sha256"]
        == first["models"]["als"]["indices"]["dot"]["files"]["annoy"]["sha256"]
    )
