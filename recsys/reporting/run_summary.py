"""The run report's summary: the best model by the headline metric, its lift over the
popularity baseline and each model's change since the previous complete run."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import storage
from recsys.errors import RunError
from recsys.manifest import RankingMetric, RunManifest, read_manifest
from recsys.reporting.html import Markup, esc, fmt_metric, html_table, verdict

METRIC_LABELS = {
    "recall": "Recall",
    "ndcg": "NDCG",
    "precision": "Precision",
    "map": "MAP",
    "hit_rate": "Hit rate",
    "coverage": "Coverage",
    "popularity": "Popularity",
}
HEADLINE = "ndcg"
BASELINE_HINT = "{name: popular, type: popular}"


def metric_label(key: str) -> str:
    """``hit_rate@10`` -> ``Hit rate@10``."""
    metric = RankingMetric.parse(key)
    return METRIC_LABELS.get(metric.name, metric.name.replace("_", " ").capitalize()) + f"@{metric.k}"


@dataclass
class Summary:
    """What the report's summary says, computed from the manifests (tests read it too)."""

    metric: str | None
    """The headline metric (``ndcg@10``), None without ranking metrics."""
    scores: dict[str, float] = field(default_factory=dict)
    """Headline metric per model that has it, best first."""
    best: str | None = None
    baseline: str | None = None
    """The run's ``popular`` model, if any."""
    lift: dict[str, float] = field(default_factory=dict)
    """Headline metric over the baseline's, per model (none when the baseline scores 0)."""
    previous_run: str | None = None
    previous_scores: dict[str, float | None] = field(default_factory=dict)
    """The previous run's headline metric per model of this run it had (None: not measured)."""
    delta: dict[str, float] = field(default_factory=dict)
    """Headline metric minus the previous run's, per model that has both."""
    comparable: bool = True
    """False when the previous run had another input or held-out split."""


def _ranking(model: Any) -> dict[str, float]:
    """A model's ranking figures of the published lists (``ndcg@10`` -> value), {} if none."""
    return model.evaluation.model_dump().get("ranking") or {}


def headline_k(manifest: RunManifest) -> int | None:
    """The largest k of the published lists' ndcg in the run, or None without ranking metrics."""
    ks = [
        k
        for model in manifest.models.values()
        if model.evaluation.ranking
        for k in model.evaluation.ranking.ks
        if model.evaluation.ranking.get(RankingMetric(HEADLINE, k)) is not None
    ]
    return max(ks) if ks else None


def _same_evaluation(a: RunManifest, b: RunManifest) -> bool:
    def key(m: RunManifest) -> tuple[Any, ...]:
        h = m.holdout
        split = (h.method, h.fraction, h.n, h.sha256) if h else None
        return (m.input.sha256, split)

    return key(a) == key(b)


def summarize(manifest: RunManifest, previous: RunManifest | None = None) -> Summary:
    """Best model by the headline metric, lift over the popularity baseline, and change
    against the previous complete run."""
    k = headline_k(manifest)
    metric = f"{HEADLINE}@{k}" if k is not None else None
    baseline = next((n for n, m in manifest.models.items() if m.type == "popular"), None)
    summary = Summary(metric=metric, baseline=baseline)
    if previous is not None:
        summary.previous_run = previous.run_id
        summary.comparable = _same_evaluation(manifest, previous)
    if metric is None:
        return summary
    scores = {
        name: ranking[metric]
        for name, model in manifest.models.items()
        if metric in (ranking := _ranking(model))
    }
    summary.scores = dict(sorted(scores.items(), key=lambda pair: -pair[1]))
    summary.best = next(iter(summary.scores))
    base = summary.scores.get(baseline) if baseline else None
    if base:
        summary.lift = {name: score / base for name, score in summary.scores.items()}
    if previous is not None:
        for name, score in summary.scores.items():
            before = previous.models.get(name)
            if before is None:
                continue
            value = _ranking(before).get(metric)
            summary.previous_scores[name] = value
            if value is not None:
                summary.delta[name] = score - value
    return summary


def previous_manifest(root: str | Path, run_id: str) -> RunManifest | None:
    """The newest complete run under ``root`` published before ``run_id`` (any complete
    run but ``run_id`` when ``run_id`` is not published yet), or None if there is none or
    it cannot be read."""
    try:
        runs = storage.list_runs(root)
        listed = [entry["run_id"] for entry in runs]
        if run_id in listed:
            runs = runs[listed.index(run_id) + 1 :]
        for entry in runs:
            if entry["status"] == "complete" and entry["run_id"] != run_id:
                return read_manifest(storage.RunLayout(Path(root), entry["run_id"], staging=False))
    except RunError:
        return None
    return None


def _params_text(model: Any) -> str:
    params = {k: v for k, v in model.params.items() if k != "random_state"}
    if not params:
        return "defaults"
    return ", ".join(
        f"{k}={v if isinstance(v, str | int | float) else json.dumps(v)}" for k, v in params.items()
    )


