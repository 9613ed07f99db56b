"""`index.backend: auto` on a catalog under `index.auto_min_items`: exact search, nothing
built or probed; at 0 every catalog is probed."""

import recsys
from recsys.data.synthetic import generate_interactions

CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
    "index": {"n_trees": 5},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
}


def test_a_small_catalog_is_served_exactly_without_a_probe(tmp_path):
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=3, seed=1)
    run = recsys.run_pipeline(frame, CONFIG, output=tmp_path)
    for metric, entry in run.manifest.models["als"].indices.items():
        dumped = entry.model_dump(mode="json", exclude_none=True)
        assert dumped["backend"] == "exact", metric
        assert "auto_min_items (10000)" in dumped["reason"] and "60 items" in dumped["reason"]
        assert "tuning" not in dumped and not dumped["files"]
    assert not list(run.dir.rglob("*.ann"))
    assert len(run.recommend([frame["user_id"].iloc[0]], n=5)) == 5


def test_auto_min_items_zero_probes_every_catalog(tmp_path):
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=3, seed=1)
    config = {**CONFIG, "index": {"n_trees": 5, "auto_min_items": 0}}
    run = recsys.run_pipeline(frame, config, output=tmp_path)
    for entry in run.manifest.models["als"].indices.values():
        dumped = entry.model_dump(mode="json", exclude_none=True)
        assert dumped["tuning"]["annoy"]["curve"]
        assert (run.dir / dumped["files"]["annoy"]["path"]).exists()
