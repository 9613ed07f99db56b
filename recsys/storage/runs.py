"""The run protocol: run ids, the root lock, staging, publishing, CURRENT, retention.

Publishing (nothing is ever half-written where a reader can see it):

1. A run is written into ``<root>/runs/.staging-<run_id>`` (a hidden folder: readers
   and dataset scanners skip names starting with ``.``).
2. Every file is written to a temp name in its folder, fsynced, then ``os.replace``d.
3. ``manifest.json`` is written last into the staging folder, which is then renamed to
   ``<root>/runs/<run_id>`` in one step; ``_SUCCESS`` is written into it after that.
4. ``<root>/CURRENT`` (the id of the newest complete run) is replaced atomically.

A run folder without ``_SUCCESS`` is incomplete: readers ignore it and the next run
removes it. A failed run never reaches step 3: the previous run and ``CURRENT`` are
untouched. One run at a time publishes to a root (an exclusive lock on
``<root>/.lock``); lookups hold a shared lock on the run they read, which retention
respects. :class:`PublishTransaction` is the whole protocol as one context manager.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys import faults
from recsys.errors import RunError
from recsys.storage.files import fsync_dir, read_json, write_json, write_text
from recsys.storage.layout import RunLayout

log = logging.getLogger("recsys.storage")

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus random hex."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise RunError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '_', '-', '.', "
            "starting with a letter or digit, no '..'"
        )
    return run_id


def start_run(root: str | Path, run_id: str | None = None) -> RunLayout:
    """Create a fresh staging folder for a run; stale staging folders of the same id go."""
    run = RunLayout(Path(root), check_run_id(new_run_id() if run_id is None else run_id))
    if run.dir.exists():
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True)
    return run


@contextlib.contextmanager
def root_lock(root: str | Path) -> Iterator[None]:
    """Exclusive lock on an output root: one run publishes at a time."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{root}: another recsys run is writing to this output root") from None
        yield


def clean_stale_staging(root: str | Path) -> list[str]:
    """Remove what killed runs left (call with the root lock held): staging folders, and
    run folders moved into place whose ``_SUCCESS`` was never written."""
    runs = Path(root) / "runs"
    removed = []
    if runs.is_dir():
        for entry in runs.iterdir():
            if not entry.is_dir():
                continue
            hidden = entry.name.startswith((".staging-", ".replaced-", ".deleting-"))
            unfinished = (
                not hidden and not (entry / "_SUCCESS").exists() and (entry / "manifest.json").exists()
            )
            if hidden or unfinished:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def publish_run(run: RunLayout, manifest: dict[str, Any]) -> RunLayout:
    """Publish a staged run: manifest into the staging folder, the folder renamed into
    place, ``_SUCCESS`` written, then ``CURRENT`` pointed at it. A crash before
    ``_SUCCESS`` leaves a run folder without it (incomplete; removed by the next run); a
    crash before ``CURRENT`` moves leaves a complete run that is not current."""
    write_json(run.manifest, manifest)
    fsync_dir(run.dir)
    final = run.published()
    replaced = None
    if final.dir.exists():  # a re-run with the same --run-id replaces that run whole
        replaced = final.dir.with_name(f".replaced-{run.run_id}-{secrets.token_hex(3)}")
        os.replace(final.dir, replaced)
    os.replace(run.dir, final.dir)
    fsync_dir(final.dir.parent)
    faults.point("publish-before-success")
    write_text(final.success, run.run_id + "\n")
    fsync_dir(final.dir)
    faults.point("publish-before-current")
    write_text(run.root / "CURRENT", run.run_id + "\n")
    fsync_dir(run.root)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return final


@contextlib.contextmanager
def reading(run: RunLayout) -> Iterator[None]:
    """Hold a shared lock on a published run while reading it: retention skips such runs."""
    with open(run.dir / "_SUCCESS") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        yield


