"""The text and JSON of published manifests: the table `recsys run` prints, the ranking
columns of a model, the listing of `recsys runs` and the metric deltas of
`recsys runs --compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys.manifest import ModelEntry, RunManifest


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as left-aligned columns under a header line, two spaces apart."""
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
    k = max(ranking.ks)
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
    rec_metric, sim_metric = (manifest.lists[kind].metric for kind in ("recommendations", "similar_items"))
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
    return header + table(rows, list(rows[0].keys()) if rows else ["model"]) + report


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


def comparison(run_a: str, first: RunManifest, run_b: str, second: RunManifest, as_json: bool) -> str:
    """Metric deltas (b - a) per model between two complete runs."""
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
    return table(rows, list(rows[0])) + note


def run_columns(manifest: RunManifest, held: bool) -> dict[str, Any]:
    """The columns of a complete run in ``recsys runs``: headline ranking metrics, the recall of
    the served lists against exact search, and the status of a run never made current
    (``evaluation``) or kept from it by the promotion gate (``held``)."""
    metrics, served = [], []
    for name, model in manifest.models.items():
        ranking = model.evaluation.ranking
        if ranking and ranking.ks:
            k = ranking.ks[-1]
            metrics.append(
                f"{name} ndcg@{k}={ranking[f'ndcg@{k}']:.4f} recall@{k}={ranking[f'recall@{k}']:.4f}"
            )
        rec = model.evaluation.ann.recommendations or model.evaluation.ann.similar_items
        served.append(f"{name} {rec.recall_at_k:.3f}")
    columns: dict[str, Any] = {"served_vs_exact": ", ".join(served)}
    if manifest.purpose == "evaluation":
        columns["status"] = "evaluation"  # complete, never made CURRENT
    elif held:
        columns["status"] = "held"  # complete, the promotion gate kept it from CURRENT
    columns.update(
        created_at=manifest.created_at,
        seconds=manifest.timings.get("total_before_publish", ""),
        users=manifest.input.users,
        items=manifest.input.items,
        models=", ".join(metrics) or "no held-out interactions (set evaluate.split)",
    )
    if manifest.forward is not None and manifest.forward.models:
        columns["forward"] = forward_text(manifest)
    return columns


def forward_text(manifest: RunManifest) -> str:
    """The current run's lists measured against this run's later interactions, in one
    cell: ``vs RUN (U users): MODEL hit_rate=.. recall@N=.. xLIFT, ...``."""
    forward = manifest.forward
    if forward is None:
        return ""
    figures = []
    for name, model in forward.models.items():
        lift = "" if name == forward.baseline or model.lift_recall is None else f" x{model.lift_recall:.2f}"
        figures.append(f"{name} hit_rate={model.hit_rate:.4f} recall@{model.top_n}={model.recall:.4f}{lift}")
    return f"vs {forward.against} ({forward.users:,} users): " + ", ".join(figures)


def runs_listing(rows: list[dict[str, Any]]) -> str:
    """The table of ``recsys runs`` and its legend."""
    columns = ["run_id", "status", "created_at", "seconds", "users", "items", "models", "served_vs_exact"]
    forward = any(row.get("forward") for row in rows)
    lines = [
        table(rows, [*columns, *(["forward"] if forward else [])]),
        "* = CURRENT; models: ranking metrics on held-out interactions; served_vs_exact: recall of the",
        "served lists against exact search (ANN loss), not model quality",
    ]
    if forward:
        lines.append(
            "forward: the lists of the run current before it, against the interactions that came after "
            "that run's input (hit rate, recall@N, lift of recall over popular)"
        )
    if any(row["status"] == "held" for row in rows):
        lines.append(
            "held: complete, kept from CURRENT by the promotion gate (see its report; `recsys promote ID`)"
        )
    return "\n".join(lines)
