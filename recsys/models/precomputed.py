"""``precomputed``: vectors made elsewhere (an image or text encoder, another system),
read from files by the pipeline's train stage and aligned to the run's ids. Never fitted."""

from __future__ import annotations

from recsys.errors import ModelError
from recsys.models.base import Embeddings, ModelParams, ModelType, Training


class PrecomputedParams(ModelParams):
    """Where the vectors are."""

    items: str
    """Item vectors: a parquet table (an ``id`` or ``item_id`` column and a list column,
    or one float column per dimension) or a ``.npy`` matrix with its ids in ``item_ids``."""
    item_ids: str | None = None
    """Id table of a ``.npy`` item matrix, one id per row."""
    users: str | None = None
    """Optional user vectors in the same format: then recommendations are made too."""
    user_ids: str | None = None
    """Id table of a ``.npy`` user matrix."""
    column: str | None = None
    """The list column of a parquet table; when not given, ``vector`` or the only one."""


class Precomputed(ModelType):
    name = "precomputed"
    params = PrecomputedParams
    source = "vectors"
    space = {}

    def train(self, params: PrecomputedParams, data: Training) -> Embeddings:
        raise ModelError(
            f"model {data.name}: a precomputed model reads its vectors (params.items) and is never "
            "trained; the pipeline's train stage reads them"
        )
