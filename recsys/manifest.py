"""The published run as typed models: built by the stages, written once as
``manifest.json``, and read back through these models by everything that uses a run
(lookups, the report, carry-over, retention, ``recsys runs``).

Every model forbids unknown keys, so a renamed or misspelt key is an error at the
reader, naming the file and the field, not a ``KeyError`` three calls later.

Every file of a run is listed in :attr:`RunManifest.files` with its size and sha256;
every path is relative to the run folder (no absolute paths, no ``..``), and every
path the manifest names elsewhere must be listed there. Readers verify a file against
this table before they use it (:func:`recsys.storage.verified_path`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import ItemsView, Iterator, KeysView
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)

from recsys import storage
from recsys.errors import RunError
from recsys.evaluate import RankingMetric
from recsys.index.registry import IndexEntry

RUN_FORMAT = "recsys-run/4"
Metric = Literal["dot", "angular"]
TimestampType = Literal["number", "datetime"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_relative_path(path: str) -> str:
    """A path inside a run folder as the manifest records it: relative, POSIX, no ``..``."""
    if not storage.is_plain_relative(path):
        raise ValueError(f"path {path!r} must be relative to the run folder, without '..'")
    return path


RunPath = Annotated[str, Field(min_length=1)]


class FileEntry(_Strict):
    """Size and sha256 of one file of the run."""

    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class InputInfo(_Strict):
    """The input table (or, for runs of precomputed vectors only, the item vectors file)
    and what validation made of it."""

    path: str
    size_bytes: int = Field(ge=0)
    sha256: str
    rows: int = Field(ge=0)
    zero_weight_rows_dropped: int = Field(ge=0)
    duplicate_rows_merged: int = Field(ge=0)
    interactions: int = Field(ge=0)
    users: int = Field(ge=0)
    items: int = Field(ge=1)
    user_id_type: Literal["int", "str"]
    item_id_type: Literal["int", "str"]
    timestamp_type: TimestampType | None = None
    """What the ``timestamp`` column holds: ``number`` (as given) or ``datetime`` (dates and
    times; the span below in seconds since 1970-01-01 UTC); None without the column."""
    first_timestamp: float | None = None
    """The earliest timestamp of the input's rows (after validation), None without any."""
    last_timestamp: float | None = None
    """The latest: where a later run starts counting interactions as new (``forward``)."""


def timestamp_text(value: float | None, kind: TimestampType | None) -> str:
    """A timestamp of the manifest as text: a number as it is, a date and time in ISO 8601
    (UTC, to the second, or finer where it has a fraction)."""
    if value is None:
        return ""
    if kind == "datetime":
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
        spec = "seconds" if moment.microsecond == 0 else "milliseconds"
        return moment.isoformat(timespec=spec).replace("+00:00", "Z")
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


class DataFiles(_Strict):
    """The run's id maps and interaction matrices (paths relative to the run folder)."""

    users: RunPath
    items: RunPath
    user_items: RunPath
    stats: RunPath
    holdout: RunPath | None = None
    item_rules: RunPath | None = None
    """The resolved ``recommend.include_items`` / ``exclude_items`` (runs with item rules)."""


class HoldoutInfo(_Strict):
    """Where the held-out interactions came from and how many were usable."""

    method: Literal["supplied", "random", "leave_last", "time"]
    fraction: float | None = None
    n: int | None = None
    path: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    pairs: int
    pairs_evaluated: int
    users_evaluated: int
    unknown_users: int
    pairs_of_unknown_users: int
    unknown_items: int
    pairs_of_unknown_items: int
    pairs_seen_in_training: int


class Factors(_Strict):
    item: RunPath
    user: RunPath | None = None
    extras: dict[str, RunPath] = Field(default_factory=dict)
    """Other arrays the model type keeps (a fold-in projection), by name."""


RankedKind = Literal["recommendations", "similar_items"]


class ListSpec(_Strict):
    """What one kind of ranked list is: the index metric that serves it and its length
    (``recommend`` or ``similar_items`` of the config)."""

    kind: RankedKind
    metric: Metric
    top_n: int = Field(ge=1)

    @property
    def timing(self) -> str:
        """The key of its time in the manifest's timings."""
        return "recommend" if self.kind == "recommendations" else "similar_items"


class ListPart(_Strict):
    """One part file of a published list: the lists of the queries (users or items, by
    internal id) ``start`` .. ``stop - 1``, its rows, size and sha256."""

    path: RunPath
    start: int = Field(ge=0)
    stop: int = Field(ge=0)
    rows: int = Field(ge=0)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _range(self) -> ListPart:
        if self.stop <= self.start:
            raise ValueError(f"part {self.path}: stop {self.stop} is not after start {self.start}")
        return self


