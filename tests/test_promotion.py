"""The promotion gate's checks (input drop, metric drop, gate off, the first run), and
``recsys promote`` in-process: a held run is kept complete, CURRENT and latest stay, the
promotion verifies the run's files first."""

from __future__ import annotations

import os

import pytest

from recsys import storage
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.errors import PromotionHeld, RunError
from recsys.manifest import RunManifest, read_manifest
from recsys.stages.publish import gate_checks, headline_metric, promote, promotion_gate
from recsys.stages.runner import run_local

CONFIG = {
    "seed": 5,
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 4}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "evaluate": {"sample_users": 50, "sample_items": 50, "split": {"method": "random"}},
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    frame = generate_interactions(n_users=300, n_items=100, n_clusters=4, seed=2)
    frame.to_parquet(folder / "full.parquet", index=False)
    users = frame["user_id"].drop_duplicates().sample(frac=0.3, random_state=0)
    frame[frame["user_id"].isin(users)].to_parquet(folder / "part.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def published(tables, tmp_path_factory):
    """One good run, current, under a root of its own."""
    root = tmp_path_factory.mktemp("gate-out")
    run_local(parse_config(CONFIG), tables / "full.parquet", root, "good")
    return root


def _manifest(root, run_id) -> RunManifest:
    return read_manifest(storage.find_run(root, run_id))


def _with(manifest: RunManifest, users=None, metric=None) -> RunManifest:
    """The manifest with its input's users or the als model's ndcg replaced."""
    raw = manifest.model_dump(mode="json", exclude_none=True)
    if users is not None:
        raw["input"]["users"] = users
    if metric is not None:
        raw["models"]["als"]["evaluation"]["ranking"][metric[0]] = metric[1]
    return RunManifest.model_validate(raw)


def test_the_first_run_passes_with_nothing_to_check(published):
    manifest = _manifest(published, "good")
    assert manifest.promotion.gate == "passed" and manifest.promotion.against is None
    assert manifest.promotion.checks == [] and manifest.promotion.reason is None
    assert storage.current_run_id(published) == "good"
    assert os.readlink(published / "latest") == "runs/good"


def test_input_drop_beyond_the_share_fails(published):
    config = parse_config(CONFIG)
    current = _manifest(published, "good")
    users = current.input.users
    # exactly half of the users lost: allowed (at most max_input_drop)
    half = promotion_gate(published, config, _with(current, users=users // 2))
    assert half.gate == "passed" and half.against == "good"
    lost = promotion_gate(published, config, _with(current, users=int(users * 0.3)))
    assert lost.held and lost.against == "good"
    failed = [c.name for c in lost.checks if not c.passed]
    assert failed == ["users"]
    assert lost.reason == (
        f"users fell from {users} to {int(users * 0.3)} (-70.0%; promotion.max_input_drop allows 50%) "
        "against the current run good"
    )
    # a larger input is never a drop
    grown = promotion_gate(published, config, _with(current, users=users * 3))
    assert grown.gate == "passed" and grown.checks[0].drop < 0
    # a stricter share
    strict = parse_config({**CONFIG, "promotion": {"max_input_drop": 0.1}})
    assert promotion_gate(published, strict, _with(current, users=int(users * 0.85))).held


def test_metric_drop_beyond_the_share_fails(published):
    config = parse_config(CONFIG)
    current = _manifest(published, "good")
    metric = str(headline_metric(config))
    assert metric == "ndcg@5"  # ndcg at the largest evaluate.k (capped at top_n)
    before = current.models["als"].evaluation.ranking[metric]
    slightly = _with(current, metric=(metric, before * 0.95))
    assert promotion_gate(published, config, slightly).gate == "passed"
    fallen = promotion_gate(published, config, _with(current, metric=(metric, before * 0.8)))
    assert fallen.held and fallen.metric == metric
    (check,) = [c for c in fallen.checks if not c.passed]
    assert check.name == f"{metric} of als" and check.drop == pytest.approx(0.2)
    assert f"{metric} of als fell from" in fallen.reason and "max_metric_drop allows 10%" in fallen.reason
    # another k than the headline: not compared
    other = _with(current, metric=("recall@5", 0.0))
    assert promotion_gate(published, config, other).gate == "passed"


def test_models_or_metrics_only_in_one_run_are_not_compared(published):
    current = _manifest(published, "good")
    raw = current.model_dump(mode="json", exclude_none=True)
    raw["models"]["als"]["evaluation"].pop("ranking")
    raw["models"]["als"]["evaluation"].pop("ranking_exact", None)
    unmeasured = RunManifest.model_validate(raw)
    checks = gate_checks(current, unmeasured, parse_config(CONFIG))
    assert [c.name for c in checks] == ["users", "items", "interactions"]


def test_the_gate_off(published):
    current = _manifest(published, "good")
    collapsed = _with(current, users=1)
    off = parse_config({**CONFIG, "promotion": {"enabled": False}})
    assert promotion_gate(published, off, collapsed).gate == "off"
    assert promotion_gate(published, parse_config(CONFIG), collapsed, enabled=False).gate == "off"
    assert promotion_gate(published, parse_config(CONFIG), collapsed).held


def test_promotion_config_is_strict():
    from recsys.errors import ConfigError

    for bad, message in (
        ({"enabled": "yes"}, "promotion.enabled"),
        ({"max_input_drop": 1.5}, "promotion.max_input_drop"),
        ({"max_metric_drop": -0.1}, "promotion.max_metric_drop"),
        ({"max_drop": 0.1}, "unknown key 'promotion.max_drop'"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config({**CONFIG, "promotion": bad})


def test_a_collapsed_input_is_held_and_promoted_by_hand(tables, tmp_path):
    config = parse_config({**CONFIG, "retention": {"keep_runs": 1}})
    root = tmp_path / "out"
    run_local(config, tables / "full.parquet", root, "first")
    run_local(config, tables / "full.parquet", root, "second")
    with pytest.raises(PromotionHeld, match=r"run third is complete but not promoted: users fell") as held:
        run_local(config, tables / "part.parquet", root, "third")
    assert held.value.exit_code == 4 and held.value.current == "second" and "\n" not in str(held.value)
    assert storage.current_run_id(root) == "second" and os.readlink(root / "latest") == "runs/second"
    manifest = _manifest(root, "third")  # kept, complete, with the reason
    assert manifest.promotion.held and manifest.promotion.against == "second"
    assert "users fell" in (root / "runs" / "third" / manifest.report).read_text()
    assert storage.pending_held_run(root) == "third"
    # retention (keep_runs 1) kept CURRENT and the held run
    assert {r["run_id"] for r in storage.list_runs(root)} == {"second", "third"}
    # a collapsed run under the current run's id is not published at all
    with pytest.raises(PromotionHeld, match="not published, since its id names the current run"):
        run_local(config, tables / "part.parquet", root, "second")
    assert _manifest(root, "second").input.users == 300
    # promote verifies the files first: a changed file is refused, nothing moves
    path = root / "runs" / "third" / "models" / "als" / "item_factors.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(RunError, match="checksum does not match"):
        promote(root, "third")
    assert storage.current_run_id(root) == "second"
    path.write_bytes(data)
    before, promoted = promote(root, "third")
    assert before == "second" and promoted.run_id == "third"
    assert storage.current_run_id(root) == "third" and os.readlink(root / "latest") == "runs/third"
    assert (root / "runs" / "third" / storage.PROMOTED).exists() and storage.pending_held_run(root) is None
    with pytest.raises(RunError, match="missing or incomplete"):
        promote(root, "nope")


def test_the_flag_and_the_config_turn_the_gate_off(tables, tmp_path):
    root = tmp_path / "out"
    run_local(parse_config(CONFIG), tables / "full.parquet", root, "first")
    off = parse_config({**CONFIG, "promotion": {"enabled": False}})
    manifest = run_local(off, tables / "part.parquet", root, "second")
    assert manifest.promotion.gate == "off" and storage.current_run_id(root) == "second"
    assert os.readlink(root / "latest") == "runs/second"


def test_an_evaluation_run_is_not_gated_and_never_promoted(tables, tmp_path):
    root = tmp_path / "out"
    run_local(parse_config(CONFIG), tables / "full.parquet", root, "first")
    evaluation = parse_config({**CONFIG, "evaluate": {**CONFIG["evaluate"], "refit": False}})
    manifest = run_local(evaluation, tables / "part.parquet", root, "eval")
    assert manifest.purpose == "evaluation" and manifest.promotion is None
    assert storage.current_run_id(root) == "first"
    with pytest.raises(RunError, match="evaluation run"):
        promote(root, "eval")


def test_a_partial_run_carries_models_over_from_current_not_from_a_held_run(tables, tmp_path):
    two = {**CONFIG, "models": [*CONFIG["models"], {"name": "pop", "type": "popular"}]}
    config = parse_config(two)
    root = tmp_path / "out"
    run_local(config, tables / "full.parquet", root, "first")
    with pytest.raises(PromotionHeld):
        run_local(config, tables / "part.parquet", root, "held")
    manifest = run_local(config, tables / "full.parquet", root, "partial", models=["pop"])
    assert manifest.models["als"].carried_over_from == "first"
    assert storage.current_run_id(root) == "partial"
