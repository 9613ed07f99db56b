"""Nearest-neighbour indices over item vectors, behind one interface and a registry.

Every backend answers ``search(queries, k, exclude=None, search_k=...) -> (ids, scores)``
with ids int64 (q, k) best first (-1 where fewer were found) and scores float32 (q, k).
:mod:`recsys.index.registry` lists the backends (exact, annoy, annoy-rerank, and faiss
and hnswlib from the ``ann`` extra), each with its settings section ``index.<family>``;
:mod:`recsys.index.select` is the policy that picks one per index by measurement.
"""

from recsys.index.annoy_index import (
    AnnoyBuilder,
    AnnoyIndex,
    IndexManifest,
    build_annoy_index,
    check_vectors,
)
from recsys.index.base import Backend, BuildContext, Built, IndexEntryBase, IndexFile, SearchIndex, Sweep
from recsys.index.exact import ExactIndex, normalize_rows
from recsys.index.registry import BACKENDS, IndexEntry, backend_choices, get_backend

__all__ = [
    "BACKENDS",
    "AnnoyBuilder",
    "AnnoyIndex",
    "Backend",
    "BuildContext",
    "Built",
    "ExactIndex",
    "IndexEntry",
    "IndexEntryBase",
    "IndexFile",
    "IndexManifest",
    "SearchIndex",
    "Sweep",
    "backend_choices",
    "build_annoy_index",
    "check_vectors",
    "get_backend",
    "normalize_rows",
]
