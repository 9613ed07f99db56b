"""Annoy indices that travel with a manifest and refuse a mismatch on load.

An Annoy file has no header: opened with another dimension or metric it may load
and answer with plausible wrong neighbours, and a truncated file loads with a wrong
item count. So every file gets a manifest (metric, dimension, items, trees, seed, size,
sha256) that is checked before Annoy touches the file: a JSON file beside it, or, in a
run, its index entry.

Scores: for ``dot`` Annoy's distance is the inner product; for ``angular`` Annoy's
distance d relates to the cosine similarity by ``cos = 1 - d**2 / 2``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import annoy  # not `from annoy import AnnoyIndex`: Dask pickles task modules
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.vectors import check_vector_rows
from recsys.errors import AnnIndexError, IndexFrozenError
from recsys.index.base import (
    Backend,
    BackendSettings,
    BuildContext,
    Built,
    IndexEntryBase,
    IndexFile,
    Metric,
    checked_size,
    publish_index,
)
from recsys.index.exact import check_query
from recsys.storage import file_sha256, write_json

MANIFEST_FORMAT = "recsys-annoy-index/1"


@dataclass(frozen=True)
class IndexManifest:
    """What an index file must be; stored as ``<file>.json``."""

    metric: str
    dim: int
    n_items: int
    n_trees: int
    seed: int
    size_bytes: int
    sha256: str
    annoy_version: str
    format: str = MANIFEST_FORMAT

    @classmethod
    def read(cls, path: Path) -> IndexManifest:
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except FileNotFoundError:
            raise AnnIndexError(f"{path}: index manifest not found") from None
        except (ValueError, TypeError) as exc:
            raise AnnIndexError(f"{path}: unreadable index manifest ({exc})") from None

    @classmethod
    def of_file(cls, record: IndexFile, metric: str) -> IndexManifest:
        """The manifest of a file a run's index entry records (the entry stands in for the
        file beside it)."""
        return cls(
            metric=metric,
            dim=record.dim,
            n_items=record.n_items,
            n_trees=int(record.params["n_trees"]),
            seed=record.seed,
            size_bytes=record.size_bytes,
            sha256=record.sha256,
            annoy_version=record.library.removeprefix("annoy "),
        )


def manifest_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".json")


def check_vectors(vectors: np.ndarray, what: str = "item vectors") -> np.ndarray:
    """float32 C-contiguous copy of vectors that are finite and have non-zero norm.

    NaN or inf vectors are accepted by Annoy and destroy recall for every item; zero
    vectors have no direction. Both are refused with the count.
    """
    return check_vector_rows(vectors, what, AnnIndexError)


class AnnoyBuilder:
    """Adds vectors with dense ids, builds once, writes the file atomically.

    Annoy cannot grow after ``build``: an item added afterwards is never found and is
    gone after save. The builder refuses it; new items mean a new index.
    """

    def __init__(self, dim: int, metric: str, n_trees: int, seed: int):
        if metric not in ("dot", "angular"):
            raise AnnIndexError(f"metric must be dot or angular, found {metric!r}")
        self.dim, self.metric, self.n_trees, self.seed = dim, metric, n_trees, seed
        self._index = annoy.AnnoyIndex(dim, metric)
        self._index.set_seed(seed)
        self._n_items = 0
        self._built = False

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (n, dim); they get ids n_items .. n_items + n - 1."""
        if self._built:
            raise IndexFrozenError(
                "cannot add items to an Annoy index after build: Annoy indices cannot grow; "
                "build a new index with all items"
            )
        vectors = check_vectors(vectors)
        if vectors.shape[1] != self.dim:
            raise AnnIndexError(f"vectors have dimension {vectors.shape[1]}, index has {self.dim}")
        for offset, vector in enumerate(vectors):
            self._index.add_item(self._n_items + offset, vector)
        self._n_items += len(vectors)

    def save(self, path: str | Path, side_manifest: bool = True) -> IndexManifest:
        """Build (single-threaded, seeded: the same input gives the same bytes) and publish
        ``path`` by temp file + fsync + ``os.replace``, and its manifest beside it unless
        ``side_manifest`` is False (a run's index entry records it instead)."""
        if self._n_items == 0:
            raise AnnIndexError("cannot build an index with no items")
        path = Path(path)
        self._index.build(self.n_trees, n_jobs=1)
        self._built = True

        def write(tmp: Path) -> None:
            self._index.save(str(tmp))
            self._index.unload()

        size, sha256 = publish_index(path, write)
        manifest = IndexManifest(
            metric=self.metric,
            dim=self.dim,
            n_items=self._n_items,
            n_trees=self.n_trees,
            seed=self.seed,
            size_bytes=size,
            sha256=sha256,
            annoy_version=version("annoy"),
        )
        if side_manifest:
            write_json(manifest_path(path), asdict(manifest))
        return manifest


