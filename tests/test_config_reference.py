"""docs/config.md is the reference generated from the config's pydantic models, and
every key in it has a docstring."""

from __future__ import annotations

import difflib
from pathlib import Path

from recsys import reference
from recsys.config import PipelineConfig
from recsys.models import MODEL_TYPES

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_the_generated_reference():
    expected, found = reference.render(), DOC.read_text()
    if found != expected:
        diff = "".join(
            difflib.unified_diff(
                found.splitlines(True), expected.splitlines(True), "docs/config.md", "generated", n=1
            )
        )
        raise AssertionError(
            f"docs/config.md differs from the config models: regenerate it with\n"
            f"    .venv/bin/{reference.COMMAND}\n{diff[:4000]}"
        )


def test_every_key_and_model_type_is_documented():
    assert reference.undocumented() == []
    text = reference.render()
    for section in PipelineConfig.model_fields:
        assert f"`{section}" in text
    for name, model_type in MODEL_TYPES.items():
        assert f"### `type: {name}`" in text
        for param in model_type.params.model_fields:
            assert f"**`params.{param}`**" in text


def test_types_defaults_and_bounds_are_rendered():
    text = reference.render()
    assert "- **`index.annoy.n_trees`** (int >= 1, <= 10000; default `50`): Annoy trees" in text
    assert "### `index.hnswlib`" in text
    assert "- **`index.hnswlib.M`** (int >= 2, <= 256; default `16`)" in text
    assert "- **`index.seed`** (int >= 0, <= 2^31 - 1, or null; default `null`)" in text
    assert "- **`recommend.metric`** (dot | angular; default `dot`)" in text
    assert "- **`models[].name`** (string; required)" in text
    assert "| `hnswlib` | `hnswlib` | yes | `pip install 'recsys[ann]'` |" in text
