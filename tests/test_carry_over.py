"""Carry-over (`recsys run --models a`) verifies every file it takes from the current run
against that run's manifest: a corrupt file is refused, and nothing is published."""

from __future__ import annotations

import pytest

from recsys import storage
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.errors import RunError
from recsys.stages.runner import run_local

CONFIG = {
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "bpr", "type": "bpr", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
    ],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
}


@pytest.fixture
def first_run(tmp_path):
    path = storage.write_interactions_table(
        generate_interactions(n_users=80, n_items=50, n_clusters=3, seed=5), tmp_path / "in.parquet"
    )
    config = parse_config(CONFIG)
    run_local(config, path, tmp_path / "out", run_id="r1")
    return config, path, tmp_path / "out"


def test_carried_files_are_the_verified_files(first_run):
    config, path, root = first_run
    manifest = run_local(config, path, root, run_id="r2", models=["als"])
    assert manifest.models["bpr"].carried_over_from == "r1"
    old, new = root / "runs/r1/models/bpr", root / "runs/r2/models/bpr"
    for name in ("item_factors.npy", "recommendations.parquet"):
        assert (old / name).read_bytes() == (new / name).read_bytes()
        assert manifest.files[f"models/bpr/{name}"].sha256 == storage.file_sha256(old / name)


def test_a_corrupt_file_in_the_current_run_is_not_carried(first_run):
    config, path, root = first_run
    target = root / "runs/r1/models/bpr/item_factors.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(RunError, match="item_factors.npy: checksum does not match"):
        run_local(config, path, root, run_id="r2", models=["als"])
    assert storage.current_run_id(root) == "r1" and not (root / "runs/r2").exists()
