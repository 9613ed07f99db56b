"""`run.parallel_models`: models run side by side publish what they publish one after the
other, in the config's order, with each model's tasks filed under the flow run."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import yaml

import recsys
from recsys.errors import ModelError

MODELS = [
    {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 4}},
    {"name": "bpr", "type": "bpr", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
    {"name": "spectral", "type": "spectral", "params": {"factors": 16}},
    {"name": "popular", "type": "popular"},
]


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

LMF = {"name": "lmf", "type": "lmf", "params": {"factors": 4, "iterations": 2, "num_threads": 1}}


def _config(parallel: int, models: list[dict] = MODELS) -> dict:
    return {
        "models": models,
        "run": {"parallel_models": parallel},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "evaluate": {"k": [5], "split": {"method": "random"}},
    }


def _lists(run) -> dict[str, pd.DataFrame]:
    return {name: run.recommendations(name).drop(columns=["run_id"]) for name in run.models}


def test_side_by_side_publishes_the_same_lists(small_frame, tmp_path):
    one = recsys.run_pipeline(small_frame, _config(1), output=tmp_path / "one")
    two = recsys.run_pipeline(small_frame, _config(2), output=tmp_path / "two")
    assert list(two.manifest.models) == [m["name"] for m in MODELS]
    expected, found = _lists(one), _lists(two)
    for name in expected:
        pd.testing.assert_frame_equal(
            found[name][["user_id", "item_id", "rank"]], expected[name][["user_id", "item_id", "rank"]]
        )
        assert (found[name]["score"] - expected[name]["score"]).abs().max() < 1e-4
        assert two.manifest.models[name].evaluation.ranking == pytest.approx(
            one.manifest.models[name].evaluation.ranking, abs=1e-4
        )


def test_a_failing_model_fails_the_run_and_publishes_nothing(small_frame, tmp_path):
    # spectral asks for more singular vectors than the 200-item matrix has
    models = [*MODELS[:2], {"name": "spectral", "type": "spectral", "params": {"factors": 500}}]
    with pytest.raises(ModelError, match="factors 500 is more than"):
        recsys.run_pipeline(small_frame, _config(2, models), output=tmp_path)
    assert not (tmp_path / "CURRENT").exists()
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]


def test_side_by_side_under_prefect_files_every_task(prefect_harness, small_frame, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.pipeline import pipeline_flow

    small_frame.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_config(2)))
    manifest = pipeline_flow(
        config_path=str(tmp_path / "c.yaml"),
        interactions=str(tmp_path / "t.parquet"),
        output=str(tmp_path / "out"),
        run_id="side-by-side",
    )
    assert list(manifest["models"]) == [m["name"] for m in MODELS]
    # Prefect records a task run's states from the events the flow sends, on the server and
    # after the flow has returned: a task is read as Running until its Completed event is
    # recorded. Read until every task is in a final state (or a minute has passed).
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["side-by-side"]))
        )
        while True:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [flow_run.id]}), limit=200
            )
            if all(task.state_type and task.state_type.value in FINAL for task in tasks):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    names = {task.name for task in tasks}
    for model in MODELS:
        assert {
            f"train-{model['name']}",
            f"train-{model['name']}-split",
            f"recommend-{model['name']}",
        } <= names
    assert [
        (task.name, task.state_type.value) for task in tasks if task.state_type.value != "COMPLETED"
    ] == []


def test_libraries_are_imported_before_the_threads_start(tmp_path):
    """implicit is imported lazily; two model threads importing it at once deadlock on its
    import locks. A fresh process, with nothing of implicit imported yet."""
    import subprocess
    import sys

    script = (
        "import sys, recsys\n"
        "from recsys.data import generate_interactions\n"
        "frame = generate_interactions(n_users=150, n_items=60, n_clusters=3, seed=4)\n"
        "assert 'implicit' not in sys.modules\n"
        f"config = {_config(2, [*MODELS[:2], LMF])!r}\n"
        f"recsys.run_pipeline(frame, config, output={str(tmp_path)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "CURRENT").exists()


def test_a_failing_model_calls_its_running_siblings_off(tmp_path):
    """A model that fails while a sibling trains for hours ends the run at once: the
    sibling stops at its next iteration (a fresh process, so a hang fails by the timeout)."""
    import subprocess
    import sys

    endless = {"name": "als", "type": "als", "params": {"factors": 32, "iterations": 1_000_000}}
    failing = {"name": "spectral", "type": "spectral", "params": {"factors": 500}}
    script = (
        "import recsys\n"
        "from recsys.data import generate_interactions\n"
        "from recsys.errors import ModelError\n"
        "frame = generate_interactions(n_users=300, n_items=200, n_clusters=3, seed=4)\n"
        f"config = {_config(2, [endless, failing])!r}\n"
        "try:\n"
        f"    recsys.run_pipeline(frame, config, output={str(tmp_path)!r})\n"
        "except ModelError as exc:\n"
        "    print('failed:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "failed: model spectral: factors 500 is more than" in done.stdout
    assert not (tmp_path / "CURRENT").exists()
