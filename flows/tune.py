"""The tuning flow (``recsys tune``): the validation split and the whole Optuna study in
one Prefect task (trials run one after the other; Optuna's TrialPruned never leaves the
task), then the best params written as a config, with every trial as JSON and an HTML
report beside it. ``recsys tune --all``: every model's study in turn in that task, then
one config with all of them."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import flows.settings  # noqa: F401  (Prefect defaults before prefect loads)
from recsys import tuning
from recsys.config import PipelineConfig, resolve_inputs


@task(name="tune-study", cache_policy=NO_CACHE, retries=0)
def study(
    config: PipelineConfig,
    input_path: str,
    model: str | None,
    trials: int | None,
    timeout: float | None,
    metric: str | None,
    sampler: str | None,
) -> list[tuning.TuneResult]:
    """One model's search, or (``model`` None) every model's in turn (:func:`tuning.tune_all`)."""
    interactions, validation, split = tuning.validation_data(config, input_path)
    print(
        f"validation split: {split['pairs_evaluated']} pairs of {split['users_evaluated']} users held out "
        f"of the training part (run split: {split['run_split']}), {interactions.nnz} interactions to "
        "train on"
    )
    options: dict[str, Any] = {
        "trials": trials,
        "timeout": timeout,
        "metric": metric,
        "sampler": sampler,
        "split": split,
        "ids": (interactions.users, interactions.items),
    }
    if model is None:
        return tuning.tune_all(config, interactions.user_items, validation, **options)
    return [tuning.tune(config, model, interactions.user_items, validation, **options)]


@flow(name="recsys-tune", log_prints=True)
def tune_flow(
    model: str | None,
    config_path: str | None = None,
    interactions: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    metric: str | None = None,
    sampler: str | None = None,
    output: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Search one model's params on a validation split carved from the training data;
    write the best as a config file (default ``configs/<model>-tuned.yaml``),
    ``<config>.trials.json`` and ``<config>.report.html``. ``trials``, ``timeout``,
    ``metric`` and ``sampler`` override the config's ``tune`` section. An existing output
    file is replaced only with ``force``; an output that is one of the search's own inputs
    (the config, the table, a file the config names) never: both refused before the search.

    ``model`` None (``recsys tune --all``): every model :func:`tuning.tuned_models`
    names, in turn, blends last (default output ``configs/tuned.yaml``).

    Returns {best_params, best_value, baseline_value, metric, trials, config, report,
    trials_file} (one model), or {models: {name: {best_params, best_value,
    baseline_value}}, metric, config, report, trials_file, seconds} (``model`` None).
    """
    config, input_path, _ = resolve_inputs(config_path, interactions, None)
    if model is not None:
        config.select_models([model])
    target = output or tuning.default_output(model)
    inputs = tuning.input_files(config, config_path, input_path)
    tuning.check_outputs(target, inputs, force)  # before the search, not after it
    results = study(config, str(input_path), model, trials, timeout, metric, sampler)
    if model is None:
        paths = tuning.write_all_outputs(results, config, target, input_path, force, inputs)
    else:
        paths = tuning.write_outputs(results[0], config, target, input_path, force, inputs)
    for result in results:
        _print_outcome(result)
    print(f"wrote {paths['config']} (trials: {paths['trials']}, report: {paths['report']})")
    files = {
        "config": str(paths["config"]),
        "report": str(paths["report"]),
        "trials_file": str(paths["trials"]),
    }
    if model is None:
        return {
            "models": {
                r.model: {
                    "best_params": r.best_params,
                    "best_value": r.best["value"],
                    "baseline_value": r.baseline["value"],
                }
                for r in results
            },
            "metric": results[0].metric,
            **files,
            "seconds": round(sum(r.seconds for r in results), 3),
        }
    result = results[0]
    best, baseline = result.best, result.baseline
    return {
        "best_params": result.best_params,
        "best_value": best["value"],
        "baseline_value": baseline["value"],
        "metric": result.metric,
        "trials": result.trials,
        "config": str(paths["config"]),
        "report": str(paths["report"]),
        "trials_file": str(paths["trials"]),
        "seconds": result.seconds,
    }


def _print_outcome(result: tuning.TuneResult) -> None:
    best, baseline = result.best, result.baseline
    counts = result.counts()
    if best["baseline"]:
        gain = " (no trial beat the config's params)"
    elif baseline["value"]:
        gain = f" ({best['value'] / baseline['value'] - 1:+.1%} over the config's {baseline['value']:.4f})"
    else:
        gain = ""
    print(
        f"{result.model}: best {result.metric} {best['value']:.4f}{gain}: trial {best['number']} "
        f"{tuning.format_params(best['params'])}; {counts['complete']} complete, {counts['pruned']} "
        f"pruned, {counts['failed']} failed in {result.seconds:.1f} s"
    )
