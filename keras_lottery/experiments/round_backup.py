"""Mid-round backups: a round killed mid-way resumes at its last evaluation, not its start.

IMP and one-pass runs save their results round by round (`run_folder.py`), and one round
can be long (LTH trains LeNet 50K iterations per round). `RoundBackup`, a callback of
`imp.train_round`, writes at every evaluation but the round's last (a Keras epoch of
the round) everything the rest of the round depends on to `round_<r>/backup.npz`, in
one atomic write, replacing the previous backup:

* every model variable: weights, masks, pruning thresholds and steps, sign-flip
  counts and references, BatchNorm statistics;
* every optimizer variable: the iteration count, momenta, Adam moments;
* the Python state of the round's callbacks that have one (`backup_state()`): the
  rewind snapshot of round 0, the random generator of `UpdateMasks`;
* the progress: evaluations done, the logs of each (for the early-stop record),
  seconds trained so far, and the run's config.

`restore()` reads the backup and checks that it fits the model before it assigns
anything; a backup of a run with another config is refused as its summary would be
(`run_folder.ConfigMismatchError`: a round 0 killed early leaves no summary.json to guard
the folder), and so is a backup of the run on other data (`run_folder.DataMismatchError`). The round then continues at the next evaluation, its training data
advanced past the steps already trained (`imp.train_round` skips those batches of the
seeded stream: about 0.3 ms a batch of 60 Fashion-MNIST images, some 15 s at worst for
LTH's 50K-iteration rounds), so that on CPU the resumed round ends with the same
weights and records as an uninterrupted one. A backup that cannot be read (the zip's
CRC checks every array) or does not fit is deleted with a logged warning, and the
round restarts from its beginning. The caller waits for the last backup (`wait()`) and
deletes it once the round's results are saved.

How often: at the first evaluation at least `backup_seconds` (`ImpConfig`, default 10)
after the last backup, so a kill loses at most about that much training and a short
round is not slowed by backups it would hardly need (0: at every evaluation).

Cost: the state is copied out of the variables at the evaluation (which is what makes a
resume bit-exact) and written on a background thread while training goes on, without
an fsync (`files.BackgroundWriter`): a killed process leaves the last complete backup;
only a crash of the operating system can tear one, and a torn backup fails its CRC check
and restarts the round. Results (`summary.json`, masks, weights) are still fsynced.

Not restored: TensorBoard event files (a resumed round appends events after the
backup's step again) and the random state of layers that draw random numbers in
training (Dropout; no model of the registry (`models/`) has one).
"""

import json
import logging
import time

import numpy as np

from keras_lottery import compat
from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files
from keras_lottery.sparsity import callbacks

keras = compat.keras

_LOG = logging.getLogger(__name__)

_VARIABLES = "variables/"
_CALLBACKS = "callbacks/"
_PROGRESS = "progress"


