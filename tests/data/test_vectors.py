"""Precomputed vectors: layouts, validation, alignment, query vectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.interactions import IdMap
from recsys.errors import InputError
from recsys.storage.vectors import align, read_query_vector, read_vectors

VECTORS = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
IDS = ["a", "b", "c", "d"]


def _list_table(path, ids=IDS, vectors=VECTORS, name="vector"):
    pq.write_table(
        pa.table({"id": ids, name: pa.array([list(v) for v in vectors], pa.list_(pa.float32()))}), path
    )


def test_list_column_float_columns_and_npy_agree(tmp_path):
    _list_table(tmp_path / "list.parquet")
    pq.write_table(
        pa.table({"item_id": IDS, **{f"d{j}": VECTORS[:, j] for j in range(3)}}), tmp_path / "cols.parquet"
    )
    np.save(tmp_path / "v.npy", VECTORS)
    pq.write_table(pa.table({"id": IDS}), tmp_path / "ids.parquet")
    for args in (
        (tmp_path / "list.parquet",),
        (tmp_path / "cols.parquet",),
        (tmp_path / "v.npy", tmp_path / "ids.parquet"),
    ):
        ids, matrix = read_vectors(*args)
        assert ids.ids.tolist() == IDS and ids.kind == "str"
        np.testing.assert_array_equal(matrix, VECTORS)
        assert matrix.dtype == np.float32


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v: v.__setitem__((1, 0), np.nan), "1 of 4 item vectors are not finite"),
        (lambda v: v.__setitem__((2, slice(None)), 0), "1 of 4 item vectors have zero norm"),
    ],
)
def test_bad_vectors_are_refused(tmp_path, mutate, message):
    vectors = VECTORS.copy()
    mutate(vectors)
    _list_table(tmp_path / "v.parquet", vectors=vectors)
    with pytest.raises(InputError, match=message):
        read_vectors(tmp_path / "v.parquet")


def test_duplicate_ids_and_ragged_dimensions_are_refused(tmp_path):
    _list_table(tmp_path / "dup.parquet", ids=["a", "b", "a", "d"])
    with pytest.raises(InputError, match="1 item id\\(s\\) appear more than once, e.g. 'a'"):
        read_vectors(tmp_path / "dup.parquet")
    ragged = pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": [1, 2], "vector": ragged}), tmp_path / "ragged.parquet")
    with pytest.raises(InputError, match="vectors of 2 different dimensions"):
        read_vectors(tmp_path / "ragged.parquet")
    np.save(tmp_path / "v.npy", VECTORS)
    with pytest.raises(InputError, match="need an id table"):
        read_vectors(tmp_path / "v.npy")
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "short.parquet")
    with pytest.raises(InputError, match="has 1 ids for 4 vectors"):
        read_vectors(tmp_path / "v.npy", tmp_path / "short.parquet")


def test_align_to_run_ids(tmp_path):
    _list_table(tmp_path / "v.parquet")
    ids, matrix = read_vectors(tmp_path / "v.parquet")
    aligned = align(
        ids, matrix, IdMap.from_ids(np.array(["d", "a"], dtype=object), "str"), "v.parquet", "item"
    )
    np.testing.assert_array_equal(aligned, VECTORS[[3, 0]])
    with pytest.raises(InputError, match="1 item\\(s\\) of the run have no vector, e.g. 'z'"):
        align(ids, matrix, IdMap.from_ids(np.array(["a", "z"], dtype=object), "str"), "v.parquet", "item")


def test_query_vectors(tmp_path):
    np.save(tmp_path / "q.npy", VECTORS[0])
    _list_table(tmp_path / "q.parquet", ids=["q"], vectors=VECTORS[:1])
    for name in ("q.npy", "q.parquet"):
        np.testing.assert_array_equal(read_query_vector(tmp_path / name), VECTORS[:1])
    np.save(tmp_path / "zero.npy", np.zeros(3, np.float32))
    with pytest.raises(InputError, match="non-zero norm"):
        read_query_vector(tmp_path / "zero.npy")
