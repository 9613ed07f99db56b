"""The validation split of ``recsys tune`` is carved from the run's training part only: no
pair the run holds out is ever used to choose params, and a holdout table is never read."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table
from recsys.data.splits import split_table
from recsys.tuning import VALIDATION_SEED_OFFSET, carve_validation, validation_data


def _pairs(table) -> set[tuple]:
    return set(zip(table.users.tolist(), table.items.tolist(), strict=True))


@pytest.fixture(scope="module")
def frame():
    return generate_interactions(n_users=300, n_items=120, n_clusters=6, seed=4)


@pytest.mark.parametrize(
    "split", [{"method": "random", "fraction": 0.3}, {"method": "leave_last", "n": 2}, {"method": "time"}]
)
def test_no_validation_pair_is_held_out_by_the_run(frame, split):
    config = parse_config(
        {"seed": 11, "models": [{"name": "a", "type": "als"}], "evaluate": {"split": split}}
    )
    table = clean_table(frame)
    run_train, run_test = split_table(
        table, split["method"], config.evaluate.split.fraction, config.evaluate.split.n, config.seed
    )
    train, validation, info = carve_validation(config, table)
    assert len(validation) > 0 and not _pairs(validation) & _pairs(run_test)
    assert _pairs(train) | _pairs(validation) == _pairs(run_train)  # exactly the run's training part
    assert not _pairs(train) & _pairs(validation)
    assert info == {"run_split": split["method"], "method": "random", "fraction": 0.2, "seed": 11 + 7}


def test_the_validation_csr_holds_no_run_holdout_pair(frame, tmp_path):
    frame.to_parquet(tmp_path / "t.parquet")
    config = parse_config(
        {
            "seed": 3,
            "models": [{"name": "a", "type": "als"}],
            "evaluate": {"split": {"method": "random", "fraction": 0.25}},
            "tune": {"validation_fraction": 0.3},
        }
    )
    interactions, validation, info = validation_data(config, str(tmp_path / "t.parquet"))
    rows, cols = validation.nonzero()
    pairs = set(
        zip(
            interactions.users.to_external(rows).tolist(),
            interactions.items.to_external(cols).tolist(),
            strict=True,
        )
    )
    _, run_test = split_table(clean_table(frame), "random", 0.25, 1, 3)
    assert pairs and not pairs & _pairs(run_test)
    assert not np.asarray(interactions.user_items[rows, cols]).any()  # never in training either
    assert info["fraction"] == 0.3 and info["pairs_evaluated"] == validation.nnz


def test_without_a_split_validation_comes_from_all_the_input_and_a_holdout_is_never_read(frame, tmp_path):
    frame.to_parquet(tmp_path / "t.parquet")
    config = parse_config(
        {
            "models": [{"name": "a", "type": "als"}],
            "evaluate": {"holdout": str(tmp_path / "no-such-test.parquet")},
        }
    )
    table = clean_table(frame)
    train, validation, info = carve_validation(config, table)
    expected = split_table(table, "random", 0.2, 1, config.seed + VALIDATION_SEED_OFFSET)
    assert _pairs(train) == _pairs(expected[0]) and _pairs(validation) == _pairs(expected[1])
    assert info["run_split"] == "none"
    interactions, csr, _ = validation_data(config, str(tmp_path / "t.parquet"))  # reads no holdout
    assert csr.nnz > 0 and interactions.nnz == len(train)
