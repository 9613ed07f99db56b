"""The exact path's two selections (the compiled kernel and the stable sort in numpy that
serves a process's first small searches) against a full stable sort: tiles merged one
after the other into a running top-k, ties (the lower column first), rows of -inf, k above
the items left, exclusions given unsorted and repeated, widths around the kernel's groups;
and the exact search and similar items through each of them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recsys.index.exact as exact
from recsys.index.exact import ExactIndex, top_k_rows
from recsys.index.topk_kernel import GROUP
from recsys.recommend import similar_all

PATHS = ("compiled", "sorted")


def use(path: str, patch: pytest.MonkeyPatch) -> None:
    """Every search of the test through one selection."""
    if path == "compiled":
        patch.setattr(exact, "_small", {"work": 0, "compiled": True})
    else:
        patch.setattr(exact, "_small", {"work": 0, "compiled": False})
        patch.setattr(exact, "SMALL_WORK", 10**15)


def selection(path: str):
    with pytest.MonkeyPatch.context() as patch:
        use(path, patch)
        return exact._selection(1)


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first, the lower column first among equal scores; -1 / -inf past the finite."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    ids = np.where(np.isfinite(top), order, -1)
    pad = k - order.shape[1]
    return (
        np.pad(ids, ((0, 0), (0, pad)), constant_values=-1),
        np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf),
    )


def test_the_two_selections_differ():
    """The tests below run two different functions, not one twice."""
    assert selection("compiled") is not selection("sorted")
    assert selection("sorted") is exact._select_sorted


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 9),
    n=st.integers(1, 1200),
    tile=st.sampled_from([1, 7, GROUP - 1, GROUP, GROUP + 1, 3 * GROUP + 5, 2000]),
    k=st.integers(1, 30),
    values=st.sampled_from(["normal", "few", "ascending", "descending"]),
    excluded=st.sampled_from([0.0, 0.2, 0.97, 1.0]),
    empty_row=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_tiles_merged_into_a_running_top_k_match_a_full_sort(
    path, rows, n, tile, k, values, excluded, empty_row, seed
):
    rng = np.random.default_rng(seed)
    if values == "normal":
        scores = rng.normal(size=(rows, n))
    elif values == "few":  # many ties
        scores = rng.integers(-2, 3, size=(rows, n))
    else:  # every score a new best (ascending) or none after the first k (descending)
        scores = np.sort(rng.normal(size=(rows, n)), axis=1)
        if values == "descending":
            scores = scores[:, ::-1]
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if empty_row:
        scores[0] = -np.inf
    # exclusions as a CSR with unsorted, repeated columns per row
    row, column = np.nonzero(rng.random((rows, n)) < excluded)
    shuffle = rng.permutation(len(row))
    row, column = np.concatenate([row[shuffle], row[:3]]), np.concatenate([column[shuffle], column[:3]])
    order = np.argsort(row, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=rows))])
    exclude = sp.csr_matrix((np.ones(len(row), np.float32), column[order], indptr), shape=(rows, n))
    expected = scores.copy()
    expected[row, column] = -np.inf
    expected_ids, expected_top = reference(expected, k)

    pointers, columns = exact._sorted_exclusions(exclude, rows)
    cursor = pointers[:-1].copy()
    ids = np.full((rows, k), -1, dtype=np.int64)
    top = np.full((rows, k), -np.inf, dtype=np.float32)
    select = selection(path)
    for first in range(0, n, tile):
        block = np.ascontiguousarray(scores[:, first : first + tile])
        select(block, first, pointers, columns, cursor, ids, top)
    np.testing.assert_array_equal(top, expected_top)
    np.testing.assert_array_equal(ids, expected_ids)


@pytest.mark.parametrize("path", PATHS)
def test_top_k_rows_through_each_selection(path):
    rng = np.random.default_rng(3)
    scores = rng.integers(-3, 4, size=(40, 700)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[5] = -np.inf
    with pytest.MonkeyPatch.context() as patch:
        use(path, patch)
        ids, top = top_k_rows(scores, 750)
    expected_ids, expected_top = reference(scores, 750)
    np.testing.assert_array_equal(top, expected_top)
    np.testing.assert_array_equal(ids, expected_ids)
    assert (ids[5] == -1).all()


def test_small_searches_are_sorted_until_their_work_adds_up(monkeypatch):
    monkeypatch.setattr(exact, "_small", {"work": 0, "compiled": False})
    monkeypatch.setattr(exact, "SMALL_WORK", 1000)
    assert exact._selection(600) is exact._select_sorted
    assert exact._selection(600) is not exact._select_sorted  # 1200 scores in all: compiled
    assert exact._selection(1) is not exact._select_sorted  # and compiled from then on


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("metric", ["dot", "angular"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 900), k=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_similar_items_match_a_full_sort(path, metric, n, k, seed):
    """Products exact in float32 whichever tile computes them (integer vectors; for
    angular, signed axes of integer lengths, unit vectors once normalised), frequent ties;
    chunked: a running top-k over several tiles; never the item itself."""
    rng = np.random.default_rng(seed)
    if metric == "dot":
        items = rng.integers(-2, 3, size=(n, 5)).astype(np.float32)
    else:
        items = np.zeros((n, 5), dtype=np.float32)
        items[np.arange(n), rng.integers(0, 5, n)] = rng.choice([-3.0, -1.0, 1.0, 2.0, 4.0], n)
    k = min(k, n - 1)
    index = ExactIndex(items, metric, block_rows=64)
    full = index.vectors @ index.vectors.T
    np.fill_diagonal(full, -np.inf)
    expected_ids, expected_top = reference(full, k)
    with pytest.MonkeyPatch.context() as patch:
        use(path, patch)
        patch.setattr(exact, "CHUNKED_MIN_COLUMNS", 64)
        patch.setattr(exact, "CHUNK_COLUMNS", 200)
        ids, top = similar_all(index, items, k)
    assert (ids != np.arange(n)[:, None]).all()
    np.testing.assert_array_equal(top, expected_top)
    np.testing.assert_array_equal(ids, expected_ids)


@pytest.mark.parametrize("path", PATHS)
def test_exact_search_with_fewer_items_left_than_k(path):
    """Rows whose exclusions leave fewer than k items: -1 / -inf after the ones left."""
    items = np.eye(6, dtype=np.float32)
    queries = np.ones((3, 6), dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]))
    with pytest.MonkeyPatch.context() as patch:
        use(path, patch)
        ids, top = ExactIndex(items, "dot").search(queries, 4, exclude=exclude)
    np.testing.assert_array_equal(ids, [[4, 5, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])
    np.testing.assert_array_equal(top[0], [1, 1, -np.inf, -np.inf])
    assert (top[1] == -np.inf).all()


def test_warming_loads_the_kernel_only_for_a_search_that_will_use_it():
    """auto's baseline times exact search after warm_selection: a small search stays on
    numpy (numba not loaded), a large one has the kernel loaded before the clock starts."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from recsys.index.exact import warm_selection\n"
        "warm_selection(1000)\n"
        "print('numba' in sys.modules)\n"
        "warm_selection(10**9)\n"
        "print('numba' in sys.modules, 'recsys.index.topk_kernel' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True", "True"]


