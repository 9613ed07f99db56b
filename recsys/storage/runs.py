"""The run protocol: run ids, the root lock, staging, publishing, CURRENT, retention.

Publishing (nothing is ever half-written where a reader can see it):

1. A run is written into ``<root>/runs/.staging-<run_id>`` (a hidden folder: readers
   and dataset scanners skip names starting with ``.``).
2. Every file is written to a temp name in its folder, fsynced, then ``os.replace``d.
3. ``manifest.json`` is written last into the staging folder, which is then renamed to
   ``<root>/runs/<run_id>`` in one step; ``_SUCCESS`` is written into it after that.
4. ``<root>/CURRENT`` (the id of the current run) is replaced atomically, then
   ``<root>/latest``, a relative symlink to ``runs/<run_id>``, is switched the same way
   (a temporary symlink beside it, ``os.replace``d): the fixed path downstream readers
   use. Both only ever name a complete run; where a crash fell between the two, the
   next run (or ``recsys promote``) points ``latest`` at what ``CURRENT`` names.

A complete run that fails the promotion gate is published without step 4 (it is
*held*: see :mod:`recsys.stages.publish`); ``recsys promote`` takes it there by hand.

A run folder without ``_SUCCESS`` is incomplete: readers ignore it and the next run
removes it. A failed run never reaches step 3: the previous run and ``CURRENT`` are
untouched. One run at a time publishes to a root (an exclusive lock on
``<root>/.lock``); lookups hold a shared lock on the run they read, which retention
respects. :class:`PublishTransaction` is the whole protocol as one context manager.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys import faults
from recsys.errors import RunError
from recsys.storage.files import (
    FILE_MODE,
    NotRegularFile,
    apply_mode,
    folder_mode,
    fsync_dir,
    is_regular,
    kind_of,
    open_regular,
    read_json,
    read_text,
    write_text,
)
from recsys.storage.layout import RunLayout

log = logging.getLogger(__name__)

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


MARKER = ".recsys-run"
"""Written into a run folder when this program starts the run: cleanup and retention
delete only folders that carry it, never anything else under ``runs/``. Its second line
is the owner token of the process that made the folder (:data:`OWNER_TOKEN`)."""
HIDDEN_PREFIXES = (".staging-", ".replaced-", ".deleting-")

OWNER_TOKEN = f"{os.getpid()}-{secrets.token_hex(8)}"
"""This process's token, written into every staging folder it makes: a process removes a
staging folder only where the token is its own (:func:`remove_own_staging`), never one
that another process (a second writer with the same run id) is writing."""


def _foreign(folder: Path) -> str | None:
    """Why ``folder`` (a run or staging folder name under ``runs/``) may not be replaced
    or removed by this program, or None where nothing is there or it is this program's."""
    if not os.path.lexists(folder):
        return None
    if folder.is_symlink():
        return "is a symlink, not a folder made by recsys"
    if not folder.is_dir():
        return f"is {kind_of(folder) or 'a file'}, not a folder made by recsys"
    if not is_ours(folder):
        return f"was not made by recsys (no {MARKER} in it)"
    return None


def check_run_folders(root: str | Path, run_id: str) -> None:
    """Refuse (one-line RunError) a run id whose folder ``runs/<id>`` or staging folder
    ``runs/.staging-<id>`` exists and is not this program's: a run never replaces nor
    deletes what it did not make."""
    for layout in (RunLayout(Path(root), run_id, staging=False), RunLayout(Path(root), run_id)):
        problem = _foreign(layout.dir)
        if problem:
            raise RunError(
                f"{layout.dir} {problem}: refused to replace it (use another --run-id, or move it away)"
            )


