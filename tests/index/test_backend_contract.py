"""The contract every index backend of the registry passes (a new backend inherits it):
agreement with brute force, seen-item exclusion, short and empty results, a manifest
entry that round-trips, refusal of corrupt files. The dummy backend of
``dummy_backend.py`` shows that a backend in one file joins the registry, the config,
the manifest and a whole run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pydantic import TypeAdapter

from recsys import storage
from recsys.errors import AnnIndexError, RecsysError, RunError
from recsys.index import BACKENDS, BuildContext, ExactIndex, IndexEntry
from recsys.index.annoy_index import AnnoySettings
from recsys.recommend import search_all
from tests.index.dummy_backend import StrideBackend, StrideIndex

ENTRY = TypeAdapter(IndexEntry)
K = 10


@pytest.fixture
def with_dummy(monkeypatch):
    monkeypatch.setitem(BACKENDS, "stride", StrideBackend())


def _vectors(n_items=400, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, dim))
    items = centers[rng.integers(0, 8, n_items)] + 0.3 * rng.normal(size=(n_items, dim))
    queries = centers[rng.integers(0, 8, 50)] + 0.3 * rng.normal(size=(50, dim))
    return items.astype(np.float32), queries.astype(np.float32)


def _cases():
    """Every (backend, metric) the backend serves, the dummy backend included."""
    backends = {**BACKENDS, "stride": StrideBackend()}
    return [
        (name, metric)
        for name, backend in backends.items()
        for metric in ("dot", "angular")
        if backend.supports(metric)
    ]


def _built(tmp_path, name, metric, items):
    """Build one backend's index for one metric (what the index stage does), with the
    angular Annoy index built first where a backend uses it; returns (entry, index)."""
    backend = BACKENDS[name]
    built = {}
    paths = {}

    def context(for_metric, family):
        return BuildContext(
            model="m",
            metric=for_metric,
            item_factors=items,
            path_for=lambda suffix: tmp_path / f"{for_metric}.{suffix}",
            relative=lambda path: path.relative_to(tmp_path).as_posix(),
            seed=1,
            settings=AnnoySettings(n_trees=20) if family == "annoy" else None,
            built=built,
        )

    if metric == "dot":
        built[("annoy", "angular")] = BACKENDS["annoy"].build(context("angular", "annoy"), K)
    made = backend.build(context(metric, backend.family), K)
    if made is None:  # exact: nothing to build
        return ENTRY.validate_python({"backend": name, "metric": metric, "reason": "contract test"}), paths
    value = made.values[-1]  # the most thorough setting
    fields = {**made.fields, **backend.serve(made, value)}
    entry = backend.entry(metric=metric, reason="contract test", files=made.files, **fields)
    return ENTRY.validate_python(ENTRY.dump_python(entry, mode="json")), paths


def _open(tmp_path, entry, items):
    return BACKENDS[entry.backend].open(entry, items, lambda relative: tmp_path / relative, None)


@pytest.mark.parametrize(("name", "metric"), _cases())
def test_agrees_with_brute_force(tmp_path, with_dummy, name, metric):
    items, queries = _vectors()
    entry, _ = _built(tmp_path, name, metric, items)
    index = _open(tmp_path, entry, items)
    ids, _ = index.search(queries, K, search_k=entry.query_search_k)
    exact_ids, _ = ExactIndex(items, metric).search(queries, K)
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, exact_ids, strict=True)])
    assert overlap >= 0.9, f"{name} {metric}: recall@{K} {overlap:.3f} at its most thorough setting"


@pytest.mark.parametrize(("name", "metric"), _cases())
def test_never_returns_an_excluded_item_and_fills_short_rows(tmp_path, with_dummy, name, metric):
    items, queries = _vectors(n_items=60)
    entry, _ = _built(tmp_path, name, metric, items)
    index = _open(tmp_path, entry, items)
    rng = np.random.default_rng(3)
    exclude = sp.csr_matrix((rng.random((len(queries), len(items))) < 0.3).astype(np.float32))
    ids, _ = search_all(index, queries, K, exclude, items, entry.query_search_k)
    for row in range(len(queries)):
        assert not set(ids[row]) & set(exclude[row].indices)
        assert (ids[row] >= 0).all() and len(set(ids[row])) == K
    # only 3 items left for the first query: exactly those 3, then empty places
    only = np.ones((1, len(items)), dtype=np.float32)
    only[0, [5, 17, 33]] = 0
    short_ids, short_scores = search_all(
        index, queries[:1], K, sp.csr_matrix(only), items, entry.query_search_k
    )
    assert set(short_ids[0][:3]) == {5, 17, 33} and (short_ids[0][3:] == -1).all()
    assert np.isneginf(short_scores[0][3:]).all()


@pytest.mark.parametrize(("name", "metric"), _cases())
def test_manifest_entry_round_trips(tmp_path, with_dummy, name, metric):
    items, _ = _vectors(n_items=100)
    entry, _ = _built(tmp_path, name, metric, items)
    dumped = ENTRY.dump_python(entry, mode="json")
    again = ENTRY.validate_python(dumped)
    assert again == entry and type(again) is type(entry) and again.backend == name
    with pytest.raises(ValueError, match="unknown index backend"):
        ENTRY.validate_python({**dumped, "backend": "nope"})
    with pytest.raises(ValueError):
        ENTRY.validate_python({**dumped, "unexpected_key": 1})


@pytest.mark.parametrize(("name", "metric"), _cases())
def test_corrupt_files_are_refused(tmp_path, with_dummy, name, metric):
    items, _ = _vectors(n_items=100)
    entry, _ = _built(tmp_path, name, metric, items)
    borrowed = getattr(entry, "candidates_from", None)  # a file another entry lists
    files = entry.paths() + ([borrowed.path] if borrowed is not None else [])
    if not files:  # nothing of its own to corrupt: it serves from the (verified) item factors
        assert _open(tmp_path, entry, items).n_items == len(items)
        return
    listed = storage.hash_tree(tmp_path)
    for relative in files:
        path = tmp_path / relative
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
        with pytest.raises(RunError, match="checksum"):
            storage.verified_path(tmp_path, relative, **listed[relative])
        path.write_bytes(bytes(data[:-8]))  # truncated: refused by the backend itself too
        with pytest.raises((AnnIndexError, RecsysError)):
            _open(tmp_path, entry, items)
        break


def test_registry_values_are_config_choices(with_dummy):
    from recsys.config import parse_config
    from recsys.errors import ConfigError

    models = [{"name": "m", "type": "als"}]
    config = parse_config({"models": models, "index": {"backend": "stride"}})
    assert config.index.backend == "stride" and config.index.settings("stride").strides == [4, 2, 1]
    config = parse_config({"models": models, "index": {"backend": "stride", "stride": {"stride": 2}}})
    assert config.index.settings("stride").fixed("dot") == 2
    assert config.to_dict()["index"]["stride"] == {"strides": [4, 2, 1], "stride": 2}
    assert parse_config(config.to_dict()) == config  # the manifest's config reads back
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        parse_config({"models": models, "index": {"backend": "nope"}})
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": models, "index": {"stride": {"strid": 2}}}, "x.yaml")
    assert str(caught.value) == (
        "x.yaml: invalid config: unknown key 'index.stride.strid' (index.stride keys: strides, stride)"
    )
    with pytest.raises(ConfigError, match=r"^x.yaml: invalid config: index.stride.stride: .*greater than"):
        parse_config({"models": models, "index": {"stride": {"stride": 0}}}, "x.yaml")


def test_a_new_backend_serves_a_whole_run(tmp_path, with_dummy):
    """Registered in one file, the dummy backend is chosen by the config with its own
    section, swept, its file published and listed with its checksum in the manifest,
    reopened by lookups and publishes the exact lists (stride 1)."""
    import recsys
    from recsys.api import open_run
    from recsys.data import generate_interactions

    frame = generate_interactions(n_users=120, n_items=80, n_clusters=4, seed=2)
    config = {
        "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
        "index": {"backend": "stride", "stride": {"strides": [3, 1]}},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "evaluate": {"target_recall": 0.99},
    }
    recsys.run_pipeline(frame, config, output=tmp_path / "a", run_id="a")
    exact = recsys.run_pipeline(frame, {**config, "index": {"backend": "exact"}}, output=tmp_path / "b")
    run = open_run(tmp_path / "a")
    assert run.run_id == "a"
    entries = run.manifest.models["als"].indices
    assert {entry.backend for entry in entries.values()} == {"stride"}
    assert {entry.stride for entry in entries.values()} == {1}  # the sweep reached the target at 1
    assert [point["stride"] for point in entries["dot"].tuning["stride"].curve] == [3, 1]
    for entry in entries.values():
        recorded = entry.files["stride"]
        assert entry.paths() == [recorded.path] and recorded.path.endswith(".npy")
        listed = run.manifest.files[recorded.path]
        assert (listed.sha256, listed.size_bytes) == (recorded.sha256, recorded.size_bytes)
        assert storage.file_sha256(run.file(recorded.path)) == recorded.sha256
    for kind in ("recommendations", "similar_items"):
        ours = getattr(run, kind)("als").drop(columns="run_id")
        theirs = getattr(exact, kind)("als").drop(columns="run_id")
        pd.testing.assert_frame_equal(ours[ours.columns[:3]], theirs[theirs.columns[:3]])
    user = run.interactions.users.ids[0]
    assert run.recommend([user])["item_id"].tolist() == exact.recommend([user])["item_id"].tolist()
    assert isinstance(run.index("als", "dot"), StrideIndex)  # answered through the dummy's file
    (tmp_path / "a" / "runs" / "a" / entries["dot"].files["stride"].path).write_bytes(b"")
    with pytest.raises(RecsysError):  # its file truncated: refused in one line
        open_run(tmp_path / "a").recommend([user])
