"""Prefect settings that Prefect itself would end in a traceback on (a profiles file that
is not TOML, a startup timeout that is not a number): one line and exit 2 from every
command that imports Prefect, before Prefect is imported, in about a second."""

from __future__ import annotations

import subprocess
import time

import pytest
import yaml

from flows.temporary_api import settings_problem
from recsys.data import generate_interactions
from tests.processes import RECSYS, environment


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    generate_interactions(n_users=60, n_items=30, n_clusters=2, seed=1).to_parquet(root / "t.parquet")
    config = {
        "input": {"path": "t.parquet"},
        "output": {"root": "out"},
        "models": [{"name": "als", "type": "als", "params": {"factors": 4, "iterations": 2}}],
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    return root


def _profiles(folder, content: bytes):
    folder.mkdir(exist_ok=True)
    (folder / "profiles.toml").write_bytes(content)
    return folder


CASES = {
    "profile not toml": ({"home": b"this is [ not toml\n"}, "is not valid TOML"),
    "profile not utf-8": ({"home": b'active = "\xff\xfe"\n'}, "is not UTF-8 text"),
    "timeout garbage": ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "abc"}, "found 'abc'"),
    "timeout fraction": ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1.5"}, "found '1.5'"),
    "timeout zero": (
        {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0"},
        "whole number of seconds >= 1",
    ),
    "any other setting": (
        {"PREFECT_API_DEFAULT_LIMIT": "xyz"},
        "Prefect's settings are invalid: default_limit",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["run", "tune", "deploy"])
def test_bad_prefect_settings_are_one_line(workspace, tmp_path, case, command):
    extra, message = CASES[case]
    env = environment(tmp_path)
    if "home" in extra:
        env["PREFECT_HOME"] = str(_profiles(tmp_path / "prefect", extra["home"]))
    else:
        env.update(extra)
    args = {
        "run": ["run", "--config", "c.yaml"],
        "tune": [
            "tune",
            "--model",
            "als",
            "--config",
            "c.yaml",
            "--trials",
            "1",
            "--output",
            str(tmp_path / "x.yaml"),
        ],
        "deploy": ["deploy", "--config", "c.yaml"],
    }[command]
    started = time.monotonic()
    result = subprocess.run(
        [RECSYS, *args], capture_output=True, text=True, env=env, cwd=workspace, timeout=120
    )
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("recsys: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert took < 10, took  # before Prefect is imported: no server started, nothing waited for
    assert not (workspace / "out" / "CURRENT").exists() and not (tmp_path / "x.yaml").exists()


def test_good_settings_pass(tmp_path):
    home = _profiles(
        tmp_path / "prefect", b'active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "INFO"\n'
    )
    assert (
        settings_problem(
            {"PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": " 30 "}
        )
        is None
    )
    assert settings_problem({"PREFECT_HOME": str(tmp_path / "none")}) is None
