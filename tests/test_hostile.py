"""Ordinary operator actions and hostile inputs, through the real CLI in subprocesses:
the last good run is never lost, nothing this program did not make is deleted, nothing
after CURRENT moves fails a published run."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess

import pytest
import yaml

from recsys import storage
from recsys.data import generate_interactions
from tests.processes import RECSYS, SMALL_RUN_CONFIG, environment, recsys, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=8).to_parquet(root / "t.parquet")
    (root / "c.yaml").write_text(yaml.safe_dump(SMALL_RUN_CONFIG))
    return root, environment(root)


def run(workspace, *extra, **kwargs):
    root, env = workspace
    return recsys("run", "--config", str(root / "c.yaml"), *extra, env=env, cwd=root, **kwargs)


@pytest.fixture(scope="module")
def published(workspace):
    result = run(workspace, "--run-id", "good")
    assert result.returncode == 0, result.stderr
    out = workspace[0] / "out"
    return out, snapshot(out / "runs" / "good")


@pytest.mark.parametrize(
    "failpoint",
    [
        "after-fit",
        "parquet-before-replace",
        "publish-before-success",
        "no-exchange,publish-between-renames",
    ],
)
def test_rerunning_the_current_id_and_dying_keeps_the_good_run(workspace, published, failpoint):
    out, files = published
    result = run(workspace, "--run-id", "good", failpoint=failpoint)
    assert result.returncode == -signal.SIGKILL
    assert storage.current_run_id(out) == "good"
    if not failpoint.startswith("no-exchange"):  # with an atomic exchange, at once
        assert snapshot(out / "runs" / "good") == files
    # without it, cut between two renames: the next run puts the good run back first
    # the next run (any id) starts from the good run, byte-identical
    again = run(workspace, "--run-id", "next")
    assert again.returncode == 0, again.stderr
    assert snapshot(out / "runs" / "good") == files
    assert storage.current_run_id(out) == "next"
    assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")]
    (out / "CURRENT").write_text("good\n")  # back to the start for the next case


def test_republishing_the_current_id_replaces_it_whole(workspace, published):
    out, files = published
    for failpoint in (None, "no-exchange"):
        result = run(workspace, "--run-id", "good", failpoint=failpoint)
        assert result.returncode == 0, result.stderr
        assert storage.current_run_id(out) == "good"
        assert (out / "runs" / "good" / "_SUCCESS").exists()
        assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")]


def test_cleanup_deletes_only_what_recsys_made(workspace, published):
    out, _ = published
    foreign = {
        "notes": {"readme.txt": "keep me"},
        ".staging-by-hand": {"data.csv": "1,2"},
        "half": {"manifest.json": "{}"},
        ".replaced-other-abc": {"x": "y"},
    }
    for folder, files in foreign.items():
        (out / "runs" / folder).mkdir()
        for name, text in files.items():
            (out / "runs" / folder / name).write_text(text)
    result = run(workspace, "--run-id", "clean")
    assert result.returncode == 0, result.stderr
    for folder, files in foreign.items():
        for name, text in files.items():
            assert (out / "runs" / folder / name).read_text() == text
    assert "not made by recsys" in result.stdout + result.stderr


def test_retention_never_fails_a_published_run(workspace, published):
    root, _ = workspace
    out, _ = published
    config = yaml.safe_load((root / "c.yaml").read_text())
    config["retention"] = {"keep_runs": 1}
    (root / "keep1.yaml").write_text(yaml.safe_dump(config))
    weird = out / "runs" / "corrupt"
    weird.mkdir(exist_ok=True)
    (weird / "_SUCCESS").write_text("corrupt\n")
    (weird / "manifest.json").write_text("{not json")
    (out / "runs" / "dangling").symlink_to(root / "nowhere")
    env = workspace[1]
    result = recsys("run", "--config", str(root / "keep1.yaml"), "--run-id", "kept", env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    assert storage.current_run_id(out) == "kept"
    assert (weird / "_SUCCESS").exists() and (out / "runs" / "dangling").is_symlink()
    listing = recsys("runs", "--output", str(out), "--json", env=env, cwd=root)
    assert listing.returncode == 0, listing.stderr
    statuses = {row["run_id"]: row["status"] for row in json.loads(listing.stdout)}
    assert statuses["kept"] == "complete" and statuses["corrupt"] == "unreadable"


@pytest.mark.parametrize(
    ("sent", "to_group", "code"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, True, 143), (signal.SIGTERM, False, 143)],
)
def test_a_signal_ends_the_run_at_once_and_cleanly(workspace, published, sent, to_group, code):
    import os
    import subprocess
    import time

    import psutil

    root, env = workspace
    out = root / "out"
    before = storage.current_run_id(out)
    command = [RECSYS, "run", "--config", str(root / "c.yaml"), "--run-id", "stopped"]
    with open(root / "sig.err", "w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=root, start_new_session=True
        )
        staging = out / "runs" / ".staging-stopped"
        deadline = time.monotonic() + 120
        while not (staging / "data").exists() and time.monotonic() < deadline:  # the run is working
            time.sleep(0.05)
        assert staging.exists(), "the run never started"
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "Prefect's temporary API server runs as a child"
        sent_at = time.monotonic()
        if to_group:
            os.killpg(process.pid, sent)
        else:
            process.send_signal(sent)
        returncode = process.wait(timeout=30)
        elapsed = time.monotonic() - sent_at
        stderr.seek(0)
        lines = stderr.read().splitlines()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    assert returncode == code and elapsed < 5, (returncode, elapsed, lines[-3:])
    assert lines == [
        f"recsys: {'interrupted' if sent == signal.SIGINT else 'terminated'} ({sent.name}); nothing published"
    ]
    assert not staging.exists() and not (out / "runs" / "stopped").exists()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert storage.current_run_id(out) == before
    again = run(workspace, "--run-id", "after-signal")
    assert again.returncode == 0, again.stderr


def _signalled(command: list[str], root, env, sent, ready) -> tuple[int, float, list[str], list]:
    """Start ``command`` in its own process group, wait until ``ready()``, send ``sent`` to
    the group: (exit status, seconds to exit, stderr lines, children still alive)."""
    import os
    import time

    import psutil

    with open(root / "sig.err", "w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=root, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while not ready(process) and time.monotonic() < deadline:
                time.sleep(0.02)
            children = psutil.Process(process.pid).children(recursive=True)
            sent_at = time.monotonic()
            os.killpg(process.pid, sent)
            returncode = process.wait(timeout=30)
            elapsed = time.monotonic() - sent_at
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        stderr.seek(0)
        lines = stderr.read().splitlines()
    time.sleep(0.2)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    return returncode, elapsed, lines, alive


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_tune_at_once_with_one_line(workspace, sent):
    """recsys tune under the same guard as run: one line, 130 / 143 within 5 s, no child
    left, no tuned config half-written."""
    import psutil

    root, env = workspace
    command = [RECSYS, "tune", "--model", "als", "--config", str(root / "c.yaml"), "--trials", "200"]
    command += ["--output", str(root / "tuned.yaml")]

    def tuning(process) -> bool:  # the study runs once its API is up and the split made
        children = psutil.Process(process.pid).children()
        return bool(children) and (root / "sig.err").exists() and process.poll() is None

    code, elapsed, lines, alive = _signalled(command, root, env, sent, tuning)
    assert code == 128 + sent and elapsed < 5, (code, elapsed, lines[-3:])
    assert lines == [f"recsys: {'interrupted' if sent == signal.SIGINT else 'terminated'} ({sent.name})"]
    assert not alive
    assert not (root / "tuned.yaml").exists()


@pytest.mark.parametrize("after", [0.0, 0.4, 1.4])
def test_ctrl_c_while_the_command_starts_is_one_line(workspace, after):
    """Ctrl-C while the CLI and Prefect load and the temporary API boots: one line and
    130, never a traceback or a hang (a KeyboardInterrupt in the middle of an import could
    leave a lock held). Timed from the command's first act, starting the temporary API
    (its first child; its signal handlers are installed just before): a Ctrl-C during the
    interpreter's own startup, before the console script's first line runs, is Python's
    (a KeyboardInterrupt in `site`), as for any Python program."""
    import time

    import psutil

    root, env = workspace
    first_child: list[float] = []

    def ready(process: subprocess.Popen) -> bool:
        if not first_child:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(process.pid).children():
                    first_child.append(time.monotonic())
            return False
        return time.monotonic() - first_child[0] >= after

    command = [RECSYS, "run", "--config", str(root / "c.yaml"), "--run-id", "early"]
    code, elapsed, lines, alive = _signalled(command, root, env, signal.SIGINT, ready)
    assert first_child, "the command started no temporary API"
    assert code == 130 and elapsed < 5, (code, elapsed, lines[-5:])
    assert len(lines) == 1 and lines[0].startswith("recsys: interrupted (SIGINT)"), lines
    assert not alive


def test_published_files_follow_output_mode_whatever_the_umask(workspace, published):
    import os
    import stat

    root, env = workspace
    config = yaml.safe_load((root / "c.yaml").read_text())
    config["output"] = {"root": "out-shared", "mode": "0640"}
    (root / "mode.yaml").write_text(yaml.safe_dump(config))
    script = f"umask 077; exec {RECSYS} run --config {root / 'mode.yaml'} --run-id m"
    result = subprocess.run(
        ["sh", "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    run_dir = root / "out-shared" / "runs" / "m"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    folders = [run_dir, *[p for p in run_dir.rglob("*") if p.is_dir()]]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o750}
    assert stat.S_IMODE((root / "out-shared" / "CURRENT").stat().st_mode) == 0o640
    assert os.access(run_dir / "manifest.json", os.R_OK)
