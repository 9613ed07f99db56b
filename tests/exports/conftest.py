"""Published runs to export: integer ids and string ids, two runs under one root."""

from __future__ import annotations

import pytest

import recsys
from recsys.data import generate_interactions

CONFIG = {
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "popular", "type": "popular"},
    ],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 3},
}


def publish(root, run_id: str, string_ids: bool = False, seed: int = 1):
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=seed, string_ids=string_ids)
    return recsys.run_pipeline(frame, CONFIG, output=root, run_id=run_id)


@pytest.fixture(scope="session")
def int_root(tmp_path_factory):
    """An output root with two runs of integer ids: ``r1``, then ``r2`` (current)."""
    root = tmp_path_factory.mktemp("exports-int") / "out"
    publish(root, "r1", seed=1)
    publish(root, "r2", seed=2)
    return root


@pytest.fixture(scope="session")
def str_root(tmp_path_factory):
    """An output root with one run of string ids, ``s1``."""
    root = tmp_path_factory.mktemp("exports-str") / "out"
    publish(root, "s1", string_ids=True)
    return root
