"""Carry-over (`recsys run --models a`) verifies every file it takes from the current run
against that run's manifest: a corrupt file is refused, and nothing is published."""

from __future__ import annotations

import json

import pytest

from recsys import storage
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.manifest import read_manifest
from recsys.stages.runner import run_local

CONFIG = {
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "bpr", "type": "bpr", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
    ],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
}


@pytest.fixture
def first_run(tmp_path):
    path = storage.write_interactions_table(
        generate_interactions(n_users=80, n_items=50, n_clusters=3, seed=5), tmp_path / "in.parquet"
    )
    config = parse_config(CONFIG)
    run_local(config, path, tmp_path / "out", run_id="r1")
    return config, path, tmp_path / "out"


def test_carried_files_are_the_verified_files(first_run):
    config, path, root = first_run
    manifest = run_local(config, path, root, run_id="r2", models=["als"])
    assert manifest.models["bpr"].carried_over_from == "r1"
    old, new = root / "runs/r1/models/bpr", root / "runs/r2/models/bpr"
    for name in ("item_factors.npy", "recommendations.parquet/part-00000.parquet"):
        assert (old / name).read_bytes() == (new / name).read_bytes()
        assert manifest.files[f"models/bpr/{name}"].sha256 == storage.file_sha256(old / name)


def test_a_corrupt_file_in_the_current_run_is_not_carried(first_run, caplog):
    """A model whose files in the current run do not verify is not carried: it is
    retrained, and the log says why (the run failed on it before)."""
    config, path, root = first_run
    target = root / "runs/r1/models/bpr/item_factors.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    corrupt = storage.file_sha256(target)
    with caplog.at_level("WARNING", logger="recsys"):
        manifest = run_local(config, path, root, run_id="r2", models=["als"])
    assert "bpr: not carried over from run r1: its files do not verify" in caplog.text
    assert "item_factors.npy: checksum does not match" in caplog.text
    assert manifest.models["bpr"].carried_over_from is None  # retrained
    assert storage.current_run_id(root) == "r2"
    published = root / "runs/r2/models/bpr/item_factors.npy"
    assert storage.file_sha256(published) != corrupt
    assert manifest.files["models/bpr/item_factors.npy"].sha256 == storage.file_sha256(published)
    assert read_manifest(storage.find_run(root, "r2")).models["bpr"].carried_over_from is None
    assert storage.file_sha256(target) == corrupt  # the current run's file is left as it was


@pytest.mark.parametrize("damage", ["truncated", "missing", "folder"])
def test_any_unverifiable_file_means_the_model_is_retrained(first_run, damage, caplog):
    config, path, root = first_run
    target = root / "runs/r1/models/bpr/recommendations.parquet/part-00000.parquet"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "missing":
        target.unlink()
    else:
        target.unlink()
        target.mkdir()
    with caplog.at_level("WARNING", logger="recsys"):
        manifest = run_local(config, path, root, run_id="r2", models=["als"])
    assert "bpr: not carried over from run r1: its files do not verify" in caplog.text
    assert manifest.models["bpr"].carried_over_from is None and storage.current_run_id(root) == "r2"


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["models"][1]["params"].update(factors=12),  # the carried model's params
        lambda c: c.update(seed=7),
        lambda c: c.update(evaluate={"split": {"method": "random", "fraction": 0.2}}),
        lambda c: c.update(recommend={"top_n": 4}),
    ],
)
def test_a_model_whose_inputs_changed_is_retrained_not_carried(first_run, change, caplog):
    _, path, root = first_run
    changed = json.loads(json.dumps(CONFIG))
    change(changed)
    manifest = run_local(parse_config(changed), path, root, run_id="r2", models=["als"])
    bpr = manifest.models["bpr"]
    assert bpr.carried_over_from is None and "not carried over from run r1" in caplog.text
    old = root / "runs/r1/models/bpr/item_factors.npy"
    new = root / "runs/r2" / bpr.factors.item
    assert old.stat().st_ino != new.stat().st_ino  # trained in this run, not linked from r1
    previous = read_manifest(storage.find_run(root, "r1")).models["bpr"]
    assert bpr.fingerprint != previous.fingerprint


