"""The ``recsys`` console script.

``recsys run`` and ``recsys tune`` report to a Prefect API. Where none is configured,
the temporary one is started here, first thing, before the CLI imports its libraries and
Prefect, so that it boots while they load (:mod:`flows.temporary_api`); then
:func:`recsys.cli.main` runs the command. A command that fails before its flow starts
(a bad config or input) stops it again at exit. Before all that, the signal guard
(:mod:`recsys.signals`): Ctrl-C and SIGTERM end every command with one line.
"""

from __future__ import annotations

import os
import signal


def _early_stop(number: int, _frame: object) -> None:
    """Until the signal guard is installed: one line and out (nothing has started yet)."""
    name = signal.Signals(number).name
    os.write(2, f"recsys: {'interrupted' if number == signal.SIGINT else 'terminated'} ({name})\n".encode())
    os._exit(128 + number)


for _number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_number, _early_stop)

import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from recsys import signals  # noqa: E402

ORCHESTRATED = ("run", "tune")


def orchestrates(args: Sequence[str]) -> bool:
    """Whether the command line runs a flow (the global options take no values)."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    return command in ORCHESTRATED and not {"-h", "--help"} & set(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # first thing: Ctrl-C and SIGTERM end any command with one line, its children with it
    signals.install()
    if orchestrates(args):
        from flows import temporary_api

        temporary_api.start_if_needed()
    from recsys.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
