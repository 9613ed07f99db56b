"""The run's manifest, assembled from the stages' parts and validated as a
:class:`~recsys.manifest.RunManifest`; the report; and the models a partial run
carries over from the current run."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from recsys import __version__, storage
from recsys.config import PipelineConfig
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


def carry_over_models(
    run: RunLayout, config: PipelineConfig, prepared: dict[str, Any], trained: set[str]
) -> dict[str, Any]:
    """Models of the config not trained in this run, carried from the current run.

    A run with ``--models als`` retrains als only; the other models' published files are
    hard-linked from the current run when it was made from the same input file, so the
    new run stays complete for downstream readers. Every file carried is verified
    against the current run's manifest first.
    """
    wanted = [m.name for m in config.models if m.name not in trained]
    if not wanted:
        return {}
    try:
        previous, _ = storage.open_run(run.root)
        manifest = read_manifest(previous)
    except RunError as exc:
        log.warning("no current run to carry %s over from (%s)", ", ".join(wanted), exc)
        return {}
    if manifest.input.sha256 != prepared["input"]["sha256"]:
        log.warning(
            "not carrying %s over from run %s: its input differs",
            ", ".join(wanted),
            previous.run_id,
        )
        return {}
    carried = {}
    for name in wanted:
        entry = manifest.models.get(name)
        if entry is None:
            continue
        source_dir = previous.model_dir(name)
        for path in sorted(p for p in source_dir.rglob("*") if p.is_file()):
            relative = previous.relative(path)
            listed = manifest.files.get(relative)
            if listed is None:
                continue  # not part of the published run
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
    from recsys.report import render_report

    storage.write_text(run.report, render_report(run.dir, manifest))
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
