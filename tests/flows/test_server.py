"""A real Prefect server on loopback: `recsys deploy` registers the deployment with its
cron schedule, a triggered run completes and publishes, and shows in the API under its
run id with the pipeline's log lines, stable task names and its artifacts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from recsys import storage
from recsys.data import generate_interactions
from recsys.manifest import read_manifest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _post(url: str, path: str, body: dict) -> list:
    """A filter query against the Prefect REST API."""
    import json

    request = urllib.request.Request(
        f"{url}/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_deployment_on_a_real_server_runs_on_trigger(tmp_path):
    generate_interactions(n_users=100, n_items=60, n_clusters=3, seed=4).to_parquet(tmp_path / "t.parquet")
    config = {
        "input": {"path": str(tmp_path / "t.parquet")},
        "output": {"root": str(tmp_path / "out")},
        "models": [{"name": "als", "type": "als", "params": {"factors": 4, "iterations": 2}}],
        "index": {"n_trees": 3},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "schedule": {"cron": "17 4 * * *", "timezone": "UTC", "deployment_name": "test-nightly"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    processes = []
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("server", "deploy")}  # noqa: SIM115
    try:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=logs["server"],
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        processes.append(server)
        _wait(lambda: _healthy(url), 120, "the Prefect server")
        deploy = subprocess.Popen(
            [str(BIN / "recsys"), "deploy", "--config", str(tmp_path / "c.yaml")],
            stdout=logs["deploy"],
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
        processes.append(deploy)

        def inspect() -> str | None:
            result = subprocess.run(
                [str(BIN / "prefect"), "deployment", "inspect", "recsys-pipeline/test-nightly"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            return result.stdout if result.returncode == 0 else None

        details = _wait(inspect, 120, "the deployment to be registered")
        assert "17 4 * * *" in details and "UTC" in details
        triggered = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "recsys-pipeline/test-nightly"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        run_id = _wait(lambda: storage.current_run_id(tmp_path / "out"), 180, "the triggered run to publish")
        run = storage.find_run(tmp_path / "out", run_id)
        manifest = read_manifest(run)
        assert manifest.models["als"].rows.recommendations == 100 * 5
        assert (run.dir / "_SUCCESS").exists()

        # what an operator sees in the UI: the flow run named by the run id, the
        # pipeline's own log lines, the metrics table and the report link as artifacts
        def finished() -> dict | None:
            runs = _post(url, "flow_runs/filter", {"flow_runs": {"name": {"any_": [run_id]}}})
            return runs[0] if runs and runs[0]["state_type"] == "COMPLETED" else None

        flow_run = _wait(finished, 120, f"a completed flow run named {run_id}")

        def logged() -> list[str] | None:  # the API log handler sends in batches: wait for them
            records = _post(url, "logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}})
            messages = [entry["message"] for entry in records]
            return messages if any("als: training als on" in m for m in messages) else None

        messages = _wait(logged, 60, "the pipeline's log lines in the API")
        assert any("recall@" in m and "vs exact" in m for m in messages)
        task_runs = _post(url, "task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
        assert {"prepare-data", "train-als", "index-als", "publish"} <= {t["name"] for t in task_runs}
        for key in ("recsys-test-nightly-metrics", "recsys-test-nightly-report"):
            artifacts = _post(url, "artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
            assert [a["flow_run_id"] for a in artifacts] == [flow_run["id"]], key
        table = _post(
            url, "artifacts/filter", {"artifacts": {"key": {"any_": ["recsys-test-nightly-metrics"]}}}
        )
        assert "als" in str(table[0]["data"]) and "ann recall" in str(table[0]["data"])
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for handle in logs.values():
            handle.close()
