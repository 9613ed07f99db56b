"""Pipeline configuration: pydantic models, YAML loading and the config hash.

YAML is parsed once, here, at the edge. Every model rejects unknown keys and names
them in the error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recsys.errors import ConfigError, registered
from recsys.exports import ExportConfig, SettingsProblems, path_settings
from recsys.index.base import BackendSettings
from recsys.models import get_model_type
from recsys.models.base import Choice, Dimension, FloatRange, IntRange, ModelParams, params_problems

Metric = Literal["dot", "angular"]
MAX_SEED = 2**31 - 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Strict):
    """The interactions table a run reads (``user_id``, ``item_id``, optional ``weight``
    and ``timestamp``)."""

    path: str | None = None
    """Interactions table (parquet or CSV). A relative path in a config file resolves
    against the config file's folder. ``recsys run --interactions`` overrides it."""


class OutputConfig(_Strict):
    """Where runs are published, and with which permissions."""

    root: str = "data/outputs"
    """Output root: runs are published under ``<root>/runs/<run_id>``; ``<root>/CURRENT``
    names the current run (the newest complete run the promotion gate let through, or
    one made current by ``recsys promote``) and ``<root>/latest`` links to it. A relative
    path set in a config file resolves against the config file's folder; the default is
    relative to the working directory."""
    mode: str = "0644"
    """Permissions of every published file, in octal (folders get the same plus ``x``
    where there is ``r``: 0644 -> 0755). Set explicitly, whatever the process's umask,
    so that the readers of the outputs can read them; ``0640`` limits them to the group.
    A mode that lets the group or others write (``0664``, ``0777``) is refused: anyone
    could then replace a published file, ``runs/`` or ``CURRENT``."""

    @field_validator("mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise ValueError(f"mode must be an octal permission like 0644, found {value!r}")
        if int(value, 8) & 0o600 != 0o600:
            raise ValueError(f"mode {value} must let the owner read and write (0600)")
        if int(value, 8) & 0o022:
            raise ValueError(
                f"mode {value} lets the group or others write, so anyone could replace published "
                "files, runs/ and CURRENT: refused (0644, 0640 or 0600; only the owner writes)"
            )
        return value

    @property
    def file_mode(self) -> int:
        return int(self.mode, 8)


class _ParamsProblems(ValueError):
    """A model's params do not fit its type. ``problems`` keeps each one with its location
    under the model (``params.factorz``), so that the error names the full dotted key."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems  # (location, kind: unknown | missing | invalid, message)
        super().__init__("; ".join(f"{where}: {message}" for where, _, message in problems))


class ModelConfig(_Strict):
    name: str
    """Unique name of the model in the run; used in paths and in every output row."""
    type: str
    """Model type, one of the registry (``recsys.models.MODEL_TYPES``): ``als``
    (implicit's AlternatingLeastSquares), ``bpr`` (BayesianPersonalizedRanking), ``lmf``
    (LogisticMatrixFactorization), ``spectral`` (GF-CF's low-pass graph filter as
    embeddings), ``popular`` (the popularity baseline), ``precomputed``: vectors made
    elsewhere, read from files (see params), or ``blend``: the weighted sum of other
    models of the config (see params)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Params of the type, checked against its typed params model when the config loads
    (unknown names, wrong types and out-of-range values are refused): each type's params
    are listed below; ``random_state`` defaults to the config's ``seed``. Kept as given,
    so the config hash sees what the user wrote; ``typed_params`` is the checked object."""

    @field_validator("type")
    @classmethod
    def _registered_type(cls, value: str) -> str:
        return registered(get_model_type, value)

    @model_validator(mode="after")
    def _params_fit_the_type(self) -> ModelConfig:
        model_type = get_model_type(self.type)
        try:
            model_type.params.model_validate(self.params)
        except ValidationError as exc:
            expected = f"{self.type} params: {', '.join(sorted(model_type.params.model_fields))}"
            raise _ParamsProblems(
                [
                    (f"params.{p.key}", p.kind, expected if p.kind == "unknown" else p.message)
                    for p in params_problems(exc)
                ]
            ) from None
        return self

    @property
    def typed_params(self) -> ModelParams:
        """``params`` as the type's typed params object (defaults filled in)."""
        return get_model_type(self.type).params.model_validate(self.params)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):  # match() lets "$" pass a trailing newline
            raise ValueError(
                f"model name {value!r} must be 1-64 characters of letters, digits, '_', '-', "
                "'.', starting with a letter or digit"
            )
        return value


LEGACY_INDEX_KEYS = ("n_trees", "search_k")
"""Keys of ``index`` that earlier configs set at its top level: read as ``index.annoy``'s."""


def _moved_legacy_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], set[str], list[tuple[str, str, str]]]:
    """``index`` with its earlier top-level Annoy keys moved into ``annoy``; the keys
    moved, and a problem for each also set in ``annoy`` to another value."""
    raw = dict(raw)
    legacy = {key: raw.pop(key) for key in LEGACY_INDEX_KEYS if key in raw}
    section = raw.get("annoy")
    if not legacy or not isinstance(section, dict | None):
        return raw, set(legacy), []  # no earlier keys, or a section refused as it stands
    section = dict(section or {})
    problems = [
        (key, "invalid", f"{value!r} here and {section[key]!r} in index.annoy.{key}: set one")
        for key, value in legacy.items()
        if key in section and section[key] != value
    ]
    raw["annoy"] = {**section, **legacy}
    return raw, set(legacy), problems


