"""The temporary Prefect API `recsys run` starts before importing Prefect: only when no API
is configured anywhere Prefect looks, and with one-line errors when it does not come up."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.temporary_api import TemporaryAPI, api_configured
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
