"""Nearest-neighbour indices over item vectors: Annoy (files + manifest) and exact search.

Both backends answer ``search(queries, k, exclude=None, search_k=...) -> (ids, scores)``
with ids int64 (q, k) best first (-1 where fewer were found) and scores float32 (q, k).
"""

from recsys.index.annoy_index import (
    AnnoyBuilder,
    AnnoyIndex,
    IndexManifest,
    build_annoy_index,
    check_vectors,
)
from recsys.index.exact import ExactIndex, normalize_rows

__all__ = [
    "AnnoyBuilder",
    "AnnoyIndex",
    "ExactIndex",
    "IndexManifest",
    "build_annoy_index",
    "check_vectors",
    "normalize_rows",
]
