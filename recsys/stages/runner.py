"""The order of the stages, written once: prepare; forward (the current run's lists
against this input's later interactions); per model (the evaluation on the
training split first when the run refits, then) train -> index -> recommend -> similar
items -> evaluate; carry-over, manifest, report, publish. :class:`Steps` says how each
stage is called: directly (``recsys.run_pipeline``, any scheduler) or as Prefect tasks
(``flows/pipeline.py``), with recommendations scored locally or on Dask workers."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import importlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from recsys import storage
from recsys.config import ModelConfig, PipelineConfig
from recsys.errors import ConfigError, PromotionHeld
from recsys.exports import ExportConfig, ExportResult, run_exports
from recsys.index import BACKENDS
from recsys.manifest import Forward, ListOutput, ModelEntry, Promotion, RunManifest
from recsys.models import get_model_type
from recsys.models.base import BLAS_THREADS
from recsys.progress import CANCEL, check_cancelled
from recsys.stages import results
from recsys.stages.evaluate import evaluate_stage, holdout_stage
from recsys.stages.forward import forward_stage, with_forward
from recsys.stages.index import index_stage
from recsys.stages.prepare import prepare_stage
from recsys.stages.publish import (
    assemble_manifest,
    carry_over_models,
    model_fingerprint,
    plan_carry_over,
    promotion_gate,
    report_stage,
    seal_manifest,
    with_promotion,
)
from recsys.stages.ranked import list_spec, ranked_stage
from recsys.stages.results import model_entry
from recsys.stages.train import train_stage
from recsys.storage import RunLayout
from recsys.threads import blas_limit

log = logging.getLogger(__name__)


def _publish(transaction: storage.PublishTransaction, manifest: RunManifest, move_current: bool) -> RunLayout:
    return transaction.publish(manifest.to_json(), move_current)


class Executed(NamedTuple):
    """What a run did: its published manifest, where it is, the runs retention removed,
    and what each export of ``exports`` wrote."""

    manifest: RunManifest
    published: RunLayout
    removed: list[str]
    exports: list[ExportResult]


RankedStep = Callable[[RunLayout, results.ListSpec, str, results.Indexed, int], results.Ranked]
"""(run, spec, model, indexed, part_rows) -> the list written as a dataset of parts."""

EvaluateStep = Callable[
    [RunLayout, PipelineConfig, str, results.Indexed, ListOutput | None], results.Evaluated
]
"""(run, config, model, indexed, the published recommendations) -> the model's figures."""


@dataclasses.dataclass(frozen=True)
class Steps:
    """How each stage is called (same arguments and results as the stage functions)."""

    prepare: Callable[[RunLayout, PipelineConfig, str | Path | None, str | Path | None], results.Prepared] = (
        prepare_stage
    )
    forward: Callable[[RunLayout, PipelineConfig, str | Path | None, results.Prepared], Forward | None] = (
        forward_stage
    )
    train: Callable[[RunLayout, PipelineConfig, ModelConfig], results.Trained] = train_stage
    index: Callable[[RunLayout, PipelineConfig, str], results.Indexed] = index_stage
    recommend: RankedStep = ranked_stage
    similar: RankedStep = ranked_stage
    evaluate: EvaluateStep = evaluate_stage
    holdout: Callable[[RunLayout, PipelineConfig, str, results.Indexed], results.SplitEvaluated] = (
        holdout_stage
    )
    report: Callable[[RunLayout, RunManifest], str] = report_stage
    publish: Callable[[storage.PublishTransaction, RunManifest, bool], RunLayout] = _publish
    export: Callable[[list[ExportConfig], str | Path, str], list[ExportResult]] = run_exports
    chains: int | None = None
    """Models whose chains run at the same time (None: ``run.parallel_models``); on Dask,
    where each chain's stages are tasks on the workers, as many as there are workers."""


@contextlib.contextmanager
def worker_threads(threads: int) -> Iterator[None]:
    """The threads of a stage run as a task on a Dask worker: ``threads`` for the BLAS of
    the dense work (the spectral SVD, exact search), set here whatever the worker's
    environment; implicit's fits keep BLAS at one thread, as everywhere."""
    token = BLAS_THREADS.set(threads)
    try:
        with blas_limit(threads):
            yield
    finally:
        BLAS_THREADS.reset(token)


