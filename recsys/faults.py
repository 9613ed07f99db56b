"""Named fail points for fault tests: with ``RECSYS_FAILPOINT=<name>`` in the
environment, the process kills itself with SIGKILL when it reaches that point, so a
test can prove what a crash there leaves behind. Without the variable a point costs one
dictionary lookup.

Points: ``after-fit``, ``index-before-replace``, ``parquet-before-replace``,
``publish-before-success``, ``publish-between-renames``, ``publish-before-current``.
Switches (several names, comma-separated): ``no-exchange`` makes publishing take the path
of filesystems without an atomic exchange of two folders. Hold points (``hold-before-publish``)
make the process wait there while the file ``RECSYS_HOLD`` names exists (at most 10 minutes),
so that a test can act while a run is staged; ``<RECSYS_HOLD>.reached`` says it is waiting
and holds the waiting process's id. Hold points: ``hold-before-publish``, and
``hold-mid-part`` (a list's part file half written: on Dask, in the worker that scores it).
"""

from __future__ import annotations

import os
import signal
import time


def enabled(name: str) -> bool:
    """Whether the environment names this point or switch."""
    value = os.environ.get("RECSYS_FAILPOINT")
    return value is not None and name in value.split(",")


def point(name: str) -> None:
    """Die here, at once and without cleanup, if the environment names this point."""
    if enabled(name):
        os.kill(os.getpid(), signal.SIGKILL)


def hold(name: str, limit: float = 600.0) -> None:
    """Wait here while the environment names this point and the file ``RECSYS_HOLD`` names
    exists (at most ``limit`` seconds)."""
    if not enabled(name):
        return
    flag = os.environ.get("RECSYS_HOLD")
    if flag:
        with open(f"{flag}.reached", "w") as reached:
            reached.write(str(os.getpid()))
    deadline = time.monotonic() + limit
    while flag and os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.1)
