r"""Branches of a finished IMP run: retrain its tickets at chosen levels with other data or another recipe.

    python -m apps.branch_main --source_dir=runs/resnet20 --levels=0,3,6 --dataset=svhn_cropped \
        --output_dir=runs/resnet20_to_svhn

    python -m apps.branch_main --source_dir=runs/lenet --levels=all --optimizer=sgd --learning_rate=0.1 \
        --momentum=0.9 --output_dir=runs/lenet_sgd

OpenLTH's "retrain" branch and the transfer experiment of "One ticket to win them all"
(Morcos et al. 2019): each level asked is the source's round L (0: the dense network),
retrained from the source's rewind point with its round-L masks (or a control:
`--control=random_reinit|random_prune|signed_constant`). A setting left out is the source
run's; the model is always the source's. Weights or masks that do not fit the new dataset
are refused before any training. Rerunning resumes. Results in <output_dir> as an IMP run's
(summary.json, round_<L>/), readable by `report_main`; TensorBoard under
<output_dir>/tensorboard.
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from apps import method_flags
from apps import training_flags
from keras_lottery.experiments import branch

FLAGS = flags.FLAGS
_DEFAULTS = branch.BranchConfig()
training_flags.define(_DEFAULTS)
flags.adopt_module_key_flags(training_flags)  # so that --help lists them

flags.DEFINE_string("source_dir", None, "Folder of the finished IMP run whose tickets to retrain (only read).")
flags.DEFINE_string("levels", _DEFAULTS.levels, "Rounds of the source to retrain, e.g. '0,2,4', or 'all'.")
flags.DEFINE_enum("control", _DEFAULTS.control, ["ticket", "random_reinit", "random_prune", "signed_constant"],
                  "How surviving weights start: the ticket (the source's rewind point) or a control.")
flags.DEFINE_integer("iterations", None, "Training iterations per level (default: the source's).")
flags.DEFINE_float("epochs", None, "Training epochs per level (instead of --iterations).")
flags.DEFINE_integer("evaluations_per_round", None, "Validation checks per level (default: the source's).")
flags.DEFINE_string("evaluation_examples", None, "Held-out examples per check: 'auto', 'all' or a number "
                    "(default: the source's).")
flags.DEFINE_float("backup_seconds", None, "Mid-level backups at least this many seconds apart (default: the "
                   "source's).")


def config_from_flags():
    """The `BranchConfig` the flags describe."""
    evaluation_examples = method_flags.evaluation_examples(FLAGS.evaluation_examples)
    return branch.BranchConfig(
        source_dir=FLAGS.source_dir or "", levels=FLAGS.levels, control=FLAGS.control, iterations=FLAGS.iterations,
        epochs=FLAGS.epochs, evaluations_per_round=FLAGS.evaluations_per_round,
        evaluation_examples=evaluation_examples, backup_seconds=FLAGS.backup_seconds, **training_flags.values(),
    )


def log_level(record):
    logging.info("level %d: %.1f%% weights remaining, test accuracy %.4f, best validation accuracy %.4f, %.1f s",
                 record["round"], 100 * record["weights_remaining"], record["test_accuracy"],
                 record["best_val_accuracy"], record["train_seconds"])


def main(argv):
    del argv
    training_flags.set_up_devices()
    config = config_from_flags()
    try:
        train_config, levels, _ = config.resolved()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    logging.info("branch of %s: levels %s of %s retrained on %s (%s), results in %s", config.source_dir,
                 ",".join(map(str, levels)), train_config.model, train_config.dataset, train_config.control,
                 config.output_dir)
    summary = branch.run(config, on_level_end=log_level)
    logging.info("done: %d levels in %s (summary.json). View with: tensorboard --logdir %s/tensorboard",
                 len(summary["rounds"]), config.output_dir, config.output_dir)


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
