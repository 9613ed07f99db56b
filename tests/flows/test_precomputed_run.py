"""A run of precomputed vectors only: similar items, recall and `similar --vector`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recsys.cli import main


def test_precomputed_vectors_run_and_query_by_vector(prefect_harness, tmp_path, capsys):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(25, 48)) * 3
    labels = rng.integers(0, 25, 1500)
    vectors = (centres[labels] + rng.normal(size=(1500, 48))).astype(np.float32)
    ids = [f"photo-{i:05d}" for i in range(1500)]
    pq.write_table(
        pa.table({"id": ids, "embedding": pa.array(list(vectors), pa.list_(pa.float32(), 48))}),
        tmp_path / "vectors.parquet",
    )
    config = {
        "models": [
            {
                "name": "images",
                "type": "precomputed",
                "params": {"items": str(tmp_path / "vectors.parquet"), "column": "embedding"},
            }
        ],
        "index": {"backend": "annoy", "n_trees": 20},
        "similar_items": {"top_n": 10},
        "evaluate": {"sample_items": 300},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["run", "--config", str(tmp_path / "c.yaml"), "--output", str(out)]) == 0
    run_dir = out / "runs" / (out / "CURRENT").read_text().strip()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["models"]["images"]
    assert entry["type"] == "precomputed" and entry["dim"] == 48
    assert "recommendations" not in entry.get("outputs", {}) and set(entry["indices"]) == {"angular"}
    assert entry["evaluation"]["ann"]["similar_items"]["recall_at_k"] >= 0.95
    sims = pd.read_parquet(run_dir / entry["outputs"]["similar_items"]["path"])
    assert len(sims) == 1500 * 10 and not (sims["item_id"] == sims["similar_item_id"]).any()
    label_of = dict(zip(ids, labels, strict=True))
    same = (sims["item_id"].map(label_of) == sims["similar_item_id"].map(label_of)).mean()
    assert same > 0.95  # the known answer: neighbours share the cluster
    np.save(tmp_path / "query.npy", centres[7].astype(np.float32))
    capsys.readouterr()
    assert (
        main(["similar", "--vector", str(tmp_path / "query.npy"), "-n", "5", "--output", str(out), "--json"])
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert [label_of[r["item_id"]] for r in answer["results"]] == [7] * 5
    np.save(tmp_path / "wrong.npy", np.ones(10, np.float32))
    assert main(["similar", "--vector", str(tmp_path / "wrong.npy"), "--output", str(out)]) == 2
    assert "dimension 10, model images has 48" in capsys.readouterr().err
