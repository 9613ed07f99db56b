"""``recsys tune``: a hyper-parameter search for one model on a validation split carved
from the training data (:mod:`.study`, on Optuna), over the model's search space
(:mod:`.space`), written as a tuned config with its trials and report (:mod:`.outputs`)."""

from recsys.tuning.outputs import (
    check_outputs,
    default_output,
    input_files,
    output_paths,
    report_html,
    tuned_config,
    tuned_models_config,
    write_all_outputs,
    write_outputs,
)
from recsys.tuning.space import (
    as_dimension,
    describe_dimension,
    dimension_values,
    model_space,
    tunable,
)
from recsys.tuning.study import (
    PRUNE_SAMPLE_USERS,
    PRUNER_STARTUP_TRIALS,
    VALIDATION_SEED_OFFSET,
    WARMUP_ITERATIONS,
    Scorer,
    TuneResult,
    carve_validation,
    checkpoints,
    format_params,
    metric_name,
    tune,
    validation_data,
)
from recsys.tuning.whole import tune_all, tuned_models

__all__ = [
    "PRUNER_STARTUP_TRIALS",
    "PRUNE_SAMPLE_USERS",
    "VALIDATION_SEED_OFFSET",
    "WARMUP_ITERATIONS",
    "Scorer",
    "TuneResult",
    "as_dimension",
    "carve_validation",
    "check_outputs",
    "checkpoints",
    "default_output",
    "describe_dimension",
    "dimension_values",
    "format_params",
    "input_files",
    "metric_name",
    "model_space",
    "output_paths",
    "report_html",
    "tunable",
    "tune",
    "tune_all",
    "tuned_config",
    "tuned_models",
    "tuned_models_config",
    "validation_data",
    "write_all_outputs",
    "write_outputs",
]