class ListOutput(_Strict):
    """A published list as a parquet dataset: the folder ``path``
    (``models/<name>/recommendations.parquet``) holding ``part-NNNNN.parquet`` files, in
    query order, covering every query once."""

    path: RunPath
    parts: list[ListPart] = Field(min_length=1)

    @model_validator(mode="after")
    def _parts_in_order(self) -> ListOutput:
        start = 0
        for part in self.parts:
            if part.start != start:
                raise ValueError(f"{self.path}: part {part.path} starts at {part.start}, expected {start}")
            if part.path.rpartition("/")[0] != self.path:
                raise ValueError(f"{self.path}: part {part.path} is not in the folder")
            start = part.stop
        return self

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)

    @property
    def queries(self) -> int:
        return self.parts[-1].stop

    def files(self) -> list[str]:
        """The part files, in query order."""
        return [part.path for part in self.parts]


class Outputs(_Strict):
    similar_items: ListOutput | None = None
    recommendations: ListOutput | None = None

    def get(self, kind: RankedKind) -> ListOutput | None:
        return self.recommendations if kind == "recommendations" else self.similar_items


class Rows(_Strict):
    similar_items: int | None = Field(default=None, ge=0)
    recommendations: int | None = Field(default=None, ge=0)


class AnnFigures(_Strict):
    """Recall@k of the served lists against exact search with the same metric."""

    metric: Metric
    backend: str
    k: int = Field(ge=1)
    search_k: int
    queries: int = Field(ge=0)
    recall_at_k: float
    queries_per_second: float
    exact_queries_per_second: float


class AnnEvaluation(_Strict):
    similar_items: AnnFigures
    recommendations: AnnFigures | None = None


class Ranking(RootModel[dict[str, float]]):
    """Ranking figures of top-N lists on held-out interactions, as published: ``name@k``
    of every metric at every ``evaluate.k``, and ``users``, how many users were
    evaluated (empty where none had a held-out item)."""

    @field_validator("root")
    @classmethod
    def _known_keys(cls, figures: dict[str, float]) -> dict[str, float]:
        for key in figures:
            if key != "users":
                RankingMetric.parse(key)
        return figures

    @property
    def users(self) -> int:
        return int(self.root.get("users", 0))

    @property
    def ks(self) -> list[int]:
        """The cut-offs measured, ascending."""
        return sorted({RankingMetric.parse(key).k for key in self.root if key != "users"})

    def get(self, metric: RankingMetric | str, default: float | None = None) -> float | None:
        """A figure (``RankingMetric("ndcg", 10)``), or ``default`` where it was not measured."""
        return self.root.get(str(metric), default)

    def at(self, name: str, k: int, default: float = float("nan")) -> float:
        """The figure of ``name`` at ``k`` (``default``, NaN, where it was not measured)."""
        return self.root.get(f"{name}@{k}", default)

    def __bool__(self) -> bool:
        return bool(self.root)

    # read as the mapping it is published as: keys ``name@k`` and ``users``
    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.root)

    def __getitem__(self, key: RankingMetric | str) -> float:
        return self.root[str(key)]

    def __contains__(self, key: object) -> bool:
        return key in self.root

    def __len__(self) -> int:
        return len(self.root)

    def items(self) -> ItemsView[str, float]:
        return self.root.items()

    def keys(self) -> KeysView[str]:
        return self.root.keys()


class Evaluation(_Strict):
    ann: AnnEvaluation
    ranking: Ranking | None = None
    """Ranking metrics of the published lists on held-out interactions (``users``: how many)."""
    ranking_exact: Ranking | None = None
    """The same for exact top-N lists of the same users."""


class ModelEntry(_Strict):
    """One model of the run: what it is, its files, how its indices are served, its figures."""

    type: str
    params: dict[str, Any]
    dim: int = Field(ge=1)
    factors: Factors
    indices: dict[Metric, IndexEntry]
    outputs: Outputs
    rows: Rows
    timings: dict[str, float]
    evaluation: Evaluation
    carried_over_from: str | None = None
    fingerprint: str | None = None
    """sha256 of what the model's files depend on (input, split, params, seed, settings):
    a partial run carries the model over only while it is unchanged."""

    def paths(self) -> list[str]:
        """Every file of the run this entry names."""
        named = [self.factors.item, self.factors.user, *self.factors.extras.values()]
        for output in (self.outputs.similar_items, self.outputs.recommendations):
            named += output.files() if output is not None else []
        for index in self.indices.values():
            named += index.paths()
        return [p for p in named if p is not None]


