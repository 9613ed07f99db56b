"""Prepare: read and validate the interactions (or, for runs of precomputed vectors
only, the item ids of the vectors), split off held-out interactions, write id maps and
matrices into the run folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys import storage
from recsys.config import PipelineConfig
from recsys.data.interactions import IdMap, Interactions, clean_table, interactions_from_table
from recsys.data.splits import map_holdout, split_table
from recsys.errors import ConfigError, InputError
from recsys.storage import RunLayout

log = logging.getLogger("recsys.pipeline")


def _data_files(run: RunLayout, with_holdout: bool = False) -> dict[str, str]:
    files = {key: run.relative(run.data_file(key)) for key in storage.DATA_FILES}
    if with_holdout:
        files["holdout"] = run.relative(run.holdout)
    return files


def _prepare_from_vectors(run: RunLayout, config: PipelineConfig, started: float) -> dict[str, Any]:
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
    source = Path(params["items"])
    return {
        "input": {
            "path": str(source.resolve()),
            "size_bytes": source.stat().st_size,
            "sha256": storage.file_sha256(source),
            **stats,
            "user_id_type": users.kind,
            "item_id_type": items.kind,
        },
        "data": _data_files(run),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _check_top_n(config: PipelineConfig, interactions: Interactions, input_path: Any) -> None:
    if interactions.nnz == interactions.n_users * interactions.n_items:
        raise InputError(
            f"{input_path}: every one of the {interactions.n_users} users has interacted with every one "
            f"of the {interactions.n_items} items: there is nothing left to recommend"
        )
    for section, top_n, limit in (
        ("recommend", config.recommend.top_n, interactions.n_items),
        ("similar_items", config.similar_items.top_n, interactions.n_items - 1),
    ):
        if top_n > limit:
            raise ConfigError(
                f"{section}.top_n is {top_n} but {input_path} has only {interactions.n_items} "
                f"items (at most {limit} possible)"
            )


def prepare_stage(
    run: RunLayout,
    config: PipelineConfig,
    input_path: str | Path | None,
    holdout_path: str | Path | None = None,
) -> dict[str, Any]:
    """Read and validate the interactions table, split off held-out interactions if the
    config says so (or read a supplied holdout table); write id maps, the CSR matrix of
    what each user has seen and the holdout CSR. With a split and ``evaluate.refit``
    (the default) the published data is all of the input and the training split with its
    holdout goes to the run's evaluation part; ``result["refit"]`` says which."""
    started = time.perf_counter()
    if input_path is None:
        return _prepare_from_vectors(run, config, started)
    frame, fingerprint = storage.read_interactions_table(input_path)
    table = clean_table(frame, source=str(input_path))
    del frame
    holdout_path = holdout_path or config.evaluate.holdout
    split = config.evaluate.split
    test = None
    holdout_info: dict[str, Any] | None = None
    refit = False
    train_table = table
    if holdout_path:
        holdout_frame, holdout_fingerprint = storage.read_interactions_table(holdout_path)
        test = clean_table(holdout_frame, source=str(holdout_path))
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
    result: dict[str, Any] = {
        "input": {
            **fingerprint,
            **interactions.stats,
            "user_id_type": interactions.users.kind,
            "item_id_type": interactions.items.kind,
        },
        "data": _data_files(run),
        "refit": refit,
    }
    if test is not None and holdout_info is not None:
        evaluated = run.evaluation() if refit else run
        trained = interactions_from_table(train_table) if refit else interactions
        if refit:
            storage.write_interactions(evaluated.data_dir, trained)
        holdout, holdout_stats = map_holdout(trained, test)
        storage.write_sparse(evaluated.holdout, holdout)
        if not refit:
            result["data"] = _data_files(run, with_holdout=True)
        result["holdout"] = {**holdout_info, **holdout_stats}
        log.info(
            "holdout (%s): %d pairs, %d evaluated for %d users; %d pairs of unknown users, "
            "%d of unknown items, %d already in training%s",
            holdout_info["method"],
            holdout_stats["pairs"],
            holdout_stats["pairs_evaluated"],
            holdout_stats["users_evaluated"],
            holdout_stats["pairs_of_unknown_users"],
            holdout_stats["pairs_of_unknown_items"],
            holdout_stats["pairs_seen_in_training"],
            "; models are evaluated on the split, then refit on all the input" if refit else "",
        )
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result
