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
    flags.DEFINE_float("learning_rate", None, "Learning rate (default: the model's setting).")
    # OpenLTH's recipe; each default is the model's (the CIFAR ResNets and VGGs: SGD momentum 0.9, weight
    # decay 1e-4, x0.1 at epochs 80 and 120 of 160).
    flags.DEFINE_float("momentum", None, "SGD's momentum (--optimizer=sgd; default: the model's).")
    flags.DEFINE_boolean("nesterov", None, "Nesterov momentum (--optimizer=sgd; default: the model's).")
    flags.DEFINE_float("weight_decay", None, "Weight decay (default: the model's; 0 for the LTH nets).")
    flags.DEFINE_enum("weight_decay_mode", None, list(training.WEIGHT_DECAY_MODES),
                      "'l2': added to the gradient, as PyTorch's SGD in OpenLTH; 'decoupled': w -= lr * wd * w.")
    flags.DEFINE_enum("lr_schedule", None, list(training.LR_SCHEDULES),
                      "Learning rate over training: constant, step (x --lr_gamma at each milestone) or cosine.")
    flags.DEFINE_string("lr_milestones", None, "Step schedule's milestones, e.g. '80ep,120ep' or '32000it,48000it'.")
    flags.DEFINE_float("lr_gamma", None, "Factor at each milestone (default: the model's, 0.1).")
    flags.DEFINE_string("warmup", None, "Linear warmup from 0, e.g. '5ep' or '500it' ('' none; default: the model's).")
    flags.DEFINE_enum("distribution_strategy", defaults.distribution_strategy, list(training.strategies.STRATEGIES),
                      "How training spreads over devices, as TF Model Garden names it: default (one device), "
                      "one_device, mirrored (every GPU, else every --cpu_devices CPU device), "
                      "multi_worker_mirrored (the cluster in TF_CONFIG), tpu (the one TPU_NAME names, else local).")
    flags.DEFINE_boolean("augment", None, "Pad-4 random crop + horizontal flip of training images (default: on "
                         "for cifar10/cifar100, as OpenLTH; off otherwise).")
    flags.DEFINE_boolean("freeze_batch_norm", None, "Leave BatchNorm's gamma and beta at their init (its "
                         "statistics still update), as OpenLTH's batchnorm_frozen.")
    flags.DEFINE_boolean("freeze_output", None, "Leave the output layer at its init, as OpenLTH's output_frozen.")
    flags.DEFINE_enum("mixed_precision", None, list(training.precision.POLICIES),
                      "Layers compute in bfloat16, variables and logits stay float32 (default: float32 throughout).")
    flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many logical devices first (so that "
                         "--distribution_strategy=mirrored runs that many replicas on a machine without GPU).")
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
        momentum=FLAGS.momentum, nesterov=FLAGS.nesterov, weight_decay=FLAGS.weight_decay,
        weight_decay_mode=FLAGS.weight_decay_mode, lr_schedule=FLAGS.lr_schedule, lr_milestones=FLAGS.lr_milestones,
        lr_gamma=FLAGS.lr_gamma, warmup=FLAGS.warmup, distribution_strategy=FLAGS.distribution_strategy,
        augment=FLAGS.augment, mixed_precision=FLAGS.mixed_precision,
        **{name: getattr(FLAGS, name) for name in ("freeze_batch_norm", "freeze_output")
           if getattr(FLAGS, name) is not None},
    )


def set_up_devices():
    """Splits the CPU as --cpu_devices asks and makes the --distribution_strategy, before any TensorFlow op.

    Raises:
      app.UsageError: a bad --cpu_devices, or a strategy that cannot be made here (no TF_CONFIG, no TPU).
    """
    try:
        if FLAGS.cpu_devices is not None:
            training.strategies.split_cpu(FLAGS.cpu_devices)
        if FLAGS.distribution_strategy is not None:
            training.strategies.get(FLAGS.distribution_strategy)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def resolved(config):
    """`config.resolved()`, a bad value reported as a usage error before any work.

    Raises:
      app.UsageError: the message names the flag's field and what it accepts.
    """
    try:
        return config.resolved()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
