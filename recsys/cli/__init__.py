"""The ``recsys`` command line: the front door, and the only package of ``recsys`` that
imports ``flows`` (and so Prefect), lazily, for the commands that orchestrate.

Errors: one line on stderr (``recsys: error: ...``) and exit status 2; ``--debug``
shows the traceback instead. Other exit statuses: 3 (the run's timeout), 4 (the run is
complete but the promotion gate held it: not made current; ``recsys promote`` makes it
current), 130 / 143 (SIGINT / SIGTERM), 141 (stdout closed).

Modules: :mod:`~recsys.cli.parser` (the options of each command),
:mod:`~recsys.cli.run` (run, promote, tune, deploy), :mod:`~recsys.cli.lookups`
(recommend, similar, runs), :mod:`~recsys.cli.inputs` (generate, import),
:mod:`~recsys.cli.guard` (the signal and process guard of a run) and
:mod:`~recsys.cli.formats` (the text and JSON of manifests). Launching the flows is
:mod:`flows.launch`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from recsys.cli.parser import build_parser
from recsys.errors import RecsysError

__all__ = ["RunGuard", "baseline_ranking", "build_parser", "compare_runs", "main", "run_summary"]

# imported on first use: `recsys --version` and `--help` load none of their libraries
_LAZY = {
    "RunGuard": "recsys.cli.guard",
    "baseline_ranking": "recsys.cli.formats",
    "compare_runs": "recsys.cli.lookups",
    "run_summary": "recsys.cli.formats",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    for name in ("recsys", "flows"):  # every module logs under its own name
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if getattr(args, "json", False) and "prefect" not in sys.modules:
        # stdout carries the JSON alone: progress lines go to stderr
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM"] = "ext://sys.stderr"
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is the except below
        return code
    except RecsysError as exc:
        if args.debug:
            raise
        print(f"recsys: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `recsys runs | head`: the reader has gone; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a full disk, a read-only or missing folder, ...
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"recsys: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
