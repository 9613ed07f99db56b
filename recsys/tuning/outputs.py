"""What ``recsys tune`` writes: the tuned config (paths relative to its own folder), every
trial as JSON and a self-contained HTML report of the search."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from recsys.config import DEFAULT_CONFIG, MODEL_PATH_PARAMS, PATH_KEYS, PipelineConfig
from recsys.reporting.html import esc, fmt_metric, html_table, page
from recsys.reporting.plots import new_figure, png
from recsys.tuning.study import TuneResult, format_params


def tuned_config(
    config: PipelineConfig,
    model_name: str,
    params: dict[str, Any],
    input_path: str | Path | None = None,
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """The config as a dict with one model's params replaced and ``input.path`` set to
    ``input_path``, the table the search ran on (when given: ``--interactions``).

    folder: where the tuned config is written. A relative path in a config file resolves
    against the file's folder, so every path of the config (input, output root, holdout,
    item rules, precomputed vectors) is written relative to ``folder`` (absolute where the
    two share no folder but the root): the tuned config then names the same files as the
    run it was tuned for, wherever it is run from. Paths the config holds relative (its
    defaults, ``output.root: data/outputs``) are relative to the working directory."""
    return tuned_models_config(config, {model_name: params}, input_path, folder)


def tuned_models_config(
    config: PipelineConfig,
    params: dict[str, dict[str, Any]],
    input_path: str | Path | None = None,
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`tuned_config` for several models: model name -> its params."""
    raw = config.to_dict()
    for model in raw["models"]:
        if model["name"] in params:
            model["params"] = params[model["name"]]
    if input_path is not None:
        raw["input"]["path"] = str(input_path)
    if folder is not None:
        _paths_relative_to(raw, Path(folder))
    return raw


def _paths_relative_to(raw: dict[str, Any], folder: Path) -> None:
    """Rewrite the path values of a config dict (those ``load_config`` resolves) relative to
    ``folder``, in place."""
    base = os.path.abspath(folder)

    def relative(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        absolute = os.path.abspath(value)  # relative values: to the working directory
        if os.path.commonpath([absolute, base]) == os.path.sep:
            return absolute
        return os.path.relpath(absolute, base)

    for section, key in PATH_KEYS:
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section][key] = relative(raw[section][key])
    for model in raw.get("models") or []:
        if model.get("type") == "precomputed" and isinstance(model.get("params"), dict):
            for key in MODEL_PATH_PARAMS:
                if key in model["params"]:
                    model["params"][key] = relative(model["params"][key])


def output_paths(target: str | Path) -> dict[str, Path]:
    """The config, ``<config>.trials.json`` and ``<config>.report.html`` (suffix replaced)."""
    target = Path(target)
    return {
        "config": target,
        "trials": target.with_suffix(".trials.json"),
        "report": target.with_suffix(".report.html"),
    }


def default_output(model: str | None) -> str:
    """Where ``recsys tune`` writes the tuned config without ``--output`` (``model``
    None: ``--all``)."""
    return f"configs/{model}-tuned.yaml" if model else "configs/tuned.yaml"


def input_files(
    config: PipelineConfig, config_path: str | Path | None, input_path: str | Path | None
) -> list[str]:
    """Every file a search reads: the config file, the interactions table, and the files
    the config names (holdout, item rules, precomputed vectors). An output is never any
    of them (:func:`check_outputs`)."""
    raw = config.to_dict()
    files = [str(config_path or DEFAULT_CONFIG), input_path]
    files += [(raw.get(section) or {}).get(key) for section, key in PATH_KEYS if section != "output"]
    for model in raw.get("models") or []:
        if model.get("type") == "precomputed" and isinstance(model.get("params"), dict):
            files += [model["params"].get(key) for key in MODEL_PATH_PARAMS]
    return [str(f) for f in files if isinstance(f, str | Path) and str(f)]


def check_outputs(target: str | Path, inputs: list[str], force: bool = False) -> dict[str, Path]:
    """The three files :func:`write_outputs` writes, checked before anything runs: none of
    them is one of the search's ``inputs`` (refused even with ``force``), a folder or a
    special file; an existing one is replaced only with ``force`` (``--force``). A
    one-line ConfigError otherwise."""
    from recsys import storage

    paths = output_paths(target)
    for key, path in paths.items():
        option = "--output" if key == "config" else f"--output's {key} file"
        storage.check_output(path, inputs, force, option)
    return paths


