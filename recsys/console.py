"""The ``recsys`` console script.

``recsys run`` and ``recsys tune`` report to a Prefect API. Where none is configured,
the temporary one is started here, first thing, before the CLI imports its libraries and
Prefect, so that it boots while they load (:mod:`flows.temporary_api`); then
:func:`recsys.cli.main` runs the command. A command that fails before its flow starts
(a bad config or input) stops it again at exit. Before all that, the signal guard
(:mod:`recsys.signals`): Ctrl-C and SIGTERM end every command with one line.
"""

from __future__ import annotations

import atexit
import os
import signal


def _early_stop(number: int, _frame: object) -> None:
    """Until the signal guard is installed: one line and out (nothing has started yet)."""
    name = signal.Signals(number).name
    os.write(2, f"recsys: {'interrupted' if number == signal.SIGINT else 'terminated'} ({name})\n".encode())
    os._exit(128 + number)


for _number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_number, _early_stop)


def _ignore_signals_at_the_end() -> None:
    """The last exit handler (registered first, so run last): the command is over and its
    exit status set, so Ctrl-C or SIGTERM now is ignored. Python's own teardown would
    otherwise give them their default action and the process would end killed, its status
    lost, after its one line was already written."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


atexit.register(_ignore_signals_at_the_end)

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
