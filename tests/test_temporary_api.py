"""The temporary Prefect API `recsys run` starts before importing Prefect: only when no API
is configured anywhere Prefect looks, and with one-line errors when it does not come up."""

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from flows.temporary_api import TemporaryAPI, api_configured, check_api
from recsys.data import generate_interactions
from recsys.errors import RecsysError

RECSYS = str(Path(sys.executable).with_name("recsys"))


@pytest.fixture
def home(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    return tmp_path


def _env(home, **extra):
    return {"PREFECT_HOME": str(home / "home"), **extra}


def test_nothing_configured_means_a_temporary_api(home):
    assert not api_configured(_env(home), cwd=home / "cwd")


def test_an_api_url_in_the_environment_is_used(home):
    assert api_configured(_env(home, PREFECT_API_URL="http://127.0.0.1:4200/api"), cwd=home / "cwd")


def test_the_active_profile_is_read(home):
    (home / "home" / "profiles.toml").write_text(
        'active = "work"\n[profiles.work]\nPREFECT_API_URL = "http://10.0.0.1:4200/api"\n'
        '[profiles.other]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n'
    )
    assert api_configured(_env(home), cwd=home / "cwd")
    assert not api_configured(_env(home, PREFECT_PROFILE="other"), cwd=home / "cwd")


def test_settings_files_in_the_working_folder_leave_the_choice_to_prefect(home):
    (home / "cwd" / "prefect.toml").write_text('[api]\nurl = "http://10.0.0.1:4200/api"\n')
    assert api_configured(_env(home), cwd=home / "cwd")


def test_ephemeral_mode_switched_off_leaves_the_error_to_prefect(home):
    assert api_configured(_env(home, PREFECT_SERVER_EPHEMERAL_ENABLED="false"), cwd=home / "cwd")


def test_a_server_that_exits_is_one_line(home):
    api = TemporaryAPI()
    api.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RecsysError, match="exited with status 3 before it was ready") as caught:
        api.wait_ready(timeout=30)
    assert "\n" not in str(caught.value)


def test_a_server_that_does_not_answer_is_stopped(home):
    api = TemporaryAPI()
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    api.process = process
    with pytest.raises(RecsysError, match="did not answer within 0.5 s"):
        api.wait_ready(timeout=0.5)
    assert process.wait(timeout=10) is not None and api.process is None


def test_the_port_is_owned_before_the_server_starts(home):
    """The port is bound by the run itself before the server boots: a process on the
    machine cannot take it and answer the run's health check in the server's place."""
    api = TemporaryAPI()
    try:
        intruder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with pytest.raises(OSError), intruder:
            intruder.bind(("127.0.0.1", api.port))
    finally:
        api.stop()


@pytest.mark.slow
def test_sigkill_of_recsys_run_ends_its_temporary_api(tmp_path):
    """SIGKILL runs no exit handler: the kernel ends the server with its parent."""
    generate_interactions(n_users=300, n_items=200, n_clusters=4, seed=1).to_parquet(tmp_path / "t.parquet")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    run = subprocess.Popen(
        [RECSYS, "run", "--interactions", "t.parquet", "--output", "out"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        servers: list[psutil.Process] = []
        while not servers and time.monotonic() < deadline and run.poll() is None:
            servers = [p for p in psutil.Process(run.pid).children() if "uvicorn" in " ".join(p.cmdline())]
            time.sleep(0.05)
        assert servers, "the run started no temporary API"
        run.kill()
        run.wait(timeout=10)
        gone, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"the temporary API outlived its run: {alive}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


class _Answer(http.server.BaseHTTPRequestHandler):
    """GET /api/health answers what the server's ``body`` says (404 where it is None)."""

    body: bytes | None = None

    def do_GET(self):  # noqa: N802  (http.server's name)
        if self.body is None or self.path != "/api/health":
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _server(body: bytes | None):
    handler = type("Handler", (_Answer,), {"body": body})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        ("garbage", None, "PREFECT_API_URL 'garbage' is not an http(s) URL"),
        ("ftp://127.0.0.1/api", None, "is not an http(s) URL"),
        (f"http://127.0.0.1:{_closed_port()}/api", None, "cannot reach the Prefect API"),
        ("SERVER", None, "not a Prefect API (GET /health answered 404)"),
        ("SERVER", b"<html>hello</html>", "not a Prefect API (GET /health answered b'<html>"),
    ],
    ids=["not-a-url", "not-http", "closed-port", "no-health", "html-health"],
)
def test_a_configured_api_that_cannot_serve_a_run_is_one_line(url, body, message):
    with _server(body) as served:
        with pytest.raises(RecsysError) as caught:
            check_api(served if url == "SERVER" else url, timeout=5)
    assert message in str(caught.value) and "prefect server start" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_prefect_api_that_answers_passes():
    with _server(b"true") as url:
        check_api(url, timeout=5)


def test_recsys_run_with_a_garbage_api_url_is_one_line_and_exit_2(tmp_path):
    generate_interactions(n_users=50, n_items=30, n_clusters=2, seed=1).to_parquet(tmp_path / "t.parquet")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PREFECT_API_URL": "garbage"}
    done = subprocess.run(
        [RECSYS, "run", "--interactions", "t.parquet", "--output", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [
        "recsys: error: PREFECT_API_URL 'garbage' is not an http(s) URL; start one with "
        "`prefect server start`, or unset PREFECT_API_URL to use a temporary one"
    ]
    assert not (tmp_path / "out" / "CURRENT").exists()


@pytest.mark.slow
def test_a_run_whose_temporary_api_dies_ends_at_once_with_one_line(tmp_path):
    """Prefect's client would retry for as long as the run's timeout (6 h by default): the
    run ends within seconds, exit 3, one line, nothing published."""
    generate_interactions(n_users=300, n_items=200, n_clusters=4, seed=1).to_parquet(tmp_path / "t.parquet")
    endless = {"models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 10_000_000}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**endless, "evaluate": {"split": {"method": "none"}}}))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    with open(tmp_path / "out.log", "w+") as out, open(tmp_path / "err.log", "w+") as err:
        run = subprocess.Popen(
            [RECSYS, "run", "--config", "c.yaml", "--interactions", "t.parquet", "--output", "out"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while "als: training" not in (tmp_path / "out.log").read_text() and time.monotonic() < deadline:
                assert run.poll() is None, (tmp_path / "err.log").read_text()
                time.sleep(0.1)
            (server,) = [p for p in psutil.Process(run.pid).children() if "uvicorn" in " ".join(p.cmdline())]
            server.kill()
            assert run.wait(timeout=30) == 3
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
    assert (tmp_path / "err.log").read_text().splitlines() == [
        "recsys: error: Prefect's temporary API exited mid-run (status -9); stopped; nothing published"
    ]
    assert not (tmp_path / "out" / "CURRENT").exists()
    assert not [p for p in (tmp_path / "out" / "runs").iterdir()]


def test_make_setup_boots_the_api_once_so_block_types_are_registered(tmp_path):
    """`python -m flows.temporary_api` (a step of `make setup`): Prefect's block types are
    registered in the database and remembered (its memo store), so the first run's API
    does not register them."""
    home = tmp_path / "prefect"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PREFECT_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "flows.temporary_api"], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "block_auto_registration" in (home / "memo_store.toml").read_text()
    assert (home / "prefect.db").exists()