def _section_problems(
    family: str, model: type[BaseModel], error: ValidationError, legacy: set[str]
) -> list[tuple[str, str, str]]:
    """One problem per key of a backend section (named as the user wrote it: a key moved
    from the top level of ``index`` by its own name)."""
    expected = f"index.{family} keys: {', '.join(model.model_fields)}"
    problems: dict[str, tuple[str, str, str]] = {}
    for problem in params_problems(error):
        first = problem.key.split(".")[0]  # a union's members: one line for the key
        where = first if first in legacy else family if first == "<params>" else f"{family}.{first}"
        message = expected if problem.kind == "unknown" else problem.message
        problems.setdefault(where, (where, problem.kind, message))
    return list(problems.values())


class IndexConfig(_Strict):
    """How each model's two indices (``dot`` for recommendations, ``angular`` for similar
    items) are built and served. Each backend family's settings are a section of their
    own, ``index.<family>`` (``index.annoy.n_trees``), checked against the backend's
    settings model when the config loads; ``index.n_trees`` and ``index.search_k``, the
    keys of earlier configs, are read as ``index.annoy``'s."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the sections: checked below

    backend: str = "auto"
    """``annoy`` (approximate, memory-mapped index files), ``exact`` (blocked matrix
    product + top-k over the same interface), ``faiss`` or ``hnswlib`` (the ``ann``
    extra: ``pip install 'recsys[ann]'``), another backend of the registry, or
    ``auto``: per index, the approximate strategy reaching ``evaluate.target_recall``
    whose build + probe + serving of the run's queries takes the least time, exact search
    where its serving alone takes less (the manifest records the measurements, and the
    reason the three times)."""
    auto_min_items: int = Field(default=10_000, ge=0)
    """With ``backend: auto``, catalogs of fewer items are served by exact search without
    building or probing an approximate index: below 10,000 items exact search was the
    faster at recall 0.95 in every case measured (64 to 1,024 factors, both metrics;
    docs/speed.md). 0 probes every catalog."""
    probe_seconds: float = Field(default=60.0, gt=0)
    """With ``backend: auto``, the seconds each index's probe (the recall/speed sweeps of
    every strategy) may take: a sweep tries no further setting once they are spent,
    strategies not yet swept then are not built, and a strategy whose build is estimated
    to outlast the seconds left is not started (it could not be probed). The choice is
    made among what was measured."""
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    """Seed of every index build (Annoy's ``set_seed``, faiss's k-means, hnswlib's graph;
    0 to 2^31 - 1, Annoy's range); defaults to the config's ``seed``."""

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: Any) -> Any:
        """Every backend section typed by its backend's settings model (defaults for the
        sections not given), the earlier top-level Annoy keys moved into ``annoy``."""
        from recsys.index.registry import settings_models

        if not isinstance(raw, dict):
            return raw
        models = settings_models()
        raw, legacy, problems = _moved_legacy_keys(raw)
        known = ", ".join([*cls.model_fields, *models])
        for key in [k for k in raw if k not in cls.model_fields]:
            if key not in models:
                problems.append((str(key), "unknown", f"index keys: {known}"))
            elif not isinstance(raw[key], models[key]):
                try:
                    raw[key] = models[key].model_validate(raw[key] if raw[key] is not None else {})
                except ValidationError as exc:
                    problems += _section_problems(str(key), models[key], exc, legacy)
        if problems:
            raise _ParamsProblems(problems)
        for family, model in models.items():
            raw.setdefault(family, model())
        return raw

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        from recsys.index.registry import backend_choices, missing_extra

        if value not in backend_choices():
            raise ValueError(f"unknown backend {value!r}: expected one of {', '.join(backend_choices())}")
        if (missing := missing_extra(value)) is not None:
            raise ValueError(missing)
        return value

    def settings(self, family: str) -> BackendSettings:
        """The typed settings of a backend family (its section, else its defaults)."""
        from recsys.index.registry import settings_models

        found = (self.model_extra or {}).get(family)
        if isinstance(found, BackendSettings):
            return found
        return settings_models().get(family, BackendSettings)()


ItemList = Annotated[list[StrictInt | StrictStr], Field(max_length=1_000_000)]


class RecommendConfig(_Strict):
    """The published top-N lists of every user, and which items they may contain."""

    top_n: int = Field(default=20, ge=1, le=10_000)
    """Recommendations per user; already-seen items are never recommended."""
    metric: Metric = "dot"
    """Index that serves recommendations: ``dot`` ranks as the model scores."""
    include_items: ItemList | str | None = None
    """Only these items may be recommended: a list of item ids (read as the run's item
    ids) or a table (parquet or CSV) with an ``item_id`` column; a relative path in a
    config file resolves against the config file's folder. Ids the run does not know are
    ignored (the log counts them); matching no item of the run is an error. Similar
    items are not restricted."""
    exclude_items: ItemList | str | None = None
    """These items are never recommended (same forms as ``include_items``; with both,
    the items included and not excluded). Users get fewer than ``top_n`` items only
    where fewer allowed items are left that they have not seen."""

    @field_validator("include_items", "exclude_items")
    @classmethod
    def _list_or_table(cls, value: list[int | str] | str | None) -> list[int | str] | str | None:
        if isinstance(value, str) and not value.strip():
            raise ValueError("expected a list of item ids or the path of a table with an item_id column")
        return value


class SimilarItemsConfig(_Strict):
    """The published similar items of every item."""

    top_n: int = Field(default=20, ge=1, le=10_000)
    """Similar items per item; an item is never similar to itself."""
    metric: Metric = "angular"
    """Index that serves similar items: ``angular`` ranks by cosine similarity."""


class SplitConfig(_Strict):
    """Held-out interactions for ranking metrics."""

    method: Literal["none", "random", "leave_last", "time"] = "none"
    """How to hold interactions out for ranking metrics: ``none`` (train on everything;
    no ranking metrics unless a holdout table is given), ``random`` (per user, a random
    ``fraction`` of the user's items), ``leave_last`` (per user, the last ``n`` items by
    timestamp) or ``time`` (the latest ``fraction`` of all interactions). With a split,
    models train on the rest and the published recommendations come from those models."""
    fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share held out by ``random`` (per user) and ``time`` (globally)."""
    n: int = Field(default=1, ge=1)
    """Items per user held out by ``leave_last``."""


