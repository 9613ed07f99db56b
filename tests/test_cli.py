"""The command line: run, runs, recommend, similar, generate, and one-line errors for bad
input that leave the published run untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys.cli import main
from recsys.data import generate_interactions

CONFIG = {
    "seed": 5,
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 4}}],
    "index": {"n_trees": 5},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "evaluate": {"sample_users": 100, "sample_items": 100},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    frame = generate_interactions(n_users=150, n_items=80, n_clusters=4, seed=2)
    frame.to_parquet(root / "events.parquet", index=False)
    return root, frame


@pytest.fixture(scope="module")
def published(prefect_harness, workspace):
    root, _ = workspace
    code = main(
        [
            "run",
            "--config",
            str(root / "config.yaml"),
            "--interactions",
            str(root / "events.parquet"),
            "--output",
            str(root / "out"),
            "--run-id",
            "first",
        ]
    )
    assert code == 0
    return root / "out"


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_run_prints_summary_and_runs_lists_it(published, capsys):
    assert (published / "CURRENT").read_text().strip() == "first"
    assert main(["runs", "--output", str(published)]) == 0
    listing = capsys.readouterr().out
    assert "first *" in listing and "complete" in listing and "als 1.000" in listing
    assert "no held-out interactions" in listing  # ranking metrics need a split or a holdout


def test_recommend_excludes_seen_items(published, workspace, capsys):
    _, frame = workspace
    user = int(frame["user_id"].iloc[0])
    seen = set(frame.loc[frame["user_id"] == user, "item_id"])
    assert main(["recommend", "--user", str(user), "--output", str(published), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["user"] == user  # an integer id stays a number
    items = [row["item_id"] for row in answer["results"]]
    assert len(items) == 5 and not set(items) & seen
    assert [row["rank"] for row in answer["results"]] == [1, 2, 3, 4, 5]
    published_recs = pd.read_parquet(published / "runs/first/models/als/recommendations.parquet")
    assert items == published_recs[published_recs["user_id"] == user]["item_id"].tolist()


def test_similar_never_lists_the_item(published, workspace, capsys):
    item = int(workspace[1]["item_id"].iloc[0])
    assert main(["similar", "--item", str(item), "-n", "7", "--output", str(published)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 7  # title, header, 7 rows
    assert all(line.split()[1] != str(item) for line in lines[2:])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["recommend", "--user", "999999"], "1 unknown id"),
        (["recommend", "--user", "abc"], "not an integer"),
        (["recommend", "--user", "1", "-n", "0"], "-n must be between 1"),
        (["recommend", "--user", "1", "--model", "svd"], "model 'svd' is not in run"),
        (["similar", "--item", "1", "--run-id", "nope"], "missing or incomplete"),
    ],
)
def test_lookup_errors_are_one_line(published, capsys, argv, message):
    assert main([*argv, "--output", str(published)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recsys: error:") and message in err


def _bad_tables(directory: Path) -> dict[str, tuple[Path, str]]:
    good = {"user_id": [1, 2, 3], "item_id": [1, 2, 3], "weight": [1.0, 1.0, 1.0]}
    cases = {
        "no_item": (pd.DataFrame({"user_id": [1, 2]}), "missing column item_id"),
        "null_users": (pd.DataFrame({**good, "user_id": [1, None, None]}), "2 row(s) have a missing user_id"),
        "negative": (pd.DataFrame({**good, "weight": [1.0, -1.0, 1.0]}), "1 row(s) have a negative weight"),
        "nan": (
            pd.DataFrame({**good, "weight": [np.nan, 1.0, 1.0]}),
            "1 row(s) have a missing or NaN weight",
        ),
        "empty": (pd.DataFrame({"user_id": [], "item_id": []}), "the table is empty"),
    }
    paths = {}
    for name, (frame, message) in cases.items():
        path = directory / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        paths[name] = (path, message)
    (directory / "corrupt.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    paths["corrupt"] = (directory / "corrupt.parquet", "not a readable parquet file")
    (directory / "table.txt").write_text("user_id,item_id\n1,2\n")
    paths["txt"] = (directory / "table.txt", "unsupported file type '.txt'")
    paths["missing"] = (directory / "nothing.parquet", "interactions file not found")
    return paths


@pytest.mark.parametrize(
    "case", ["no_item", "null_users", "negative", "nan", "empty", "corrupt", "txt", "missing"]
)
def test_bad_input_one_line_and_nothing_published(published, workspace, tmp_path, capsys, case):
    root, _ = workspace
    path, message = _bad_tables(tmp_path)[case]
    before = _snapshot(published)
    capsys.readouterr()
    code = main(
        [
            "run",
            "--config",
            str(root / "config.yaml"),
            "--interactions",
            str(path),
            "--output",
            str(published),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("recsys: error:"), err
    assert str(path) in err and message in err
    assert _snapshot(published) == before


@pytest.mark.parametrize(
    "extra, config_patch, message",
    [
        ([], {"index": {"n_tres": 5}}, "unknown key 'index.n_tres'"),
        (["--models", "svd"], {}, "unknown model(s) svd"),
        (["--run-id", "../x"], {}, "invalid run id '../x'"),
    ],
)
def test_bad_config_and_arguments(published, workspace, tmp_path, capsys, extra, config_patch, message):
    root, _ = workspace
    config = {**CONFIG, **config_patch}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    before = _snapshot(published)
    code = main(
        [
            "run",
            "--config",
            str(tmp_path / "c.yaml"),
            "--interactions",
            str(root / "events.parquet"),
            "--output",
            str(published),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert _snapshot(published) == before


def test_debug_shows_the_traceback(published, workspace, tmp_path):
    from recsys.errors import InputError

    root, _ = workspace
    path, _ = _bad_tables(tmp_path)["no_item"]
    with pytest.raises(InputError):
        main(["--debug", "run", "--config", str(root / "config.yaml"), "--interactions", str(path)])


def test_generate_is_deterministic(tmp_path, capsys):
    for name in ("a.parquet", "b.parquet"):
        assert main(["generate", "--output", str(tmp_path / name), "--users", "50", "--items", "30"]) == 0
    assert "wrote" in capsys.readouterr().out
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    )


def test_real_process_exit_status_and_single_stderr_line(published, workspace, tmp_path):
    """The installed console script, as a user runs it: exit 2, one line, no traceback."""
    root, _ = workspace
    path, message = _bad_tables(tmp_path)["no_item"]
    script = Path(sys.executable).with_name("recsys")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [
            str(script),
            "run",
            "--config",
            str(root / "config.yaml"),
            "--interactions",
            str(path),
            "--output",
            str(published),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"recsys: error: {path}: {message} (found columns: user_id)"]
    assert "Traceback" not in result.stdout + result.stderr
    assert (published / "CURRENT").read_text().strip() == "first"


def test_recommend_for_new_users_folds_them_in(published, workspace, tmp_path, capsys):
    _, frame = workspace
    items = frame["item_id"].drop_duplicates().head(4).tolist()
    table = pd.DataFrame({"user_id": [10**9] * 3 + [10**9 + 1], "item_id": items[:3] + [items[3]]})
    table.loc[len(table)] = [10**9 + 1, 10**8]  # an item the run does not know
    table.to_csv(tmp_path / "new.csv", index=False)
    assert (
        main(["recommend", "--user-items", str(tmp_path / "new.csv"), "--output", str(published), "--json"])
        == 0
    )
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["user"] for a in answers] == [10**9, 10**9 + 1]
    first = [r["item_id"] for r in answers[0]["results"]]
    assert len(first) == 5 and not set(first) & set(items[:3])
    assert items[3] not in [r["item_id"] for r in answers[1]["results"]]
    (tmp_path / "unknown.csv").write_text("user_id,item_id\n1,999999\n")
    assert main(["recommend", "--user-items", str(tmp_path / "unknown.csv"), "--output", str(published)]) == 2
    assert "none of its 1 items is in the run" in capsys.readouterr().err


def test_unknown_user_gets_the_most_popular_items_with_fallback_popular(published, workspace, capsys):
    """A user with no interactions in the run has no vector: by default an error (above);
    with --fallback popular, the items most users interacted with, counts as scores."""
    _, frame = workspace
    assert (
        main(
            ["recommend", "--user", "999999", "--fallback", "popular", "-n", "4", "--json"]
            + ["--output", str(published)]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer["fallback"] == "popular" and answer["user"] == 999999  # typed as the run's ids
    users_per_item = frame.groupby("item_id")["user_id"].nunique().sort_values(ascending=False, kind="stable")
    scores = [result["score"] for result in answer["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == users_per_item.iloc[0]
    expected = users_per_item[users_per_item >= scores[-1]].index
    assert {result["item_id"] for result in answer["results"]} <= set(expected)
    assert [users_per_item[result["item_id"]] for result in answer["results"]] == scores
    # a known user is still answered from the model, not from the fallback
    known = int(frame["user_id"].iloc[0])
    assert main(["recommend", "--user", str(known), "--fallback", "popular", "--output", str(published)]) == 0
    assert "recommendations for user" in capsys.readouterr().out
