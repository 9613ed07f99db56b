"""The backends of the ``ann`` extra (faiss, hnswlib) beyond the shared contract: the one
line when the extra is missing, files that round-trip and are refused when damaged,
exclusion of many seen items, and ``auto`` serving them where they win."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pydantic import TypeAdapter

from recsys import storage
from recsys.config import parse_config
from recsys.errors import AnnIndexError, ConfigError
from recsys.index import BACKENDS, BuildContext, ExactIndex, IndexEntry
from recsys.index.base import search_excluding
from recsys.index.faiss_index import FaissBackend
from recsys.index.hnsw_index import HnswBackend
from recsys.index.registry import backend_choices, missing_extra
from recsys.recommend import search_all

ENTRY = TypeAdapter(IndexEntry)
LIBRARIES = ["faiss", "hnswlib"]
K = 10


def test_the_extra_is_installed_here():
    """The test environment installs the ann extra (make setup): its backends are tested,
    never skipped."""
    import faiss  # noqa: F401
    import hnswlib  # noqa: F401

    assert missing_extra("faiss") is None and missing_extra("hnswlib") is None


def _clustered(n_items, dim=16, n_queries=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    items = centres[rng.integers(0, 12, n_items)] + 0.4 * rng.normal(size=(n_items, dim))
    items *= rng.lognormal(0, 0.5, size=(n_items, 1))
    queries = centres[rng.integers(0, 12, n_queries)] + 0.4 * rng.normal(size=(n_queries, dim))
    return items.astype(np.float32), queries.astype(np.float32)


def _build(tmp_path, name, metric, items, seed=1, settings=None):
    """(entry at the most thorough setting, the built index at it)."""
    backend = BACKENDS[name]
    context = BuildContext(
        model="m",
        metric=metric,
        item_factors=items,
        path_for=lambda suffix: tmp_path / f"{metric}.{suffix}",
        relative=lambda path: path.relative_to(tmp_path).as_posix(),
        seed=seed,
        settings=settings,
    )
    made = backend.build(context, K)
    value = made.values[-1]
    entry = backend.entry(metric=metric, reason="test", files=made.files, **backend.serve(made, value))
    return ENTRY.validate_python(ENTRY.dump_python(entry, mode="json")), made.index_for(value)


def _open(tmp_path, entry, items):
    return BACKENDS[entry.backend].open(entry, items, lambda relative: tmp_path / relative, None)


@pytest.mark.parametrize("name", LIBRARIES)
def test_a_missing_package_is_one_line_and_auto_goes_on(tmp_path, monkeypatch, name):
    backend = BACKENDS[name]
    monkeypatch.setattr(type(backend), "requires", ("recsys_no_such_module",))
    line = f"{name} needs the 'ann' extra: pip install 'recsys[ann]'"
    assert name in backend_choices()  # the registry and its choices keep working
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": [{"name": "m", "type": "als"}], "index": {"backend": name}}, "x.yaml")
    assert str(caught.value) == f"x.yaml: invalid config: index.backend: {line}"
    parse_config({"models": [{"name": "m", "type": "als"}], "index": {"backend": "auto"}})
    items, _ = _clustered(100)
    context = BuildContext("m", "dot", items, lambda suffix: tmp_path / f"dot.{suffix}", str, 1)
    assert backend.build(context, K) is None  # auto: no strategy from it
    assert not list(tmp_path.iterdir())
    entry = ENTRY.validate_python(
        {
            "backend": name,
            "metric": "dot",
            "reason": "test",
            "files": {
                name: {
                    "path": "dot.x",
                    "library": name,
                    "n_items": 100,
                    "dim": 17,
                    "seed": 1,
                    "size_bytes": 1,
                    "sha256": "0" * 64,
                    "build_seconds": 0.1,
                }
            },
            **({"nprobe": 1} if name == "faiss" else {"ef": 10}),
        }
    )
    with pytest.raises(AnnIndexError) as opened:
        _open(tmp_path, entry, items)
    assert str(opened.value) == f"index backend {line}"


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize("metric", ["dot", "angular"])
def test_file_round_trip_recorded_and_reproducible(tmp_path, name, metric):
    items, queries = _clustered(3000)
    (tmp_path / "a").mkdir()
    entry, built = _build(tmp_path / "a", name, metric, items)
    recorded = entry.files[name]
    path = tmp_path / "a" / recorded.path
    assert entry.paths() == [recorded.path] and recorded.n_items == len(items)
    assert recorded.size_bytes == path.stat().st_size and recorded.sha256 == storage.file_sha256(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    opened = _open(tmp_path / "a", entry, items)
    ids, scores = opened.search(queries, K)
    built_ids, built_scores = built.search(queries, K)
    np.testing.assert_array_equal(ids, built_ids)
    np.testing.assert_allclose(scores, built_scores, rtol=1e-6)
    exact_ids, exact_scores = ExactIndex(items, metric).search(queries, K)
    np.testing.assert_allclose(  # scores are the metric's own (inner product or cosine)
        np.sort(scores, axis=1), np.sort(exact_scores, axis=1), rtol=1e-4, atol=1e-5
    )
    (tmp_path / "b").mkdir()
    again, _ = _build(tmp_path / "b", name, metric, items)
    assert again.files[name].sha256 == recorded.sha256  # same vectors and seed, same file


@pytest.mark.parametrize(
    ("name", "section", "recorded", "fixed"),
    [
        ("faiss", {"nlist": 4, "nprobe": 2}, {"nlist": 4}, ("nprobe", 2)),
        ("hnswlib", {"M": 8, "ef_construction": 40, "ef": 30}, {"M": 8, "ef_construction": 40}, ("ef", 30)),
    ],
)
def test_settings_from_the_config_section_build_and_serve(tmp_path, name, section, recorded, fixed):
    """``index.<family>`` is read through the backend's settings model: its build settings
    are the file's (recorded with it), a fixed search setting is the only value tried."""
    config = parse_config({"models": [{"name": "m", "type": "als"}], "index": {name: section}})
    settings = config.index.settings(name)
    items, _ = _clustered(600)
    backend = BACKENDS[name]
    context = BuildContext(
        "m", "dot", items, lambda suffix: tmp_path / f"dot.{suffix}", lambda p: p.name, 1, settings=settings
    )
    made = backend.build(context, K)
    assert made.configured == fixed[1] and made.values == [fixed[1]]
    assert recorded.items() <= made.files[name].params.items()
    entry = backend.entry(metric="dot", reason="test", files=made.files, **backend.serve(made, fixed[1]))
    assert entry.setting == fixed
    assert _open(tmp_path, entry, items).search(items[:5], K)[0].shape == (5, K)
    with pytest.raises(ConfigError, match=f"unknown key 'index.{name}.nope'"):
        parse_config({"models": [{"name": "m", "type": "als"}], "index": {name: {"nope": 1}}})


