"""The commands that read published runs: `recsys recommend`, `recsys similar` and
`recsys runs`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from recsys import storage
from recsys.cli.formats import comparison, run_columns, runs_listing, table
from recsys.errors import InputError, QueryError


def cmd_recommend(args: argparse.Namespace) -> int:
    return _lookup(args, "recommend")


def cmd_similar(args: argparse.Namespace) -> int:
    return _lookup(args, "similar")


def _lookup(args: argparse.Namespace, kind: str) -> int:
    from recsys.api import open_run

    with open_run(args.output, args.run_id) as run:  # retention leaves a run alone while it is read
        return _answer(args, kind, run)


# the query of a lookup: the published list it asks (manifest.lists), its column in the answer, its title
_QUERIES = {
    "user": ("recommendations", "user_id", "recommendations for user"),
    "item": ("similar_items", "item_id", "items similar to"),
    "vector": ("similar_items", "query", "items nearest to"),
}


def _answer(args: argparse.Namespace, kind: str, run: Any) -> int:
    """Print the answer of ``recsys recommend`` / ``recsys similar`` from the Python API."""
    name, _ = run.model(args.model)
    if args.n is not None and not 1 <= args.n <= run.interactions.n_items:
        raise QueryError(f"-n must be between 1 and the {run.interactions.n_items} items, found {args.n}")
    note = ""
    if kind == "recommend" and args.user_items:
        answer, note = _fold_in(args, run, name)
        label, query_ids = "user", list(dict.fromkeys(answer["user_id"].tolist()))
    elif kind == "recommend":
        if args.fallback != "popular":
            run.user_factors(name)  # a model of item vectors only: say so first
        user = run.interactions.users.parse(args.user)
        known = run.interactions.users.to_internal([user], strict=False)[0] >= 0
        if args.fallback == "popular" and not known:
            return _popular(args, name, run)
        answer = run.recommend([user], n=args.n, model=name)
        label, query_ids = "user", [user]  # typed as the run's ids: --json keeps integers numbers
    elif args.vector:
        answer = _nearest(args, run, name)
        label, query_ids = "vector", [args.vector]
    else:
        item = run.interactions.items.parse(args.item)
        answer = run.similar(items=[item], n=args.n, model=name)
        label, query_ids = "item", [item]
    _print_answer(args, run, name, answer, label, query_ids, note)
    return 0


def _fold_in(args: argparse.Namespace, run: Any, name: str) -> tuple[Any, str]:
    """The top-N of the users of ``--user-items``, folded in, and the note that says so."""
    frame, _ = storage.read_interactions_table(args.user_items)
    try:
        answer = run.fold_in(frame, n=args.n, model=name)
    except (QueryError, InputError) as exc:
        raise type(exc)(f"{args.user_items}: {exc}") from None
    note = f"folded in from {args.user_items}"
    if answer.attrs.get("ignored_rows"):
        note += f"; {answer.attrs['ignored_rows']} row(s) with items unknown to the run ignored"
    return answer, note


def _nearest(args: argparse.Namespace, run: Any, name: str) -> Any:
    """The items nearest to the query vector of ``--vector``."""
    from recsys.storage.vectors import read_query_vector

    vector = read_query_vector(args.vector)
    factors = run.item_factors(name)
    if vector.shape[1] != factors.shape[1]:
        raise QueryError(
            f"{args.vector}: the vector has dimension {vector.shape[1]}, model {name} has {factors.shape[1]}"
        )
    answer = run.similar(vector=vector, n=args.n, model=name)
    answer["query"] = args.vector
    return answer


def _print_answer(
    args: argparse.Namespace, run: Any, name: str, answer: Any, label: str, query_ids: list[Any], note: str
) -> None:
    """One table (or JSON line) per query: rank, item and score."""
    kind, column, title = _QUERIES[label]
    spec = run.manifest.lists[kind]
    metric = spec.metric
    result_column = "item_id" if label == "user" else "similar_item_id"
    n = args.n if args.n is not None else spec.top_n
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
        extra = f", only {len(results)} candidates" if len(results) < n else ""
        extra += f", {note}" if note else ""
        print(f"{title} {query_id} (model {name}, {metric} index, run {run.run_id}{extra})")
        print(table(results, ["rank", "item_id", "score"]))


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON takes."""
    return value.item() if isinstance(value, np.generic) else value


def _popular(args: argparse.Namespace, model: str, run: Any) -> int:
    """The fallback for a user the run does not know (no interactions, so no vector): the
    items with the most users in the run's interactions that the run's item rules allow,
    the count as the score. Answered by :meth:`recsys.api.Run.recommend` (the API's
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
    print(table(results, ["rank", "item_id", "score"]))
    return 0


def compare_runs(root: str, run_a: str, run_b: str, as_json: bool = False) -> str:
    """Metric deltas (b - a) per model between two complete runs."""
    from recsys.api import open_run

    first, second = open_run(root, run_a).manifest, open_run(root, run_b).manifest
    return comparison(run_a, first, run_b, second, as_json)


def cmd_runs(args: argparse.Namespace) -> int:
    if args.compare:
        print(compare_runs(args.output, *args.compare, as_json=args.json))
        return 0
    runs = storage.list_runs(args.output)
    if not runs:
        print(f"no runs under {args.output}")
        return 0
    rows = [_runs_row(args.output, entry) for entry in runs]
    if args.json:
        for row in rows:
            row["run_id"] = row["run_id"].removesuffix(" *")
            row["current"] = row["run_id"] == storage.current_run_id(args.output)
        print(json.dumps(rows))
        return 0
    print(runs_listing(rows))
    return 0


def _runs_row(root: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One line of ``recsys runs``: a run's status and, for a complete run, its manifest's figures."""
    from recsys.errors import RunError
    from recsys.manifest import read_manifest

    row = {"run_id": entry["run_id"] + (" *" if entry["current"] else ""), "status": entry["status"]}
    if entry.get("problem"):
        row["models"] = entry["problem"]
    if entry["status"] != "complete":
        return row
    try:
        manifest = read_manifest(storage.RunLayout(Path(root), entry["run_id"], staging=False))
    except RunError as exc:
        row["status"] = "unreadable"
        row["models"] = str(exc)
        return row
    held = (
        manifest.promotion is not None
        and manifest.promotion.held
        and not entry["current"]
        and not (Path(root) / "runs" / entry["run_id"] / storage.PROMOTED).exists()
    )
    row.update(run_columns(manifest, held))
    return row
