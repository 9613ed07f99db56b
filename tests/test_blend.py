"""``type: blend`` through whole runs: its published lists are the exact top-N of the
weighted sum of its parts' scaled scores, a tiny weight leaves one part's lists, carried
parts rebuild the same blend, fold-in goes through the parts, a refit run measures it on
the split, and a config that cannot make a blend is refused in one line per problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import recsys
from recsys import storage
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.errors import ConfigError, ModelError
from recsys.stages.publish import model_fingerprint
from recsys.stages.results import Prepared
from recsys.stages.runner import run_local

TOP_N = 5
PARTS = [
    {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
    {"name": "spectral", "type": "spectral", "params": {"factors": 8}},
]
CONFIG = {
    "models": [
        *PARTS,
        {"name": "bpr", "type": "bpr", "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
        {"name": "blend", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 2.0}}},
        {"name": "als_mostly", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 1e-6}}},
        {"name": "with_bpr", "type": "blend", "params": {"parts": {"als": 1.0, "bpr": 1.0}}},
        {"name": "of_blends", "type": "blend", "params": {"parts": {"blend": 1.0, "als": 0.5}}},
        {"name": "popular", "type": "popular"},
        {"name": "exact_fold", "type": "blend", "params": {"parts": {"spectral": 1.0, "popular": 0.5}}},
    ],
    "index": {"backend": "exact"},
    "recommend": {"top_n": TOP_N},
    "similar_items": {"top_n": 3},
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blend")
    frame = generate_interactions(n_users=150, n_items=80, n_clusters=4, seed=2)
    path = storage.write_interactions_table(frame, folder / "in.parquet")
    run = recsys.run_pipeline(path, CONFIG, output=folder / "out", run_id="r1")
    return folder, path, frame, run


def _scores(run, name: str) -> np.ndarray:
    """A model's scores of every (user, item), computed from its published factor files."""
    return np.asarray(run.user_factors(name), np.float64) @ np.asarray(run.item_factors(name), np.float64).T


def _expected_top(run, scores: np.ndarray) -> np.ndarray:
    """The best TOP_N unseen scores of every user, best first."""
    scores = scores.copy()
    scores[run.interactions.user_items.nonzero()] = -np.inf
    return -np.sort(-scores, axis=1)[:, :TOP_N]


def _published_scores(run, name: str, scores: np.ndarray) -> np.ndarray:
    """The expected scores of the items a model published for each user, in rank order."""
    lists = run.recommendations(name).sort_values(["user_id", "rank"])
    users = run.interactions.users.to_internal(lists["user_id"].tolist())
    items = run.interactions.items.to_internal(lists["item_id"].tolist())
    assert (lists.groupby("user_id").size() == TOP_N).all()
    return scores[users, items].reshape(-1, TOP_N), users.reshape(-1, TOP_N)[:, 0]


def test_a_blend_publishes_the_top_n_of_the_weighted_sum_of_its_parts_scores(published):
    _, _, _, run = published
    entry = run.manifest.models["blend"]
    scales = entry.params["scales"]
    assert set(scales) == {"als", "spectral"} and all(s > 0 for s in scales.values())
    assert entry.params["parts"] == {"als": 1.0, "spectral": 2.0} and entry.dim == 16
    weighted = 1.0 * scales["als"] * _scores(run, "als") + 2.0 * scales["spectral"] * _scores(run, "spectral")
    got, users = _published_scores(run, "blend", weighted)
    np.testing.assert_allclose(got, _expected_top(run, weighted)[users], rtol=1e-4, atol=1e-5)


def test_the_scale_brings_training_scores_to_a_root_mean_square_of_1(published):
    _, _, _, run = published
    rows, cols = run.interactions.user_items.nonzero()
    for part, scale in run.manifest.models["blend"].params["scales"].items():
        scores = _scores(run, part)[rows, cols]  # fewer pairs than the sample: every one
        assert abs(scale * np.sqrt(np.mean(scores**2)) - 1.0) < 1e-4


def test_a_blend_of_blends_scores_their_weighted_sum(published):
    _, _, _, run = published
    scales = run.manifest.models["of_blends"].params["scales"]
    weighted = scales["blend"] * _scores(run, "blend") + 0.5 * scales["als"] * _scores(run, "als")
    got, users = _published_scores(run, "of_blends", weighted)
    np.testing.assert_allclose(got, _expected_top(run, weighted)[users], rtol=1e-4, atol=1e-5)


