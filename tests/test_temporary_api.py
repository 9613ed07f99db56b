"""The temporary Prefect API `recsys run` starts before importing Prefect: only when no API
is configured anywhere Prefect looks, and with one-line errors when it does not come up."""

import subprocess
import sys

import pytest

from flows.temporary_api import TemporaryAPI, api_configured
from recsys.errors import RecsysError


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
