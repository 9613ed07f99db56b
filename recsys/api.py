"""The Python API over a published run: what the CLI's lookups use too.

::

    import recsys

    run = recsys.open_run("data/outputs")          # the run CURRENT names
    run.recommendations("als")                      # every user's list, as published
    run.recommend([42, 7], n=10, model="als")       # the same lists for given users
    run.similar(items=[3])                          # similar items, or vector=v
    run.fold_in(new_interactions, n=10)             # users the run has not seen
    run.popular(n=10)                               # the most popular items

Every file is verified against the run's manifest (size and sha256) before its first
use: a truncated or bit-flipped file is refused with a one-line :class:`RunError`,
never ranked. Use ``with recsys.open_run(root) as run:`` to hold the run for the
block: retention never deletes a run that is being read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys import storage
from recsys.data.interactions import IdMap, Interactions, clean_table
from recsys.data.vectors import vector_problem
from recsys.errors import ModelError, QueryError, RunError
from recsys.index import SearchIndex, get_backend
from recsys.manifest import ModelEntry, RankedKind, RunManifest, read_manifest
from recsys.recommend import allowed_by_table, exclude_items, search_all
from recsys.storage import RunLayout

DEFAULT_ROOT = "data/outputs"
RECOMMENDATION_COLUMNS = ("user_id", "item_id", "rank", "score", "model", "run_id", "source")
"""The columns of recommendations, published or answered (docs/tables.md)."""
POPULAR = "popular"
"""``model`` and ``source`` of the popular fallback's rows."""


