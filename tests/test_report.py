"""report.html: published with the run, self-contained, with the manifest's figures."""

from __future__ import annotations

import html

import pytest
import yaml

from recsys.data import generate_interactions


@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory):
    from flows.pipeline import pipeline_flow

    root = tmp_path_factory.mktemp("report")
    generate_interactions(n_users=200, n_items=100, n_clusters=4, seed=2).to_parquet(root / "t.parquet")
    config = {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 4}},
            {"name": "lmf", "type": "lmf", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
        ],
        "index": {"n_trees": 5, "auto_min_items": 0},  # probe Annoy: the report plots its curves
        "recommend": {"top_n": 10},
        "similar_items": {"top_n": 5},
        "evaluate": {"k": [5, 10], "split": {"method": "random"}, "sample_users": 50, "sample_items": 50},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = pipeline_flow(
        config_path=str(root / "c.yaml"), interactions=str(root / "t.parquet"), output=str(root / "out")
    )
    return root / "out" / "runs" / manifest["run_id"], manifest


def test_report_is_published_and_self_contained(published):
    run_dir, manifest = published
    assert manifest["report"] == "report.html"
    text = (run_dir / "report.html").read_text()
    assert "http" not in text and "<script" not in text and "<link " not in text
    assert text.count('<img alt="') == text.count('src="data:image/png;base64,') == 4
    for name in ("als", "lmf"):
        assert f'<td class="text">{name}</td>' in text
        recall = manifest["models"][name]["evaluation"]["ranking"]["recall@10"]
        assert f"{recall:.4f}" in text
    assert len(text) < 1_000_000


def test_report_without_holdout_says_so(published, tmp_path):
    from recsys.reporting import render_report

    run_dir, manifest = published
    stripped = {**manifest, "holdout": None}
    stripped["models"] = {
        name: {**model, "evaluation": {"ann": model["evaluation"]["ann"]}}
        for name, model in manifest["models"].items()
    }
    text = render_report(run_dir, stripped)
    assert "No held-out interactions" in text
    assert text.count("data:image/png;base64,") == 3


# ---------------------------------------------------------------- the summary, without Prefect

ALS_BEFORE = {"factors": 4, "iterations": 1}
ALS_AFTER = {"factors": 16, "iterations": 6}


