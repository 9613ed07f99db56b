"""The run's manifest, assembled from the stages' parts and validated as a
:class:`~recsys.manifest.RunManifest`; the report; and the models a partial run
carries over from the current run."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import __version__, storage
from recsys.config import ModelConfig, PipelineConfig
from recsys.errors import RunError
from recsys.manifest import RunManifest, read_manifest
from recsys.storage import RunLayout

log = logging.getLogger("recsys.pipeline")


def merge_model_results(*parts: dict[str, Any]) -> dict[str, Any]:
    """Merge stage results of one model: dict values merge one level deep."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def model_fingerprint(config: PipelineConfig, model: ModelConfig, prepared: dict[str, Any]) -> str:
    """sha256 of everything a model's published files depend on: the input file, the held
    out part, the model's type and params, the seed, and the index, list and evaluation
    settings (and the recsys version). Equal fingerprints: the files would be the same."""
    settings = config.to_dict()
    basis = {
        "recsys": __version__,
        "input": prepared["input"]["sha256"],
        "holdout": prepared.get("holdout"),
        "model": model.model_dump(mode="json"),
        "seed": settings["seed"],
        **{key: settings[key] for key in ("index", "recommend", "similar_items", "evaluate")},
    }
    if prepared.get("item_rules"):  # the rules as resolved: a rules table's content may change
        basis["item_rules"] = prepared["item_rules"]["sha256"]
    canonical = json.dumps(basis, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class CarryOver:
    """The models a partial run takes from the current run, and where from."""

    previous: RunLayout | None = None
    manifest: RunManifest | None = None
    models: dict[str, str] = field(default_factory=dict)
    """name -> fingerprint of each model carried."""


def plan_carry_over(
    root: Path, config: PipelineConfig, fingerprints: dict[str, str], wanted: list[str]
) -> CarryOver:
    """Which of the ``wanted`` models (those a ``--models`` run does not retrain) can be
    carried from the current run: only those whose fingerprint is unchanged. The others
    are retrained, and the log says why."""
    plan = CarryOver()
    if not wanted:
        return plan
    try:
        previous = storage.find_run(root)
        manifest = read_manifest(previous)
    except RunError as exc:
        log.warning(
            "no usable current run to carry %s over from (%s): training them too", ", ".join(wanted), exc
        )
        return plan
    plan.previous, plan.manifest = previous, manifest
    for name in wanted:
        entry = manifest.models.get(name)
        if entry is None:
            log.warning("%s: not in the current run %s: training it", name, previous.run_id)
        elif entry.fingerprint != fingerprints[name]:
            log.warning(
                "%s: not carried over from run %s: its input, config or seed changed since; training it",
                name,
                previous.run_id,
            )
        else:
            plan.models[name] = fingerprints[name]
    return plan


def carry_over_models(run: RunLayout, plan: CarryOver) -> dict[str, Any]:
    """Hard-link the carried models' files from the current run into this one (each file
    verified against the current run's manifest first); returns their manifest entries."""
    carried: dict[str, Any] = {}
    if plan.previous is None or plan.manifest is None:
        return carried
    previous, manifest = plan.previous, plan.manifest
    for name in plan.models:
        entry = manifest.models[name]
        for relative in entry.paths():
            listed = manifest.files[relative]
            source = storage.verified_path(previous.dir, relative, listed.size_bytes, listed.sha256)
            storage.link_or_copy(source, run.path(relative))
        carried[name] = {
            **entry.model_dump(mode="json", exclude_none=True),
            "carried_over_from": entry.carried_over_from or previous.run_id,
        }
        log.info("%s: carried over from run %s", name, previous.run_id)
    return carried


def report_stage(run: RunLayout, manifest: RunManifest | dict[str, Any]) -> str:
    """Write the run's self-contained ``report.html``; returns its path relative to the run."""
    from recsys.report import previous_manifest, render_report

    previous = previous_manifest(run.root, run.run_id)
    storage.write_text(run.report, render_report(run.dir, manifest, previous))
    return run.relative(run.report)


def assemble_manifest(
    run: RunLayout,
    config: PipelineConfig,
    prepared: dict[str, Any],
    models: dict[str, Any],
    created_at: str,
    timings: dict[str, float],
    purpose: str = "production",
) -> RunManifest:
    """The run manifest from the stages' parts (paths relative to the run folder),
    validated; :func:`seal_manifest` adds the report and the files' checksums."""
    return RunManifest.model_validate(
        {
            "run_id": run.run_id,
            "purpose": purpose,
            "created_at": created_at,
            "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "recsys_version": __version__,
            "config": config.to_dict(),
            "config_sha256": config.sha256(),
            "input": prepared["input"],
            "data": prepared["data"],
            "holdout": prepared.get("holdout"),
            "timings": timings,
            "models": models,
        }
    )


def seal_manifest(run: RunLayout, manifest: RunManifest, report: str | None) -> RunManifest:
    """The manifest with its report and the size and sha256 of every file in the staged
    run, validated again (every file it names must be listed)."""
    raw = manifest.model_dump(mode="json", exclude_none=True)
    raw.update(report=report, files=storage.hash_tree(run.dir, skip=(run.relative(run.manifest),)))
    return RunManifest.model_validate(raw)