@pytest.mark.parametrize("name", LIBRARIES)
def test_damaged_or_mismatched_files_are_refused(tmp_path, name):
    items, _ = _clustered(500)
    entry, _ = _build(tmp_path, name, "dot", items)
    recorded = entry.files[name]
    path = tmp_path / recorded.path
    data = path.read_bytes()
    with pytest.raises(AnnIndexError, match="dimension"):
        _open(tmp_path, entry, np.ones((len(items), items.shape[1] + 3), dtype=np.float32))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AnnIndexError, match="truncated or replaced"):
        _open(tmp_path, entry, items)
    path.unlink()
    with pytest.raises(AnnIndexError, match="not found"):
        _open(tmp_path, entry, items)
    path.write_bytes(b"\0" * len(data))  # right size, not an index: the run's checksum refuses it first
    assert storage.file_sha256(path) != recorded.sha256


@pytest.mark.parametrize("name", LIBRARIES)
def test_the_dot_and_angular_files_of_one_model_swapped_are_refused(tmp_path, name):
    """Both files of a model have the same size: each backend must still tell them apart
    (hnswlib's files have no header: the stored vectors do)."""
    items, _ = _clustered(500)
    (tmp_path / "dot").mkdir()
    (tmp_path / "angular").mkdir()
    dot, _ = _build(tmp_path / "dot", name, "dot", items)
    angular, _ = _build(tmp_path / "angular", name, "angular", items)
    dot_file = tmp_path / "dot" / dot.files[name].path
    angular_file = tmp_path / "angular" / angular.files[name].path
    dot_bytes, angular_bytes = dot_file.read_bytes(), angular_file.read_bytes()
    dot_file.write_bytes(angular_bytes)
    angular_file.write_bytes(dot_bytes)
    for folder, entry in (("dot", dot), ("angular", angular)):
        recorded = entry.files[name]
        size = (tmp_path / folder / recorded.path).stat().st_size
        swapped = entry.model_copy(update={"files": {name: recorded.model_copy(update={"size_bytes": size})}})
        with pytest.raises(AnnIndexError):
            _open(tmp_path / folder, swapped, items)


