"""The BLAS thread limits the product sets itself: a user sets no environment variable.

implicit's models want BLAS at one thread (their parallelism is implicit's own OpenMP
threads; with a multi-threaded BLAS they warn and fit 6-26x slower), while the exact
path's products and the spectral SVD want every core. :func:`blas_limit` sets a limit
for the duration of a ``with`` block.

A limit reaches only the libraries loaded when it is entered: threadpoolctl changes the
thread count of each BLAS it finds then, and a BLAS loaded later inside the block keeps a
thread per core. Importing implicit loads scipy's OpenBLAS, a second one beside numpy's,
so a limit entered before that import left implicit's fit with two threads.
:func:`blas_limit` therefore imports every module that loads a BLAS (``scipy.linalg``
and the caller's ``modules``) before it sets the limit.

Limits are process-wide, not per thread: models fitted side by side in threads hold one
limit around all of them (``stages.runner.model_chains``), so that one thread leaving
its block cannot restore every core under another one's fit.
"""

from __future__ import annotations

import importlib
import os

from threadpoolctl import threadpool_info, threadpool_limits

BLAS_MODULES = ("numpy", "scipy.linalg")
"""Modules whose import loads a BLAS: numpy's OpenBLAS and scipy's (which implicit uses)."""


def blas_limit(threads: int | None = None, *modules: str) -> threadpool_limits:
    """A context manager that limits every loaded BLAS to ``threads`` (None: every core),
    after importing :data:`BLAS_MODULES` and ``modules`` (dotted names), so that no BLAS
    they load escapes the limit."""
    for module in (*BLAS_MODULES, *modules):
        importlib.import_module(module)
    return threadpool_limits(limits=threads or os.cpu_count() or 1, user_api="blas")


def blas_thread_counts() -> list[int]:
    """The thread count of every BLAS loaded in this process now, as threadpoolctl sees
    them (the run's log reports them from inside each fit)."""
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]
