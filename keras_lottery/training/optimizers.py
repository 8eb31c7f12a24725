"""OpenLTH's optimizers in tf_keras: `make_optimizer`, and SGD/Adam with coupled L2 decay.

Weight decay comes in two modes (`TrainingConfig.weight_decay_mode`):

* 'l2' (coupled), what OpenLTH gets from PyTorch's `SGD(weight_decay=wd)` and
  `Adam(weight_decay=wd)`: `gradient += wd * variable` before the optimizer's update,
  i.e. the gradient of `loss + wd / 2 * sum ||w||^2`. As in PyTorch, every variable the
  optimizer updates gets it: kernels, biases, BatchNorm's gamma and beta (not its moving
  statistics, which are not trained). `CoupledL2SGD` and `CoupledL2Adam` add the term in
  `update_step`, which tf_keras calls once per variable with the aggregated gradient
  (inside `distribution.extended.update` under a strategy, on each replica's copy).
* 'decoupled': tf_keras's own `weight_decay` argument, applied before the update as
  `variable -= variable * wd * learning_rate` (PyTorch's AdamW form; not in OpenLTH).

Momentum is tf_keras's: `velocity = momentum * velocity - lr * gradient`. PyTorch (OpenLTH)
keeps `buffer = momentum * buffer + gradient` and steps by `lr * buffer`; the two agree
while the learning rate is constant and differ for about `1 / (1 - momentum)` steps after
it changes (warmup, milestones).
"""

import math

import tensorflow as tf

from keras_lottery import compat
from keras_lottery.training import lr_schedules

keras = compat.keras


def _check_decay(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"coupled_weight_decay must be a finite number >= 0; got {value!r}.")
    return float(value)


def with_l2(gradient, variable, decay):
    """`gradient + decay * variable`, dense: the L2 term touches every row, not only the gathered ones.

    An `IndexedSlices` gradient (from `tf.gather`, embeddings) is summed into the dense
    decay term, duplicated indices added up as their dense gradient would.
    """
    decay = tf.cast(decay, variable.dtype)
    if isinstance(gradient, tf.IndexedSlices):
        indices = tf.expand_dims(tf.cast(gradient.indices, tf.int64), -1)
        return tf.tensor_scatter_nd_add(decay * variable, indices, gradient.values)
    return gradient + decay * variable


class _CoupledL2:
    """Adds `coupled_weight_decay * variable` to each gradient before the optimizer's own update."""

    def __init__(self, *args, coupled_weight_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.coupled_weight_decay = _check_decay(coupled_weight_decay)

    def update_step(self, gradient, variable):
        """The parent's update on the gradient of `loss + wd / 2 * ||variable||^2`."""
        return super().update_step(with_l2(gradient, variable, self.coupled_weight_decay), variable)

    def get_config(self):
        """The parent's config plus `coupled_weight_decay`."""
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config


@keras.utils.register_keras_serializable("keras_lottery")
class CoupledL2SGD(_CoupledL2, keras.optimizers.SGD):
    """tf_keras SGD on `gradient + coupled_weight_decay * variable` (PyTorch's `SGD(weight_decay=...)`).

    Takes SGD's arguments plus `coupled_weight_decay` (a number >= 0).
    """


@keras.utils.register_keras_serializable("keras_lottery")
class CoupledL2Adam(_CoupledL2, keras.optimizers.Adam):
    """tf_keras Adam on `gradient + coupled_weight_decay * variable` (PyTorch's `Adam(weight_decay=...)`).

    Takes Adam's arguments plus `coupled_weight_decay` (a number >= 0).
    """


def make_optimizer(config, steps_per_epoch, total_iterations):
    """The optimizer of a resolved `TrainingConfig`, its learning rate a `RecipeSchedule`.

    'adam' gives Adam with tf_keras's defaults, as before (epsilon 1e-7 added to sqrt(v)
    before the bias correction, "epsilon hat"; PyTorch adds 1e-8 after it), 'sgd' SGD with the config's
    momentum and Nesterov flag, 'momentum' SGD with momentum 0.9 (the LTH paper's).
    Weight decay is coupled (`CoupledL2SGD`, `CoupledL2Adam`) or decoupled (tf_keras's
    `weight_decay`) as `weight_decay_mode` says; none when it is 0.

    Create it in the distribution strategy's scope, with the model.

    Args:
      config: a resolved `TrainingConfig` (see `TrainingConfig.resolved`).
      steps_per_epoch: iterations per epoch, for lengths given in epochs.
      total_iterations: the schedule's length in iterations (where 'cosine' reaches 0);
        None is allowed for the other schedules.

    Returns:
      A tf_keras optimizer; `optimizer.learning_rate` follows the schedule (its
      `_learning_rate` is the `RecipeSchedule`, see `schedule_of`).

    Raises:
      ValueError: an unknown optimizer or weight decay mode, or a bad length.
    """
    schedule = lr_schedules.schedule_for(config, steps_per_epoch, total_iterations)
    decay = float(config.weight_decay or 0.0)
    if config.weight_decay_mode not in ("l2", "decoupled"):
        raise ValueError(f"--weight_decay_mode must be 'l2' or 'decoupled'; got {config.weight_decay_mode!r}.")
    coupled = decay if config.weight_decay_mode == "l2" else 0.0
    decoupled = {"weight_decay": decay} if decay and config.weight_decay_mode == "decoupled" else {}
    if config.optimizer == "adam":
        if coupled:
            return CoupledL2Adam(schedule, coupled_weight_decay=coupled)
        return keras.optimizers.Adam(schedule, **decoupled)
    if config.optimizer == "sgd":
        momentum, nesterov = float(config.momentum or 0.0), bool(config.nesterov)
    elif config.optimizer == "momentum":
        momentum, nesterov = 0.9, False
    else:
        raise ValueError(f"--optimizer must be one of ('adam', 'sgd', 'momentum'); got {config.optimizer!r}.")
    if coupled:
        return CoupledL2SGD(schedule, momentum=momentum, nesterov=nesterov, coupled_weight_decay=coupled)
    return keras.optimizers.SGD(schedule, momentum=momentum, nesterov=nesterov, **decoupled)


def schedule_of(optimizer):
    """The `RecipeSchedule` an optimizer from `make_optimizer` follows, or None for a fixed rate.

    IMP rounds that rewind to iteration k call `schedule_of(optimizer).set_start_step(k)`.
    """
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, lr_schedules.RecipeSchedule) else None


def set_schedule_start(optimizer, step):
    """Sets where the optimizer's `RecipeSchedule` starts (a round rewound to iteration `step`).

    Raises:
      ValueError: `step` > 0 on an optimizer with a fixed learning rate (no schedule to move).
    """
    schedule = schedule_of(optimizer)
    if schedule is not None:
        schedule.set_start_step(step)
    elif step:
        raise ValueError(f"cannot start the learning-rate schedule at step {step}: the optimizer has a fixed rate; "
                         "build it with make_optimizer.")
