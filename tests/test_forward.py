"""Forward: a run measures the current run's published recommendations against the
interactions of its input that came after the current run's input ended, and records
the figures in its manifest (``forward``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from flows.observe import metrics_rows, publish_artifacts
from recsys import storage
from recsys.cli.formats import run_columns
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import IdMap, clean_table
from recsys.manifest import read_manifest, timestamp_text
from recsys.reporting import ForwardRecord, forward_history
from recsys.stages.forward import list_figures, new_pairs
from recsys.stages.prepare import time_span
from recsys.stages.runner import run_local
from tests.processes import SMALL_RUN_CONFIG, environment, recsys

CONFIG = {
    "seed": 2,
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "pop", "type": "popular"},
    ],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "evaluate": {"sample_users": 30, "sample_items": 30},
}


# ---------------------------------------------------------------- the figures by hand


def test_the_figures_of_a_tiny_case_by_hand():
    """Old run: users 1, 2, 3 and items 10..14; user 1 had seen 10. Later rows: user 1
    takes 10 again (seen: left out), 11 and 12; user 2 takes 13 and 99 (an unknown item:
    a miss); user 7 (unknown: left out) takes 11; user 3 has one row, before the cut."""
    users = IdMap.from_ids(np.array([1, 2, 3]), "int")
    items = IdMap.from_ids(np.array([10, 11, 12, 13, 14]), "int")
    seen = sp.csr_matrix(([1.0], ([0], [0])), shape=(3, 5))
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 7, 3],
            "item_id": [10, 11, 12, 13, 99, 11, 14],
            "weight": 1.0,
            "timestamp": [5, 6, 7, 8, 9, 9, 2],
        }
    )
    pairs = new_pairs(clean_table(frame), 3.0, users, items, seen)
    assert pairs.counts == {
        "rows": 6,
        "unknown_users": 1,
        "pairs_of_unknown_users": 1,
        "pairs_of_unknown_items": 1,
        "pairs_seen_before": 1,
    }
    assert pairs.users.tolist() == [0, 1]  # users 1 and 2
    # lists of N=2: user 1 gets [11, 14] (one of its two new items), user 2 [12, 14] (none)
    lists = np.array([[1, 4], [2, 4]])
    figures = list_figures(lists, pairs, len(items))
    assert figures == {"users": 2, "hits": 1, "hit_rate": 0.5, "pairs": 4, "found": 1, "recall": 0.25}
    # a list cut short (-1) and an unknown item never match, whatever the neighbours hold
    short = np.array([[-1, -1], [4, -1]])
    assert list_figures(short, pairs, len(items))["found"] == 0


def test_the_time_span_of_numbers_and_of_dates():
    numbers = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 1, 2], "timestamp": [30, 10, None]})
    assert time_span(clean_table(numbers)) == {
        "timestamp_type": "number",
        "first_timestamp": 10.0,
        "last_timestamp": 30.0,
    }
    dates = numbers.assign(timestamp=pd.to_datetime(["2026-01-02T00:00:00", "2026-01-01T12:00:00", None]))
    span = time_span(clean_table(dates))
    assert span["timestamp_type"] == "datetime"
    assert timestamp_text(span["last_timestamp"], "datetime") == "2026-01-02T00:00:00Z"
    assert timestamp_text(span["first_timestamp"], "datetime") == "2026-01-01T12:00:00Z"
    assert time_span(clean_table(numbers.drop(columns="timestamp"))) == {}


# ---------------------------------------------------------------- two runs in a row


def expected_figures(run_dir, model: str, old: pd.DataFrame, new: pd.DataFrame, after) -> dict:
    """The figures of a published run's recommendations, computed here from its parquet
    file and the rows of ``new`` later than ``after`` (``old``: that run's input)."""
    lists = pd.read_parquet(run_dir / "models" / model / "recommendations.parquet")
    listed = lists.groupby("user_id")["item_id"].apply(set).to_dict()
    seen = set(zip(old["user_id"], old["item_id"], strict=True))
    later = new[new["timestamp"] > after]
    wanted: dict[int, set] = {}
    for user, item in zip(later["user_id"], later["item_id"], strict=True):
        if user in set(old["user_id"]) and (user, item) not in seen:
            wanted.setdefault(user, set()).add(item)
    found = {user: len(items & listed.get(user, set())) for user, items in wanted.items()}
    return {
        "users": len(wanted),
        "hits": sum(1 for n in found.values() if n),
        "pairs": sum(len(items) for items in wanted.values()),
        "found": sum(found.values()),
        "recall": math.fsum(found[u] / len(wanted[u]) for u in wanted) / len(wanted),
    }


@pytest.fixture(scope="module")
def interactions():
    return generate_interactions(n_users=120, n_items=60, n_clusters=3, seed=4)


def _cut(frame: pd.DataFrame, share: float = 0.7):
    return frame["timestamp"].sort_values().iloc[int(len(frame) * share)]


def test_the_second_run_measures_the_first_runs_lists(tmp_path, interactions, monkeypatch):
    config = parse_config(CONFIG)
    cut = _cut(interactions)
    old = interactions[interactions["timestamp"] <= cut]
    first = run_local(config, old, tmp_path / "out", "r1")
    assert first.forward is None  # no current run to measure
    assert first.input.timestamp_type == "datetime"
    assert first.input.last_timestamp == pd.Timestamp(cut, tz="UTC").timestamp()
    # later: a pair user 0 had again (seen), a user the first run did not know, an item it
    # did not know (a miss)
    late = interactions["timestamp"].max() + pd.Timedelta(days=1)
    user, item = old.iloc[0]["user_id"], old.iloc[0]["item_id"]
    extra = pd.DataFrame(
        {
            "user_id": [user, 10_000, user],
            "item_id": [item, item, 10_000],
            "weight": 1.0,
            "timestamp": [late, late, late],
        }
    )
    new = pd.concat([interactions, extra], ignore_index=True)
    second = run_local(config, new, tmp_path / "out", "r2")
    forward = second.forward
    assert forward is not None and forward.against == "r1"
    assert (forward.after, forward.until) == (first.input.last_timestamp, second.input.last_timestamp)
    assert forward.rows == int((interactions["timestamp"] > cut).sum()) + 3
    assert (forward.pairs_seen_before, forward.unknown_users, forward.pairs_of_unknown_users) == (1, 1, 1)
    assert forward.pairs_of_unknown_items == 1
    assert forward.baseline == "pop"
    run_dir = tmp_path / "out" / "runs" / "r1"
    for name in ("als", "pop"):
        figures = forward.models[name]
        want = expected_figures(run_dir, name, old, new, cut)
        assert want["users"] > 0 and want["pairs"] > 0
        got = {key: getattr(figures, key) for key in want}
        assert got == pytest.approx(want, rel=1e-12)
        assert figures.hit_rate == want["hits"] / want["users"]
        assert (figures.users, figures.pairs) == (forward.users, forward.pairs)
        assert figures.top_n == 5
    pop, als = forward.models["pop"], forward.models["als"]
    assert pop.lift_recall == pytest.approx(1.0)
    if pop.recall:
        assert als.lift_recall == pytest.approx(als.recall / pop.recall)
    # recorded in the published manifest as read back
    assert read_manifest(storage.find_run(tmp_path / "out")).forward == forward
    # shown in the report and in the Prefect metrics table
    report = (tmp_path / "out" / "runs" / "r2" / "report.html").read_text()
    assert "<h2>Did the current run's lists work?</h2>" in report
    assert f"{als.hits:,} of {als.users:,}" in report and f"{als.recall:.4f}" in report
    rows = {row["model"]: row for row in metrics_rows(second)}
    assert rows["als"]["forward recall@5"] == round(als.recall, 4)
    assert rows["pop"]["forward hit rate"] == round(pop.hit_rate, 4)
    assert "forward hit rate" not in metrics_rows(first)[0]
    import prefect.artifacts

    made: dict[str, dict] = {}
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", lambda **kw: made.setdefault("table", kw))
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", lambda **kw: made.setdefault("md", kw))
    publish_artifacts(second, str(tmp_path / "out" / "runs" / "r2"), "nightly")
    assert made["table"]["table"] == metrics_rows(second)
    assert f"the lists of run r1 against {forward.pairs} later interactions" in made["table"]["description"]
    assert f"als hit rate {als.hit_rate:.4f}, recall@5 {als.recall:.4f}" in made["md"]["markdown"]
    # and in `recsys runs`
    text = run_columns(second, held=False)["forward"]
    assert text.startswith(f"vs r1 ({forward.users:,} users): ")
    assert f"als hit_rate={als.hit_rate:.4f} recall@5={als.recall:.4f}" in text
    assert "forward" not in run_columns(first, held=False)


def test_the_report_shows_the_figures_across_runs(tmp_path, interactions):
    config = parse_config(CONFIG)
    cut = _cut(interactions, 0.5)
    run_local(config, interactions[interactions["timestamp"] <= cut], tmp_path / "out", "r1")
    run_local(
        config, interactions[interactions["timestamp"] <= _cut(interactions, 0.75)], tmp_path / "out", "r2"
    )
    third = run_local(config, interactions, tmp_path / "out", "r3")
    history = forward_history(tmp_path / "out", "r3")
    assert [(record.run_id, record.forward.against) for record in history] == [("r2", "r1")]
    assert third.forward is not None and third.forward.against == "r2"
    report = (tmp_path / "out" / "runs" / "r3" / "report.html").read_text()
    section = report[report.index("lists work?") : report.index("Ranking quality")]
    assert "Across runs" in section
    for record in [ForwardRecord("r3", third.forward), *history]:
        assert (
            f'<td class="text">{record.run_id}</td><td class="text">{record.forward.against}</td>' in section
        )
        als = record.forward.models["als"]
        assert f"{als.hit_rate:.4f} / {als.recall:.4f}" in section


def test_no_figures_without_later_rows_or_timestamps(tmp_path, interactions, caplog):
    config = parse_config(CONFIG)
    with caplog.at_level("INFO", logger="recsys"):
        run_local(config, interactions, tmp_path / "out", "r1")
        assert "forward: no current run to measure" in caplog.text
        again = run_local(config, interactions, tmp_path / "out", "r2")
    assert again.forward is None
    assert "forward: no interaction after run r1's input ended" in caplog.text
    caplog.clear()
    plain = interactions.drop(columns="timestamp")
    with caplog.at_level("INFO", logger="recsys"):
        untimed = run_local(config, plain, tmp_path / "out", "r3")
    assert untimed.forward is None
    assert untimed.input.last_timestamp is None and untimed.input.timestamp_type is None
    assert "this run's input has no timestamps" in caplog.text
    # and a run with timestamps after a current run without them: nothing measured either
    caplog.clear()
    with caplog.at_level("INFO", logger="recsys"):
        timed = run_local(config, interactions, tmp_path / "out", "r4")
    assert timed.forward is None
    assert "run r3's input had no timestamps" in caplog.text


@pytest.mark.slow  # two runs through the console script and Prefect
def test_the_console_script_shows_the_figures(tmp_path, interactions):
    """Two `recsys run`s, the second on an input with later interactions: `recsys runs`
    and the second run's report show the figures its manifest records."""
    cut = _cut(interactions)
    interactions[interactions["timestamp"] <= cut].to_parquet(tmp_path / "first.parquet", index=False)
    interactions.to_parquet(tmp_path / "t.parquet", index=False)
    config = {**SMALL_RUN_CONFIG, "models": [*SMALL_RUN_CONFIG["models"], {"name": "pop", "type": "popular"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = environment(tmp_path)
    for table, run_id in (("first.parquet", "r1"), ("t.parquet", "r2")):
        result = recsys(
            "run", "--config", "c.yaml", "--interactions", table, "--run-id", run_id, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    forward = read_manifest(storage.find_run(tmp_path / "out")).forward
    assert forward is not None and forward.against == "r1" and set(forward.models) == {"als", "pop"}
    listing = recsys("runs", "--output", "out", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (line,) = [row for row in listing.stdout.splitlines() if row.startswith("r2 *")]
    als = forward.models["als"]
    assert (
        f"vs r1 ({forward.users:,} users): als hit_rate={als.hit_rate:.4f} recall@5={als.recall:.4f}" in line
    )
    report = (tmp_path / "out" / "runs" / "r2" / "report.html").read_text()
    assert "<h2>Did the current run's lists work?</h2>" in report
    assert f"{als.hits:,} of {als.users:,}" in report and f"{als.found:,} of {als.pairs:,}" in report
