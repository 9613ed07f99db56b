"""Per-run item rules (recommend.include_items / exclude_items): applied inside the search,
before the top N, so that lists stay full; the same rules in the published lists,
Run.recommend, fold_in and the popular fallback, with either index backend."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import recsys
from recsys import recommend, storage
from recsys.config import load_config, parse_config
from recsys.data import generate_interactions
from recsys.errors import ConfigError, InputError
from recsys.index import AnnoyIndex, ExactIndex, build_annoy_index
from recsys.recommend import (
    RestrictedIndex,
    allowed_by_table,
    allowed_items,
    item_rules_table,
    search_all,
)

TOP_N = 10


def config(backend: str = "annoy", **rules) -> dict:
    return {
        "models": [{"name": "als", "type": "als", "params": {"factors": 16, "iterations": 5}}],
        "index": {"backend": backend, "n_trees": 10},
        "recommend": {"top_n": TOP_N, **rules},
        "similar_items": {"top_n": 5},
    }


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_interactions(n_users=200, n_items=120, n_clusters=4, seed=1)


@pytest.fixture(scope="module")
def seen(frame) -> pd.Series:
    return frame.groupby("user_id")["item_id"].apply(set)


@pytest.fixture(scope="module")
def popular(frame) -> list[int]:
    users_per_item = frame.groupby("item_id")["user_id"].nunique()
    return users_per_item.sort_values(ascending=False, kind="stable").index[:10].tolist()


@pytest.fixture(scope="module")
def chosen(frame) -> list[int]:
    """30 items of the run, picked at random."""
    items = np.sort(frame["item_id"].unique())
    return np.random.default_rng(5).choice(items, 30, replace=False).tolist()


def _run(tmp_path_factory, frame, cfg, name="rules"):
    root = tmp_path_factory.mktemp(name) / "out"
    return recsys.run_pipeline(frame, cfg, output=root, run_id="r1")


def _check_lists(lists: pd.DataFrame, seen: pd.Series, allowed: set, top_n: int = TOP_N) -> None:
    """Only allowed unseen items, and every user's list as long as the allowed items the
    user has not seen permit (top_n where there are enough)."""
    assert set(lists["item_id"]) <= allowed
    sizes = lists.groupby("user_id").size()
    assert set(sizes.index) == set(seen.index)
    for user, items in lists.groupby("user_id")["item_id"]:
        assert not set(items) & seen[user]
        assert len(items) == min(top_n, len(allowed - seen[user]))
        assert items.is_unique
    ranks = lists.groupby("user_id")["rank"].apply(list)
    assert all(r == list(range(1, len(r) + 1)) for r in ranks)


# ---------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("backend", ["annoy", "exact"])
def test_exclude_the_most_popular_items(tmp_path_factory, frame, seen, popular, backend):
    run = _run(tmp_path_factory, frame, config(backend, exclude_items=popular))
    lists = run.recommendations()
    assert not lists["item_id"].isin(popular).any()
    assert (lists.groupby("user_id").size() == TOP_N).all()  # full lists, never cut short
    _check_lists(lists, seen, set(frame["item_id"]) - set(popular))
    # recorded in the run, listed with a checksum
    assert run.manifest.data.item_rules == "data/item_rules.parquet"
    assert run.manifest.data.item_rules in run.manifest.files
    recorded = pd.read_parquet(run.file(run.manifest.data.item_rules))
    assert sorted(recorded["item_id"]) == sorted(popular) and set(recorded["rule"]) == {"exclude"}
    # the ranking of similar items is not restricted
    assert run.similar_items()["similar_item_id"].isin(popular).any()


@pytest.mark.parametrize("backend", ["annoy", "exact"])
def test_include_list(tmp_path_factory, frame, seen, chosen, backend):
    run = _run(tmp_path_factory, frame, config(backend, include_items=chosen))
    lists = run.recommendations()
    assert lists["item_id"].isin(chosen).all()
    _check_lists(lists, seen, set(chosen))
    assert (lists.groupby("user_id").size() == TOP_N).sum() > 0.9 * len(seen)


def test_include_and_exclude(tmp_path_factory, frame, seen, chosen, popular):
    excluded = chosen[:5] + popular
    run = _run(tmp_path_factory, frame, config("annoy", include_items=chosen, exclude_items=excluded))
    lists = run.recommendations()
    allowed = set(chosen) - set(excluded)
    _check_lists(lists, seen, allowed)
    mask = run.allowed_items
    assert set(run.interactions.items.to_external(np.flatnonzero(mask))) == allowed


def test_a_list_longer_than_what_is_allowed_gives_shorter_lists(tmp_path_factory, frame, seen, chosen):
    few = chosen[:12]
    run = _run(tmp_path_factory, frame, config("annoy", include_items=few))
    lists = run.recommendations()
    _check_lists(lists, seen, set(few))
    assert (lists.groupby("user_id").size() < TOP_N).any()  # 12 items minus the seen ones


def test_unknown_ids_are_ignored_and_counted(tmp_path_factory, frame, seen, chosen, caplog):
    listed = chosen + [10**9, -5, "not-an-id", "77777"]
    with caplog.at_level(logging.INFO, logger="recsys"):
        run = _run(tmp_path_factory, frame, config("exact", include_items=listed))
    assert "recommend.include_items: 30 of 34 listed item ids are items of the run" in caplog.text
    assert "4 unknown id(s) ignored" in caplog.text
    _check_lists(run.recommendations(), seen, set(chosen))
    recorded = pd.read_parquet(run.file(run.manifest.data.item_rules))
    assert sorted(recorded["item_id"]) == sorted(chosen)


def test_an_include_list_matching_nothing_is_one_config_error(tmp_path, frame):
    with pytest.raises(ConfigError) as error:
        recsys.run_pipeline(frame, config("exact", include_items=[10**9, 10**9 + 1]), output=tmp_path)
    message = str(error.value)
    assert "recommend.include_items" in message and "none of its 2 item ids" in message
    assert "\n" not in message
    assert storage.current_run_id(tmp_path) is None


def test_rules_that_leave_no_item_are_one_config_error(tmp_path, frame, chosen):
    with pytest.raises(ConfigError, match="leave no item"):
        recsys.run_pipeline(
            frame, config("exact", include_items=chosen[:3], exclude_items=chosen[:3]), output=tmp_path
        )


def test_lists_from_tables_resolve_against_the_config_folder(
    tmp_path, monkeypatch, frame, seen, chosen, popular
):
    folder = tmp_path / "conf"
    (folder / "lists").mkdir(parents=True)
    pd.DataFrame({"item_id": chosen, "note": "x"}).to_csv(folder / "lists" / "allow.csv", index=False)
    pd.DataFrame({"item_id": popular[:3]}).to_parquet(folder / "lists" / "deny.parquet")
    (folder / "config.yaml").write_text(
        "models:\n"
        "  - {name: als, type: als, params: {factors: 16, iterations: 5}}\n"
        "index: {backend: exact}\n"
        f"recommend: {{top_n: {TOP_N}, include_items: lists/allow.csv, exclude_items: lists/deny.parquet}}\n"
        "similar_items: {top_n: 5}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(folder / "config.yaml")
    assert cfg.recommend.include_items == str((folder / "lists" / "allow.csv").resolve())
    run = recsys.run_pipeline(frame, cfg, output=tmp_path / "out")
    _check_lists(run.recommendations(), seen, set(chosen) - set(popular[:3]))


def test_a_table_without_an_item_id_column_is_a_config_error(tmp_path, frame):
    table = tmp_path / "allow.csv"
    pd.DataFrame({"item": [1, 2]}).to_csv(table, index=False)
    with pytest.raises(ConfigError, match=r"recommend.include_items: .*allow.csv has no item_id column"):
        recsys.run_pipeline(frame, config("exact", include_items=str(table)), output=tmp_path / "out")


def test_a_missing_table_names_the_key(tmp_path, frame):
    with pytest.raises(InputError, match=r"recommend.exclude_items: .*deny.csv: file not found"):
        recsys.run_pipeline(frame, config("exact", exclude_items=str(tmp_path / "deny.csv")), output=tmp_path)


def test_config_accepts_lists_and_paths_only():
    assert parse_config(config(include_items=[1, "a"])).recommend.include_items == [1, "a"]
    for bad in ([1.5], [True], "", {"a": 1}):
        with pytest.raises(ConfigError, match="recommend.include_items"):
            parse_config(config(include_items=bad))


@pytest.mark.parametrize("backend", ["annoy", "exact"])
def test_lookups_answer_with_the_same_rules(tmp_path_factory, frame, seen, chosen, popular, backend):
    excluded = popular[:3]
    run = _run(tmp_path_factory, frame, config(backend, include_items=chosen, exclude_items=excluded))
    allowed = set(chosen) - set(excluded)
    lists = run.recommendations()
    users = lists["user_id"].unique()[:40].tolist()
    answer = run.recommend(users)
    expected = lists[lists["user_id"].isin(users)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        answer[["user_id", "item_id", "rank"]], expected[["user_id", "item_id", "rank"]]
    )
    np.testing.assert_allclose(answer["score"], expected["score"], rtol=1e-5)
    # reopened from the folder: the rules come from the run, not from a config
    again = recsys.open_run(run.dir.parent.parent, "r1")
    assert again.recommend(users)["item_id"].tolist() == answer["item_id"].tolist()
    # fold-in of a new user, and the popular fallback for unknown users
    history = frame[frame["user_id"] == users[0]].assign(user_id=-1)
    folded = run.fold_in(history)
    assert set(folded["item_id"]) <= allowed and not set(folded["item_id"]) & seen[users[0]]
    assert len(folded) == min(TOP_N, len(allowed - seen[users[0]]))
    fallback = run.recommend([10**9], fallback="popular")
    assert len(fallback) == TOP_N and set(fallback["item_id"]) <= allowed
    assert not set(run.popular(n=TOP_N)["item_id"]) <= allowed  # popular() itself is unrestricted


def test_string_ids(tmp_path_factory):
    frame = generate_interactions(n_users=150, n_items=100, n_clusters=4, string_ids=True, seed=2)
    seen = frame.groupby("user_id")["item_id"].apply(set)
    denied = sorted(frame["item_id"].unique())[:20]
    run = _run(tmp_path_factory, frame, config("annoy", exclude_items=denied + ["nope"]), "strings")
    _check_lists(run.recommendations(), seen, set(frame["item_id"]) - set(denied))


def test_a_refit_run_applies_the_rules(tmp_path_factory, frame, seen, popular):
    cfg = config("annoy", exclude_items=popular)
    cfg["evaluate"] = {"split": {"method": "random", "fraction": 0.2}}
    run = _run(tmp_path_factory, frame, cfg, "refit")
    _check_lists(run.recommendations(), seen, set(frame["item_id"]) - set(popular))
    assert run.manifest.models["als"].evaluation.ranking is not None


def test_without_rules_nothing_is_recorded(tmp_path_factory, frame):
    run = _run(tmp_path_factory, frame, config("exact"), "plain")
    assert run.manifest.data.item_rules is None and run.allowed_items is None
    assert not (run.dir / "data" / "item_rules.parquet").exists()


# ---------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(400, 8)).astype(np.float32)
    queries = rng.normal(size=(300, 8)).astype(np.float32)
    seen = sp.random(300, 400, density=0.05, format="csr", random_state=1, dtype=np.float32)
    seen.data[:] = 1.0
    return items, queries, seen


def _truth(items, queries, seen, allowed, n):
    scores = queries @ items.T
    scores[seen.nonzero()] = -np.inf
    scores[:, ~allowed] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return order, np.take_along_axis(scores, order, axis=1)


def _masks(n_items: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "deny-few": allowed_items(n_items, exclude=rng.choice(n_items, 15, replace=False)),
        "deny-half": allowed_items(n_items, exclude=rng.choice(n_items, 200, replace=False)),
        "allow-few": allowed_items(n_items, include=rng.choice(n_items, 25, replace=False)),
    }


@pytest.mark.parametrize("kind", ["deny-few", "deny-half", "allow-few"])
@pytest.mark.parametrize("extra", [recommend.EXACT_EXTRA, 0])
def test_exact_search_honours_the_mask(vectors, kind, extra, monkeypatch):
    """Asked for n plus every denied item, or over a copy of the allowed items: the same."""
    monkeypatch.setattr(recommend, "EXACT_EXTRA", extra)
    items, queries, seen = vectors
    allowed = _masks(len(items))[kind]
    n = 20
    ids, scores = search_all(ExactIndex(items, "dot"), queries, n, seen, items, allowed=allowed)
    truth, truth_scores = _truth(items, queries, seen, allowed, n)
    valid = np.isfinite(truth_scores)
    assert ((ids >= 0) == valid).all()
    # float32 products of 8-dimensional rows of norm ~3 round to within ~1e-6 whatever the
    # result's size: a score near 0 is compared to that, not relatively (the BLAS kernel,
    # blocked or not, decides the last bits)
    np.testing.assert_allclose(scores[valid], truth_scores[valid], rtol=1e-5, atol=1e-6)
    assert allowed[ids[ids >= 0]].all()


@pytest.mark.parametrize("kind", ["deny-few", "deny-half", "allow-few"])
@pytest.mark.parametrize("metric", ["dot", "angular"])
def test_annoy_search_honours_the_mask_and_fills_rows(tmp_path, vectors, kind, metric):
    items, queries, seen = vectors
    build_annoy_index(items, metric, tmp_path / "i.ann", n_trees=10, seed=1)
    index = AnnoyIndex(tmp_path / "i.ann", metric=metric)
    allowed = _masks(len(items))[kind]
    n = 20
    ids, scores = search_all(index, queries, n, seen, items, search_k=2000, allowed=allowed)
    assert allowed[ids[ids >= 0]].all()
    for row in range(len(queries)):
        row_ids = ids[row][ids[row] >= 0]
        assert not set(row_ids) & set(seen[row].indices) and len(set(row_ids)) == len(row_ids)
        left = int(allowed.sum()) - int(allowed[seen[row].indices].sum())
        assert len(row_ids) == min(n, left)  # full unless fewer allowed unseen items remain
        assert (np.diff(scores[row][: len(row_ids)]) <= 1e-6).all()
    exact, _ = search_all(ExactIndex(items, metric), queries, n, seen, items, allowed=allowed)
    found = np.mean([len(set(a) & set(b)) / n for a, b in zip(ids, exact, strict=True)])
    assert found > 0.8


def test_restricted_index_answers_in_catalog_ids(vectors):
    items, queries, seen = vectors
    allowed = allowed_items(len(items), include=np.array([3, 50, 51, 399]))
    index = RestrictedIndex(items, "dot", allowed)
    ids, scores = index.search(queries[:5], 6, exclude=seen[:5])
    assert set(ids[ids >= 0]) <= {3, 50, 51, 399}
    assert (ids[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all()
    nothing = RestrictedIndex(items, "dot", np.zeros(len(items), dtype=bool))
    assert (nothing.search(queries[:2], 3)[0] == -1).all()


def test_search_checks_the_mask_size(vectors):
    items, queries, seen = vectors
    with pytest.raises(ValueError, match="one flag per item"):
        search_all(ExactIndex(items, "dot"), queries, 5, seen, items, allowed=np.ones(3, dtype=bool))


def test_an_include_list_may_match_nothing_in_an_evaluation_part():
    from recsys.data.interactions import IdMap

    items = IdMap.from_ids(np.array([10, 20, 30]))
    table = item_rules_table(items, np.array([], dtype=np.int64), None)
    assert not allowed_by_table(table, items).any()  # allows none, not all
    table = item_rules_table(items, None, np.array([1]))
    assert allowed_by_table(table, items).tolist() == [True, False, True]
    assert allowed_by_table(item_rules_table(items, None, None), items) is None