def apply_retention(root: str | Path, keep_runs: int) -> list[str]:
    """Delete the oldest complete runs beyond ``keep_runs`` (by creation order of run ids
    as listed, newest first), never CURRENT and never a run a reader holds. Each run goes
    first to a hidden name (one rename), then is removed. Call with the root lock held."""
    current = current_run_id(root)
    complete = [r["run_id"] for r in list_runs(root) if r["status"] == "complete"]
    removed = []
    for run_id in complete[keep_runs:]:
        if run_id == current:
            continue
        run = RunLayout(Path(root), run_id, staging=False)
        with open(run.dir / "_SUCCESS") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a lookup is reading it
            doomed = run.dir.with_name(f".deleting-{run_id}")
            os.replace(run.dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(run_id)
    return removed


def current_run_id(root: str | Path) -> str | None:
    path = Path(root) / "CURRENT"
    if not path.exists():
        return None
    return path.read_text().strip() or None


def find_run(root: str | Path, run_id: str | None = None) -> RunLayout:
    """A complete published run (CURRENT by default): a one-line RunError where there is
    none or it is incomplete."""
    root = Path(root)
    run_id = run_id or current_run_id(root)
    if run_id is None:
        raise RunError(f"{root}: no published run (CURRENT is missing); run `recsys run` first")
    run = RunLayout(root, check_run_id(run_id), staging=False)
    if not (run.dir / "_SUCCESS").exists():
        raise RunError(f"{run.dir}: run is missing or incomplete (no _SUCCESS)")
    return run


def open_run(root: str | Path, run_id: str | None = None) -> tuple[RunLayout, dict[str, Any]]:
    """A complete published run (CURRENT by default) and its manifest as raw JSON."""
    run = find_run(root, run_id)
    return run, read_json(run.manifest)


def _published_at(run_dir: Path) -> float:
    """When a run was published (its _SUCCESS), or last changed if it never was."""
    success = run_dir / "_SUCCESS"
    return success.stat().st_mtime if success.exists() else run_dir.stat().st_mtime


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run folder with its status (complete/incomplete), newest first, and its
    manifest as raw JSON (None where it is missing or not JSON): ``recsys.manifest``
    validates it."""
    runs_dir = Path(root) / "runs"
    current = current_run_id(root)
    listed = []
    if not runs_dir.is_dir():
        return listed
    entries = [e for e in runs_dir.iterdir() if e.is_dir() and not e.name.startswith((".", "_"))]
    for entry in sorted(entries, key=_published_at, reverse=True):
        complete = (entry / "_SUCCESS").exists()
        manifest = None
        if complete:
            with contextlib.suppress(OSError, ValueError):
                manifest = read_json(entry / "manifest.json")
        listed.append(
            {
                "run_id": entry.name,
                "status": "complete" if complete else "incomplete",
                "current": entry.name == current,
                "manifest": manifest,
            }
        )
    return listed


class PublishTransaction:
    """One run's write to an output root, start to finish: the root lock, cleanup of what
    killed runs left, a fresh staging folder, and on :meth:`publish` the protocol above
    plus retention. Leaving the block without publishing (an error, a signal) removes
    the staging folder; the previous run and ``CURRENT`` stay as they were.

    ::

        with PublishTransaction(root, run_id, keep_runs=5) as transaction:
            write files under transaction.run (a staging RunLayout)
            transaction.publish(manifest_dict)
    """

    def __init__(self, root: str | Path, run_id: str | None = None, keep_runs: int | None = None):
        self.root = Path(root)
        self.run_id = check_run_id(new_run_id() if run_id is None else run_id)
        self.keep_runs = keep_runs
        self.published: RunLayout | None = None
        self.removed: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> PublishTransaction:
        self._stack.enter_context(root_lock(self.root))
        try:
            for name in clean_stale_staging(self.root):
                log.info("removed what an earlier run left unfinished: runs/%s", name)
            self.run = start_run(self.root, self.run_id)
        except BaseException:
            self._stack.close()
            raise
        return self

    def publish(self, manifest: dict[str, Any]) -> RunLayout:
        """Publish the staged run with its manifest, then apply retention."""
        self.published = publish_run(self.run, manifest)
        if self.keep_runs:
            self.removed = apply_retention(self.root, self.keep_runs)
        return self.published

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if self.published is None and hasattr(self, "run"):
                shutil.rmtree(self.run.dir, ignore_errors=True)
        finally:
            self._stack.close()
