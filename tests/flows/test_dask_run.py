"""`recsys run` with `task_runner.type: dask`: shards scored on a local Dask cluster of two
worker processes through prefect-dask publish the same lists as a local run, and the
workers report to the run's one Prefect API instead of each starting its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys import storage
from recsys.data import generate_interactions

SCRIPT = str(Path(sys.executable).with_name("recsys"))
CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 16, "iterations": 5}}],
    "index": {"n_trees": 10, "backend": "annoy"},
    "recommend": {"top_n": 10},
    "similar_items": {"top_n": 10},
    "evaluate": {"sample_users": 50, "sample_items": 50, "tune_queries": 50},
}


def _run(root: Path, task_runner: dict | None) -> tuple[Path, str]:
    config = {**CONFIG, **({"task_runner": task_runner} if task_runner else {})}
    name = "dask" if task_runner else "local"
    (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / f"prefect-{name}"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    command = [SCRIPT, "run", "--config", str(root / f"{name}.yaml")]
    command += ["--interactions", str(root / "t.parquet"), "--output", str(root / name), "--run-id", "r1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / name / "runs" / "r1", done.stdout + done.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    generate_interactions(n_users=450, n_items=120, n_clusters=6, seed=8).to_parquet(root / "t.parquet")
    local, _ = _run(root, None)
    dask, output = _run(root, {"type": "dask", "n_workers": 2, "shard_rows": 100})
    return local, dask, output


def _lists(run_dir: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "models" / "als" / f"{name}.parquet")
    return frame.drop(columns=["run_id"]).reset_index(drop=True)


@pytest.mark.parametrize("name", ["recommendations", "similar_items"])
def test_dask_run_publishes_the_local_runs_lists(runs, name):
    local, dask, _ = runs
    expected, found = _lists(local, name), _lists(dask, name)
    assert len(found) == len(expected) > 0
    key = [column for column in expected.columns if column not in ("score",)]
    pd.testing.assert_frame_equal(found[key], expected[key])
    np.testing.assert_allclose(found["score"], expected["score"], rtol=1e-5, atol=1e-6)


def test_users_are_scored_in_shards_on_the_workers(runs):
    _, dask, output = runs
    # 450 users in shards of 100: five shard task runs for the recommendations
    shards = set(re.findall(r"recommendations-als-(\d+)", output))
    assert shards == {"0", "100", "200", "300", "400"}
    assert "local cluster of 2 worker processes" in output
    assert "als: trained, indexed and evaluated on the Dask workers" in output
    # the lists are the workers' part files, one per shard, listed in the manifest
    parts = storage.read_json(dask / "manifest.json")["models"]["als"]["outputs"]["recommendations"]["parts"]
    assert [(part["start"], part["stop"]) for part in parts] == [
        (s, min(s + 100, 450)) for s in range(0, 450, 100)
    ]
    manifest = storage.read_json(dask / "manifest.json")
    assert manifest["config"]["task_runner"]["type"] == "dask"
    assert manifest["models"]["als"]["rows"]["recommendations"] == 450 * 10


def test_workers_do_not_start_their_own_prefect_api(runs):
    _, _, output = runs
    # the flow's temporary API is the only one: a worker without the flow's API URL
    # would start (and announce) a temporary server of its own
    assert output.count("Starting temporary server") == 1


def test_run_on_an_existing_dask_cluster_by_address(runs, tmp_path, prefect_harness):
    """`task_runner.address`: the flow connects to a running scheduler (here a local
    cluster the test starts) and publishes the same lists as the local run."""
    from distributed import LocalCluster

    from flows.pipeline import pipeline_flow

    local, _, _ = runs
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        config = {**CONFIG, "task_runner": {"type": "dask", "address": cluster.scheduler_address}}
        config["task_runner"]["shard_rows"] = 200
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        pipeline_flow(
            config_path=str(tmp_path / "c.yaml"),
            interactions=str(local.parent.parent.parent / "t.parquet"),
            output=str(tmp_path / "out"),
            run_id="r1",
        )
    found = _lists(tmp_path / "out" / "runs" / "r1", "recommendations")
    expected = _lists(local, "recommendations")
    key = ["user_id", "item_id", "rank"]
    pd.testing.assert_frame_equal(found[key], expected[key])


def test_remote_cluster_with_a_loopback_api_is_refused():
    from flows.scaleout import check_api_reachable
    from recsys.errors import ConfigError

    check_api_reachable("http://127.0.0.1:4200/api", "tcp://127.0.0.1:8786")
    check_api_reachable("http://prefect.internal:4200/api", "tcp://dask.internal:8786")
    with pytest.raises(ConfigError, match="Prefect API its workers can reach"):
        check_api_reachable("http://127.0.0.1:4200/api", "tcp://dask.internal:8786")


def test_task_runner_config_is_checked(tmp_path):
    from recsys.config import load_config
    from recsys.errors import ConfigError

    for task_runner, message in [
        ({"type": "local", "address": "tcp://h:8786"}, "needs task_runner.type: dask"),
        ({"type": "dask", "address": "h:8786"}, "must look like tcp://host:8786"),
        ({"type": "spark"}, "task_runner.type"),
        ({"type": "dask", "workers": 2}, "workers"),
    ]:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "task_runner": task_runner}))
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "c.yaml")


def test_precomputed_vectors_only_run_on_dask(prefect_harness, tmp_path):
    """A run without interactions (item vectors only) scores its similar items on the
    workers too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.pipeline import pipeline_flow

    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(900, 16)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(900)]
    pq.write_table(
        pa.table({"id": ids, "vector": pa.array(list(vectors), pa.list_(pa.float32(), 16))}),
        tmp_path / "v.parquet",
    )
    config = {
        "models": [{"name": "docs", "type": "precomputed", "params": {"items": str(tmp_path / "v.parquet")}}],
        "index": {"backend": "exact"},
        "similar_items": {"top_n": 5},
        "task_runner": {"type": "dask", "n_workers": 2, "shard_rows": 200},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = pipeline_flow(config_path=str(tmp_path / "c.yaml"), output=str(tmp_path / "out"), run_id="r1")
    sims = pd.read_parquet(
        tmp_path / "out" / "runs" / "r1" / manifest["models"]["docs"]["outputs"]["similar_items"]["path"]
    )
    assert len(sims) == 900 * 5 and not (sims["item_id"] == sims["similar_item_id"]).any()
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    best = np.argsort(-(normed @ normed.T), axis=1)[:, 1]  # column 0 is the item itself
    first = sims[sims["rank"] == 1].set_index("item_id")["similar_item_id"]
    assert (first.loc[ids].to_numpy() == np.array(ids, dtype=object)[best]).all()
