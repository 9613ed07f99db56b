"""Hostile values that ended in a traceback or a misleading error: each is one line (a
project error through the API, `recsys: error: ...` and exit 2 through the command)."""

from __future__ import annotations

import logging
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import yaml

import recsys
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.errors import ConfigError
from tests.processes import RECSYS, environment

BASE = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 4, "iterations": 2}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
}


@pytest.fixture(scope="module")
def frame():
    return generate_interactions(n_users=80, n_items=40, n_clusters=2, seed=4)


def _one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("recsys: error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("name", ["../x", "", "a/b", ".hidden", "x" * 65, "a b", "nightly\n"])
def test_deployment_names_are_checked_with_the_config(name):
    with pytest.raises(ConfigError, match="schedule.deployment_name"):
        parse_config({**BASE, "schedule": {"deployment_name": name}})
    assert parse_config({**BASE, "schedule": {"deployment_name": "nightly-2.eu_west"}})


@pytest.mark.parametrize(
    "address",
    ["tcp://[::1", "tcp://[::1]", "tcp://host:99999", "tcp://host:port", "tcp://:8786", "host:8786"],
)
def test_scheduler_addresses_are_checked_with_the_config(address):
    with pytest.raises(ConfigError, match="task_runner.address must look like tcp://host:8786"):
        parse_config({**BASE, "task_runner": {"type": "dask", "address": address}})
    assert parse_config({**BASE, "task_runner": {"type": "dask", "address": "tcp://[::1]:8786"}})


def test_deploy_and_run_refuse_them_in_one_line(tmp_path, frame):
    frame.to_parquet(tmp_path / "t.parquet")
    env = environment(tmp_path)
    for section in (
        {"schedule": {"deployment_name": "../x"}},
        {"task_runner": {"type": "dask", "address": "tcp://[::1"}},
    ):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, **section, "input": {"path": "t.parquet"}}))
        for command in ("deploy", "run"):
            result = subprocess.run(
                [RECSYS, command, "--config", "c.yaml", "--output", "out"],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=120,
            )
            assert "invalid config" in _one_line(result)


def test_item_ids_past_int64_are_unknown_ids(tmp_path, frame, caplog):
    """An integer id outside int64 is no item of any run: ignored and counted as unknown
    (exclude), or one line where nothing else is listed (include), never an OverflowError."""
    items = sorted(int(i) for i in frame["item_id"].unique())
    rules = {"exclude_items": [2**63, -(2**63) - 1, 10**30, str(2**64), items[0]]}
    with caplog.at_level(logging.INFO, logger="recsys"):
        run = recsys.run_pipeline(
            frame, {**BASE, "recommend": {"top_n": 5, **rules}}, output=tmp_path / "a", run_id="r"
        )
    assert items[0] not in set(run.recommendations()["item_id"])
    assert "1 of 5 listed item ids are items of the run; 4 unknown id(s) ignored" in caplog.text
    with pytest.raises(ConfigError, match="none of its 2 item ids is an item of the run"):
        recsys.run_pipeline(
            frame,
            {**BASE, "recommend": {"top_n": 5, "include_items": [2**63, 2**70]}},
            output=tmp_path / "b",
            run_id="r",
        )
    # the same ids in a rules table (CSV of huge integers)
    (tmp_path / "rules.csv").write_text(f"item_id\n{10**25}\n{items[1]}\n")
    run = recsys.run_pipeline(
        frame,
        {**BASE, "recommend": {"top_n": 5, "exclude_items": str(tmp_path / "rules.csv")}},
        output=tmp_path / "c",
        run_id="r",
    )
    assert items[1] not in set(run.recommendations()["item_id"])


@pytest.mark.parametrize("where", ["params", "space"])
@pytest.mark.parametrize("model_type", ["als", "bpr", "lmf", "spectral"])
def test_factors_are_bounded_when_the_config_loads(where, model_type):
    """factors: 100000000 asked implicit for 745 GiB: refused with the config instead."""
    model = {"name": "m", "type": model_type, "params": {"factors": 8}}
    if where == "params":
        model["params"] = {"factors": 100_000_000}
        config = {**BASE, "models": [model]}
    else:
        config = {**BASE, "models": [model], "tune": {"space": {"m": {"factors": [8, 100_000_000]}}}}
    with pytest.raises(ConfigError, match="factors") as error:
        parse_config(config)
    assert "8192" in str(error.value) and "\n" not in str(error.value)


def test_factors_that_would_not_fit_in_memory_are_refused_before_training():
    import psutil
    import scipy.sparse as sp

    from recsys.errors import ModelError
    from recsys.models import get_model_type
    from recsys.models._implicit import MAX_FACTORS

    rows = psutil.virtual_memory().available // (4 * MAX_FACTORS) + 1  # float32 factors alone
    matrix = sp.csr_matrix(([1.0], ([0], [0])), shape=(rows, 10), dtype=np.float32)
    for model_type in ("als", "bpr", "lmf"):
        with pytest.raises(ModelError, match=f"{MAX_FACTORS} factors for {rows} users .* lower factors"):
            get_model_type(model_type).fit({"factors": MAX_FACTORS}, matrix, seed=1, name="big")