def model_chain(
    run: RunLayout, config: PipelineConfig, model: ModelConfig, refit: bool, steps: Steps
) -> ModelEntry:
    """All stages of one model; returns its manifest entry. With ``refit``, the model is
    first trained on the training split and ranked against the held-out interactions (the
    run's evaluation part), then trained again on all the input for what is published."""
    split = None
    if refit:
        part = run.evaluation()
        check_cancelled()
        steps.train(part, config, model)
        check_cancelled()
        indexed = steps.index(part, config, model.name)
        check_cancelled()
        split = steps.holdout(part, config, model.name, indexed)
    check_cancelled()
    trained = steps.train(run, config, model)
    check_cancelled()
    indexed = steps.index(run, config, model.name)
    check_cancelled()
    part_rows = config.task_runner.shard_rows
    recommended = steps.recommend(run, list_spec(config, "recommendations"), model.name, indexed, part_rows)
    check_cancelled()
    similar = steps.similar(run, list_spec(config, "similar_items"), model.name, indexed, part_rows)
    check_cancelled()
    evaluated = steps.evaluate(run, config, model.name, indexed, recommended.output)
    # the ranking figures come from the split, the ANN figures from the refit model
    return model_entry(trained, indexed, recommended, similar, evaluated, split)


def model_chains(
    run: RunLayout, config: PipelineConfig, models: list[ModelConfig], refit: bool, steps: Steps
) -> dict[str, ModelEntry]:
    """Every model's chain (:func:`model_chain`): the blends' after every other chain
    (a blend reads its parts' files), a blend of blends after theirs. Within each round
    the chains run one after the other, or ``run.parallel_models`` at a time
    (:func:`_side_by_side`). Parts not among ``models`` are carried over: their files are
    in the run already."""
    pending = list(models)
    entries: dict[str, ModelEntry] = {}
    while pending:
        waiting = {m.name for m in pending}
        ready = [m for m in pending if m.type != "blend"] or [
            m for m in pending if not set(m.params["parts"]) & waiting
        ]
        if not ready:  # the config refuses cycles of blends when it loads
            raise ConfigError(f"blends {', '.join(sorted(waiting))} are parts of each other")
        entries.update(_side_by_side(run, config, ready, refit, steps))
        pending = [m for m in pending if m.name not in entries]
    return {m.name: entries[m.name] for m in models}


def import_libraries(config: PipelineConfig, models: list[ModelConfig], backends: bool = True) -> None:
    """Import the libraries the models and (with ``backends``) the index backends of a run
    import lazily (implicit, annoy, faiss, hnswlib where installed)."""
    for model in models:
        get_model_type(model.type).load()
    for backend in BACKENDS.values() if backends else ():
        if config.index.backend in ("auto", backend.family) and backend.missing() is None:
            for module in backend.requires:
                importlib.import_module(module)


def warm_up(config: PipelineConfig, models: list[ModelConfig], items: int | None) -> None:
    """Load, ahead of the run, what its stages would load on first use: the models' and
    index backends' libraries (:func:`import_libraries`), the report's matplotlib, and the
    compiled top-k selection where the run's similar items alone (``items`` squared
    scores) are past the size that uses it. ``recsys run`` calls this while Prefect's
    temporary API is still booting on the other core, so the run no longer pays for
    these loads inside its stages; what is loaded is what the run would load anyway: no
    backend library where ``auto`` serves the catalog exactly (fewer items than
    ``index.auto_min_items``)."""
    from recsys.index import exact

    exact_only = config.index.backend == "auto" and items is not None and items < config.index.auto_min_items
    import_libraries(config, models, backends=not exact_only)
    importlib.import_module("matplotlib.figure")
    importlib.import_module("matplotlib.backends.backend_agg")
    if items is not None and items * items > exact.SMALL_WORK:
        exact.load_compiled_selection()


