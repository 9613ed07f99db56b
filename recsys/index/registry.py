"""The index backends, by name: one line each. A new backend is one file (a
:class:`~recsys.index.base.Backend`, its entry model and its settings model) plus one
line here; it then takes part in ``index.backend: auto``, is accepted by the config
(its settings as the section ``index.<family>``), validated in the manifest and covered
by the contract tests in ``tests/index``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from recsys.errors import ConfigError
from recsys.index.annoy_index import AnnoyBackend
from recsys.index.base import Backend, BackendSettings, IndexEntryBase
from recsys.index.exact import ExactBackend
from recsys.index.faiss_index import FaissBackend
from recsys.index.hnsw_index import HnswBackend
from recsys.index.rerank import RerankBackend

BACKENDS: dict[str, Backend] = {
    "exact": ExactBackend(),
    "annoy": AnnoyBackend(),
    "annoy-rerank": RerankBackend(),
    "faiss": FaissBackend(),
    "hnswlib": HnswBackend(),
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown index backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_choices() -> list[str]:
    """Values of ``index.backend``: ``auto`` and every backend family."""
    return ["auto", *dict.fromkeys(backend.family for backend in BACKENDS.values())]


def missing_extra(family: str) -> str | None:
    """One line naming the extra to install where a backend of ``index.backend`` needs a
    package that is not installed (``auto`` and the core backends: None)."""
    for backend in BACKENDS.values():
        if backend.family == family and (missing := backend.missing()) is not None:
            return missing
    return None


def settings_models() -> dict[str, type[BackendSettings]]:
    """The settings model of each backend family that has settings, by family: the
    sections ``index.<family>`` of the config. Backends of one family share one model."""
    models: dict[str, type[BackendSettings]] = {}
    for backend in BACKENDS.values():
        model = backend.settings
        if model.model_fields and models.setdefault(backend.family, model) is not model:
            raise TypeError(f"index backends of family {backend.family} declare different settings")
    return models


def _validate_entry(raw: Any) -> IndexEntryBase:
    if isinstance(raw, IndexEntryBase):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"expected an index entry object, found {type(raw).__name__}")
    name = raw.get("backend")
    if name not in BACKENDS:
        raise ValueError(f"unknown index backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name].entry.model_validate(raw)


IndexEntry = Annotated[
    IndexEntryBase,
    PlainValidator(_validate_entry),
    PlainSerializer(lambda entry: entry.model_dump(mode="json", exclude_none=True)),
]
"""A manifest's index entry: validated by the model of the backend it names."""
