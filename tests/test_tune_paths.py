"""The config ``recsys tune`` writes keeps the input it was tuned on, and every path in it
resolves, from the tuned config's own folder, to the file the search used."""

from __future__ import annotations

from pathlib import Path

import yaml

from recsys.config import DEFAULT_CONFIG, load_config
from recsys.tuning import tuned_config

PARAMS = {"factors": 8, "iterations": 2}


def _write(raw: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_interactions_given_on_the_command_line_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(DEFAULT_CONFIG)  # input.path: null, output.root: the default
    assert config.input.path is None
    target = tmp_path / "configs" / "als-tuned.yaml"
    raw = tuned_config(config, "als", PARAMS, "data/my.parquet", target.parent)
    assert raw["input"]["path"] == "../data/my.parquet"
    assert raw["output"]["root"] == "../data/outputs"
    tuned = load_config(_write(raw, target))
    assert Path(tuned.input.path) == tmp_path / "data" / "my.parquet"
    assert Path(tuned.output.root) == tmp_path / "data" / "outputs"
    assert tuned.models[0].params == PARAMS


def test_paths_of_a_config_file_resolve_the_same_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = _write(
        {
            "input": {"path": "../data/t.parquet"},
            "output": {"root": "../out"},
            "models": [
                {"name": "als", "type": "als", "params": {"factors": 4}},
                {"name": "v", "type": "precomputed", "params": {"items": "vectors/v.parquet"}},
            ],
            "recommend": {"exclude_items": "../data/banned.csv"},
        },
        tmp_path / "configs" / "c.yaml",
    )
    config = load_config(source)
    target = tmp_path / "elsewhere" / "deeper" / "tuned.yaml"
    raw = tuned_config(config, "als", PARAMS, config.input.path, target.parent)
    assert all(not Path(v).is_absolute() for v in (raw["input"]["path"], raw["output"]["root"]))
    tuned = load_config(_write(raw, target))
    assert tuned.input.path == config.input.path == str(tmp_path / "data" / "t.parquet")
    assert tuned.output.root == config.output.root
    assert tuned.recommend.exclude_items == config.recommend.exclude_items
    assert tuned.models[1] == config.models[1]
    assert tuned.models[0].params == PARAMS


def test_without_a_folder_the_paths_are_as_loaded(tmp_path):
    config = load_config(DEFAULT_CONFIG)
    raw = tuned_config(config, "als", PARAMS, str(tmp_path / "t.parquet"))
    assert raw["input"]["path"] == str(tmp_path / "t.parquet")
    assert raw["output"]["root"] == config.output.root