def _side_by_side(
    run: RunLayout, config: PipelineConfig, models: list[ModelConfig], refit: bool, steps: Steps
) -> dict[str, ModelEntry]:
    """Chains that do not depend on each other: one after the other, or
    ``run.parallel_models`` at a time in threads, each with one BLAS thread. Each thread
    runs in a copy of the caller's context, so Prefect files its tasks under the flow run.
    The first failure calls the other chains off: each stops at its next stage, fit
    iteration or progress report (:data:`recsys.progress.CANCEL`), none starts after it,
    and the failure is raised once they have stopped."""
    workers = min(steps.chains or config.run.parallel_models, len(models))
    if workers <= 1:
        return {model.name: model_chain(run, config, model, refit, steps) for model in models}
    # libraries imported lazily are imported here, once: two threads importing one can
    # deadlock on its import locks
    import_libraries(config, models)
    token = BLAS_THREADS.set(1)
    cancel = threading.Event()
    cancel_token = CANCEL.set(cancel)  # seen by every chain: their contexts copy this one
    try:
        # one process-wide limit around all the chains: a chain leaving its own limit
        # restores what it found, one thread, never every core under another's fit
        with blas_limit(1), ThreadPoolExecutor(workers, thread_name_prefix="recsys-model") as pool:
            futures = {
                model.name: pool.submit(
                    contextvars.copy_context().run, model_chain, run, config, model, refit, steps
                )
                for model in models
            }
            try:
                wait(futures.values(), return_when=FIRST_EXCEPTION)
                for future in futures.values():
                    if future.done() and not future.cancelled() and future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                return {name: future.result() for name, future in futures.items()}
            except BaseException:
                cancel.set()  # the chains under way stop at their next check
                for future in futures.values():
                    future.cancel()
                raise
    finally:
        CANCEL.reset(cancel_token)
        BLAS_THREADS.reset(token)


def with_blend_parts(config: PipelineConfig, names: set[str]) -> set[str]:
    """``names`` and every part of a blend among them, and the parts of those, and so on."""
    models = {m.name: m for m in config.models}
    found, pending = set(names), list(names)
    while pending:
        model = models[pending.pop()]
        if model.type == "blend":
            new = set(model.params["parts"]) - found
            found |= new
            pending += new
    return found


def all_models(
    run: RunLayout,
    config: PipelineConfig,
    selected: list[ModelConfig],
    prepared: results.Prepared,
    steps: Steps,
) -> dict[str, ModelEntry]:
    """Every model's manifest entry, in the config's order: the ``selected`` ones trained,
    the others carried over from the current run where nothing they depend on changed
    (else trained too). Carried models are linked first: a blend made in this run reads
    them."""
    refit = prepared.refit
    fingerprints = {m.name: model_fingerprint(config, m, prepared) for m in config.models}
    names = {m.name for m in selected}
    plan = plan_carry_over(
        run.root, config, fingerprints, [m.name for m in config.models if m.name not in names]
    )
    retrained = {m.name for m in config.models if m.name in names or m.name not in plan.models}
    if refit:  # a blend made on the split reads its parts trained on the split
        retrained = with_blend_parts(config, retrained)
        plan.models = {name: f for name, f in plan.models.items() if name not in retrained}
    carried = carry_over_models(run, plan)
    entries = model_chains(run, config, [m for m in config.models if m.name in retrained], refit, steps)
    entries.update(carried)
    if refit:
        shutil.rmtree(run.evaluation().dir, ignore_errors=True)  # not part of what is published
    return {
        m.name: entries[m.name].model_copy(update={"fingerprint": fingerprints[m.name]})
        for m in config.models
    }


def check_not_replacing_current(run: RunLayout, promotion: Promotion | None) -> None:
    """A held run whose id is the current run's would replace it: :class:`PromotionHeld`,
    nothing published."""
    if promotion is not None and promotion.held and promotion.against == run.run_id:
        raise PromotionHeld(
            f"run {run.run_id} failed the promotion gate: {promotion.reason}; not published, "
            "since its id names the current run (nothing changed; `--no-gate` skips the gate)",
            run.run_id,
            promotion.against,
            promotion.reason or "",
        )


