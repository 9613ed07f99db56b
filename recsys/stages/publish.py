"""The run's manifest, assembled from the stages' parts and validated as a
:class:`~recsys.manifest.RunManifest`; the report; the models a partial run carries
over from the current run; and the promotion gate, which decides whether a complete
run becomes current, with :func:`promote`, which makes a held run current by hand."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from recsys import __version__, storage
from recsys.config import ModelConfig, OutputConfig, PipelineConfig
from recsys.errors import RunError
from recsys.manifest import (
    FileEntry,
    GateCheck,
    ModelEntry,
    Promotion,
    RankingMetric,
    RunManifest,
    read_manifest,
)
from recsys.stages.ranked import list_spec
from recsys.stages.results import Prepared
from recsys.storage import RANKED_KINDS, RunLayout

log = logging.getLogger(__name__)


NOT_MODEL_INPUTS = (
    "input",
    "output",
    "models",
    "schedule",
    "retention",
    "promotion",
    "run",
    "task_runner",
    "tune",
    "exports",
)
"""Config sections no model's files depend on (where the input is read from: its content
counts; where and when runs go; how fast they run). Every other section, including one
added later, is part of each model's fingerprint: a change there retrains rather than
carries a model over that may be stale."""


def model_fingerprint(config: PipelineConfig, model: ModelConfig, prepared: Prepared) -> str:
    """sha256 of everything a model's published files depend on: the input file's content,
    the held out part, the model's type and params, and every config section but
    :data:`NOT_MODEL_INPUTS` (the seed, the index, list and evaluation settings, ...), and
    the recsys version; a blend's, its parts' fingerprints too. Equal fingerprints: the
    files would be the same."""
    settings = config.to_dict()
    basis = {
        "recsys": __version__,
        "input": prepared.input.sha256,
        "holdout": prepared.holdout.model_dump(mode="json") if prepared.holdout else None,
        "model": model.model_dump(mode="json"),
        **{key: value for key, value in settings.items() if key not in NOT_MODEL_INPUTS},
    }
    if prepared.item_rules:  # the rules as resolved: a rules table's content may change
        basis["item_rules"] = prepared.item_rules.sha256
    if model.type == "blend":  # made of its parts' files: it changes with any of them
        models = {m.name: m for m in config.models}
        basis["parts"] = {
            part: model_fingerprint(config, models[part], prepared) for part in model.params["parts"]
        }
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
            problem = _unverified(previous, manifest, name)
            if problem:
                log.warning(
                    "%s: not carried over from run %s: its files do not verify (%s); training it",
                    name,
                    previous.run_id,
                    problem,
                )
            else:
                plan.models[name] = fingerprints[name]
    return plan


def _unverified(previous: RunLayout, manifest: RunManifest, name: str) -> str | None:
    """Why a model's files in the current run cannot be carried (missing, not listed,
    truncated, corrupt), or None when each matches its size and sha256 in the manifest."""
    for relative in manifest.models[name].paths():
        listed = manifest.files.get(relative)
        if listed is None:
            return f"{relative} has no checksum in the manifest"
        try:
            storage.verified_path(previous.dir, relative, listed.size_bytes, listed.sha256)
        except (RunError, OSError) as exc:
            return str(exc)
    return None


def carry_over_models(run: RunLayout, plan: CarryOver) -> dict[str, ModelEntry]:
    """Hard-link the carried models' files from the current run into this one (each file
    verified against the current run's manifest first); returns their manifest entries."""
    carried: dict[str, ModelEntry] = {}
    if plan.previous is None or plan.manifest is None:
        return carried
    previous, manifest = plan.previous, plan.manifest
    for name in plan.models:
        entry = manifest.models[name]
        for relative in entry.paths():
            listed = manifest.files[relative]
            source = storage.verified_path(previous.dir, relative, listed.size_bytes, listed.sha256)
            storage.link_or_copy(source, run.path(relative))
        carried[name] = entry.model_copy(
            update={"carried_over_from": entry.carried_over_from or previous.run_id}
        )
        log.info("%s: carried over from run %s", name, previous.run_id)
    return carried


