"""Prepare: read and validate the interactions (or, for runs of precomputed vectors
only, the item ids of the vectors), split off held-out interactions, write id maps and
matrices into the run folder."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys import storage
from recsys.config import PipelineConfig
from recsys.data.interactions import (
    IdKind,
    IdMap,
    Interactions,
    InteractionTable,
    RowFacts,
    check_rows,
    clean_table,
    interactions_from_table,
)
from recsys.data.splits import map_holdout, split_table
from recsys.errors import ConfigError, InputError
from recsys.manifest import DataFiles, HoldoutInfo, InputInfo
from recsys.recommend import allowed_items, item_rules_table
from recsys.stages.results import ItemRules, Prepared, RuleCount
from recsys.storage import RunLayout

log = logging.getLogger(__name__)

RULE_KEYS = ("include_items", "exclude_items")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _data_files(run: RunLayout, with_holdout: bool = False) -> DataFiles:
    files = {key: run.relative(run.data_file(key)) for key in storage.DATA_FILES}
    if with_holdout:
        files["holdout"] = run.relative(run.holdout)
    if run.item_rules.exists():
        files["item_rules"] = run.relative(run.item_rules)
    return DataFiles(**files)


# ---------------------------------------------------------------- item rules


def read_rule_lists(config: PipelineConfig) -> dict[str, list[Any]]:
    """The ids of ``recommend.include_items`` / ``exclude_items`` as given: the config's
    list, or the ``item_id`` column of the table it names (read once per run)."""
    lists: dict[str, list[Any]] = {}
    for key in RULE_KEYS:
        value = getattr(config.recommend, key)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                frame = storage.read_any_table(value, ("item_id",))
            except InputError as exc:
                raise InputError(f"recommend.{key}: {exc}") from None
            if "item_id" not in frame.attrs["columns"]:
                found = ", ".join(map(str, frame.attrs["columns"])) or "none"
                raise ConfigError(f"recommend.{key}: {value} has no item_id column (found: {found})")
            value = frame["item_id"].tolist()
        lists[key] = list(value)
    return lists


def _typed(value: Any, kind: IdKind) -> Any:
    """An id read as the run's item ids (int or str), or None where it cannot be one."""
    if isinstance(value, bool | np.bool_) or value is None:
        return None
    if isinstance(value, float | np.floating):
        if not math.isfinite(value) or not float(value).is_integer():
            return None
        value = int(value)
    if isinstance(value, int | np.integer):
        return _int64(int(value)) if kind == "int" else str(int(value))
    if isinstance(value, str):
        if kind == "str":
            return value
        return _int64(int(value)) if _INTEGER.fullmatch(value) else None
    return None


def _int64(value: int) -> int | None:
    """An integer id as the run keeps integer ids (int64); None past its range: such an id
    is no item of any run, so it counts as unknown."""
    return value if INT64_MIN <= value <= INT64_MAX else None


def _known(ids: list[Any], items: IdMap) -> tuple[np.ndarray, int, int]:
    """Internal ids (sorted, unique) of the listed ids the run knows, how many distinct
    ids were listed (blank cells aside), and how many of them the run does not know."""
    typed: set[Any] = set()
    untyped: set[str] = set()
    for value in ids:
        if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
            continue
        as_id = _typed(value, items.kind)
        if as_id is None:
            untyped.add(repr(value))
        else:
            typed.add(as_id)
    listed = len(typed) + len(untyped)
    if not typed:
        return np.array([], dtype=np.int64), listed, listed
    external = np.asarray(list(typed), dtype=np.int64 if items.kind == "int" else object)
    internal = items.to_internal(external, strict=False)
    known = np.unique(internal[internal >= 0])
    return known, listed, listed - len(known)


def _resolve_rules(
    lists: dict[str, list[Any]], items: IdMap, log_counts: bool, check: bool
) -> tuple[dict[str, np.ndarray], dict[str, RuleCount], int]:
    """The rule lists as internal ids of ``items``, their counts and how many items they
    allow; with ``check``, a ConfigError where an include list matches no item or the
    rules leave none."""
    resolved: dict[str, np.ndarray] = {}
    counts: dict[str, RuleCount] = {}
    for key, ids in lists.items():
        known, listed, unknown = _known(ids, items)
        resolved[key] = known
        counts[key] = RuleCount(listed=listed, known=int(len(known)), unknown=unknown)
        if log_counts:
            log.info(
                "recommend.%s: %d of %d listed item ids are items of the run%s",
                key,
                len(known),
                listed,
                f"; {unknown} unknown id(s) ignored" if unknown else "",
            )
    include = resolved.get("include_items")
    allowed = allowed_items(len(items), include, resolved.get("exclude_items"))
    n_allowed = len(items) if allowed is None else int(allowed.sum())
    if check and include is not None and len(include) == 0:
        raise ConfigError(
            f"recommend.include_items: none of its {counts['include_items'].listed} item ids "
            f"is an item of the run ({len(items)} {items.kind} ids): nothing could be recommended"
        )
    if check and n_allowed == 0:
        raise ConfigError("recommend.include_items and exclude_items leave no item to recommend")
    return resolved, counts, n_allowed


