"""Search spaces of ``recsys tune``: each model type's ``space`` (or ``tune.space`` of the
config) as Optuna draws from it, and the old grid of :class:`Choice` dimensions."""

from __future__ import annotations

from typing import Any

from recsys.config import ModelConfig, PipelineConfig, spec_dimension
from recsys.errors import ConfigError
from recsys.models import get_model_type
from recsys.models.base import Choice, Dimension, FloatRange, IntRange


def as_dimension(value: Any) -> Dimension:
    """A search dimension; a list or tuple of values (the old format) is a :class:`Choice`."""
    if isinstance(value, IntRange | FloatRange | Choice):
        return value
    if isinstance(value, list | tuple) and value:
        return Choice(tuple(value))
    raise ConfigError(f"not a search dimension: {value!r} (expected IntRange, FloatRange or Choice)")


def dimension_values(dimension: Dimension) -> tuple[Any, ...]:
    """The values that bound a dimension: both ends of a range, every value of a choice
    (each must be a valid value of the param)."""
    if isinstance(dimension, Choice):
        return dimension.values
    return (dimension.low, dimension.high)


def describe_dimension(dimension: Dimension) -> str:
    """``16 .. 1024 (log)``, ``0.01 .. 1000.0``, ``one of 32, 64``."""
    if isinstance(dimension, Choice):
        return "one of " + ", ".join(str(v) for v in dimension.values)
    return f"{dimension.low} .. {dimension.high}" + (" (log)" if dimension.log else "")


def model_space(config: PipelineConfig, model: ModelConfig) -> dict[str, Dimension]:
    """One model's search space: its type's ``space``, each param overridden by the
    config's ``tune.space.<model name>`` (checked when the config loaded)."""
    model_type = get_model_type(model.type)
    if model_type.source != "interactions":
        raise ConfigError(f"model {model.name}: a {model.type} model is not trained, so not tuned")
    space = {name: as_dimension(dimension) for name, dimension in model_type.space.items()}
    for name, spec in config.tune.space.get(model.name, {}).items():
        space[name] = spec_dimension(spec)
    if not space:
        raise ConfigError(
            f"model {model.name}: the {model.type} type has no tuning space; give one as "
            f"tune.space.{model.name} in the config"
        )
    unknown = sorted(set(space) - set(model_type.params.model_fields))
    if unknown:
        raise ConfigError(f"tune space: unknown parameter(s) {', '.join(unknown)} for {model.type}")
    return space


def suggest(trial: Any, name: str, dimension: Dimension) -> Any:
    if isinstance(dimension, IntRange):
        return trial.suggest_int(name, dimension.low, dimension.high, log=dimension.log)
    if isinstance(dimension, FloatRange):
        return trial.suggest_float(name, dimension.low, dimension.high, log=dimension.log)
    return trial.suggest_categorical(name, list(dimension.values))


def contains(dimension: Dimension, value: Any) -> bool:
    if isinstance(dimension, Choice):
        return value in dimension.values
    return isinstance(value, int | float) and dimension.low <= value <= dimension.high


def rounded(value: Any, dimension: Dimension) -> Any:
    """A drawn float to 4 significant digits (within its range): the value measured is the
    value written to the config, and it reads like one a person would write."""
    if not isinstance(dimension, FloatRange) or not isinstance(value, float):
        return value
    return min(max(float(f"{value:.4g}"), dimension.low), dimension.high)


def tunable(config: PipelineConfig, model: ModelConfig) -> dict[str, Dimension]:
    """The space ``recsys tune`` searches for ``model``: a blend's weights
    (:func:`recsys.tuning.blend.blend_space`), a trained model's params
    (:func:`model_space`); :class:`ConfigError` for a model that is not tuned."""
    if model.type == "blend":
        from recsys.tuning.blend import blend_space

        return blend_space(config, model)
    return model_space(config, model)