def write_outputs(
    result: TuneResult,
    config: PipelineConfig,
    target: str | Path,
    input_path: str | Path | None = None,
    force: bool = False,
    inputs: list[str] | None = None,
) -> dict[str, Path]:
    """Write the tuned config (with a header line), all trials as JSON and the HTML report.
    The config keeps ``input_path``, the table the search ran on, and its paths are written
    relative to its own folder (:func:`tuned_config`). Returns their paths. Refused as
    :func:`check_outputs` says (``inputs``: the config's files and ``input_path`` by
    default): never an input, an existing file only with ``force``."""
    from recsys import storage

    if inputs is None:
        inputs = input_files(config, None, input_path)[1:]  # the config file is not known here
    paths = check_outputs(target, inputs, force)
    paths["config"].parent.mkdir(parents=True, exist_ok=True)
    header = _header(result)
    raw = tuned_config(config, result.model, result.best_params, input_path, paths["config"].parent)
    storage.write_text(paths["config"], header + yaml.safe_dump(raw, sort_keys=False))
    storage.write_json(paths["trials"], result.to_dict())
    storage.write_text(paths["report"], report_html(result))
    return paths


def write_all_outputs(
    results: list[TuneResult],
    config: PipelineConfig,
    target: str | Path,
    input_path: str | Path | None = None,
    force: bool = False,
    inputs: list[str] | None = None,
) -> dict[str, Path]:
    """:func:`write_outputs` of ``recsys tune --all``: one config with every tuned model's
    best params (the rest of the config kept), a header line per model; the trials JSON
    maps each model to its search; the report holds each search in turn."""
    from recsys import storage

    if inputs is None:
        inputs = input_files(config, None, input_path)[1:]
    paths = check_outputs(target, inputs, force)
    paths["config"].parent.mkdir(parents=True, exist_ok=True)
    header = "".join(_header(result) for result in results)
    params = {result.model: result.best_params for result in results}
    raw = tuned_models_config(config, params, input_path, paths["config"].parent)
    storage.write_text(paths["config"], header + yaml.safe_dump(raw, sort_keys=False))
    storage.write_json(paths["trials"], {"models": {r.model: r.to_dict() for r in results}})
    body = "".join(_report_body(result) for result in results)
    storage.write_text(paths["report"], page("recsys tune --all", body, STYLE))
    return paths


def _header(result: TuneResult) -> str:
    """The tuned config's comment line on one search."""
    counts = result.counts()
    best, baseline = result.best, result.baseline
    if best["baseline"]:
        verdict = "no trial beat the config's own params"
    else:
        verdict = f"the config's params: {baseline['value']:.4f}" if baseline["value"] is not None else ""
    fraction = result.split.get("fraction")
    on = f" on a {fraction:.0%} validation split of the training part" if fraction else ""
    return (
        f"# {result.model}: best of {len(result.trials)} {result.sampler} trials "
        f"({counts['pruned']} pruned) by {result.metric} = {best['value']:.4f}"
        f"{f' ({verdict})' if verdict else ''}{on}\n"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; font-size: 0.9em; }
