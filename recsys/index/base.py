"""What every index backend is: a :class:`SearchIndex` to query, a :class:`Backend` that
builds, sweeps and opens it, and the manifest entry (:class:`IndexEntryBase`) that
records how an index is served.

A backend is one file with a :class:`Backend` subclass, its entry model and its settings
model (:class:`BackendSettings`, the config's ``index.<family>``), plus one line in
:mod:`recsys.index.registry`. The files it writes are listed in the entry by name, as
:class:`IndexFile` records, and published through :func:`publish_index`. The contract
tests in ``tests/index`` run over every registered backend.
"""

from __future__ import annotations

import importlib.util
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from recsys import faults
from recsys.data.vectors import check_vector_rows
from recsys.errors import AnnIndexError
from recsys.storage import atomic_path, file_sha256

Metric = Literal["dot", "angular"]
Resolve = Callable[[str], Path]
"""Turns a path a run's manifest records into a verified file path."""


def doubling(start: int, top: int) -> list[int]:
    """Settings to sweep: ``start``, twice that, ... while below ``top``, then ``top``."""
    values, value = [], start
    while value < top:
        values.append(value)
        value *= 2
    return [*values, top]


class SearchIndex(Protocol):
    """Top-k search over item vectors with ids 0..n_items-1.

    ``search`` returns ids int64 (q, k) best first (-1 where fewer were found) and
    scores float32 (q, k) (-inf there), never an item excluded for that query.
    """

    metric: str
    n_items: int

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, search_k: int = -1
    ) -> tuple[np.ndarray, np.ndarray]: ...


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sweep(_Strict):
    """Recall and speed of one strategy over increasing values of its setting, until the
    target recall was reached (``chosen``) or the sweep stopped.

    In JSON the chosen value and each point's value stand under the setting's own name:
    ``{"setting": "search_k", "search_k": 4000, "curve": [{"search_k": 500, ...}]}``.
    """

    setting: str
    k: int
    queries: int
    target_recall: float
    chosen: int | None
    exact_queries_per_second: float
    curve: list[dict[str, float]]

    @model_validator(mode="before")
    @classmethod
    def _from_json(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "chosen" not in raw and "setting" in raw:
            raw = dict(raw)
            raw["chosen"] = raw.pop(raw["setting"], None)
        return raw

    @model_serializer(mode="wrap")
    def _to_json(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        data[self.setting] = data.pop("chosen", None)
        return data

    def point(self, value: int) -> dict[str, float]:
        return next(p for p in self.curve if p[self.setting] == value)


class IndexFile(_Strict):
    """A file a backend wrote for one metric of a model, with what it takes to check and
    reopen it; an entry lists it whichever backend serves the index."""

    path: str
    library: str
    """The library and its version (``annoy 1.17.3``, ``faiss-cpu 1.15.1``)."""
    n_items: int = Field(ge=1)
    dim: int = Field(ge=1)
    """Dimension of the vectors in the file (the factors', plus one where a transform adds it)."""
    seed: int
    params: dict[str, int | float | str] = Field(default_factory=dict)
    """How the file was built (trees, cells, graph degree, transform, build threads)."""
    size_bytes: int = Field(ge=0)
    sha256: str
    build_seconds: float


class BackendSettings(BaseModel):
    """A backend's settings, read from its section of the config (``index.<family>``).
    A subclass declares its keys; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def fixed(self, metric: str) -> int | None:
        """A value of the swept setting the config fixes for ``metric`` (only that value
        is then tried and served), or None: the setting is swept."""
        return None


class IndexEntryBase(_Strict):
    """How one index (one metric) of a model is served. Subclasses, one per backend, fix
    ``backend`` to their name and add their settings."""

    backend: str
    metric: Metric
    reason: str
    tuning: dict[str, Sweep] | None = None
    """Sweeps of every strategy measured for this index, by backend name."""
    files: dict[str, IndexFile] = Field(default_factory=dict)
    """The files built for this metric, by name (the backend that wrote each), whichever
    backend serves the index."""

    @property
    def query_search_k(self) -> int:
        """The search_k handed to ``search`` (-1: the backend's own)."""
        return -1

    @property
    def setting(self) -> tuple[str, int] | None:
        """The backend's setting and its value (``("search_k", 4000)``), None for none."""
        return None

    def paths(self) -> list[str]:
        """Files of the run this entry names."""
        return [file.path for file in self.files.values()]

    def file(self, name: str, error: Callable[[str], Exception]) -> IndexFile:
        """The file of that name, or a one-line error naming the ones listed."""
        if name not in self.files:
            listed = ", ".join(self.files) or "none"
            raise error(
                f"{self.metric} index served by {self.backend} lists no {name} file (listed: {listed})"
            )
        return self.files[name]


@dataclass
class BuildContext:
    """What building one model's index for one metric needs."""

    model: str
    metric: str
    item_factors: np.ndarray
    path_for: Callable[[str], Path]
    """The path of this index's file with a suffix (``ann``): from the run layout."""
    relative: Callable[[Path], str]
    """A path as the manifest records it (relative to the run folder)."""
    seed: int
    settings: BackendSettings | None = None
    """The building backend's settings (its config section); None: its defaults."""
    built: dict[tuple[str, str], Built] = field(default_factory=dict)
    """What the backends built for this model so far, by (backend, metric)."""
    progress: Callable[[int, int], None] | None = None
    """Called with (items added, items) by a build that adds its items in parts."""


@dataclass
class Built:
    """An index a backend built, ready to be swept or served."""

    backend: str
    setting: str
    """The name of the setting swept (``search_k``, ``candidates``)."""
    values: list[int]
    """Values of the setting to try, cheapest first."""
    index_for: Callable[[int], SearchIndex]
    """The index at a value of the setting."""
    files: dict[str, IndexFile] = field(default_factory=dict)
    """Files this build wrote, by name: the index's entry lists them whichever backend
    serves it."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Fields of the entry where this backend serves the index (beyond its setting)."""
    configured: int | None = None
    """The value of the setting the config fixes (``values`` is then that value only)."""
    setting_is_search_k: bool = False
    """Whether the value is handed to ``search`` as search_k (else it is built in)."""


class Backend(ABC):
    """An index backend: build (and the settings to sweep), open, and its manifest entry."""

    name: ClassVar[str]
    family: ClassVar[str]
    """``index.backend`` values that select this backend (``annoy`` selects Annoy's own
    search and its re-ranked candidates); also the name of its config section."""
    approximate: ClassVar[bool] = True
    entry: ClassVar[type[IndexEntryBase]]
    settings: ClassVar[type[BackendSettings]] = BackendSettings
    """Its settings model, read from ``index.<family>`` (backends of one family share it)."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules beyond the core install this backend imports (from the optional ``extra``)."""
    extra: ClassVar[str | None] = None

    def missing(self) -> str | None:
        """One line naming the extra to install where a required module is missing, else None."""
        if all(importlib.util.find_spec(module) is not None for module in self.requires):
            return None
        return f"{self.family} needs the '{self.extra}' extra: pip install 'recsys[{self.extra}]'"

    def check_installed(self) -> None:
        """One-line error where a module this backend needs is not installed."""
        missing = self.missing()
        if missing is not None:
            raise AnnIndexError(f"index backend {missing}")

    def supports(self, metric: str) -> bool:
        return metric in ("dot", "angular")

    def settings_of(self, context: BuildContext) -> Any:
        """This backend's settings in a build context (its defaults where none are given)."""
        if isinstance(context.settings, self.settings):
            return context.settings
        return self.settings()

    @abstractmethod
    def build(self, context: BuildContext, k: int) -> Built | None:
        """Build the index (files through ``context.path_for``), or None where this backend
        cannot serve this metric here. A value of the setting the settings fix
        (:meth:`BackendSettings.fixed`) is the only one tried."""

    @abstractmethod
    def open(
        self, entry: IndexEntryBase, item_factors: np.ndarray, resolve: Resolve, threads: int | None
    ) -> SearchIndex:
        """The index an entry describes, opened and checked. ``resolve`` turns a path the
        manifest records into a verified file path."""

    def serve(self, built: Built, value: int) -> dict[str, Any]:
        """Entry fields that serve ``built`` at a value of its setting."""
        return {built.setting: value}


# ---------------------------------------------------------------- helpers for backends with files


def publish_index(path: Path, write: Callable[[Path], None]) -> tuple[int, str]:
    """Write an index file through ``write(temporary path)`` and publish it atomically
    (:func:`recsys.storage.atomic_path`: a reader never sees a partial file). Returns its
    size in bytes and sha256."""
    with atomic_path(path) as tmp:
        write(tmp)
        size, sha256 = tmp.stat().st_size, file_sha256(tmp)
        faults.point("index-before-replace")
    return size, sha256


Made = tuple[Any, dict[str, Any]]
"""A library's index and the params to record of its file."""


@dataclass
class Loaded:
    """A library's index, built or read, with what searching it needs."""

    index: Any
    record: IndexFile
    item_factors: np.ndarray
    metric: str


class LibraryBackend(Backend):
    """A backend serving from one file an index library writes (faiss, hnswlib): the
    build, the file's record and the checks before the library opens it, written once.
    A subclass makes, saves and loads its library's index and searches it at a value of
    its setting."""

    setting: ClassVar[str]
    """The setting swept (``nprobe``, ``ef``); its entry has a field of that name."""
    suffix: ClassVar[str]
    """Suffix of its file in the run layout."""
    package: ClassVar[str]
    """The distribution whose version the record names (``faiss-cpu``)."""

    @abstractmethod
    def make(self, vectors: np.ndarray, context: BuildContext, settings: Any) -> tuple[Any, dict[str, Any]]:
        """The library's index over checked item vectors, and the params to record (a
        ``dim`` among them: the dimension of the vectors in the file)."""

    @abstractmethod
    def save(self, index: Any, path: Path) -> None: ...

    @abstractmethod
    def load(self, path: Path, record: IndexFile, item_factors: np.ndarray, metric: str) -> Any:
        """The library's index of a file whose size and dimension checked out; a one-line
        :class:`AnnIndexError` where the library refuses it or it is not what the record says."""

    @abstractmethod
    def file_dim(self, metric: str, dim: int) -> int:
        """The dimension of the vectors in the file of an index of ``dim`` factors."""

    @abstractmethod
    def values(self, record: IndexFile, k: int) -> list[int]:
        """Values of the setting to sweep, cheapest first."""

    @abstractmethod
    def searcher(self, loaded: Loaded, value: int, threads: int | None) -> SearchIndex:
        """The index searched at a value of the setting."""

    def build(self, context: BuildContext, k: int) -> Built | None:
        if self.missing() is not None:
            return None  # the extra is not installed: auto goes on without it
        settings = self.settings_of(context)
        path = context.path_for(self.suffix)
        started = time.perf_counter()
        vectors = check_vector_rows(context.item_factors, "item vectors", AnnIndexError)
        index, params = self.make(vectors, context, settings)
        size, sha256 = publish_index(path, lambda tmp: self.save(index, tmp))
        record = IndexFile(
            path=context.relative(path),
            library=f"{self.package} {version(self.package)}",
            n_items=len(vectors),
            dim=self.file_dim(context.metric, vectors.shape[1]),
            seed=context.seed,
            params=params,
            size_bytes=size,
            sha256=sha256,
            build_seconds=round(time.perf_counter() - started, 3),
        )
        configured = settings.fixed(context.metric)
        loaded = Loaded(index, record, context.item_factors, context.metric)
        return Built(
            backend=self.name,
            setting=self.setting,
            values=[configured] if configured is not None else self.values(record, k),
            index_for=lambda value: self.searcher(loaded, value, None),
            files={self.name: record},
            configured=configured,
        )

    def open(
        self, entry: IndexEntryBase, item_factors: np.ndarray, resolve: Resolve, threads: int | None
    ) -> SearchIndex:
        self.check_installed()
        record = entry.file(self.name, AnnIndexError)
        path = checked_file(resolve(record.path), record, AnnIndexError)
        dim, metric = item_factors.shape[1], entry.metric
        expected = self.file_dim(metric, dim)
        if record.dim != expected:
            raise AnnIndexError(
                f"{path}: {self.name} file holds dimension {record.dim}, a {metric} index of {dim} factors "
                f"needs {expected}"
            )
        loaded = Loaded(self.load(path, record, item_factors, metric), record, item_factors, metric)
        return self.searcher(loaded, getattr(entry, self.setting), threads)


def checked_size(path: Path, size_bytes: int, error: Callable[[str], Exception], record: str) -> Path:
    """``path`` if it has the size its ``record`` (entry, manifest) says; a library handed
    a truncated file may crash the process, so this is checked before it opens one."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise error(f"{path}: index file not found") from None
    if size != size_bytes:
        raise error(
            f"{path}: index file has {size} bytes, its {record} says {size_bytes} (truncated or replaced)"
        )
    return path


def checked_file(path: Path, recorded: IndexFile, error: Callable[[str], Exception]) -> Path:
    """``path`` if it has the size its entry records (the run checks the sha256 before)."""
    return checked_size(path, recorded.size_bytes, error, "entry")


def _asked(wanted: np.ndarray) -> np.ndarray:
    """Results to ask for, from the results wanted per row: rounded up to a quarter of an
    octave (at least 8), so that rows share a few library calls."""
    step = np.maximum(8, 2 ** np.maximum(np.floor(np.log2(np.maximum(wanted, 1))) - 2, 0)).astype(np.int64)
    return -(-wanted // step) * step


def search_excluding(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per query through a library search that cannot skip items: each row asks for
    k plus its excluded count (rows grouped by that number, one call per group), then the
    excluded items and the library's empty places are dropped.

    ``search(queries, wanted)`` returns ids int64 (q, wanted) best first, -1 for none, and
    scores float32 (q, wanted). Returns ids int64 (q, k), -1 where fewer were found, and
    scores float32 (q, k), -inf there.
    """
    rows = len(queries)
    ids = np.full((rows, k), -1, dtype=np.int64)
    scores = np.full((rows, k), -np.inf, dtype=np.float32)
    counts = np.diff(exclude.indptr) if exclude is not None else np.zeros(rows, dtype=np.int64)
    asked = np.minimum(_asked(np.minimum(k + counts, n_items)), n_items)
    for size in np.unique(asked):
        group = np.flatnonzero(asked == size)
        found, found_scores = search(queries[group], int(size))
        keep = found >= 0
        if exclude is not None and counts[group].any():
            sub = exclude[group]
            seen = np.repeat(np.arange(len(group), dtype=np.int64), np.diff(sub.indptr)) * n_items
            seen += sub.indices
            keys = np.arange(len(group), dtype=np.int64)[:, None] * n_items + np.maximum(found, 0)
            keep &= ~np.isin(keys, seen)
        # kept results moved to the front of each row, in their order
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(keep, order, axis=1)
        width = order.shape[1]
        ids[group, :width] = np.where(kept, np.take_along_axis(found, order, axis=1), -1)
        scores[group, :width] = np.where(kept, np.take_along_axis(found_scores, order, axis=1), -np.inf)
    return ids, scores