class GateCheck(_Strict):
    """One check of the promotion gate: a figure of the current run against this run's."""

    name: str
    """``users``, ``items``, ``interactions``, or ``<metric> of <model>`` (``ndcg@10 of als``)."""
    current: float
    """The figure of the run that was current."""
    candidate: float
    """The figure of this run."""
    drop: float
    """Share lost: (current - candidate) / current; negative where it grew."""
    limit: float
    """The most it may lose (``promotion.max_input_drop`` or ``max_metric_drop``)."""
    passed: bool


class Promotion(_Strict):
    """The promotion gate's verdict on a production run (docs/tables.md)."""

    gate: Literal["passed", "failed", "off"]
    """``passed``: made current; ``failed``: kept complete but not made current (held);
    ``off``: not checked (``promotion.enabled: false`` or ``recsys run --no-gate``)."""
    against: str | None = None
    """The run that was current when this one was checked (None: there was none)."""
    metric: str | None = None
    """The headline metric compared per model: ndcg at the largest ``evaluate.k``."""
    checks: list[GateCheck] = Field(default_factory=list)
    reason: str | None = None
    """Why the run was held, in one line (``gate: failed`` only)."""

    @property
    def held(self) -> bool:
        return self.gate == "failed"


class ForwardFigures(_Strict):
    """How one model's published recommendations of the measured run did on the
    interactions that came after that run's input (docs/evaluation.md)."""

    type: str
    """The model's type in the measured run."""
    top_n: int = Field(ge=1)
    """N: the length of the measured run's lists."""
    users: int = Field(ge=0)
    """Users measured: known to the measured run, with at least one new item."""
    hits: int = Field(ge=0)
    """Of them, users with at least one of their new items in their list."""
    hit_rate: float
    """hits / users."""
    pairs: int = Field(ge=0)
    """New (user, item) pairs of the users measured."""
    found: int = Field(ge=0)
    """Of them, pairs whose item was in the user's list."""
    recall: float
    """recall@N: per user, new items found in the list / new items; averaged over users."""
    lift_hit_rate: float | None = None
    """hit_rate over the baseline's (None: no baseline, or it has no hit)."""
    lift_recall: float | None = None
    """recall over the baseline's (None: no baseline, or its recall is 0)."""


class Forward(_Strict):
    """The lists of the run that was current, measured against the interactions of this
    run's input that came after that run's input ended (``forward`` in the manifest)."""

    against: str
    """The run measured: the one that was current when this run started."""
    timestamp_type: TimestampType
    after: float
    """That run's ``input.last_timestamp``: an interaction is new if its timestamp is later."""
    until: float
    """This run's ``input.last_timestamp``: the end of the window."""
    rows: int = Field(ge=0)
    """(user, item) pairs of this run's input with a timestamp after ``after``."""
    users: int = Field(ge=0)
    """Users measured: known to the measured run, with at least one new item."""
    pairs: int = Field(ge=0)
    """New pairs of the users measured (every model is measured on these)."""
    unknown_users: int = Field(ge=0)
    """Users of new rows the measured run did not know (no list): excluded."""
    pairs_of_unknown_users: int = Field(ge=0)
    pairs_of_unknown_items: int = Field(ge=0)
    """Pairs of users measured with an item the measured run did not know: counted as
    misses (no list could hold them)."""
    pairs_seen_before: int = Field(ge=0)
    """Pairs already in the measured run's data (the lists leave seen items out): excluded."""
    baseline: str | None = None
    """The measured run's ``popular`` model, which the lifts are against."""
    models: dict[str, ForwardFigures] = Field(default_factory=dict)

    @property
    def window(self) -> str:
        """``after .. until`` as text (dates in ISO 8601, UTC)."""
        return (
            f"{timestamp_text(self.after, self.timestamp_type)} .. "
            f"{timestamp_text(self.until, self.timestamp_type)}"
        )