def start_run(root: str | Path, run_id: str | None = None) -> RunLayout:
    """Create a fresh staging folder for a run, marked as this program's and owned by this
    process; a stale staging folder of the same id that this program made goes (call with
    the root lock held: its writer is gone). Refused where ``runs/<id>`` or its staging
    folder exists and is not this program's (:func:`check_run_folders`)."""
    run = RunLayout(Path(root), check_run_id(new_run_id() if run_id is None else run_id))
    check_run_folders(root, run.run_id)
    if run.dir.exists():
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True)
    write_text(run.dir / MARKER, f"{run.run_id}\n{OWNER_TOKEN}\n")
    return run


def owns_staging(run: RunLayout) -> bool:
    """Whether this process made the staging folder of ``run`` (its owner token)."""
    try:
        lines = read_text(run.dir / MARKER).split()
    except (OSError, ValueError):
        return False
    return lines[1:2] == [OWNER_TOKEN]


def remove_own_staging(run: RunLayout, settle: float = 0.0) -> bool:
    """Remove the staging folder of ``run`` if this process made it (and only then: a
    second writer with the same run id never removes the first's). ``settle``: keep
    removing what this process's threads still write into it for up to that many
    seconds, until it stays away. Returns whether it was this process's."""
    if not owns_staging(run):
        return False
    deadline = time.monotonic() + settle
    while True:
        shutil.rmtree(run.dir, ignore_errors=True)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
        if not run.dir.exists():
            break
    return True


def check_output_root(root: str | Path, file_mode: int = FILE_MODE) -> Path:
    """The output root exists (created if need be) and can be written: a one-line
    RunError otherwise (a file in its place, a read-only filesystem, no permission)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunError(f"{root}: the output root is a file, expected a folder")
    try:
        if not root.exists():
            root.mkdir(parents=True)
            os.chmod(root, folder_mode(file_mode))
        probe = root / f".write-test-{os.getpid()}-{secrets.token_hex(3)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"{root}: cannot write to the output root ({exc.strerror or exc})") from None
    return root


def check_can_start(root: str | Path, run_id: str | None = None) -> None:
    """What refuses a run before it starts anything (a one-line RunError, in milliseconds
    rather than once Prefect is up): another process holds the root lock (it is writing a
    run there: the lock is held from staging to publishing), ``CURRENT`` is damaged, or
    ``run_id``'s folders are not this program's. Takes the lock only for the test."""
    root = Path(root)
    with root_lock(root):
        pass
    current_run_id(root)
    if run_id is not None:
        check_run_folders(root, check_run_id(run_id))


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


def is_ours(folder: Path) -> bool:
    """Whether this program made a run folder (it carries the marker)."""
    return (folder / MARKER).is_file()


def _recover_replaced(root: Path) -> None:
    """Where a same-id republish was cut between its two renames (only on filesystems
    without an atomic exchange), put the complete run back under its name."""
    current = current_run_id(root)
    runs = root / "runs"
    if current is None or os.path.lexists(runs / current / "_SUCCESS"):
        return
    for entry in sorted(runs.glob(f".replaced-{current}-*")):
        if is_regular(entry / "_SUCCESS") and is_ours(entry) and not os.path.lexists(runs / current):
            os.replace(entry, runs / current)
            log.warning("restored run %s, which CURRENT names, from %s", current, entry.name)
            sync_latest(root)
            return


LATEST = "latest"
"""The symlink beside ``CURRENT`` that names the current run's folder."""
PROMOTED = "_PROMOTED"
"""Written into a held run's folder when ``recsys promote`` makes it current."""


def switch_current(root: str | Path, run_id: str, file_mode: int = FILE_MODE) -> None:
    """Point ``CURRENT`` and then ``latest`` at a complete run, each replaced in one
    step: ``CURRENT`` is written to a temp file, ``latest`` made as a temp symlink beside
    it, and each ``os.replace``d. A reader never finds either missing or naming an
    incomplete run. Call with the root lock held."""
    root = Path(root)
    if not is_regular(root / "runs" / run_id / "_SUCCESS"):
        raise RunError(f"{root / 'runs' / run_id}: run is missing or incomplete (no _SUCCESS)")
    write_text(root / "CURRENT", run_id + "\n", file_mode)
    fsync_dir(root)
    faults.point("publish-before-latest")
    _point_latest(root, run_id)


