"""Tests of `TrainingSummaries`: Keras's curves at x = training iteration, read back from the event files."""

import os

import tensorflow as tf

from keras_lottery import keras
from keras_lottery import training


def _scalars(folder):
    found = {}
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def test_train_and_validation_curves_at_the_iteration_in_one_run(tiny, tmp_path):
    model = tiny.build_dense()
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x, y = tiny.make_data(64)
    history = model.fit(x, y, batch_size=16, epochs=3, steps_per_epoch=2, validation_data=(x[:16], y[:16]),
                        verbose=0, callbacks=[training.TrainingSummaries(str(tmp_path))])
    scalars = _scalars(str(tmp_path))
    assert os.listdir(tmp_path) and all(name.startswith("events") for name in os.listdir(tmp_path))  # no subfolders
    assert [step for step, _ in scalars["train/loss"]] == [2, 4, 6]  # iterations, not epochs 0, 1, 2
    assert [value for _, value in scalars["validation/accuracy"]] == [
        float(tf.constant(v, tf.float32)) for v in history.history["val_accuracy"]]
    assert "epoch_loss" not in scalars and "val_loss" not in scalars