class RunManifest(_Strict):
    """``manifest.json`` of a published run."""

    format: Literal["recsys-run/4"] = RUN_FORMAT
    run_id: str
    purpose: Literal["production", "evaluation"] = "production"
    """``evaluation``: models trained on a split and not refit; published without moving
    ``CURRENT``, never served by default."""
    created_at: str
    completed_at: str
    recsys_version: str
    config: dict[str, Any]
    """The validated config as JSON (``recsys.config.parse_config`` reads it back)."""
    config_sha256: str
    input: InputInfo
    data: DataFiles
    holdout: HoldoutInfo | None = None
    lists: dict[RankedKind, ListSpec]
    """The published lists: the metric that serves each and its length (the lookups'
    defaults)."""
    timings: dict[str, float]
    models: dict[str, ModelEntry] = Field(min_length=1)
    best_model: str | None = None
    """The model with the highest headline metric (ndcg at the largest ``evaluate.k``) on
    the held-out interactions, among the models with ranking figures (None: none has
    them); the lookups' default model."""
    promotion: Promotion | None = None
    """The promotion gate's verdict (production runs; None in evaluation runs)."""
    forward: Forward | None = None
    """The current run's lists measured against this input's later interactions (None:
    no timestamps, no current run, or no later interactions)."""
    report: RunPath | None = None
    files: dict[str, FileEntry] = Field(default_factory=dict)
    """Every file of the run folder but the manifest and ``_SUCCESS``: size and sha256."""

    @field_validator("files")
    @classmethod
    def _relative_files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for path in files:
            check_relative_path(path)
        return files

    @model_validator(mode="after")
    def _best_model_listed(self) -> RunManifest:
        if self.best_model is not None and self.best_model not in self.models:
            raise ValueError(f"best_model: {self.best_model!r} is not one of the run's models")
        return self

    @model_validator(mode="after")
    def _named_files_listed(self) -> RunManifest:
        for path in self.paths():
            check_relative_path(path)
        if self.files:
            missing = [p for p in self.paths() if p not in self.files]
            if missing:
                raise ValueError(f"files named but not listed with a checksum: {', '.join(missing)}")
            for part in self.list_parts():
                listed = self.files[part.path]
                if (listed.size_bytes, listed.sha256) != (part.size_bytes, part.sha256):
                    raise ValueError(f"{part.path}: its part entry and its file entry differ")
        return self

    def list_parts(self) -> list[ListPart]:
        """Every part file of every published list."""
        return [
            part
            for model in self.models.values()
            for output in (model.outputs.recommendations, model.outputs.similar_items)
            if output is not None
            for part in output.parts
        ]

    def checked(self) -> RunManifest:
        """This manifest after the checks validation makes (a copy made with
        ``model_copy(update=...)`` is not validated): paths relative, every file it names
        listed with its checksum."""
        for path in self.files:
            check_relative_path(path)
        return self._named_files_listed()

    def paths(self) -> list[str]:
        """Every file path the manifest names (outside :attr:`files`)."""
        named = [self.data.users, self.data.items, self.data.user_items, self.data.stats]
        named += [p for p in (self.data.holdout, self.data.item_rules, self.report) if p is not None]
        for model in self.models.values():
            named += model.paths()
        return named

    def model(self, name: str | None = None) -> tuple[str, ModelEntry]:
        """A model by name (default: the first), or a one-line error naming the ones there are."""
        from recsys.errors import QueryError

        name = name or next(iter(self.models))
        if name not in self.models:
            raise QueryError(f"model {name!r} is not in run {self.run_id} (has: {', '.join(self.models)})")
        return name, self.models[name]

    def to_json(self) -> str:
        """``manifest.json`` as published."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


# ---------------------------------------------------------------- parsing


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {'unknown field' if item['type'] == 'extra_forbidden' else message}")
    more = f" (and {error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "; ".join(problems) + more


def parse_manifest(text: str | bytes, source: str) -> RunManifest:
    """A manifest from its JSON text; a one-line :class:`RunError` naming ``source`` and
    the field when it does not validate."""
    try:
        raw = json.loads(text)
    except UnicodeDecodeError as exc:
        raise RunError(
            f"{source}: not a readable manifest (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None
    except ValueError as exc:
        raise RunError(f"{source}: not a readable manifest (invalid JSON: {exc})") from None
    except RecursionError:
        raise RunError(f"{source}: not a readable manifest (JSON nested too deeply)") from None
    if not isinstance(raw, dict):
        raise RunError(f"{source}: not a readable manifest (expected a JSON object)")
    if raw.get("format") != RUN_FORMAT:
        raise RunError(
            f"{source}: manifest format {raw.get('format')!r} is not {RUN_FORMAT!r}: "
            "written by another recsys version; run `recsys run` again"
        )
    try:
        return RunManifest.model_validate(raw)
    except ValidationError as exc:
        raise RunError(f"{source}: invalid manifest: {_describe(exc)}") from None


def read_manifest(run: storage.RunLayout) -> RunManifest:
    """The typed manifest of a run folder (a one-line RunError if it cannot be read or
    does not validate)."""
    try:
        text = storage.read_text(run.manifest)
    except OSError as exc:
        raise RunError(f"{run.manifest}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise RunError(
            f"{run.manifest}: not a readable manifest (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None
    return parse_manifest(text, str(run.manifest))