def write_rules(
    run: RunLayout, lists: dict[str, list[Any]], items: IdMap, log_counts: bool = True
) -> ItemRules | None:
    """Resolve the rule lists against a run's items and write them into its data folder
    (nothing without rules). An include list that matches no item of the run, or rules
    that leave no item, are a ConfigError (checked on the published data only:
    ``log_counts``). Returns counts for the log and the model fingerprints."""
    if not lists:
        return None
    resolved, counts, n_allowed = _resolve_rules(lists, items, log_counts, check=log_counts)
    include = resolved.get("include_items")
    run.item_rules.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_path(run.item_rules) as tmp:
        pq.write_table(item_rules_table(items, include, resolved.get("exclude_items")), tmp)
    if log_counts:
        log.info("item rules: %d of %d items may be recommended", n_allowed, len(items))
    return ItemRules(**counts, allowed=n_allowed, sha256=storage.file_sha256(run.item_rules))


def _prepare_from_vectors(run: RunLayout, config: PipelineConfig, started: float) -> Prepared:
    """Id maps of a run of precomputed vectors only: the items (and users, if any) of the
    first precomputed model; no interactions, so nothing is excluded as seen."""
    from recsys.storage.vectors import read_vectors

    params = config.models[0].params
    items, _ = read_vectors(params["items"], params.get("item_ids"), params.get("column"))
    if params.get("users"):
        users, _ = read_vectors(params["users"], params.get("user_ids"), params.get("column"), "user")
    else:
        users = IdMap.from_ids(np.array([], dtype=np.int64), "int")
    stats = {
        "rows": 0,
        "zero_weight_rows_dropped": 0,
        "duplicate_rows_merged": 0,
        "interactions": 0,
        "users": len(users),
        "items": len(items),
    }
    interactions = Interactions(
        users=users,
        items=items,
        user_items=sp.csr_matrix((len(users), len(items)), dtype=np.float32),
        stats=stats,
    )
    storage.write_interactions(run.data_dir, interactions)
    rules = write_rules(run, read_rule_lists(config), items)
    source = Path(params["items"])
    return Prepared(
        item_rules=rules,
        input=InputInfo(
            path=str(source.resolve()),
            size_bytes=source.stat().st_size,
            sha256=storage.file_sha256(source),
            **stats,
            user_id_type=users.kind,
            item_id_type=items.kind,
        ),
        data=_data_files(run),
        seconds=round(time.perf_counter() - started, 3),
    )


def _check_top_n(config: PipelineConfig, interactions: Interactions, input_path: Any) -> None:
    if interactions.nnz == interactions.n_users * interactions.n_items:
        raise InputError(
            f"{input_path}: every one of the {interactions.n_users} users has interacted with every one "
            f"of the {interactions.n_items} items: there is nothing left to recommend"
        )
    _check_top_n_items(config, interactions.n_items, input_path)


def _check_top_n_items(config: PipelineConfig, n_items: int, input_path: Any) -> None:
    for section, top_n, limit in (
        ("recommend", config.recommend.top_n, n_items),
        ("similar_items", config.similar_items.top_n, n_items - 1),
    ):
        if top_n > limit:
            raise ConfigError(
                f"{section}.top_n is {top_n} but {input_path} has only {n_items} "
                f"items (at most {limit} possible)"
            )


# ---------------------------------------------------------------- validated tables

_validated: dict[Path, tuple[tuple[int, ...], dict[str, Any], InteractionTable]] = {}
_validated_lock = threading.Lock()


