"""Train: one model's user and item vectors, fitted (model types that learn from
interactions), read and aligned (model types that bring their own vectors), or blended
from the files of other models of the run (``blend``, made after its parts)."""

from __future__ import annotations

import logging
import time
from typing import Any

from recsys import faults, storage
from recsys.config import ModelConfig, PipelineConfig
from recsys.data.interactions import Interactions
from recsys.errors import ModelError
from recsys.manifest import Factors
from recsys.models import get_model_type
from recsys.progress import check_cancelled
from recsys.stages.results import Trained
from recsys.storage import RunLayout
from recsys.threads import blas_thread_counts

log = logging.getLogger(__name__)


def fit_progress(name: str, iterations: int | None, started: float, every: float = 5.0) -> Any:
    """A ``progress`` callback for a fit that logs an iteration line at most every
    ``every`` seconds, and the last iteration (implicit's own bar shows on a terminal only).
    Its ``blas_threads`` attribute holds the thread counts of the loaded BLAS libraries as
    seen from inside the fit, at its first iteration (empty until then)."""
    state = {"logged": started}

    def report(done: int, user_factors: Any, item_factors: Any) -> None:
        check_cancelled()  # a sibling model failed: stop after this iteration
        if not report.blas_threads:
            report.blas_threads = blas_thread_counts()
        now = time.perf_counter()
        if now - state["logged"] >= every or done == iterations:
            total = f"/{iterations}" if iterations else ""
            log.info("%s: iteration %d%s (%.1f s)", name, done, total, now - started)
            state["logged"] = now

    report.blas_threads = []
    return report


def train_stage(run: RunLayout, config: PipelineConfig, model: ModelConfig) -> Trained:
    """Fit one model (or read its vectors); write its user and item factors."""
    interactions = storage.read_interactions(run.data_dir)
    model_type = get_model_type(model.type)
    if model.type == "blend":
        return _blend_stage(run, config, model, interactions)
    if model_type.source == "vectors":
        return _vectors_stage(run, model, interactions)
    log.info("%s: training %s on %d interactions", model.name, model.type, interactions.nnz)
    started = time.perf_counter()
    iterations = model.params.get("iterations", getattr(model.typed_params, "iterations", None))
    progress = fit_progress(model.name, iterations, started)
    embeddings = model_type.fit(
        model.params, interactions.user_items, config.seed, model.name, progress=progress
    )
    fit_seconds = time.perf_counter() - started
    faults.point("after-fit")
    # random_state as the fit used it, for the types that have one: the manifest's params
    # are what a fold-in validates against the type again
    seeded = (
        {"random_state": config.seed, **model.params}
        if "random_state" in model_type.params.model_fields
        else dict(model.params)
    )
    run.model_dir(model.name).mkdir(parents=True, exist_ok=True)
    storage.write_array(run.user_factors(model.name), embeddings.user_factors)
    storage.write_array(run.item_factors(model.name), embeddings.item_factors)
    extras = {}
    for key, array in embeddings.extras.items():
        storage.write_array(run.model_array(model.name, key), array)
        extras[key] = run.relative(run.model_array(model.name, key))
    threads = f" (BLAS threads in the fit: {max(progress.blas_threads)})" if progress.blas_threads else ""
    log.info("%s: trained in %.1fs, %d factors%s", model.name, fit_seconds, embeddings.dim, threads)
    return Trained(
        type=model.type,
        params=seeded,
        dim=embeddings.dim,
        factors=Factors(
            user=run.relative(run.user_factors(model.name)),
            item=run.relative(run.item_factors(model.name)),
            extras=extras,
        ),
        seconds=round(fit_seconds, 3),
    )


def _vectors_stage(run: RunLayout, model: ModelConfig, interactions: Interactions) -> Trained:
    """Read, validate and align a precomputed model's vectors to the run's ids."""
    from recsys.storage.vectors import align, read_vectors

    started = time.perf_counter()
    params = model.params
    ids, vectors = read_vectors(params["items"], params.get("item_ids"), params.get("column"))
    item_factors = align(ids, vectors, interactions.items, params["items"], "item")
    run.model_dir(model.name).mkdir(parents=True, exist_ok=True)
    storage.write_array(run.item_factors(model.name), item_factors)
    user = None
    if params.get("users") and interactions.n_users:
        user_ids, user_vectors = read_vectors(
            params["users"], params.get("user_ids"), params.get("column"), "user"
        )
        if user_vectors.shape[1] != item_factors.shape[1]:
            raise ModelError(
                f"model {model.name}: user vectors have dimension {user_vectors.shape[1]}, "
                f"item vectors {item_factors.shape[1]}"
            )
        storage.write_array(
            run.user_factors(model.name),
            align(user_ids, user_vectors, interactions.users, params["users"], "user"),
        )
        user = run.relative(run.user_factors(model.name))
    log.info(
        "%s: read %d precomputed item vectors of dimension %d",
        model.name,
        len(item_factors),
        item_factors.shape[1],
    )
    return Trained(
        type=model.type,
        params=dict(params),
        dim=int(item_factors.shape[1]),
        factors=Factors(item=run.relative(run.item_factors(model.name)), user=user),
        seconds=round(time.perf_counter() - started, 3),
    )


def _blend_stage(
    run: RunLayout, config: PipelineConfig, model: ModelConfig, interactions: Interactions
) -> Trained:
    """A blend from its parts' factor files in this run (trained, or carried over, before
    it): each part scaled by its weight and the scale estimated on the training matrix."""
    from recsys.models.blend import make_blend

    started = time.perf_counter()
    parts = {}
    for part in model.params["parts"]:
        user, item = run.user_factors(part), run.item_factors(part)
        if not item.exists():
            raise ModelError(
                f"model {model.name}: part {part} has no vectors in the run ({run.relative(item)})"
            )
        if not user.exists():
            raise ModelError(f"model {model.name}: part {part} has no user vectors to blend (items only)")
        parts[part] = (storage.read_array(user, mmap=True), storage.read_array(item, mmap=True))
    embeddings, scales = make_blend(model.name, model.params, parts, interactions.user_items, config.seed)
    run.model_dir(model.name).mkdir(parents=True, exist_ok=True)
    storage.write_array(run.user_factors(model.name), embeddings.user_factors)
    storage.write_array(run.item_factors(model.name), embeddings.item_factors)
    log.info(
        "%s: blended %s (scales %s), %d factors",
        model.name,
        ", ".join(parts),
        ", ".join(f"{part} {scale:.4g}" for part, scale in scales.items()),
        embeddings.dim,
    )
    return Trained(
        type=model.type,
        params={**model.params, "scales": scales},
        dim=embeddings.dim,
        factors=Factors(
            user=run.relative(run.user_factors(model.name)),
            item=run.relative(run.item_factors(model.name)),
        ),
        seconds=round(time.perf_counter() - started, 3),
    )