def test_a_tiny_weight_leaves_the_other_parts_lists(published):
    _, _, _, run = published
    als = run.recommendations("als").sort_values(["user_id", "rank"])
    mostly = run.recommendations("als_mostly").sort_values(["user_id", "rank"])
    same = (als["item_id"].to_numpy() == mostly["item_id"].to_numpy()).mean()
    assert same > 0.99, same  # only near-ties of the ALS scores may swap


def test_fold_in_of_known_users_reproduces_their_lists(published):
    _, _, frame, run = published
    users = sorted(frame["user_id"].unique())[:20]
    seen = frame[frame["user_id"].isin(users)]
    folded = run.fold_in(seen, model="blend").sort_values(["user_id", "rank"])
    lists = run.recommendations("blend")
    lists = lists[lists["user_id"].isin(users)].sort_values(["user_id", "rank"])
    assert folded["user_id"].tolist() == lists["user_id"].tolist()
    overlap = np.mean(
        [
            len(set(a) & set(b)) / TOP_N
            for (_, a), (_, b) in zip(
                folded.groupby("user_id")["item_id"], lists.groupby("user_id")["item_id"], strict=True
            )
        ]
    )
    assert overlap >= 0.8, overlap  # ALS folds a known user in close to, not exactly at, its vector
    new_user = seen[seen["user_id"] == users[0]].assign(user_id=10**9)
    assert run.fold_in(new_user, model="of_blends")["user_id"].eq(10**9).all()


def test_parts_that_fold_in_exactly_fold_a_blend_in_exactly(published):
    """spectral folds a known user in to its own vector, popular gives everyone its one
    vector: their blend folds known users in to their published lists."""
    _, _, frame, run = published
    users = sorted(frame["user_id"].unique())[:30]
    folded = run.fold_in(frame[frame["user_id"].isin(users)], model="exact_fold")
    lists = run.recommendations("exact_fold")
    lists = lists[lists["user_id"].isin(users)]
    columns = ["user_id", "rank", "item_id"]
    pd.testing.assert_frame_equal(
        folded.sort_values(columns)[columns].reset_index(drop=True),
        lists.sort_values(columns)[columns].reset_index(drop=True),
    )
    np.testing.assert_allclose(
        folded.sort_values(columns)["score"], lists.sort_values(columns)["score"], rtol=1e-4, atol=1e-5
    )


def test_a_blend_with_a_part_that_cannot_fold_in_says_which(published):
    _, _, frame, run = published
    with pytest.raises(ModelError) as caught:
        run.fold_in(frame.head(5), model="with_bpr")
    assert str(caught.value) == (
        "model with_bpr: its part bpr, a bpr model, cannot fold users in, so neither can the blend"
    )


def test_carried_parts_rebuild_the_same_blend(published):
    folder, path, _, first = published
    config = parse_config(CONFIG)
    manifest = run_local(config, path, folder / "out", run_id="r2", models=["blend"])
    assert manifest.models["als"].carried_over_from == "r1"
    assert manifest.models["spectral"].carried_over_from == "r1"
    assert manifest.models["blend"].carried_over_from is None
    assert manifest.models["blend"].fingerprint == first.manifest.models["blend"].fingerprint
    assert manifest.models["blend"].params == first.manifest.models["blend"].params
    second = recsys.open_run(folder / "out", "r2")
    np.testing.assert_array_equal(second.user_factors("blend"), first.user_factors("blend"))
    pd.testing.assert_frame_equal(
        second.recommendations("blend").drop(columns="run_id"),
        first.recommendations("blend").drop(columns="run_id"),
    )


def test_a_blends_fingerprint_covers_its_parts(published):
    _, _, _, run = published
    prepared = Prepared(input=run.manifest.input, data=run.manifest.data, seconds=0.0)
    config = parse_config(CONFIG)
    changed = parse_config(
        {**CONFIG, "models": [{**PARTS[0], "params": {"factors": 4, "iterations": 3}}, *CONFIG["models"][1:]]}
    )
    blend = {m.name: m for m in config.models}["blend"]
    assert model_fingerprint(config, blend, prepared) != model_fingerprint(changed, blend, prepared)
    also_als = {m.name: m for m in config.models}["with_bpr"]
    spectral = {m.name: m for m in config.models}["spectral"]
    assert model_fingerprint(config, spectral, prepared) == model_fingerprint(changed, spectral, prepared)
    assert model_fingerprint(config, also_als, prepared) != model_fingerprint(changed, also_als, prepared)


