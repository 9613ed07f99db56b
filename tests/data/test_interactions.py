"""build_interactions validation, IdMap, CSR build, input tables and interactions artefacts."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.data import IdMap, Interactions, build_interactions
from recsys.data.interactions import FLOAT32_TINY
from recsys.errors import InputError, QueryError
from recsys.storage import read_interactions, read_interactions_table, write_interactions

SOURCE = "events.parquet"


def _frame(**columns) -> pd.DataFrame:
    base = {"user_id": [1, 2, 2, 3], "item_id": [10, 10, 20, 30], "weight": [1.0, 2.0, 3.0, 4.0]}
    base.update(columns)
    return pd.DataFrame(base)


def _refused(frame: pd.DataFrame, message: str) -> str:
    with pytest.raises(InputError, match=f"^{SOURCE}: .*{message}") as caught:
        build_interactions(frame, SOURCE)
    return str(caught.value)


# ---------------------------------------------------------------- validation errors


def test_missing_item_column_is_named():
    text = _refused(pd.DataFrame({"user_id": [1], "weight": [1.0]}), "missing column item_id")
    assert "found columns: user_id, weight" in text


def test_missing_user_column_is_named():
    _refused(pd.DataFrame({"item_id": [1]}), "missing column user_id")


def test_missing_both_columns_names_both():
    _refused(pd.DataFrame({"uid": [1], "iid": [2]}), "missing column user_id, item_id")


def test_empty_table():
    _refused(pd.DataFrame({"user_id": pd.Series([], dtype=np.int64), "item_id": []}), r"empty \(0 rows\)")


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_null_ids_are_counted(column):
    _refused(_frame(**{column: [1, None, None, 3]}), f"2 row\\(s\\) have a missing {column}")
    _refused(_frame(**{column: ["a", None, "b", "c"]}), f"1 row\\(s\\) have a missing {column}")
    nullable = pd.array([1, None, 2, None], dtype="Int64")
    _refused(_frame(**{column: nullable}), f"2 row\\(s\\) have a missing {column}")


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_float_ids_are_refused(column):
    _refused(
        _frame(**{column: [1.5, 2.0, 2.0, 3.0]}),
        f"column {column} must hold integers or strings, found float64",
    )
    # integral floats are refused too: 1.0 could be 1 or "1.0"
    _refused(_frame(**{column: [1.0, 2.0, 2.0, 3.0]}), "floating-point ids are ambiguous")


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_mixed_str_and_int_ids_are_refused(column):
    values = pd.Series(["a", 2, "c", 4], dtype=object)
    _refused(_frame(**{column: values}), f"column {column} mixes types: 2 of 4 values are not strings")


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_empty_string_ids_are_counted(column):
    _refused(_frame(**{column: ["a", "", "", "c"]}), f"2 row\\(s\\) have an empty {column}")


def test_boolean_ids_are_refused():
    _refused(_frame(user_id=[True, False, True, True]), "found booleans")


def test_ids_above_int64_are_refused_not_wrapped():
    huge = pd.Series([2**63, 5, 6, 7], dtype="uint64")
    _refused(_frame(item_id=huge), "1 value\\(s\\) of column item_id are above the int64 maximum")
    fits = build_interactions(_frame(item_id=pd.Series([2**63 - 1, 5, 6, 7], dtype="uint64")))
    assert fits.items.ids.tolist() == [5, 6, 7, 2**63 - 1]


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, np.nan, 1.0, np.nan], "2 row\\(s\\) have a missing or NaN weight"),
        (pd.array([1.0, None, 1.0, 1.0], dtype="Float64"), "1 row\\(s\\) have a missing or NaN weight"),
        ([1.0, np.inf, -np.inf, 1.0], "2 row\\(s\\) have an infinite weight"),
        ([1.0, -1.0, -2.0, -0.5], "3 row\\(s\\) have a negative weight \\(expected >= 0\\)"),
        (["a", "b", "c", "d"], "column weight must be numeric"),
        ([True, False, True, True], "column weight must be numeric"),
        ([0.0, 0.0, 0.0, 0.0], "all 4 rows have weight 0; nothing to learn from"),
    ],
)
def test_bad_weights_are_counted(weights, message):
    _refused(_frame(weight=weights), message)


# ---------------------------------------------------------------- what a valid table becomes


def test_zero_weight_rows_are_dropped_and_counted():
    frame = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [5, 6, 5, 7], "weight": [1.0, 0.0, 2.0, 0.0]})
    data = build_interactions(frame)
    assert data.stats["rows"] == 4
    assert data.stats["zero_weight_rows_dropped"] == 2
    assert data.nnz == 2
    # user 3 and item 7 only had a zero weight: they are not in the maps
    assert data.users.ids.tolist() == [1, 2]
    assert data.items.ids.tolist() == [5]
    assert data.user_items.toarray().tolist() == [[1.0], [2.0]]


def test_duplicates_are_summed_and_counted():
    frame = pd.DataFrame(
        {"user_id": [1, 1, 1, 2, 1], "item_id": [5, 5, 6, 5, 5], "weight": [1.0, 2.5, 1.0, 3.0, 0.25]}
    )
    data = build_interactions(frame)
    assert data.stats == {
        "rows": 5,
        "zero_weight_rows_dropped": 0,
        "duplicate_rows_merged": 2,
        "interactions": 3,
        "users": 2,
        "items": 2,
    }
    u1 = data.users.to_internal([1])[0]
    i5, i6 = data.items.to_internal([5, 6])
    assert data.user_items[u1, i5] == pytest.approx(3.75)
    assert data.user_items[u1, i6] == pytest.approx(1.0)
    assert data.user_items.sum() == pytest.approx(7.75)


def test_weight_defaults_to_one_and_duplicates_count():
    data = build_interactions(pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "x", "x"]}))
    assert data.user_items.toarray().tolist() == [[2.0], [1.0]]
    assert data.stats["duplicate_rows_merged"] == 1


def test_csr_is_float32_users_by_items():
    frame = _frame(user_id=[7, 8, 8, 9, 9], item_id=[1, 1, 2, 3, 4], weight=[1.0, 2.0, 3.0, 4.0, 5.0])
    data = build_interactions(frame)
    assert isinstance(data, Interactions)
    assert isinstance(data.user_items, sp.csr_matrix)
    assert data.user_items.dtype == np.float32
    assert data.user_items.shape == (3, 4) == (data.n_users, data.n_items)
    assert data.stats["users"] == 3 and data.stats["items"] == 4 and data.stats["interactions"] == 5
    assert data.user_items.has_sorted_indices
    np.testing.assert_array_equal(data.seen_counts(), [1, 2, 2])


def test_int64_ids_stay_int():
    data = build_interactions(_frame(user_id=np.array([30, 10, 10, 20], dtype=np.int64)))
    assert data.users.kind == "int" and data.items.kind == "int"
    assert data.users.ids.dtype == np.int64
    assert data.users.ids.tolist() == [10, 20, 30]
    assert all(type(v) is int for v in data.users.ids.tolist())


def test_int32_ids_become_int64():
    data = build_interactions(_frame(item_id=np.array([3, 1, 2, 1], dtype=np.int32)))
    assert data.items.kind == "int" and data.items.ids.dtype == np.int64


def test_str_ids_stay_str_even_when_they_look_numeric():
    data = build_interactions(_frame(user_id=["10", "9", "9", "007"], item_id=["b", "a", "a", "c"]))
    assert data.users.kind == "str" and data.items.kind == "str"
    assert data.users.ids.dtype == object
    # string order, leading zeros kept
    assert data.users.ids.tolist() == ["007", "10", "9"]
    assert all(type(v) is str for v in data.users.ids)


def test_str_dtype_column_is_accepted():
    data = build_interactions(_frame(user_id=pd.array(["u1", "u2", "u2", "u3"], dtype="string")))
    assert data.users.kind == "str"
    assert data.users.ids.tolist() == ["u1", "u2", "u3"]


def test_id_maps_are_sorted_and_unique():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(-50, 50, 300), "item_id": rng.integers(0, 1000, 300)})
    data = build_interactions(frame)
    for id_map, column in ((data.users, "user_id"), (data.items, "item_id")):
        ids = id_map.ids
        assert (np.diff(ids) > 0).all()
        assert set(ids.tolist()) == set(frame[column].tolist())


# ---------------------------------------------------------------- IdMap


def test_id_map_strict_lookup_raises_on_unknown_ids():
    ids = IdMap.from_ids([3, 5, 9])
    np.testing.assert_array_equal(ids.to_internal([9, 3]), [2, 0])
    assert ids.to_internal([9]).dtype == np.int64
    with pytest.raises(QueryError, match=r"2 unknown id\(s\), e.g. 4 \(the map holds 3 int ids\)"):
        ids.to_internal([3, 4, 7])


def test_id_map_non_strict_lookup_gives_minus_one():
    ids = IdMap.from_ids(np.array(["a", "b"], dtype=object))
    assert ids.kind == "str"
    np.testing.assert_array_equal(ids.to_internal(["b", "zz", "a"], strict=False), [1, -1, 0])
    with pytest.raises(QueryError, match="unknown id"):
        ids.to_internal(["zz"])


def test_id_map_lookup_of_values_of_another_type_is_unknown_not_a_crash():
    ints = IdMap.from_ids([1, 2, 3])
    np.testing.assert_array_equal(
        ints.to_internal(np.array(["abc", 1.5, 2], dtype=object), strict=False), [-1, -1, 1]
    )
    with pytest.raises(QueryError):
        ints.to_internal(["abc"])
    strs = IdMap.from_ids(np.array(["1", "2"], dtype=object))
    np.testing.assert_array_equal(strs.to_internal([1, "2"], strict=False), [-1, 1])
    assert ints.to_internal([]).shape == (0,)


def test_id_map_refuses_duplicates():
    with pytest.raises(ValueError, match="unique"):
        IdMap.from_ids([1, 1, 2])


def test_id_map_parse():
    ints = IdMap.from_ids([1, 2])
    assert ints.parse("2") == 2 and type(ints.parse("2")) is int
    assert ints.parse("-7") == -7
    with pytest.raises(QueryError, match="id 'u1' is not an integer"):
        ints.parse("u1")
    with pytest.raises(QueryError):
        ints.parse("1.5")
    strs = IdMap.from_ids(np.array(["007"], dtype=object))
    assert strs.parse("007") == "007"
    assert strs.to_internal([strs.parse("007")]).tolist() == [0]


# NUL is refused in ids (a separate check); surrogates cannot be written as UTF-8
id_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=8
)
int_ids = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=40, unique=True)
str_ids = st.lists(id_text, min_size=1, max_size=40, unique=True)


@given(st.one_of(int_ids, str_ids))
@settings(max_examples=60, deadline=None)
def test_id_map_round_trip(ids):
    id_map = IdMap.from_ids(ids if isinstance(ids[0], int) else np.array(ids, dtype=object))
    assert id_map.kind == ("int" if isinstance(ids[0], int) else "str")
    internal = np.arange(len(ids))
    np.testing.assert_array_equal(id_map.to_internal(id_map.to_external(internal)), internal)
    assert id_map.to_external(id_map.to_internal(ids)).tolist() == ids


def _pairs(kind: str):
    ids = st.integers(min_value=-(2**63), max_value=2**63 - 1) if kind == "int" else id_text
    # valid weights: 0 (dropped) or a positive float32 can hold (smaller ones are refused)
    weights = st.just(0.0) | st.floats(min_value=FLOAT32_TINY, max_value=1000.0)
    # small pools of ids so that duplicates (user, item) pairs happen
    return st.tuples(
        st.lists(ids, min_size=1, max_size=6, unique=True), st.lists(ids, min_size=1, max_size=6, unique=True)
    ).flatmap(
        lambda pools: st.lists(
            st.tuples(st.sampled_from(pools[0]), st.sampled_from(pools[1]), weights), min_size=1, max_size=30
        )
    )


@pytest.mark.parametrize("kind", ["int", "str"])
def test_build_then_map_back_reproduces_summed_pairs(kind):
    @given(_pairs(kind))
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(rows):
        expected: dict[tuple, float] = defaultdict(float)
        for user, item, weight in rows:
            if weight > 0:
                expected[(user, item)] += weight
        dtype = np.int64 if kind == "int" else object
        frame = pd.DataFrame(
            {
                "user_id": np.array([r[0] for r in rows], dtype=dtype),
                "item_id": np.array([r[1] for r in rows], dtype=dtype),
                "weight": [r[2] for r in rows],
            }
        )
        if not expected:
            with pytest.raises(InputError, match="have weight 0"):
                build_interactions(frame)
            return
        data = build_interactions(frame)
        assert data.users.kind == kind and data.items.kind == kind
        coo = data.user_items.tocoo()
        users = data.users.to_external(coo.row).tolist()
        items = data.items.to_external(coo.col).tolist()
        got = {(u, i): float(w) for u, i, w in zip(users, items, coo.data, strict=True)}
        assert got.keys() == expected.keys()
        for pair, weight in expected.items():
            assert got[pair] == pytest.approx(weight, rel=1e-6)
            assert type(pair[0]) is type(next(iter(got))[0])
        assert data.stats["rows"] == len(rows)
        assert data.stats["zero_weight_rows_dropped"] == sum(1 for r in rows if r[2] == 0)
        positive = [(u, i) for u, i, w in rows if w > 0]
        assert data.stats["duplicate_rows_merged"] == len(positive) - len(expected)

    check()


# ---------------------------------------------------------------- reading input tables


def _write_parquet(path, frame):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def test_read_parquet_table(tmp_path):
    frame = _frame(extra=["x", "y", "z", "w"])
    path = _write_parquet(tmp_path / "events.parquet", frame)
    table, fingerprint = read_interactions_table(path)
    assert list(table.columns) == ["user_id", "item_id", "weight"]  # only contract columns
    assert table["user_id"].tolist() == [1, 2, 2, 3]
    assert fingerprint["path"] == str(path.resolve())
    assert fingerprint["size_bytes"] == path.stat().st_size
    assert len(fingerprint["sha256"]) == 64
    data = build_interactions(table, str(path))
    assert data.nnz == 4 and data.users.kind == "int"


def test_read_csv_table(tmp_path):
    path = tmp_path / "events.csv"
    _frame().to_csv(path, index=False)
    table, fingerprint = read_interactions_table(path)
    assert table["user_id"].tolist() == [1, 2, 2, 3]
    assert table["weight"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert fingerprint["size_bytes"] == path.stat().st_size
    assert build_interactions(table).users.kind == "int"


def test_csv_with_string_ids_keeps_strings(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,weight\nu1,song-a,1\nu2,song-b,2\nu2,song-a,1\n")
    table, _ = read_interactions_table(path)
    data = build_interactions(table, str(path))
    assert data.users.kind == "str" and data.items.kind == "str"
    assert data.users.ids.tolist() == ["u1", "u2"]
    assert data.items.ids.tolist() == ["song-a", "song-b"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(InputError, match=f"^{path}: file not found"):
        read_interactions_table(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_interactions_table(tmp_path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "events.json"
    path.write_text('[{"user_id": 1, "item_id": 2}]')
    with pytest.raises(InputError, match=r"unsupported file type '\.json'"):
        read_interactions_table(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    path.write_bytes(os.urandom(256))
    with pytest.raises(InputError, match=f"^{path}: not a readable parquet file"):
        read_interactions_table(path)


def test_truncated_parquet(tmp_path):
    path = _write_parquet(tmp_path / "events.parquet", _frame())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="not a readable parquet file"):
        read_interactions_table(path)


def test_empty_csv_file(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("")
    with pytest.raises(InputError, match=f"^{path}: the file is empty"):
        read_interactions_table(path)


def test_csv_with_header_only_is_an_empty_table(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,weight\n")
    table, _ = read_interactions_table(path)
    with pytest.raises(InputError, match="empty"):
        build_interactions(table, str(path))


def test_csv_without_contract_columns_names_what_it_found(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("uid,iid\n1,2\n")
    table, _ = read_interactions_table(path)
    with pytest.raises(InputError, match="missing column user_id, item_id \\(found columns: uid, iid\\)"):
        build_interactions(table, str(path))


def test_parquet_with_null_ids_fails_validation_with_the_count(tmp_path):
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "user_id": pa.array([1, None, 3, None, None], type=pa.int64()),
            "item_id": pa.array([1, 2, 3, 4, 5], type=pa.int64()),
        }
    )
    pq.write_table(table, path)
    frame, _ = read_interactions_table(path)
    with pytest.raises(InputError, match=f"^{path}: 3 row\\(s\\) have a missing user_id"):
        build_interactions(frame, str(path))


# ---------------------------------------------------------------- interactions artefacts


@pytest.mark.parametrize(
    "users, items",
    [
        ([5, -3, 5, 2**62], [1, 1, 2, 3]),
        (["u1", "u2", "u1", "ü"], ["007", "7", "x", "7"]),
    ],
)
def test_write_read_interactions_round_trip(tmp_path, users, items):
    original = build_interactions(
        pd.DataFrame({"user_id": users, "item_id": items, "weight": [1.0, 2.5, 3.0, 0.5]})
    )
    paths = write_interactions(tmp_path / "interactions", original)
    assert all((tmp_path / "interactions" / p).is_file() for p in paths.values())
    loaded = read_interactions(tmp_path / "interactions")
    for before, after in ((original.users, loaded.users), (original.items, loaded.items)):
        assert after.kind == before.kind
        assert after.ids.dtype == before.ids.dtype
        assert after.ids.tolist() == before.ids.tolist()
        assert [type(v) for v in after.ids.tolist()] == [type(v) for v in before.ids.tolist()]
    assert isinstance(loaded.user_items, sp.csr_matrix) and loaded.user_items.dtype == np.float32
    assert loaded.user_items.shape == original.user_items.shape
    assert (loaded.user_items != original.user_items).nnz == 0
    assert loaded.stats == original.stats
