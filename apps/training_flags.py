"""Flags every experiment app shares (data, model, optimizer, seed, output), defined once."""

from absl import app
from absl import flags

from keras_lottery import models
from keras_lottery import training

FLAGS = flags.FLAGS


def define(defaults, verbose=1):
    """Declares the shared flags with the defaults of a `TrainingConfig`."""
    flags.DEFINE_string("dataset", defaults.dataset, "TFDS name (mnist and fashion_mnist also read from IDX files).")
    flags.DEFINE_string("data_dir", None, "Folder with the dataset (IDX files, or a TFDS data_dir).")
    flags.DEFINE_enum("model", defaults.model, sorted(models.MODELS), "Architecture.")
    flags.DEFINE_integer("batch_size", None, "Batch size (default: the model's LTH setting).")
    flags.DEFINE_enum("optimizer", None, list(training.OPTIMIZERS), "Optimizer (default: the model's LTH setting).")
    flags.DEFINE_float("learning_rate", None, "Learning rate (default: the model's LTH setting).")
    flags.DEFINE_integer("seed", defaults.seed, "Seed of the initialization, data order and controls.")
    flags.DEFINE_integer("train_examples", None, "Train on this many examples (a subset, for quick runs); default: all.")
    flags.DEFINE_integer("validation_examples", defaults.validation_examples, "Examples held out from train.")
    flags.DEFINE_string("output_dir", defaults.output_dir, "Folder of this run's results.")
    flags.DEFINE_integer("verbose", verbose, "Progress lines while training, logged with the others: 0 none, "
                         "1 a line per evaluation (iterations done, validation accuracy), 2 also losses and seconds.")


def values():
    """The shared flags as `TrainingConfig` keyword arguments."""
    return dict(
        output_dir=FLAGS.output_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model=FLAGS.model,
        batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
        seed=FLAGS.seed, train_examples=FLAGS.train_examples,
        validation_examples=FLAGS.validation_examples, verbose=FLAGS.verbose,
    )


def resolved(config):
    """`config.resolved()`, a bad value reported as a usage error before any work.

    Raises:
      app.UsageError: the message names the flag's field and what it accepts.
    """
    try:
        return config.resolved()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
