"""Shared fixtures: small deterministic data, and one Prefect test harness per session."""

from __future__ import annotations

import pandas as pd
import pytest

import flows.settings  # noqa: F401  (offline-safe Prefect defaults before prefect loads)
from recsys.data import generate_interactions


@pytest.fixture(scope="session")
def small_frame() -> pd.DataFrame:
    """400 users x 200 items in 8 taste clusters, integer ids."""
    return generate_interactions(n_users=400, n_items=200, n_clusters=8, seed=3)


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary API on SQLite), started once: it takes ~12 s."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# `make test-fast` (pytest -m "not slow") leaves these out: end-to-end runs through Prefect,
# fault injection, the real server, Dask. `make test` runs everything.
SLOW_PATHS = ("tests/flows/", "tests/test_faults.py")
SLOW_FIXTURES = {"prefect_harness", "published"}


def pytest_collection_modifyitems(config, items):
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix()
        if path.startswith(SLOW_PATHS) or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
