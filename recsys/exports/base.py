"""What every exporter is: an :class:`Exporter` that copies a published run to another
destination (a database file, a warehouse, a cache), its typed :class:`ExportSettings`
and the :class:`ExportResult` it returns.

Parquet stays the product: an export is a copy of a complete, published run, made after
it was published, read through :class:`recsys.api.Run` (every file verified against
the manifest). An exporter is one file with an :class:`Exporter` subclass and its
settings model, plus one line in :data:`recsys.exports.EXPORTERS`.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from recsys.api import Run


class ExportSettings(BaseModel):
    """The params of one export (``exports[].params``), checked when the config loads:
    unknown keys, wrong types and missing keys are refused with their full key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportResult(BaseModel):
    """What one export wrote: the tables with their row counts, where, and how long it took."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """The export's name in the config (its exporter's name by default)."""
    exporter: str
    """The exporter that wrote it (``exports[].type``)."""
    run_id: str
    destination: str
    """Where it was written (a path, or an address without credentials)."""
    tables: dict[str, int] = Field(default_factory=dict)
    """Rows written, per table."""
    seconds: float = Field(ge=0)


@dataclass(frozen=True)
class ExportContext:
    """What an export knows beyond its settings."""

    name: str
    """The export's name in the config (for messages)."""
    file_mode: int = 0o644
    """Permissions of the files it writes: the run's ``output.mode``."""


class SettingsProblems(ValueError):
    """An export's params do not fit its exporter's settings model. ``problems`` keeps each
    one with its location under the export (``params.pathh``), so that the config's error
    names the full dotted key (``exports.0.params.pathh``)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems  # (location, kind: unknown | missing | invalid, message)
        super().__init__("; ".join(f"{where}: {message}" for where, _, message in problems))


def settings_problems(
    exporter: str, settings: type[ExportSettings], error: ValidationError
) -> SettingsProblems:
    """The problems of a settings model's ValidationError, one per key, each on one line."""
    expected = f"{exporter} params: {', '.join(settings.model_fields) or 'none'}"
    problems: list[tuple[str, str, str]] = []
    for item in error.errors():
        key = "params" + "".join(f".{part}" for part in item["loc"])
        if any(where == key for where, _, _ in problems):  # a union reports one error per member
            continue
        if item["type"] == "extra_forbidden":
            problems.append((key, "unknown", expected))
        elif item["type"] == "missing":
            problems.append((key, "missing", "missing key"))
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append((key, "invalid", f"{message}, found {item['input']!r}"))
    return SettingsProblems(problems)


class Exporter(ABC):
    """One kind of destination. Subclasses set the class attributes and implement
    :meth:`export`; instances are stateless, so one serves every config."""

    name: ClassVar[str]
    """Registry key: the ``type`` of an export in the config."""
    settings: ClassVar[type[ExportSettings]]
    """The typed settings model an export's ``params`` must satisfy."""
    path_settings: ClassVar[tuple[str, ...]] = ()
    """Settings that are paths: a relative one set in a config file resolves against the
    config file's folder, as ``output.root`` does."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules beyond the core install this exporter imports (from the optional ``extra``)."""
    extra: ClassVar[str | None] = None

    def missing(self) -> str | None:
        """One line naming the extra to install where a required module is missing, else None."""
        if all(importlib.util.find_spec(module) is not None for module in self.requires):
            return None
        return f"exporter {self.name} needs the '{self.extra}' extra: pip install 'recsys[{self.extra}]'"

    def parse(self, params: dict[str, Any]) -> ExportSettings:
        """``params`` as this exporter's settings; :class:`SettingsProblems` where they do not fit."""
        try:
            return self.settings.model_validate(params)
        except ValidationError as exc:
            raise settings_problems(self.name, self.settings, exc) from None

    def destination(self, settings: ExportSettings) -> str:
        """Where an export with these settings writes, for messages (no credentials): its
        first path setting by default."""
        return str(getattr(settings, self.path_settings[0])) if self.path_settings else self.name

    @abstractmethod
    def export(self, run: Run, settings: ExportSettings, context: ExportContext) -> ExportResult:
        """Copy the published ``run`` to the destination. Readers of the destination see the
        previous export or this one whole, never a part; a failure leaves the previous one
        in place. Raise an exception (an ``OSError``, a ``RecsysError``, the library's own)
        on failure: :func:`recsys.exports.run_exports` turns it into one line."""
