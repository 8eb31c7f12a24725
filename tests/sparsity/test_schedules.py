"""Tests of schedules.py: firing steps, sparsities, next_prune_step, lth_prune_rates."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule

from keras_lottery import keras
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

HORIZON = 80


def evaluate(schedule, step):
    """(should_prune, sparsity) of `schedule` at `step`, evaluated eagerly."""
    should_prune, sparsity = schedule(tf.constant(step, tf.int64))
    return bool(should_prune), float(sparsity)


def firing_steps(schedule, horizon=HORIZON):
    return [step for step in range(horizon) if evaluate(schedule, step)[0]]


def assert_next_prune_step_matches_call(schedule, horizon=HORIZON, never_ends=False):
    """next_prune_step(s) == the first t >= s where __call__ fires (None if none before the end)."""
    fires = firing_steps(schedule, horizon + 40)
    for step in range(horizon):
        upcoming = [t for t in fires if t >= step]
        expected = upcoming[0] if upcoming else None
        got = schedules.next_prune_step(schedule, step)
        if expected is None and never_ends:
            assert got is not None and got >= horizon + 40
        else:
            assert got == expected, (step, got, expected)


# ----------------------------------------------------------------------------------------
# OneShot.


@pytest.mark.parametrize("prune_step", [0, 1, 7, 33])
def test_one_shot_fires_once_at_its_step(prune_step):
    schedule = schedules.OneShot(0.75, prune_step=prune_step)
    assert firing_steps(schedule) == [prune_step]
    assert evaluate(schedule, prune_step)[1] == 0.75
    assert_next_prune_step_matches_call(schedule)
    assert schedule.next_prune_step(prune_step) == prune_step
    assert schedule.next_prune_step(prune_step + 1) is None


def test_one_shot_sparsity_is_its_target_as_float32():
    schedule = schedules.OneShot(0.8, prune_step=2)
    assert evaluate(schedule, 2)[1] == float(np.float32(0.8))
    assert schedule.target_sparsity == 0.8
    assert isinstance(schedule, tfmot_schedule.PruningSchedule)


def test_one_shot_config():
    schedule = schedules.OneShot(0.6, prune_step=4)
    config = schedule.get_config()
    assert config == {"class_name": "OneShot", "config": {"target_sparsity": 0.6, "prune_step": 4}}
    rebuilt = schedules.OneShot(**config["config"])
    assert firing_steps(rebuilt) == [4]


# ----------------------------------------------------------------------------------------
# Iterative.


@pytest.mark.parametrize(
    "prune_rate, steps_per_round, rounds, begin_step, expected_steps",
    [
        (0.2, 5, 3, 0, [5, 10, 15]),
        (0.2, 5, 3, 3, [8, 13, 18]),
        (0.5, 1, 4, 0, [1, 2, 3, 4]),
        (0.1, 7, 1, 10, [17]),
        (0.3, 12, 5, 2, [14, 26, 38, 50, 62]),
    ],
)
def test_iterative_fires_at_each_round_with_the_round_sparsity(
    prune_rate, steps_per_round, rounds, begin_step, expected_steps
):
    schedule = schedules.Iterative(prune_rate, steps_per_round, rounds, begin_step)
    assert firing_steps(schedule) == expected_steps
    for round_index, step in enumerate(expected_steps, start=1):
        expected = 1.0 - (1.0 - prune_rate) ** round_index
        assert evaluate(schedule, step)[1] == pytest.approx(expected, abs=1e-6)
        assert schedule.sparsity_at_round(round_index) == pytest.approx(expected, abs=1e-15)
    assert schedule.sparsity_at_round(0) == 0.0
    assert_next_prune_step_matches_call(schedule)


def test_iterative_next_prune_step_values():
    schedule = schedules.Iterative(0.2, 5, 3, begin_step=3)
    assert [schedule.next_prune_step(step) for step in (0, 8, 9, 13, 14, 18, 19, 100)] == [8, 8, 13, 13, 18, 18, None, None]


def test_iterative_config():
    schedule = schedules.Iterative(0.2, 5, 3, begin_step=1)
    assert schedule.get_config() == {
        "class_name": "Iterative",
        "config": {"prune_rate": 0.2, "steps_per_round": 5, "rounds": 3, "begin_step": 1},
    }


# ----------------------------------------------------------------------------------------
# tfmot schedules and anything else.


@pytest.mark.parametrize(
    "schedule",
    [
        tfmot_schedule.ConstantSparsity(0.5, begin_step=3, end_step=20, frequency=4),
        tfmot_schedule.ConstantSparsity(0.5, begin_step=0, end_step=30, frequency=1),
        tfmot_schedule.ConstantSparsity(0.5, begin_step=10, end_step=10, frequency=7),
        tfmot_schedule.PolynomialDecay(0.1, 0.8, begin_step=2, end_step=17, frequency=5),
        tfmot_schedule.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10, frequency=3),
        tfmot_schedule.PolynomialDecay(0.2, 0.9, begin_step=5, end_step=50, frequency=10, power=2),
    ],
    ids=["const-3-20-4", "const-0-30-1", "const-10-10-7", "poly-2-17-5", "poly-0-10-3", "poly-5-50-10"],
)
def test_next_prune_step_of_tfmot_schedules_matches_their_call(schedule):
    assert firing_steps(schedule)  # fires at least once
    assert_next_prune_step_matches_call(schedule)


def test_next_prune_step_of_tfmot_schedule_without_end():
    schedule = tfmot_schedule.ConstantSparsity(0.5, begin_step=4, end_step=-1, frequency=6)
    assert firing_steps(schedule)[:4] == [4, 10, 16, 22]
    assert_next_prune_step_matches_call(schedule, never_ends=True)
    assert schedules.next_prune_step(schedule, 1000) == 1000  # 1000 = 4 + 166 * 6


def test_next_prune_step_of_unknown_schedule_is_every_step():
    class EveryStep(tfmot_schedule.PruningSchedule):
        def __call__(self, step):
            return tf.constant(True), tf.constant(0.5)

        def get_config(self):
            return {}

    for step in (0, 3, 99):
        assert schedules.next_prune_step(EveryStep(), step) == step


# ----------------------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    "build",
    [
        lambda: schedules.OneShot(1.0),
        lambda: schedules.OneShot(-0.1),
        lambda: schedules.OneShot(float("nan")),
        lambda: schedules.OneShot(0.5, prune_step=-1),
        lambda: schedules.OneShot(0.5, prune_step=1.5),
        lambda: schedules.OneShot(0.5, prune_step=True),
        lambda: schedules.Iterative(1.0, 5, 3),
        lambda: schedules.Iterative(-0.2, 5, 3),
        lambda: schedules.Iterative(0.2, 0, 3),
        lambda: schedules.Iterative(0.2, -5, 3),
        lambda: schedules.Iterative(0.2, 5.0, 3),
        lambda: schedules.Iterative(0.2, 5, 0),
        lambda: schedules.Iterative(0.2, 5, -1),
        lambda: schedules.Iterative(0.2, 5, 3, begin_step=-1),
        lambda: schedules.Iterative(0.2, 5, 3, begin_step=0.5),
    ],
)
def test_bad_schedule_arguments_raise_value_error(build):
    with pytest.raises(ValueError):
        build()


def test_numpy_integer_steps_are_accepted():
    assert schedules.OneShot(0.5, prune_step=np.int64(5)).next_prune_step(0) == 5
    assert schedules.Iterative(0.5, np.int64(4), np.int64(2), begin_step=np.int32(1)).next_prune_step(0) == 5


# ----------------------------------------------------------------------------------------
# lth_prune_rates.


def lth_like_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Conv2D(4, 3, name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, name="fc1"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.Dense(16, name="fc2"),
            keras.layers.Dense(10, name="output"),
        ]
    )


def test_lth_prune_rates_on_lth_like_model():
    rates = schedules.lth_prune_rates(lth_like_model().layers)
    assert rates == {"conv1": 0.1, "conv2": 0.1, "fc1": 0.2, "fc2": 0.2, "output": 0.1}
    assert list(rates) == ["conv1", "conv2", "fc1", "fc2", "output"]


def test_lth_prune_rates_custom_rates_and_conv_output():
    model = lth_like_model()
    rates = schedules.lth_prune_rates(model.layers, dense_rate=0.3, conv_rate=0.15, output_rate_factor=1.0)
    assert rates == {"conv1": 0.15, "conv2": 0.15, "fc1": 0.3, "fc2": 0.3, "output": 0.3}
    conv_only = schedules.lth_prune_rates(model.layers[:3])  # the last prunable layer is a conv
    assert conv_only == {"conv1": 0.1, "conv2": 0.05}
    assert schedules.lth_prune_rates([model.get_layer("bn1"), model.get_layer("flatten")]) == {}


def test_lth_prune_rates_see_through_wrappers():
    pruned = wrappers.prune_low_magnitude(lth_like_model())
    assert schedules.lth_prune_rates(pruned.layers) == {
        "conv1": 0.1, "conv2": 0.1, "fc1": 0.2, "fc2": 0.2, "output": 0.1,
    }


@pytest.mark.parametrize(
    "kwargs", [{"dense_rate": 1.0}, {"dense_rate": -0.2}, {"conv_rate": 1.5}, {"conv_rate": float("nan")}]
)
def test_lth_prune_rates_bad_rates_raise(kwargs):
    with pytest.raises(ValueError):
        schedules.lth_prune_rates(lth_like_model().layers, **kwargs)


@pytest.mark.parametrize("factor", [-0.5, 6.0])
def test_lth_prune_rates_bad_output_factor_raises(factor):
    with pytest.raises(ValueError):
        schedules.lth_prune_rates(lth_like_model().layers, output_rate_factor=factor)


def test_gradual_fires_on_its_steps_and_reaches_the_target_exactly():
    schedule = schedules.Gradual(0.9, begin_step=10, frequency=5, updates=4)
    fired = [step for step in range(60) if bool(schedule(step)[0])]
    assert fired == [10, 15, 20, 25, 30] and schedule.end_step == 30
    expected = [0.9 * (1 - (1 - k / 4) ** 3) for k in range(5)]
    assert [schedule.exact_sparsity(step) for step in fired] == pytest.approx(expected)
    assert schedule.exact_sparsity(30) == 0.9  # exactly, not float32's 0.9 approximation
    for step in fired:
        assert float(schedule(step)[1]) == pytest.approx(schedule.exact_sparsity(step), abs=1e-6)
    assert [schedules.next_prune_step(schedule, s) for s in (0, 10, 11, 30, 31)] == [10, 10, 15, 30, None]


@pytest.mark.parametrize("kwargs", [dict(target_sparsity=1.0), dict(frequency=0), dict(updates=0),
                                    dict(power=0), dict(begin_step=-1)])
def test_gradual_refuses_bad_arguments(kwargs):
    settings = dict(target_sparsity=0.5, begin_step=0, frequency=1, updates=1)
    settings.update(kwargs)
    with pytest.raises(ValueError):
        schedules.Gradual(**settings)
