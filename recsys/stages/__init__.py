"""The pipeline's stages as plain functions: Prefect-free, paths from
:class:`~recsys.storage.RunLayout`, backends and model types from their registries.

Each stage reads only what the previous stage wrote into the run folder, so any stage
can be re-run alone, and returns a small JSON-able dict that goes into the manifest
(:func:`assemble_manifest` validates the whole as a :class:`~recsys.manifest.RunManifest`).
``flows/`` wraps each stage in a Prefect task.
"""

from recsys.stages.evaluate import evaluate_stage, holdout_stage
from recsys.stages.index import index_stage
from recsys.stages.prepare import prepare_stage
from recsys.stages.publish import (
    assemble_manifest,
    carry_over_models,
    merge_model_results,
    report_stage,
    seal_manifest,
)
from recsys.stages.ranked import (
    RankedJob,
    open_job_index,
    ranked_job,
    ranked_rows,
    recommend_stage,
    score_blocks,
    score_shard,
    shard_bounds,
    similar_stage,
    write_ranked,
)
from recsys.stages.train import train_stage

__all__ = [
    "RankedJob",
    "assemble_manifest",
    "carry_over_models",
    "evaluate_stage",
    "holdout_stage",
    "index_stage",
    "merge_model_results",
    "open_job_index",
    "prepare_stage",
    "ranked_job",
    "ranked_rows",
    "recommend_stage",
    "report_stage",
    "seal_manifest",
    "score_blocks",
    "score_shard",
    "shard_bounds",
    "similar_stage",
    "train_stage",
    "write_ranked",
]
