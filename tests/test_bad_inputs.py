"""Every CLI entry point fed hostile files and arguments: one line on stderr, exit 2,
nothing published, the previous run untouched. In-process (the checks happen before any
Prefect machinery starts), plus the environment cases (a read-only or full filesystem,
a broken pipe) in real processes."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import recsys
from recsys.cli import main
from recsys.data import generate_interactions
from tests.processes import RECSYS, environment, snapshot
from tests.processes import recsys as run_recsys

CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A published run (Prefect-free) and its input, and a run of item vectors only."""
    root = tmp_path_factory.mktemp("bad")
    frame = generate_interactions(n_users=80, n_items=40, n_clusters=3, seed=9)
    frame.to_parquet(root / "t.parquet", index=False)
    (root / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    recsys.run_pipeline(frame, CONFIG, output=root / "out", run_id="good")
    vectors = pd.DataFrame({"id": range(30), "vector": list(np.random.default_rng(0).normal(size=(30, 4)))})
    vectors.to_parquet(root / "items.parquet", index=False)
    items_only = {
        "models": [{"name": "img", "type": "precomputed", "params": {"items": str(root / "items.parquet")}}],
        "similar_items": {"top_n": 3},
        "index": {"backend": "exact"},
    }
    from recsys.config import parse_config
    from recsys.stages.runner import run_local

    run_local(parse_config(items_only), None, root / "vec", run_id="v")
    return root


def _one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("recsys: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _run_cases(root: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    csv = root / "t.csv"
    pd.read_parquet(root / "t.parquet").to_csv(csv, index=False)
    raw = gzip.compress(csv.read_bytes())
    truncated = _write(root / "cut.csv.gz", raw[: len(raw) // 3])
    movielens = root / "ratings.csv"
    pd.DataFrame({"userId": [1], "movieId": [2], "rating": [4.0], "timestamp": [0]}).to_csv(
        movielens, index=False
    )
    _write(root / "afile", "x")
    latin = _write(root / "latin.yaml", "models: [{name: caf\xe9, type: als}]".encode("latin-1"))
    dupes = _write(root / "dupes.yaml", "seed: 1\nseed: 2\nmodels: [{name: a, type: als}]\n")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    bomb_file = _write(root / "bomb.yaml", bomb + "models: [{name: a, type: als}]\n")
    cron = _write(root / "cron.yaml", yaml.safe_dump({**CONFIG, "schedule": {"cron": "61 * * * *"}}))
    zone = _write(root / "zone.yaml", yaml.safe_dump({**CONFIG, "schedule": {"timezone": "Mars/Olympus"}}))
    dask = _write(
        root / "dask.yaml",
        yaml.safe_dump({**CONFIG, "task_runner": {"type": "dask", "address": "tcp://127.0.0.1:1"}}),
    )
    iterations = _write(
        root / "it.yaml",
        yaml.safe_dump({**CONFIG, "models": [{"name": "a", "type": "als", "params": {"iterations": 0}}]}),
    )
    config, table = str(root / "c.yaml"), str(root / "t.parquet")
    return {
        "truncated gzip": (
            ["--config", config, "--interactions", str(truncated)],
            ("not a readable gzip file",),
        ),
        "movielens columns": (
            ["--config", config, "--interactions", str(movielens)],
            ("found columns: userId, movieId, rating, timestamp", "recsys import movielens"),
        ),
        "output is a file": (
            ["--config", config, "--interactions", table, "--output", str(root / "afile")],
            ("is a file",),
        ),
        "non-UTF-8 config": (["--config", str(latin), "--interactions", table], ("not a UTF-8 text file",)),
        "duplicate keys": (["--config", str(dupes), "--interactions", table], ("duplicate key 'seed'",)),
        "alias bomb": (["--config", str(bomb_file), "--interactions", table], ("expands to more than",)),
        "bad cron": (
            ["--config", str(cron), "--interactions", table],
            ("schedule.cron", "not a valid expression"),
        ),
        "bad time zone": (
            ["--config", str(zone), "--interactions", table],
            ("unknown time zone 'Mars/Olympus'",),
        ),
        "no scheduler": (
            ["--config", str(dask), "--interactions", table],
            ("cannot reach the Dask scheduler",),
        ),
        "iterations 0": (
            ["--config", str(iterations), "--interactions", table],
            ("models.0.params.iterations",),
        ),
        "config is a folder": (["--config", str(root), "--interactions", table], ("cannot read config",)),
        "holdout missing columns": (
            ["--config", config, "--interactions", table, "--holdout", str(movielens)],
            ("ratings.csv: missing column",),
        ),
        "unknown model": (
            ["--config", config, "--interactions", table, "--models", "svd"],
            ("unknown model(s) svd",),
        ),
        "hostile run id": (
            ["--config", config, "--interactions", table, "--run-id", "../x"],
            ("invalid run id",),
        ),
    }


RUN_CASES = [
    "truncated gzip",
    "movielens columns",
    "output is a file",
    "non-UTF-8 config",
    "duplicate keys",
    "alias bomb",
    "bad cron",
    "bad time zone",
    "no scheduler",
    "iterations 0",
    "config is a folder",
    "holdout missing columns",
    "unknown model",
    "hostile run id",
]


@pytest.mark.parametrize("case", RUN_CASES)
def test_run_refuses_in_one_line_before_any_work(site, capsys, case):
    argv, needles = _run_cases(site)[case]
    if "--output" not in argv:
        argv = [*argv, "--output", str(site / "out")]
    before = snapshot(site / "out")
    _one_line(capsys, main(["run", *argv]), *needles)
    assert snapshot(site / "out") == before


def _manifest_cases(root: Path) -> dict[str, str]:
    return {
        "empty": "",
        "not json": "{not json",
        "a list": "[1, 2]",
        "missing field": json.dumps({"format": "recsys-run/3"}),
    }


@pytest.mark.parametrize("case", ["empty", "not json", "a list", "missing field"])
@pytest.mark.parametrize("command", [["recommend", "--user", "1"], ["similar", "--item", "1"]])
def test_lookups_refuse_a_bad_manifest(site, tmp_path, capsys, case, command):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(site / "out", out)
    (out / "runs" / "good" / "manifest.json").write_text(_manifest_cases(site)[case])
    _one_line(capsys, main([*command, "--output", str(out)]), "manifest.json")
    assert main(["runs", "--output", str(out)]) == 0
    assert "unreadable" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: np.save(p, np.ones((2, 8), dtype=np.float32)), "expected one numeric vector"),
        (lambda p: np.save(p, np.ones(3, dtype=np.float32)), "the vector has dimension 3"),
        (lambda p: np.save(p, np.array([np.nan] * 8, dtype=np.float32)), "finite with non-zero norm"),
        (lambda p: p.write_text("not an array"), "not a readable .npy array"),
        (lambda p: np.save(p, np.array(["a", "b"])), "expected one numeric vector"),
    ],
)
def test_similar_by_vector_refuses_bad_vector_files(site, tmp_path, capsys, make, needle):
    path = tmp_path / "q.npy"
    make(path)
    _one_line(capsys, main(["similar", "--vector", str(path), "--output", str(site / "out")]), needle)


def test_recommend_from_a_model_without_user_vectors(site, capsys):
    _one_line(
        capsys, main(["recommend", "--user", "1", "--output", str(site / "vec")]), "has no user vectors"
    )


@pytest.mark.parametrize("text", ["01", " 1", "+1", "1_0", "1.0"])
def test_an_id_is_never_read_as_another(site, capsys, text):
    _one_line(capsys, main(["recommend", "--user", text, "--output", str(site / "out")]), repr(text))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "--users", "0"], "generate:"),
        (["generate", "--items", "-5"], "generate:"),
        (["import", "movielens", "nothing.csv", "--output", "x.parquet"], "nothing.csv"),
        (["import", "table", "t.parquet", "--output", "x.parquet", "--map", "user"], "column mapping"),
        (["runs", "--compare", "good", "nope"], "nope"),
        (["similar", "--item", "999999"], "unknown id"),
        (["recommend", "--user", "1", "-n", "0"], "-n must be between 1"),
        (["deploy"], "no interactions table"),
        (
            ["deploy", "--config", "c.yaml", "--interactions", "missing.parquet"],
            "interactions file not found",
        ),
        (
            ["tune", "--model", "nope", "--config", "c.yaml", "--interactions", "t.parquet"],
            "unknown model(s) nope",
        ),
        (["import", "movielens", "c.yaml", "--output", "x.parquet"], "missing column userId"),
    ],
)
def test_other_commands_refuse_in_one_line(site, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(site)
    if argv[0] in ("runs", "similar", "recommend"):
        argv = [*argv, "--output", str(site / "out")]
    else:
        if argv[0] == "generate":
            argv = [*argv, "--output", str(site / "g.parquet")]
    _one_line(capsys, main(argv), needle)


def test_import_never_turns_a_bad_rating_into_an_interaction(site, capsys):
    ratings = site / "signed.csv"
    pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 3], "weight": [5.0, -1.0, 0.0, 3.0]}).to_csv(
        ratings, index=False
    )
    for weighting in ("binary", "log", "none"):
        out = site / f"signed-{weighting}.parquet"
        mapping = "user=user_id,item=item_id,weight=weight"
        argv = [
            "import",
            "table",
            str(ratings),
            "--output",
            str(out),
            "--map",
            mapping,
            "--weighting",
            weighting,
        ]
        assert main(argv) == 0
        assert "dropped 2 row(s) with a zero or negative rating" in capsys.readouterr().out
        kept = pd.read_parquet(out)
        assert sorted(zip(kept["user_id"], kept["item_id"], strict=True)) == [(1, 1), (2, 3)]
        assert (kept["weight"] > 0).all()


