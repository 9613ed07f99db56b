"""`index.backend: auto` chooses by whole cost (build + probe + serving of the run's
queries) against exact search's serving; its probe is sized to the run and capped."""

import re

import pytest

import recsys
from recsys.config import parse_config
from recsys.data.synthetic import generate_interactions
from recsys.index.base import Sweep
from recsys.index.select import Costs, choose
from recsys.stages.index import probe_size


def sweep(setting: str, chosen: int | None, qps: float) -> Sweep:
    value = chosen if chosen is not None else 1
    return Sweep(
        setting=setting,
        k=10,
        queries=100,
        target_recall=0.9,
        chosen=chosen,
        exact_queries_per_second=1000.0,
        curve=[
            {setting: value, "recall_at_k": 0.95 if chosen is not None else 0.5, "queries_per_second": qps}
        ],
    )


SWEEPS = [("annoy", sweep("search_k", 400, 20_000.0)), ("faiss", sweep("nprobe", 8, 40_000.0))]


def test_the_least_whole_cost_wins_not_the_fastest_search():
    # exact: 100k queries at 1000/s = 100 s; annoy 10 + 2 + 5 = 17 s; faiss 30 + 2 + 2.5 = 34.5 s
    costs = Costs(
        served=100_000,
        exact_queries_per_second=1000.0,
        build={"annoy": 10, "faiss": 30},
        probe={"annoy": 2, "faiss": 2},
    )
    chosen = choose(SWEEPS, "auto", 0.9, 10, costs)
    assert chosen["backend"] == "annoy" and chosen["search_k"] == 400
    assert (
        "annoy: build 10.0 s + probe 2.0 s + serve 5.0 s = 17.0 s < exact 100.0 s serve" in chosen["reason"]
    )


def test_no_candidate_costing_more_than_exact_search_is_chosen():
    # exact: 2k queries at 1000/s = 2 s; every index's build alone is more
    costs = Costs(
        served=2_000,
        exact_queries_per_second=1000.0,
        build={"annoy": 3, "faiss": 30},
        probe={"annoy": 0.1, "faiss": 0.1},
    )
    chosen = choose(SWEEPS, "auto", 0.9, 10, costs)
    assert chosen["backend"] == "exact"
    assert "exact 2.0 s serve" in chosen["reason"] and "annoy: build 3.0 s" in chosen["reason"]


def test_a_family_choice_stays_by_recall_only():
    costs = Costs(served=10, exact_queries_per_second=1e6, build={"annoy": 100}, probe={})
    assert choose(SWEEPS, "annoy", 0.9, 10, costs)["backend"] == "annoy"
    unreached = [("annoy", sweep("search_k", None, 1.0))]
    assert choose(unreached, "auto", 0.9, 10, costs)["backend"] == "exact"


def test_the_probe_sample_never_exceeds_the_queries_served():
    config = parse_config({"models": [{"name": "als", "type": "als"}]})
    assert probe_size(config, 37) == 37
    assert probe_size(config, 1_000) == 200
    assert probe_size(config, 3_000) == 300
    assert probe_size(config, 10**7) == config.evaluate.tune_queries


CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
    "index": {"annoy": {"n_trees": 5}, "auto_min_items": 0},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
}
TIMES = re.compile(r"build [\d.]+ s \+ probe [\d.]+ s \+ serve [\d.]+ s = [\d.]+ s")


def test_an_auto_run_states_the_three_times_in_its_reason(tmp_path):
    frame = generate_interactions(n_users=150, n_items=80, n_clusters=3, seed=1)
    run = recsys.run_pipeline(frame, CONFIG, output=tmp_path)
    for metric, entry in run.manifest.models["als"].indices.items():
        dumped = entry.model_dump(mode="json", exclude_none=True)
        assert TIMES.search(dumped["reason"]), (metric, dumped["reason"])
        assert re.search(r"exact [\d.]+ s serve", dumped["reason"]), dumped["reason"]
        served = 80 + (150 if metric == "dot" else 0)
        for name, tuned in dumped["tuning"].items():
            assert tuned["queries"] <= served, name
    assert len(run.recommend([frame["user_id"].iloc[0]], n=5)) == 5


def test_a_tiny_probe_cap_stops_the_sweep_and_still_chooses(tmp_path):
    frame = generate_interactions(n_users=150, n_items=80, n_clusters=3, seed=1)
    config = {**CONFIG, "index": {**CONFIG["index"], "probe_seconds": 1e-6}}
    run = recsys.run_pipeline(frame, config, output=tmp_path)
    for entry in run.manifest.models["als"].indices.values():
        dumped = entry.model_dump(mode="json", exclude_none=True)
        swept = dumped.get("tuning", {})
        assert sum(len(tuned["curve"]) for tuned in swept.values()) <= 1
        assert dumped["backend"] in ("exact", *swept)
    assert len(run.similar_items()) > 0


@pytest.mark.parametrize("value", [0, -1, "soon"])
def test_probe_seconds_is_checked_at_load(value):
    with pytest.raises(Exception, match="probe_seconds"):
        parse_config({"models": [{"name": "als", "type": "als"}], "index": {"probe_seconds": value}})


def test_each_backend_build_is_estimated_once_per_model(tmp_path, monkeypatch):
    """The timed sample build that estimates a backend's build serves both of a model's
    indices (angular and dot): the same vectors, count and settings."""
    import recsys.stages.index as index_stage

    monkeypatch.setattr(index_stage, "MIN_ESTIMATE_ITEMS", 5)  # estimate on 80 // 8 items
    calls: list[tuple[str, str]] = []
    estimate = index_stage.estimate_build

    def counted(candidate, context, k):
        calls.append((candidate.name, context.metric))
        return estimate(candidate, context, k)

    monkeypatch.setattr(index_stage, "estimate_build", counted)
    frame = generate_interactions(n_users=150, n_items=80, n_clusters=3, seed=1)
    run = recsys.run_pipeline(frame, CONFIG, output=tmp_path)
    names = [name for name, _ in calls]
    assert names and len(names) == len(set(names)), calls
    # a backend serving both metrics is estimated for the first index (angular) and the
    # estimate reused for dot; only a dot-only strategy is estimated for dot
    from recsys.index import BACKENDS

    for name, metric in calls:
        assert metric == ("angular" if BACKENDS[name].supports("angular") else "dot"), calls
    assert {name for name, _ in calls if BACKENDS[name].supports("angular")} >= {"annoy"}
    assert set(run.manifest.models["als"].indices) == {"angular", "dot"}


def test_a_build_that_would_outlast_the_probe_time_is_not_started():
    """A strategy whose estimated build ends after index.probe_seconds could not be probed
    (never chosen): not built. Within both limits, or without an estimate, it is."""
    from recsys.stages.index import build_skipped

    assert build_skipped(72.0, bar=260.0, left=50.0) == (
        "estimated build 72.0 s > the 50.0 s left of index.probe_seconds"
    )
    assert build_skipped(72.0, bar=60.0, left=500.0) == (
        "estimated build 72.0 s > 60.0 s, the least whole cost so far"
    )
    assert build_skipped(72.0, bar=260.0, left=-3.0).endswith("the 0.0 s left of index.probe_seconds")
    assert build_skipped(10.0, bar=260.0, left=50.0) is None
    assert build_skipped(-1.0, bar=0.5, left=-2.0) is None  # no estimate: built
