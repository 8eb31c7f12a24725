"""Evaluating a classifier on fixed arrays in one traced graph: the checks of a round and its test.

    checks = HeldOutChecks(splits.validation_x[:600], splits.validation_y[:600])
    model.fit(train, epochs=20, steps_per_epoch=100, callbacks=[checks, ...])  # logs val_loss, val_accuracy
    loss, accuracy = Evaluator(splits.test_x, splits.test_y)(model)

`model.evaluate` costs about 9 ms of Keras machinery per call on top of the forward pass
(data handler, callbacks, metric resets: bench/RESULTS.md), which Keras's own
`validation_data` pays at every epoch: a third of the cost of 20 checks of 600 examples
of LeNet. `Evaluator` traces one function per model (reused by every `Evaluator`, so by
every check and every round, since IMP trains one model object) that returns the summed loss and the number
of correct predictions of a batch, and adds them up: the same loss (mean sparse
categorical cross-entropy on logits, plus the model's regularization losses, as Keras
reports it) and accuracy as `model.evaluate` of a model compiled by
`compile_for_training`, up to float rounding in the last bits of the loss.
"""

import weakref

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int

keras = compat.keras


class Evaluator:
    """Loss and accuracy of a classifier on logits, on fixed arrays (x, y), in batches.

    Args:
      x: inputs.
      y: integer labels, as many as `x`.
      batch_size: examples per call of the traced function.

    Raises:
      ValueError: no examples, or `x` and `y` of different lengths.
    """

    def __init__(self, x, y, batch_size=1000):
        if len(x) != len(y) or not len(x):
            raise ValueError(f"Evaluator needs as many labels as inputs, at least one; got {len(x)} and {len(y)}.")
        batch_size = check_int(batch_size, "batch_size", 1)
        self.batches = [(tf.constant(x[start:start + batch_size]), tf.constant(y[start:start + batch_size]))
                        for start in range(0, len(x), batch_size)]
        self.examples = len(x)

    def __call__(self, model):
        """(loss, accuracy) of `model` on the arrays: floats."""
        function = _batch_sums(model)
        loss_sum, correct = 0.0, 0.0
        for x, y in self.batches:
            batch_loss, batch_correct = function(x, y)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
        regularization = float(np.sum([loss.numpy() for loss in model.losses])) if model.losses else 0.0
        return loss_sum / self.examples + regularization, correct / self.examples


_TRACED = weakref.WeakKeyDictionary()  # model -> its traced batch function (which holds no reference to it)


def _batch_sums(model):
    """The traced function (x, y) -> (summed loss, correct predictions) of `model`, made once per model."""
    function = _TRACED.get(model)
    if function is None:
        reference = weakref.ref(model)  # the cache must not keep the model alive

        @tf.function(reduce_retracing=True)
        def function(x, y):
            logits = reference()(x, training=False)
            losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), tf.cast(y, tf.int64)), tf.float32)
            return tf.reduce_sum(losses), tf.reduce_sum(correct)

        _TRACED[model] = function
    return function


class HeldOutChecks(keras.callbacks.Callback):
    """Adds `val_loss` and `val_accuracy` on fixed held-out arrays to the logs of every epoch end.

    What Keras's `validation_data` does, at a fraction of its per-epoch cost (see the
    module docstring). List it before the callbacks that read the validation logs
    (TensorBoard, early stopping, backups): Keras hands every callback the same logs.

    Args:
      x: held-out inputs (a fixed subset: the same at every check).
      y: their labels.
      batch_size: examples per call.
    """

    def __init__(self, x, y, batch_size=1000):
        super().__init__()
        self.evaluator = Evaluator(x, y, batch_size)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["val_loss"], logs["val_accuracy"] = self.evaluator(self.model)