def _signature(path: str | Path) -> tuple[int, ...]:
    """What says a file is still the one that was read: device, inode, size, mtime."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def validate_table(path: str | Path, keep: bool = True) -> InteractionTable:
    """Read and validate an interactions table now: every content error (missing or
    mistyped ids, NaN, inf or negative weights, an empty table, ...) is a one-line
    InputError. With ``keep``, the validated table is handed to :func:`read_table` of the
    same process, which takes it instead of reading and validating the file again, as
    long as the file is unchanged (same inode, size and mtime): ``recsys run`` validates
    in its preflight, before any Prefect machinery starts, at no cost to the run."""
    signature = _signature(path)  # before reading: a change while reading is seen later
    frame, fingerprint = storage.read_interactions_table(path)
    table = clean_table(frame, source=str(path))
    if keep:
        with _validated_lock:
            _validated[Path(path).resolve()] = (signature, fingerprint, table)
    return table


def read_table(path: str | Path) -> tuple[InteractionTable, dict[str, Any]]:
    """A validated table and the file's fingerprint: the one :func:`validate_table` kept
    (taken: it is handed over once), else read and validated now."""
    with _validated_lock:
        kept = _validated.pop(Path(path).resolve(), None)
    if kept is not None and kept[0] == _signature(path):
        return kept[2], kept[1]
    frame, fingerprint = storage.read_interactions_table(path)
    return clean_table(frame, source=str(path)), fingerprint


@dataclass(frozen=True, eq=False)
class TableFacts:
    """What the preflight needs of a validated table: the ids' kinds and the distinct
    items of positive weight (external ids, unsorted)."""

    user_kind: IdKind
    item_kind: IdKind
    items: np.ndarray

    @classmethod
    def of(cls, table: InteractionTable) -> TableFacts:
        return cls(table.user_kind, table.item_kind, pd.unique(table.items))


def scan_table(path: str | Path, rows: int = storage.BATCH_ROWS) -> TableFacts:
    """Validate a table a batch of ``rows`` rows at a time, in the memory of a batch (and
    of the distinct items), keeping nothing: the same refusals as :func:`validate_table`.
    A batch that fails a check, ids of another kind than the batches before, a table
    without a row or of weights 0 only, weights whose duplicates could sum past float32:
    the whole table is validated instead (the rare case), so the one-line error is the one
    of the whole table, counts included."""
    facts: list[RowFacts] = []
    try:
        for frame in storage.iter_table_batches(path, rows=rows):
            if len(frame) == 0:
                raise InputError(f"{path}: the table is empty (0 rows)")
            batch = check_rows(frame, source=str(path))
            first = facts[0] if facts else batch
            if (batch.user_kind, batch.item_kind, batch.timestamp_kind) != (
                first.user_kind,
                first.item_kind,
                first.timestamp_kind,
            ):
                raise InputError(f"{path}: the batches' types differ")
            facts.append(batch)
    except InputError:
        return TableFacts.of(validate_table(path, keep=False))
    total = sum(f.rows for f in facts)
    largest = max(f.max_weight for f in facts)
    # no (user, item) pair can sum past float32 when every row's weight is below its
    # share of the largest float32
    if not sum(f.positive for f in facts) or largest * total > float(np.finfo(np.float32).max):
        return TableFacts.of(validate_table(path, keep=False))
    items = pd.unique(np.concatenate([f.items for f in facts]))
    return TableFacts(facts[0].user_kind, facts[0].item_kind, items)


def preflight(
    config: PipelineConfig,
    input_path: str | Path | None,
    holdout_path: str | Path | None,
    keep: bool = True,
) -> int | None:
    """The content checks of :func:`prepare_stage` that need no run folder, run before the
    run starts: the input and holdout tables validated, the item rules read (a missing
    table, no item_id column) and checked against the input's items, the top_n settings
    against the number of items. Returns the input's number of items (None without an
    input table).

    With ``keep`` the validated tables are kept for the prepare stage of this process;
    without (on Dask, where a worker prepares the data) they are validated a batch at a
    time (:func:`scan_table`), so the flow's process never holds a table."""
    if input_path is None:  # vectors only: the rule tables can be read, not matched yet
        read_rule_lists(config)
        return None

    def facts(path: str | Path) -> TableFacts:
        return TableFacts.of(validate_table(path)) if keep else scan_table(path)

    table = facts(input_path)
    holdout_path = holdout_path or config.evaluate.holdout
    if holdout_path:
        test = facts(holdout_path)
        if (test.user_kind, test.item_kind) != (table.user_kind, table.item_kind):
            raise InputError(
                f"{holdout_path}: holdout ids are {test.user_kind}/{test.item_kind} but training ids "
                f"are {table.user_kind}/{table.item_kind} (user/item)"
            )
    _, item_ids = pd.factorize(table.items, sort=True)
    items = IdMap.from_ids(np.asarray(item_ids), table.item_kind)
    _check_top_n_items(config, len(items), input_path)
    lists = read_rule_lists(config)
    if lists:
        _resolve_rules(lists, items, log_counts=False, check=True)
    return len(items)


