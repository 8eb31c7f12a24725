"""Tests of `training.optimizers`: coupled L2 (PyTorch's weight_decay) and decoupled decay,
`make_optimizer`'s mapping, training under a distribution strategy, and the optimizer config."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import data
from keras_lottery import keras
from keras_lottery import training
from keras_lottery.sparsity import callbacks
from keras_lottery.training import optimizers

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(seed=0):
    """Dense -> BatchNorm -> Dense: biases and BN's gamma/beta are decayed too, as in PyTorch."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(6,)),
        keras.layers.Dense(5, name="fc"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Dense(3, name="out"),
    ])


def _batch():
    rng = np.random.default_rng(1)
    return rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int32)


def _train(optimizer, steps=3, l2_in_loss=0.0):
    """The trainable variables after `steps` updates; `l2_in_loss` adds wd / 2 * sum ||w||^2 to the loss."""
    model, (x, y) = _model(), _batch()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = _LOSS(y, model(x, training=True))
            if l2_in_loss:
                loss += l2_in_loss / 2 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in model.trainable_variables])
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return [v.numpy() for v in model.trainable_variables]


def _assert_all_close(got, expected):
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _assert_differ(got, expected):
    assert max(np.abs(a - b).max() for a, b in zip(got, expected)) > 1e-3


def test_coupled_l2_sgd_one_step_is_the_hand_computed_update():
    model, (x, y) = _model(), _batch()
    before = [v.numpy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = _LOSS(y, model(x, training=True))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    after = _train(optimizers.CoupledL2SGD(0.1, coupled_weight_decay=0.05), steps=1)
    _assert_all_close(after, [w - 0.1 * (g + 0.05 * w) for w, g in zip(before, gradients)])
    assert len(after) == 6  # fc, bn (gamma, beta) and out: kernels and biases all decayed


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_coupled_l2_sgd_is_sgd_on_the_loss_plus_the_l2_penalty(momentum, nesterov):
    coupled = _train(optimizers.CoupledL2SGD(0.1, momentum=momentum, nesterov=nesterov, coupled_weight_decay=0.05))
    _assert_all_close(coupled, _train(keras.optimizers.SGD(0.1, momentum=momentum, nesterov=nesterov), l2_in_loss=0.05))
    _assert_differ(coupled, _train(keras.optimizers.SGD(0.1, momentum=momentum, nesterov=nesterov)))


def test_coupled_l2_adam_is_adam_on_the_loss_plus_the_l2_penalty():
    coupled = _train(optimizers.CoupledL2Adam(0.01, coupled_weight_decay=0.5))
    _assert_all_close(coupled, _train(keras.optimizers.Adam(0.01), l2_in_loss=0.5))


def test_decoupled_decay_is_tf_keras_weight_decay_and_differs_from_coupled_with_adam():
    config = _recipe(optimizer="sgd", weight_decay=0.05, weight_decay_mode="decoupled")
    model, (x, y) = _model(), _batch()
    before = [v.numpy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = _LOSS(y, model(x, training=True))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    # tf_keras: variable -= variable * wd * lr, then the gradient step (gradient taken before).
    _assert_all_close(_train(optimizers.make_optimizer(config, 10, 100), steps=1),
                      [w - 0.1 * 0.05 * w - 0.1 * g for w, g in zip(before, gradients)])
    adam = dataclasses.replace(config, optimizer="adam", learning_rate=0.01, weight_decay=0.5)
    decoupled = _train(optimizers.make_optimizer(adam, 10, 100))
    _assert_all_close(decoupled, _train(keras.optimizers.Adam(0.01, weight_decay=0.5)))
    coupled = optimizers.make_optimizer(dataclasses.replace(adam, weight_decay_mode="l2"), 10, 100)
    _assert_differ(decoupled, _train(coupled))


def test_sparse_gradients_get_the_dense_l2_term():
    variable = tf.Variable(np.arange(8, dtype=np.float32).reshape(4, 2))
    sparse = tf.IndexedSlices(tf.ones((3, 2)), tf.constant([1, 3, 1]))
    expected = 0.5 * variable.numpy() + np.array([[0, 0], [2, 2], [0, 0], [1, 1]], np.float32)
    np.testing.assert_allclose(optimizers.with_l2(sparse, variable, 0.5).numpy(), expected)


def _recipe(**fields):
    return training.TrainingConfig(**{"learning_rate": 0.1, **fields}).resolved()


@pytest.mark.parametrize("fields, kind, settings", [
    (dict(), keras.optimizers.Adam, dict(weight_decay=None)),
    (dict(weight_decay=1e-4), optimizers.CoupledL2Adam, dict(coupled_weight_decay=1e-4, weight_decay=None)),
    (dict(optimizer="sgd", momentum=0.8, nesterov=True), keras.optimizers.SGD, dict(momentum=0.8, nesterov=True)),
    (dict(optimizer="sgd", momentum=0.5, weight_decay=5e-4), optimizers.CoupledL2SGD,
     dict(momentum=0.5, coupled_weight_decay=5e-4)),
    (dict(optimizer="momentum", weight_decay=1e-3, weight_decay_mode="decoupled"), keras.optimizers.SGD,
     dict(momentum=0.9, nesterov=False, weight_decay=1e-3)),
])
def test_make_optimizer_maps_the_recipe(fields, kind, settings):
    optimizer = optimizers.make_optimizer(_recipe(**fields), 10, 100)
    assert type(optimizer) is kind
    config = optimizer.get_config()
    assert {key: config[key] for key in settings} == pytest.approx(settings)
    assert isinstance(optimizers.schedule_of(optimizer), training.RecipeSchedule)


@pytest.mark.parametrize("fields", [
    dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4, lr_schedule="step", lr_milestones="1ep",
         warmup="2it"),
    dict(weight_decay=1e-4, lr_schedule="cosine"),
    dict(optimizer="momentum", weight_decay=1e-3, weight_decay_mode="decoupled"),
])
def test_the_optimizer_config_round_trips_through_json(fields):
    optimizer = optimizers.make_optimizer(_recipe(**fields), 10, 100)
    again = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(optimizer))))
    assert type(again) is type(optimizer) and again.get_config() == optimizer.get_config()


