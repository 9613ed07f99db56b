"""``recsys tune`` on the command line: a config that loads, every trial as JSON, the HTML
report, ``--json``; bad arguments refused in one line before Prefect starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.cli import main
from recsys.config import load_config
from recsys.data import generate_interactions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def inputs(tmp_path):
    generate_interactions(n_users=200, n_items=80, n_clusters=4, seed=1).to_parquet(tmp_path / "t.parquet")
    config = {
        "models": [
            {"name": "als", "type": "als", "params": {"iterations": 4, "factors": 8}},
            {"name": "v", "type": "precomputed", "params": {"items": "v.parquet"}},
        ],
        "recommend": {"top_n": 10},
        "evaluate": {"k": [5, 10], "split": {"method": "random"}},
        "tune": {"trials": 50, "space": {"als": {"iterations": {"low": 2, "high": 4}}}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def _json_of(stdout: str) -> dict:
    """The one JSON object ``--json`` prints (in-process, Prefect's console may share stdout)."""
    return json.loads(stdout[stdout.index('{\n  "best_params"') :])


def test_recsys_tune_writes_config_trials_and_report(prefect_harness, inputs, capsys):
    out = inputs / "tuned" / "als.yaml"
    argv = ["tune", "--model", "als", "--config", str(inputs / "c.yaml"), "--interactions"]
    argv += [str(inputs / "t.parquet"), "--trials", "3", "--metric", "recall@10", "--sampler", "random"]
    assert main([*argv, "--output", str(out), "--json"]) == 0
    summary = _json_of(capsys.readouterr().out)
    assert set(summary) == {
        "best_params",
        "best_value",
        "baseline_value",
        "metric",
        "trials",
        "config",
        "report",
    }
    assert summary["metric"] == "recall@10" and len(summary["trials"]) == 4  # trial 0 + 3
    assert summary["baseline_value"] == summary["trials"][0]["value"]
    assert summary["trials"][0]["params"] == {
        "factors": 8,
        "regularization": 0.01,
        "alpha": 1.0,
        "iterations": 4,
    }
    assert summary["best_value"] == max(t["value"] for t in summary["trials"] if t["value"] is not None)

    tuned = load_config(out)  # a config the pipeline accepts, with the best params
    assert tuned.models[0].params == summary["best_params"]
    assert tuned.models[1] == load_config(inputs / "c.yaml").models[1]
    assert out.read_text().startswith("# als: best of 4 random trials")
    trials = json.loads(out.with_suffix(".trials.json").read_text())
    assert [t["number"] for t in trials["trials"]] == [0, 1, 2, 3]
    assert {"number", "params", "state", "value", "metrics", "seconds"} <= set(trials["trials"][1])
    assert all(t["state"] in ("complete", "pruned", "failed") for t in trials["trials"])
    report = out.with_suffix(".report.html").read_text()
    assert summary["report"] == str(out.with_suffix(".report.html")) and summary["config"] == str(out)
    assert "data:image/png;base64," in report and "the config&#x27;s params" in report
    assert "<script" not in report and "http" not in report.replace("http-equiv", "")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "v"], "a precomputed model is not trained, so not tuned"),
        (["--model", "nope"], "unknown model\\(s\\) nope"),
        (["--model", "als", "--metric", "mrr@10"], "metric must look like ndcg@10"),
        (["--model", "als", "--interactions", "missing.parquet"], "interactions file not found"),
    ],
)
def test_bad_choices_are_one_line_before_prefect_starts(inputs, capsys, extra, message):
    argv = ["tune", "--config", str(inputs / "c.yaml")]
    if "--interactions" not in extra:
        argv += ["--interactions", str(inputs / "t.parquet")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recsys: error:") and "\n" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize(
    "flag, value", [("--trials", "0"), ("--timeout", "-1"), ("--timeout", "inf"), ("--sampler", "grid")]
)
def test_bad_flags_are_refused_by_the_parser(inputs, capsys, flag, value):
    with pytest.raises(SystemExit) as caught:
        main(["tune", "--model", "als", "--config", str(inputs / "c.yaml"), flag, value])
    assert caught.value.code == 2 and flag in capsys.readouterr().err


@pytest.mark.slow
def test_json_is_all_that_goes_to_stdout(inputs):
    """A fresh process (its own temporary Prefect API): progress on stderr, one JSON object
    on stdout; --timeout ends the search before the config's 50 trials."""
    env = dict(os.environ)
    recsys = str(Path(sys.executable).with_name("recsys"))
    argv = [recsys, "tune", "--model", "als", "--config", str(inputs / "c.yaml")]
    argv += [
        "--interactions",
        str(inputs / "t.parquet"),
        "--timeout",
        "1",
        "--output",
        str(inputs / "o.yaml"),
    ]
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert 1 <= len(summary["trials"]) < 51
    assert "trial 0/50 (the config's params)" in done.stderr