class EvaluateConfig(_Strict):
    """What a run measures: recall of the served lists against exact search, and ranking
    metrics on held-out interactions (docs/evaluation.md)."""

    refit: bool = True
    """With a ``split``: evaluate models trained on the training part, then train them
    again on all the input for publication, so that the published lists never miss what
    was held out and never contain an input interaction. ``false``: publish the models
    trained on the training part as an evaluation run (``CURRENT`` does not move)."""
    k: int | list[int] = 10
    """Cut-off(s) for ranking metrics (each at most recommend.top_n); recall@k of the
    index against exact search uses the largest."""
    sample_users: int = Field(default=1000, ge=1)
    """Users sampled for the recommendation recall figure."""
    sample_items: int = Field(default=1000, ge=1)
    """Items sampled for the similar-items recall figure."""
    split: SplitConfig = SplitConfig()
    """Held-out interactions for ranking metrics."""
    target_recall: float = Field(default=0.95, gt=0.0, le=1.0)
    """Recall@k against exact search that a tuned search_k must reach (see index.search_k)."""
    tune_queries: int = Field(default=500, ge=10)
    """Sampled users (dot) or items (angular) on which search_k is tuned."""
    holdout: str | None = None
    """A test table (same format as the input) to evaluate against, used as given
    (``recsys run --holdout`` overrides). Excludes ``split``."""

    @field_validator("k")
    @classmethod
    def _positive(cls, value: int | list[int]) -> int | list[int]:
        values = [value] if isinstance(value, int) else value
        if not values or min(values) < 1:
            raise ValueError("k must be a positive int or a non-empty list of them")
        return value

    @property
    def ks(self) -> list[int]:
        return sorted(set([self.k] if isinstance(self.k, int) else self.k))