def execute(
    config: PipelineConfig,
    input_path: str | Path | None,
    root: str | Path,
    run_id: str | None = None,
    models: list[str] | None = None,
    holdout: str | Path | None = None,
    steps: Steps | None = None,
    gate: bool = True,
) -> Executed:
    """One run, start to publish, then its exports: returns the published manifest, where
    it is, the runs retention removed and the exports made.

    A run evaluated on a split without refit is published as an evaluation run:
    ``CURRENT`` does not move. A production run that fails the promotion gate (``gate``
    false or ``promotion.enabled: false`` turn it off) is published as a held run:
    complete, ``CURRENT`` and ``latest`` unchanged, the reason in its manifest
    (``promotion``) and report; the caller reports it (:func:`held_error`). A held run
    whose id is the current run's is not published at all: it would replace the current
    run; :class:`PromotionHeld` is raised and nothing changes. Only a run made current is
    exported (``exports``), once it is published: an export that fails raises its
    :class:`~recsys.errors.ExportError` with the run published and current."""
    steps = steps or Steps()
    selected = config.select_models(models) if models else list(config.models)
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    transaction = storage.PublishTransaction(
        root, run_id, config.retention.keep_runs, config.output.file_mode
    )
    with transaction:
        run = transaction.run
        prepared = steps.prepare(run, config, input_path, holdout)
        forward_started = time.perf_counter()
        forward = steps.forward(run, config, input_path, prepared)
        forward_seconds = round(time.perf_counter() - forward_started, 3)
        refit = prepared.refit
        results = all_models(run, config, selected, prepared, steps)
        timings = {
            "prepare": prepared.seconds,
            "forward": forward_seconds,
            "total_before_publish": round(time.perf_counter() - started, 3),
        }
        purpose = (
            "evaluation"
            if config.evaluate.split.method != "none" and not refit and not holdout
            else "production"
        )
        manifest = assemble_manifest(run, config, prepared, results, created_at, timings, purpose)
        manifest = with_forward(manifest, forward)
        promotion = promotion_gate(run.root, config, manifest, gate) if purpose == "production" else None
        manifest = with_promotion(manifest, promotion)
        check_not_replacing_current(run, promotion)
        report = steps.report(run, manifest)
        sealed = seal_manifest(run, manifest, report)
        current = purpose == "production" and not (promotion is not None and promotion.held)
        published = steps.publish(transaction, sealed, current)
    exported = steps.export(config.exports, root, run.run_id) if current and config.exports else []
    if purpose == "evaluation":
        log.info("evaluation run %s published; CURRENT not moved (evaluate.refit is false)", run.run_id)
    elif promotion is not None and promotion.held:
        log.warning("run %s held by the promotion gate: %s", run.run_id, promotion.reason)
    return Executed(sealed, published, transaction.removed, exported)


def held_error(manifest: RunManifest) -> PromotionHeld | None:
    """The error a held run ends with (None where the run is not held): one line with
    the reason, the run ``CURRENT`` stays on, and how to promote the run by hand."""
    promotion = manifest.promotion
    if promotion is None or not promotion.held:
        return None
    return PromotionHeld(
        f"run {manifest.run_id} is complete but not promoted: {promotion.reason}, which CURRENT "
        f"and latest stay on (`recsys promote {manifest.run_id}` promotes it)",
        manifest.run_id,
        promotion.against,
        promotion.reason or "",
    )


def run_local(
    config: PipelineConfig,
    input_path: pd.DataFrame | str | Path | None,
    root: str | Path,
    run_id: str | None = None,
    models: list[str] | None = None,
    holdout: str | Path | None = None,
) -> RunManifest:
    """The whole pipeline in this process; returns the published manifest. A run the
    promotion gate holds raises :class:`PromotionHeld` once it is published (held).
    ``input_path``: the interactions table (a DataFrame is written to a temporary parquet
    file first)."""
    if isinstance(input_path, pd.DataFrame):
        with tempfile.TemporaryDirectory(prefix="recsys-input-") as tmp:
            path = storage.write_interactions_table(input_path, Path(tmp) / "interactions.parquet")
            return run_local(config, path, root, run_id, models, holdout)
    manifest = execute(config, input_path, root, run_id, models, holdout).manifest
    error = held_error(manifest)
    if error is not None:
        raise error
    return manifest