def latest_target(root: str | Path) -> str | None:
    """The run id ``<root>/latest`` points at (None: no symlink, or not ``runs/<id>``)."""
    link = Path(root) / LATEST
    if not link.is_symlink():
        return None
    target = os.readlink(link)
    parts = target.split("/")
    return parts[1] if len(parts) == 2 and parts[0] == "runs" else None


def _point_latest(root: Path, run_id: str) -> bool:
    """Switch ``latest`` to ``runs/<run_id>``; False, with a warning, where it cannot be
    (a folder of that name, a filesystem without symlinks): ``CURRENT`` has moved already,
    and nothing after that may fail a published run."""
    link = root / LATEST
    if link.exists() and not link.is_symlink():
        log.warning("left %s alone: it is not a symlink made by recsys", link)
        return False
    tmp = root / f".{LATEST}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        os.symlink(f"runs/{run_id}", tmp)
        os.replace(tmp, link)
        fsync_dir(root)
    except OSError as exc:
        log.warning("could not point %s at runs/%s (%s); CURRENT names it", link, run_id, exc.strerror or exc)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True


def sync_latest(root: str | Path) -> None:
    """Make ``latest`` name the run ``CURRENT`` names, where a crash fell between the two
    switches, or the root predates ``latest``. Call with the root lock held."""
    root = Path(root)
    current = current_run_id(root)
    if current is None or not is_regular(root / "runs" / current / "_SUCCESS"):
        return
    for stale in root.glob(f".{LATEST}.tmp-*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    if latest_target(root) != current and _point_latest(root, current):
        log.info("pointed %s at runs/%s, the run CURRENT names", root / LATEST, current)


def clean_stale_staging(root: str | Path) -> list[str]:
    """Remove what killed runs of this program left (call with the root lock held): hidden
    staging, replaced and deleting folders that carry the marker. Anything else under
    ``runs/`` is left alone; every deletion is logged."""
    runs = Path(root) / "runs"
    removed = []
    if not runs.is_dir():
        return removed
    _recover_replaced(Path(root))
    sync_latest(root)
    for entry in sorted(runs.iterdir()):
        if not entry.is_dir() or entry.is_symlink() or not entry.name.startswith(HIDDEN_PREFIXES):
            continue
        if not is_ours(entry):
            log.warning("left %s alone: not made by recsys (no %s)", entry, MARKER)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed %s, left unfinished by an earlier run", entry)
        removed.append(entry.name)
    return removed


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or filesystem cannot."""
    if faults.enabled("no-exchange"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return result == 0


def publish_run(
    run: RunLayout, manifest: str, move_current: bool = True, file_mode: int = FILE_MODE
) -> RunLayout:
    """Publish a staged run: ``manifest`` (the text of ``manifest.json``:
    ``RunManifest.to_json()``) and ``_SUCCESS`` into the staging folder, then the
    complete folder into place in one step, then ``CURRENT`` and ``latest`` pointed at it.

    A crash before the folder is in place leaves only the hidden staging folder (removed
    by the next run); a crash after it leaves a complete run that is not current. A
    re-run with an id that is already published swaps the two folders atomically, so the
    id always names a complete run. ``move_current=False`` publishes without moving
    ``CURRENT`` or ``latest`` (evaluation runs, runs held by the promotion gate). Every
    file gets ``file_mode``, every folder the same with ``x`` where there is ``r``,
    whatever the umask."""
    faults.hold("hold-before-publish")
    problem = _foreign(run.published().dir)
    if problem:  # appeared while the run was staged: never replaced
        raise RunError(f"{run.published().dir} {problem}: refused to replace it; the run is not published")
    write_text(run.manifest, manifest)
    faults.point("publish-before-success")
    write_text(run.success, run.run_id + "\n")
    apply_mode(run.dir, file_mode)
    os.chmod(run.runs_dir, folder_mode(file_mode))
    fsync_dir(run.dir)
    final = run.published()
    replaced = None
    if final.dir.exists():  # a re-run with the same --run-id replaces that run whole
        replaced = final.dir.with_name(f".replaced-{run.run_id}-{secrets.token_hex(3)}")
        if _exchange(run.dir, final.dir):
            os.replace(run.dir, replaced)  # the old run, now at the staging name
        else:
            os.replace(final.dir, replaced)
            faults.point("publish-between-renames")
            os.replace(run.dir, final.dir)
    else:
        os.replace(run.dir, final.dir)
    fsync_dir(final.dir.parent)
    faults.point("publish-before-current")
    if move_current:
        switch_current(run.root, run.run_id, file_mode)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return final


@contextlib.contextmanager
def reading(run: RunLayout) -> Iterator[None]:
    """Hold a shared lock on a published run while reading it: retention skips such runs."""
    with os.fdopen(open_regular(run.success), "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        yield


def is_held(manifest: dict[str, Any] | None) -> bool:
    """Whether a run's manifest (raw JSON) says the promotion gate held it back."""
    promotion = (manifest or {}).get("promotion") or {}
    return promotion.get("gate") == "failed"


def pending_held_run(root: str | Path) -> str | None:
    """The held run still waiting for a decision: the newest complete run, published after
    the current one, that the promotion gate held back (and nobody promoted since). A
    newer held run supersedes an older one; a run made current supersedes them all."""
    current = current_run_id(root)
    for entry in list_runs(root):
        if entry["run_id"] == current:
            return None
        if entry["status"] == "complete" and is_held(entry["manifest"]):
            promoted = (Path(root) / "runs" / entry["run_id"] / PROMOTED).exists()
            return None if promoted else entry["run_id"]
    return None


def apply_retention(root: str | Path, keep_runs: int) -> list[str]:
    """Delete the oldest complete runs of this program beyond ``keep_runs`` (newest
    first by publication), never CURRENT (nor the run ``latest`` names), never the held
    run waiting to be promoted (:func:`pending_held_run`), never a run a reader holds,
    never a folder this program did not make. Each run goes first to a hidden name (one
    rename), then is removed. What cannot be removed is skipped with a warning: retention
    never fails a run that is already published. Call with the root lock held."""
    current = current_run_id(root)
    spared = {current, latest_target(root), pending_held_run(root)} - {None}
    complete = [r for r in list_runs(root) if r["status"] == "complete"]
    ours = [r["run_id"] for r in complete if is_ours(Path(root) / "runs" / r["run_id"])]
    for foreign in sorted({r["run_id"] for r in complete} - set(ours)):
        log.warning("retention: left runs/%s alone: not made by recsys (no %s)", foreign, MARKER)
    removed = []
    for run_id in ours[keep_runs:]:
        if run_id in spared:
            continue
        run = RunLayout(Path(root), run_id, staging=False)
        try:
            with os.fdopen(open_regular(run.success), "rb") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a lookup is reading it
                doomed = run.dir.with_name(f".deleting-{run_id}-{secrets.token_hex(3)}")
                os.replace(run.dir, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        except OSError as exc:
            log.warning("retention: could not remove runs/%s (%s); left in place", run_id, exc)
            continue
        log.info("retention: removed runs/%s", run_id)
        removed.append(run_id)
    return removed


def current_run_id(root: str | Path) -> str | None:
    """The id ``CURRENT`` names (None: no ``CURRENT``). A one-line RunError where it is not
    a regular file (a FIFO would block a reader for ever), cannot be read, or holds no
    run id (a file recsys did not write: a run refuses to replace it)."""
    path = Path(root) / "CURRENT"
    if not path.exists():
        return None
    try:
        text = read_text(path).strip()
    except NotRegularFile as exc:
        raise RunError(f"{path}: {exc.strerror}") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot read CURRENT ({getattr(exc, 'strerror', None) or exc})") from None
    if text and (not RUN_ID_PATTERN.fullmatch(text) or ".." in text):
        shown = text[:60] + ("..." if len(text) > 60 else "")
        raise RunError(f"{path}: holds {shown!r}, not a run id: not written by recsys (or damaged)")
    return text or None


def find_run(root: str | Path, run_id: str | None = None) -> RunLayout:
    """A complete published run (CURRENT by default): a one-line RunError where there is
    none or it is incomplete."""
    root = Path(root)
    run_id = run_id or current_run_id(root)
    if run_id is None:
        raise RunError(f"{root}: no published run (CURRENT is missing); run `recsys run` first")
    run = RunLayout(root, check_run_id(run_id), staging=False)
    kind = kind_of(run.success)
    if kind is not None:
        raise RunError(f"{run.success}: is {kind}, not the file recsys writes: a damaged run")
    if not is_regular(run.success):
        raise RunError(f"{run.dir}: run is missing or incomplete (no _SUCCESS)")
    return run


def _published_at(run_dir: Path) -> float:
    """When a run was published (its _SUCCESS), or last changed if it never was."""
    success = run_dir / "_SUCCESS"
    return success.stat().st_mtime if os.path.lexists(success) else run_dir.stat().st_mtime


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run folder with its status (complete/incomplete, or unreadable where its
    ``_SUCCESS`` is not a regular file: ``problem`` says what it is), newest first, and
    its manifest as raw JSON (None where it is missing, not a regular file or not JSON):
    ``recsys.manifest`` validates it. Nothing here opens anything but regular files."""
    runs_dir = Path(root) / "runs"
    current = current_run_id(root)
    listed = []
    if not runs_dir.is_dir():
        return listed
    entries = []
    for entry in runs_dir.iterdir():
        if entry.is_symlink() or not entry.is_dir() or entry.name.startswith((".", "_")):
            continue
        with contextlib.suppress(OSError):
            entries.append((_published_at(entry), entry))
    for _, entry in sorted(entries, key=lambda pair: pair[0], reverse=True):
        kind = kind_of(entry / "_SUCCESS")
        complete = kind is None and is_regular(entry / "_SUCCESS")
        manifest = None
        if complete:
            with contextlib.suppress(OSError, ValueError):
                manifest = read_json(entry / "manifest.json")
        listed.append(
            {
                "run_id": entry.name,
                "status": "unreadable" if kind else "complete" if complete else "incomplete",
                "current": entry.name == current,
                "manifest": manifest,
                **({"problem": f"_SUCCESS is {kind}, not the file recsys writes"} if kind else {}),
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
            transaction.publish(manifest.to_json())
    """

    def __init__(
        self,
        root: str | Path,
        run_id: str | None = None,
        keep_runs: int | None = None,
        file_mode: int = FILE_MODE,
    ):
        self.root = Path(root)
        self.run_id = check_run_id(new_run_id() if run_id is None else run_id)
        self.keep_runs = keep_runs
        self.file_mode = file_mode
        self.published: RunLayout | None = None
        self.removed: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> PublishTransaction:
        check_output_root(self.root, self.file_mode)
        self._stack.enter_context(root_lock(self.root))
        try:
            for name in clean_stale_staging(self.root):
                log.info("removed what an earlier run left unfinished: runs/%s", name)
            self.run = start_run(self.root, self.run_id)
        except BaseException:
            self._stack.close()
            raise
        return self

    def publish(self, manifest: str, move_current: bool = True) -> RunLayout:
        """Publish the staged run with its manifest (the text of ``manifest.json``), then
        apply retention. Once the run is
        published nothing here raises: a retention problem is a warning."""
        self.published = publish_run(self.run, manifest, move_current, self.file_mode)
        if self.keep_runs:
            try:
                self.removed = apply_retention(self.root, self.keep_runs)
            except Exception as exc:  # noqa: BLE001  (the run is published: only warn)
                log.warning("retention skipped: %s", exc)
        return self.published

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if self.published is None and hasattr(self, "run"):
                remove_own_staging(self.run)
        finally:
            self._stack.close()
