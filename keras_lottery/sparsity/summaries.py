"""TensorBoard summaries of pruning: `SparsitySummaries` and `write_hparams`.

    model.fit(..., callbacks=[kl.UpdateMasks(), kl.SparsitySummaries("logs/run1")])
    # tensorboard --logdir logs

Beyond tfmot's `PruningSummaries` (which logs one sparsity scalar per layer), this logs
at each epoch end (or every `update_freq` steps), with the optimizer iteration as step:

* `sparsity/<layer>/weights_remaining` and `sparsity/weights_remaining` (all layers);
* `sparsity/<layer>/mask_changes`: weights whose mask changed since the last log (at the
  first log: since `masks_before`, e.g. the masks before the prune that starts an IMP round);
* `flips/<layer>/...` for sign-flip wrappers: `fraction_flipped`, `fraction_ever_flipped`,
  `mean_flips`, and `flip_rate` — new sign flips per surviving weight per step since
  the last log;
* `early_bird/distance_<sparsity>`: the early-bird detector's newest distance, when
  one is passed;
* `weights/<layer>/surviving`: a histogram of the surviving weights' values, every
  `histogram_freq`-th log and at the end of training (a histogram of a large layer costs
  as much as a few hundred training steps of LeNet: log them sparingly in short runs).

Everything is read from variables between steps: nothing is added to the training graph.
"""

import os

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.foundations import tensorboard
from keras_lottery.foundations.tensorboard import write_scalars  # noqa: F401  (its home before)
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import wrappers

keras = compat.keras


class SparsitySummaries(keras.callbacks.Callback):
    """Logs per-layer sparsity, mask changes, sign flips, early-bird distances and histograms.

    Args:
      log_dir: the folder of the event files (one TensorBoard run), or a `tf.summary`
        writer shared with the other callbacks that log into the same run.
      update_freq: 'epoch' (log at each epoch end) or a number of steps.
      histograms: also log histograms of the surviving weights.
      early_bird: an optional `EarlyBirdCallback` whose distances to log.
      histogram_freq: with `histograms`, log them at every `histogram_freq`-th log
        (the first, at the start of training, included) and at the end of training.
      masks_before: optional dict layer name -> mask that the first log's
        `mask_changes` counts from (without it, the first log has none to count).

    Raises:
      ValueError: an `update_freq` that is neither 'epoch' nor a positive integer, or a
        `histogram_freq` below 1.
    """

    def __init__(self, log_dir, update_freq="epoch", histograms=True, early_bird=None, histogram_freq=1,
                 masks_before=None):
        super().__init__()
        if update_freq != "epoch":
            check_int(update_freq, "update_freq ('epoch' or a number of steps)", 1)
        self.log_dir = log_dir if isinstance(log_dir, tf.summary.SummaryWriter) else str(log_dir)
        self.update_freq = update_freq
        self.histograms = histograms
        self.histogram_freq = check_int(histogram_freq, "histogram_freq", 1)
        self._logs_done = 0
        self._histograms_logged_at = None
        self.early_bird = early_bird
        self._writer = None
        self._previous_masks = None if masks_before is None else {
            name: np.asarray(mask) for name, mask in masks_before.items()}
        self._previous_flips = None
        self._previous_step = None
        self._last_logged_step = None

    def _implements_train_batch_hooks(self):
        return self.update_freq != "epoch"

    def on_train_begin(self, logs=None):
        if not wrappers.prunable_wrappers(self.model):
            raise ValueError("SparsitySummaries needs a model with pruning wrappers (prune_low_magnitude or "
                             "prune_low_sign_flip).")
        if self._writer is None:
            self._writer, _ = tensorboard.writer_for(self.log_dir)
        self._log(_step(self.model))

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":  # Keras calls every callback once any asks for batch hooks
            return
        step = _step(self.model)
        if step - self._last_logged_step >= self.update_freq:
            self._log(step)

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._log(_step(self.model))

    def on_train_end(self, logs=None):
        if self._writer is None:
            return
        step = _step(self.model)
        if self.histograms and self._histograms_logged_at != step:
            with self._writer.as_default(step=step):
                self._log_histograms(step)
        self._writer.flush()

    def _log_histograms(self, step):
        for name, _, weight, mask in wrappers.pruning_entries(self.model):
            tf.summary.histogram(f"weights/{name}/surviving", weight.numpy()[mask.numpy() > 0])
        self._histograms_logged_at = step

    def _log(self, step):
        if step == self._last_logged_step:
            return
        masks = wrappers.get_masks(self.model)
        scalars = {}
        kept = sum(float(mask.sum()) for mask in masks.values())
        scalars["sparsity/weights_remaining"] = kept / max(sum(m.size for m in masks.values()), 1)
        for name, mask in masks.items():
            scalars[f"sparsity/{name}/weights_remaining"] = float(mask.mean())
            previous = None if self._previous_masks is None else self._previous_masks.get(name)
            scalars[f"sparsity/{name}/mask_changes"] = 0 if previous is None else int(np.count_nonzero(previous != mask))
        self._flip_scalars(step, masks, scalars)
        if self.early_bird is not None:
            for sparsity, distances in self.early_bird.distances.items():
                if distances and distances[-1] is not None:
                    scalars[f"early_bird/distance_{sparsity:g}"] = distances[-1]
        with self._writer.as_default(step=step):
            write_scalars(scalars, step)
            if self.histograms and self._logs_done % self.histogram_freq == 0:
                self._log_histograms(step)
        self._previous_masks = masks
        self._last_logged_step = step
        self._logs_done += 1

    def _flip_scalars(self, step, masks, scalars):
        statistics = sign_flip.flip_statistics(self.model)
        if not statistics:
            return
        counts = sign_flip.flip_counts(self.model)
        totals = {name: int(value.sum()) for name, value in counts.items()}
        for name, values in statistics.items():
            for key, value in values.items():
                scalars[f"flips/{name}/{key}"] = value
            if self._previous_flips is not None and step > self._previous_step:
                new_flips = max(totals[name] - self._previous_flips.get(name, 0), 0)
                alive = max(float(masks[name].sum()), 1.0)
                scalars[f"flips/{name}/flip_rate"] = new_flips / alive / (step - self._previous_step)
        self._previous_flips, self._previous_step = totals, step


def _step(model):
    return int(model.optimizer.iterations.numpy()) if getattr(model, "optimizer", None) is not None else 0


def write_hparams(log_dir, config, trial_id=None):
    """Writes a run's config to TensorBoard's HParams dashboard (`foundations.tensorboard`).

    Args:
      log_dir: the run's TensorBoard folder.
      config: dict of settings; unset (None) values and settings that are not
        hyperparameters (output and data folders, verbosity, backup interval) are left
        out, others that are not bool, int, float or str are written as their string.
      trial_id: the run's name in the dashboard, which groups the sessions of one name
        (default: the run folder when `log_dir` is `<run folder>/tensorboard/<run>`, else
        `log_dir`; relative to the working folder when below it).
    """
    if trial_id is None:
        parent = os.path.dirname(os.path.normpath(str(log_dir)))
        folder = os.path.dirname(parent) if os.path.basename(parent) == "tensorboard" else os.path.normpath(str(log_dir))
        # Relative to where the command ran when below it ("runs/seed0"): the table cuts long names.
        relative = os.path.relpath(folder)
        trial_id = folder if relative.startswith("..") else relative
    tensorboard.start_hparams_session(log_dir, config, trial_id)