tr.best td { background: #eef7ee; }
"""
"""The tuning report's style sheet (its tables and plots are the run report's, see
:mod:`recsys.reporting`)."""


def _number(value: Any) -> str:
    """A metric with 4 decimals (1 from 100 up), other values as they are, None as ""."""
    if isinstance(value, float):
        return fmt_metric(value) if abs(value) < 100 else f"{value:.1f}"
    return "" if value is None else str(value)


def _param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trials_plot(result: TuneResult) -> str:
    figure = new_figure(8, 4)
    axes = figure.add_subplot()
    complete = [t for t in result.trials if t["state"] == "complete"]
    pruned = [t for t in result.trials if t["state"] == "pruned" and t["intermediate"]]
    axes.scatter([t["number"] for t in complete], [t["value"] for t in complete], s=18, label="complete")
    if pruned:
        axes.scatter(
            [t["number"] for t in pruned],
            [t["intermediate"][t["pruned_at"]] for t in pruned],
            marker="x",
            color="grey",
            s=18,
            label="pruned (value when stopped, sampled users)",
        )
    running, best = [], -math.inf
    for t in sorted(complete, key=lambda t: t["number"]):
        best = max(best, t["value"])
        running.append((t["number"], best))
    running.append((max(t["number"] for t in result.trials), best))
    axes.step(*zip(*running, strict=True), where="post", color="C2", label="best so far")
    if result.baseline["value"] is not None:
        axes.axhline(result.baseline["value"], color="C1", linestyle="--", label="the config's params")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {result.metric}")
    axes.legend(fontsize=8, loc="lower right")
    return png(figure, "Validation metric per trial, with the best so far", margins=None)


def _params_plot(result: TuneResult) -> str:
    from matplotlib.ticker import NullFormatter

    complete = [t for t in result.trials if t["state"] == "complete"]
    names = [n for n in result.space if any(isinstance(t["params"].get(n), int | float) for t in complete)]
    if not names or len(complete) < 2:
        return ""
    figure = new_figure(3 * len(names), 3)
    for i, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), i + 1)
        points = [
            (t["params"][name], t["value"])
            for t in complete
            if isinstance(t["params"].get(name), int | float)
        ]
        axes.scatter(*zip(*points, strict=True), s=14)
        best = result.best["params"].get(name)
        if isinstance(best, int | float):
            axes.axvline(best, color="C2", linewidth=1)
        if "(log)" in result.space[name]:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(name)
        if i == 0:
            axes.set_ylabel(result.metric)
    return png(figure, "Validation metric against each searched param", margins=None)


def _params_table(result: TuneResult) -> str:
    best, baseline = result.best, result.baseline
    rows = [
        [n, dimension, _param_text(baseline["params"].get(n)), _param_text(best["params"].get(n))]
        for n, dimension in result.space.items()
    ]
    return html_table(["param", "searched", "the config's", "best"], rows)


def _metrics_table(result: TuneResult) -> str:
    best, baseline = result.best, result.baseline
    rows = []
    for key in best.get("metrics") or {}:
        if key == "users":
            continue
        old = (baseline.get("metrics") or {}).get(key)
        new = best["metrics"][key]
        change = f"{(new / old - 1):+.1%}" if old else ""
        rows.append([key, _number(old), _number(new), change])
    return html_table(["metric", "the config's params", "best", "change"], rows)


def _trials_table(result: TuneResult) -> str:
    rows = [
        [
            str(t["number"]),
            t["state"] + (f" at {t['pruned_at']}" if t["pruned_at"] else ""),
            format_params(t["params"]),
            _number(t["value"]),
            _number(t["seconds"]),
        ]
        for t in result.trials
    ]
    best = next(i for i, t in enumerate(result.trials) if t["number"] == result.best["number"])
    return html_table(["trial", "state", "params", result.metric, "seconds"], rows, 3, highlight=best)


def _summary_text(result: TuneResult) -> str:
    counts = result.counts()
    split = result.split
    split_text = (
        f"{split.get('fraction', 0):.0%} of each user's items of the training part "
        f"(seed {split.get('seed')}), run split: {split.get('run_split')}; "
        f"{split.get('training_interactions', '?')} training interactions, "
        f"{split.get('pairs_evaluated', '?')} validation pairs of {split.get('users_evaluated', '?')} users"
        if split
        else "given"
    )
    return (
        f"{len(result.trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed), {result.sampler} sampler, pruning {'on' if result.pruning else 'off'}, "
        f"{result.seconds:.1f} s. Trial 0 is the config's own params. Validation: {split_text}."
    )


def report_html(result: TuneResult) -> str:
    """A self-contained page: the best params against the config's, the validation
    metrics of both, the metric per trial with the running best, and every trial."""
    return page(f"recsys tune {result.model}", _report_body(result), STYLE)


def _report_body(result: TuneResult) -> str:
    best, baseline = result.best, result.baseline
    gain = (
        f"{best['value']:.4f} against {baseline['value']:.4f} with the config's params "
        f"({best['value'] / baseline['value'] - 1:+.1%})"
        if baseline["value"]
        else f"{best['value']:.4f}"
    )
    return (
        f"<h1>recsys tune: {esc(result.model)} ({esc(result.model_type)})</h1>"
        f"<p>Best validation {esc(result.metric)}: <b>{esc(gain)}</b>, "
        f"trial {best['number']}.</p><p class=note>{esc(_summary_text(result))}</p>"
        "<h2>Params</h2>"
        + _params_table(result)
        + "<h2>Validation metrics</h2>"
        + _metrics_table(result)
        + "<h2>Trials</h2>"
        + _trials_plot(result)
        + _params_plot(result)
        + _trials_table(result)
    )