class ScheduleConfig(_Strict):
    """The scheduled deployment ``recsys deploy`` serves (docs/operations.md)."""

    cron: str = "0 3 * * *"
    """Cron expression for the scheduled deployment (``recsys deploy``)."""
    timezone: str = "UTC"
    """Time zone the cron expression is read in."""
    deployment_name: str = "nightly"
    """Name of the Prefect deployment: 1-64 letters, digits, ``_``, ``-``, ``.``, starting
    with a letter or digit (as model names)."""

    @field_validator("deployment_name")
    @classmethod
    def _safe_deployment_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"deployment_name {value!r} must be 1-64 characters of letters, digits, '_', '-', "
                "'.', starting with a letter or digit"
            )
        return value

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        import datetime as dt

        from cronsim import CronSim, CronSimError

        if len(value.split()) != 5:
            raise ValueError(f"cron must have 5 fields, found {len(value.split())}: {value!r}")
        try:
            CronSim(value, dt.datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"cron {value!r} is not a valid expression ({exc})") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Berlin)"
            ) from None
        return value


class RetentionConfig(_Strict):
    """Which published runs are kept."""

    keep_runs: int | None = Field(default=None, ge=1)
    """Complete runs to keep after each publish (null keeps all). CURRENT (the run
    ``latest`` links to), the newest run the promotion gate held after it (until a newer
    run is current or held), and runs that a lookup is reading are never deleted."""


class PromotionConfig(_Strict):
    """The promotion gate: a complete run becomes ``CURRENT`` (and ``latest``) only when
    it passes checks against the current run; one that fails is kept under ``runs/``,
    complete but held, with the reason in its manifest and report, and ``recsys run``
    exits 4. ``recsys promote RUN_ID`` promotes a held run by hand."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: StrictBool = True
    """Check each run against the current run before it becomes current; false (or
    ``recsys run --no-gate``) promotes every complete run."""
    max_input_drop: float = Field(default=0.5, ge=0.0, le=1.0)
    """Largest share of the current run's users, items or interactions the new input may
    have lost (0.5: a run on less than half the users is held). 1 turns the check off."""
    max_metric_drop: float = Field(default=0.1, ge=0.0)
    """Largest relative fall of a model's headline metric (ndcg at the largest
    ``evaluate.k``, on held-out interactions) against the same model in the current run,
    where both runs measured it (0.1: from 0.20 to below 0.18 is held)."""


class RunConfig(_Strict):
    """How a run uses its time and threads."""

    timeout_seconds: float | None = Field(default=6 * 3600, gt=0)
    """`recsys run` gives up after this long (exit 3, nothing published), so a run whose
    Prefect API disappeared ends instead of hanging; null waits forever."""
    parallel_models: int = Field(default=1, ge=1, le=64)
    """Models trained, indexed, scored and evaluated at the same time (threads of the run);
    1: one after the other. Above 1, each model's BLAS uses one thread (the spectral
    model's SVD one core), so that the models share the cores; memory holds that many
    models' factors and scores at once. BPR and LMF fit on one thread when seeded for
    determinism: a run with several models finishes sooner with 2 on two cores."""


class TaskRunnerConfig(_Strict):
    """Where users and items are scored: in the flow's process, or on Dask workers
    (docs/operations.md)."""

    type: Literal["local", "dask"] = "local"
    """``local`` scores in the flow's process (threads on every core); ``dask`` scores
    shards of users (and of items) on Dask workers through Prefect's Dask task runner."""
    address: str | None = None
    """Scheduler of an existing Dask cluster (``tcp://host:8786``); null starts a local
    cluster of ``n_workers`` processes for the run. Workers read the run folder by path,
    so an existing cluster needs the output root on storage they all see."""
    n_workers: int = Field(default=2, ge=1, le=1024)
    """Worker processes of the local cluster; with ``address``, the workers to plan for.
    Shards are cut so that each worker gets at least two."""
    threads_per_worker: int = Field(default=1, ge=1, le=256)
    """Query threads each worker uses (BLAS stays at one thread)."""
    shard_rows: int = Field(default=50_000, ge=100)
    """Most users (or items) per shard, the unit of work sent to a worker."""

    @model_validator(mode="after")
    def _address_for_dask(self) -> TaskRunnerConfig:
        if self.address is not None:
            if self.type != "dask":
                raise ValueError("task_runner.address needs task_runner.type: dask")
            from urllib.parse import urlsplit

            try:  # urlsplit and .port raise on a bad IPv6 host or port
                parts = urlsplit(self.address)
                host, port = parts.hostname, parts.port
            except ValueError:
                host, port = None, None
            if "://" not in self.address or not host or not port:
                raise ValueError(
                    f"task_runner.address must look like tcp://host:8786, found {self.address!r}"
                )
        return self