def chunked_by_norm(patch: pytest.MonkeyPatch, chunk: int) -> None:
    """Inner-product searches through the compiled selection, in tiles of ``chunk`` items
    visited in decreasing norm."""
    use("compiled", patch)
    patch.setattr(exact, "CHUNKED_MIN_COLUMNS", 64)
    patch.setattr(exact, "CHUNK_COLUMNS", chunk)
    patch.setattr(exact, "CHUNK_COLUMNS_PER_K", 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    users=st.integers(1, 60),
    n=st.integers(65, 1500),
    dim=st.integers(1, 6),
    spread=st.sampled_from([1, 3, 20]),
    k=st.integers(1, 12),
    share=st.sampled_from([0.0, 0.1, 0.9]),
    chunk=st.sampled_from([64, GROUP + 3, 300]),
    block_rows=st.sampled_from([1, 7, 32]),
    seed=st.integers(0, 2**16),
)
def test_search_by_norm_matches_a_full_sort(users, n, dim, spread, k, share, chunk, block_rows, seed):
    """Integer vectors (products exact in float32 whatever computes them, frequent ties,
    zero vectors) whose norms spread up to ``spread``-fold, so that queries leave their
    blocks early; unsorted, repeated exclusions; the results of a full stable sort."""
    rng = np.random.default_rng(seed)
    items = rng.integers(-2, 3, size=(n, dim)) * rng.integers(1, spread + 1, size=(n, 1))
    items = items.astype(np.float32)
    queries = rng.integers(-2, 3, size=(users, dim)).astype(np.float32)
    row, column = np.nonzero(rng.random((users, n)) < share)
    shuffle = rng.permutation(len(row))
    row, column = np.concatenate([row[shuffle], row[:3]]), np.concatenate([column[shuffle], column[:3]])
    order = np.argsort(row, kind="stable")  # rows in order, their columns unsorted and repeated
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=users))])
    exclude = sp.csr_matrix((np.ones(len(row), np.float32), column[order], indptr), shape=(users, n))
    full = queries @ items.T
    full[row, column] = -np.inf
    expected_ids, expected_top = reference(full, k)
    with pytest.MonkeyPatch.context() as patch:
        chunked_by_norm(patch, chunk)
        ids, top = ExactIndex(items, "dot", block_rows=block_rows).search(queries, k, exclude=exclude)
    np.testing.assert_array_equal(top, expected_top)
    np.testing.assert_array_equal(ids, expected_ids)


