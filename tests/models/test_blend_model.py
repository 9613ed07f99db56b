"""The blend at the matrix level: its vectors are its parts' side by side, scaled so that
one dot product is the weighted sum of the parts' scaled scores (the run-level behaviour
is in tests/test_blend.py: a blend is made of a run's models, never fitted alone)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.errors import ModelError
from recsys.models import MODEL_TYPES
from recsys.models.blend import SAMPLE_PAIRS, BlendParams, make_blend, multipliers, part_scale
from tests.models import contract


@pytest.fixture(scope="module")
def parts():
    matrix, user_group, item_group = contract.checkerboard()
    fitted = {
        name: MODEL_TYPES[name].fit(contract.contract_params(MODEL_TYPES[name]), matrix, seed=1)
        for name in ("als", "spectral", "popular")
    }
    return matrix, user_group, item_group, {n: (e.user_factors, e.item_factors) for n, e in fitted.items()}


def test_a_blend_scores_the_weighted_sum_of_its_parts_scaled_scores(parts):
    matrix, _, _, vectors = parts
    params = {"parts": {"als": 2.0, "spectral": 0.5}}
    blend, scales = make_blend("b", params, vectors, matrix, seed=4)
    assert blend.user_factors.dtype == np.float32 and blend.dim == 8 + 8
    expected = sum(
        weight * scales[name] * (vectors[name][0] @ vectors[name][1].T)
        for name, weight in params["parts"].items()
    )
    np.testing.assert_allclose(blend.user_factors @ blend.item_factors.T, expected, rtol=1e-4, atol=1e-5)
    assert multipliers({**params, "scales": scales}) == {n: w * scales[n] for n, w in params["parts"].items()}


def test_a_scale_brings_the_scores_of_training_pairs_to_a_root_mean_square_of_1(parts):
    matrix, _, _, vectors = parts
    users, items = vectors["spectral"]
    scale = part_scale(users, items, matrix, seed=0)
    rows, cols = matrix.nonzero()
    assert len(rows) <= SAMPLE_PAIRS  # every pair sampled: the exact figure
    scores = np.einsum("ij,ij->i", users[rows].astype(np.float64), items[cols].astype(np.float64))
    assert math.isclose(scale * np.sqrt(np.mean(scores**2)), 1.0, rel_tol=1e-6)
    assert part_scale(users, items, matrix, seed=0) == scale  # seeded


def test_a_blend_of_personalized_parts_knows_the_answer(parts):
    matrix, user_group, item_group, vectors = parts
    blend, _ = make_blend("b", {"parts": {"als": 1.0, "spectral": 1.0, "popular": 0.1}}, vectors, matrix, 0)
    scores = blend.user_factors @ blend.item_factors.T
    scores[matrix.nonzero()] = -np.inf
    assert (item_group[np.argmax(scores, axis=1)] == user_group).mean() > 0.95


def test_a_part_of_other_users_or_all_zero_scores_is_refused(parts):
    matrix, _, _, vectors = parts
    users, items = vectors["als"]
    with pytest.raises(ModelError, match=r"^model b: part als has vectors of 5 users and \d+ items, the run"):
        make_blend("b", {"parts": {"als": 1.0}}, {"als": (users[:5], items)}, matrix, 0)
    zero = (np.zeros_like(users), items)
    with pytest.raises(ModelError, match="^model b: part als scores every sampled training pair 0"):
        make_blend("b", {"parts": {"als": 1.0}}, {"als": zero}, matrix, 0)


@pytest.mark.parametrize(
    "parts, message",
    [
        ({}, "a blend needs at least one part"),
        ({"als": math.inf}, "the weight of als must be finite and > 0"),
        ({"als": math.nan}, "the weight of als must be finite and > 0"),
        ({"als": 0}, "the weight of als must be finite and > 0"),
        ({"als": True}, "the weight of als must be a number"),
    ],
)
def test_weights_must_be_finite_and_positive(parts, message):
    with pytest.raises(ValueError, match=message):
        BlendParams.model_validate({"parts": parts})


def test_a_blend_is_never_fitted_from_a_matrix_and_folds_in_through_a_run():
    matrix, _, _ = contract.checkerboard()
    blend = MODEL_TYPES["blend"]
    with pytest.raises(ModelError, match="^model b: a blend is made of its parts' vectors .*never trained"):
        blend.fit({"parts": {"als": 1.0}}, matrix, seed=0, name="b")
    assert blend.folds_in
    with pytest.raises(ModelError, match="folds users in through its parts"):
        blend.fold_in({"parts": {"als": 1.0}}, np.ones((4, 2), np.float32), matrix[:1])