@pytest.mark.parametrize("name", LIBRARIES)
def test_exclusion_of_many_seen_items(tmp_path, name):
    """Rows excluding nothing, a few, most of the catalog, and the whole catalog but 3: no
    excluded item comes back, and at the most thorough setting the lists are exact."""
    items, queries = _clustered(400, n_queries=40)
    entry, _ = _build(tmp_path, name, "dot", items)
    index = _open(tmp_path, entry, items)
    rng = np.random.default_rng(5)
    share = np.repeat([0.0, 0.05, 0.5, 0.95], 10)[:, None]
    excluded = rng.random((len(queries), len(items))) < share
    excluded[-1] = True
    excluded[-1, [7, 70, 300]] = False
    exclude = sp.csr_matrix(excluded.astype(np.float32))
    ids, _ = index.search(queries, K, exclude=exclude)
    exact_ids, _ = ExactIndex(items, "dot").search(queries, K, exclude=exclude)
    for row in range(len(queries)):
        found = ids[row][ids[row] >= 0]
        assert not excluded[row, found].any()
        assert len(set(found)) == len(found)
    # a graph walk may come back short (-1 after what it found); the pipeline's search fills
    # such rows exactly: the last row gets exactly its 3 items left
    short_ids, short_scores = search_all(index, queries[-1:], K, exclude[-1:], items)
    assert set(short_ids[0][:3]) == {7, 70, 300} and (short_ids[0][3:] == -1).all()
    assert np.isneginf(short_scores[0][3:]).all()
    served, _ = search_all(index, queries, K, exclude, items)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(served[:-1], exact_ids[:-1], strict=True)])
    assert recall >= (1.0 if name == "faiss" else 0.97)  # faiss probes every cell here: exhaustive


def test_search_excluding_asks_for_k_plus_the_excluded_count():
    """A library that returns ids in order 0, 1, 2, ...: each row gets the first k ids it
    did not exclude, asking once per group of rows with similar counts."""
    asked = []

    def library(rows, wanted):
        asked.append((len(rows), wanted))
        ids = np.broadcast_to(np.arange(wanted), (len(rows), wanted)).copy()
        ids[:, wanted - 1] = -1  # the library's own empty place
        return ids, -ids.astype(np.float32)

    excluded = np.zeros((4, 200), dtype=np.float32)
    excluded[1, :5] = 1
    excluded[2, ::2] = 1
    excluded[3, 1] = 1
    ids, scores = search_excluding(library, np.zeros((4, 4), np.float32), 4, sp.csr_matrix(excluded), 200)
    assert ids.tolist() == [[0, 1, 2, 3], [5, 6, 7, 8], [1, 3, 5, 7], [0, 2, 3, 4]]
    assert (scores == -ids).all()
    assert sorted(asked) == [(1, 16), (1, 112), (2, 8)]  # 4 + 0 and 4 + 1 share a call of 8


def test_auto_serves_a_library_backend_where_it_wins(tmp_path):
    """A run of 60k clustered item vectors and 600 users (inner product for both lists):
    auto builds and sweeps the strategies whose estimated build is below the least whole
    cost found so far, serves the cheapest reaching the target (a library backend, cheaper
    than exact search here) and records the files it built."""
    import recsys
    from recsys.stages.runner import run_local

    items, users = _clustered(60_000, dim=32, n_queries=600, seed=3)
    for name, vectors in (("items", items), ("users", users)):
        frame = pd.DataFrame({"id": range(len(vectors)), "vector": list(vectors)})
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    config = {
        "models": [
            {
                "name": "vec",
                "type": "precomputed",
                "params": {
                    "items": str(tmp_path / "items.parquet"),
                    "users": str(tmp_path / "users.parquet"),
                },
            }
        ],
        "index": {"backend": "auto", "annoy": {"n_trees": 5}},
        "recommend": {"top_n": 10, "metric": "dot"},
        "similar_items": {"top_n": 10, "metric": "dot"},
        "evaluate": {"k": 10, "tune_queries": 300, "sample_users": 300, "sample_items": 300},
    }
    run_local(parse_config(config), None, tmp_path / "out", run_id="r")
    run = recsys.open_run(tmp_path / "out", "r")
    entry = run.manifest.models["vec"].indices["dot"]
    assert entry.backend in LIBRARIES, entry.reason
    assert entry.backend in entry.tuning and f"{entry.backend}: build " in entry.reason
    sweep = entry.tuning[entry.backend]
    assert sweep.point(sweep.chosen)["recall_at_k"] >= 0.95
    assert sweep.point(sweep.chosen)["queries_per_second"] > sweep.exact_queries_per_second
    built = [name for name in LIBRARIES if name in entry.tuning]
    for name in built:  # every file built is published and checksummed, whichever serves
        recorded = entry.files[name]
        assert storage.file_sha256(run.file(recorded.path)) == recorded.sha256
    published = run.recommendations("vec")
    ids = published.pivot(index="user_id", columns="rank", values="item_id").to_numpy()
    exact_ids, _ = ExactIndex(items, "dot").search(users, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids, strict=True)])
    assert recall >= 0.95
    assert run.index("vec", "dot").backend == entry.backend  # lookups open its file


def test_backends_are_the_registry_lines():
    assert isinstance(BACKENDS["faiss"], FaissBackend) and isinstance(BACKENDS["hnswlib"], HnswBackend)
