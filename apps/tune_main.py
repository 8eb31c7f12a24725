r"""Search pruning hyperparameters with keras-tuner: the best validation accuracy at a target sparsity.

    python -m apps.tune_main --dataset=fashion_mnist --model=lenet_300_100 \
        --target_weights_remaining=0.1 --max_trials=10 --oracle=random --output_dir=runs/tune

Each trial is one IMP (or one-pass) run pruned to --target_weights_remaining with the
trial's criterion, prune rate (which sets the number of rounds), rewind step, hybrid
alpha, learning rate and mode; its score is the final round's best validation accuracy.
`--oracle=hyperband` spends --max_budget budget units (fractions of --iterations per
round) by successive halving. Rerunning the same command resumes the search. Results:
<output_dir>/<project_name>/trial_<id>/trial.json (keras-tuner's record) and
trial_<id>/run/ (the IMP run folder: summary.json, masks, TensorBoard).

Distributed: run this same command on several machines with KERASTUNER_TUNER_ID=chief
on one and tuner0, tuner1, ... on the others, and KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT set to the chief's address (see keras_lottery/experiments/tuning.py).
"""

import os

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from apps import training_flags
from keras_lottery.experiments import imp
from keras_lottery.experiments import tuning

FLAGS = flags.FLAGS
_DEFAULTS = imp.ImpConfig(output_dir="runs/tune")
_SPACE = tuning.SearchSpace()
training_flags.define(_DEFAULTS, verbose=0)  # many runs: progress lines off unless asked for
flags.adopt_module_key_flags(training_flags)  # so that --help lists them

flags.DEFINE_float("target_weights_remaining", 0.1, "Fraction of prunable weights every trial ends with, in (0, 1).")
flags.DEFINE_enum("oracle", "random", list(tuning.ORACLES), "keras-tuner's search algorithm.")
flags.DEFINE_integer("max_trials", 10, "The most trials to run (caps Hyperband too).")
flags.DEFINE_string("project_name", "pruning", "The search's folder inside --output_dir.")
flags.DEFINE_boolean("overwrite", False, "Delete an earlier search in the folder instead of resuming it.")
flags.DEFINE_list("criteria", list(_SPACE.criteria), f"Criteria to search, from {list(imp.CRITERIA)}.")
flags.DEFINE_list("prune_rates", [str(rate) for rate in _SPACE.prune_rates],
                  "Per-round prune rates to search (each sets the number of rounds to the target).")
flags.DEFINE_list("rewind_steps", None, "Rewind steps to search (default: 0, 1% and 5% of --iterations).")
flags.DEFINE_float("alpha_min", _SPACE.alpha_range[0], "Smallest hybrid-criterion alpha searched.")
flags.DEFINE_float("alpha_max", _SPACE.alpha_range[1], "Largest hybrid-criterion alpha searched.")
flags.DEFINE_float("learning_rate_span", _SPACE.learning_rate_span,
                   "Search learning rates in [lr / span, lr * span] around --learning_rate (the model's "
                   "LTH rate by default); 1 fixes it.")
flags.DEFINE_list("modes", list(_SPACE.modes), "Modes to search: imp and/or one_pass.")
flags.DEFINE_boolean("match_target", True, "Adjust each trial's rate so that its rounds reach the target exactly.")
flags.DEFINE_integer("iterations", None, "Training iterations per round at the full budget (default: the model's).")
flags.DEFINE_integer("evaluations_per_round", _DEFAULTS.evaluations_per_round, "Validation checks per round.")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, ["layerwise", "global"], "Rank weights per layer or globally.")
flags.DEFINE_integer("max_budget", 9, "Hyperband: budget units of a full trial (its max_epochs).")
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband: the reduction factor of successive halving.")


def _parse_list(values, parse, name):
    try:
        return tuple(parse(value) for value in values)
    except ValueError as error:
        raise app.UsageError(f"--{name}: {error}") from error


def search_space():
    """The `SearchSpace` the flags describe."""
    return tuning.SearchSpace(
        criteria=tuple(FLAGS.criteria),
        prune_rates=_parse_list(FLAGS.prune_rates, float, "prune_rates"),
        rewind_steps=None if FLAGS.rewind_steps is None else _parse_list(FLAGS.rewind_steps, int, "rewind_steps"),
        alpha_range=(FLAGS.alpha_min, FLAGS.alpha_max),
        learning_rate_span=FLAGS.learning_rate_span,
        modes=tuple(FLAGS.modes),
    )


def base_config():
    """The `ImpConfig` every trial starts from (the searched fields are replaced per trial)."""
    return imp.ImpConfig(
        iterations=FLAGS.iterations, evaluations_per_round=FLAGS.evaluations_per_round, strategy=FLAGS.strategy,
        **training_flags.values(),
    )


def log_trial_begin(trial):
    logging.info("trial %s: starting %s", trial.trial_id, _format_values(trial.hyperparameters.values))


def log_trial_end(trial, metrics):
    if metrics is None:
        logging.warning("trial %s: %s\n%s", trial.trial_id, trial.status, trial.message)
        return
    logging.info("trial %s: %s %.4f, test accuracy %.4f, %.1f%% weights remaining, %d iterations",
                 trial.trial_id, tuning.OBJECTIVE.name, metrics[tuning.OBJECTIVE.name],
                 metrics["test_accuracy_at_target"], 100 * metrics["weights_remaining"], metrics["total_iterations"])


def log_round(trial, record):
    logging.info("trial %s round %d: %.1f%% weights remaining, best validation accuracy %.4f",
                 trial.trial_id, record["round"], 100 * record["weights_remaining"], record["best_val_accuracy"])


def distributed_role():
    """'chief' or 'worker' in keras-tuner's distributed mode (the KERASTUNER_* variables), else None."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _format_values(values):
    return ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in values.items())


def main(argv):
    del argv
    role = distributed_role()
    tuner = tuning.PruningTuner(
        base_config(), FLAGS.target_weights_remaining, search_space(), oracle=FLAGS.oracle,
        max_trials=FLAGS.max_trials, directory=FLAGS.output_dir, project_name=FLAGS.project_name,
        overwrite=FLAGS.overwrite, max_budget=FLAGS.max_budget, hyperband_factor=FLAGS.hyperband_factor,
        match_target=FLAGS.match_target, on_trial_begin=log_trial_begin, on_trial_end=log_trial_end,
        on_round_end=log_round,
    )
    project = tuner.project_dir
    if role == "chief":
        logging.info("chief: serving the %s oracle for up to %d trials; workers run them. Results in %s",
                     FLAGS.oracle, FLAGS.max_trials, project)
    else:
        logging.info("%s search for %s at %.1f%% weights remaining, up to %d trials, results in %s%s",
                     FLAGS.oracle, FLAGS.model, 100 * FLAGS.target_weights_remaining, FLAGS.max_trials, project,
                     " (worker)" if role == "worker" else "")
    tuner.search()
    if role == "worker":  # the chief holds the results; it may already have exited
        logging.info("worker done: no more trials from the chief.")
        return
    best = [trial for trial in tuner.oracle.get_best_trials(1) if trial.score is not None]
    if not best:
        logging.warning("no trial finished in %s.", project)
        return
    trial = best[0]
    logging.info("best trial %s: %s %.4f with %s. Its run: %s", trial.trial_id, tuning.OBJECTIVE.name,
                 trial.score, _format_values(trial.hyperparameters.values), tuner.trial_output_dir(trial.trial_id))


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