def build_annoy_index(
    vectors: np.ndarray, metric: str, path: str | Path, n_trees: int, seed: int, side_manifest: bool = True
) -> IndexManifest:
    """Build and publish one Annoy index over vectors (n_items, dim) with ids 0..n-1."""
    vectors = check_vectors(vectors)
    builder = AnnoyBuilder(vectors.shape[1], metric, n_trees, seed)
    builder.add(vectors)
    return builder.save(path, side_manifest)


class AnnoyIndex:
    """A memory-mapped Annoy index, opened only after its manifest checks out: the one
    beside the file, or ``manifest`` (from a run's index entry).

    Share one per process: queries on a loaded index are thread-safe. Never pickled:
    pass the path and open it where it is used.
    """

    backend = "annoy"

    def __init__(
        self,
        path: str | Path,
        metric: str | None = None,
        dim: int | None = None,
        verify_checksum: bool = True,
        threads: int | None = None,
        manifest: IndexManifest | None = None,
    ):
        self.path = Path(path)
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self.manifest = manifest if manifest is not None else IndexManifest.read(manifest_path(self.path))
        m = self.manifest
        if m.format != MANIFEST_FORMAT:
            raise AnnIndexError(f"{self.path}: unknown index format {m.format!r}")
        if metric is not None and metric != m.metric:
            raise AnnIndexError(f"{self.path}: index built with metric {m.metric!r}, opened as {metric!r}")
        if dim is not None and dim != m.dim:
            raise AnnIndexError(f"{self.path}: index built with dimension {m.dim}, opened with {dim}")
        checked_size(self.path, m.size_bytes, AnnIndexError, "manifest" if manifest is None else "entry")
        if verify_checksum and file_sha256(self.path) != m.sha256:
            raise AnnIndexError(f"{self.path}: index file checksum does not match its manifest")
        self._index = annoy.AnnoyIndex(m.dim, m.metric)
        try:
            self._index.load(str(self.path), prefault=False)
        except OSError as exc:
            raise AnnIndexError(f"{self.path}: Annoy could not load the index: {exc}") from None
        if self._index.get_n_items() != m.n_items:
            raise AnnIndexError(
                f"{self.path}: index holds {self._index.get_n_items()} items, its manifest says {m.n_items}"
            )
        self.metric, self.dim, self.n_items, self.n_trees = m.metric, m.dim, m.n_items, m.n_trees

    def _to_score(self, distances: list[float]) -> np.ndarray:
        d = np.asarray(distances, dtype=np.float32)
        return d if self.metric == "dot" else (1.0 - d * d / 2.0).astype(np.float32)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        search_k: int = -1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query, best first, never an excluded item.

        Each query asks Annoy for k plus its excluded count, with at least Annoy's own
        default search_k (n_trees x results asked). Returns ids int64 (q, k), -1 where
        Annoy found fewer, and scores float32 (q, k), -inf there.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        check_query(queries, k, self.n_items, self.dim)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        index = self._index

        def answer(rows: range) -> None:
            for row in rows:
                skip = (
                    exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]
                    if exclude is not None
                    else ()
                )
                wanted = min(k + len(skip), self.n_items)
                found, distances = index.get_nns_by_vector(
                    queries[row], wanted, max(search_k, self.n_trees * wanted), True
                )
                found = np.asarray(found, dtype=np.int64)
                row_scores = self._to_score(distances)
                if len(skip):
                    keep = ~np.isin(found, skip, assume_unique=True)
                    found, row_scores = found[keep], row_scores[keep]
                count = min(k, len(found))
                ids[row, :count] = found[:count]
                scores[row, :count] = row_scores[:count]

        threads = min(self.threads, max(1, len(queries) // 64))
        if threads > 1:
            # Annoy releases the GIL while it searches, and one loaded index is safe to
            # query from several threads: the queries are split between them
            step = -(-len(queries) // threads)
            with ThreadPoolExecutor(threads) as pool:
                list(
                    pool.map(
                        answer, [range(s, min(s + step, len(queries))) for s in range(0, len(queries), step)]
                    )
                )
        else:
            answer(range(len(queries)))
        return ids, scores


# ---------------------------------------------------------------- backend


class AnnoySettings(BackendSettings):
    """``index.annoy``: the trees of each file and the search_k of each index (also read
    from ``index.n_trees`` and ``index.search_k``, the keys of earlier configs)."""

    n_trees: int = Field(default=50, ge=1, le=10_000)
    """Annoy trees per index: more trees, larger file, better recall."""
    search_k: int | dict[Metric, int] | None = None
    """Nodes Annoy inspects per query: one int for both indices, a mapping
    ``{dot: ..., angular: ...}``, or null to tune it: the smallest of n_trees x k x
    1, 2, 4, ... that reaches ``evaluate.target_recall`` on a sample. Each query inspects
    at least n_trees x the results it asks for. ``dot`` needs far more than ``angular``
    for the same recall; the manifest reports the curve and the recall reached."""

    def fixed(self, metric: str) -> int | None:
        """The configured search_k of one index, or None where it is to be tuned."""
        if isinstance(self.search_k, dict):
            return self.search_k.get(metric)  # type: ignore[call-overload]
        return self.search_k


class AnnoyEntry(IndexEntryBase):
    """Served by Annoy's own search of its file, with a search_k."""

    backend: Literal["annoy"] = "annoy"
    search_k: int

    @property
    def query_search_k(self) -> int:
        return self.search_k

    @property
    def setting(self) -> tuple[str, int]:
        return ("search_k", self.search_k)


def default_search_ks(n_trees: int, k: int, n_items: int) -> list[int]:
    """search_k values to sweep: n_trees x k x 1, 2, 4, ... up to n_trees x n_items (beyond
    that Annoy inspects every item anyway)."""
    values, value = [], n_trees * k
    while True:
        values.append(value)
        if value >= n_trees * n_items:
            return values
        value *= 2


def open_annoy_file(
    record: IndexFile,
    metric: str,
    item_factors: np.ndarray,
    resolve: Callable[[str], Path],
    threads: int | None,
) -> AnnoyIndex:
    """The Annoy index of a file an entry records, checked against the record (metric,
    dimension, size, then the item count once loaded)."""
    return AnnoyIndex(
        resolve(record.path),
        metric=metric,
        dim=item_factors.shape[1],
        threads=threads,
        verify_checksum=False,  # resolve() checked the file against the run's manifest
        manifest=IndexManifest.of_file(record, metric),
    )


class AnnoyBackend(Backend):
    """Annoy trees in a memory-mapped file; the setting is search_k."""

    name = "annoy"
    family = "annoy"
    entry = AnnoyEntry
    settings = AnnoySettings

    def build(self, context: BuildContext, k: int) -> Built:
        settings: AnnoySettings = self.settings_of(context)
        path = context.path_for("ann")
        started = time.perf_counter()
        manifest = build_annoy_index(
            context.item_factors, context.metric, path, settings.n_trees, context.seed, side_manifest=False
        )
        seconds = time.perf_counter() - started
        index = AnnoyIndex(
            path, metric=context.metric, dim=manifest.dim, verify_checksum=False, manifest=manifest
        )
        record = IndexFile(
            path=context.relative(path),
            library=f"annoy {manifest.annoy_version}",
            n_items=manifest.n_items,
            dim=manifest.dim,
            seed=manifest.seed,
            params={"n_trees": manifest.n_trees},
            size_bytes=manifest.size_bytes,
            sha256=manifest.sha256,
            build_seconds=round(seconds, 3),
        )
        configured = settings.fixed(context.metric)
        values = (
            [configured]
            if configured is not None
            else default_search_ks(manifest.n_trees, k, len(context.item_factors))
        )
        return Built(
            backend=self.name,
            setting="search_k",
            values=values,
            index_for=lambda _value: index,
            files={self.name: record},
            configured=configured,
            setting_is_search_k=True,
        )

    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> AnnoyIndex:
        return open_annoy_file(
            entry.file(self.name, AnnIndexError), entry.metric, item_factors, resolve, threads
        )
