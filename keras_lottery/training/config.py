"""Settings and compilation shared by every experiment (IMP, early bird, ...).

`TrainingConfig` holds what any training run needs — data, model, optimizer,
seed, output folder — with the LTH paper's defaults per model (`models.py`);
experiment configs extend it with their own fields.
"""

import dataclasses
import math

import numpy as np

from keras_lottery import compat
from keras_lottery import models
from keras_lottery.validation import check_int

keras = compat.keras

OPTIMIZERS = ("adam", "sgd", "momentum")


@dataclasses.dataclass
class TrainingConfig:
    """Data, model and optimizer settings. `None` means the model's LTH default."""

    output_dir: str = "runs/run"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    model: str = "lenet_300_100"
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    seed: int = 0
    train_examples: int | None = None  # train on a subset, for quick runs
    validation_examples: int = 5000  # held out from train, as in the LTH paper
    verbose: int = 1  # Keras progress output

    def resolved(self):
        """A copy with the model's defaults filled in and the shared fields validated.

        Subclasses extend this with their own fields (call super().resolved() first).

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        spec = models.get(self.model)
        config = dataclasses.replace(self)
        config.batch_size = config.batch_size or spec.batch_size
        config.optimizer = config.optimizer or spec.optimizer
        config.learning_rate = config.learning_rate or spec.learning_rate
        check_int(config.batch_size, "batch_size", 1)
        check_int(config.seed, "seed", 0)
        check_int(config.validation_examples, "validation_examples", 1)
        if config.train_examples is not None:
            check_int(config.train_examples, "train_examples", 1)
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {config.optimizer!r}.")
        if not config.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {config.learning_rate!r}.")
        return config


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
    """Compiles for classification on logits with a fresh optimizer from `OPTIMIZERS`."""
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


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite while training."""


class StopOnDivergence(keras.callbacks.Callback):
    """Raises `TrainingDivergedError` at the first epoch end whose loss is not finite.

    Placed before a callback that saves state (such as `RoundBackup`), it keeps a
    diverged model from being written as a result or a backup.
    """

    def __init__(self, where, learning_rate):
        super().__init__()
        self.where = where
        self.learning_rate = learning_rate

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not np.isfinite(value):
                iteration = int(self.model.optimizer.iterations.numpy())
                raise TrainingDivergedError(
                    f"The {key.replace('_', ' ')} is {value} after iteration {iteration} of {self.where}: training "
                    f"diverged. Lower the learning rate (now {self.learning_rate:g}), or check the data for NaN or "
                    "infinite values, and rerun in a new --output_dir; results already finished are kept and "
                    "nothing of this round was saved."
                )