TUNE_METRIC = re.compile(r"^(precision|recall|ndcg|map|hit_rate|coverage)@([1-9][0-9]{0,5})$")
"""A metric ``recsys tune`` can maximise: a ranking metric at a cut-off."""


class RangeSpec(_Strict):
    """A search range of one param: whole numbers when both bounds are ints (``16``),
    real numbers otherwise (``0.01``, ``1000.0``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    low: StrictInt | float
    """Smallest value tried."""
    high: StrictInt | float
    """Largest value tried."""
    log: StrictBool = False
    """Sample on a log scale (both bounds > 0): for values spanning orders of magnitude."""

    @field_validator("low", "high", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, found {value!r}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not all(math.isfinite(v) for v in (self.low, self.high)):
            raise ValueError(f"bounds must be finite, found {self.low!r}, {self.high!r}")
        if self.low > self.high:
            raise ValueError(f"low {self.low!r} is above high {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, found {self.low!r}")
        return self

    def dimension(self) -> IntRange | FloatRange:
        """The search dimension: an :class:`IntRange` if both bounds are ints."""
        if isinstance(self.low, int) and isinstance(self.high, int):
            return IntRange(self.low, self.high, self.log)
        return FloatRange(float(self.low), float(self.high), self.log)


def _dimension_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "choices"
    return "range" if isinstance(value, dict | RangeSpec) else None


Choices = Annotated[list[StrictBool | StrictInt | float | StrictStr | None], Field(min_length=1)]
"""A search dimension over listed values (``[32, 64, 128]``, ``[true, false]``)."""
DimensionSpec = Annotated[
    Annotated[RangeSpec, Tag("range")] | Annotated[Choices, Tag("choices")],
    Discriminator(
        _dimension_kind,
        custom_error_type="dimension",
        custom_error_message="expected {low, high[, log]} or a list of values",
    ),
]


def spec_dimension(spec: RangeSpec | list[Any]) -> Dimension:
    """The search dimension a config's spec describes."""
    return spec.dimension() if isinstance(spec, RangeSpec) else Choice(tuple(spec))