def test_a_refit_run_measures_the_blend_on_the_split(tmp_path):
    """On a run that refits, the blend on the split is made of the parts trained on the
    split, and is ranked against the held-out interactions; models side by side."""
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=4)
    config = {
        **CONFIG,
        "models": [
            *PARTS,
            {"name": "blend", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 1.0}}},
        ],
        "evaluate": {"k": [5], "split": {"method": "random", "fraction": 0.25}},
        "run": {"parallel_models": 2},
    }
    run = recsys.run_pipeline(frame, config, output=tmp_path / "out", run_id="refit")
    ranking = run.manifest.models["blend"].evaluation.ranking
    assert ranking.users > 0 and 0 < ranking["recall@5"] <= 1
    assert run.manifest.input.interactions == len(frame[["user_id", "item_id"]].drop_duplicates())
    # the blend alone again: its parts on the split are gone with the first run, so they
    # are trained again rather than carried over
    again = run_local(parse_config(config), frame, tmp_path / "out", run_id="again", models=["blend"])
    assert {m.carried_over_from for m in again.models.values()} == {None}
    assert again.models["blend"].evaluation.ranking == ranking


def _refused(models: list[dict]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": models}, "c.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "blend, extra, problem",
    [
        (
            {"parts": {"als": 1.0, "svd": 1.0}},
            [],
            "models.1.params.parts.svd: no model named 'svd' in the config",
        ),
        (
            {"parts": {"als": 1.0, "b": 1.0}},
            [],
            "models.1.params.parts.b: a blend cannot be a part of itself",
        ),
        (
            {"parts": {"c": 1.0}},
            [{"name": "c", "type": "blend", "params": {"parts": {"b": 1.0, "als": 1.0}}}],
            "models.1.params.parts.c: blends b -> c -> b form a cycle",
        ),
        (
            {"parts": {"p": 1.0}},
            [{"name": "p", "type": "precomputed", "params": {"items": "v.parquet"}}],
            "models.1.params.parts.p: the precomputed model p has no user vectors (params.users) to blend",
        ),
        (
            {"parts": {"als": float("inf")}},
            [],
            "models.1.params.parts: the weight of als must be finite and > 0",
        ),
        ({"parts": {"als": 0}}, [], "models.1.params.parts: the weight of als must be finite and > 0"),
        (
            {"parts": {"als": float("nan")}},
            [],
            "models.1.params.parts: the weight of als must be finite and > 0",
        ),
        ({"parts": {}}, [], "models.1.params.parts: a blend needs at least one part"),
        ({}, [], "missing key 'models.1.params.parts'"),
        (
            {"parts": {"als": 1.0}, "scales": {"als": 2.0}},
            [],
            "models.1.params.scales: recorded by the run from the parts' scores, not set",
        ),
    ],
)
def test_a_config_that_cannot_make_a_blend_is_refused_in_one_line(blend, extra, problem):
    message = _refused([PARTS[0], {"name": "b", "type": "blend", "params": blend}, *extra])
    assert message.startswith("c.yaml: invalid config: ") and problem in message, message


def test_a_blend_space_names_its_parts():
    with pytest.raises(ConfigError, match="parts: not a part of the blend b"):
        parse_config(
            {
                "models": [PARTS[0], {"name": "b", "type": "blend", "params": {"parts": {"als": 1.0}}}],
                "tune": {"space": {"b": {"parts": [1]}}},
            }
        )


def test_a_blend_under_prefect_with_models_side_by_side(prefect_harness, tmp_path):
    """The flow runs the blend's tasks after its parts' (models side by side, on the split
    first): the same lists as in one process."""
    import yaml

    from flows.pipeline import pipeline_flow

    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=4)
    config = {
        **CONFIG,
        "models": [
            *PARTS,
            {"name": "blend", "type": "blend", "params": {"parts": {"als": 1.0, "spectral": 1.0}}},
        ],
        "evaluate": {"k": [5], "split": {"method": "random", "fraction": 0.25}},
        "run": {"parallel_models": 2},
    }
    frame.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = pipeline_flow(
        config_path=str(tmp_path / "c.yaml"),
        interactions=str(tmp_path / "t.parquet"),
        output=str(tmp_path / "flow"),
        run_id="flow",
    )
    assert manifest["models"]["blend"]["evaluation"]["ranking"]["users"] > 0
    local = recsys.run_pipeline(frame, {**config, "run": {"parallel_models": 1}}, output=tmp_path / "local")
    flow = recsys.open_run(tmp_path / "flow")
    pd.testing.assert_frame_equal(
        flow.recommendations("blend").drop(columns="run_id"),
        local.recommendations("blend").drop(columns="run_id"),
    )
