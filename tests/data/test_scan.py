"""A table validated a batch at a time (the preflight on Dask) refuses and passes exactly
what the whole table's validation does, with the same one-line error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys import storage
from recsys.errors import InputError
from recsys.stages import prepare


def _outcome(call, path):
    try:
        facts = call(path)
    except InputError as exc:
        return "error", str(exc)
    return "ok", (facts.user_kind, facts.item_kind, sorted(facts.items.tolist()))


def _both(path, rows=3):
    whole = _outcome(lambda p: prepare.TableFacts.of(prepare.validate_table(p, keep=False)), path)
    scanned = _outcome(lambda p: prepare.scan_table(p, rows=rows), path)
    return whole, scanned


def _frame(n=10, **columns):
    base = {
        "user_id": list(range(n)),
        "item_id": [i % 4 for i in range(n)],
        "weight": [1.0] * n,
        "timestamp": [1_600_000_000 + i for i in range(n)],
    }
    base.update(columns)
    return pd.DataFrame(base)


def _with(values, at, value):
    values = list(values)
    for i in at:
        values[i] = value
    return values


BAD = [
    ("missing item column", pd.DataFrame({"user_id": [1, 2], "weight": [1.0, 1.0]})),
    (
        "empty",
        pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "item_id": pd.Series([], dtype="int64")}),
    ),
    ("missing users in two batches", _frame(user_id=_with(range(10), [1, 7], None))),
    ("missing weights late", _frame(weight=_with([1.0] * 10, [8, 9], np.nan))),
    ("infinite weight", _frame(weight=_with([1.0] * 10, [5], np.inf))),
    ("negative weights", _frame(weight=_with([1.0] * 10, [0, 9], -1.0))),
    ("tiny weight", _frame(weight=_with([1.0] * 10, [4], 1e-40))),
    ("all weights zero", _frame(weight=[0.0] * 10)),
    ("empty string item late", _frame(item_id=_with([f"i{i % 3}" for i in range(10)], [9], ""))),
    ("bad timestamp late", _frame(timestamp=_with(["2024-01-01"] * 10, [8], "not a date"))),
    ("a summed pair past float32", _frame(user_id=[1] * 10, item_id=[2] * 10, weight=[3e38] * 10)),
    ("one weight past float32", _frame(weight=_with([1.0] * 10, [6], 1e39))),
    ("float ids", _frame(user_id=[float(i) + 0.5 for i in range(10)])),
]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("name, frame", BAD, ids=[b[0] for b in BAD])
def test_a_bad_table_gets_the_whole_tables_error(tmp_path, suffix, name, frame):
    path = tmp_path / f"t{suffix}"
    storage.write_interactions_table(frame, path)
    whole, scanned = _both(path)
    assert whole[0] == "error", whole
    assert scanned == whole


def test_mixed_csv_ids_across_batches_get_the_whole_tables_answer(tmp_path):
    """A CSV's types are inferred per batch: integers in one batch and words in the next
    are strings in the whole table, and the scan answers as the whole table does."""
    path = tmp_path / "t.csv"
    storage.write_interactions_table(_frame(item_id=[1, 2, 3, 4, 5, 6, "x", "y", "z", "w"]), path)
    whole, scanned = _both(path)
    assert scanned == whole


def test_a_valid_table_is_scanned_without_reading_it_whole(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    frame = _frame(
        n=1000, item_id=[f"i{i % 37}" for i in range(1000)], weight=[float(i % 3) for i in range(1000)]
    )
    storage.write_interactions_table(frame, path)
    whole = _outcome(lambda p: prepare.TableFacts.of(prepare.validate_table(p, keep=False)), path)

    def whole_read(*args, **kwargs):
        raise AssertionError("the whole table was read")

    monkeypatch.setattr(prepare, "validate_table", whole_read)
    monkeypatch.setattr(storage, "read_any_table", whole_read)
    assert _outcome(lambda p: prepare.scan_table(p, rows=64), path) == whole
    # items of weight 0 only are not the table's items
    assert len(whole[1][2]) == 37


ROWS = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 5), st.none()),
        st.sampled_from(["a", "b", "c", "", None]),
        st.sampled_from([0.0, 1.0, 2.5, -1.0, np.nan, np.inf, 1e-40]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, batch=st.integers(1, 5), suffix=st.sampled_from([".parquet", ".csv"]))
def test_any_table_scanned_in_any_batches_answers_as_the_whole(tmp_path_factory, rows, batch, suffix):
    path = tmp_path_factory.mktemp("scan") / f"t{suffix}"
    users, items, weights = zip(*rows, strict=True)
    frame = pd.DataFrame({"user_id": pd.array(users, dtype="Int64"), "item_id": items, "weight": weights})
    storage.write_interactions_table(frame, path)
    whole, scanned = _both(path, rows=batch)
    assert scanned == whole


def test_the_preflight_on_dask_scans(tmp_path, monkeypatch):
    """Without ``keep`` (a worker prepares the data) the preflight validates the table a
    batch at a time: the flow's process never builds the whole table."""
    from recsys.config import parse_config

    path = tmp_path / "t.parquet"
    storage.write_interactions_table(_frame(n=200, item_id=[i % 9 for i in range(200)]), path)
    config = parse_config(
        {"models": [{"name": "als", "type": "als"}], "recommend": {"top_n": 5}, "similar_items": {"top_n": 8}}
    )
    built = []
    monkeypatch.setattr(prepare, "clean_table", lambda *a, **k: built.append(1))
    prepare.preflight(config, path, None, keep=False)
    assert not built and path.resolve() not in prepare._validated
    config = parse_config(
        {"models": [{"name": "als", "type": "als"}], "recommend": {"top_n": 5}, "similar_items": {"top_n": 9}}
    )
    with pytest.raises(Exception, match="similar_items.top_n is 9 but .* has only 9 items"):
        prepare.preflight(config, path, None, keep=False)
