"""ALS fit time as a user gets it (no thread variable set) against the best setting
(``OPENBLAS_NUM_THREADS=1``), same data, same command: the product sets its own BLAS
limits, so the two should be equal.

Each case runs ``recsys run`` (the installed console script) in a clean environment (a
PATH and a HOME, nothing else) and again with ``OPENBLAS_NUM_THREADS=1`` added, the two
alternating, ``--repeats`` times each; the fit time is the manifest's (``timings.fit``
of the model trained on all the input), the best of the repeats is kept, and the ratio
clean / pinned is printed with whether implicit printed its thread warning. Cases:

- MovieLens ml-latest-small (ratings >= 3.5), the production default (ALS, 256 factors,
  20 iterations), when the data set is found;
- a generated 3,000 users x 8,000 items table, ALS with 256 factors and 10 iterations.

    python -m benchmarks.threads [--repeats 3] [--ratings ../shared/data/ml-latest-small/ratings.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.pipeline import create_prefect_database
from recsys import storage
from recsys.data import generate_interactions

ROOT = Path(__file__).resolve().parents[1]
RECSYS = str(Path(sys.executable).with_name("recsys"))
WARNING = "OpenBLAS is configured to use"


def fit_seconds(args: list[str], env: dict[str, str], output: Path) -> tuple[float, bool]:
    """One ``recsys run``: the fit time of its first model, and whether implicit warned."""
    done = subprocess.run(
        [RECSYS, "run", *args, "--output", str(output)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"recsys run {' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    run_id = (output / "CURRENT").read_text().strip()
    manifest = json.loads((output / "runs" / run_id / "manifest.json").read_text())
    model = next(iter(manifest["models"].values()))
    return float(model["timings"]["fit"]), WARNING in done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratings", default=str(ROOT.parent / "shared/data/ml-latest-small/ratings.csv"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}
        clean["PREFECT_HOME"] = str(tmp / "prefect")
        create_prefect_database(clean)
        pinned = {**clean, "OPENBLAS_NUM_THREADS": "1"}
        cases = []
        if Path(args.ratings).exists():
            from recsys.storage.importers import read_source, to_implicit

            frame = to_implicit(read_source("movielens", args.ratings), min_rating=3.5, weighting="binary")
            storage.write_interactions_table(frame, tmp / "movielens.parquet")
            cases.append(
                ("ml-latest-small, production default", ["--interactions", str(tmp / "movielens.parquet")])
            )
        else:
            print(f"{args.ratings} not found: the MovieLens case is left out")
        generated = generate_interactions(n_users=3000, n_items=8000, n_clusters=20, seed=1)
        storage.write_interactions_table(generated, tmp / "generated.parquet")
        config = {
            "models": [{"name": "als", "type": "als", "params": {"factors": 256, "iterations": 10}}],
            "evaluate": {"split": {"method": "none"}},
        }
        (tmp / "generated.yaml").write_text(yaml.safe_dump(config))
        cases.append(
            (
                "generated 3,000 x 8,000, 256 factors",
                ["--config", str(tmp / "generated.yaml"), "--interactions", str(tmp / "generated.parquet")],
            )
        )
        print(f"{'case':40} {'clean_s':>8} {'pinned_s':>9} {'ratio':>6}  warning(clean/pinned)")
        for label, run_args in cases:
            times: dict[str, list[float]] = {"clean": [], "pinned": []}
            warned = {"clean": False, "pinned": False}
            for repeat in range(args.repeats):
                for name, env in (("clean", clean), ("pinned", pinned)):
                    seconds, warning = fit_seconds(run_args, env, tmp / f"out-{name}-{repeat}")
                    times[name].append(seconds)
                    warned[name] |= warning
            best_clean, best_pinned = min(times["clean"]), min(times["pinned"])
            print(
                f"{label:40} {best_clean:8.2f} {best_pinned:9.2f} {best_clean / best_pinned:6.2f}  "
                f"{warned['clean']}/{warned['pinned']}"
            )


if __name__ == "__main__":
    main()
