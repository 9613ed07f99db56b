"""The run report's "Did the current run's lists work?": the lists of the run that was
current when this run started, measured against the interactions of this run's input
that came after that run's input ended (the manifest's ``forward``), and the same figures
of the earlier runs still under the output root (their manifests), newest first."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from recsys import storage
from recsys.errors import RunError
from recsys.manifest import Forward, RunManifest
from recsys.reporting.html import esc, fmt_count, fmt_metric, html_table, verdict


class ForwardRecord(NamedTuple):
    """One run's forward figures: the run that measured, and what it measured."""

    run_id: str
    forward: Forward


def forward_history(root: str | Path, run_id: str) -> list[ForwardRecord]:
    """The forward figures of the complete runs under ``root`` published before
    ``run_id`` (all complete runs but ``run_id`` when it is not published yet), newest
    first; runs without them, or whose manifest does not read, are skipped."""
    try:
        runs = storage.list_runs(root)
    except (RunError, OSError):
        return []
    listed = [entry["run_id"] for entry in runs]
    if run_id in listed:
        runs = runs[listed.index(run_id) + 1 :]
    history = []
    for entry in runs:
        raw = (
            (entry.get("manifest") or {}).get("forward") if isinstance(entry.get("manifest"), dict) else None
        )
        if entry["status"] != "complete" or entry["run_id"] == run_id or not raw:
            continue
        try:
            history.append(ForwardRecord(entry["run_id"], Forward.model_validate(raw)))
        except ValidationError:
            continue
    return history


def lift_text(value: float | None) -> str:
    return f"x{value:.2f}" if value is not None else ""


def _figures_table(forward: Forward) -> str:
    top_n = next(iter(forward.models.values())).top_n if forward.models else None
    header = [
        "Model",
        "Type",
        "Hit rate",
        f"Recall@{top_n}" if top_n else "Recall",
        "Lift (hit rate)",
        "Lift (recall)",
        "Users hit",
        "New items found",
    ]
    rows = []
    for name, figures in sorted(forward.models.items(), key=lambda pair: -pair[1].recall):
        baseline = name == forward.baseline
        rows.append(
            [
                name,
                figures.type,
                fmt_metric(figures.hit_rate),
                fmt_metric(figures.recall),
                "baseline" if baseline else lift_text(figures.lift_hit_rate),
                "baseline" if baseline else lift_text(figures.lift_recall),
                f"{fmt_count(figures.hits)} of {fmt_count(figures.users)}",
                f"{fmt_count(figures.found)} of {fmt_count(figures.pairs)}",
            ]
        )
    return html_table(header, rows, (0, 1))


def _history_table(history: list[ForwardRecord]) -> str:
    models = list(dict.fromkeys(name for record in history for name in record.forward.models))
    header = ["Run", "Measured run", "Window", "Users", *(f"{name}: hit rate / recall" for name in models)]
    rows = []
    for record in history:
        forward = record.forward
        cells = []
        for name in models:
            figures = forward.models.get(name)
            cells.append(f"{fmt_metric(figures.hit_rate)} / {fmt_metric(figures.recall)}" if figures else "")
        rows.append([record.run_id, forward.against, forward.window, fmt_count(forward.users), *cells])
    return html_table(header, rows, (0, 1, 2))


def _not_measured(manifest: RunManifest) -> str:
    if manifest.input.last_timestamp is None:
        return (
            "Not measured: this run's input has no timestamps, so nothing says which interactions "
            "came after the current run's input ended."
        )
    return (
        "Not measured: there was no current run with timestamps when this run started, or no "
        "interaction of this input is later than its input's last one (the log says which)."
    )


def forward_section(manifest: RunManifest, history: list[ForwardRecord] | None = None) -> str:
    """The section: the verdict and figures of this run's ``forward`` (or why there are
    none), then the history of earlier runs' figures."""
    forward = manifest.forward
    parts = ["<h2>Did the current run's lists work?</h2>"]
    if forward is None or not forward.models:
        parts.append(verdict([_not_measured(manifest)], False))
    else:
        best = max(forward.models.items(), key=lambda pair: pair[1].recall)
        sentences = [
            f"The lists of run <code>{esc(forward.against)}</code>, current when this run started, "
            f"against what its users did next: {fmt_count(forward.pairs)} new interactions of "
            f"{fmt_count(forward.users)} users, {esc(forward.window)}.",
            f"Best: <strong>{esc(best[0])}</strong>, hit rate {fmt_metric(best[1].hit_rate)}, "
            f"recall@{best[1].top_n} {fmt_metric(best[1].recall)}"
            + (
                f" (x{best[1].lift_recall:.2f} the popularity baseline {esc(forward.baseline)})."
                if forward.baseline and best[1].lift_recall is not None and best[0] != forward.baseline
                else "."
            ),
        ]
        warn = forward.baseline is not None and best[0] == forward.baseline
        if warn:
            sentences.append("<strong>The popularity baseline did best</strong> on what came next.")
        parts.append(verdict(sentences, warn))
        parts.append(_figures_table(forward))
        excluded = [
            f"{fmt_count(forward.pairs_seen_before)} pairs its users already had (never in their lists)",
            f"{fmt_count(forward.pairs_of_unknown_users)} pairs of {fmt_count(forward.unknown_users)} "
            "users it did not know (no list)",
        ]
        parts.append(
            f'<p class="note">{fmt_count(forward.rows)} interactions came after its input ended; left '
            f"out: {'; '.join(excluded)}. {fmt_count(forward.pairs_of_unknown_items)} new interactions "
            "with items it did not know count as misses.</p>"
        )
    records = ([ForwardRecord(manifest.run_id, forward)] if forward and forward.models else []) + list(
        history or []
    )
    if history:
        parts.append("<h3>Across runs</h3>" + _history_table(records))
    return "".join(parts)
