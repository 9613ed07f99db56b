"""The argparse parser of the ``recsys`` command line."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any, TypeAlias

from recsys import __version__

DEFAULT_OUTPUT = "data/outputs"


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], Any]:
    """A command's function, imported when it is called: parsing the command line (and
    ``--help`` and ``--version``) imports none of the libraries the commands use."""

    def command(args: argparse.Namespace) -> Any:
        return getattr(importlib.import_module(f"recsys.cli.{module}"), name)(args)

    command.__name__ = command.__qualname__ = name
    return command


cmd_generate = _lazy("inputs", "cmd_generate")
cmd_import = _lazy("inputs", "cmd_import")
cmd_recommend = _lazy("lookups", "cmd_recommend")
cmd_runs = _lazy("lookups", "cmd_runs")
cmd_similar = _lazy("lookups", "cmd_similar")
cmd_deploy = _lazy("run", "cmd_deploy")
cmd_promote = _lazy("run", "cmd_promote")
cmd_run = _lazy("run", "cmd_run")
cmd_tune = _lazy("run", "cmd_tune")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, found {value}")
    return value


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, found {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, found {text}")
    return value


class _HelpFormatter(argparse.HelpFormatter):
    """Appends an option's default to its help once: not where the help text already says
    its default (``default: ...``), and not for a default of None, False or SUPPRESS, which
    say nothing (argparse's ArgumentDefaultsHelpFormatter adds ``(default: None)`` to every
    option whose help lacks ``%(default)s``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


# The registries' names, here so that building the parser imports none of the libraries
# (numpy, pandas, the models); tests/test_cli_help.py checks them against the registries.
FOLD_IN_TYPES = ("als", "spectral", "popular", "blend")  # recsys.models.MODEL_TYPES that fold users in
IMPORT_FORMATS = ("movielens-100k", "movielens-1m", "movielens", "lastfm-hetrec", "lastfm-360k", "table")
IMPORT_WEIGHTINGS = ("none", "binary", "log", "bm25", "tfidf")  # recsys.storage.importers


def _fold_in_types() -> str:
    """The registered model types that fold new users in (those that define ``fold_in``)."""
    names = list(FOLD_IN_TYPES)
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


FORCE_HELP = (
    "replace output files that exist (without it the command refuses them); never a folder, a "
    "special file, or one of the command's own inputs"
)


# what add_subparsers returns: each command adds its parser to it
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Batch recommendations: train embeddings, index them, publish top-N lists and "
        "similar items as parquet, and answer lookups from the published run.",
        epilog="Run `recsys COMMAND --help` for a command's options. Errors are one line on stderr "
        "(--debug shows the traceback); exit status 2: bad input or config, 3: a run stopped by its "
        "timeout or the loss of its Prefect API, 4: a run the promotion gate held, 130 / 143: "
        "Ctrl-C / SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"recsys {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress lines: only results and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (
        _add_run,
        _add_promote,
        _add_recommend,
        _add_similar,
        _add_runs,
        _add_deploy,
        _add_tune,
        _add_import,
        _add_generate,
    ):
        add_command(sub)
    return parser


def _command(sub: Subcommands, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command's parser, with the global --quiet and --debug also after the command."""
    command = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        formatter_class=_HelpFormatter,
    )
    command.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress lines: only results and errors",
    )
    command.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks on errors",
    )
    return command


def _add_run(sub: Subcommands) -> None:
    run = _command(sub, "run", "train, index, recommend, evaluate and publish one run")
    run.add_argument(
        "--config",
        default=None,
        help="pipeline YAML (default: the packaged production config, one ALS model)",
    )
    run.add_argument("--interactions", help="interactions table, parquet or CSV (default: input.path)")
    run.add_argument("--output", help="output root (default: output.root of the config)")
    run.add_argument("--run-id", help="run id (default: UTC time + random suffix)")
    run.add_argument(
        "--timeout", type=float, help="seconds before the run is stopped (default: run.timeout_seconds)"
    )
    run.add_argument("--holdout", help="test table for ranking metrics (overrides evaluate.holdout)")
    run.add_argument("--models", help="comma-separated model names to (re)train; others carried over")
    run.add_argument("--json", action="store_true", help="print the published manifest as JSON")
    run.add_argument(
        "--no-gate",
        action="store_true",
        help="make the run current without the promotion gate's checks against the current run",
    )
    run.set_defaults(func=cmd_run)


def _add_promote(sub: Subcommands) -> None:
    promote = _command(
        sub,
        "promote",
        "make a complete run current (CURRENT and latest), such as one the promotion gate held, "
        "after verifying its files",
    )
    promote.add_argument("run_id", metavar="RUN_ID", help="the run to make current")
    promote.add_argument("--output", default=DEFAULT_OUTPUT, help="output root")
    promote.set_defaults(func=cmd_promote)


def _add_recommend(sub: Subcommands) -> None:
    command = _command(sub, "recommend", "top-N unseen items for one user from the current run")
    who = command.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="external user id")
    who.add_argument(
        "--user-items",
        help="table of user_id, item_id[, weight] of new or changed users: folded in "
        f"against the run's item factors ({_fold_in_types()} models), no retraining",
    )
    command.add_argument(
        "--fallback",
        choices=("none", "popular"),
        default="none",
        help="for a --user the run does not know: none (an error) or popular "
        "(the items most users of the run interacted with)",
    )
    _lookup_options(command)
    command.set_defaults(func=cmd_recommend)


