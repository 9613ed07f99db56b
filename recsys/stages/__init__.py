"""The pipeline's stages as plain functions: Prefect-free, paths from
:class:`~recsys.storage.RunLayout`, backends and model types from their registries.

Each stage reads only what the previous stage wrote into the run folder, so any stage
can be re-run alone, and returns a typed result (:mod:`recsys.stages.results`) holding
the manifest's own parts: the run's manifest is assembled from them once
(:func:`~recsys.stages.results.model_entry`, :func:`assemble_manifest`). ``flows/``
wraps each stage in a Prefect task.
"""

from recsys.stages.evaluate import evaluate_stage, holdout_stage, published_ranking
from recsys.stages.index import index_stage
from recsys.stages.prepare import prepare_stage
from recsys.stages.publish import assemble_manifest, carry_over_models, report_stage, seal_manifest
from recsys.stages.ranked import (
    RankedJob,
    commit_ranked,
    list_spec,
    open_job_index,
    ranked_job,
    ranked_rows,
    ranked_stage,
    score_blocks,
    score_part,
    shard_bounds,
    write_part,
)
from recsys.stages.results import (
    Evaluated,
    Indexed,
    ListSpec,
    Prepared,
    Ranked,
    SplitEvaluated,
    Trained,
    model_entry,
)
from recsys.stages.train import train_stage

__all__ = [
    "Evaluated",
    "Indexed",
    "ListSpec",
    "Prepared",
    "Ranked",
    "RankedJob",
    "SplitEvaluated",
    "Trained",
    "assemble_manifest",
    "carry_over_models",
    "commit_ranked",
    "evaluate_stage",
    "published_ranking",
    "holdout_stage",
    "index_stage",
    "list_spec",
    "model_entry",
    "open_job_index",
    "prepare_stage",
    "ranked_job",
    "ranked_rows",
    "ranked_stage",
    "report_stage",
    "score_blocks",
    "score_part",
    "seal_manifest",
    "shard_bounds",
    "train_stage",
    "write_part",
]