def prepare_stage(
    run: RunLayout,
    config: PipelineConfig,
    input_path: str | Path | None,
    holdout_path: str | Path | None = None,
) -> Prepared:
    """Read and validate the interactions table, split off held-out interactions if the
    config says so (or read a supplied holdout table); write id maps, the CSR matrix of
    what each user has seen and the holdout CSR. With a split and ``evaluate.refit``
    (the default) the published data is all of the input and the training split with its
    holdout goes to the run's evaluation part; ``Prepared.refit`` says which."""
    started = time.perf_counter()
    if input_path is None:
        return _prepare_from_vectors(run, config, started)
    table, fingerprint = read_table(input_path)
    holdout_path = holdout_path or config.evaluate.holdout
    split = config.evaluate.split
    test = None
    holdout_info: dict[str, Any] | None = None
    refit = False
    train_table = table
    if holdout_path:
        test, holdout_fingerprint = read_table(holdout_path)
        holdout_info = {"method": "supplied", **holdout_fingerprint}
    elif split.method != "none":
        train_table, test = split_table(
            table, split.method, split.fraction, split.n, config.seed, str(input_path)
        )
        holdout_info = {"method": split.method, "fraction": split.fraction, "n": split.n}
        refit = config.evaluate.refit
    # published data: all of the input, unless this is an evaluation run without refit
    interactions = interactions_from_table(table if refit else train_table)
    _check_top_n(config, interactions, input_path)
    storage.write_interactions(run.data_dir, interactions)
    log.info(
        "read %s: %d rows -> %d users x %d items, %d interactions (%d duplicate rows merged)",
        input_path,
        interactions.stats["rows"],
        interactions.n_users,
        interactions.n_items,
        interactions.nnz,
        interactions.stats["duplicate_rows_merged"],
    )
    rule_lists = read_rule_lists(config)
    rules = write_rules(run, rule_lists, interactions.items)
    holdout = None
    if test is not None and holdout_info is not None:
        trained = interactions_from_table(train_table) if refit else interactions
        holdout = _write_holdout(run, refit, trained, test, holdout_info, rule_lists)
    return Prepared(
        input=InputInfo(
            **fingerprint,
            **interactions.stats,
            user_id_type=interactions.users.kind,
            item_id_type=interactions.items.kind,
            **time_span(table),
        ),
        data=_data_files(run, with_holdout=holdout is not None and not refit),
        holdout=holdout,
        item_rules=rules,
        refit=refit,
        seconds=round(time.perf_counter() - started, 3),
    )


def time_span(table: InteractionTable) -> dict[str, Any]:
    """The manifest's ``timestamp_type``, ``first_timestamp`` and ``last_timestamp`` of a
    validated table: over every row of the input (the ordering key: numbers as given,
    dates in seconds since the epoch, UTC); nothing without a timestamp column or with no
    timestamp in it."""
    if table.timestamps is None or table.timestamp_kind is None:
        return {}
    present = table.timestamps[~np.isnan(table.timestamps)]
    if len(present) == 0:
        return {}
    return {
        "timestamp_type": table.timestamp_kind,
        "first_timestamp": float(present.min()),
        "last_timestamp": float(present.max()),
    }


def _write_holdout(
    run: RunLayout,
    refit: bool,
    trained: Interactions,
    test: InteractionTable,
    info: dict[str, Any],
    rule_lists: dict[str, list[Any]],
) -> HoldoutInfo:
    """The held-out interactions as a CSR over the training users and items: into the
    run's evaluation part (with its training data and item rules) where the run refits,
    else beside the published data."""
    evaluated = run.evaluation() if refit else run
    if refit:
        storage.write_interactions(evaluated.data_dir, trained)
        write_rules(evaluated, rule_lists, trained.items, log_counts=False)
    holdout, stats = map_holdout(trained, test)
    storage.write_sparse(evaluated.holdout, holdout)
    log.info(
        "holdout (%s): %d pairs, %d evaluated for %d users; %d pairs of unknown users, "
        "%d of unknown items, %d already in training%s",
        info["method"],
        stats["pairs"],
        stats["pairs_evaluated"],
        stats["users_evaluated"],
        stats["pairs_of_unknown_users"],
        stats["pairs_of_unknown_items"],
        stats["pairs_seen_in_training"],
        "; models are evaluated on the split, then refit on all the input" if refit else "",
    )
    return HoldoutInfo(**info, **stats)
