"""A backend in one file, as a new one would be written: its own index file (a ``.npy`` of
the item vectors) searched by brute force over a strided share of the catalog, merged with
the full scan (so it is exact at stride 1), and its own settings section,
``index: {stride: {...}}``."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

import numpy as np
from pydantic import Field

from recsys.errors import AnnIndexError
from recsys.index import base
from recsys.index.base import Backend, BackendSettings, BuildContext, Built, IndexEntryBase, IndexFile
from recsys.index.exact import ExactIndex


class StrideSettings(BackendSettings):
    """``index.stride``: the strides to sweep, or one fixed."""

    strides: list[int] = Field(default=[4, 2, 1], min_length=1)
    """Strides to sweep, cheapest first."""
    stride: int | None = Field(default=None, ge=1)
    """A fixed stride (only it is tried); null: swept."""

    def fixed(self, metric: str) -> int | None:
        return self.stride


class StrideEntry(IndexEntryBase):
    backend: Literal["stride"] = "stride"
    stride: int

    @property
    def setting(self) -> tuple[str, int]:
        return ("stride", self.stride)


class StrideIndex(ExactIndex):
    backend = "stride"

    def __init__(self, vectors: np.ndarray, metric: str, stride: int):
        super().__init__(vectors, metric)
        self.stride = stride

    def search(self, queries, k, exclude=None, search_k=-1):
        ids, scores = super().search(queries, k, exclude=exclude)
        if self.stride > 1:  # keep what a strided scan would find, -1 elsewhere
            dropped = (ids % self.stride) != 0
            ids[dropped], scores[dropped] = -1, -np.inf
            order = np.argsort(ids < 0, axis=1, kind="stable")
            ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
        return ids, scores


class StrideBackend(Backend):
    name = "stride"
    family = "stride"
    entry = StrideEntry
    settings = StrideSettings

    def build(self, context: BuildContext, k: int) -> Built:
        settings: StrideSettings = self.settings_of(context)
        metric = context.metric
        vectors = np.ascontiguousarray(context.item_factors, dtype=np.float32)
        path = context.path_for("npy")
        size, sha256 = base.publish_index(path, lambda tmp: np.save(tmp.open("wb"), vectors))
        record = IndexFile(
            path=context.relative(path),
            library=f"numpy {version('numpy')}",
            n_items=len(vectors),
            dim=vectors.shape[1],
            seed=context.seed,
            size_bytes=size,
            sha256=sha256,
            build_seconds=0.0,
        )
        configured = settings.fixed(metric)
        return Built(
            backend=self.name,
            setting="stride",
            values=[configured] if configured is not None else settings.strides,
            index_for=lambda stride: StrideIndex(vectors, metric, stride),
            files={self.name: record},
            configured=configured,
        )

    def open(
        self, entry: IndexEntryBase, item_factors: np.ndarray, resolve: base.Resolve, threads
    ) -> StrideIndex:
        assert isinstance(entry, StrideEntry)
        record = entry.file(self.name, AnnIndexError)
        path = base.checked_file(resolve(record.path), record, AnnIndexError)
        try:
            vectors = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise AnnIndexError(f"{path}: not a vectors file: {exc}") from None
        if vectors.shape != (record.n_items, record.dim) or vectors.shape != item_factors.shape:
            raise AnnIndexError(f"{path}: holds vectors {vectors.shape}, the model has {item_factors.shape}")
        return StrideIndex(vectors, entry.metric, entry.stride)
