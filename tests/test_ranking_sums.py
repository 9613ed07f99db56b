"""Ranking sums of shards of users add up to the figures of all the users at once."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.evaluate import RankingSums, combine, ranking_metrics, ranking_sums


def _random_case(seed: int, n_users: int, n_items: int, n: int, density: float):
    rng = np.random.default_rng(seed)
    n = min(n, n_items)
    recommended = np.array([rng.choice(n_items, n, replace=False) for _ in range(n_users)], dtype=np.int64)
    recommended = recommended.reshape(n_users, n)
    short = rng.random(n_users) < 0.2  # some lists end early (-1 after the last item)
    for row in np.flatnonzero(short):
        recommended[row, rng.integers(0, n + 1) :] = -1
    dense = rng.random((n_users, n_items)) < density
    dense[rng.random(n_users) < 0.3] = False  # users without held-out items
    holdout = sp.csr_matrix(dense.astype(np.float32))
    popularity = rng.integers(0, 500, n_items).astype(np.float64)
    ks = sorted({int(k) for k in rng.integers(1, n + 1, size=3)})
    return recommended, holdout, ks, popularity


def _shards(
    recommended: np.ndarray, holdout: sp.csr_matrix, ks: list[int], popularity: np.ndarray, cuts: list[int]
) -> list[RankingSums]:
    bounds = [0, *sorted(cuts), len(recommended)]
    return [
        ranking_sums(recommended[start:stop], holdout[start:stop], ks, popularity)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 60),
    n_items=st.integers(1, 90),
    n=st.integers(1, 20),
    density=st.sampled_from([0.0, 0.01, 0.05, 0.3]),
    data=st.data(),
)
def test_sums_of_contiguous_shards_give_the_unsharded_figures(seed, n_users, n_items, n, density, data):
    recommended, holdout, ks, popularity = _random_case(seed, n_users, n_items, n, density)
    # cut points may repeat (empty shards) and fall anywhere (shards without held-out users)
    cuts = data.draw(st.lists(st.integers(0, n_users), max_size=6))
    parts = _shards(recommended, holdout, ks, popularity, cuts)
    whole = ranking_sums(recommended, holdout, ks, popularity)
    combined = combine(parts)
    assert combined.users == whole.users == sum(part.users for part in parts)
    expected, found = whole.metrics(digits=None), combined.metrics(digits=None)
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    np.testing.assert_array_equal(combined.distinct_items(), whole.distinct_items())
    assert ranking_metrics(recommended, holdout, ks, popularity) == whole.metrics()


def test_a_shard_without_held_out_users_adds_nothing():
    recommended, holdout, ks, popularity = _random_case(5, 40, 30, 10, 0.1)
    holdout = holdout.tolil()
    holdout[20:] = 0
    holdout = holdout.tocsr()
    holdout.eliminate_zeros()
    first, second = _shards(recommended, holdout, ks, popularity, [20])
    assert second.users == 0 and second.metrics() == {}
    assert not second.items.any() and second.places.sum() == 0
    assert (first + second).metrics(digits=None) == first.metrics(digits=None)
    # coverage is a union of item sets: the empty shard recommends items that do not count
    assert (first + second).distinct_items().tolist() == first.distinct_items().tolist()


def test_coverage_is_the_union_of_the_shards_items_not_a_sum():
    recommended = np.array([[0, 1], [1, 2], [2, 3]])
    holdout = sp.csr_matrix(np.ones((3, 10), dtype=np.float32))
    parts = _shards(recommended, holdout, [2], np.arange(10.0), [1, 2])
    assert [part.metrics()["coverage@2"] for part in parts] == [0.2, 0.2, 0.2]
    assert combine(parts).metrics()["coverage@2"] == 0.4  # items 0..3
    assert combine(parts).metrics()["popularity@2"] == pytest.approx((0 + 1 + 1 + 2 + 2 + 3) / 6)


def test_sums_travel_pickled_and_refuse_other_cut_offs():
    recommended, holdout, ks, popularity = _random_case(3, 30, 40, 8, 0.1)
    sums = ranking_sums(recommended, holdout, ks, popularity)
    again = pickle.loads(pickle.dumps(sums))
    assert again.metrics(digits=None) == sums.metrics(digits=None)
    assert len(pickle.dumps(sums)) < 2000
    with pytest.raises(ValueError, match="cannot add ranking sums"):
        sums + RankingSums.empty([*ks, 99], 40)
    with pytest.raises(ValueError, match="cannot add ranking sums"):
        sums + RankingSums.empty(ks, 41)
    with pytest.raises(ValueError, match="no ranking sums"):
        combine([])
