"""The ``recsys`` command line: the front door, and the only module of ``recsys`` that
imports ``flows`` (and so Prefect), lazily, for the commands that orchestrate.

Errors: one line on stderr (``recsys: error: ...``) and exit status 2; ``--debug``
shows the traceback instead. Other exit statuses: 3 (the run's timeout), 4 (the run is
complete but the promotion gate held it: not made current; ``recsys promote`` makes it
current), 130 / 143 (SIGINT / SIGTERM), 141 (stdout closed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys import __version__, signals, storage
from recsys.config import resolve_inputs
from recsys.errors import ConfigError, InputError, QueryError, RecsysError
from recsys.manifest import ModelEntry, RunManifest

DEFAULT_OUTPUT = "data/outputs"


# ---------------------------------------------------------------- output helpers


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _served_by(model: ModelEntry, metric: str) -> str:
    """How an index is served: ``exact`` or ``<backend>:<setting>``."""
    entry = model.indices.get(metric)  # type: ignore[call-overload]
    if entry is None:
        return "-"
    return entry.backend + (f":{entry.setting[1]}" if entry.setting else "")


def baseline_ranking(manifest: RunManifest) -> dict[str, float] | None:
    """The ranking figures of the run's popularity baseline (a ``popular`` model), if any."""
    for model in manifest.models.values():
        if model.type == "popular" and model.evaluation.ranking:
            return model.evaluation.ranking
    return None


def _ranking_columns(model: ModelEntry, baseline: dict[str, float] | None = None) -> dict[str, str]:
    """recall@k and ndcg@k (largest k) of the published lists, of exact top-N, and the
    lift of ndcg@k over the popularity baseline."""
    ranking, exact = model.evaluation.ranking, model.evaluation.ranking_exact or {}
    if not ranking:
        return {}
    k = max(int(key.split("@")[1]) for key in ranking if key.startswith("recall@"))
    columns = {
        f"recall@{k}": _fmt(ranking[f"recall@{k}"], 4),
        f"ndcg@{k}": _fmt(ranking[f"ndcg@{k}"], 4),
        f"exact_recall@{k}": _fmt(exact.get(f"recall@{k}", float("nan")), 4),
    }
    if baseline and baseline.get(f"ndcg@{k}"):
        columns["lift_vs_popular"] = f"x{ranking[f'ndcg@{k}'] / baseline[f'ndcg@{k}']:.2f}"
    return columns


def run_summary(run_dir: str, manifest: RunManifest) -> str:
    """The table `recsys run` prints: one line per model with counts, timings and recall."""
    inp = manifest.input
    config = manifest.config
    rec_metric, sim_metric = config["recommend"]["metric"], config["similar_items"]["metric"]
    baseline = baseline_ranking(manifest)
    rows = []
    for name, model in manifest.models.items():
        rec, sim = model.evaluation.ann.recommendations, model.evaluation.ann.similar_items
        timings = model.timings
        rows.append(
            {
                "model": name,
                "type": model.type,
                "dim": model.dim,
                "fit_s": _fmt(timings.get("fit", 0.0), 2),
                "index_s": _fmt(timings.get("index", 0.0), 2),
                "recommend_s": _fmt(timings.get("recommend", 0.0), 2),
                "similar_s": _fmt(timings.get("similar_items", 0.0), 2),
                "rec_index": _served_by(model, rec_metric),
                f"rec_recall@{rec.k if rec else sim.k}": _fmt(rec.recall_at_k) if rec else "-",
                "rec_qps": _fmt(rec.queries_per_second, 0) if rec else "-",
                "sim_index": _served_by(model, sim_metric),
                f"sim_recall@{sim.k}": _fmt(sim.recall_at_k),
                "sim_qps": _fmt(sim.queries_per_second, 0),
                **_ranking_columns(model, baseline),
                "note": f"carried over from {model.carried_over_from}" if model.carried_over_from else "",
            }
        )
    header = (
        f"run {manifest.run_id} published to {run_dir}\n"
        f"input {inp.path}: {inp.rows} rows, {inp.users} users, {inp.items} items, "
        f"{inp.interactions} interactions\n"
    )
    if rows and not any(row["note"] for row in rows):
        for row in rows:
            del row["note"]
    report = f"\nreport: {Path(run_dir) / manifest.report}" if manifest.report else ""
    return header + _table(rows, list(rows[0].keys()) if rows else ["model"]) + report


