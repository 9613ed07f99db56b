"""Interactions validation, id maps and input tables (PITFALLS: implicit and parquet rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys import storage
from recsys.data import IdMap, build_interactions, generate_interactions
from recsys.errors import InputError, QueryError

# NUL characters are refused in ids (see test below) and lone surrogates cannot be
# stored as UTF-8, so generated ids have neither.
ID_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=5
)


def _frame(**columns):
    base = {"user_id": [1, 2, 2, 3], "item_id": [10, 10, 20, 30], "weight": [1.0, 2.0, 3.0, 4.0]}
    base.update(columns)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"user_id": [1], "weight": [1.0]}), "missing column item_id"),
        (pd.DataFrame({"item_id": [1]}), "missing column user_id"),
        (pd.DataFrame({"user_id": [], "item_id": []}), "empty"),
        (_frame(user_id=[1, None, None, 3]), "2 row\\(s\\) have a missing user_id"),
        (_frame(item_id=["a", None, "b", "c"]), "1 row\\(s\\) have a missing item_id"),
        (_frame(user_id=[1.5, 2.0, 2.0, 3.0]), "integers or strings, found float64"),
        (_frame(user_id=["a", 2, "c", "d"]), "mixes types: 1 of 4"),
        (_frame(item_id=["a", "", "b", "c"]), "1 row\\(s\\) have an empty item_id"),
        (_frame(weight=[1.0, np.nan, 1.0, np.nan]), "2 row\\(s\\) have a missing or NaN weight"),
        (_frame(weight=[1.0, np.inf, 1.0, 1.0]), "1 row\\(s\\) have an infinite weight"),
        (_frame(weight=[1.0, -1.0, -2.0, 1.0]), "2 row\\(s\\) have a negative weight"),
        (
            _frame(weight=[1.0, 1e-300, 1e-39, 0.0]),
            "2 row\\(s\\) have a positive weight below 1.18e-38.*1e-300",
        ),
        (_frame(weight=["a", "b", "c", "d"]), "weight must be numeric"),
        (_frame(weight=[0.0, 0.0, 0.0, 0.0]), "all 4 rows have weight 0"),
        (_frame(user_id=[True, False, True, True]), "found booleans"),
        (_frame(item_id=["a", "b\x00", "c", "d"]), "1 row\\(s\\) have a NUL character in item_id"),
    ],
)
def test_bad_tables_are_refused_with_column_and_count(frame, message):
    with pytest.raises(InputError, match=f"^events.parquet: .*{message}"):
        build_interactions(frame, "events.parquet")


def test_duplicates_summed_zero_weights_dropped_and_counted():
    frame = pd.DataFrame(
        {"user_id": [1, 1, 1, 2, 2], "item_id": [5, 5, 6, 5, 7], "weight": [1.0, 2.5, 1.0, 0.0, 3.0]}
    )
    data = build_interactions(frame)
    assert data.stats == {
        "rows": 5,
        "zero_weight_rows_dropped": 1,
        "duplicate_rows_merged": 1,
        "interactions": 3,
        "users": 2,
        "items": 3,
    }
    dense = data.user_items.toarray()
    assert dense[0, data.items.to_internal([5])[0]] == pytest.approx(3.5)
    assert data.user_items.dtype == np.float32 and data.user_items.format == "csr"
    assert data.user_items.shape == (2, 3)
    np.testing.assert_array_equal(data.seen_counts(), [2, 1])


def test_missing_weight_column_means_one():
    data = build_interactions(pd.DataFrame({"user_id": ["u", "v"], "item_id": ["a", "a"]}))
    assert data.user_items.toarray().ravel().tolist() == [1.0, 1.0]


def test_ids_keep_their_type_and_are_sorted():
    ints = build_interactions(_frame())
    assert ints.users.kind == "int" and ints.users.ids.dtype == np.int64
    assert ints.items.ids.tolist() == [10, 20, 30]
    strs = build_interactions(_frame(user_id=["b", "a", "a", "c"]))
    assert strs.users.kind == "str" and strs.users.ids.tolist() == ["a", "b", "c"]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(-(2**62), 2**62)),
            ID_TEXT,
            st.floats(0.1, 100),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_round_trip_of_pairs_and_weights(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight"])
    data = build_interactions(frame)
    coo = data.user_items.tocoo()
    got = {
        (u, i): w
        for u, i, w in zip(
            data.users.to_external(coo.row), data.items.to_external(coo.col), coo.data, strict=True
        )
    }
    expected = frame.groupby(["user_id", "item_id"])["weight"].sum().to_dict()
    assert got.keys() == expected.keys()
    for key, weight in expected.items():
        assert got[key] == pytest.approx(weight, rel=1e-5)


@given(st.lists(ID_TEXT, min_size=1, max_size=30, unique=True))
def test_id_map_round_trip_strings(ids):
    id_map = IdMap.from_ids(np.array(ids, dtype=object), "str")
    internal = id_map.to_internal(ids)
    assert id_map.to_external(internal).tolist() == ids


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=30, unique=True))
def test_id_map_round_trip_ints(ids):
    id_map = IdMap.from_ids(np.array(ids, dtype=np.int64))
    assert id_map.to_external(id_map.to_internal(ids)).tolist() == ids


def test_unknown_ids_strict_and_lenient():
    id_map = IdMap.from_ids(np.array([3, 5, 7]))
    with pytest.raises(QueryError, match="1 unknown id"):
        id_map.to_internal([5, 6])
    assert id_map.to_internal([5, 6], strict=False).tolist() == [1, -1]
    assert id_map.parse("7") == 7
    with pytest.raises(QueryError, match="not an integer"):
        id_map.parse("x")


# ---------------------------------------------------------------- reading files


def test_read_parquet_and_csv(tmp_path):
    frame = generate_interactions(n_users=30, n_items=20, n_clusters=2, string_ids=True, seed=1)
    storage.write_interactions_table(frame, tmp_path / "a.parquet")
    storage.write_interactions_table(frame, tmp_path / "a.csv")
    for name in ("a.parquet", "a.csv"):
        read, fingerprint = storage.read_interactions_table(tmp_path / name)
        assert len(read) == len(frame)
        assert fingerprint["size_bytes"] == (tmp_path / name).stat().st_size
        assert len(fingerprint["sha256"]) == 64
        data = build_interactions(read)
        assert data.users.kind == "str"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.parquet", None, "file not found"),
        ("table.json", b"{}", "unsupported file type '.json'"),
        ("broken.parquet", b"not parquet at all" * 10, "not a readable parquet file"),
        ("empty.csv", b"", "the file is empty"),
    ],
)
def test_unreadable_inputs(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        storage.read_interactions_table(path)


def test_folder_is_not_a_table(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        storage.read_interactions_table(tmp_path)


def test_nullable_int_ids_with_nulls_fail_with_count(tmp_path):
    frame = pd.DataFrame({"user_id": pd.array([1, None, 3], dtype="Int64"), "item_id": [1, 2, 3]})
    frame.to_parquet(tmp_path / "n.parquet")
    read, _ = storage.read_interactions_table(tmp_path / "n.parquet")
    with pytest.raises(InputError, match="1 row\\(s\\) have a missing user_id"):
        build_interactions(read, "n.parquet")


def test_interactions_artifacts_round_trip(tmp_path):
    for string_ids in (False, True):
        frame = generate_interactions(n_users=40, n_items=25, n_clusters=3, string_ids=string_ids)
        data = build_interactions(frame)
        storage.write_interactions(tmp_path / str(string_ids), data)
        back = storage.read_interactions(tmp_path / str(string_ids))
        assert back.users.kind == data.users.kind
        assert back.users.ids.tolist() == data.users.ids.tolist()
        assert back.items.ids.tolist() == data.items.ids.tolist()
        assert (back.user_items != data.user_items).nnz == 0
        assert back.stats == data.stats


def test_synthetic_sample_is_deterministic_and_clustered():
    a = generate_interactions(n_users=200, n_items=100, n_clusters=4, seed=9)
    b = generate_interactions(n_users=200, n_items=100, n_clusters=4, seed=9)
    c = generate_interactions(n_users=200, n_items=100, n_clusters=4, seed=10)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert list(a.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert a.groupby("user_id").size().min() >= 3
    counts = a["item_id"].value_counts()
    assert counts.iloc[:10].sum() > 0.1 * len(a) * 1.5  # top 10% of items: well over 10%
