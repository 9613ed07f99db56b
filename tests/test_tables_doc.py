"""docs/tables.md is the contract for downstream readers: the schema of every published
table it states (column, type) is what a real run writes, column by column, for integer
and for string ids; every parquet file of a run is on the page."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.stages.runner import run_local

DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"

CONFIG = {
    "seed": 3,
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "pop", "type": "popular"},
    ],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "evaluate": {"sample_users": 30, "sample_items": 30},
}


def documented() -> dict[str, list[tuple[str, list[pa.DataType]]]]:
    """``### `path``` headings followed by a ``| column | type | meaning |`` table: the
    path pattern -> [(column, the types it may have)]."""
    tables: dict[str, list[tuple[str, list[pa.DataType]]]] = {}
    path = None
    for line in DOC.read_text().splitlines():
        heading = re.fullmatch(r"### `([^`]+\.parquet)`", line.strip())
        if heading:
            path = heading.group(1)
            tables[path] = []
            continue
        if line.startswith("## "):
            path = None
        row = re.fullmatch(r"\| `([a-z_]+)` \| ([a-z0-9 ]+) \| .* \|", line.strip())
        if path is not None and row:
            types = [pa.type_for_alias(name.strip()) for name in row.group(2).split(" or ")]
            tables[path].append((row.group(1), types))
    return tables


def _pattern(path: str) -> re.Pattern:
    return re.compile(re.escape(path).replace(re.escape("<name>"), "[^/]+"))


def test_the_page_describes_the_tables():
    tables = documented()
    assert set(tables) == {
        "models/<name>/recommendations.parquet",
        "models/<name>/similar_items.parquet",
        "data/users.parquet",
        "data/items.parquet",
        "data/item_rules.parquet",
    }
    assert all(tables.values()), "a column table under every heading"
    for columns in tables.values():
        assert "id" not in [name for name, _ in columns]


@pytest.mark.parametrize("string_ids", [False, True], ids=["int-ids", "string-ids"])
def test_a_real_run_writes_what_the_page_says(tmp_path, string_ids):
    frame = generate_interactions(n_users=60, n_items=40, n_clusters=3, seed=1, string_ids=string_ids)
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    excluded = frame["item_id"].tolist()[0]  # a plain int or str
    config = parse_config({**CONFIG, "recommend": {"top_n": 5, "exclude_items": [excluded]}})
    manifest = run_local(config, tmp_path / "in.parquet", tmp_path / "out", "r1")
    run_dir = tmp_path / "out" / "latest"  # the fixed path of the current run
    assert run_dir.resolve() == (tmp_path / "out" / "runs" / manifest.run_id).resolve()
    id_type = pa.string() if string_ids else pa.int64()
    tables = documented()
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.parquet") if p.is_file())
    # a published list is a dataset: the folder the page names, of part-NNNNN.parquet files
    tables_of = {relative: re.sub(r"/part-\d{5}\.parquet$", "", relative) for relative in files}
    assert len(set(tables_of.values())) == 3 + 2 * len(CONFIG["models"])
    for relative in files:
        (doc_path,) = [p for p in tables if _pattern(p).fullmatch(tables_of[relative])] or [None]
        assert doc_path is not None, f"{relative} is not described in docs/tables.md"
        schema = pq.read_schema(run_dir / relative)
        documented_columns = tables[doc_path]
        assert schema.names == [name for name, _ in documented_columns], relative
        for (name, types), field in zip(documented_columns, schema, strict=True):
            assert field.type in types, f"{relative}: {name} is {field.type}, docs/tables.md says {types}"
            if len(types) > 1:  # ids: the input's type
                assert field.type == id_type, f"{relative}: {name} is {field.type}, the input's ids {id_type}"
    recs = pq.read_table(run_dir / "models" / "als" / "recommendations.parquet").to_pandas()
    assert set(recs["source"]) == {"model"} and set(recs["model"]) == {"als"}