def _delta_markup(delta: float, before: float) -> Markup:
    if abs(delta) < 5e-5:
        return Markup('<span class="same">&plusmn;0.0000</span>')
    relative = f" ({delta / before:+.1%})" if before and abs(delta / before) >= 0.0005 else ""
    css = "up" if delta > 0 else "down"
    return Markup(f'<span class="{css}">{delta:+.4f}{html.escape(relative)}</span>')


def _no_change(summary: Summary, name: str) -> str:
    """Why a model has no change against the previous run."""
    return "not measured before" if name in summary.previous_scores else "new"


NO_HOLDOUT = (
    "<strong>No held-out interactions in this run</strong>, so nothing here says how good the "
    "recommendations are or which model is best. Set <code>evaluate.split</code> in the config "
    "(for example <code>split: {method: random}</code>, or <code>leave_last</code> / "
    "<code>time</code>) or pass <code>--holdout TABLE</code> to <code>recsys run</code>."
)


def summary_section(manifest: RunManifest, summary: Summary) -> str:
    """The verdict (best model, lift, change since the previous run) over a table of
    every model, best first."""
    sentences, warn = ([NO_HOLDOUT], True) if summary.metric is None else _best_sentences(summary)
    change = _change_sentence(summary)
    if change:
        sentences.append(change)
    return "<h2>Summary</h2>" + verdict(sentences, warn) + _models_table(manifest, summary)


def _best_sentences(summary: Summary) -> tuple[list[str], bool]:
    """The best model by the headline metric and its lift over the popularity baseline
    (HTML sentences), and whether that calls for a warning (the baseline is best)."""
    label = metric_label(summary.metric or "")
    best, score = summary.best, summary.scores[summary.best]
    first = f"Best model by {label}: <strong>{esc(best)}</strong> ({fmt_metric(score)})."
    if summary.baseline is None:
        return [
            first,
            "No popularity baseline was run, so there is no lift to report: add "
            f"<code>{esc(BASELINE_HINT)}</code> to <code>models</code> in the config.",
        ], False
    if summary.baseline not in summary.scores:
        return [
            first,
            f"The popularity baseline <strong>{esc(summary.baseline)}</strong> has no {label}.",
        ], False
    if best == summary.baseline:
        return [
            first,
            "<strong>The popularity baseline is best</strong>: no model beats recommending the most "
            "popular items to everyone.",
        ], True
    if summary.lift:
        base = summary.scores[summary.baseline]
        return [
            first,
            f"That is <strong>x{summary.lift[best]:.2f}</strong> the popularity baseline "
            f"<strong>{esc(summary.baseline)}</strong> ({fmt_metric(base)}).",
        ], False
    return [first, f"The popularity baseline scores 0 at {label}: no lift can be computed."], False


def _change_sentence(summary: Summary) -> str | None:
    """Each model's change of the headline metric since the previous complete run (HTML)."""
    if summary.previous_run is None:
        return "No previous complete run to compare with."
    if summary.metric is None:
        return None
    changes = [f"{esc(name)} {_change(summary, name)}" for name in summary.scores]
    caveat = (
        ""
        if summary.comparable
        else " Its input or held-out split differs from this run's, so the change mixes data and model."
    )
    return (
        f"Change of {metric_label(summary.metric)} since the previous complete run "
        f"<code>{esc(summary.previous_run)}</code>: " + ", ".join(changes) + "." + caveat
    )


def _change(summary: Summary, name: str) -> str:
    """A model's change since the previous run, or why it has none."""
    before = summary.previous_scores.get(name)
    if name in summary.delta and before is not None:
        return _delta_markup(summary.delta[name], before)
    return _no_change(summary, name)


def _models_table(manifest: RunManifest, summary: Summary) -> str:
    """Every model, best first: its headline metric, lift, change and recall when the run
    has them, then its type, dim and params."""
    metric = summary.metric
    names = list(summary.scores) + [n for n in manifest.models if n not in summary.scores]
    k = RankingMetric.parse(metric).k if metric else None
    header = ["Model"]
    if metric:
        header += [metric_label(metric), "Lift vs popular"]
        header += (["Change vs previous"] if summary.previous_run else []) + [f"Recall@{k}"]
    header += ["Type", "Dim", "Params"]
    rows = []
    for name in names:
        model = manifest.models[name]
        row: list[Any] = [name]
        if metric:
            ranking = _ranking(model)
            row.append(fmt_metric(ranking.get(metric)))
            if name == summary.baseline:
                row.append("baseline")
            else:
                row.append(f"x{summary.lift[name]:.2f}" if name in summary.lift else "")
            if summary.previous_run:
                row.append(_change(summary, name))
            row.append(fmt_metric(ranking.get(f"recall@{k}")))
        params = _params_text(model)
        if model.carried_over_from:
            params += f" (carried over from {model.carried_over_from})"
        rows.append([*row, model.type, model.dim, params])
    n = len(header)
    return html_table(header, rows, (0, n - 3), long=(n - 1,), highlight=0 if summary.best else None)
