"""Nothing the product did not write is overwritten or deleted, and nothing it reads hangs
it: through the real console script in subprocesses, with real files.

- outputs of ``tune``, ``import`` and ``generate`` replace an existing file only with
  ``--force``, and never one of the command's own inputs;
- ``recsys run --run-id ID`` never replaces nor deletes a ``runs/ID`` or
  ``runs/.staging-ID`` that recsys did not make;
- a second writer with the same run id is refused before Prefect starts, and its stop
  never removes the first writer's staging folder;
- a FIFO, a device or a folder where a published or control file should be is a damaged
  run (one line), never a reader blocked for ever;
- ``output.mode`` never lets the group or others write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from recsys import storage
from recsys.data import generate_interactions
from tests.processes import RECSYS, SMALL_RUN_CONFIG, environment, recsys, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("ownership")
    generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=8).to_parquet(root / "t.parquet")
    generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=9).to_parquet(root / "h.parquet")
    (root / "c.yaml").write_text(yaml.safe_dump(SMALL_RUN_CONFIG))
    return root, environment(root)


def _one_line(result, needle: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recsys: error:"), result.stderr[-2000:]
    assert needle in lines[0], lines[0]


def _digests(folder) -> dict[str, str]:
    return {name: digest for name, digest in snapshot(folder).items() if not name.startswith(".")}


# ---------------------------------------------------------------- outputs of tune, import, generate


def test_outputs_never_replace_their_inputs_nor_files_unasked(workspace):
    root, env = workspace
    site = root / "outputs"
    site.mkdir()
    shutil.copy(root / "t.parquet", site / "s.parquet")
    config = yaml.safe_load((root / "c.yaml").read_text())
    config["input"]["path"] = "s.parquet"
    config["evaluate"]["holdout"] = "held.parquet"
    (site / "a.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(root / "h.parquet", site / "held.parquet")
    (site / "notes.txt").write_text("mine\n")
    (site / "b.trials.json").write_text("{}\n")
    (site / "link.parquet").symlink_to("s.parquet")
    os.link(site / "s.parquet", site / "hard.parquet")
    os.mkfifo(site / "pipe")
    (site / "folder").mkdir()
    before = _digests(site)
    tune = ["tune", "--model", "als", "--config", "a.yaml", "--trials", "1"]
    refused = [
        # the command's own inputs: refused even with --force, whatever the spelling
        ([*tune, "--interactions", "s.parquet", "--output", "s.parquet", "--force"], "an input of this"),
        ([*tune, "--output", "s.parquet"], "an input of this command"),  # input.path of the config
        ([*tune, "--output", str(site / "a.yaml"), "--force"], "an input of this command"),
        ([*tune, "--output", "./held.parquet", "--force"], "an input of this command"),  # named by it
        ([*tune, "--output", "link.parquet", "--force"], "an input of this command"),
        ([*tune, "--interactions", "hard.parquet", "--output", "s.parquet", "--force"], "an input of"),
        (["import", "table", "s.parquet", "--output", "s.parquet"], "an input of this command"),
        (["import", "table", "s.parquet", "--output", "s.parquet", "--force"], "an input of this"),
        (["import", "table", "link.parquet", "--output", "s.parquet", "--force"], "an input of this"),
        (["import", "table", "hard.parquet", "--output", f"{site}/s.parquet", "--force"], "an input"),
        (["import", "movielens", "s.parquet", "--output", "s.parquet", "--force"], "an input of this"),
        # files the command did not make: refused without --force
        ([*tune, "--output", "notes.txt"], "exists: refused to replace it (--force"),
        ([*tune, "--output", "b.yaml"], "b.trials.json exists"),  # a companion file too
        (["import", "table", "s.parquet", "--output", "notes.txt"], "exists: refused"),
        (["generate", "--output", "notes.txt"], "exists: refused"),
        (["generate", "--output", "s.parquet"], "exists: refused"),
        # never a folder or a special file, even with --force
        (["generate", "--output", "pipe", "--force"], "is a FIFO"),
        (["import", "table", "s.parquet", "--output", "folder", "--force"], "is a folder"),
        ([*tune, "--output", "folder", "--force"], "is a folder"),
    ]
    for argv, needle in refused:
        started = time.monotonic()
        result = recsys(*argv, env=env, cwd=site, timeout=120)
        _one_line(result, needle)
        assert time.monotonic() - started < 30, argv  # before Prefect starts, not after the work
        assert _digests(site) == before, argv
        assert not (site / "b.yaml").exists() and not list(site.glob("*.report.html"))
    # --force replaces a regular file the command is told to
    forced = recsys("import", "table", "s.parquet", "--output", "notes.txt", "--force", env=env, cwd=site)
    assert forced.returncode == 0, forced.stderr
    assert (site / "notes.txt").read_bytes()[:4] == b"PAR1"
    assert _digests(site)["s.parquet"] == before["s.parquet"]


def test_tune_force_replaces_its_outputs_but_never_an_input(workspace):
    root, env = workspace
    site = root / "tuned"
    site.mkdir()
    shutil.copy(root / "c.yaml", site / "a.yaml")
    shutil.copy(root / "t.parquet", site / "t.parquet")
    for name in ("best.yaml", "best.trials.json", "best.report.html"):
        (site / name).write_text("old\n")
    tune = ["tune", "--model", "als", "--config", "a.yaml", "--trials", "1", "--output", "best.yaml"]
    _one_line(recsys(*tune, env=env, cwd=site), "best.yaml exists")
    assert (site / "best.yaml").read_text() == "old\n"
    done = recsys(*tune, "--force", env=env, cwd=site)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (site / "best.yaml").read_text().startswith("# als: best of")
    assert (site / "best.trials.json").read_text() != "old\n"
    assert (site / "best.report.html").read_text() != "old\n"


def test_help_documents_force():
    for command in ("tune", "import", "generate"):
        done = subprocess.run([RECSYS, command, "--help"], capture_output=True, text=True, timeout=60)
        text = " ".join(done.stdout.split())
        assert (
            "--force" in text and "never a folder, a special file, or one of the command's own inputs" in text
        )


# ---------------------------------------------------------------- run ids and foreign folders


@pytest.mark.parametrize("kind", ["folder", "staging", "file", "symlink", "fifo", "empty-staging"])
def test_a_run_id_never_replaces_a_foreign_folder(workspace, kind):
    root, env = workspace
    site = root / f"foreign-{kind}"
    runs = site / "out" / "runs"
    runs.mkdir(parents=True)
    outside = site / "elsewhere"
    outside.mkdir()
    (outside / "data.csv").write_text("1,2\n")
    target = {"folder": "keep", "file": "keep", "symlink": "keep", "fifo": "keep"}.get(kind, ".staging-keep")
    if kind in ("folder", "staging"):
        (runs / target).mkdir()
        (runs / target / "notes.txt").write_text("keep me\n")
        (runs / target / "_SUCCESS").write_text("")  # looks like a run, made by hand
    elif kind == "empty-staging":
        (runs / target).mkdir()
    elif kind == "file":
        (runs / target).write_text("not a run\n")
    elif kind == "symlink":
        (runs / target).symlink_to(outside)
    else:
        os.mkfifo(runs / target)
    before = sorted(p.name for p in runs.iterdir())
    files = {**snapshot(runs), **snapshot(outside)}
    started = time.monotonic()
    argv = ["run", "--config", str(root / "c.yaml"), "--run-id", "keep", "--output", str(site / "out")]
    result = recsys(*argv, env=env, cwd=site)
    _one_line(result, "refused to replace it")
    assert "not made by recsys" in result.stderr or "not a folder made by recsys" in result.stderr
    assert time.monotonic() - started < 60  # in preflight, before Prefect starts
    assert sorted(p.name for p in runs.iterdir()) == before  # nothing written, nothing removed
    assert {**snapshot(runs), **snapshot(outside)} == files
    assert not (site / "out" / "CURRENT").exists()


# ---------------------------------------------------------------- a second writer


def _held_run(root, env, site, run_id):
    """Start `recsys run` that waits, staged, until the hold file goes."""
    hold = site / "hold"
    hold.write_text("")
    env = {**env, "RECSYS_FAILPOINT": "hold-before-publish", "RECSYS_HOLD": str(hold)}
    log = open(site / f"{run_id}.log", "w+")  # noqa: SIM115  (closed by the caller)
    process = subprocess.Popen(
        [RECSYS, "run", "--config", str(root / "c.yaml"), "--run-id", run_id, "--output", str(site / "out")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=site,
        start_new_session=True,
    )
    staging = storage.RunLayout(site / "out", run_id).dir
    deadline = time.monotonic() + 240
    while not (site / "hold.reached").exists():  # staged, about to publish
        assert process.poll() is None and time.monotonic() < deadline, log.seek(0) or log.read()[-3000:]
        time.sleep(0.2)
    return process, hold, log, staging


def test_a_second_writer_is_refused_at_once_and_never_harms_the_first(workspace):
    root, env = workspace
    site = root / "second"
    site.mkdir()
    first, hold, log, staging = _held_run(root, env, site, "same")
    try:
        staged = snapshot(staging)
        second = ["run", "--config", str(root / "c.yaml"), "--run-id", "same", "--output", str(site / "out")]
        for extra in ([], ["--timeout", "1"], ["--run-id", "other"]):
            started = time.monotonic()
            result = recsys(*second, *extra, env=env, cwd=site, timeout=120)
            elapsed = time.monotonic() - started
            _one_line(result, "another recsys run is writing to this output root")
            assert elapsed < 20, elapsed  # the check is in preflight: no Prefect API started
            assert "Starting temporary server" not in result.stdout
            assert snapshot(staging) == staged
        # stopped by SIGTERM while it starts: one line, the first run's staging untouched
        for delay in (0.3, 1.0, 2.5):
            process = subprocess.Popen(
                [RECSYS, *second], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=site,
                start_new_session=True, text=True,
            )  # fmt: skip
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            _, err = process.communicate(timeout=60)
            assert process.returncode in (2, 143), (process.returncode, err)
            assert snapshot(staging) == staged
        # the stop's cleanup, called by any other process: removes only a folder it made
        cleanup = (
            "from recsys.cli import RunGuard; import sys; print(RunGuard(sys.argv[1], 'same').cleanup())"
        )
        done = subprocess.run(
            [sys.executable, "-c", cleanup, str(site / "out")], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and done.stdout.strip() == "nothing published", done.stderr
        assert snapshot(staging) == staged
        hold.unlink()
        assert first.wait(timeout=240) == 0, log.seek(0) or log.read()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    assert storage.current_run_id(site / "out") == "same"
    assert storage.is_regular(site / "out" / "runs" / "same" / "_SUCCESS")


def test_a_stopped_run_still_removes_its_own_staging(workspace):
    root, env = workspace
    site = root / "own-staging"
    site.mkdir()
    first, hold, log, staging = _held_run(root, env, site, "mine")
    try:
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=30) == 143
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    assert not staging.exists()
    assert "nothing published" in (site / "mine.log").read_text()


# ---------------------------------------------------------------- special files never hang a reader


@pytest.fixture(scope="module")
def published(workspace):
    root, env = workspace
    site = root / "special"
    site.mkdir()
    config = yaml.safe_load((root / "c.yaml").read_text())
    config["input"]["path"] = str(root / "t.parquet")
    config["retention"] = {"keep_runs": 1}
    (site / "c.yaml").write_text(yaml.safe_dump(config))
    result = recsys("run", "--config", "c.yaml", "--run-id", "good", env=env, cwd=site)
    assert result.returncode == 0, result.stderr
    return site, env


def _remove(path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _special(path, kind: str) -> None:
    _remove(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reads for ever
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
@pytest.mark.parametrize(
    "name", ["_SUCCESS", "manifest.json", "data/users.parquet", "models/als/user_factors.npy"]
)
def test_a_special_file_in_a_run_is_a_damaged_run_never_a_hang(published, name, kind):
    site, env = published
    out = site / "out"
    damaged = f"bad-{kind}-{name.replace('/', '-')}"
    shutil.copytree(out / "runs" / storage.current_run_id(out), out / "runs" / damaged, symlinks=True)
    _special(out / "runs" / damaged / name, kind)
    lookup = recsys(
        "recommend", "--user", "1", "--run-id", damaged, "--output", "out", env=env, cwd=site, timeout=60
    )
    if name in ("_SUCCESS", "manifest.json"):
        _one_line(lookup, name)
        listing = recsys("runs", "--output", "out", "--json", env=env, cwd=site, timeout=60)
        assert listing.returncode == 0, listing.stderr
        rows = {row["run_id"]: row for row in json.loads(listing.stdout)}
        assert rows[damaged]["status"] == "unreadable" and name in rows[damaged]["models"], rows[damaged]
        api = (
            "import recsys, sys\n"
            "try:\n    recsys.open_run(sys.argv[1], sys.argv[2])\n"
            "except recsys.errors.RunError as exc:\n    print('refused', exc)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", api, str(out), damaged], capture_output=True, text=True, timeout=60
        )
        assert done.stdout.startswith("refused") and name in done.stdout, done.stdout + done.stderr
    else:  # a published file: refused when verified, before it is opened
        assert lookup.returncode == 2 and len(lookup.stderr.strip().splitlines()) == 1, lookup.stderr
    shutil.rmtree(out / "runs" / damaged)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_special_files_at_current_and_retention(published, kind):
    """CURRENT not a regular file: every reader says so in one line; a new run too, before
    it starts. A damaged run under retention is skipped or removed, never waited on."""
    site, env = published
    out = site / "out"
    for name in ("_SUCCESS", "manifest.json"):
        damaged = out / "runs" / f"old-{name}"
        shutil.copytree(out / "runs" / storage.current_run_id(out), damaged, symlinks=True)
        _special(damaged / name, kind)
    saved = (out / "CURRENT").read_text()
    _special(out / "CURRENT", kind)
    try:
        for argv in (
            ["recommend", "--user", "1", "--output", "out"],
            ["runs", "--output", "out"],
            ["run", "--config", "c.yaml", "--run-id", "blocked"],
        ):
            _one_line(recsys(*argv, env=env, cwd=site, timeout=60), "CURRENT")
        assert not (out / "runs" / "blocked").exists()
    finally:
        _remove(out / "CURRENT")
        (out / "CURRENT").write_text(saved)
    again = recsys("run", "--config", "c.yaml", "--run-id", f"after-{kind}", env=env, cwd=site, timeout=300)
    assert again.returncode == 0, again.stderr
    assert storage.current_run_id(out) == f"after-{kind}"
    # retention (keep 1): the run with a damaged _SUCCESS skipped, the other removed
    assert (out / "runs" / "old-_SUCCESS").exists()
    assert not (out / "runs" / "old-manifest.json").exists()
    shutil.rmtree(out / "runs" / "old-_SUCCESS")


# ---------------------------------------------------------------- output.mode


@pytest.mark.parametrize("mode", ["0777", "0666", "0664", "0646", "0622"])
def test_a_mode_that_lets_others_write_is_refused(workspace, mode):
    root, env = workspace
    config = yaml.safe_load((root / "c.yaml").read_text())
    config["output"] = {"root": "out-mode", "mode": mode}
    (root / f"mode-{mode}.yaml").write_text(yaml.safe_dump(config))
    result = recsys("run", "--config", f"mode-{mode}.yaml", env=env, cwd=root, timeout=120)
    _one_line(result, f"mode {mode} lets the group or others write")
    assert not (root / "out-mode").exists()


def test_a_special_file_as_an_input_is_one_line_never_a_hang(workspace, published):
    """The neighbours: a FIFO given as the config, the table, the import's source, the
    users to fold in or the query vector is refused in one line, never read for ever."""
    root, env = workspace
    site = root / "fifo-inputs"
    site.mkdir()
    for name in ("f.yaml", "f.parquet", "f.csv", "f.npy"):
        os.mkfifo(site / name)
    config, out = str(root / "c.yaml"), str(published[0] / "out")
    for argv, needle in (
        (["run", "--config", "f.yaml"], "not a regular file"),
        (["run", "--config", config, "--interactions", "f.parquet"], "is a FIFO"),
        (["run", "--config", config, "--interactions", "f.csv", "--output", "o"], "is a FIFO"),
        (["import", "table", "f.csv", "--output", "x.parquet"], "is a FIFO"),
        (["recommend", "--user-items", "f.csv", "--output", out], "f.csv: is a FIFO"),
        (["similar", "--vector", "f.parquet", "--output", out], "f.parquet"),
        (["similar", "--vector", "f.npy", "--output", out], "f.npy: is a FIFO"),
    ):
        _one_line(recsys(*argv, env=env, cwd=site, timeout=120), needle)


def test_a_foreign_current_file_is_never_replaced(workspace):
    """An output root pointed at a folder whose CURRENT recsys did not write: refused in
    one line, the file as it was (a CURRENT recsys wrote names a run id)."""
    root, env = workspace
    site = root / "foreign-current"
    site.mkdir()
    (site / "CURRENT").write_text("my notes\nsecond line\n")
    argv = ["run", "--config", str(root / "c.yaml"), "--output", str(site)]
    _one_line(recsys(*argv, env=env, cwd=site), "not a run id: not written by recsys")
    assert (site / "CURRENT").read_text() == "my notes\nsecond line\n"
    assert not (site / "runs").exists()
    lookup = recsys("recommend", "--user", "1", "--output", str(site), env=env, cwd=site)
    _one_line(lookup, "not a run id")


def test_promote_never_applies_a_mode_that_lets_others_write(published):
    """A manifest edited to say ``output.mode: 0777``: recsys promote refuses in one line,
    CURRENT as it was (its mode included)."""
    site, env = published
    out = site / "out"
    current = storage.current_run_id(out)
    forged = out / "runs" / "forged"
    shutil.copytree(out / "runs" / current, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["run_id"] = "forged"
    manifest["config"]["output"]["mode"] = "0777"
    (forged / "manifest.json").write_text(json.dumps(manifest))
    before = os.stat(out / "CURRENT")
    _one_line(recsys("promote", "forged", "--output", "out", env=env, cwd=site), "lets the group or others")
    assert storage.current_run_id(out) == current
    assert os.stat(out / "CURRENT").st_mode == before.st_mode
    shutil.rmtree(forged)