def report_stage(run: RunLayout, manifest: RunManifest) -> str:
    """Write the run's self-contained ``report.html``; returns its path relative to the run."""
    from recsys.reporting import forward_history, previous_manifest, render_report

    previous = previous_manifest(run.root, run.run_id)
    history = forward_history(run.root, run.run_id)
    storage.write_text(run.report, render_report(run.dir, manifest, previous, history))
    return run.relative(run.report)


def assemble_manifest(
    run: RunLayout,
    config: PipelineConfig,
    prepared: Prepared,
    models: dict[str, ModelEntry],
    created_at: str,
    timings: dict[str, float],
    purpose: Literal["production", "evaluation"] = "production",
) -> RunManifest:
    """The run manifest from the stages' results (paths relative to the run folder);
    :func:`seal_manifest` adds the report and the files' checksums."""
    return RunManifest(
        run_id=run.run_id,
        purpose=purpose,
        created_at=created_at,
        completed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        recsys_version=__version__,
        config=config.to_dict(),
        config_sha256=config.sha256(),
        input=prepared.input,
        data=prepared.data,
        holdout=prepared.holdout,
        lists={kind: list_spec(config, kind) for kind in RANKED_KINDS},
        timings=timings,
        models=models,
        best_model=best_model(config, models),
    )


def best_model(config: PipelineConfig, models: dict[str, ModelEntry]) -> str | None:
    """The model with the highest :func:`headline_metric` on the held-out interactions
    (the first of equals, in the run's order), among those with ranking figures; None
    where no model has them."""
    metric = headline_metric(config)
    scored = {
        name: value
        for name, entry in models.items()
        if entry.evaluation.ranking and (value := entry.evaluation.ranking.get(metric)) is not None
    }
    return max(scored, key=lambda name: scored[name]) if scored else None


def seal_manifest(run: RunLayout, manifest: RunManifest, report: str | None) -> RunManifest:
    """The manifest with its report and the size and sha256 of every file in the staged
    run (every file it names must be listed). The lists' part files are not read again:
    their writers (Dask workers among them) reported their sha256; their sizes are checked."""
    known = {part.path: (part.size_bytes, part.sha256) for part in manifest.list_parts()}
    files = {
        path: FileEntry.model_validate(entry)
        for path, entry in storage.hash_tree(run.dir, skip=(run.relative(run.manifest),), known=known).items()
    }
    return manifest.model_copy(update={"report": report, "files": files}).checked()


# ---------------------------------------------------------------- promotion gate

INPUT_FIGURES = ("users", "items", "interactions")


def headline_metric(config: PipelineConfig) -> RankingMetric:
    """The metric the gate compares per model: ndcg at the largest ``evaluate.k`` (the
    report's and ``recsys runs``' headline too)."""
    return RankingMetric("ndcg", max(config.evaluate.ks))


def _drop(before: float, after: float) -> float:
    return (before - after) / before