def _add_similar(sub: Subcommands) -> None:
    command = _command(sub, "similar", "items most similar to one item from the current run")
    what = command.add_mutually_exclusive_group(required=True)
    what.add_argument("--item", help="external item id")
    what.add_argument("--vector", help="a query vector (.npy, or a one-row parquet): the nearest items")
    _lookup_options(command)
    command.set_defaults(func=cmd_similar)


def _lookup_options(command: argparse.ArgumentParser) -> None:
    """The options recommend and similar share, after their query options."""
    command.add_argument(
        "--model",
        help="model name (default: the run's best model on the held-out interactions, else its first)",
    )
    command.add_argument("-n", type=int, default=None, help="number of results (default: top_n)")
    command.add_argument("--output", default=DEFAULT_OUTPUT, help="output root")
    command.add_argument("--run-id", default=None, help="run to answer from (default: CURRENT)")
    command.add_argument("--json", action="store_true", help="print JSON")


def _add_runs(sub: Subcommands) -> None:
    runs = _command(sub, "runs", "list runs with status and headline metrics")
    runs.add_argument("--output", default=DEFAULT_OUTPUT, help="output root")
    runs.add_argument("--compare", nargs=2, metavar=("A", "B"), help="metric deltas from run A to run B")
    runs.add_argument("--json", action="store_true", help="print the list as JSON")
    runs.set_defaults(func=cmd_runs)


def _add_deploy(sub: Subcommands) -> None:
    deploy = _command(
        sub, "deploy", "serve the pipeline as a Prefect deployment on the config's cron schedule"
    )
    deploy.add_argument(
        "--config", default=None, help="pipeline YAML (default: the packaged production config)"
    )
    deploy.add_argument(
        "--interactions", help="interactions table of every scheduled run (default: input.path)"
    )
    deploy.add_argument("--output", help="output root of every scheduled run (default: output.root)")
    deploy.set_defaults(func=cmd_deploy)


def _add_tune(sub: Subcommands) -> None:
    tune = _command(
        sub,
        "tune",
        "search one model's params (Optuna) on a validation split of the training data; "
        "write the best as a config, every trial as JSON and an HTML report",
    )
    which = tune.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="model name in the config (a blend: its weights)")
    which.add_argument(
        "--all",
        action="store_true",
        help="every trained model in turn, then the blends' weights over the tuned parts; "
        "--trials per model, --timeout for the whole search, each model an equal share of what is left",
    )
    tune.add_argument(
        "--config", default=None, help="pipeline YAML (default: the packaged production config)"
    )
    tune.add_argument("--interactions", help="interactions table (default: input.path)")
    tune.add_argument(
        "--trials",
        type=_positive_int,
        default=None,
        help="trials after the config's own params (default: tune.trials, 20)",
    )
    tune.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        help="wall-time budget in seconds; the search ends at --trials or this, whichever comes "
        "first (default: tune.timeout_seconds, none)",
    )
    tune.add_argument(
        "--metric",
        default=None,
        help="metric to maximise, e.g. recall@20 (default: tune.metric, else ndcg@<largest k>)",
    )
    tune.add_argument(
        "--sampler", choices=("tpe", "random"), default=None, help="Optuna sampler (default: tune.sampler)"
    )
    tune.add_argument(
        "--output",
        default=None,
        help="config to write (default: configs/<model>-tuned.yaml, with --all configs/tuned.yaml); "
        "trials and report beside it as "
        "<name>.trials.json and <name>.report.html",
    )
    tune.add_argument("--force", action="store_true", help=FORCE_HELP)
    tune.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    tune.set_defaults(func=cmd_tune)


def _add_import(sub: Subcommands) -> None:
    importer = _command(sub, "import", "convert a public data set or any table into the input format")
    importer.add_argument("format", choices=IMPORT_FORMATS, help="source format")
    importer.add_argument("input", help="source file (u.data, ratings.dat, ratings.csv, ...)")
    importer.add_argument("--output", required=True, help="parquet (or .csv) to write")
    importer.add_argument("--map", help="for format 'table': user=COL,item=COL[,weight=COL][,timestamp=COL]")
    importer.add_argument("--min-rating", type=float, help="keep ratings >= this (explicit -> implicit)")
    importer.add_argument("--weighting", choices=IMPORT_WEIGHTINGS, default="none", help="reweight")
    importer.add_argument("--force", action="store_true", help=FORCE_HELP)
    importer.set_defaults(func=cmd_import)


def _add_generate(sub: Subcommands) -> None:
    generate = _command(sub, "generate", "write the deterministic synthetic sample (users in taste clusters)")
    generate.add_argument(
        "--output", default="data/sample/interactions.parquet", help="parquet or .csv to write"
    )
    generate.add_argument("--users", type=int, default=3000, help="number of users")
    generate.add_argument("--items", type=int, default=1500, help="number of items")
    generate.add_argument("--clusters", type=int, default=12, help="taste clusters users and items fall into")
    generate.add_argument("--seed", type=int, default=0, help="same seed, same table")
    generate.add_argument("--string-ids", action="store_true", help="ids as strings")
    generate.add_argument("--force", action="store_true", help=FORCE_HELP)
    generate.set_defaults(func=cmd_generate)
