"""Seconds per ``recsys tune --model spectral`` trial: a full fit per trial (each trial runs
its own randomized SVD at its factors, as tuning did before) against the SVD made once at
the space's largest factors and truncated and reweighted by each trial
(:class:`recsys.models.spectral.SpectralBasis`), both measured in the same run.

A generated table (``--users`` x ``--items``, 40 taste clusters, about 30 items per user;
seconds to make) is split as ``recsys tune`` splits it (20% of each user's items held out).
``--trials`` params are drawn, seeded, from the spectral space with factors 64 ..
``--factors`` (log), spectral_power 0 .. 2 and item_exponent 0 .. 1; each is trained and
scored (exact top-N of every validation user, as a trial is) both ways, one after the
other (the SVD first), so that a shared machine's changing load hits both alike. Printed:
each trial's seconds and ndcg both ways, the mean seconds per trial before and after (the
one SVD apart and spread over the trials) and their ratio. ``--study N`` then times the whole
study of N trials (the baseline and N - 1 drawn) through :func:`recsys.tuning.tune`, which
makes the SVD once.

    nice -n 10 .venv/bin/python -m benchmarks.tune_spectral [--users 30000] [--items 40000]
        [--factors 512] [--trials 5] [--study 50]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.data.interactions import clean_table, interactions_from_table
from recsys.data.splits import map_holdout
from recsys.models import get_model_type
from recsys.models.spectral import SpectralBasis, SpectralParams
from recsys.tuning import PRUNE_SAMPLE_USERS, Scorer, carve_validation, tune

SEED = 0
SPECTRAL = get_model_type("spectral")


def config(factors: int) -> dict:
    return {
        "seed": SEED,
        "models": [{"name": "spectral", "type": "spectral", "params": {"factors": min(256, factors)}}],
        "recommend": {"top_n": 20},
        "evaluate": {"k": [10, 20]},
        "tune": {"space": {"spectral": {"factors": {"low": 64, "high": factors, "log": True}}}},
    }


def draws(n: int, factors: int) -> list[dict]:
    """Seeded trial params from the spectral space with factors 64 .. ``factors`` (log)."""
    rng = np.random.default_rng(SEED)
    return [
        {
            "factors": int(round(np.exp(rng.uniform(np.log(64), np.log(factors))))),
            "spectral_power": round(float(rng.uniform(0.0, 2.0)), 4),
            "item_exponent": round(float(rng.uniform(0.0, 1.0)), 4),
        }
        for _ in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--factors", type=int, default=512, help="the space's largest factors")
    parser.add_argument("--trials", type=int, default=5, help="trials timed both ways")
    parser.add_argument("--study", type=int, default=0, help="then time a whole study of this many trials")
    args = parser.parse_args()

    started = time.perf_counter()
    settings = parse_config(config(args.factors))
    table = clean_table(
        generate_interactions(n_users=args.users, n_items=args.items, n_clusters=40, seed=SEED)
    )
    rows, held_out, _ = carve_validation(settings, table)
    interactions = interactions_from_table(rows)
    validation, _ = map_holdout(interactions, held_out)
    train = interactions.user_items
    scorer = Scorer(train, validation, settings.evaluate.ks, PRUNE_SAMPLE_USERS, SEED)
    print(
        f"table: {train.shape[0]:,} users x {train.shape[1]:,} items, {train.nnz:,} training interactions, "
        f"{validation.nnz:,} held out ({time.perf_counter() - started:.1f} s to make and split)"
    )
    trials = draws(args.trials, args.factors)

    defaults = SpectralParams()
    start = time.perf_counter()
    basis = SpectralBasis.compute(
        train, args.factors, (defaults.oversampling, defaults.power_iterations, SEED), "spectral"
    )
    svd = time.perf_counter() - start
    print(f"  one SVD at {args.factors} factors: {svd:.1f} s", flush=True)
    before, after = [], []  # each trial both ways in turn: a shared machine's load hits both alike
    for params in trials:
        start = time.perf_counter()
        embeddings = SPECTRAL.fit_cached(basis, params, SEED, "spectral")
        ndcg = scorer.score(embeddings.user_factors, embeddings.item_factors)["ndcg@20"]
        after.append((time.perf_counter() - start, ndcg))
        print(f"  shared SVD     {params}: {after[-1][0]:6.1f} s, ndcg@20 {ndcg:.4f}", flush=True)
        start = time.perf_counter()
        embeddings = SPECTRAL.fit(params, train, SEED, "spectral", False)
        ndcg = scorer.score(embeddings.user_factors, embeddings.item_factors)["ndcg@20"]
        before.append((time.perf_counter() - start, ndcg))
        print(f"  fit per trial  {params}: {before[-1][0]:6.1f} s, ndcg@20 {ndcg:.4f}", flush=True)

    mean_before = sum(s for s, _ in before) / len(before)
    mean_after = sum(s for s, _ in after) / len(after)
    spread = mean_after + svd / len(after)
    gap = max(abs(b - a) for (_, b), (_, a) in zip(before, after, strict=True))
    print(
        f"seconds per trial, {len(trials)} trials, factors 64 .. {args.factors}: before {mean_before:.1f}, "
        f"after {mean_after:.1f} (x{mean_before / mean_after:.1f} faster) plus one SVD of {svd:.1f} s; "
        f"with the SVD spread over these {len(trials)} trials {spread:.1f} (x{mean_before / spread:.1f}); "
        f"largest ndcg@20 difference {gap:.4f}"
    )
    if args.study:
        logging.basicConfig(level=logging.WARNING, format="  %(message)s")
        logging.getLogger("recsys.tuning").setLevel(logging.INFO)  # a line per trial
        start = time.perf_counter()
        result = tune(settings, "spectral", train, validation, trials=args.study - 1, sampler="random")
        total, n = time.perf_counter() - start, len(result.trials)
        print(
            f"study of {n} trials with one SVD: {total:.0f} s ({total / n:.1f} s per trial; a fit per "
            f"trial at the mean above: about {mean_before * n:.0f} s); best "
            f"ndcg@20 {result.best['value']:.4f} at {result.best['params']}"
        )


if __name__ == "__main__":
    main()
