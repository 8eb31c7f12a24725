"""Compiling a model for training: the optimizer, the loss on logits, steps per execution."""

import math

from keras_lottery import compat

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


def compile_for_training(model, optimizer, learning_rate, steps_per_execution=1):
    """Compiles for classification on logits with a fresh optimizer named in `config.OPTIMIZERS`."""
    if optimizer == "adam":
        instance = keras.optimizers.Adam(learning_rate)
    elif optimizer == "momentum":
        instance = keras.optimizers.SGD(learning_rate, momentum=0.9)
    else:
        instance = keras.optimizers.SGD(learning_rate)
    model.compile(
        optimizer=instance,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
