"""Tests of `training.lr_schedules`: lengths ("80ep", "500it") and `RecipeSchedule`'s values."""

import math
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import keras
from keras_lottery import training
from keras_lottery.sparsity import callbacks
from keras_lottery.training import lr_schedules


@pytest.mark.parametrize("text, expected", [
    ("160ep", (160.0, "ep")), ("1.5ep", (1.5, "ep")), ("500it", (500, "it")), ("500", (500, "it")),
    (" 20it ", (20, "it")), ("0ep", (0.0, "ep")),
])
def test_parse_length(text, expected):
    value, unit = lr_schedules.parse_length(text, "--warmup")
    assert (value, unit) == expected and type(value) is type(expected[0])


@pytest.mark.parametrize("text", ["", "ep", "5 epochs", "1.5it", "1.5", "-3ep", "nanep", "infep", "5e", 5, None])
def test_parse_length_refuses_with_the_field_and_the_value(text):
    with pytest.raises(ValueError, match=r"--warmup must be a length such as '80ep'.*got"):
        lr_schedules.parse_length(text, "--warmup")


def test_to_iterations_rounds_epochs_and_keeps_iterations():
    assert lr_schedules.to_iterations("80ep", 391, "x") == 80 * 391
    assert lr_schedules.to_iterations("1.5ep", 5, "x") == 8  # 7.5 rounds half up
    assert lr_schedules.to_iterations("0.1ep", 4, "x") == 0
    assert lr_schedules.to_iterations("500it", 7, "x") == 500
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1"):
        lr_schedules.to_iterations("2ep", 0, "x")
    with pytest.raises(ValueError, match="--lr_milestones must be a length"):
        lr_schedules.to_iterations("2 ep s", 10, "--lr_milestones")


def _values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def _config(**recipe):
    fields = dict(learning_rate=0.1, lr_schedule="constant", lr_milestones="", lr_gamma=0.1, warmup="")
    return types.SimpleNamespace(**{**fields, **recipe})


def test_step_decay_with_milestones_in_epochs_drops_at_the_milestone_iteration():
    schedule = lr_schedules.schedule_for(_config(lr_schedule="step", lr_milestones="2ep,3ep", lr_gamma=0.5), 10, 50)
    assert schedule.milestones == [20, 30]
    np.testing.assert_allclose(_values(schedule, [0, 19, 20, 29, 30, 49]),
                               [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)


def test_warmup_is_linear_from_exactly_0_at_step_0_as_openlth():
    schedule = lr_schedules.schedule_for(_config(warmup="4it"), 10, 50)
    assert _values(schedule, [0])[0] == 0.0
    np.testing.assert_allclose(_values(schedule, [1, 2, 4, 40]), [0.025, 0.05, 0.1, 0.1], rtol=1e-6)


def test_cosine_decays_to_0_at_the_total_and_stays_there():
    schedule = lr_schedules.schedule_for(_config(lr_schedule="cosine"), 10, 40)
    np.testing.assert_allclose(_values(schedule, [0, 10, 20, 40, 55]),
                               [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05, 0.0, 0.0], rtol=1e-6, atol=1e-9)


def test_warmup_and_step_decay_multiply_as_openlth_lambdas():
    schedule = lr_schedules.schedule_for(_config(lr_schedule="step", lr_milestones="1ep,25it", warmup="1ep"), 20, 60)
    assert schedule.warmup_iterations == 20 and schedule.milestones == [20, 25]
    # Each value is OpenLTH's product: min(1, it / 20) * 0.1 ** bisect_right([20, 25], it).
    np.testing.assert_allclose(_values(schedule, [5, 19, 20, 24, 25]),
                               [0.1 * 5 / 20, 0.1 * 19 / 20, 0.01, 0.01, 0.001], rtol=1e-6)


def test_warmup_with_cosine():
    schedule = lr_schedules.schedule_for(_config(lr_schedule="cosine", warmup="10it"), 10, 100)
    np.testing.assert_allclose(_values(schedule, [5, 50]), [0.1 * 5 / 10 * (1 + math.cos(math.pi * 0.05)) / 2, 0.05],
                               rtol=1e-6)


def test_milestones_in_mixed_units_must_increase_once_converted():
    with pytest.raises(ValueError, match=r"--lr_milestones must be increasing; '2ep,15it' is \[20, 15\]"):
        lr_schedules.schedule_for(_config(lr_schedule="step", lr_milestones="2ep,15it"), 10, 50)


def test_the_start_step_offsets_the_schedule_inside_a_traced_function_without_retracing():
    schedule = lr_schedules.RecipeSchedule(0.1, "step", milestones=[10], gamma=0.5)
    step = tf.Variable(3, dtype=tf.int64)
    read = tf.function(lambda: schedule(step))
    assert float(read()) == pytest.approx(0.1)
    schedule.set_start_step(8)
    assert schedule.start_step == 8
    assert float(read()) == pytest.approx(0.05)  # 3 + 8 is past the milestone at 10
    assert read.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="start_step must be an integer >= 0"):
        schedule.set_start_step(-1)


def test_reset_optimizer_between_rounds_keeps_the_start_step():
    schedule = lr_schedules.RecipeSchedule(0.1, "step", milestones=[5], gamma=0.1)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    variable = tf.Variable([1.0, 2.0])
    for _ in range(3):
        optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
    schedule.set_start_step(7)
    callbacks.reset_optimizer(optimizer)
    assert int(optimizer.iterations.numpy()) == 0  # the reset did happen
    assert schedule.start_step == 7 and "learning_rate" in schedule._start_step.name
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)  # schedule at 0 + 7 > 5


def test_the_config_round_trips_with_the_start_step():
    schedule = lr_schedules.RecipeSchedule(0.2, "cosine", warmup_iterations=3, total_iterations=30, start_step=4)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert type(again) is lr_schedules.RecipeSchedule and again.get_config() == schedule.get_config()
    assert again.start_step == 4 and _values(again, [0, 7, 20]) == _values(schedule, [0, 7, 20])


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=0), "learning_rate must be a number > 0"),
    (dict(kind="linear"), "kind must be one of"),
    (dict(kind="step"), "kind='step' needs at least one milestone"),
    (dict(kind="step", milestones=[5, 5]), "milestones must be increasing"),
    (dict(milestones=[5]), "have no effect with kind='constant'"),
    (dict(kind="cosine"), r"total_iterations \(needed by kind='cosine'\) must be an integer >= 1"),
    (dict(gamma=1.5), r"gamma must be a number in \(0, 1\]"),
    (dict(warmup_iterations=-1), "warmup_iterations must be an integer >= 0"),
])
def test_schedule_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_schedules.RecipeSchedule(**{"learning_rate": 0.1, **kwargs})


def test_exported_from_training():
    assert training.RecipeSchedule is lr_schedules.RecipeSchedule and training.schedule_for is lr_schedules.schedule_for