def test_search_by_norm_leaves_the_small_items_unscored(monkeypatch):
    """Norms falling steeply: every query's top k is among the first tiles, and the
    remaining ones are never scored."""
    import recsys.index.topk_kernel as kernel

    rng = np.random.default_rng(5)
    n = 2000
    items = rng.normal(size=(n, 8)) * np.geomspace(100, 0.01, n)[rng.permutation(n), None]
    items = items.astype(np.float32)
    queries = rng.normal(size=(50, 8)).astype(np.float32)
    tiles = []
    select = kernel.select_tile_mapped

    def counted(tile, first, *rest):
        tiles.append((len(tile), first))
        select(tile, first, *rest)

    chunked_by_norm(monkeypatch, 100)
    monkeypatch.setattr(kernel, "select_tile_mapped", counted)
    ids, top = ExactIndex(items, "dot", block_rows=16).search(queries, 5)
    full = queries @ items.T
    expected_ids, expected_top = reference(full, 5)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(top, expected_top, rtol=1e-5)
    scored = sum(rows * 100 for rows, _ in tiles)
    assert scored < 0.2 * 50 * n  # every item scored: 50 x 2000
    assert max(first for _, first in tiles) < n // 2


def test_search_by_norm_gives_ties_to_the_lower_id_whatever_its_norm(monkeypatch):
    """Item 0 (norm 1) and item 1 (norm 4.1) score 1 with the query: item 1 is visited
    first (larger norm), item 0 still comes first."""
    items = np.tile(np.array([[-1.0, 0.0]], dtype=np.float32), (202, 1))  # score -1
    items[0], items[1] = [1.0, 0.0], [1.0, 4.0]
    queries = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    exclude = sp.csr_matrix(([1.0], ([1], [0])), shape=(2, len(items)))
    chunked_by_norm(monkeypatch, 64)
    ids, top = ExactIndex(items, "dot", block_rows=2).search(queries, 1, exclude=exclude)
    np.testing.assert_array_equal(ids, [[0], [1]])
    np.testing.assert_array_equal(top, [[1.0], [1.0]])
    ids, top = ExactIndex(items, "dot").search(queries, 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2], [0, 1, 2]])
