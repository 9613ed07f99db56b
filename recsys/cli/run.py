"""The commands that orchestrate a flow or check before one: `recsys run`, `recsys promote`,
`recsys tune` and `recsys deploy`. ``flows`` (and so Prefect) is imported inside the
commands, once the config and the inputs have been checked."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from recsys import storage
from recsys.cli.formats import run_summary
from recsys.cli.guard import RunGuard
from recsys.config import resolve_inputs
from recsys.errors import ConfigError
from recsys.manifest import RankingMetric, RunManifest


def _preflight(
    config: Any, input_path: str | None, root: str, args: argparse.Namespace
) -> tuple[list[str] | None, int | None]:
    """Everything that can be checked before any Prefect machinery starts: the config,
    the input table's header, the holdout table, the run id, the models and the output
    root. A bad input is one line in about a second, not after the API has started.
    Returns the models selected (None: all) and the input's number of items."""
    from recsys.data.interactions import check_columns

    if input_path and not Path(input_path).exists():
        hint = " (make the bundled sample with `recsys generate`)" if "sample" in input_path else ""
        raise ConfigError(f"{input_path}: interactions file not found{hint}")
    for path in [p for p in (input_path, args.holdout) if p]:
        check_columns(storage.table_columns(path), path)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if models:
        config.select_models(models)
    if args.run_id is not None:
        storage.check_run_id(args.run_id)
    if args.holdout and not Path(args.holdout).exists():
        raise ConfigError(f"{args.holdout}: holdout file not found")
    storage.check_output_root(root, config.output.file_mode)
    storage.check_can_start(root, args.run_id)  # a second writer, foreign run folders
    from recsys.stages.prepare import preflight

    # the table's content, the holdout and the item rules: validated now, and the table
    # handed to the prepare stage (not read twice); on Dask a worker prepares the data, so
    # the flow's process keeps no copy
    items = preflight(config, input_path, args.holdout, keep=config.task_runner.type == "local")
    if config.task_runner.type == "dask" and config.task_runner.address:
        _check_scheduler(config.task_runner.address)
    return models, items


def _check_scheduler(address: str, timeout: float = 5.0) -> None:
    """A Dask scheduler address that answers (a TCP connection), before the run starts."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"task_runner.address {address!r}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"task_runner.address {address}: cannot reach the Dask scheduler ({exc.strerror or exc}); "
            "start it with `dask scheduler` or fix the address"
        ) from None


def cmd_run(args: argparse.Namespace) -> int:
    config, input_path, root = resolve_inputs(args.config, args.interactions, args.output)
    models, items = _preflight(config, input_path, root, args)
    run_id = args.run_id or storage.new_run_id()
    guard = RunGuard(root, run_id)
    guard.watch_signals()
    timeout = args.timeout if args.timeout is not None else config.run.timeout_seconds
    watchdog = guard.watchdog(timeout) if timeout else None
    from flows.launch import import_flows

    def warm_up() -> None:
        """While the temporary API boots: what the run loads anyway. Best effort: a library
        that fails to load fails the stage that needs it, with that stage's error."""
        if config.task_runner.type == "local":
            from recsys.stages.runner import warm_up

            with contextlib.suppress(Exception):
                warm_up(config, config.select_models(models) if models else config.models, items)

    pipeline = import_flows(args.debug, meanwhile=warm_up)
    api_watch = guard.watch_api()
    try:
        manifest = pipeline.pipeline_flow(
            config_path=args.config or pipeline.DEFAULT_CONFIG,
            interactions=input_path,
            output=root,
            run_id=run_id,
            models=models,
            holdout=args.holdout,
            config=config,
            gate=not args.no_gate,
        )  # a run the promotion gate holds raises PromotionHeld: one line, exit 4
    finally:
        api_watch.set()  # the API stops with this process: no longer a failure
    if watchdog is not None:
        watchdog.cancel()
    run_dir = storage.RunLayout(Path(root), manifest["run_id"], staging=False).dir
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "manifest": manifest}))
        return 0
    print(run_summary(str(run_dir), RunManifest.model_validate(manifest)))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make a complete run (one the promotion gate held) current by hand."""
    from recsys.stages.publish import promote

    before, _ = promote(args.output, args.run_id)
    was = f"was {before}" if before else "there was none"
    print(f"run {args.run_id} is CURRENT and {Path(args.output) / storage.LATEST} ({was})")
    return 0


def _tune_preflight(config: Any, input_path: str, metric: str) -> None:
    """The table's content and the metric's cut-off against its items, before Prefect."""
    import pandas as pd

    from recsys.stages.prepare import validate_table

    table = validate_table(input_path, keep=False)
    n_items = len(pd.unique(table.items))
    k = max(*config.evaluate.ks, RankingMetric.parse(metric).k)
    if k >= n_items:
        raise ConfigError(f"tune: lists of {k} items need more than the {n_items} items of {input_path}")


def cmd_tune(args: argparse.Namespace) -> int:
    from recsys import tuning

    config, input_path, _ = resolve_inputs(args.config, args.interactions, None)
    # a model that cannot be tuned fails before Prefect starts
    models = tuning.tuned_models(config)[0] if args.all else config.select_models([args.model])
    for model in models:
        tuning.tunable(config, model)
    metric = tuning.metric_name(config, args.metric)
    if not Path(input_path).exists():
        raise ConfigError(f"{input_path}: interactions file not found")
    _tune_preflight(config, input_path, metric)
    inputs = tuning.input_files(config, args.config, input_path)
    target = args.output or tuning.default_output(None if args.all else args.model)
    tuning.check_outputs(target, inputs, args.force)
    if args.json and "prefect" not in sys.modules:  # stdout carries the JSON: progress to stderr
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM"] = "ext://sys.stderr"
    from flows.launch import import_flows

    import_flows(args.debug)
    from flows.tune import tune_flow

    result = tune_flow(
        model=None if args.all else args.model,
        config_path=args.config,
        interactions=input_path,
        trials=args.trials,
        timeout=args.timeout,
        metric=args.metric,
        sampler=args.sampler,
        output=args.output,
        force=args.force,
    )
    if args.json:
        keys = ("models",) if args.all else ("best_params", "best_value", "baseline_value", "trials")
        summary = {key: result[key] for key in (*keys, "metric", "config", "report")}
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from recsys.config import DEFAULT_CONFIG

    # the config and paths first: a bad one is one line before Prefect loads
    config_path = str(Path(args.config or DEFAULT_CONFIG).resolve())
    config, input_path, root = resolve_inputs(config_path, args.interactions, args.output)
    if input_path and not Path(input_path).exists():
        raise ConfigError(f"{input_path}: interactions file not found")
    storage.check_output_root(root, config.output.file_mode)
    from flows.launch import import_flows

    import_flows()
    from flows.deploy import build_deployment, serve_deployment

    deployment = build_deployment(config_path, args.interactions, args.output)
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ConfigError(
                "recsys deploy needs a Prefect server: start one with `prefect server start` "
                "and set PREFECT_API_URL=http://127.0.0.1:4200/api"
            )
    print(f"serving deployment {deployment.name!r} with cron {args_cron(deployment)}; Ctrl-C stops")
    serve_deployment(deployment)
    return 0


def args_cron(deployment: Any) -> str:
    return ", ".join(str(getattr(s.schedule, "cron", s.schedule)) for s in deployment.schedules or [])
