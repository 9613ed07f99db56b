"""A self-contained HTML report of one run: tables and matplotlib plots as data URIs.

It answers "is it good?" first: a summary names the best model by the headline metric
(ndcg at the largest evaluated k of the published lists), its lift over the popularity
baseline, each model's change since the previous complete run, and each model's params;
then whether the lists of the run that was current worked on what its users did next
(with the same figures of earlier runs). Then: ranking metrics on held-out interactions
(published lists and exact top-N), how each index is served and what the approximation
costs (recall against queries per second for every swept strategy), the published
recommendations (scores per model, each on its own scale, and how concentrated they are),
the run's input and timings, and a glossary of the metrics. No external files, scripts
or fonts; tables scroll inside their own box only when wider than the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.manifest import Ranking, RunManifest, timestamp_text
from recsys.reporting.html import (
    esc,
    fmt_count,
    fmt_metric,
    fmt_seconds,
    html_table,
    page,
    pairs_card,
    verdict,
)
from recsys.reporting.plots import gallery
from recsys.reporting.run_forward import ForwardRecord, forward_section
from recsys.reporting.run_plots import (
    concentration,
    ranking_bars,
    read_summaries,
    recall_curves,
    score_plots,
)
from recsys.reporting.run_summary import headline_k, metric_label, summarize, summary_section

RANKING_NAMES = ("recall", "ndcg", "precision", "map", "hit_rate", "coverage", "popularity")
STAGES = ("fit", "index", "recommend", "similar_items", "evaluate")

GLOSSARY = (
    ("Recall@k", "share of a user's held-out items found in their top k, averaged over users."),
    (
        "NDCG@k",
        "like recall@k, but a hit counts more the higher it is in the list (1/log2(rank + 1)), "
        "scaled so that a perfect list scores 1. The headline metric of this report.",
    ),
    ("Precision@k", "share of the top k that are held-out items of the user."),
    (
        "MAP@k",
        "mean average precision: the precision at the rank of each hit, summed and divided by "
        "min(k, held-out items); rewards hits early in the list.",
    ),
    ("Hit rate@k", "share of users with at least one held-out item in their top k."),
    (
        "Coverage@k",
        "distinct items in all users' top k, as a share of the catalog: low means the same few "
        "items for everyone.",
    ),
    (
        "Popularity@k",
        "mean number of training users of the recommended items: high means the model leans on "
        "what is popular anyway.",
    ),
    (
        "Published vs exact top-N",
        "published lists come from the index that serves them; exact top-N from exact search over "
        "the same vectors. The gap is what the approximate search costs in ranking quality.",
    ),
    (
        "Recall vs exact (ANN recall)",
        "share of the exact top k (same metric) that the served index returns; results tied with "
        "the k-th exact score count as found.",
    ),
    ("Queries/s", "queries answered per second on one core, by the served index and by exact search."),
    (
        "Lift",
        "a model's headline metric divided by the popularity baseline's: x1.00 is no better than "
        "recommending the most popular items to everyone.",
    ),
    (
        "Forward hit rate and recall",
        "the lists of the run that was current when this run started, against the interactions "
        "of this run's input that came after that run's input ended (by timestamp), for its "
        "users with new items. Hit rate: share of them with at least one new item in their "
        "list; recall@N: new items found in the list over new items, averaged over them.",
    ),
    (
        "Change vs previous",
        "the headline metric minus that of the model of the same name in the previous complete "
        "run; only comparable when the input and the held-out split are the same.",
    ),
)


def humanize(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _promotion_section(manifest: RunManifest) -> str:
    """The promotion gate's verdict: held (with the reason and how to promote the run by
    hand), passed, or off; and its checks against the run that was current."""
    promotion = manifest.promotion
    if promotion is None:
        return ""
    run_id = esc(manifest.run_id)
    if promotion.held:
        sentences = [
            f"<strong>Held by the promotion gate</strong>: this run is complete but was not made "
            f"current. {esc(promotion.reason)}.",
            f"<code>CURRENT</code> and <code>latest</code> stay on <code>{esc(promotion.against)}</code>; "
            f"<code>recsys promote {run_id}</code> makes this run current after verifying its files.",
        ]
    elif promotion.gate == "off":
        sentences = ["Made current without the promotion gate (turned off)."]
    elif promotion.against is None:
        sentences = ["Made current: the first run of this output root, nothing to check against."]
    else:
        sentences = [
            f"Made current: passed the promotion gate against <code>{esc(promotion.against)}</code>."
        ]
    table = ""
    if promotion.checks:
        counts = ("users", "items", "interactions")
        rows = [
            [
                check.name,
                (fmt_count if check.name in counts else fmt_metric)(check.current),
                (fmt_count if check.name in counts else fmt_metric)(check.candidate),
                f"{0.0 - check.drop:+.1%}",
                f"-{check.limit * 100:g}%",
                "passed" if check.passed else "failed",
            ]
            for check in promotion.checks
        ]
        header = ["Check", f"Run {promotion.against}", "This run", "Change", "Limit", "Result"]
        table = html_table(header, rows)
    return "<h2>Promotion</h2>" + verdict(sentences, promotion.held) + table


# ---------------------------------------------------------------- sections


def _ranking_section(manifest: dict[str, Any], k: int | None) -> str:
    parts = ["<h2>Ranking quality on held-out interactions</h2>"]
    ranked = {
        n: m["evaluation"] for n, m in manifest["models"].items() if m.get("evaluation", {}).get("ranking")
    }
    if not ranked or k is None:
        parts.append('<p class="note">No held-out interactions: set evaluate.split or pass --holdout.</p>')
        return "".join(parts)
    first = next(iter(ranked.values()))["ranking"]
    ks = sorted({k for e in ranked.values() for k in Ranking(e["ranking"]).ks}, reverse=True)
    for at in ks:
        keys = [f"{name}@{at}" for name in RANKING_NAMES]
        rows = []
        for name, evaluation in ranked.items():
            for label, kind in (("published", "ranking"), ("exact top-N", "ranking_exact")):
                values = evaluation.get(kind) or {}
                cells = [
                    (f"{values[key]:,.1f}" if key.startswith("popularity@") else fmt_metric(values[key]))
                    if key in values
                    else ""
                    for key in keys
                ]
                rows.append([name, label, *cells])
        title = f"At {at}" + (" (headline)" if at == k else "")
        parts.append(f"<h3>{title}</h3>" + html_table(["Model", "Lists", *map(metric_label, keys)], rows, 2))
    users = fmt_count(first.get("users", 0))
    parts.append(f'<p class="note">Averaged over {users} users with held-out items.</p>')
    parts.append(gallery([ranking_bars(manifest, k)]))
    return "".join(parts)


def _serving_section(typed: RunManifest, manifest: dict[str, Any]) -> str:
    rows = []
    for name, model in typed.models.items():
        for metric, entry in model.indices.items():
            setting = f"{entry.setting[0]} {entry.setting[1]:,}" if entry.setting else "—"
            rows.append([name, metric, entry.backend, setting, entry.reason])
    ann_rows = []
    for name, model in manifest["models"].items():
        for kind, figures in (model.get("evaluation", {}).get("ann") or {}).items():
            ann_rows.append(
                [
                    name,
                    humanize(kind),
                    figures["metric"],
                    figures["backend"],
                    figures["k"],
                    fmt_metric(figures["recall_at_k"]),
                    fmt_count(figures["queries_per_second"]),
                    fmt_count(figures["exact_queries_per_second"]),
                    figures["queries"],
                ]
            )
    return (
        "<h2>Serving: approximate against exact search</h2>"
        + "<h3>How each index is served</h3>"
        + html_table(["Model", "Index", "Served by", "Setting", "Reason"], rows, 4, long=(4,))
        + "<h3>Served lists against exact search</h3>"
        + html_table(
            [
                "Model",
                "Lists",
                "Index",
                "Served by",
                "k",
                "Recall vs exact",
                "Queries/s",
                "Exact queries/s",
                "Queries",
            ],
            ann_rows,
            4,
        )
        + gallery([recall_curves(manifest)])
    )


def _details_section(manifest: dict[str, Any]) -> str:
    inp = manifest["input"]
    cards = [
        pairs_card(
            "Input",
            [
                ("Path", inp["path"]),
                ("Rows", inp["rows"]),
                ("Users", inp["users"]),
                ("Items", inp["items"]),
                ("Interactions", inp["interactions"]),
                ("Duplicate rows merged", inp["duplicate_rows_merged"]),
                ("Zero-weight rows dropped", inp["zero_weight_rows_dropped"]),
                *(
                    [
                        ("First timestamp", timestamp_text(inp["first_timestamp"], inp["timestamp_type"])),
                        ("Last timestamp", timestamp_text(inp["last_timestamp"], inp["timestamp_type"])),
                    ]
                    if inp.get("last_timestamp") is not None
                    else []
                ),
            ],
        )
    ]
    holdout = manifest.get("holdout")
    if holdout:
        method = holdout["method"]
        skip = {"sha256", "size_bytes", "fraction", "n"}
        pairs = [("Method", method)]
        if method in ("random", "time") and "fraction" in holdout:
            pairs.append(("Fraction", f"{holdout['fraction']:.0%}"))
        if method == "leave_last" and "n" in holdout:
            pairs.append(("Items per user", holdout["n"]))
        pairs += [(humanize(k), v) for k, v in holdout.items() if k not in skip | {"method"}]
        cards.append(pairs_card("Held-out interactions", pairs))
    run_timings = [(humanize(k), fmt_seconds(v) + " s") for k, v in manifest.get("timings", {}).items()]
    if run_timings:
        cards.append(pairs_card("Run timings", run_timings))
    models = manifest["models"]
    extra = sorted({s for m in models.values() for s in m.get("timings", {}) if s not in STAGES})
    stages = [*STAGES, *extra]
    carried = any(m.get("carried_over_from") for m in models.values())
    header = ["Model", *(["Carried over from"] if carried else []), *(f"{humanize(s)} (s)" for s in stages)]
    rows = [
        [name, *([m.get("carried_over_from", "")] if carried else [])]
        + [fmt_seconds(m.get("timings", {}).get(s)) for s in stages]
        for name, m in models.items()
    ]
    return (
        "<h2>Run details</h2>"
        + f'<div class="cards">{"".join(cards)}</div>'
        + "<h3>Timings per model</h3>"
        + html_table(header, rows, 2 if carried else 1)
    )


def _glossary() -> str:
    items = "".join(f"<dt>{esc(term)}</dt><dd>{esc(text)}</dd>" for term, text in GLOSSARY)
    return f'<h2>Glossary</h2><dl class="glossary">{items}</dl>'


def _validated(manifest: RunManifest | dict[str, Any]) -> RunManifest:
    return manifest if isinstance(manifest, RunManifest) else RunManifest.model_validate(manifest)


def render_report(
    run_dir: Path,
    manifest: RunManifest | dict[str, Any],
    previous: RunManifest | dict[str, Any] | None = None,
    history: list[ForwardRecord] | None = None,
) -> str:
    """The report of a run folder (published or staging) as one HTML string; ``previous``
    is the previous complete run's manifest (:func:`previous_manifest`), for the change
    of each model's headline metric; ``history``, the forward figures of earlier runs
    (:func:`~recsys.reporting.run_forward.forward_history`). Manifests are validated first: a field the report
    reads can never be missing or renamed."""
    typed = _validated(manifest)
    before = _validated(previous) if previous is not None else None
    manifest = typed.model_dump(mode="json", exclude_none=True)
    run_dir = Path(run_dir)
    summary = summarize(typed, before)
    k = headline_k(typed)
    inp = typed.input
    context = f"{inp.interactions:,} interactions, {inp.users:,} users, {inp.items:,} items"
    if typed.holdout:
        h = typed.holdout
        share = f" {h.fraction:.0%}" if h.method in ("random", "time") and h.fraction is not None else ""
        context += f"; held out: {h.method}{share}, {h.pairs_evaluated:,} interactions"
        context += f" of {h.users_evaluated:,} users"
    else:
        context += "; nothing held out"
    purpose = "Evaluation run (trained on the split, not refit)" if typed.purpose == "evaluation" else "Run"
    summaries = read_summaries(run_dir, manifest)
    parts = [
        f"<h1>recsys run {esc(typed.run_id)}</h1>",
        f'<p class="meta">{purpose} created {esc(typed.created_at)}, recsys {esc(typed.recsys_version)}, '
        f"config sha256 <code>{esc(typed.config_sha256[:16])}</code></p>",
        f'<p class="meta">{esc(context)}</p>',
        _promotion_section(typed),
        summary_section(typed, summary),
        forward_section(typed, history),
        _ranking_section(manifest, k),
        _serving_section(typed, manifest),
        "<h2>Published recommendations</h2>"
        '<p class="note">Scores are inner products of each model\'s own vectors: their scale differs '
        "between models, so each model has its own plot.</p>"
        + gallery([score_plots(manifest, summaries), concentration(summaries)]),
        _details_section(manifest),
        _glossary(),
    ]
    return page(f"recsys run {typed.run_id}", "\n".join(parts))