class RoundBackup(keras.callbacks.Callback):
    """Backs up a round's training state at each evaluation; restores it on a rerun.

    Args:
      folder: the run's `run_folder.RunFolder`.
      round_index: the round this backup belongs to.
      model: the compiled model the round trains.
      epochs: the round's evaluations (Keras epochs); none is backed up after the last.
      config: the run's config dict; a backup of another config is refused.
      config_defaults: dict field -> default, for a backup saved before a field existed.
      round_callbacks: the round's other callbacks; those with `backup_state()` and
        `restore_backup_state(arrays)` have their state backed up too.
      data_record: what the run reads (`run_folder.data_record`); a backup of other data is refused.
      min_seconds: back up at the first evaluation at least this many seconds after the
        last backup (or the start of training); 0 backs up at every evaluation.
    """

    def __init__(self, folder, round_index, model, epochs, config, config_defaults=None, round_callbacks=(),
                 data_record=None, min_seconds=0.0):
        super().__init__()
        self.folder = folder
        self.round_index = round_index
        self.epochs = epochs
        self.config = config
        self.config_defaults = config_defaults
        self.data_record = data_record
        self.min_seconds = min_seconds
        self._last_backup = None
        self.stateful_callbacks = [c for c in round_callbacks if hasattr(c, "backup_state")]
        self.logs = []  # the logs of each evaluation done, restored ones included
        self._writer = files.BackgroundWriter(durable=False)
        self.earlier_seconds = 0.0  # training seconds of the attempts before this one
        self._started = None
        self.set_model(model)

    def _variables(self):
        optimizer = self.model.optimizer
        if callable(getattr(optimizer, "build", None)):
            optimizer.build(self.model.trainable_variables)  # slots exist before a restore
        return list(self.model.weights) + callbacks.optimizer_variables(optimizer)

    def restore(self):
        """Puts the model, optimizer and callbacks back to the backup's state, if there is a valid one.

        Returns:
          The evaluations (epochs) already done: where training continues; 0 when the
          round starts from its beginning.

        Raises:
          run_folder.ConfigMismatchError: the backup is of a run with another config.
          run_folder.DataMismatchError: the backup is of a run on other data.
        """
        try:
            arrays = self.folder.load_backup(self.round_index)
            if arrays is None:
                return 0
            progress, assignments = self._checked(arrays)
        except (run_folder.ConfigMismatchError, run_folder.DataMismatchError):
            raise
        except (run_folder.CorruptRecordError, ValueError, KeyError, TypeError) as error:
            reason = error.__cause__ if isinstance(error, run_folder.CorruptRecordError) else error
            _LOG.warning("Round %d cannot resume from %s (%s: %s): the round restarts from its beginning.",
                         self.round_index, self.folder.backup_path(self.round_index), type(reason).__name__, reason)
            self.folder.remove_backup(self.round_index)
            return 0
        for variable, value in assignments:
            variable.assign(value)
        for index, callback in enumerate(self.stateful_callbacks):
            prefix = f"{_CALLBACKS}{index}/"
            callback.restore_backup_state({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        self.logs = progress["logs"]
        self.earlier_seconds = progress["seconds"]
        _LOG.info("Round %d resumes from its backup after evaluation %d of %d.",
                  self.round_index, len(self.logs), self.epochs)
        return len(self.logs)

    def _checked(self, arrays):
        """(progress, [(variable, value)]) of a backup, after checking it fits this round.

        Raises:
          run_folder.ConfigMismatchError: it is of a run with another config.
          ValueError, KeyError, TypeError: it does not fit (another round, length, model, optimizer).
        """
        progress = json.loads(str(arrays[_PROGRESS]))
        self.folder.check_config(progress, self.config, self.config_defaults)
        if self.data_record is not None and "data" in progress:
            self.folder.check_data(progress, self.data_record)
        if (progress["round"], progress["epochs"]) != (self.round_index, self.epochs):
            raise ValueError(f"it is of round {progress['round']} with {progress['epochs']} evaluations, "
                             f"not of round {self.round_index} with {self.epochs}")
        if not 0 < len(progress["logs"]) < self.epochs:
            raise ValueError(f"it holds {len(progress['logs'])} evaluations of {self.epochs}")
        variables = self._variables()
        saved, names = progress["model_variables"], [variable.name for variable in self.model.weights]
        if saved != names:
            raise ValueError(f"its model variables are not the model's (only there: {sorted(set(saved) - set(names))}, "
                             f"only here: {sorted(set(names) - set(saved))}, else another order)")
        assignments = []
        for index, variable in enumerate(variables):
            value = arrays[f"{_VARIABLES}{index:04d}"]
            if value.shape != tuple(variable.shape) or value.dtype != variable.dtype.as_numpy_dtype:
                raise ValueError(f"it holds {value.dtype}{list(value.shape)} for {variable.name}, which is "
                                 f"{variable.dtype.name}{list(variable.shape)}")
            assignments.append((variable, value))
        if f"{_VARIABLES}{len(variables):04d}" in arrays:
            raise ValueError(f"it holds more than the {len(variables)} variables of the model and optimizer")
        return progress, assignments

    def on_train_begin(self, logs=None):
        self._started = self._last_backup = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append({key: float(value) for key, value in (logs or {}).items()})
        now = time.perf_counter()
        # None after the last evaluation: the round's results follow.
        if len(self.logs) < self.epochs and now - self._last_backup >= self.min_seconds:
            self._writer.submit(self.folder.backup_path(self.round_index), self._arrays())
            self._last_backup = now

    def wait(self):
        """Blocks until the newest backup is on disk; re-raises an error its write met."""
        self._writer.wait()

    def seconds(self):
        """Seconds trained in this round so far, the attempts before this one included."""
        return self.earlier_seconds + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def _arrays(self):
        variables = self._variables()
        arrays = {f"{_VARIABLES}{index:04d}": variable.numpy() for index, variable in enumerate(variables)}
        for index, callback in enumerate(self.stateful_callbacks):
            arrays.update({f"{_CALLBACKS}{index}/{key}": value for key, value in callback.backup_state().items()})
        progress = {"config": self.config, "round": self.round_index, "epochs": self.epochs, "logs": self.logs,
                    "seconds": self.seconds(), "data": self.data_record,
                    # Optimizer variables are matched by position: their names depend on where they were built.
                    "model_variables": [variable.name for variable in self.model.weights]}
        arrays[_PROGRESS] = np.array(json.dumps(progress))
        return arrays
