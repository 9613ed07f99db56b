"""The popular fallback under the run's item rules: the command line (a real `recsys`
process) and the Python API answer the same lists, for known and unknown users, with an
include list and with an exclude list."""

from __future__ import annotations

import json
import subprocess

import pytest

import recsys
from recsys.data import generate_interactions
from tests.processes import RECSYS, environment

TOP_N = 8


@pytest.fixture(scope="module")
def frame():
    return generate_interactions(n_users=150, n_items=80, n_clusters=4, seed=11)


@pytest.fixture(scope="module")
def popular(frame) -> list[int]:
    users_per_item = frame.groupby("item_id")["user_id"].nunique()
    return [int(i) for i in users_per_item.sort_values(ascending=False, kind="stable").index[:12]]


def _publish(tmp_path_factory, frame, rules: dict) -> tuple[recsys.Run, str]:
    root = tmp_path_factory.mktemp("fallback") / "out"
    config = {
        "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
        "index": {"backend": "exact"},
        "recommend": {"top_n": TOP_N, **rules},
        "similar_items": {"top_n": 5},
    }
    return recsys.run_pipeline(frame, config, output=root, run_id="r1"), str(root)


def _cli(root: str, user: str, cwd) -> dict:
    result = subprocess.run(
        [RECSYS, "recommend", "--user", user, "--fallback", "popular", "--json", "--output", root],
        capture_output=True,
        text=True,
        env=environment(cwd),
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("rule", ["exclude_items", "include_items"])
def test_cli_and_api_fallbacks_agree_under_item_rules(tmp_path_factory, tmp_path, frame, popular, rule):
    items = sorted(int(i) for i in frame["item_id"].unique())
    if rule == "exclude_items":
        listed = popular[:5]  # the five most popular items are never recommended
        allowed = set(items) - set(listed)
    else:
        listed = popular[3:] + items[:10]  # the three most popular items are left out
        allowed = set(listed)
    run, root = _publish(tmp_path_factory, frame, {rule: listed})
    unknown, known = 10**9, int(frame["user_id"].iloc[0])
    # unknown user: the API's fallback and the command's are the same allowed items
    api = run.recommend([unknown], fallback="popular")
    cli = _cli(root, str(unknown), tmp_path)
    assert cli["fallback"] == "popular" and cli["user"] == unknown
    assert [r["item_id"] for r in cli["results"]] == api["item_id"].tolist()
    assert [r["score"] for r in cli["results"]] == api["score"].tolist()
    assert len(api) == TOP_N and set(api["item_id"]) <= allowed
    assert not set(run.popular(TOP_N)["item_id"]) <= allowed  # the rules mattered here
    # known user: answered from the model, under the same rules, by both
    api = run.recommend([known], fallback="popular")
    cli = _cli(root, str(known), tmp_path)
    assert "fallback" not in cli
    assert [r["item_id"] for r in cli["results"]] == api["item_id"].tolist()
    assert set(api["item_id"]) <= allowed and set(api["source"]) == {"model"}
