"""Domain exceptions. Every message says what was expected and what was found."""

from collections.abc import Callable


class RecsysError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""

    exit_code = 2


class ConfigError(RecsysError):
    """The pipeline config is invalid (unknown key, bad value, unreadable YAML)."""


class InputError(RecsysError):
    """The interactions table is unreadable or fails validation."""


class ModelError(RecsysError):
    """Training produced unusable factors, or a model name/type is unknown."""


class AnnIndexError(RecsysError):
    """An index file is missing, corrupt, or does not match its manifest."""


class IndexFrozenError(AnnIndexError):
    """Items were added to an Annoy index after it was built."""


class QueryError(RecsysError):
    """A lookup asked for an unknown id or an invalid number of results."""


class RunError(RecsysError):
    """A published run is missing, incomplete, or cannot be written."""


class PromotionHeld(RecsysError):
    """A complete run failed the promotion gate: it is kept under ``runs/``, not made
    current. Exit status 4 (``recsys promote RUN_ID`` promotes it by hand)."""

    exit_code = 4

    def __init__(self, message: str, run_id: str = "", current: str | None = None, reason: str = ""):
        super().__init__(message)
        self.run_id, self.current, self.reason = run_id, current, reason

    def __reduce__(self) -> tuple:  # Prefect keeps the exception of a failed flow run: it pickles
        return (type(self), (str(self), self.run_id, self.current, self.reason))


class ExportError(RecsysError):
    """An export of a published run to another destination (``exports`` in the config)
    failed: the message names the export, its exporter and its destination. The run itself
    stays published; the destination keeps what it held before."""

    def __init__(self, message: str, export: str = "", destination: str = ""):
        super().__init__(message)
        self.export, self.destination = export, destination

    def __reduce__(self) -> tuple:  # picklable with its fields, as Prefect keeps a failed flow's exception
        return (type(self), (str(self), self.export, self.destination))


def registered(lookup: Callable[[str], object], name: str) -> str:
    """``name`` where the registry ``lookup`` knows it; else its one-line ConfigError as the
    ValueError a pydantic validator raises (a config field naming a registered type)."""
    try:
        lookup(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return name
