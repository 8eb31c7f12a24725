"""`MaskUpdateCallback`: runs a `mask_updaters.MaskUpdater` (SET, SNFS, RigL) during `fit`.

Also reachable as `mask_updaters.MaskUpdateCallback`. See `mask_updaters` for the methods (this module
does not import it: it takes any object with a `MaskUpdater`'s methods).
"""

import itertools

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.sparsity import callbacks as callbacks_lib
from keras_lottery.sparsity import wrappers

keras = compat.keras


def _batches(data, skip=0):
    """An endless source of batches: a dataset (repeated), an iterator, one fixed (x, y) batch, or a
    callable `skip -> iterable of batches` (the source resumes after the `skip` batches already taken)."""
    if data is None:
        return None
    if callable(data) and not isinstance(data, tf.data.Dataset):
        return iter(data(skip))
    if isinstance(data, tf.data.Dataset):
        return iter(data.repeat())
    if isinstance(data, (tuple, list)):
        return itertools.repeat(tuple(data))  # one held-out batch each time, as rigl_tf2 does
    if hasattr(data, "__next__"):
        return data
    raise TypeError(f"data must be a tf.data.Dataset, an iterator of (x, y) batches, one (x, y) batch, or a "
                    f"callable skip -> batches; got {type(data).__name__}.")


class MaskUpdateCallback(keras.callbacks.Callback):
    """Runs a `MaskUpdater` during `fit`, at its update steps (optimizer steps, after each batch).

    Before training it checks the model and optimizer (`MaskUpdater.prepare`), says the
    masks are managed (`wrappers.manage_masks`: the wrappers' schedules are not to act; add
    no `UpdateMasks` whose schedule fires during the run, nor tfmot's `UpdatePruningStep`,
    refused at the first update) and zeroes pruned weights. With `steps_per_execution > 1`
    the callback sees the model only at execution ends, so `frequency` and `begin_step`
    (counted from the fit's first step) must be multiples of it.
    """

    def __init__(self, updater, data=None):
        """Args:
          updater: a `MaskUpdater` (e.g. `get('rigl', total_steps=...)`).
          data: the batches RigL's gradient and SNFS's momentum are taken on: a
            `tf.data.Dataset` (repeated), an iterator, one fixed (x, y) batch, or a callable
            `skip -> iterable of batches`, which a resumed training calls with the number of
            batches taken before its backup (so it takes the same ones as an uninterrupted run).

        Raises:
          TypeError: not a MaskUpdater, or data of another kind.
          ValueError: RigL or SNFS without data.
        """
        super().__init__()
        if not all(callable(getattr(updater, name, None)) for name in ("update", "next_update_step", "prepare")):
            raise TypeError(f"updater must be a MaskUpdater (e.g. mask_updaters.get('rigl', ...)); got {updater!r}.")
        if updater.needs_data and data is None:
            raise ValueError(f"{type(updater).__name__} takes gradients on batches: pass data=(the training "
                             "dataset, an iterator of (x, y), or one (x, y) batch).")
        self.updater = updater
        self._data = data
        self._batches = _batches(data)
        self._taken = 0  # batches taken from a callable source: where a resumed one continues

    def _next_batch(self):
        try:
            self._taken += 1
            return next(self._batches)
        except StopIteration:
            raise RuntimeError("MaskUpdateCallback's data ran out: pass a dataset (it is repeated).") from None

    def on_train_begin(self, logs=None):
        self.updater.prepare(self.model)
        spe_variable = getattr(self.model, "_steps_per_execution", None)
        per_execution = 1 if spe_variable is None else int(spe_variable.numpy())
        start = callbacks_lib.optimizer_step(self.model)
        pending = self.updater.next_update_step(start + 1) is not None
        if per_execution > 1 and pending and (self.updater.frequency % per_execution or
                                              (self.updater.begin_step - start) % per_execution):
            raise ValueError(
                f"steps_per_execution={per_execution}: callbacks see the model only every {per_execution} steps "
                f"(from step {start}), so mask updates at begin_step + j * frequency need both to be multiples of "
                f"it; got frequency={self.updater.frequency}, begin_step={self.updater.begin_step}.")
        window = self.updater.window() if callable(getattr(self.updater, "window", None)) else 1
        if per_execution > 1 and pending and window > 1:
            raise ValueError(
                f"{type(self.updater).__name__} folds the dense gradient of each of the {window} steps before an "
                f"update into its momentum, and with steps_per_execution={per_execution} callbacks see only every "
                f"{per_execution}th step: compile with steps_per_execution=1 (or pass momentum_steps=1).")
        wrappers.manage_masks(self.model)
        wrappers.apply_masks(self.model)

    def _implements_train_batch_hooks(self):
        # Keras asks once per fit; no update left means no per-step Python work.
        if getattr(self.model, "optimizer", None) is None:
            return False
        return self.updater.next_update_step(callbacks_lib.optimizer_step(self.model) + 1) is not None

    def on_train_batch_end(self, batch, logs=None):
        step = callbacks_lib.optimizer_step(self.model)
        if self.updater.observes(step):
            self.updater.observe(self.model, self._next_batch(), step)
        if self.updater.is_update_step(step):
            self.updater.update(self.model, step, self._next_batch() if self.updater.batch_at_update else None)

    def on_train_end(self, logs=None):
        wrappers.apply_masks(self.model)

    def backup_state(self):
        """The updater's Python state (SNFS's momenta), for a mid-round backup (`experiments.round_backup`).

        A resumed training then updates as the uninterrupted one, provided the batches are the same:
        pass one fixed (x, y) batch or a callable source as `data` (an iterator's position is not saved).
        """
        return {**self.updater.backup_state(), "batches_taken": np.array(self._taken)}

    def restore_backup_state(self, arrays):
        """Restores what `backup_state` returned."""
        arrays = dict(arrays)
        self._taken = int(arrays.pop("batches_taken", 0))
        if callable(self._data) and not isinstance(self._data, tf.data.Dataset):
            self._batches = _batches(self._data, self._taken)
        self.updater.restore_backup_state(arrays)