# ---------------------------------------------------------------- prefect plumbing


def _import_flows(debug: bool = False) -> Any:
    """Import the flows package (and Prefect) with Prefect's console log on stdout, and an
    API to report to: the configured one; the temporary server the console script started
    before any import (:mod:`recsys.console`), once it answers; else (``main`` called from
    Python) the one Prefect starts itself.

    Progress goes to stdout; stderr is kept for the one-line error. Prefect re-reads
    its logging config when its temporary API starts, so the setting goes through the
    environment.
    """
    from flows import temporary_api
    from flows.settings import apply_defaults

    temporary_api.check_settings()  # a bad profile or setting: one line, not Prefect's traceback
    apply_defaults()  # before Prefect loads its settings
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM", "ext://sys.stdout")

    with temporary_api.settings_errors_in_one_line(debug):
        import flows.pipeline as pipeline_module

    if not debug:
        for name in _PREFECT_RUN_LOGGERS:
            logging.getLogger(name).addFilter(_strip_traceback)
    api = temporary_api.started()
    if api is not None:
        logging.getLogger("prefect").info(
            "Starting temporary server on %s (set PREFECT_API_URL to use a running one)",
            api.url.removesuffix("/api"),
        )
        api.wait_ready(temporary_api.startup_timeout())
    else:
        from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

        if PREFECT_API_URL.value():
            temporary_api.check_api(PREFECT_API_URL.value(), PREFECT_API_KEY.value())
    return pipeline_module


_PREFECT_RUN_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def _strip_traceback(record: logging.LogRecord) -> bool:
    """Keep Prefect's failure records to their one-line message (``--debug`` keeps all).

    A logger-level filter: Prefect replaces its handlers when its temporary API
    starts, but leaves the filters of its loggers alone.
    """
    record.exc_info = None
    record.exc_text = None
    return True


# ---------------------------------------------------------------- commands


class RunGuard:
    """Ends a `recsys run` cleanly and at once on Ctrl-C (SIGINT), SIGTERM (``docker
    stop``, ``systemctl stop``), the outer timeout or the loss of its Prefect API: removes
    the run's staging folder, ends every child process (Prefect's temporary API server,
    Dask workers), prints one line and exits 130 / 143 / 3 (:mod:`recsys.signals`).

    A run that had already published stays published; ``CURRENT`` moves only as the
    last step of publishing, so it never names a run that was cut off.
    """

    def __init__(self, root: str, run_id: str):
        self.layout = storage.RunLayout(Path(root), run_id)

    def cleanup(self) -> str:
        """Remove the staging folder if this process made it (never a second writer's:
        its owner token; what the run's threads write into it meanwhile too, until it stays
        away, at most a second); say whether the run had been published."""
        staged = storage.remove_own_staging(self.layout, settle=1.0)
        published = storage.is_regular(self.layout.published().success) and not staged
        return f"run {self.layout.run_id} had been published" if published else "nothing published"

    def stop(self, code: int, reason: str) -> None:
        signals.stop(code, reason)

    def watch_signals(self) -> None:
        signals.install()
        signals.on_stop("run", self.cleanup)

    def watch_api(self, every: float = 1.0, grace: float = 20.0) -> threading.Event:
        """End the run (exit 3) once its Prefect API is gone: at once when the temporary
        API this process started exits, or when a configured API has not answered its
        health check for ``grace`` seconds. Prefect's client would otherwise retry for
        as long as the run's timeout. Returns the event that ends the watch."""
        from flows import temporary_api

        done = threading.Event()
        api = temporary_api.started()
        if api is None:
            from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

            url, key = PREFECT_API_URL.value(), PREFECT_API_KEY.value()
            if not url:
                return done
            every = max(every, 5.0)

        def gone() -> str | None:
            if api is not None:
                code = api.process.poll() if api.process is not None else None
                return None if code is None else f"Prefect's temporary API exited mid-run (status {code})"
            try:
                temporary_api.check_api(url, key, timeout=every)
            except RecsysError:
                return f"the Prefect API at {url} stopped answering mid-run"
            return None

        def watch() -> None:
            failing_since = None
            while not done.wait(every):
                reason = gone()
                if reason is None:
                    failing_since = None
                    continue
                failing_since = failing_since or time.monotonic()
                if api is not None or time.monotonic() - failing_since >= grace:
                    if not done.is_set():
                        self.stop(3, f"error: {reason}; stopped")
                    return

        threading.Thread(target=watch, name="recsys-api-watch", daemon=True).start()
        return done

    def watchdog(self, seconds: float) -> threading.Timer:
        """End the run (exit 3) if it is not done in time: a run whose Prefect API went
        away would otherwise hang."""
        timer = threading.Timer(
            seconds, self.stop, (3, f"error: the run did not finish within {seconds:g} s; stopped")
        )
        timer.daemon = True
        timer.start()
        return timer