class Run:
    """A published run, opened for reading (see :func:`open_run`)."""

    def __init__(self, layout: RunLayout, manifest: RunManifest):
        self.layout = layout
        self.manifest = manifest
        self._verified: dict[str, Path] = {}
        self._interactions: Interactions | None = None
        self._arrays: dict[str, np.ndarray] = {}
        self._indices: dict[tuple[str, str], SearchIndex] = {}
        self._allowed: tuple[np.ndarray | None] | None = None
        self._lock: contextlib.ExitStack | None = None

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, models={self.models}, dir={str(self.dir)!r})"

    # ---------------------------------------------------------- identity

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def dir(self) -> Path:
        return self.layout.dir

    @property
    def models(self) -> list[str]:
        return list(self.manifest.models)

    def model(self, name: str | None = None) -> tuple[str, ModelEntry]:
        """A model's name and manifest entry (default: the run's best model on the held-out
        interactions, ``manifest.best_model``; the first model where no model was measured)."""
        return self.manifest.model(name or self.manifest.best_model)

    def __enter__(self) -> Run:
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(storage.reading(self.layout))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---------------------------------------------------------- verified files

    def file(self, relative: str) -> Path:
        """A file the manifest names, verified against its size and sha256 (once per Run)."""
        if relative not in self._verified:
            listed = self.manifest.files.get(relative)
            if listed is None:
                raise RunError(f"{self.layout.manifest}: {relative} has no checksum in the manifest")
            self._verified[relative] = storage.verified_path(
                self.dir, relative, listed.size_bytes, listed.sha256
            )
        return self._verified[relative]

    @property
    def interactions(self) -> Interactions:
        """The run's id maps and the users x items matrix of what each user has seen."""
        if self._interactions is None:
            data = self.manifest.data
            self._interactions = Interactions(
                users=storage.read_id_map(self.file(data.users)),
                items=storage.read_id_map(self.file(data.items)),
                user_items=storage.read_sparse(self.file(data.user_items)),
                stats=storage.read_json(self.file(data.stats)),
            )
        return self._interactions

    @property
    def allowed_items(self) -> np.ndarray | None:
        """bool per internal item id: the items recommendations may contain under the
        run's ``recommend.include_items`` / ``exclude_items`` (None: every item)."""
        if self._allowed is None:
            rules = self.manifest.data.item_rules
            mask = (
                allowed_by_table(pq.read_table(self.file(rules)), self.interactions.items) if rules else None
            )
            self._allowed = (mask,)
        return self._allowed[0]

    def _array(self, relative: str) -> np.ndarray:
        if relative not in self._arrays:
            self._arrays[relative] = storage.read_array(self.file(relative), mmap=True)
        return self._arrays[relative]

    def item_factors(self, model: str | None = None) -> np.ndarray:
        """float32 (items, dim), row = internal item id."""
        _, entry = self.model(model)
        return self._array(entry.factors.item)

    def item_vectors(self, items: list[Any] | Any, model: str | None = None) -> np.ndarray:
        """float32 (len(items), dim): the vectors of items given by their external ids."""
        positions = self.interactions.items.to_internal(_as_list(items))
        return np.asarray(self.item_factors(model)[positions], dtype=np.float32)

    def user_factors(self, model: str | None = None) -> np.ndarray:
        """float32 (users, dim), row = internal user id; a QueryError for a model without
        user vectors."""
        name, entry = self.model(model)
        if entry.factors.user is None:
            raise QueryError(f"model {name} of run {self.run_id} has no user vectors (vectors of items only)")
        return self._array(entry.factors.user)

    def index(self, model: str | None, metric: str) -> SearchIndex:
        """The index that serves ``metric`` for a model, opened by its backend (cached)."""
        name, entry = self.model(model)
        if metric not in entry.indices:
            raise QueryError(f"model {name} of run {self.run_id} has no {metric} index")
        if (name, metric) not in self._indices:
            index_entry = entry.indices[metric]
            backend = get_backend(index_entry.backend)
            factors = np.ascontiguousarray(self.item_factors(name))
            self._indices[(name, metric)] = backend.open(index_entry, factors, self.file, None)
        return self._indices[(name, metric)]

    # ---------------------------------------------------------- published lists

    def list_files(self, model: str | None, kind: RankedKind) -> list[Path]:
        """The part files of a model's published list (``recommendations`` or
        ``similar_items``), in query order, each verified against its size and sha256; a
        QueryError for a model that published none."""
        name, entry = self.model(model)
        output = entry.outputs.get(kind)
        if output is None:
            what = "recommendations" if kind == "recommendations" else "similar items"
            raise QueryError(f"model {name} of run {self.run_id} published no {what}")
        return [self.file(path) for path in output.files()]

    def recommendations(self, model: str | None = None) -> pd.DataFrame:
        """Every user's published list: ``user_id, item_id, rank, score, model, run_id,
        source`` (``source`` is ``model`` in every published row; docs/tables.md)."""
        return storage.read_ranked_table(self.list_files(model, "recommendations")).to_pandas()

    def similar_items(self, model: str | None = None) -> pd.DataFrame:
        """Every item's published similar items: ``item_id, similar_item_id, rank, score, model, run_id``."""
        return storage.read_ranked_table(self.list_files(model, "similar_items")).to_pandas()

    # ---------------------------------------------------------- answers

    def _n(self, n: int | None, kind: RankedKind, limit: int) -> int:
        n = self.manifest.lists[kind].top_n if n is None else n
        if not isinstance(n, int | np.integer) or isinstance(n, bool):
            raise QueryError(f"n must be a whole number, found {type(n).__name__} {n!r}")
        if not 1 <= n <= limit:
            raise QueryError(f"n must be between 1 and the {limit} items, found {n}")
        return int(n)

    def _ranked(
        self,
        model: str | None,
        kind: RankedKind,
        queries: np.ndarray,
        exclude: sp.csr_matrix,
        n: int | None,
    ) -> tuple[str, np.ndarray, np.ndarray]:
        name, entry = self.model(model)
        metric = self.manifest.lists[kind].metric
        index = self.index(name, metric)
        n = self._n(n, kind, index.n_items)
        search_k = entry.indices[metric].query_search_k
        allowed = self.allowed_items if kind == "recommendations" else None  # the published lists' rules
        ids, scores = search_all(
            index, queries, n, exclude, self.item_factors(name), search_k, allowed=allowed
        )
        return name, ids, scores

    def _frame(
        self,
        query_column: str,
        query_ids: list[Any],
        result_column: str,
        name: str,
        ids: np.ndarray,
        scores: np.ndarray,
    ) -> pd.DataFrame:
        rows, places = np.nonzero(ids >= 0)
        items = self.interactions.items
        frame = pd.DataFrame(
            {
                query_column: pd.Series(np.asarray(query_ids, dtype=object)[rows]).astype(_dtype(query_ids)),
                result_column: items.to_external(ids[rows, places]),
                "rank": (places + 1).astype(np.int32),
                "score": scores[rows, places].astype(np.float32),
                "model": name,
                "run_id": self.run_id,
            }
        )
        if result_column == "item_id":  # recommendations: the columns of the published lists
            frame["source"] = "model"
        return frame

    def recommend(
        self,
        users: list[Any] | Any,
        n: int | None = None,
        model: str | None = None,
        fallback: str | None = None,
    ) -> pd.DataFrame:
        """Top-n unseen items for users the run knows (external ids, typed as the run's),
        as the published lists rank them (the run's item rules applied). Unknown users: a
        QueryError, or with ``fallback="popular"`` the most popular items the rules allow
        (``model`` and ``source`` are then ``popular``, and the score is the number of the
        run's users who interacted with the item, not a model score: docs/tables.md)."""
        users = _as_list(users)
        if fallback is None:
            self.user_factors(model)  # a model of item vectors only: say so, not "unknown user"
        interactions = self.interactions
        positions = interactions.users.to_internal(users, strict=fallback is None)
        known = positions >= 0
        frames = []
        if known.any():
            rows = positions[known]
            queries = np.asarray(self.user_factors(model)[rows], dtype=np.float32)
            name, ids, scores = self._ranked(
                model, "recommendations", queries, interactions.user_items[rows], n
            )
            frames.append(
                self._frame(
                    "user_id",
                    [u for u, k in zip(users, known, strict=True) if k],
                    "item_id",
                    name,
                    ids,
                    scores,
                )
            )
        if not known.all():
            if fallback != "popular":
                raise QueryError(f"fallback must be None or 'popular', found {fallback!r}")
            popular = self._popular(n, self.allowed_items)
            for user in [u for u, k in zip(users, known, strict=True) if not k]:
                frames.append(popular.assign(user_id=user))
        columns = list(RECOMMENDATION_COLUMNS)
        return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)

    def fold_in(
        self, interactions: pd.DataFrame, n: int | None = None, model: str | None = None
    ) -> pd.DataFrame:
        """Top-n for users given as a table of ``user_id, item_id[, weight]`` (new users, or
        known users with new items), folded in against the run's item factors without
        retraining; their items are excluded from their lists, and the run's item rules
        apply as to the published lists. Rows of items the run does not know are ignored
        (``attrs["ignored_rows"]`` counts them)."""
        name, entry = self.model(model)
        if not isinstance(interactions, pd.DataFrame):
            raise QueryError(
                "fold_in interactions must be a pandas DataFrame with columns user_id, item_id[, weight], "
                f"found {type(interactions).__name__}"
            )
        table = clean_table(interactions, source="fold_in interactions")
        run_items = self.interactions.items
        items = run_items.to_internal(table.items, strict=False)
        known = items >= 0
        if not known.any():
            raise QueryError(f"none of its {len(items)} items is in the run")
        users, rows = np.unique(table.users[known].astype(object), return_inverse=True)
        user_items = sp.csr_matrix(
            (table.weights[known].astype(np.float32), (rows, items[known])),
            shape=(len(users), len(run_items)),
        )
        largest = float(table.weights[known].max())
        self._check_folds_in(name, entry)
        try:
            queries = self._folded(name, entry, user_items)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:  # the solve failed
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise QueryError(
                f"model {name}: these users cannot be folded in ({detail}); the largest weight is "
                f"{largest:.3g}: rescale the weights"
            ) from None
        problem = vector_problem(np.asarray(queries, dtype=np.float32), "folded-in user vectors")
        if problem:
            raise QueryError(
                f"model {name}: {problem}; the largest weight is {largest:.3g}: rescale the weights"
            )
        name, ids, scores = self._ranked(name, "recommendations", queries, user_items, n)
        frame = self._frame("user_id", users.tolist(), "item_id", name, ids, scores)
        frame.attrs["ignored_rows"] = int((~known).sum())
        return frame

    def _check_folds_in(self, name: str, entry: ModelEntry) -> None:
        """A ModelError naming the model, or the first part of a blend, that cannot fold users in."""
        from recsys.models import get_model_type

        if entry.type != "blend":
            return  # the type's own fold_in says whether it can
        for part in entry.params["parts"]:
            part_entry = self.manifest.models.get(part)
            if part_entry is None:
                raise RunError(
                    f"{self.layout.manifest}: blend {name} names part {part}, not a model of the run"
                )
            if not get_model_type(part_entry.type).folds_in:
                raise ModelError(
                    f"model {name}: its part {part}, a {part_entry.type} model, cannot fold users in, "
                    "so neither can the blend"
                )
            self._check_folds_in(part, part_entry)

    def _folded(self, name: str, entry: ModelEntry, user_items: sp.csr_matrix) -> np.ndarray:
        """User vectors of ``user_items`` folded in by one model: against its item factors
        and the arrays it keeps, or, for a blend, by each of its parts, then scaled and put
        side by side as the blend's vectors are."""
        from recsys.models import get_model_type

        if entry.type == "blend":
            from recsys.models.blend import blend_vectors, multipliers

            scaled = multipliers(entry.params)
            folded = [self._folded(part, self.manifest.models[part], user_items) for part in scaled]
            return blend_vectors(folded, list(scaled.values()))
        factors = np.array(self.item_factors(name))  # a writable copy: implicit needs one
        extras = {key: np.asarray(self._array(path)) for key, path in entry.factors.extras.items()}
        return get_model_type(entry.type).fold_in(entry.params, factors, user_items, extras)

    def similar(
        self,
        items: list[Any] | Any | None = None,
        vector: np.ndarray | None = None,
        n: int | None = None,
        model: str | None = None,
    ) -> pd.DataFrame:
        """The n items most similar to given items (never the item itself), or nearest to
        query vectors (one per row of ``vector``; column ``query`` is the row)."""
        if (items is None) == (vector is None):
            raise QueryError("give items or vector, not both")
        run_items = self.interactions.items
        factors = self.item_factors(model)
        if vector is not None:
            queries = _query_vectors(vector)
            if queries.ndim == 1:
                queries = queries[None, :]
            if queries.ndim != 2 or queries.shape[1] != factors.shape[1]:
                raise QueryError(
                    f"a query vector must have the model's dimension {factors.shape[1]}, "
                    f"found shape {queries.shape}"
                )
            problem = vector_problem(queries, "query vectors")
            if problem:
                raise QueryError(problem)
            exclude = sp.csr_matrix((len(queries), len(run_items)), dtype=np.float32)
            name, ids, scores = self._ranked(model, "similar_items", queries, exclude, n)
            return self._frame("query", list(range(len(queries))), "similar_item_id", name, ids, scores)
        item_list = _as_list(items)
        positions = run_items.to_internal(item_list)
        queries = np.asarray(factors[positions], dtype=np.float32)
        name, ids, scores = self._ranked(
            model, "similar_items", queries, exclude_items(positions, len(run_items)), n
        )
        return self._frame("item_id", item_list, "similar_item_id", name, ids, scores)

    def popular(self, n: int | None = None) -> pd.DataFrame:
        """The n items with the most users in the run's interactions: the fallback for
        users the run does not know. The columns of the recommendations but ``user_id``:
        ``item_id, rank, score, model, run_id, source``, with ``model`` and ``source``
        ``popular`` and the score the number of the run's users who interacted with the
        item (a count, not a model score)."""
        return self._popular(n, None)

    def _popular(self, n: int | None, allowed: np.ndarray | None) -> pd.DataFrame:
        """:meth:`popular` among the ``allowed`` items (all where None)."""
        interactions = self.interactions
        n = self._n(n, "recommendations", interactions.n_items)
        users_per_item = np.diff(interactions.user_items.tocsc().indptr)
        top = np.argsort(-users_per_item, kind="stable")
        top = (top if allowed is None else top[allowed[top]])[:n]
        return pd.DataFrame(
            {
                "item_id": interactions.items.to_external(top),
                "rank": np.arange(1, len(top) + 1, dtype=np.int32),
                "score": users_per_item[top].astype(np.float32),
                "model": POPULAR,
                "run_id": self.run_id,
                "source": POPULAR,
            }
        )


