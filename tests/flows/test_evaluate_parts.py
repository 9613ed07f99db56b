"""Ranking figures of published lists on Dask: one Prefect task per part on a local
cluster of two worker processes, each returning the part's sums, add up in the flow to
the figures of all the lists at once."""

from __future__ import annotations

import pytest

from tests.test_evaluate_parts import (
    N_USERS,
    assert_same_figures,
    evaluation_lists,
    published_run,
    split_lists,
)


def test_ranking_on_workers_adds_up_to_the_figures_of_one_pass(prefect_harness, tmp_path):
    from prefect import flow

    from flows.evaluate_parts import ranking_on_workers
    from flows.scaleout import dask_runner
    from recsys.config import TaskRunnerConfig
    from recsys.stages.evaluate import published_parts, ranking_sums_of_parts

    run, config, opened = published_run(tmp_path / "out")
    parts = split_lists(run, "als", [(0, 70), (70, 70), (70, 190), (190, 191), (191, N_USERS)])
    on_dask = config.model_copy(update={"task_runner": TaskRunnerConfig(type="dask", n_workers=2)})

    @flow(name="evaluate-parts-test")
    def evaluate_on_workers():
        with dask_runner(on_dask) as runner:
            assert runner is not None
            return ranking_on_workers(runner, run, config, "als", parts)

    on_workers = evaluate_on_workers()
    whole = ranking_sums_of_parts(run, config, "als", published_parts(run, evaluation_lists(opened)))
    for found, expected in zip(on_workers, whole, strict=True):
        assert_same_figures(found, expected)
    published, exact = on_workers
    evaluation = opened.manifest.models["als"].evaluation
    assert published.metrics() == pytest.approx(evaluation.ranking.root, abs=1e-6)
    assert exact.metrics() == pytest.approx(evaluation.ranking_exact.root, abs=1e-6)
    with pytest.raises(ValueError, match="no parts"):
        ranking_on_workers(None, run, config, "als", [])