def _preflight(config: Any, input_path: str | None, root: str, args: argparse.Namespace) -> list[str] | None:
    """Everything that can be checked before any Prefect machinery starts: the config,
    the input table's header, the holdout table, the run id, the models and the output
    root. A bad input is one line in about a second, not after the API has started."""
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
    # handed to the prepare stage (not read twice)
    preflight(config, input_path, args.holdout)
    if config.task_runner.type == "dask" and config.task_runner.address:
        _check_scheduler(config.task_runner.address)
    return models


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
    models = _preflight(config, input_path, root, args)
    run_id = args.run_id or storage.new_run_id()
    guard = RunGuard(root, run_id)
    guard.watch_signals()
    timeout = args.timeout if args.timeout is not None else config.run.timeout_seconds
    watchdog = guard.watchdog(timeout) if timeout else None
    pipeline = _import_flows(args.debug)
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


def _lookup(args: argparse.Namespace, kind: str) -> int:
    from recsys.lookup import open_run

    with open_run(args.output, args.run_id) as run:  # retention leaves a run alone while it is read
        return _answer(args, kind, run)


def _answer(args: argparse.Namespace, kind: str, run: Any) -> int:
    """Print the answer of ``recsys recommend`` / ``recsys similar`` from the Python API."""
    name, _ = run.model(args.model)
    config = run.manifest.config
    if args.n is not None and not 1 <= args.n <= run.interactions.n_items:
        raise QueryError(f"-n must be between 1 and the {run.interactions.n_items} items, found {args.n}")
    note = ""
    if kind == "recommend" and args.user_items:
        frame, _ = storage.read_interactions_table(args.user_items)
        try:
            answer = run.fold_in(frame, n=args.n, model=name)
        except (QueryError, InputError) as exc:
            raise type(exc)(f"{args.user_items}: {exc}") from None
        metric, label, column = config["recommend"]["metric"], "user", "user_id"
        query_ids = list(dict.fromkeys(answer["user_id"].tolist()))
        note = f"folded in from {args.user_items}"
        if answer.attrs.get("ignored_rows"):
            note += f"; {answer.attrs['ignored_rows']} row(s) with items unknown to the run ignored"
    elif kind == "recommend":
        if args.fallback != "popular":
            run.user_factors(name)  # a model of item vectors only: say so first
        user = run.interactions.users.parse(args.user)
        known = run.interactions.users.to_internal([user], strict=False)[0] >= 0
        if args.fallback == "popular" and not known:
            return _popular(args, name, run)
        answer = run.recommend([user], n=args.n, model=name)
        metric, label, column = config["recommend"]["metric"], "user", "user_id"
        query_ids = [user]  # typed as the run's ids: --json keeps integers numbers
    elif args.vector:
        from recsys.storage.vectors import read_query_vector

        vector = read_query_vector(args.vector)
        factors = run.item_factors(name)
        if vector.shape[1] != factors.shape[1]:
            raise QueryError(
                f"{args.vector}: the vector has dimension {vector.shape[1]}, "
                f"model {name} has {factors.shape[1]}"
            )
        answer = run.similar(vector=vector, n=args.n, model=name)
        metric, label, column = config["similar_items"]["metric"], "vector", "query"
        query_ids = [args.vector]
        answer["query"] = args.vector
    else:
        item = run.interactions.items.parse(args.item)
        answer = run.similar(items=[item], n=args.n, model=name)
        metric, label, column = config["similar_items"]["metric"], "item", "item_id"
        query_ids = [item]
    result_column = "item_id" if kind == "recommend" else "similar_item_id"
    n = (
        args.n
        if args.n is not None
        else config["recommend" if kind == "recommend" else "similar_items"]["top_n"]
    )
    for query_id in query_ids:
        rows = answer[answer[column] == query_id]
        results = [
            {"rank": int(rank), "item_id": _plain(item), "score": round(float(score), 6)}
            for rank, item, score in zip(rows["rank"], rows[result_column], rows["score"], strict=True)
        ]
        if args.json:
            print(
                json.dumps({label: _plain(query_id), "model": name, "run_id": run.run_id, "results": results})
            )
            continue
        title = {
            "user": "recommendations for user",
            "item": "items similar to",
            "vector": "items nearest to",
        }[label]
        extra = f", only {len(results)} candidates" if len(results) < n else ""
        extra += f", {note}" if note else ""
        print(f"{title} {query_id} (model {name}, {metric} index, run {run.run_id}{extra})")
        print(_table(results, ["rank", "item_id", "score"]))
    return 0


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON takes."""
    return value.item() if isinstance(value, np.generic) else value


def _popular(args: argparse.Namespace, model: str, run: Any) -> int:
    """The fallback for a user the run does not know (no interactions, so no vector): the
    items with the most users in the run's interactions that the run's item rules allow,
    the count as the score. Answered by :meth:`recsys.lookup.Run.recommend` (the API's
    own fallback), so that the command and the API agree."""
    user = run.interactions.users.parse(args.user)  # typed as the run's ids
    popular = run.recommend([user], n=args.n, model=model, fallback="popular")
    results = [
        {"rank": int(rank), "item_id": _plain(item), "score": float(score)}
        for rank, item, score in zip(popular["rank"], popular["item_id"], popular["score"], strict=True)
    ]
    if args.json:
        answer = {"user": user, "model": model, "run_id": run.run_id, "fallback": "popular"}
        print(json.dumps({**answer, "results": results}))
        return 0
    n = len(results)
    print(f"user {args.user} is not in run {run.run_id}: the {n} most popular items (fallback popular)")
    print(_table(results, ["rank", "item_id", "score"]))
    return 0


def _headline_metrics(model: ModelEntry) -> dict[str, float]:
    """Flat numeric figures of one model's manifest entry, for comparing runs."""
    figures: dict[str, float] = {}
    evaluation = model.evaluation
    for kind, values in (("ranking", evaluation.ranking), ("ranking_exact", evaluation.ranking_exact)):
        for key, value in (values or {}).items():
            if key != "users":
                figures[f"{kind}.{key}"] = value
    for name, ann in (
        ("recommendations", evaluation.ann.recommendations),
        ("similar_items", evaluation.ann.similar_items),
    ):
        if ann is not None:
            figures[f"ann.{name}.recall@{ann.k}"] = ann.recall_at_k
            figures[f"ann.{name}.queries_per_second"] = ann.queries_per_second
    for stage, seconds in model.timings.items():
        figures[f"seconds.{stage}"] = seconds
    return figures