class TuneConfig(_Strict):
    """``recsys tune``: the search for one model's params (Optuna) on a validation split
    carved from the training data."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    trials: int = Field(default=20, ge=1)
    """Trials searched after the baseline trial (the config's own params, measured first);
    ``recsys tune --trials`` overrides."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Wall-time budget of the search: it ends after ``trials`` or this long, whichever
    comes first (a running trial finishes); null: no budget. ``--timeout`` overrides."""
    metric: str | None = None
    """Metric maximised on the validation split, ``<name>@<k>`` with name one of
    precision, recall, ndcg, map, hit_rate, coverage; null: ndcg at the largest
    ``evaluate.k``. ``--metric`` overrides."""
    sampler: Literal["tpe", "random"] = "tpe"
    """``tpe``: Optuna's Tree-structured Parzen Estimator (seeded with ``seed``), which
    draws more where earlier trials scored well; ``random``: independent seeded draws."""
    pruning: bool = True
    """Stop a trial early when its validation metric part-way through training is below
    the median of earlier trials at the same iteration (Optuna's MedianPruner, after 5
    complete trials)."""
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of each user's training items held out for validation (random, seeded with
    ``seed + 7``); the run's own held-out part (``evaluate.split``) is never used."""
    space: dict[str, dict[str, DimensionSpec]] = Field(default_factory=dict)
    """Per model name of the config, param -> ``{low, high, log}`` (ints if both bounds
    are ints, else floats) or a list of values; each replaces that param's default
    dimension (``recsys.models`` types' ``space``). Params must be the type's, and every
    bound or value must be valid for it. A blend's are its parts' names, each a range or
    values of its weight (> 0; by default every part's but the first's, fixed at 1.0,
    from 0.05 to 20, log)."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and not TUNE_METRIC.fullmatch(value):
            raise ValueError(
                f"metric must look like ndcg@10 (precision, recall, ndcg, map, hit_rate or "
                f"coverage at a cut-off), found {value!r}"
            )
        return value


def _tune_fits_models(tune: TuneConfig, info: ValidationInfo) -> TuneConfig:
    """Every ``tune.space`` entry names a trained model of the config and params of its
    type, with values the type accepts."""
    models = {m.name: m for m in info.data.get("models") or []}
    if not models:  # the models failed to validate: that error is reported
        return tune
    for name, space in tune.space.items():
        where = f"space.{name}"
        if name not in models:
            raise ValueError(f"{where}: no model named {name!r} (the config defines {', '.join(models)})")
        model = models[name]
        model_type = get_model_type(model.type)
        if model.type == "blend":  # its parts' weights
            _blend_space_fits(where, model, space)
            continue
        if model_type.source != "interactions":
            raise ValueError(f"{where}: a {model.type} model is not trained, so not tuned")
        fields = model_type.params.model_fields
        for param, spec in space.items():
            if param not in fields:
                raise ValueError(
                    f"{where}.{param}: unknown parameter for {model.type} "
                    f"(expected some of: {', '.join(sorted(fields))})"
                )
            dimension = spec_dimension(spec)
            values = dimension.values if isinstance(dimension, Choice) else (dimension.low, dimension.high)
            for value in values:
                try:
                    model_type.params.model_validate({**model.params, param: value})
                except ValidationError as exc:
                    problems = "; ".join(p.message for p in params_problems(exc))
                    raise ValueError(f"{where}.{param}: {value!r} is refused: {problems}") from None
    return tune


def _blend_space_fits(where: str, model: ModelConfig, space: dict[str, Any]) -> None:
    """A blend's ``tune.space`` names its parts, each a range or values of weights > 0."""
    parts = model.params.get("parts") if isinstance(model.params, dict) else None
    for part, spec in space.items():
        if not isinstance(parts, dict) or part not in parts:
            raise ValueError(f"{where}.{part}: not a part of the blend {model.name}")
        dimension = spec_dimension(spec)
        values = dimension.values if isinstance(dimension, Choice) else (dimension.low, dimension.high)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{where}.{part}: a weight must be a number > 0, found {value!r}")


CheckedTuneConfig = Annotated[TuneConfig, AfterValidator(_tune_fits_models)]


class PipelineConfig(_Strict):
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
    """Seed for training, sampling and index builds: same seed and data, same outputs
    (0 to 2^31 - 1: the range Annoy's ``set_seed`` takes)."""
    input: InputConfig = InputConfig()
    output: OutputConfig = OutputConfig()
    models: list[ModelConfig] = Field(min_length=1)
    """Models trained in each run; several per run, each with its own name."""
    index: IndexConfig = IndexConfig()
    recommend: RecommendConfig = RecommendConfig()
    similar_items: SimilarItemsConfig = SimilarItemsConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    retention: RetentionConfig = RetentionConfig()
    promotion: PromotionConfig = PromotionConfig()
    """The promotion gate: when a complete run may replace the current one."""
    run: RunConfig = RunConfig()
    task_runner: TaskRunnerConfig = TaskRunnerConfig()
    tune: CheckedTuneConfig = TuneConfig()
    """``recsys tune``: trials, budget, metric, sampler, pruning, validation share, search space."""
    exports: list[ExportConfig] = []
    """Copies of each published run in other destinations (a DuckDB database file, ...),
    made in turn after the run is published; parquet stays the product. Each entry is an
    exporter ``type``, an optional ``name`` and the exporter's ``params``, listed below."""

    @model_validator(mode="after")
    def _evaluate_fits(self) -> PipelineConfig:
        if self.evaluate.holdout and self.evaluate.split.method != "none":
            raise ValueError("evaluate.holdout and evaluate.split exclude each other: set one")
        if max(self.evaluate.ks) > self.recommend.top_n:
            if "k" in self.evaluate.model_fields_set:
                raise ValueError(
                    f"evaluate.k {max(self.evaluate.ks)} is above recommend.top_n {self.recommend.top_n}"
                )
            capped = self.evaluate.model_copy(update={"k": self.recommend.top_n})  # the default k
            object.__setattr__(self, "evaluate", capped)
        return self

    @model_validator(mode="after")
    def _unique_model_names(self) -> PipelineConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique, repeated: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _blends_fit(self) -> PipelineConfig:
        """Every part of a blend is another model of the config with user vectors, and no
        blend is a part of itself, directly or through other blends."""
        models = {m.name: m for m in self.models}
        for position, model in enumerate(self.models):
            if model.type != "blend":
                continue
            where = f"models.{position}.params"
            if "scales" in model.params:
                raise _ParamsProblems(
                    [(f"{where}.scales", "invalid", "recorded by the run from the parts' scores, not set")]
                )
            for part in model.params["parts"]:
                problem = _blend_part_problem(models, model.name, part)
                if problem:
                    raise _ParamsProblems([(f"{where}.parts.{part}", "invalid", problem)])
        return self

    @property
    def only_precomputed(self) -> bool:
        """Every model brings its own vectors: no interactions table is needed."""
        return all(m.type == "precomputed" for m in self.models)

    def select_models(self, names: list[str]) -> list[ModelConfig]:
        """The models named, in config order; unknown names are a ConfigError."""
        known = {m.name for m in self.models}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"unknown model(s) {', '.join(unknown)}: the config defines {', '.join(sorted(known))}"
            )
        return [m for m in self.models if m.name in names]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def sha256(self) -> str:
        """Hash of the canonical JSON form: equal configs hash equal, whatever the YAML."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _blend_part_problem(models: dict[str, ModelConfig], blend: str, part: str) -> str | None:
    """Why ``part`` cannot be a part of the blend ``blend`` (None: it can)."""
    if part == blend:
        return "a blend cannot be a part of itself"
    if part not in models:
        return f"no model named {part!r} in the config (it defines {', '.join(models)})"
    model = models[part]
    vectors = get_model_type(model.type).source == "vectors" and model.type != "blend"
    if vectors and getattr(model.typed_params, "users", True) is None:
        return f"the {model.type} model {part} has no user vectors (params.users) to blend"
    cycle = _blend_cycle(models, blend, part, [blend])  # a blend among the parts: back to this one?
    return f"blends {' -> '.join(cycle)} form a cycle" if cycle else None


def _blend_cycle(models: dict[str, ModelConfig], blend: str, part: str, path: list[str]) -> list[str] | None:
    """The chain of blends from ``blend`` through ``part`` back to ``blend``, if any."""
    model = models.get(part)
    if model is None or model.type != "blend":
        return None
    for inner in model.params.get("parts", {}):
        if inner == blend:
            return [*path, part, blend]
        if inner not in path and inner != part:
            cycle = _blend_cycle(models, blend, inner, [*path, part])
            if cycle:
                return cycle
    return None


def _format_validation_error(source: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        nested = item.get("ctx", {}).get("error")
        if isinstance(nested, _ParamsProblems | SettingsProblems):  # one entry per param, with its full key
            for key, kind, message in nested.problems:
                problems.append(_problem(f"{where}.{key}" if where else key, kind, message))
        else:
            problems.append(_problem(where or "<root>", item["type"], item["msg"]))
    return f"{source}: invalid config: " + "; ".join(problems)


def _problem(where: str, kind: str, message: str) -> str:
    """One problem on one line: ``unknown key 'a.b'``, ``missing key 'a.b'``, ``a.b: message``."""
    if kind in ("extra_forbidden", "unknown"):
        return f"unknown key '{where}'" + (f" ({message})" if kind == "unknown" else "")
    if kind == "missing":
        return f"missing key '{where}'"
    return f"{where}: {message.removeprefix('Value error, ')}"


def parse_config(raw: Any, source: str = "<config>") -> PipelineConfig:
    """Validate an already-parsed mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, found {type(raw).__name__}")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


