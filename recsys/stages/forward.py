"""Forward: did the lists we served work? The current run's published recommendations,
measured against the interactions of this run's input that came after the current run's
input ended (docs/evaluation.md).

An interaction is new when its timestamp is later than the current run's
``input.last_timestamp``. The users measured are those the current run knew (it
published a list for each) with at least one new item: a pair already in the current
run's data is left out (its lists never hold a seen item), a user it did not know is
left out (no list), an item it did not know stays in as a miss (no list could hold it).
Per model of the current run: ``hit_rate`` (users with at least one new item in their
list / users) and ``recall`` (recall@N, N its lists' length: new items found in the list
/ new items, averaged over users), with the counts they are made of and the lift over
the current run's ``popular`` model. Every file of the current run is verified against
its manifest before it is read, as carry-over does.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from recsys import storage
from recsys.config import PipelineConfig
from recsys.data.interactions import IdMap, InteractionTable
from recsys.errors import RunError
from recsys.manifest import Forward, ForwardFigures, RunManifest, read_manifest, timestamp_text
from recsys.stages.prepare import read_table
from recsys.stages.results import Prepared
from recsys.storage import RunLayout

log = logging.getLogger(__name__)


class NewPairs(NamedTuple):
    """The new pairs of the users measured, as the measured run's internal ids."""

    users: np.ndarray
    """Internal ids of the users measured (sorted, unique)."""
    pair_users: np.ndarray
    """Per pair: the position of its user in ``users``."""
    pair_items: np.ndarray
    """Per pair: the item's internal id, -1 for an item the run did not know."""
    counts: dict[str, int]
    """rows, unknown_users, pairs_of_unknown_users, pairs_of_unknown_items, pairs_seen_before."""


def _verified(run: RunLayout, manifest: RunManifest, relative: str) -> Path:
    listed = manifest.files.get(relative)
    if listed is None:
        raise RunError(f"{run.path(relative)}: has no checksum in the run's manifest")
    return storage.verified_path(run.dir, relative, listed.size_bytes, listed.sha256)


def new_pairs(
    table: InteractionTable, after: float, users: IdMap, items: IdMap, seen: sp.csr_matrix
) -> NewPairs:
    """The pairs of ``table`` with a timestamp later than ``after``, mapped to a run's ids
    (``users``, ``items``, ``seen``: its user x item matrix); pairs of unknown users and
    pairs already seen are left out and counted."""
    assert table.timestamps is not None
    later = np.flatnonzero(table.timestamps > after)  # NaN (no timestamp) is never later
    user_ids = users.to_internal(table.users[later], strict=False)
    item_ids = items.to_internal(table.items[later], strict=False)
    known_user = user_ids >= 0
    unknown_users = len(np.unique(table.users[later][~known_user])) if (~known_user).any() else 0
    user_ids, item_ids = user_ids[known_user], item_ids[known_user]
    known_item = item_ids >= 0
    seen_before = np.zeros(len(user_ids), dtype=bool)
    if known_item.any():
        seen_before[known_item] = np.asarray(seen[user_ids[known_item], item_ids[known_item]]).ravel() != 0
    keep = ~seen_before
    measured, positions = np.unique(user_ids[keep], return_inverse=True)
    return NewPairs(
        users=measured,
        pair_users=positions.astype(np.int64),
        pair_items=item_ids[keep],
        counts={
            "rows": len(later),
            "unknown_users": unknown_users,
            "pairs_of_unknown_users": int((~known_user).sum()),
            "pairs_of_unknown_items": int((~known_item & keep).sum()),
            "pairs_seen_before": int(seen_before.sum()),
        },
    )


def list_figures(lists: np.ndarray, pairs: NewPairs, n_items: int) -> dict[str, float | int]:
    """Hits, hit rate, found pairs and recall of lists (row i: the internal item ids of
    the list of ``pairs.users[i]``, -1 past its end) on the new pairs."""
    n_users = len(pairs.users)
    rows, ranks = np.nonzero(lists >= 0)
    listed = rows.astype(np.int64) * n_items + lists[rows, ranks]
    wanted = pairs.pair_users * n_items + pairs.pair_items
    found = np.isin(wanted, listed) & (pairs.pair_items >= 0)
    per_user = np.bincount(pairs.pair_users, minlength=n_users)
    found_per_user = np.bincount(pairs.pair_users, weights=found, minlength=n_users)
    hits = int((found_per_user > 0).sum())
    recall = math.fsum((found_per_user / per_user).tolist()) / n_users if n_users else 0.0
    return {
        "users": n_users,
        "hits": hits,
        "hit_rate": hits / n_users if n_users else 0.0,
        "pairs": len(wanted),
        "found": int(found.sum()),
        "recall": recall,
    }


def _lift(value: float, base: float | None) -> float | None:
    return value / base if base else None


