"""Compiling a model for training: the optimizer, the loss on logits, steps per execution.

`compile_with_recipe` is what the flows call: a config's frozen parameters, its optimizer and
learning-rate schedule, then `compile_for_training`.
"""

import math

from keras_lottery import compat
from keras_lottery.training import freezing
from keras_lottery.training import optimizers

keras = compat.keras


def steps_per_execution(interval, *steps, limit=1000):
    """Steps per call into TensorFlow: the largest divisor of `interval` (and of `steps`) <= `limit`.

    One execution runs several steps without returning to Python (the main saving on
    small models); its length must divide the interval between Python-side checks
    (evaluations, epoch ends) and every step where Python must act (the rewind step,
    mask updates; 0 means none), so that none of them is skipped.
    """
    common = math.gcd(interval, *[step for step in steps if step])
    return max(d for d in range(1, min(common, limit) + 1) if common % d == 0)


def compile_for_training(model, optimizer, learning_rate=None, steps_per_execution=1):
    """Compiles for classification on logits (sparse labels, accuracy) with `optimizer`.

    Args:
      model: a tf_keras model that outputs logits.
      optimizer: a name in `config.OPTIMIZERS` ('adam', 'sgd', 'momentum': SGD with
        momentum 0.9), made fresh at the fixed `learning_rate`; or an optimizer instance
        (`optimizers.make_optimizer`'s, with its schedule and weight decay), used as is.
      learning_rate: the rate for a named optimizer; None with an instance.
      steps_per_execution: steps per call into TensorFlow (see `steps_per_execution`).

    Raises:
      ValueError: an unknown name, a name without a learning rate, or an instance with one.
    """
    if isinstance(optimizer, str):
        if learning_rate is None:
            raise ValueError(f"compile_for_training(optimizer={optimizer!r}) needs a learning_rate.")
        if optimizer == "adam":
            instance = keras.optimizers.Adam(learning_rate)
        elif optimizer == "momentum":
            instance = keras.optimizers.SGD(learning_rate, momentum=0.9)
        elif optimizer == "sgd":
            instance = keras.optimizers.SGD(learning_rate)
        else:
            raise ValueError(
                f"optimizer must be one of ('adam', 'sgd', 'momentum') or an optimizer; got {optimizer!r}."
            )
    else:
        if learning_rate is not None:
            raise ValueError(
                f"learning_rate={learning_rate!r} would be ignored: an optimizer instance carries its own "
                "learning rate (or schedule). Pass learning_rate=None."
            )
        instance = optimizer
    model.compile(
        optimizer=instance,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def compile_with_recipe(model, config, steps_per_epoch, total_iterations, steps_per_execution=1):
    """Compiles `model` with a resolved config's recipe, its frozen parameters taken out of training first.

    The one way every flow compiles: `freezing.freeze` (the config's `freeze_batch_norm`,
    `freeze_output`), then `optimizers.make_optimizer` (a cosine schedule ends at
    `total_iterations`; milestones in epochs count `steps_per_epoch`), then
    `compile_for_training`. Call it in the distribution strategy's scope.
    """
    freezing.freeze(model, batch_norm=config.freeze_batch_norm, output=config.freeze_output)
    optimizer = optimizers.make_optimizer(config, steps_per_epoch, total_iterations)
    compile_for_training(model, optimizer, steps_per_execution=steps_per_execution)
