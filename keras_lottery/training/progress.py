"""A progress line per evaluation of a long training job: `Progress`, a Keras callback.

    progress = Progress("round 2 of 5", evaluations=20, iterations_per_evaluation=100)
    model.fit(train, epochs=20, steps_per_epoch=100, verbose=0, callbacks=[checks, progress])
    # round 2 of 5: iteration 300 of 2000 (evaluation 3 of 20), validation accuracy 0.9712

The flows cut their training into Keras "epochs" that are evaluation intervals, not passes
over the data (IMP's 20 checks per round), so Keras's own display ("Epoch 3/20", a bar per
interval) misnames them, and on stdout it does not keep its order with the lines logged on
stderr. These lines say iterations and evaluations instead, and go where the flows' other
lines go. Library code
never prints: each line is passed to `log`, by default the `keras_lottery.training.progress`
logger at INFO level, which the apps show through absl.logging on stderr, in order with
their round summaries (a library user sees them after `logging.basicConfig(level=logging.INFO)`).

`verbose` (`TrainingConfig.verbose`): 0 no lines, 1 a line per evaluation, 2 the same line
with the training and validation losses and the seconds since training started.
"""

import logging
import numbers
import time

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int

keras = compat.keras
_LOG = logging.getLogger(__name__)
VERBOSE_LEVELS = (0, 1, 2)


def check_verbose(verbose):
    """Refuses a `verbose` that is not 0, 1 or 2.

    Raises:
      ValueError: naming the value and what each level shows.
    """
    if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral) or verbose not in VERBOSE_LEVELS:
        raise ValueError(f"verbose must be 0 (no progress lines), 1 (a line per evaluation) or 2 (the same with "
                         f"losses and seconds); got {verbose!r}.")


class Progress(keras.callbacks.Callback):
    """Logs one line per Keras epoch end (an evaluation): where training is and how it does.

    Put it after the callback that adds `val_accuracy` to the logs (`HeldOutChecks`): it
    reads the logs as they are when its turn comes.
    """

    def __init__(self, label, evaluations, iterations_per_evaluation, verbose=1, log=None):
        """Args:
          label: what trains, first on every line: "pruning round 2 of 5", "one pass", "search".
          evaluations: the Keras epochs of the whole job (its `epochs`).
          iterations_per_evaluation: training steps per Keras epoch (its `steps_per_epoch`).
          verbose: 0 (no lines), 1 (a line per evaluation) or 2 (also losses and seconds).
          log: callable(message) that takes each line; default: this module's logger at INFO.

        Raises:
          ValueError: a bad `verbose`, or counts that are not integers >= 1.
        """
        super().__init__()
        check_verbose(verbose)
        self.label = label
        self.evaluations = check_int(evaluations, "evaluations", 1)
        self.iterations_per_evaluation = check_int(iterations_per_evaluation, "iterations_per_evaluation", 1)
        self.verbose = verbose
        self.log = _LOG.info if log is None else log
        self._train_started = None
        self._first_epoch = True

    def _iteration(self, evaluations_done):
        return evaluations_done * self.iterations_per_evaluation

    def on_train_begin(self, logs=None):
        self._train_started = time.perf_counter()
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        # A resumed job starts at a later Keras epoch (`initial_epoch`): say so once, at its first.
        if self._first_epoch and epoch > 0 and self.verbose:
            self.log(f"{self.label}: resumed at iteration {self._iteration(epoch)} of "
                     f"{self._iteration(self.evaluations)} (evaluation {epoch} of {self.evaluations} done)")
        self._first_epoch = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose:
            return
        logs = logs or {}
        parts = [f"{self.label}: iteration {self._iteration(epoch + 1)} of {self._iteration(self.evaluations)} "
                 f"(evaluation {epoch + 1} of {self.evaluations})"]
        if "val_accuracy" in logs:
            parts.append(f"validation accuracy {float(logs['val_accuracy']):.4f}")
        if self.verbose >= 2:
            for key, name in (("val_loss", "validation loss"), ("loss", "training loss")):
                if key in logs:
                    parts.append(f"{name} {float(logs[key]):.4f}")
            if self._train_started is not None:
                parts.append(f"{time.perf_counter() - self._train_started:.1f} s")
        self.log(", ".join(parts))
