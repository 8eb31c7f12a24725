"""Tests for keras_lottery.fusion.structured: removing units gives the narrower network."""

import numpy as np
import pytest

import keras_lottery
from keras_lottery import keras
from keras_lottery import models


def _randomize_batch_norms(model, seed=0):
    """Non-trivial BatchNorm parameters and statistics, so slicing them has to be right."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([(gamma + rng.normal(size=gamma.shape)).astype(np.float32),
                               rng.normal(size=beta.shape).astype(np.float32),
                               rng.normal(size=mean.shape).astype(np.float32),
                               (variance + rng.random(variance.shape)).astype(np.float32)])


def _silence(model, name, units):
    """Makes units output exactly 0: their kernel slice and bias (or their BN gamma and beta) set to 0."""
    layer = model.get_layer(name)
    weights = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
        weights[0][units] = 0.0  # gamma
        weights[1][units] = 0.0  # beta
    else:
        weights[0][..., units] = 0.0
        if len(weights) > 1:
            weights[1][units] = 0.0
    layer.set_weights(weights)


def test_removing_batch_norm_channels_equals_silencing_them():
    # conv -> BN -> ReLU: a channel with gamma = beta = 0 outputs ReLU(0) = 0, which is what removal drops.
    model = models.build("conv2_bn", (12, 12, 1), 10, seed=0)
    _randomize_batch_norms(model)
    removed = {"bn1_1": [0, 5, 9], "bn1_2": list(range(0, 64, 2))}
    narrow = keras_lottery.remove_units(model, removed)
    assert narrow.get_layer("conv1_1").filters == 61 and narrow.get_layer("conv1_2").filters == 32
    assert narrow.get_layer("bn1_2").gamma.shape == (32,)
    assert narrow.get_layer("fc1").kernel.shape == (6 * 6 * 32, 256)
    x = np.random.default_rng(1).normal(size=(8, 12, 12, 1)).astype(np.float32)
    before = model.predict(x, verbose=0)
    for name, units in removed.items():
        _silence(model, name, units)
    silenced = model.predict(x, verbose=0)
    assert np.max(np.abs(before - silenced)) > 1e-2  # the removed channels mattered
    np.testing.assert_allclose(narrow.predict(x, verbose=0), silenced, atol=1e-4)


def test_removing_dense_units_by_producer_name_and_the_input_is_unchanged():
    model = models.build("lenet_300_100", (28, 28), 10, seed=0)
    original = [weight.copy() for weight in model.get_weights()]
    narrow = keras_lottery.remove_units(model, {"fc1": np.arange(100), "fc2": [3, 3, 7]})  # duplicates count once
    assert narrow.get_layer("fc1").units == 200 and narrow.get_layer("fc2").units == 98
    assert narrow.get_layer("fc2").kernel.shape == (200, 98)
    for before, after in zip(original, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    x = np.random.default_rng(2).random((4, 28, 28)).astype(np.float32)
    _silence(model, "fc1", np.arange(100))
    _silence(model, "fc2", [3, 7])
    np.testing.assert_allclose(narrow.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)


def test_wrapped_models_are_narrowed_to_plain_models():
    pruned = keras_lottery.prune_low_magnitude(models.build("lenet_300_100", (28, 28), 10, seed=0),
                                               pruning_schedule=keras_lottery.OneShot(0.0))
    narrow = keras_lottery.remove_units(pruned, {"fc2": [0]})
    assert narrow.get_layer("fc2").units == 99
    assert not keras_lottery.wrappers.prunable_wrappers(narrow)


@pytest.mark.parametrize("removed, message", [
    ({"nope": [0]}, "does not have"),
    ({"pool1": [0]}, "does not name units"),
    ({"conv1_1": [64]}, "outside 0..63"),
    ({"conv1_1": [-1]}, "outside 0..63"),
    ({"bn1_1": list(range(64))}, "removes all 64 units"),
    ({"output": [0]}, "cannot be removed: its output is a model output"),
    ({"conv1_1": [0], "bn1_1": [1]}, "named twice"),
])
def test_bad_removals_are_refused_before_any_edit(removed, message):
    model = models.build("conv2_bn", (12, 12, 1), 10, seed=0)
    with pytest.raises(ValueError, match=message):
        keras_lottery.remove_units(model, removed)


def test_removed_units_must_be_a_dict():
    with pytest.raises(TypeError, match="dict"):
        keras_lottery.remove_units(models.build("lenet_300_100", (28, 28), 10, seed=0), [0, 1])


def test_removable_unit_layers_leaves_out_what_feeds_an_add_or_an_output():
    model = models.build("resnet20", (8, 8, 1), 10, seed=0)
    batch_norms = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    removable = keras_lottery.fusion.removable_unit_layers(model, batch_norms)
    # Only each block's first convolution (through its BN) can narrow: the others feed the blocks' Adds.
    assert removable == [name for name in batch_norms if name.endswith("_bn1")] and len(removable) == 9
    convolutions = [layer.name for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert keras_lottery.fusion.removable_unit_layers(model, convolutions) == [
        name for name in convolutions if name.endswith("_conv1")]
    # What it keeps, remove_units takes; what it leaves out, remove_units refuses.
    narrow = keras_lottery.remove_units(model, {name: [0] for name in removable})
    assert narrow.get_layer("stage1_block1_conv1").filters == 15
    left_out = sorted(set(batch_norms) - set(removable))[0]
    with pytest.raises(ValueError, match="feeds Add.*removable_unit_layers"):
        keras_lottery.remove_units(model, {left_out: [0]})
    with pytest.raises(ValueError, match="'nope' is not in the model"):
        keras_lottery.fusion.removable_unit_layers(model, ["nope"])
