"""Where every file of a run lives. Stages and readers ask the layout for a path and
never spell a file name themselves.

Run folder (paths relative to it, as the manifest records them)::

    data/users.parquet, data/items.parquet    external ids, position = internal id
    data/user_items.npz                       CSR (users x items) of seen items
    data/holdout.npz                          CSR of held-out items (evaluation runs)
    data/stats.json                           what validation read, merged and dropped
    data/item_rules.parquet                   recommend.include_items / exclude_items, resolved
    models/<name>/user_factors.npy            float32 (users, dim)
    models/<name>/item_factors.npy            float32 (items, dim)
    models/<name>/<metric>.ann (+ .ann.json)  Annoy index and its own manifest
    models/<name>/recommendations.parquet
    models/<name>/similar_items.parquet
    report.html
    manifest.json                             written last, before the folder is published
    _SUCCESS                                  written after the folder is in place
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_FILES = {
    "users": "users.parquet",
    "items": "items.parquet",
    "user_items": "user_items.npz",
    "stats": "stats.json",
}
RANKED_KINDS = ("recommendations", "similar_items")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run, being written (``staging``: a hidden folder under ``runs/``) or
    published (``runs/<run_id>``)."""

    root: Path
    run_id: str
    staging: bool = True
    part: str = ""
    """A part of the run with the same layout inside its folder (``evaluation``: the data
    and models of the held-out evaluation, removed before publishing)."""

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def dir(self) -> Path:
        folder = self.runs_dir / (f".staging-{self.run_id}" if self.staging else self.run_id)
        return folder / self.part if self.part else folder

    def published(self) -> RunLayout:
        return RunLayout(self.root, self.run_id, staging=False)

    def evaluation(self) -> RunLayout:
        """The layout of the evaluation part: models trained on the training split."""
        return RunLayout(self.root, self.run_id, self.staging, part="evaluation")

    def relative(self, path: Path) -> str:
        return path.relative_to(self.dir).as_posix()

    def path(self, relative: str) -> Path:
        """The path of a file the manifest names (unchecked: see ``storage.inside``)."""
        return self.dir / relative

    # ---------------------------------------------------------- data

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def data_file(self, key: str) -> Path:
        return self.data_dir / DATA_FILES[key]

    @property
    def holdout(self) -> Path:
        return self.data_dir / "holdout.npz"

    @property
    def item_rules(self) -> Path:
        """The items recommendations may (``include``) or may not (``exclude``) contain:
        the config's lists resolved to the run's items (runs with item rules only)."""
        return self.data_dir / "item_rules.parquet"

    # ---------------------------------------------------------- models

    def model_dir(self, model: str) -> Path:
        return self.dir / "models" / model

    def user_factors(self, model: str) -> Path:
        return self.model_dir(model) / "user_factors.npy"

    def item_factors(self, model: str) -> Path:
        return self.model_dir(model) / "item_factors.npy"

    def model_array(self, model: str, name: str) -> Path:
        """Another array a model keeps beside its factors (``<name>.npy``)."""
        return self.model_dir(model) / f"{name}.npy"

    def index_file(self, model: str, metric: str, suffix: str = "ann") -> Path:
        """The file of one index of a model (``<metric>.<suffix>``)."""
        return self.model_dir(model) / f"{metric}.{suffix}"

    def ranked(self, model: str, kind: str) -> Path:
        """The ``recommendations`` or ``similar_items`` parquet dataset of a model: a
        folder of part files (:meth:`ranked_part`)."""
        if kind not in RANKED_KINDS:
            raise ValueError(f"kind must be one of {RANKED_KINDS}, found {kind!r}")
        return self.model_dir(model) / f"{kind}.parquet"

    def ranked_part(self, model: str, kind: str, number: int) -> Path:
        """Part ``number`` of a model's list dataset: ``part-NNNNN.parquet`` (part files
        in query order, the layout Spark and DuckDB write)."""
        return self.ranked(model, kind) / f"part-{number:05d}.parquet"

    # ---------------------------------------------------------- run

    @property
    def report(self) -> Path:
        return self.dir / "report.html"

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def success(self) -> Path:
        return self.dir / "_SUCCESS"
