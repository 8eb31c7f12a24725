"""Tests of models/scaling.py: width scaling and RigL's Small-Dense baseline.

Counts are checked against closed forms of the architectures (LeNet-300-100's kernels are
784a + ab + 10b for hidden widths a, b), and the factor search against a brute-force scan.
"""

import math

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery import models
from keras_lottery.models import scaling

LENET_KERNELS = 784 * 300 + 300 * 100 + 100 * 10  # 266,200


def _half_up(x):
    return max(1, math.floor(x + 0.5))


def _lenet_kernels(factor):
    a, b = _half_up(300 * factor), _half_up(100 * factor)
    return 784 * a + a * b + b * 10


@pytest.fixture(scope="module")
def lenet():
    return models.build("lenet_300_100", (28, 28, 1), 10, seed=0)


def _kernel_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]


def test_lenet_small_dense_at_density_0_1_is_the_nearest_network(lenet):
    small, factor = scaling.small_dense(lenet, 0.1, seed=0)
    count = scaling.kernel_count(small)
    assert [layer.units for layer in _kernel_layers(small)] == [_half_up(300 * factor), _half_up(100 * factor), 10]
    assert count == _lenet_kernels(factor)  # the closed form of the network built
    assert abs(count - 0.1 * LENET_KERNELS) <= 0.02 * 0.1 * LENET_KERNELS
    # No factor on a fine scan gives a network nearer the target.
    scan = min(abs(_lenet_kernels(f) - 0.1 * LENET_KERNELS) for f in np.arange(0.05, 0.2, 1e-4))
    assert abs(count - 0.1 * LENET_KERNELS) == scan
    assert small(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("name, density", [("conv2", 0.2), ("resnet20", 0.1)])
def test_scaled_conv_nets_build_run_and_meet_their_target(name, density):
    model = models.build(name, (32, 32, 3), 10, seed=0)
    small, factor = scaling.small_dense(model, density, seed=1)
    target = density * scaling.kernel_count(model)
    assert abs(scaling.kernel_count(small) - target) <= 0.03 * target
    for original, scaled in zip(_kernel_layers(model), _kernel_layers(small)):
        assert original.name == scaled.name
        width = original.units if isinstance(original, keras.layers.Dense) else original.filters
        new = scaled.units if isinstance(scaled, keras.layers.Dense) else scaled.filters
        assert new == (10 if original.name == "output" else _half_up(width * factor)), original.name
    out = small(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32))
    assert out.shape == (2, 10) and np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name, shape", [("lenet_300_100", (28, 28, 1)), ("conv2_bn", (32, 32, 3)),
                                         ("resnet20", (32, 32, 3))])
def test_factor_one_reproduces_the_architecture(name, shape):
    model = models.build(name, shape, 10, seed=0)
    copy = scaling.scale_width(model, 1, seed=0)
    assert [(w.name, w.shape) for w in copy.weights] == [(w.name, w.shape) for w in model.weights]
    assert [type(layer) for layer in copy.layers] == [type(layer) for layer in model.layers]


def test_weights_are_fresh_and_seeded(lenet):
    first, second = (scaling.scale_width(lenet, 0.5, seed=7) for _ in range(2))
    other = scaling.scale_width(lenet, 0.5, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])
    assert first.layers[1].kernel is not lenet.layers[1].kernel


def test_vgg11_scales_and_pytorch_biases_follow_the_new_fan_in():
    model = models.build("vgg11", (32, 32, 3), 10, seed=0)
    small = scaling.scale_width(model, 0.25, seed=0)
    layers = {layer.name: layer for layer in small.layers}
    assert layers["conv1_1"].filters == 16 and layers["conv5_2"].filters == 128 and layers["output"].units == 10
    for name, fan_in in (("conv1_1", 27), ("conv2_1", 9 * 16), ("output", 128)):
        bias = layers[name].get_config()["bias_initializer"]["config"]
        assert bias["maxval"] == pytest.approx(1 / math.sqrt(fan_in)) and bias["minval"] == -bias["maxval"]
        assert np.abs(layers[name].bias.numpy()).max() <= 1 / math.sqrt(fan_in)
    assert small(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)


def test_width_for_parameters_with_another_count(lenet):
    target = 50_000
    factor, achieved = scaling.width_for_parameters(lenet, target, count=lambda m: m.count_params())
    assert scaling.scale_width(lenet, factor, seed=0).count_params() == achieved
    a, b = _half_up(300 * factor), _half_up(100 * factor)
    assert achieved == _lenet_kernels(factor) + a + b + 10  # plus the biases
    assert abs(achieved - target) < 0.02 * target


@pytest.mark.parametrize("factor", [0, -0.5, float("nan"), float("inf"), True, "1"])
def test_bad_factor_raises(lenet, factor):
    with pytest.raises(ValueError, match="factor"):
        scaling.scale_width(lenet, factor, seed=0)


@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan"), None])
def test_bad_density_raises(lenet, density):
    with pytest.raises(ValueError, match="density"):
        scaling.small_dense(lenet, density, seed=0)


def test_wrapped_and_unbuilt_models_are_refused(lenet):
    with pytest.raises(ValueError, match="strip_pruning"):
        scaling.scale_width(kl.prune_low_magnitude(lenet), 0.5, seed=0)
    with pytest.raises(ValueError, match="not built"):
        scaling.scale_width(keras.Sequential([keras.layers.Dense(3)]), 0.5, seed=0)
    with pytest.raises(ValueError, match="target_parameters"):
        scaling.width_for_parameters(lenet, 0)
