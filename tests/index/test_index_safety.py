"""Annoy index files: manifest checks before load, refusal of bad vectors and late adds,
query validation, scores equal to exact metric values (PITFALLS: Annoy rows)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from recsys.errors import AnnIndexError, IndexFrozenError, QueryError
from recsys.index import AnnoyBuilder, AnnoyIndex, ExactIndex, build_annoy_index, normalize_rows


@pytest.fixture()
def vectors():
    return np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)


@pytest.fixture()
def built(tmp_path, vectors):
    path = tmp_path / "angular.ann"
    manifest = build_annoy_index(vectors, "angular", path, n_trees=10, seed=1)
    return path, manifest


def test_manifest_describes_the_file(built, vectors):
    path, manifest = built
    assert (manifest.metric, manifest.dim, manifest.n_items, manifest.n_trees, manifest.seed) == (
        "angular",
        16,
        300,
        10,
        1,
    )
    assert manifest.size_bytes == path.stat().st_size
    assert path.with_name("angular.ann.json").exists()
    assert stat.S_IMODE(os.stat(path).st_mode) & stat.S_IROTH  # readable by readers, not 0600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_same_seed_same_bytes(tmp_path, vectors):
    a = build_annoy_index(vectors, "dot", tmp_path / "a.ann", 10, 5)
    b = build_annoy_index(vectors, "dot", tmp_path / "b.ann", 10, 5)
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.ann").read_bytes() == (tmp_path / "b.ann").read_bytes()


def test_opened_with_other_metric_or_dimension_is_refused(built):
    path, _ = built
    with pytest.raises(AnnIndexError, match="built with metric 'angular', opened as 'dot'"):
        AnnoyIndex(path, metric="dot")
    with pytest.raises(AnnIndexError, match="built with dimension 16, opened with 15"):
        AnnoyIndex(path, dim=15)


@pytest.mark.parametrize("damage", ["truncate", "append", "flip"])
def test_damaged_file_is_refused_before_load(built, damage):
    path, _ = built
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "append":
        data += b"\0" * 64
    else:
        data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    expected = "checksum" if damage == "flip" else "bytes, its manifest says"
    with pytest.raises(AnnIndexError, match=expected):
        AnnoyIndex(path)


def test_missing_manifest_or_file(built):
    path, _ = built
    path.with_name("angular.ann.json").rename(path.with_name("moved.json"))
    with pytest.raises(AnnIndexError, match="manifest not found"):
        AnnoyIndex(path)
    with pytest.raises(AnnIndexError, match="manifest not found"):
        AnnoyIndex(path.with_name("nothing.ann"))


@pytest.mark.parametrize(
    "value, message", [(np.nan, "not finite"), (np.inf, "not finite"), (0.0, "zero norm")]
)
def test_bad_vectors_never_reach_an_index(tmp_path, vectors, value, message):
    bad = vectors.copy()
    bad[[3, 7]] = value
    with pytest.raises(AnnIndexError, match=f"2 of 300 item vectors .*{message}"):
        build_annoy_index(bad, "angular", tmp_path / "x.ann", 5, 0)
    assert not list(tmp_path.iterdir())


def test_add_after_build_is_refused(tmp_path, vectors):
    builder = AnnoyBuilder(16, "angular", 5, 0)
    builder.add(vectors[:100])
    builder.save(tmp_path / "x.ann")
    with pytest.raises(IndexFrozenError, match="cannot grow"):
        builder.add(vectors[100:])
    assert AnnoyIndex(tmp_path / "x.ann").n_items == 100


@pytest.mark.parametrize("k", [0, -1, 301])
def test_k_out_of_range_is_refused(built, vectors, k):
    index = AnnoyIndex(built[0])
    with pytest.raises(QueryError, match="between 1 and the 300"):
        index.search(vectors[:2], k)


def test_wrong_query_dimension_is_refused(built, vectors):
    with pytest.raises(QueryError, match="shape"):
        AnnoyIndex(built[0]).search(vectors[:2, :8], 5)


@pytest.mark.parametrize("metric", ["dot", "angular"])
def test_scores_are_exact_metric_values_best_first(tmp_path, vectors, metric):
    path = tmp_path / f"{metric}.ann"
    build_annoy_index(vectors, metric, path, 10, 0)
    queries = vectors[:20] * 1.5
    ids, scores = AnnoyIndex(path).search(queries, 10, search_k=5000)
    if metric == "dot":
        expected = np.einsum("qd,qkd->qk", queries, vectors[ids])
    else:
        expected = np.einsum("qd,qkd->qk", normalize_rows(queries), normalize_rows(vectors)[ids])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_exclusions_never_returned_and_rows_stay_full(tmp_path, vectors):
    import scipy.sparse as sp

    path = tmp_path / "dot.ann"
    build_annoy_index(vectors, "dot", path, 10, 0)
    exact_ids, _ = ExactIndex(vectors, "dot").search(vectors[:5], 20)
    exclude = sp.csr_matrix(
        (np.ones(50, np.float32), (np.repeat(np.arange(5), 10), exact_ids[:, :10].ravel())),
        shape=(5, 300),
    )
    ids, _ = AnnoyIndex(path).search(vectors[:5], 10, exclude=exclude, search_k=100_000)
    for row in range(5):
        assert not set(ids[row]) & set(exact_ids[row, :10])
        assert (ids[row] >= 0).all()
