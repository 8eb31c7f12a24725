"""Stopping a run whose loss became NaN or infinite, before anything of it is saved."""

import numpy as np

from keras_lottery import compat

keras = compat.keras


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
