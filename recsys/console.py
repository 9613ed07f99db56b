"""The ``recsys`` console script.

``recsys run`` and ``recsys tune`` report to a Prefect API. Where none is configured,
the temporary one is started here, first thing, before the CLI imports its libraries and
Prefect, so that it boots while they load (:mod:`flows.temporary_api`); then
:func:`recsys.cli.main` runs the command. A command that fails before its flow starts
(a bad config or input) stops it again at exit.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

ORCHESTRATED = ("run", "tune")


def orchestrates(args: Sequence[str]) -> bool:
    """Whether the command line runs a flow (the global options take no values)."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    return command in ORCHESTRATED and not {"-h", "--help"} & set(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if orchestrates(args):
        from flows import temporary_api

        if temporary_api.start_if_needed() is not None:
            # until the run installs its own handlers: exit through atexit, which stops it
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from recsys.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