def test_with_a_different_input_nothing_is_carried(first_run, tmp_path):
    config, _, root = first_run
    other = storage.write_interactions_table(
        generate_interactions(n_users=90, n_items=50, n_clusters=3, seed=6), tmp_path / "other.parquet"
    )
    manifest = run_local(config, other, root, run_id="r2", models=["als"])
    assert manifest.models["bpr"].carried_over_from is None
    assert len(manifest.models["bpr"].fingerprint) == 64  # recorded, for the next partial run


def test_without_a_current_run_a_partial_run_trains_everything(tmp_path):
    path = storage.write_interactions_table(
        generate_interactions(n_users=60, n_items=40, n_clusters=3, seed=5), tmp_path / "in.parquet"
    )
    manifest = run_local(parse_config(CONFIG), path, tmp_path / "out", run_id="first", models=["als"])
    assert set(manifest.models) == {"als", "bpr"}
    assert all(entry.carried_over_from is None for entry in manifest.models.values())


@pytest.mark.slow  # two runs through Prefect
def test_recsys_run_retrains_a_model_whose_carried_file_is_corrupt(tmp_path):
    """The real command: `recsys run --models als` with a bit flipped in the current run's
    bpr factors publishes, bpr retrained, with the reason in its output."""
    import subprocess

    import yaml

    from tests.processes import RECSYS, environment

    storage.write_interactions_table(
        generate_interactions(n_users=80, n_items=50, n_clusters=3, seed=5), tmp_path / "in.parquet"
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "input": {"path": "in.parquet"}}))
    env = environment(tmp_path)

    def run(*args):
        return subprocess.run(
            [RECSYS, "run", "--config", "c.yaml", "--output", "out", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    assert run("--run-id", "r1").returncode == 0
    target = tmp_path / "out/runs/r1/models/bpr/item_factors.npy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    result = run("--run-id", "r2", "--models", "als", "--json")
    assert result.returncode == 0, result.stderr
    assert "bpr: not carried over from run r1: its files do not verify" in result.stdout + result.stderr
    manifest = json.loads(result.stdout)["manifest"]
    assert "carried_over_from" not in manifest["models"]["bpr"]
    assert storage.current_run_id(tmp_path / "out") == "r2"


def test_the_fingerprint_covers_every_section_a_model_depends_on():
    """Listed by what it leaves out: a section a model's files depend on, also one added
    later, changes the fingerprint; where runs go, when and how fast they run does not."""
    from recsys.manifest import InputInfo
    from recsys.stages.publish import NOT_MODEL_INPUTS, model_fingerprint
    from recsys.stages.results import Prepared

    stats = dict(
        rows=1, zero_weight_rows_dropped=0, duplicate_rows_merged=0, interactions=1, users=1, items=1
    )
    info = InputInfo(path="t", size_bytes=1, sha256="0" * 64, **stats, user_id_type="int", item_id_type="int")
    prepared = Prepared(
        input=info, data={"users": "u", "items": "i", "user_items": "m", "stats": "s"}, seconds=0
    )

    def fingerprint(**changes):
        config = parse_config({**CONFIG, **changes})
        return model_fingerprint(config, config.models[0], prepared)

    base = fingerprint()
    for changed in ({"seed": 7}, {"evaluate": {"sample_users": 3}}, {"index": {"backend": "annoy"}}):
        assert fingerprint(**changed) != base, changed
    for unchanged in (
        {"output": {"root": "elsewhere"}},
        {"schedule": {"cron": "0 4 * * *"}},
        {"run": {"parallel_models": 2}},
    ):
        assert fingerprint(**unchanged) == base, unchanged
    assert {"index", "recommend", "similar_items", "evaluate", "seed"}.isdisjoint(NOT_MODEL_INPUTS)