MAX_YAML_NODES = 100_000
"""A config expands to at most this many YAML nodes (aliases counted each time they are
used): a small file of nested aliases cannot blow up into gigabytes."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_nodes(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes of a YAML graph with every alias expanded (memoised: linear in the file)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once, then construction refuses it
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_nodes(item, memo) for item in node.value)
    else:
        total = 1
    memo[id(node)] = min(total, MAX_YAML_NODES + 1)
    return memo[id(node)]


PATH_KEYS = (
    ("input", "path"),
    ("output", "root"),
    ("evaluate", "holdout"),
    ("recommend", "include_items"),
    ("recommend", "exclude_items"),
)
MODEL_PATH_PARAMS = ("items", "item_ids", "users", "user_ids")


def _resolve_paths(raw: Any, folder: Path) -> Any:
    """Relative paths set in a config file, resolved against the file's folder."""
    if not isinstance(raw, dict):
        return raw

    def resolved(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((folder / value).resolve())
        return value

    for section, key in PATH_KEYS:
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section][key] = resolved(raw[section][key])
    for model in raw.get("models") or []:
        params = model.get("params") if isinstance(model, dict) else None
        if isinstance(params, dict) and model.get("type") == "precomputed":
            for key in MODEL_PATH_PARAMS:
                if key in params:
                    params[key] = resolved(params[key])
    for export in raw.get("exports") or []:
        params = export.get("params") if isinstance(export, dict) else None
        if isinstance(params, dict):
            for key in path_settings(export.get("type")):
                if key in params:
                    params[key] = resolved(params[key])
    return raw


