"""The exact path's top-k against a brute-force sort, on random, clustered, tied and
unclustered scores, with excluded (-inf) entries, rows with fewer than k candidates and k
larger than the catalog: the class prefilter and the running top-k must never change a
result."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recsys.index.exact as exact
from recsys.index.exact import ExactIndex, top_k_rows

KINDS = ("random", "clustered", "tied", "unclustered", "sorted")


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first, the lower column first among equal scores; -1 / -inf past the finite."""
    rows, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    ids = np.where(np.isfinite(top), order, -1)
    if k > n:
        ids = np.pad(ids, ((0, 0), (0, k - n)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - n)), constant_values=-np.inf)
    return ids, top


def make_scores(kind: str, rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=(rows, n)).astype(np.float32)
    if kind == "clustered":
        centres = rng.normal(size=(5, 8))
        items = centres[rng.integers(0, 5, n)] + 0.3 * rng.normal(size=(n, 8))
        users = centres[rng.integers(0, 5, rows)] + 0.3 * rng.normal(size=(rows, 8))
        return (users @ items.T).astype(np.float32)
    if kind == "tied":
        return rng.integers(-3, 4, size=(rows, n)).astype(np.float32)
    if kind == "unclustered":
        directions = rng.normal(size=(n, 8))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        items = directions * rng.lognormal(0, 0.5, size=(n, 1))
        return (rng.normal(size=(rows, 8)) @ items.T).astype(np.float32)
    # sorted: the best columns are one contiguous run, as in a catalog ordered by popularity
    return np.sort(rng.normal(size=(rows, n)), axis=1)[:, ::-1].astype(np.float32).copy()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    rows=st.integers(1, 12),
    n=st.integers(1, 3000),
    k=st.integers(1, 40),
    excluded=st.sampled_from([0.0, 0.1, 0.9, 0.999]),
    empty_row=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_top_k_rows_matches_a_full_sort(kind, rows, n, k, excluded, empty_row, seed):
    scores = make_scores(kind, rows, n, seed)
    rng = np.random.default_rng(seed + 1)
    scores[rng.random(scores.shape) < excluded] = -np.inf
    if empty_row:
        scores[0] = -np.inf
    ids, top = top_k_rows(scores, k)
    expected_ids, expected_top = reference(scores, k)
    np.testing.assert_array_equal(top, expected_top)
    np.testing.assert_array_equal(ids, expected_ids)


def test_top_k_rows_k_larger_than_the_catalog():
    scores = np.array([[1.0, -np.inf, 3.0]], dtype=np.float32)
    ids, top = top_k_rows(scores, 5)
    np.testing.assert_array_equal(ids, [[2, 0, -1, -1, -1]])
    np.testing.assert_array_equal(top, [[3.0, 1.0, -np.inf, -np.inf, -np.inf]])


def seen(rows: int, n: int, share: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((rows, n)) < share).astype(np.float32))


@pytest.mark.parametrize("kind", ["clustered", "tied", "unclustered"])
@pytest.mark.parametrize("chunked", [False, True])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    users=st.integers(1, 80),
    n=st.integers(2, 2500),
    k=st.integers(1, 25),
    share=st.sampled_from([0.0, 0.05, 0.95]),
    seed=st.integers(0, 2**16),
)
def test_exact_search_matches_brute_force(kind, chunked, users, n, k, share, seed):
    """Integer vectors, so every product is exact in float32 whichever block computes it
    (and ties are frequent); chunked: a few hundred items at a time, a running top-k."""
    rng = np.random.default_rng(seed)
    if kind == "tied":
        items = rng.integers(-1, 2, size=(n, 4)).astype(np.float32)
        queries = rng.integers(-1, 2, size=(users, 4)).astype(np.float32)
    elif kind == "clustered":
        centres = rng.integers(-4, 5, size=(4, 6))
        items = (centres[rng.integers(0, 4, n)] + rng.integers(-1, 2, size=(n, 6))).astype(np.float32)
        queries = (centres[rng.integers(0, 4, users)] + rng.integers(-1, 2, (users, 6))).astype(np.float32)
    else:
        items = rng.integers(-8, 9, size=(n, 6)) * rng.integers(1, 5, size=(n, 1))
        items, queries = items.astype(np.float32), rng.integers(-8, 9, size=(users, 6)).astype(np.float32)
    k = min(k, n)
    exclude = seen(users, n, share, seed)
    full = queries @ items.T
    full[exclude.nonzero()] = -np.inf
    expected_ids, expected_top = reference(full, k)
    with pytest.MonkeyPatch.context() as patch:
        if chunked:
            patch.setattr(exact, "CHUNKED_MIN_COLUMNS", 64)
            patch.setattr(exact, "CHUNK_COLUMNS", 320)
        ids, top = ExactIndex(items, "dot", block_rows=32).search(queries, k, exclude=exclude)
    np.testing.assert_array_equal(top, expected_top)
    np.testing.assert_array_equal(ids, expected_ids)
