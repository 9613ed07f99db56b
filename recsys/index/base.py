"""What every index backend is: a :class:`SearchIndex` to query, a :class:`Backend` that
builds, sweeps and opens it, and the manifest entry (:class:`IndexEntryBase`) that
records how an index is served.

A backend is one file with a :class:`Backend` subclass and its entry model, plus one
line in :mod:`recsys.index.registry`; the contract tests in ``tests/index`` run over
every registered backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

Metric = Literal["dot", "angular"]


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


class AnnoyFile(_Strict):
    """An Annoy file built for one metric of a model, with its own manifest beside it."""

    path: str
    manifest: str
    n_trees: int = Field(ge=1)
    seed: int
    n_items: int = Field(ge=1)
    dim: int = Field(ge=1)
    size_bytes: int = Field(ge=0)
    sha256: str
    build_seconds: float


class IndexEntryBase(_Strict):
    """How one index (one metric) of a model is served. Subclasses, one per backend, fix
    ``backend`` to their name and add their settings."""

    backend: str
    metric: Metric
    reason: str
    tuning: dict[str, Sweep] | None = None
    """Sweeps of every strategy measured for this index, by backend name."""
    annoy: AnnoyFile | None = None
    """The Annoy file built for this metric, whichever backend serves it."""
    candidates_from: str | None = None
    """The angular Annoy file whose candidates a re-ranking strategy scores."""

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
        return [self.annoy.path, self.annoy.manifest] if self.annoy else []


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
    n_trees: int
    seed: int
    built: dict[tuple[str, str], Built] = field(default_factory=dict)
    """What the backends built for this model so far, by (backend, metric)."""


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
    fields: dict[str, Any] = field(default_factory=dict)
    """Fields of the manifest entry this build adds, whichever backend serves the index
    (the file it wrote)."""
    setting_is_search_k: bool = False
    """Whether the value is handed to ``search`` as search_k (else it is built in)."""


class Backend(ABC):
    """An index backend: build (and the settings to sweep), open, and its manifest entry."""

    name: ClassVar[str]
    family: ClassVar[str]
    """``index.backend`` values that select this backend (``annoy`` selects Annoy's own
    search and its re-ranked candidates)."""
    approximate: ClassVar[bool] = True
    entry: ClassVar[type[IndexEntryBase]]

    def supports(self, metric: str) -> bool:
        return metric in ("dot", "angular")

    @abstractmethod
    def build(self, context: BuildContext, k: int, configured: int | None) -> Built | None:
        """Build the index (files through ``context.path_for``), or None where this backend
        cannot serve this metric here. ``configured``: a value of the setting fixed by the
        config (only that value is then tried)."""

    @abstractmethod
    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> SearchIndex:
        """The index an entry describes, opened and checked. ``resolve`` turns a path the
        manifest records into a verified file path."""

    def serve(self, built: Built, value: int) -> dict[str, Any]:
        """Entry fields that serve ``built`` at a value of its setting."""
        return {built.setting: value}
