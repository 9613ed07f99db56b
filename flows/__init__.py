"""Prefect flows that orchestrate the recsys library. Thin: they only wire stages.

Importing this package sets Prefect's offline-safe defaults before Prefect loads
(analytics off, a generous start-up timeout for the temporary local API), unless the
environment already sets them.
"""

from flows import settings as _settings  # noqa: F401  (must run before prefect is imported)
