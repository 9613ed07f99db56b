"""Content errors of the input table, the holdout and the item rules, and a tune metric
past the items, are found before any Prefect machinery starts: one line, exit 2, in about
a second or two (they took 6-11 s, found inside the flow). The validated table is handed
to the prepare stage, not read twice."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys.data import generate_interactions
from recsys.stages import prepare
from tests.processes import RECSYS, environment

LIMIT = (
    8.0  # seconds: about 1.5 s measured on a quiet machine (6-11 s inside the flow); room for a loaded one
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    base = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=8)
    base.to_parquet(root / "t.parquet")
    row = np.arange(len(base)) == 3
    tables = {
        "nan": base.assign(weight=np.where(row, np.nan, 1.0)),
        "inf": base.assign(weight=np.where(row, np.inf, 1.0)),
        "negative": base.assign(weight=np.where(row, -1.0, 1.0)),
        "float-ids": base.assign(user_id=base["user_id"].astype(float)),
        "bool-ids": base.assign(item_id=base["item_id"] % 2 == 0),
        "nested-ids": base.assign(item_id=[[i] for i in base["item_id"]]),
        "missing-ids": base.assign(user_id=base["user_id"].astype(object).where(~row, None)),
        "empty": base.iloc[:0],
    }
    for name, frame in tables.items():
        frame.to_parquet(root / f"{name}.parquet")
    base.assign(weight=np.where(row, np.nan, 1.0)).to_csv(root / "nan.csv", index=False)
    base.assign(user_id="u" + base["user_id"].astype(str)).to_parquet(root / "string-users.parquet")
    (root / "norules.csv").write_text("id\n1\n")
    config = {
        "input": {"path": "t.parquet"},
        "output": {"root": "out"},
        "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
        "index": {"n_trees": 5, "backend": "annoy"},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    variants = {
        "rules-no-column": {"recommend": {"top_n": 5, "include_items": "norules.csv"}},
        "rules-missing": {"recommend": {"top_n": 5, "exclude_items": "nothere.parquet"}},
        "rules-match-nothing": {"recommend": {"top_n": 5, "include_items": [10**9, 10**9 + 1]}},
        "rules-leave-nothing": {
            "recommend": {"top_n": 5, "exclude_items": sorted(int(i) for i in base["item_id"].unique())}
        },
        "top-n": {"recommend": {"top_n": 500}},
        "holdout-bad": {"evaluate": {"holdout": "nan.parquet"}},
    }
    for name, change in variants.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump({**config, **change}))
    return root


def _recsys(workspace, *args):
    started = time.monotonic()
    result = subprocess.run(
        [RECSYS, *args],
        capture_output=True,
        text=True,
        env=environment(workspace),
        cwd=workspace,
        timeout=300,
    )
    return result, time.monotonic() - started


def _fails_early(result, took, message):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("recsys: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert took < LIMIT, f"{took:.1f} s: {result.stderr}"
    assert result.stdout == ""  # Prefect never imported: not one line of its log, no flow started


TABLE_ERRORS = {
    "nan": "1 row(s) have a missing or NaN weight",
    "inf": "1 row(s) have an infinite weight",
    "negative": "1 row(s) have a negative weight",
    "float-ids": "column user_id must hold integers or strings, found float64",
    "bool-ids": "column item_id must hold integers or strings, found booleans",
    "nested-ids": "column item_id mixes types",
    "missing-ids": "1 row(s) have a missing user_id",
    "empty": "the table is empty (0 rows)",
}


@pytest.mark.parametrize("table", list(TABLE_ERRORS))
def test_table_content_errors_before_prefect(workspace, table):
    result, took = _recsys(workspace, "run", "--config", "c.yaml", "--interactions", f"{table}.parquet")
    _fails_early(result, took, f"{table}.parquet: {TABLE_ERRORS[table]}")


def test_csv_and_holdout_errors_before_prefect(workspace):
    result, took = _recsys(workspace, "run", "--config", "c.yaml", "--interactions", "nan.csv")
    _fails_early(result, took, "nan.csv: 1 row(s) have a missing or NaN weight")
    result, took = _recsys(workspace, "run", "--config", "c.yaml", "--holdout", "negative.parquet")
    _fails_early(result, took, "negative.parquet: 1 row(s) have a negative weight")
    result, took = _recsys(workspace, "run", "--config", "holdout-bad.yaml")
    _fails_early(result, took, "nan.parquet: 1 row(s) have a missing or NaN weight")
    result, took = _recsys(workspace, "run", "--config", "c.yaml", "--holdout", "string-users.parquet")
    _fails_early(result, took, "string-users.parquet: holdout ids are str/int but training ids are int/int")


CONFIG_ERRORS = {
    "rules-no-column": "recommend.include_items:",
    "rules-missing": "recommend.exclude_items:",
    "rules-match-nothing": "recommend.include_items: none of its 2 item ids is an item of the run",
    "rules-leave-nothing": "leave no item to recommend",
    "top-n": "recommend.top_n is 500 but",
}


@pytest.mark.parametrize("variant", list(CONFIG_ERRORS))
def test_item_rule_and_top_n_errors_before_prefect(workspace, variant):
    result, took = _recsys(workspace, "run", "--config", f"{variant}.yaml")
    _fails_early(result, took, CONFIG_ERRORS[variant])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "ndcg@100000"], "tune: lists of 100000 items need more than the 60 items"),
        (["--metric", "recall@60"], "tune: lists of 60 items need more than the 60 items"),
        (["--interactions", "nan.parquet"], "nan.parquet: 1 row(s) have a missing or NaN weight"),
        (["--interactions", "empty.parquet"], "the table is empty"),
    ],
)
def test_tune_errors_before_prefect(workspace, tmp_path, args, message):
    output = tmp_path / "tuned.yaml"
    result, took = _recsys(
        workspace,
        "tune",
        "--model",
        "als",
        "--config",
        "c.yaml",
        "--trials",
        "1",
        "--output",
        str(output),
        *args,
    )
    _fails_early(result, took, message)
    assert not output.exists()


def test_the_validated_table_is_handed_over_once(tmp_path):
    path = tmp_path / "t.parquet"
    generate_interactions(n_users=50, n_items=20, n_clusters=2, seed=1).to_parquet(path)
    kept = prepare.validate_table(path)
    table, fingerprint = prepare.read_table(path)
    assert table is kept and fingerprint["size_bytes"] == path.stat().st_size
    again, _ = prepare.read_table(path)  # taken once: read again
    assert again is not kept and np.array_equal(again.items, kept.items)
    # a file replaced after the preflight is read anew
    prepare.validate_table(path)
    pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4]}).to_parquet(path)
    table, fingerprint = prepare.read_table(path)
    assert len(table) == 2 and fingerprint["size_bytes"] == path.stat().st_size


def test_a_preflight_for_the_workers_keeps_no_copy(tmp_path):
    """On Dask a worker prepares the data: the flow's process validates the table and
    holds nothing of it for the run."""
    from recsys.config import parse_config

    path = tmp_path / "t.parquet"
    generate_interactions(n_users=50, n_items=20, n_clusters=2, seed=1).to_parquet(path)
    config = parse_config({"models": [{"name": "als", "type": "als"}], "similar_items": {"top_n": 5}})
    prepare.preflight(config, path, None, keep=False)
    assert path.resolve() not in prepare._validated
    prepare.preflight(config, path, None)
    assert path.resolve() in prepare._validated
    prepare.read_table(path)  # handed over: nothing left
    assert path.resolve() not in prepare._validated


def test_rule_tables_of_a_vectors_only_run_are_read_before_prefect(workspace, tmp_path):
    vectors = pd.DataFrame({"id": range(30), "vector": list(np.random.default_rng(0).normal(size=(30, 4)))})
    vectors.to_parquet(tmp_path / "items.parquet", index=False)
    (tmp_path / "rules.csv").write_text("sku\n1\n")
    config = {
        "models": [
            {"name": "img", "type": "precomputed", "params": {"items": str(tmp_path / "items.parquet")}}
        ],
        "similar_items": {"top_n": 3},
        "recommend": {"top_n": 3, "exclude_items": str(tmp_path / "rules.csv")},
        "index": {"backend": "exact"},
        "output": {"root": str(tmp_path / "out")},
    }
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(config))
    result, took = _recsys(workspace, "run", "--config", str(tmp_path / "v.yaml"))
    _fails_early(result, took, "rules.csv has no item_id column (found: sku)")
