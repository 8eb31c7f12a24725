"""Tests of the evaluation in one traced graph: the same numbers as `model.evaluate`, traced once."""

import numpy as np
import pytest

from keras_lottery import keras
from keras_lottery import training
from keras_lottery.training import evaluation


def _compiled(tiny, regularized=False):
    model = tiny.build_dense()
    if regularized:
        model.add_loss(lambda: 0.01 * keras.backend.sum(keras.backend.abs(model.layers[1].kernel)))
    training.compile_for_training(model, "adam", 1e-3)
    return model


@pytest.mark.parametrize("regularized", [False, True], ids=["plain", "with-regularization-loss"])
def test_loss_and_accuracy_are_those_of_model_evaluate(tiny, regularized):
    model = _compiled(tiny, regularized)
    x, y = tiny.make_data(250)
    expected_loss, expected_accuracy = model.evaluate(x, y, batch_size=100, verbose=0)
    loss, accuracy = training.Evaluator(x, y, batch_size=100)(model)
    assert accuracy == pytest.approx(expected_accuracy, abs=1e-7)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert 0.0 < accuracy < 1.0  # an untrained model: not a degenerate case


def test_one_trace_per_model_shared_by_every_evaluator(tiny):
    model = _compiled(tiny)
    x, y = tiny.make_data(64)
    for count in (64, 64, 32):  # new evaluators, as every round makes; a smaller batch shape too
        training.Evaluator(x[:count], y[:count])(model)
    function = evaluation._TRACED[model]
    assert function.experimental_get_tracing_count() <= 2  # one per batch shape at most (reduce_retracing)
    other = _compiled(tiny)
    training.Evaluator(x, y)(other)
    assert evaluation._TRACED[other] is not function and len([m for m in evaluation._TRACED if m is model]) == 1


def test_held_out_checks_add_validation_logs_that_later_callbacks_and_history_see(tiny):
    model = _compiled(tiny)
    x, y = tiny.make_data(128)
    seen = []
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0,
                        callbacks=[training.HeldOutChecks(x[:50], y[:50]),
                                   keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(dict(logs)))])
    assert len(history.history["val_loss"]) == 3 and all("val_accuracy" in logs for logs in seen)
    loss, accuracy = training.Evaluator(x[:50], y[:50])(model)
    assert history.history["val_loss"][-1] == pytest.approx(loss) and seen[-1]["val_accuracy"] == accuracy


def test_no_examples_or_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="as many labels as inputs"):
        training.Evaluator(np.zeros((3, 8, 8)), np.zeros(2))
    with pytest.raises(ValueError, match="at least one"):
        training.Evaluator(np.zeros((0, 8, 8)), np.zeros(0))
