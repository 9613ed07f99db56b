"""The ``recsys`` console script.

``recsys run`` and ``recsys tune`` report to a Prefect API. Where none is configured,
the temporary one is started here, first thing, before the CLI imports its libraries and
Prefect, so that it boots while they load (:mod:`flows.temporary_api`); then
:func:`recsys.cli.main` runs the command. A command that fails before its flow starts
(a bad config or input) stops it again at exit. Before all that, the signal guard
(:mod:`recsys.signals`): Ctrl-C and SIGTERM end every command with one line.

Run as the console script, the process ends as soon as the command's exit handlers have
run (:func:`_end_of_command`): the interpreter's own teardown of a run's libraries
(numba's compiler, BLAS thread pools, Prefect's clients) took about a second and does
nothing a finished command needs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal


def _early_stop(number: int, _frame: object) -> None:
    """Until the signal guard is installed: one line and out (nothing has started yet)."""
    name = signal.Signals(number).name
    os.write(2, f"recsys: {'interrupted' if number == signal.SIGINT else 'terminated'} ({name})\n".encode())
    os._exit(128 + number)


for _number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_number, _early_stop)


_status: list[int] = []
"""The console script's exit status, once its command has returned (or exited)."""


def _end_of_command() -> None:
    """The last exit handler (registered first, so run last): the command is over and its
    exit status set, so Ctrl-C or SIGTERM now is ignored. Python's own teardown would
    otherwise give them their default action and the process would end killed, its status
    lost, after its one line was already written.

    For the console script the process then ends here with that status: its threads have
    been joined and every other exit handler has run (Prefect's last logs and events sent,
    the temporary API stopped, logging flushed), so what is left is the interpreter tearing
    down modules, which no finished command needs. Without a recorded status (``main``
    called from Python, or a command that ended in an uncaught exception) Python ends as
    usual."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    if _status:
        for stream in (sys.stdout, sys.stderr):
            # a closed pipe (`recsys ... | head`), a closed stream: nothing more to write
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(_status[0])


import sys  # noqa: E402

atexit.register(_end_of_command)

from collections.abc import Sequence  # noqa: E402

from recsys import signals  # noqa: E402

ORCHESTRATED = ("run", "tune")


def orchestrates(args: Sequence[str]) -> bool:
    """Whether the command line runs a flow (the global options take no values)."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    return command in ORCHESTRATED and not {"-h", "--help"} & set(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script (``argv`` None: the process's arguments, and its exit status
    recorded for :func:`_end_of_command`), or a command line run from Python."""
    if argv is not None:
        return _command(list(argv))
    try:
        code = _command(sys.argv[1:])
    except SystemExit as exc:
        _status.append(_exit_code(exc.code))
        raise
    _status.append(_exit_code(code))
    return code


def _exit_code(code: object) -> int:
    """The status Python gives ``sys.exit(code)``: 0 for None, the number, else 1 (the
    message printed)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _command(args: list[str]) -> int:
    # first thing: Ctrl-C and SIGTERM end any command with one line, its children with it
    signals.install()
    if orchestrates(args):
        from flows import temporary_api

        temporary_api.start_if_needed()
    from recsys.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