def _config(als_params: dict) -> dict:
    return {
        "models": [
            {"name": "als", "type": "als", "params": dict(als_params)},
            {"name": "popular", "type": "popular"},
        ],
        "index": {"n_trees": 5, "auto_min_items": 0},  # probe Annoy: the report plots its curves
        "recommend": {"top_n": 10},
        "similar_items": {"top_n": 5},
        "evaluate": {"k": [5, 10], "split": {"method": "random"}, "sample_users": 50, "sample_items": 50},
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs of an als and a popular model on the same split; the second trains ALS longer."""
    import recsys

    root = tmp_path_factory.mktemp("summary") / "out"
    frame = generate_interactions(n_users=200, n_items=100, n_clusters=4, seed=2)
    first = recsys.run_pipeline(frame, _config(ALS_BEFORE), output=root)
    second = recsys.run_pipeline(frame, _config(ALS_AFTER), output=root)
    return root, first, second


def _ndcg(run, model: str) -> float:
    return run.manifest.models[model].evaluation.ranking["ndcg@10"]


def test_summary_names_the_best_model_and_its_lift(two_runs):
    from recsys.reporting import render_report, summarize

    _, _, run = two_runs
    summary = summarize(run.manifest)
    assert summary.metric == "ndcg@10"
    assert summary.best == "als" and summary.baseline == "popular"
    assert list(summary.scores) == ["als", "popular"]
    lift = _ndcg(run, "als") / _ndcg(run, "popular")
    assert summary.lift["als"] == pytest.approx(lift)
    assert summary.previous_run is None and summary.delta == {}

    text = render_report(run.dir, run.manifest)
    assert "Best model by NDCG@10: <strong>als</strong>" in text
    assert f"<strong>x{lift:.2f}</strong> the popularity baseline <strong>popular</strong>" in text
    assert "<td>baseline</td>" in text
    assert "No previous complete run to compare with." in text
    assert text.index("<h2>Summary</h2>") < text.index("<h2>Ranking quality")


def test_summary_shows_each_model_params_without_random_state(two_runs):
    from recsys.reporting import render_report

    _, _, run = two_runs
    text = render_report(run.dir, run.manifest)
    assert run.manifest.models["als"].params["random_state"] is not None
    assert "factors=16, iterations=6" in text
    assert "random_state" not in text
    assert '<td class="text long"><div>defaults</div></td>' in text  # popular has no params
    for header in (
        "<th>NDCG@10</th>",
        "<th>Lift vs popular</th>",
        '<th class="text">Type</th>',
        "<th>Dim</th>",
    ):
        assert header in text


def test_previous_manifest_is_the_run_before(two_runs, tmp_path):
    from recsys.reporting import previous_manifest

    root, first, second = two_runs
    assert previous_manifest(root, second.run_id).run_id == first.run_id
    assert previous_manifest(root, first.run_id) is None  # nothing was published before it
    assert previous_manifest(root, "20990101T000000Z-aaaaaa").run_id == second.run_id  # not published yet
    assert previous_manifest(tmp_path, second.run_id) is None  # no runs at all


def test_previous_manifest_is_none_when_it_cannot_be_read(tmp_path):
    from recsys.reporting import previous_manifest

    broken = tmp_path / "runs" / "20260101T000000Z-abcdef"
    broken.mkdir(parents=True)
    (broken / "_SUCCESS").touch()
    (broken / "manifest.json").write_text("{}")
    assert previous_manifest(tmp_path, "20260102T000000Z-abcdef") is None


def test_summary_change_against_the_previous_run(two_runs):
    from recsys.reporting import previous_manifest, render_report, summarize

    root, first, second = two_runs
    previous = previous_manifest(root, second.run_id)
    summary = summarize(second.manifest, previous)
    delta = _ndcg(second, "als") - _ndcg(first, "als")
    assert summary.previous_run == first.run_id and summary.comparable
    assert summary.delta["als"] == pytest.approx(delta)
    assert summary.delta["popular"] == 0.0  # same data, same split: the baseline does not move

    for given in (previous, previous.model_dump(mode="json", exclude_none=True)):
        text = render_report(second.dir, second.manifest, given)
        assert f"since the previous complete run <code>{first.run_id}</code>" in text
        assert f"{delta:+.4f}" in text
        assert "popular <span" in text and "&plusmn;0.0000" in text
        assert "<th>Change vs previous</th>" in text


def test_summary_of_a_model_the_previous_run_did_not_have(two_runs):
    from recsys.reporting import render_report

    _, first, second = two_runs
    previous = first.manifest.model_dump(mode="json", exclude_none=True)
    previous["models"] = {"old": previous["models"]["als"], "popular": previous["models"]["popular"]}
    previous.pop("best_model", None)  # it named a model this previous run no longer has
    text = render_report(second.dir, second.manifest, previous)
    assert "als new" in text and "<td>new</td>" in text


def test_summary_without_a_popularity_baseline_says_how_to_add_one(two_runs):
    from recsys.reporting import render_report, summarize

    _, _, run = two_runs
    manifest = run.manifest.model_dump(mode="json", exclude_none=True)
    manifest["models"] = {"als": manifest["models"]["als"]}
    assert summarize(run.manifest.model_validate(manifest)).lift == {}
    text = render_report(run.dir, manifest)
    assert "No popularity baseline was run" in text
    assert "{name: popular, type: popular}" in text
    assert "Best model by NDCG@10: <strong>als</strong>" in text


def test_summary_when_the_baseline_wins(two_runs):
    from recsys.reporting import render_report

    _, _, run = two_runs
    manifest = run.manifest.model_dump(mode="json", exclude_none=True)
    als = manifest["models"]["als"]["evaluation"]["ranking"]
    als["ndcg@10"] = manifest["models"]["popular"]["evaluation"]["ranking"]["ndcg@10"] / 2
    text = render_report(run.dir, manifest)
    assert "Best model by NDCG@10: <strong>popular</strong>" in text
    assert "The popularity baseline is best" in text and 'class="verdict warn"' in text


def test_summary_without_ranking_metrics_says_how_to_get_them(two_runs):
    from recsys.reporting import render_report, summarize

    _, _, run = two_runs
    manifest = run.manifest.model_dump(mode="json", exclude_none=True)
    manifest.pop("holdout")
    for model in manifest["models"].values():
        model["evaluation"] = {"ann": model["evaluation"]["ann"]}
    assert summarize(run.manifest.model_validate(manifest)).metric is None
    text = render_report(run.dir, manifest)
    assert "No held-out interactions in this run" in text
    assert "<code>evaluate.split</code>" in text and "--holdout" in text
    assert "Best model" not in text and "factors=16, iterations=6" in text


def test_tables_have_human_headers_and_number_formats(two_runs):
    from recsys.reporting import fmt_count, fmt_metric, fmt_seconds, render_report

    assert [fmt_seconds(v) for v in (0, 0.01, 0.12, 1.23, 12.3, 1234.4)] == [
        "0",
        "<0.1",
        "0.1",
        "1.2",
        "12",
        "1,234",
    ]
    assert fmt_metric(0.123456) == "0.1235" and fmt_count(9756) == "9,756" and fmt_count(1500.0) == "1,500"
    _, _, run = two_runs
    text = render_report(run.dir, run.manifest)
    for header in (
        "Recall@10",
        "NDCG@5",
        "Hit rate@10",
        "Queries/s",
        "Exact queries/s",
        "Fit (s)",
        "Index (s)",
    ):
        assert f"<th>{header}</th>" in text
    assert "_s<" not in text and "hit_rate" not in text and "queries_per_second" not in text
    users = run.manifest.input.users
    assert f"Averaged over {users:,} users with held-out items." in text
    fit = run.manifest.models["als"].timings["fit"]
    assert f"<td>{html.escape(fmt_seconds(fit))}</td>" in text


def test_layout_is_responsive_and_plots_are_per_model(two_runs):
    from recsys.reporting import GLOSSARY, render_report

    _, _, run = two_runs
    text = render_report(run.dir, run.manifest)
    style = text[text.index("<style>") : text.index("</style>")]
    assert "max-width: 1200px" not in style and "body {" in style
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert text.count('<div class="wide"><table>') == text.count(
        "<table>"
    )  # every table scrolls in its own box
    assert ".wide { overflow-x: auto;" in style
    assert 'alt="Histogram of recommendation scores, one per model"' in text
    assert (
        text.count('src="data:image/png;base64,') == 4
    )  # recall vs speed, ranking bars, scores, concentration
    assert "<h2>Glossary</h2>" in text
    for term, _ in GLOSSARY:
        assert f"<dt>{term}</dt>" in text
    for term in (
        "Recall@k",
        "NDCG@k",
        "Precision@k",
        "MAP@k",
        "Hit rate@k",
        "Coverage@k",
        "Popularity@k",
        "Lift",
    ):
        assert term in dict(GLOSSARY)


def test_summary_of_a_model_the_previous_run_did_not_measure(two_runs):
    from recsys.reporting import render_report, summarize

    _, first, second = two_runs
    previous = first.manifest.model_dump(mode="json", exclude_none=True)
    previous["models"]["als"]["evaluation"] = {"ann": previous["models"]["als"]["evaluation"]["ann"]}
    summary = summarize(second.manifest, first.manifest.model_validate(previous))
    assert "als" not in summary.delta and summary.previous_scores["als"] is None
    text = render_report(second.dir, second.manifest, previous)
    assert "als not measured before" in text and "<td>not measured before</td>" in text
