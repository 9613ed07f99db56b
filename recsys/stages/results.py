"""What the stages hand each other: typed results, one per stage, each holding the
manifest's own parts (:mod:`recsys.manifest`), so the run's manifest is assembled from
them once (:func:`model_entry`, :func:`recsys.stages.publish.assemble_manifest`).

They are small (paths, figures, index entries), never arrays or open indices, so a
Prefect task or a Dask worker can return them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recsys.index import IndexEntry, IndexEntryBase
from recsys.manifest import (
    AnnEvaluation,
    DataFiles,
    Evaluation,
    Factors,
    HoldoutInfo,
    InputInfo,
    ListOutput,
    ListSpec,
    Metric,
    ModelEntry,
    Outputs,
    RankedKind,
    Ranking,
    Rows,
)


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleCount(_Result):
    """How many ids one item-rule list gives, how many of them are items of the run."""

    listed: int = Field(ge=0)
    known: int = Field(ge=0)
    unknown: int = Field(ge=0)


class ItemRules(_Result):
    """``recommend.include_items`` / ``exclude_items`` as resolved against the run's items."""

    include_items: RuleCount | None = None
    exclude_items: RuleCount | None = None
    allowed: int = Field(ge=0)
    """Items the rules allow."""
    sha256: str
    """Of the resolved rules file: part of every model's fingerprint."""


class Prepared(_Result):
    """What the prepare stage wrote: the input's fingerprint and figures, the run's data
    files, the held-out part, the resolved item rules."""

    input: InputInfo
    data: DataFiles
    holdout: HoldoutInfo | None = None
    item_rules: ItemRules | None = None
    refit: bool = False
    """True: the published data is all of the input, the split went to the run's
    evaluation part (models are evaluated there, then refit on everything)."""
    seconds: float


class Trained(_Result):
    """One model's vectors, fitted or read."""

    type: str
    params: dict[str, Any]
    """The params as the manifest records them (``random_state`` included)."""
    dim: int = Field(ge=1)
    factors: Factors
    seconds: float


class Indexed(_Result):
    """How each index of a model is served, by metric."""

    indices: dict[Metric, IndexEntry]
    seconds: float

    def entry(self, metric: Metric) -> IndexEntryBase:
        return self.indices[metric]


class Ranked(_Result):
    """One kind of ranked list of a model, written as a dataset of part files (``output``
    None: the model has no queries of that kind, a model without user vectors has no
    recommendations)."""

    kind: RankedKind
    output: ListOutput | None = None
    seconds: float

    @property
    def rows(self) -> int:
        return self.output.rows if self.output is not None else 0


class Evaluated(_Result):
    """A model's evaluation on the published data: recall against exact search, and
    ranking figures where the run holds interactions out without refit."""

    evaluation: Evaluation
    seconds: float


class SplitEvaluated(_Result):
    """Ranking figures of a model trained on the training split (the run's evaluation
    part), on the held-out interactions."""

    ranking: Ranking
    ranking_exact: Ranking
    seconds: float


def model_entry(
    trained: Trained,
    indexed: Indexed,
    recommended: Ranked,
    similar: Ranked,
    evaluated: Evaluated,
    split: SplitEvaluated | None = None,
    fingerprint: str | None = None,
) -> ModelEntry:
    """A model's manifest entry from its stages' results. With ``split``, the ranking
    figures come from the split, the recall figures from the refit model."""
    evaluation = evaluated.evaluation
    timings = {
        "fit": trained.seconds,
        "index": indexed.seconds,
        "recommend": recommended.seconds,
        "similar_items": similar.seconds,
        "evaluate": evaluated.seconds,
    }
    if split is not None:
        evaluation = Evaluation(ann=evaluation.ann, ranking=split.ranking, ranking_exact=split.ranking_exact)
        timings["evaluate_split"] = split.seconds
    outputs = {r.kind: r.output for r in (recommended, similar) if r.output is not None}
    rows = {r.kind: r.rows for r in (recommended, similar) if r.output is not None}
    return ModelEntry(
        type=trained.type,
        params=trained.params,
        dim=trained.dim,
        factors=trained.factors,
        indices=indexed.indices,
        outputs=Outputs(**outputs),
        rows=Rows(**rows),
        timings=timings,
        evaluation=evaluation,
        fingerprint=fingerprint,
    )


__all__ = [
    "AnnEvaluation",
    "Evaluated",
    "Indexed",
    "ItemRules",
    "ListSpec",
    "Prepared",
    "Ranked",
    "RankedKind",
    "RuleCount",
    "SplitEvaluated",
    "Trained",
    "model_entry",
]
