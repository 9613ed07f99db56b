"""report.html: published with the run, self-contained, with the manifest's figures."""

from __future__ import annotations

import pytest
import yaml

from recsys.data import generate_interactions


@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory):
    from flows.pipeline import pipeline_flow

    root = tmp_path_factory.mktemp("report")
    generate_interactions(n_users=200, n_items=100, n_clusters=4, seed=2).to_parquet(root / "t.parquet")
    config = {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 4}},
            {"name": "lmf", "type": "lmf", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
        ],
        "index": {"n_trees": 5},
        "recommend": {"top_n": 10},
        "similar_items": {"top_n": 5},
        "evaluate": {"k": [5, 10], "split": {"method": "random"}, "sample_users": 50, "sample_items": 50},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = pipeline_flow(
        config_path=str(root / "c.yaml"), interactions=str(root / "t.parquet"), output=str(root / "out")
    )
    return root / "out" / "runs" / manifest["run_id"], manifest


def test_report_is_published_and_self_contained(published):
    run_dir, manifest = published
    assert manifest["report"] == "report.html"
    text = (run_dir / "report.html").read_text()
    assert "http" not in text and "<script" not in text and "<link " not in text
    assert text.count('<img alt="plot" src="data:image/png;base64,') == 4
    for name in ("als", "lmf"):
        assert f'<td class="text">{name}</td>' in text
        recall = manifest["models"][name]["evaluation"]["ranking"]["recall@10"]
        assert f"{recall:.4f}" in text
    assert len(text) < 1_000_000


def test_report_without_holdout_says_so(published, tmp_path):
    from recsys.report import render_report

    run_dir, manifest = published
    stripped = {**manifest, "holdout": None}
    stripped["models"] = {
        name: {**model, "evaluation": {"ann": model["evaluation"]["ann"]}}
        for name, model in manifest["models"].items()
    }
    text = render_report(run_dir, stripped)
    assert "No held-out interactions" in text
    assert text.count("data:image/png;base64,") == 3
