"""Training curves on TensorBoard with the training iteration as x: `TrainingSummaries`.

    model.fit(..., callbacks=[training.TrainingSummaries("logs/round_00")])

Keras's own `TensorBoard` callback logs `epoch_loss` with the epoch as step, in
`<log_dir>/train` and `<log_dir>/validation`. In these flows an "epoch" is one
evaluation interval (a round of 2,000 iterations with 20 checks has 20 "epochs" of
100 steps), so its x axis is neither iterations nor epochs of the data, and curves of
runs with other intervals do not line up. This callback writes, at each epoch end:

* `train/<metric>`: Keras's logs (the mean over the steps since the last log);
* `validation/<metric>`: the `val_` logs (held-out checks, e.g. `HeldOutChecks`);

with the optimizer's iteration as step, into one TensorBoard run (`log_dir` itself).
"""

from keras_lottery import compat
from keras_lottery.foundations import tensorboard

keras = compat.keras


class TrainingSummaries(keras.callbacks.Callback):
    """Logs loss and metrics as `train/<name>` and `validation/<name>` at the training iteration.

    Args:
      log_dir: the TensorBoard run's folder, or a `tf.summary` writer to share with the
        other callbacks that log into the same run (one event file per run).
    """

    def __init__(self, log_dir):
        super().__init__()
        self._log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer, _ = tensorboard.writer_for(self._log_dir)

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        scalars = {}
        for name, value in (logs or {}).items():
            if name.startswith("val_"):
                scalars[f"validation/{name[len('val_'):]}"] = value
            else:
                scalars[f"train/{name}"] = value
        with self._writer.as_default(step=step):
            tensorboard.write_scalars(scalars, step)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