def _yaml_problem(path: Path, error: yaml.YAMLError) -> str:
    """One line for a YAML error, naming the file, line and column as editors and
    compilers do (``c.yaml:3:11: not valid YAML: ...``), not PyYAML's ``<unicode string>``."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return f"{path}: not valid YAML: {' '.join(str(error).split())}"
    mark = error.problem_mark or error.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = error.problem or error.context or "syntax error"
    if error.problem and error.context:
        started = error.context_mark
        at = f" at line {started.line + 1}, column {started.column + 1}" if started else ""
        problem += f" ({error.context}{at})"
    return f"{where}: not valid YAML: {' '.join(problem.split())}"


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML config file. Relative paths in it resolve against its
    folder; duplicate keys and alias bombs are refused."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(f"{path}: cannot read config: not a regular file (a FIFO or a device)")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: cannot read config: it is a folder, expected a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {exc.start}); expected a YAML config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        if node is not None and _expanded_nodes(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{path}: the YAML expands to more than {MAX_YAML_NODES} nodes (aliases)")
        raw = _UniqueKeyLoader(text).get_single_data() if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    return parse_config(_resolve_paths(raw, path.resolve().parent), str(path))


DEFAULT_CONFIG = str(Path(__file__).with_name("defaults") / "production.yaml")
"""The config ``recsys run`` and ``recsys deploy`` use without ``--config``: one ALS
model, trained on all the input, no split (shipped with the package)."""


def resolve_inputs(
    config_path: str | None,
    interactions: str | None,
    output: str | None,
    config: PipelineConfig | None = None,
) -> tuple[PipelineConfig, str | None, str]:
    """The config (``config``, else read from ``config_path``), the interactions table
    (None for runs of precomputed vectors only) and the output root of a run, from the
    command line's choices and the config's."""
    config = config if config is not None else load_config(config_path or DEFAULT_CONFIG)
    input_path = interactions or config.input.path
    if not input_path and not config.only_precomputed:
        raise ConfigError("no interactions table: set input.path in the config or pass --interactions")
    return config, input_path, output or config.output.root
