"""The one check every vector matrix passes before it is indexed or queried: finite
values and non-zero norms. NaN or inf vectors are accepted by Annoy and destroy recall for
every item; a zero vector has no direction."""

from __future__ import annotations

import numpy as np

from recsys.errors import RecsysError


def vector_problem(vectors: np.ndarray, what: str) -> str | None:
    """What is wrong with a (n, dim) matrix of vectors, with the count, or None."""
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        return f"{what} must be a non-empty 2-d array, found shape {vectors.shape}"
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        return f"{int(bad.sum())} of {len(vectors)} {what} are not finite (NaN or inf)"
    zero = np.linalg.norm(vectors, axis=1) == 0
    if zero.any():
        return f"{int(zero.sum())} of {len(vectors)} {what} have zero norm"
    return None


def check_vector_rows(
    vectors: np.ndarray, what: str, error: type[RecsysError], prefix: str = ""
) -> np.ndarray:
    """float32 C-contiguous vectors, or ``error`` with :func:`vector_problem`'s message."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    problem = vector_problem(vectors, what)
    if problem is not None:
        raise error(prefix + problem)
    return vectors
