"""The signal guard of the console script: Ctrl-C (SIGINT) and SIGTERM end any command at
once with one line on stderr and exit 130 / 143, with no child process left.

The signals never interrupt the main thread: :func:`install` routes them through
``signal.set_wakeup_fd`` to a watcher thread, so a KeyboardInterrupt can never land
inside a lock (logging's, a library's) and leave it held, and a stop does not wait for
the main thread to leave a long C call (a model fit, a matrix product). :func:`stop`
takes no lock a stuck thread could hold: it silences the process's output by pointing
its stdout and stderr at /dev/null (rather than through logging), ends the children, runs
the cleanups that commands registered (a run removes its staging folder), writes its
one line through a saved copy of stderr and leaves with ``os._exit``.

Standard library only: the console script installs it before anything else is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import NoReturn

_cleanups: dict[str, Callable[[], str | None]] = {}
_stopping = threading.Lock()
_installed = False


def install() -> None:
    """Route SIGINT and SIGTERM to the watcher thread (once per process; main thread only)."""
    global _installed
    if _installed:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: None)  # the watcher thread does the work
    threading.Thread(target=_watch, args=(read_fd,), name="recsys-signals", daemon=True).start()
    _installed = True
    import psutil  # noqa: F401  (now, not in the watcher while the main thread may be importing)


def _watch(read_fd: int) -> None:
    while True:
        number = os.read(read_fd, 1)[0]
        if number in (signal.SIGINT, signal.SIGTERM):
            break
    name = signal.Signals(number).name
    stop(128 + number, f"{'interrupted' if number == signal.SIGINT else 'terminated'} ({name})")


def on_stop(key: str, cleanup: Callable[[], str | None]) -> None:
    """Run ``cleanup`` when the process is stopped, after its children have ended; what it
    returns (``nothing published``) is added to the stop's line. A later cleanup under the
    same key replaces the earlier one."""
    _cleanups[key] = cleanup


def end_children(grace: float = 2.0) -> None:
    """Terminate every process this one started (and theirs), then kill what is left."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def stop(code: int, reason: str) -> NoReturn:
    """End the process now: one line ``recsys: REASON[; what the cleanups said]`` on stderr
    and exit ``code``. A second stop from another thread waits for the first to exit."""
    if not _stopping.acquire(blocking=False):
        threading.Event().wait()  # the first stop ends the process
    error = os.dup(2)
    with contextlib.suppress(OSError):
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)  # from here the one line below is all the process says: its
        os.dup2(quiet, 2)  # threads would log that the API (a child, ended now) went away
    outcomes = []
    with contextlib.suppress(Exception):
        end_children()
    for cleanup in list(_cleanups.values()):
        try:
            outcome = cleanup()
        except Exception as exc:  # noqa: BLE001  (the line must still be said)
            outcome = f"cleanup failed: {exc}"
        if outcome:
            outcomes.append(outcome)
    line = "; ".join([f"recsys: {reason}", *outcomes])
    with contextlib.suppress(OSError):
        os.write(error, (line + "\n").encode())
    os._exit(code)