def _query_vectors(vector: Any) -> np.ndarray:
    """Query vectors as float32, or a QueryError where they do not hold real numbers (an
    array of strings, objects, ragged lists)."""
    try:
        raw = np.asarray(vector)
    except (ValueError, TypeError) as exc:
        raise QueryError(
            f"a query vector must be an array of numbers ({' '.join(str(exc).split())})"
        ) from None
    if raw.dtype.kind not in "iuf":
        raise QueryError(
            f"a query vector must hold real numbers, found {raw.dtype} ({type(vector).__name__})"
        )
    with np.errstate(over="ignore"):
        return raw.astype(np.float32)  # past float32: inf, refused as not finite


def _as_list(ids: Any) -> list[Any]:
    if isinstance(ids, str | bytes) or not hasattr(ids, "__iter__"):
        return [ids]
    return list(ids)


def _dtype(ids: list[Any]) -> Any:
    return np.int64 if all(isinstance(i, int | np.integer) for i in ids) and ids else object


def open_run(root: str | Path = DEFAULT_ROOT, run_id: str | None = None) -> Run:
    """The complete published run that ``CURRENT`` names under ``root`` (or ``run_id``),
    with its manifest validated. A one-line RunError where there is none, it is
    incomplete, or its manifest does not validate."""
    layout = storage.find_run(root, run_id)
    return Run(layout, read_manifest(layout))


__all__ = ["DEFAULT_ROOT", "RECOMMENDATION_COLUMNS", "IdMap", "Run", "open_run"]