@contextlib.contextmanager
def _mounted(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_read_only_and_full_filesystems_are_one_line(site, tmp_path):
    env = environment(tmp_path)
    with _mounted(tmp_path / "ro", "ro,size=1m") as read_only:
        result = run_recsys(
            "run",
            "--config",
            str(site / "c.yaml"),
            "--interactions",
            str(site / "t.parquet"),
            "--output",
            str(read_only / "out"),
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "cannot write to the output root" in result.stderr
    with _mounted(tmp_path / "full", "size=64k") as small:  # a run of this input takes ~150 KiB
        result = run_recsys(
            "run",
            "--config",
            str(site / "c.yaml"),
            "--interactions",
            str(site / "t.parquet"),
            "--output",
            str(small / "out"),
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr, result.stderr
        assert not (small / "out" / "CURRENT").exists()
        assert (
            not [p for p in (small / "out" / "runs").iterdir()] if (small / "out" / "runs").exists() else True
        )


def test_a_closed_pipe_is_quiet(site):
    """Python buffers stdout into a pipe (no PYTHONUNBUFFERED, as in a user's shell): the
    write that finds the reader gone may come as late as the exit."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    process = subprocess.Popen(
        [RECSYS, "runs", "--output", str(site / "out"), "--compare", "good", "good"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # the reader is gone before the first line
    _, err = process.communicate(timeout=60)
    assert process.returncode in (0, 141) and b"Traceback" not in err, err


def test_a_bad_table_is_refused_before_prefect_is_even_imported(site, tmp_path):
    """The time to a one-line error does not include Prefect's start: the checks run
    before the flows package (and so Prefect) is imported."""
    bad = tmp_path / "ratings.csv"
    pd.DataFrame({"userId": [1], "movieId": [2]}).to_csv(bad, index=False)
    script = (
        "import sys\n"
        "from recsys.cli import main\n"
        f"code = main(['run', '--config', {str(site / 'c.yaml')!r}, '--interactions', {str(bad)!r}])\n"
        "print(code, 'prefect' in sys.modules, 'flows.pipeline' in sys.modules)\n"
    )
    env = environment(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.split() == ["2", "False", "False"], result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "missing column user_id" in result.stderr