def measure(
    previous: RunLayout, manifest: RunManifest, table: InteractionTable, until: float
) -> Forward | None:
    """The forward figures of a published run's lists on the later rows of ``table``
    (None, with the reason logged, where no user it knew has a new item)."""
    after = manifest.input.last_timestamp
    assert after is not None and manifest.input.timestamp_type is not None
    data = manifest.data
    users = storage.read_id_map(_verified(previous, manifest, data.users))
    items = storage.read_id_map(_verified(previous, manifest, data.items))
    seen = storage.read_sparse(_verified(previous, manifest, data.user_items)).tocsr()
    pairs = new_pairs(table, after, users, items, seen)
    if len(pairs.users) == 0:
        log.info(
            "forward: no user of run %s has a new item after %s (%d later rows: %d of unknown users, "
            "%d seen before); not measured",
            manifest.run_id,
            timestamp_text(after, manifest.input.timestamp_type),
            pairs.counts["rows"],
            pairs.counts["pairs_of_unknown_users"],
            pairs.counts["pairs_seen_before"],
        )
        return None
    top_n = manifest.lists["recommendations"].top_n
    figures: dict[str, dict[str, float | int]] = {}
    types: dict[str, str] = {}
    for name, model in manifest.models.items():
        if model.outputs.recommendations is None:
            log.info(
                "forward: %s of run %s published no recommendations; not measured", name, manifest.run_id
            )
            continue
        paths = [_verified(previous, manifest, part) for part in model.outputs.recommendations.files()]
        lists = storage.read_ranked_ids(paths, users, items, top_n, pairs.users)
        figures[name] = list_figures(lists, pairs, len(items))
        types[name] = model.type
    baseline = next((n for n in figures if types[n] == "popular"), None)
    base = figures.get(baseline) if baseline else None
    models = {
        name: ForwardFigures(
            type=types[name],
            top_n=top_n,
            **values,
            lift_hit_rate=_lift(float(values["hit_rate"]), base and float(base["hit_rate"])),
            lift_recall=_lift(float(values["recall"]), base and float(base["recall"])),
        )
        for name, values in figures.items()
    }
    forward = Forward(
        against=manifest.run_id,
        timestamp_type=manifest.input.timestamp_type,
        after=after,
        until=until,
        rows=pairs.counts["rows"],
        users=len(pairs.users),
        pairs=len(pairs.pair_items),
        unknown_users=pairs.counts["unknown_users"],
        pairs_of_unknown_users=pairs.counts["pairs_of_unknown_users"],
        pairs_of_unknown_items=pairs.counts["pairs_of_unknown_items"],
        pairs_seen_before=pairs.counts["pairs_seen_before"],
        baseline=baseline,
        models=models,
    )
    log.info(
        "forward: run %s's lists on %d new pairs of %d users (%s): %s",
        manifest.run_id,
        forward.pairs,
        forward.users,
        forward.window,
        ", ".join(
            f"{n} hit rate {m.hit_rate:.3f} recall@{m.top_n} {m.recall:.3f}" for n, m in models.items()
        ),
    )
    return forward


def _current(root: Path) -> tuple[RunLayout, RunManifest] | None:
    current_id = storage.current_run_id(root)
    if current_id is None:
        log.info("forward: no current run to measure; skipped")
        return None
    previous = storage.find_run(root, current_id)
    return previous, read_manifest(previous)


def forward_stage(
    run: RunLayout, config: PipelineConfig, input_path: str | Path | None, prepared: Prepared
) -> Forward | None:
    """The current run's lists measured against the rows of this run's input that came
    after the current run's input ended (:func:`measure`); None, with the reason logged,
    where that does not apply: no timestamps in this input or the current run's, no
    current run (or one that cannot be read: a warning), timestamps of another kind or
    ids of another type, no later rows. Reads this run's input again, and only where
    its last timestamp is later than the current run's."""
    del config  # the figures depend on the current run's settings, recorded in its manifest
    span = prepared.input
    if input_path is None or span.last_timestamp is None or span.timestamp_type is None:
        log.info("forward: this run's input has no timestamps; the current run's lists are not measured")
        return None
    try:
        current = _current(run.root)
        if current is None:
            return None
        previous, manifest = current
        before = manifest.input
        if before.last_timestamp is None or before.timestamp_type is None:
            log.info("forward: run %s's input had no timestamps; not measured", manifest.run_id)
            return None
        if before.timestamp_type != span.timestamp_type:
            log.info(
                "forward: run %s's timestamps are %s, this input's %s; not measured",
                manifest.run_id,
                before.timestamp_type,
                span.timestamp_type,
            )
            return None
        if (before.user_id_type, before.item_id_type) != (span.user_id_type, span.item_id_type):
            log.info("forward: run %s has ids of another type; not measured", manifest.run_id)
            return None
        if span.last_timestamp <= before.last_timestamp:
            log.info(
                "forward: no interaction after run %s's input ended (%s); not measured",
                manifest.run_id,
                timestamp_text(before.last_timestamp, before.timestamp_type),
            )
            return None
        table, _ = read_table(input_path)
        return measure(previous, manifest, table, span.last_timestamp)
    except RunError as exc:
        log.warning("forward: the current run cannot be measured (%s); skipped", exc)
        return None


def with_forward(manifest: RunManifest, forward: Forward | None) -> RunManifest:
    """The manifest with the forward figures (unchanged without)."""
    return manifest if forward is None else manifest.model_copy(update={"forward": forward})
