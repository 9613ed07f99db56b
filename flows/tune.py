"""The tuning flow: one validation split, one Prefect task per trial, the best params
written as a config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import flows.settings  # noqa: F401  (Prefect defaults before prefect loads)
from recsys import storage, tuning
from recsys.config import ModelConfig, resolve_inputs
from recsys.models import get_model_type


@task(name="tune-trial", cache_policy=NO_CACHE, task_run_name="trial-{number}")
def trial(
    number: int, total: int, model: ModelConfig, params: dict, work: str, ks: list[int], seed: int
) -> dict:
    train_items = storage.read_sparse(Path(work) / "train.npz")
    validation = storage.read_sparse(Path(work) / "validation.npz")
    result = tuning.run_trial(model, params, train_items, validation, ks, seed)
    drawn = {k: v for k, v in params.items() if k in get_model_type(model.type).space}
    get_run_logger().info(
        "trial %d/%d %s -> %s",
        number,
        total,
        json.dumps(drawn, sort_keys=True),
        ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if k.startswith(("recall", "ndcg"))),
    )
    return result


@flow(name="recsys-tune", log_prints=True)
def tune_flow(
    model: str,
    config_path: str | None = None,
    interactions: str | None = None,
    trials: int = 8,
    method: str = "random",
    metric: str | None = None,
    output: str | None = None,
) -> dict[str, Any]:
    """Search one model's params on a validation split; write the best as a config file.

    Returns {"best": trial, "trials": [...], "config": path}.
    """
    config, input_path, _ = resolve_inputs(config_path, interactions, None)
    (model_config,) = config.select_models([model])
    ks = config.evaluate.ks
    metric = metric or f"ndcg@{max(ks)}"
    interactions_, validation, split = tuning.validation_data(config, input_path)
    target = Path(output or f"configs/{model}-tuned.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".tune-{model}-work"
    work.mkdir(exist_ok=True)
    storage.write_sparse(work / "train.npz", interactions_.user_items)
    storage.write_sparse(work / "validation.npz", validation)
    candidates = tuning.trial_params(model_config, None, method, trials, config.seed)
    print(
        f"tuning {model} ({model_config.type}): {len(candidates)} {method} trials on "
        f"{interactions_.nnz} training / {validation.nnz} validation interactions, best by {metric}"
    )
    futures = [
        trial.submit(number, len(candidates), model_config, params, str(work), ks, config.seed)
        for number, params in enumerate(candidates, start=1)
    ]
    results = [future.result() for future in futures]
    best = tuning.best_trial(results, metric)
    raw = tuning.tuned_config(config, model, best["params"])
    header = (
        f"# {model}: best of {len(results)} {method} trials by {metric} = "
        f"{best['metrics'][metric]:.4f} on a {split['method']} validation split\n"
    )
    storage.write_text(target, header + yaml.safe_dump(raw, sort_keys=False))
    storage.write_json(
        target.with_suffix(".trials.json"), {"metric": metric, "split": split, "trials": results}
    )
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    print(f"best {metric} {best['metrics'][metric]:.4f} with {json.dumps(best['params'], sort_keys=True)}")
    print(f"wrote {target} (all trials: {target.with_suffix('.trials.json')})")
    return {"best": best, "trials": results, "config": str(target)}