def _fmt(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and value >= 1 else f"{value:.4f}"


def gate_checks(current: RunManifest, candidate: RunManifest, config: PipelineConfig) -> list[GateCheck]:
    """The gate's checks of a run against the current run: the input's users, items and
    interactions (each may lose at most ``promotion.max_input_drop``), and the headline
    metric of every model both runs measured (at most ``max_metric_drop``, relative)."""
    settings = config.promotion
    checks = []
    for name in INPUT_FIGURES:
        before, after = getattr(current.input, name), getattr(candidate.input, name)
        if before > 0:
            drop = _drop(before, after)
            limit = settings.max_input_drop
            checks.append(
                GateCheck(
                    name=name, current=before, candidate=after, drop=drop, limit=limit, passed=drop <= limit
                )
            )
    metric = headline_metric(config)
    for model, entry in candidate.models.items():
        previous = current.models.get(model)
        if previous is None:
            continue
        before = previous.evaluation.ranking.get(metric) if previous.evaluation.ranking else None
        after = entry.evaluation.ranking.get(metric) if entry.evaluation.ranking else None
        if before is None or after is None or before <= 0:
            continue
        drop = _drop(before, after)
        limit = settings.max_metric_drop
        checks.append(
            GateCheck(
                name=f"{metric} of {model}",
                current=before,
                candidate=after,
                drop=drop,
                limit=limit,
                passed=drop <= limit + 1e-12,
            )
        )
    return checks


def _failure(check: GateCheck) -> str:
    key = "max_input_drop" if check.name in INPUT_FIGURES else "max_metric_drop"
    return (
        f"{check.name} fell from {_fmt(check.current)} to {_fmt(check.candidate)} "
        f"(-{check.drop:.1%}; promotion.{key} allows {check.limit * 100:g}%)"
    )


def promotion_gate(
    root: Path, config: PipelineConfig, candidate: RunManifest, enabled: bool = True
) -> Promotion:
    """The promotion gate's verdict on a complete production run, against the run
    ``CURRENT`` names (call with the root lock held, so that it cannot move meanwhile).
    Off when ``enabled`` is false or ``promotion.enabled`` is; passed where there is no
    current run (the first run) or it cannot be read (a good run replaces it)."""
    if not (enabled and config.promotion.enabled):
        return Promotion(gate="off")
    current_id = storage.current_run_id(root)
    if current_id is None:
        return Promotion(gate="passed")
    try:
        current = read_manifest(storage.find_run(root, current_id))
    except RunError as exc:
        log.warning("promotion gate: the current run %s cannot be read (%s); passing", current_id, exc)
        return Promotion(gate="passed", against=current_id)
    checks = gate_checks(current, candidate, config)
    failed = [c for c in checks if not c.passed]
    reason = None
    if failed:
        reason = "; ".join(_failure(c) for c in failed) + f" against the current run {current_id}"
    return Promotion(
        gate="failed" if failed else "passed",
        against=current_id,
        metric=str(headline_metric(config)),
        checks=checks,
        reason=reason,
    )


def with_promotion(manifest: RunManifest, promotion: Promotion | None) -> RunManifest:
    """The manifest with the gate's verdict."""
    return manifest if promotion is None else manifest.model_copy(update={"promotion": promotion})


def verify_run(run: RunLayout, manifest: RunManifest) -> None:
    """Every file the manifest lists, checked against its size and sha256 (a RunError
    naming the first that differs), as readers check the files they use."""
    if not manifest.files:
        raise RunError(f"{run.manifest}: lists no files with checksums; cannot verify the run")
    for relative, listed in manifest.files.items():
        storage.verified_path(run.dir, relative, listed.size_bytes, listed.sha256)


def _recorded_mode(run: RunLayout, manifest: RunManifest) -> int:
    """The ``output.mode`` a run was published with, held to the config's rules (never one
    that lets the group or others write ``CURRENT``, whatever a manifest says)."""
    mode = (manifest.config.get("output") or {}).get("mode", "0644")
    try:
        return OutputConfig.model_validate({"mode": mode}).file_mode
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise RunError(f"{run.manifest}: output.mode: {problem}") from None


def promote(root: str | Path, run_id: str, file_mode: int | None = None) -> tuple[str | None, RunManifest]:
    """Make a complete production run current by hand (``recsys promote``): under the
    root lock, after its manifest validates and every file it lists is verified (size and
    sha256), ``CURRENT`` and ``latest`` are switched to it, each in one step, and the run
    is marked promoted. Returns the run that was current before and the run's manifest."""
    root = Path(root)
    with storage.root_lock(root):
        storage.clean_stale_staging(root)
        run = storage.find_run(root, storage.check_run_id(run_id))
        manifest = read_manifest(run)
        if manifest.purpose != "production":
            raise RunError(
                f"run {run_id} is an evaluation run (trained on a split, not refit): it is never made current"
            )
        verify_run(run, manifest)
        before = storage.current_run_id(root)
        if file_mode is None:
            file_mode = _recorded_mode(run, manifest)
        if manifest.promotion is not None and manifest.promotion.held:
            storage.write_text(run.dir / storage.PROMOTED, f"promoted by hand over {before}\n", file_mode)
        storage.switch_current(root, run.run_id, file_mode)
    log.info("run %s promoted by hand (CURRENT was %s)", run_id, before)
    return before, manifest
