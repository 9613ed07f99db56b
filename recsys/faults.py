"""Named fail points for fault tests: with ``RECSYS_FAILPOINT=<name>`` in the
environment, the process kills itself with SIGKILL when it reaches that point, so a
test can prove what a crash there leaves behind. Without the variable a point costs one
dictionary lookup.

Points: ``after-fit``, ``index-before-replace``, ``parquet-before-replace``,
``publish-before-success``, ``publish-before-current``.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Die here, at once and without cleanup, if the environment names this point."""
    if os.environ.get("RECSYS_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