def test_tune_with_a_huge_space_is_one_line_before_prefect(tmp_path, frame):
    frame.to_parquet(tmp_path / "t.parquet")
    config = {**BASE, "input": {"path": "t.parquet"}, "tune": {"space": {"als": {"factors": [100_000_000]}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    result = subprocess.run(
        [RECSYS, "tune", "--model", "als", "--config", "c.yaml", "--trials", "1", "--output", "x.yaml"],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    assert "factors" in _one_line(result) and "8192" in result.stderr
    assert time.monotonic() - started < 8 and not (tmp_path / "x.yaml").exists()
    assert result.stdout == ""  # refused with the config: Prefect never imported


@pytest.fixture(scope="module")
def published(tmp_path_factory, frame):
    root = tmp_path_factory.mktemp("lookups") / "out"
    config = {**BASE, "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}]}
    return recsys.run_pipeline(frame, config, output=root, run_id="r1")


@pytest.mark.parametrize(
    "vector",
    [
        np.array(["a"] * 8),
        ["x"] * 8,
        {"a": 1},
        [[1.0] * 8, [1.0]],
        np.ones(8, dtype=complex),
        np.array([object()] * 8),
        np.full(8, 1e300),
    ],
    ids=["str-array", "str-list", "dict", "ragged", "complex", "objects", "past-float32"],
)
def test_similar_refuses_vectors_that_are_not_real_numbers(published, vector):
    from recsys.errors import QueryError

    with pytest.raises(QueryError) as error:
        published.similar(vector=vector)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("given", [[(1, 2)], "user_id,item_id", {"user_id": [1], "item_id": [2]}, None, 42])
def test_fold_in_wants_a_frame(published, given):
    from recsys.errors import QueryError

    with pytest.raises(QueryError, match="must be a pandas DataFrame"):
        published.fold_in(given)


@pytest.mark.parametrize("ids", [[[1, 2]], [{}], [(1, 2)], [[1]]])
def test_ids_that_are_not_integers_or_strings_are_query_errors(published, ids):
    from recsys.errors import QueryError

    with pytest.raises(QueryError, match="ids must be"):
        published.recommend(ids)
    with pytest.raises(QueryError, match="ids must be"):
        published.similar(items=ids)
    with pytest.raises(QueryError, match="n must be a whole number"):
        published.recommend([1], n="5")


@pytest.mark.parametrize("weight", ["1e30", "1e20", "3e38"])
def test_huge_fold_in_weights_are_one_line(published, tmp_path, frame, weight):
    items = frame["item_id"].unique()[:2]
    (tmp_path / "u.csv").write_text(
        f"user_id,item_id,weight\n-5,{items[0]},{weight}\n-5,{items[1]},{weight}\n"
    )
    result = subprocess.run(
        [RECSYS, "recommend", "--user-items", "u.csv", "--output", str(published.dir.parent.parent)],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    assert "rescale the weights" in _one_line(result) and f"{float(weight):.3g}" in result.stderr


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        b'{"format": "\xff\xfe"}',
        b"\xef\xbb",
    ],
    ids=["nested-list", "nested-object", "not-utf8", "truncated-bom"],
)
def test_a_manifest_that_is_no_json_is_one_line(published, tmp_path, content):
    """runs lists the run as unreadable; recommend, similar and promote refuse it in one line."""
    import shutil

    root = tmp_path / "out"
    shutil.copytree(published.dir.parent.parent, root, symlinks=True)
    (root / "runs" / "r1" / "manifest.json").write_bytes(content)
    from recsys.errors import RunError

    with pytest.raises(RunError, match="not a readable manifest"):
        recsys.open_run(root)
    env = environment(tmp_path)
    for args in (["recommend", "--user", "1"], ["similar", "--item", "1"], ["promote", "r1"]):
        result = subprocess.run(
            [RECSYS, *args, "--output", str(root)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert "not a readable manifest" in _one_line(result)
    result = subprocess.run(
        [RECSYS, "runs", "--output", str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("big", ["99999999999999999999", "-99999999999999999999"])
def test_csv_ids_past_int64_are_one_line_naming_the_file(published, tmp_path, frame, big):
    """A CSV id past int64 reads as a Python int in an object column: named as outside
    int64, not as 'mixes types', in the input and in --user-items."""
    item = int(frame["item_id"].iloc[0])
    (tmp_path / "u.csv").write_text(f"user_id,item_id\n-5,{big}\n-5,{item}\n")
    env = environment(tmp_path)
    root = str(published.dir.parent.parent)
    result = subprocess.run(
        [RECSYS, "recommend", "--user-items", "u.csv", "--output", root],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert (
        "u.csv: fold_in interactions: 1 value(s) of column item_id are outside the int64 range"
        in _one_line(result)
    )
    from recsys.data.interactions import clean_table
    from recsys.errors import InputError

    with pytest.raises(InputError, match="t.csv: 1 value"):
        clean_table(pd.read_csv(tmp_path / "u.csv"), "t.csv")
    fits = pd.DataFrame({"user_id": [1, 2], "item_id": pd.Series([2**62, 3], dtype=object)})
    assert clean_table(fits, "ok").item_kind == "int"