def _learning_rates(model, x, y, epochs):
    """(iteration, learning rate of that update) for each step of a fit."""
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(
        (int(model.optimizer.iterations.numpy()) - 1, float(model.optimizer.learning_rate.numpy()))))
    model.fit(data.to_dataset(x, y, 8, shuffle_seed=0, repeat=True), epochs=epochs, steps_per_epoch=4, verbose=0,
              callbacks=[record])
    return seen


@pytest.mark.parametrize("strategy", [lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
                                      lambda: tf.distribute.MirroredStrategy(["/cpu:0"])],
                         ids=["one_device", "mirrored"])
def test_a_made_optimizer_trains_under_a_strategy_and_follows_the_schedule(tiny, strategy):
    config = _recipe(optimizer="sgd", momentum=0.9, weight_decay=1e-4, lr_schedule="step", lr_milestones="1ep,6it",
                     lr_gamma=0.5, warmup="2it")
    x, y = tiny.make_data(32)
    strategy = strategy()
    with strategy.scope():
        model = tiny.build_dense()
        training.compile_for_training(model, optimizers.make_optimizer(config, 4, 8))
    assert strategy.extended.variable_created_in_scope(optimizers.schedule_of(model.optimizer)._start_step)
    expected = {0: 0.0, 1: 0.05, 2: 0.1, 3: 0.1, 4: 0.05, 5: 0.05, 6: 0.025, 7: 0.025}  # milestones at 4 and 6
    seen = _learning_rates(model, x, y, epochs=2)
    assert [it for it, _ in seen] == list(range(8))
    np.testing.assert_allclose([lr for _, lr in seen], [expected[it] for it, _ in seen], rtol=1e-6)
    # A later round rewound to iteration 5: the optimizer restarts, the schedule continues from 5.
    optimizers.schedule_of(model.optimizer).set_start_step(5)
    callbacks.reset_optimizer(model.optimizer)
    seen = _learning_rates(model, x, y, epochs=1)
    np.testing.assert_allclose([lr for _, lr in seen], [expected[it + 5] for it, _ in seen[:3]] + [0.025], rtol=1e-6)
    assert np.all(np.isfinite(model.get_weights()[0]))


def test_compile_for_training_takes_a_name_or_an_instance(tiny):
    model = tiny.build_dense()
    training.compile_for_training(model, "momentum", 0.05)
    assert type(model.optimizer) is keras.optimizers.SGD and model.optimizer.get_config()["momentum"] == 0.9
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    instance = optimizers.CoupledL2SGD(0.1, coupled_weight_decay=1e-3)
    training.compile_for_training(model, instance, steps_per_execution=2)
    assert model.optimizer is instance
    with pytest.raises(ValueError, match="an optimizer instance carries its own learning rate"):
        training.compile_for_training(model, instance, 0.1)
    with pytest.raises(ValueError, match=r"compile_for_training\(optimizer='adam'\) needs a learning_rate"):
        training.compile_for_training(model, "adam")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        training.compile_for_training(model, "rmsprop", 0.1)


def test_coupled_weight_decay_is_checked():
    with pytest.raises(ValueError, match="coupled_weight_decay must be a finite number >= 0; got -1"):
        optimizers.CoupledL2SGD(0.1, coupled_weight_decay=-1)