def compare_runs(root: str, run_a: str, run_b: str, as_json: bool = False) -> str:
    """Metric deltas (b - a) per model between two complete runs."""
    from recsys.lookup import open_run

    first, second = open_run(root, run_a).manifest, open_run(root, run_b).manifest
    rows = []
    for name in [m for m in first.models if m in second.models]:
        before = _headline_metrics(first.models[name])
        after = _headline_metrics(second.models[name])
        for key in [k for k in before if k in after]:
            delta = after[key] - before[key]
            relative = f"{100 * delta / before[key]:+.1f}%" if before[key] else ""
            rows.append(
                {
                    "model": name,
                    "metric": key,
                    run_a: _fmt(float(before[key]), 4),
                    run_b: _fmt(float(after[key]), 4),
                    "delta": f"{delta:+.4f}",
                    "relative": relative,
                }
            )
    only = sorted(set(first.models) ^ set(second.models))
    if as_json:
        return json.dumps({"from": run_a, "to": run_b, "rows": rows, "models_in_one_run_only": only})
    note = f"\nmodels in only one run: {', '.join(only)}" if only else ""
    if not rows:
        return f"runs {run_a} and {run_b} have no model in common{note}"
    return _table(rows, list(rows[0])) + note


def cmd_runs(args: argparse.Namespace) -> int:
    from recsys.errors import RunError
    from recsys.manifest import read_manifest

    if args.compare:
        print(compare_runs(args.output, *args.compare, as_json=args.json))
        return 0
    runs = storage.list_runs(args.output)
    if not runs:
        print(f"no runs under {args.output}")
        return 0
    rows = []
    for entry in runs:
        row = {"run_id": entry["run_id"] + (" *" if entry["current"] else ""), "status": entry["status"]}
        if entry.get("problem"):
            row["models"] = entry["problem"]
        manifest = None
        if entry["status"] == "complete":
            try:
                manifest = read_manifest(storage.RunLayout(Path(args.output), entry["run_id"], staging=False))
            except RunError as exc:
                row["status"] = "unreadable"
                row["models"] = str(exc)
        if manifest is not None:
            metrics, served = [], []
            for name, model in manifest.models.items():
                ranking = model.evaluation.ranking or {}
                ks = sorted(int(key.split("@")[1]) for key in ranking if key.startswith("ndcg@"))
                if ks:
                    k = ks[-1]
                    metrics.append(
                        f"{name} ndcg@{k}={ranking[f'ndcg@{k}']:.4f} recall@{k}={ranking[f'recall@{k}']:.4f}"
                    )
                rec = model.evaluation.ann.recommendations or model.evaluation.ann.similar_items
                served.append(f"{name} {rec.recall_at_k:.3f}")
            row["served_vs_exact"] = ", ".join(served)
            if manifest.purpose == "evaluation":
                row["status"] = "evaluation"  # complete, never made CURRENT
            elif (
                manifest.promotion is not None
                and manifest.promotion.held
                and not entry["current"]
                and not (Path(args.output) / "runs" / entry["run_id"] / storage.PROMOTED).exists()
            ):
                row["status"] = "held"  # complete, the promotion gate kept it from CURRENT
            row.update(
                created_at=manifest.created_at,
                seconds=manifest.timings.get("total_before_publish", ""),
                users=manifest.input.users,
                items=manifest.input.items,
                models=", ".join(metrics) or "no held-out interactions (set evaluate.split)",
            )
        rows.append(row)
    if args.json:
        for row in rows:
            row["run_id"] = row["run_id"].removesuffix(" *")
            row["current"] = row["run_id"] == storage.current_run_id(args.output)
        print(json.dumps(rows))
        return 0
    columns = ["run_id", "status", "created_at", "seconds", "users", "items", "models", "served_vs_exact"]
    print(_table(rows, columns))
    print("* = CURRENT; models: ranking metrics on held-out interactions; served_vs_exact: recall of the")
    print("served lists against exact search (ANN loss), not model quality")
    if any(row["status"] == "held" for row in rows):
        print("held: complete, kept from CURRENT by the promotion gate (see its report; `recsys promote ID`)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from recsys.data import generate_interactions

    storage.check_output(args.output, (), args.force)
    if not getattr(args, "quiet", False):
        print(
            f"generating {args.users} users x {args.items} items in {args.clusters} clusters...", flush=True
        )
    try:
        frame = generate_interactions(
            n_users=args.users,
            n_items=args.items,
            n_clusters=args.clusters,
            string_ids=args.string_ids,
            seed=args.seed,
        )
    except ValueError as exc:
        raise ConfigError(f"generate: {exc}") from None
    path = storage.write_interactions_table(frame, args.output)
    print(f"wrote {len(frame)} interactions ({args.users} users, {args.items} items) to {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from recsys.data.interactions import clean_table
    from recsys.storage.importers import parse_mapping, read_source, to_implicit

    storage.check_output(args.output, [args.input], args.force)  # never the source, nor unasked
    if args.map is not None and args.format != "table":
        raise ConfigError(f"--map is for format 'table'; {args.format} names its own columns")
    mapping = parse_mapping(args.map) if args.map is not None else None
    frame = read_source(args.format, args.input, mapping)
    try:
        frame = to_implicit(frame, min_rating=args.min_rating, weighting=args.weighting)
    except InputError as exc:
        raise InputError(f"{args.input}: {exc}") from None
    if frame.attrs.get("dropped_not_positive"):
        print(f"dropped {frame.attrs['dropped_not_positive']} row(s) with a zero or negative rating")
    table = clean_table(frame, source=args.input)  # refuse now what `recsys run` would refuse
    path = storage.write_interactions_table(frame, args.output)
    print(
        f"wrote {len(frame)} interactions ({len(set(table.users.tolist()))} users, "
        f"{len(set(table.items.tolist()))} items, weighting {args.weighting}) to {path}"
    )
    return 0


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, found {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, found {text}")
    return value


def _tune_preflight(config: Any, input_path: str, metric: str) -> None:
    """The table's content and the metric's cut-off against its items, before Prefect."""
    import pandas as pd

    from recsys.stages.prepare import validate_table

    table = validate_table(input_path, keep=False)
    n_items = len(pd.unique(table.items))
    k = max(*config.evaluate.ks, int(metric.split("@")[1]))
    if k >= n_items:
        raise ConfigError(f"tune: lists of {k} items need more than the {n_items} items of {input_path}")


def cmd_tune(args: argparse.Namespace) -> int:
    from recsys import tuning

    config, input_path, _ = resolve_inputs(args.config, args.interactions, None)
    (model,) = config.select_models([args.model])
    tuning.model_space(config, model)  # a model that cannot be tuned fails before Prefect starts
    metric = tuning.metric_name(config, args.metric)
    if not Path(input_path).exists():
        raise ConfigError(f"{input_path}: interactions file not found")
    _tune_preflight(config, input_path, metric)
    inputs = tuning.input_files(config, args.config, input_path)
    tuning.check_outputs(args.output or tuning.default_output(args.model), inputs, args.force)
    if args.json and "prefect" not in sys.modules:  # stdout carries the JSON: progress to stderr
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM"] = "ext://sys.stderr"
    _import_flows(args.debug)
    from flows.tune import tune_flow

    result = tune_flow(
        model=args.model,
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
        summary = {
            key: result[key]
            for key in ("best_params", "best_value", "baseline_value", "metric", "trials", "config", "report")
        }
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
    _import_flows()
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


# ---------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, found {value}")
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


def _fold_in_types() -> str:
    """The registered model types that fold new users in (those that define ``fold_in``)."""
    from recsys.models import MODEL_TYPES, ModelType

    names = [name for name, t in MODEL_TYPES.items() if type(t).fold_in is not ModelType.fold_in]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


FORCE_HELP = (
    "replace output files that exist (without it the command refuses them); never a folder, a "
    "special file, or one of the command's own inputs"
)


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

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
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

    run = add("run", "train, index, recommend, evaluate and publish one run")
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

    promote = add(
        "promote",
        "make a complete run current (CURRENT and latest), such as one the promotion gate held, "
        "after verifying its files",
    )
    promote.add_argument("run_id", metavar="RUN_ID", help="the run to make current")
    promote.add_argument("--output", default=DEFAULT_OUTPUT, help="output root")
    promote.set_defaults(func=cmd_promote)

    for name, help_text, flag in (
        ("recommend", "top-N unseen items for one user from the current run", "--user"),
        ("similar", "items most similar to one item from the current run", "--item"),
    ):
        command = add(name, help_text)
        if flag == "--user":
            who = command.add_mutually_exclusive_group(required=True)
            who.add_argument(flag, help="external user id")
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
        else:
            what = command.add_mutually_exclusive_group(required=True)
            what.add_argument(flag, help="external item id")
            what.add_argument(
                "--vector", help="a query vector (.npy, or a one-row parquet): the nearest items"
            )
        command.add_argument("--model", help="model name (default: the run's first model)")
        command.add_argument("-n", type=int, default=None, help="number of results (default: top_n)")
        command.add_argument("--output", default=DEFAULT_OUTPUT, help="output root")
        command.add_argument("--run-id", default=None, help="run to answer from (default: CURRENT)")
        command.add_argument("--json", action="store_true", help="print JSON")
        command.set_defaults(func=lambda a, kind=name: _lookup(a, kind))

    runs = add("runs", "list runs with status and headline metrics")
    runs.add_argument("--output", default=DEFAULT_OUTPUT, help="output root")
    runs.add_argument("--compare", nargs=2, metavar=("A", "B"), help="metric deltas from run A to run B")
    runs.add_argument("--json", action="store_true", help="print the list as JSON")
    runs.set_defaults(func=cmd_runs)

    deploy = add("deploy", "serve the pipeline as a Prefect deployment on the config's cron schedule")
    deploy.add_argument(
        "--config", default=None, help="pipeline YAML (default: the packaged production config)"
    )
    deploy.add_argument(
        "--interactions", help="interactions table of every scheduled run (default: input.path)"
    )
    deploy.add_argument("--output", help="output root of every scheduled run (default: output.root)")
    deploy.set_defaults(func=cmd_deploy)

    tune = add(
        "tune",
        "search one model's params (Optuna) on a validation split of the training data; "
        "write the best as a config, every trial as JSON and an HTML report",
    )
    tune.add_argument("--model", required=True, help="model name in the config")
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
        help="config to write (default: configs/<model>-tuned.yaml); trials and report beside it as "
        "<name>.trials.json and <name>.report.html",
    )
    tune.add_argument("--force", action="store_true", help=FORCE_HELP)
    tune.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    tune.set_defaults(func=cmd_tune)

    from recsys.storage.importers import FORMATS, WEIGHTINGS

    importer = add("import", "convert a public data set or any table into the input format")
    importer.add_argument("format", choices=FORMATS, help="source format")
    importer.add_argument("input", help="source file (u.data, ratings.dat, ratings.csv, ...)")
    importer.add_argument("--output", required=True, help="parquet (or .csv) to write")
    importer.add_argument("--map", help="for format 'table': user=COL,item=COL[,weight=COL][,timestamp=COL]")
    importer.add_argument("--min-rating", type=float, help="keep ratings >= this (explicit -> implicit)")
    importer.add_argument("--weighting", choices=WEIGHTINGS, default="none", help="reweight")
    importer.add_argument("--force", action="store_true", help=FORCE_HELP)
    importer.set_defaults(func=cmd_import)

    generate = add("generate", "write the deterministic synthetic sample (users in taste clusters)")
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
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
