"""TensorBoard summaries of pruning: `SparsitySummaries` and `write_hparams`.

    model.fit(..., callbacks=[kl.UpdateMasks(), kl.SparsitySummaries("logs/run1")])
    # tensorboard --logdir logs

Beyond tfmot's `PruningSummaries` (which logs one sparsity scalar per layer), this logs
at each epoch end (or every `update_freq` steps), with the optimizer iteration as step:

* `sparsity/<layer>/weights_remaining` and `sparsity/weights_remaining` (all layers);
* `sparsity/<layer>/mask_changes`: weights whose mask changed since the last log;
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

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import wrappers

keras = compat.keras


class SparsitySummaries(keras.callbacks.Callback):
    """Logs per-layer sparsity, mask changes, sign flips, early-bird distances and histograms.

    Args:
      log_dir: the folder of the event files (one TensorBoard run).
      update_freq: 'epoch' (log at each epoch end) or a number of steps.
      histograms: also log histograms of the surviving weights.
      early_bird: an optional `EarlyBirdCallback` whose distances to log.
      histogram_freq: with `histograms`, log them at every `histogram_freq`-th log
        (the first, at the start of training, included) and at the end of training.

    Raises:
      ValueError: an `update_freq` that is neither 'epoch' nor a positive integer, or a
        `histogram_freq` below 1.
    """

    def __init__(self, log_dir, update_freq="epoch", histograms=True, early_bird=None, histogram_freq=1):
        super().__init__()
        if update_freq != "epoch":
            check_int(update_freq, "update_freq ('epoch' or a number of steps)", 1)
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self.histograms = histograms
        self.histogram_freq = check_int(histogram_freq, "histogram_freq", 1)
        self._logs_done = 0
        self._histograms_logged_at = None
        self.early_bird = early_bird
        self._writer = None
        self._previous_masks = None
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
            self._writer = tf.summary.create_file_writer(self.log_dir)
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


def write_scalars(scalars, step):
    """Writes several scalars at one step to the default summary writer, as one event.

    What `tf.summary.scalar` writes for each (the same tag, scalar plugin metadata and
    float32 value, so TensorBoard shows the same charts), in one summary op instead of
    one op each: ~0.4 ms per scalar saved at every log.

    Args:
      scalars: dict tag -> number.
      step: the step of the event.
    """
    if not scalars:
        return
    summary = summary_pb2.Summary()
    metadata = scalar_metadata.create_summary_metadata(display_name=None, description=None)
    for tag, value in scalars.items():
        summary.value.add(tag=tag, metadata=metadata, tensor=tensor_util.make_tensor_proto(np.float32(value)))
    tf.summary.experimental.write_raw_pb(tf.constant(summary.SerializeToString()), step=step)


def _step(model):
    return int(model.optimizer.iterations.numpy()) if getattr(model, "optimizer", None) is not None else 0


def write_hparams(log_dir, config):
    """Writes a run's config to TensorBoard's HParams dashboard.

    Args:
      log_dir: the run's TensorBoard folder.
      config: dict of settings; values that are not bool, int, float or str are
        written as their string (None as "None").
    """
    from tensorboard.plugins.hparams import api as hparams_api  # imported here: only this needs it

    values = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
              for key, value in config.items()}
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hparams_api.hparams(values)
    writer.close()
