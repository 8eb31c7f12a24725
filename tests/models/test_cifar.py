"""Tests of OpenLTH's CIFAR ResNets and VGGs (models/cifar.py) and their registry entries.

Parameter counts are computed here from the architecture, independently of the
model code; full-size networks are only built (cheap), and the one that trains is a
4-filter ResNet-8.
"""

import math

import numpy as np
import pytest

from keras_lottery import keras
from keras_lottery import models
from keras_lottery.models import cifar
from keras_lottery.sparsity import pruning, wrappers

RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet20_w32", "resnet20_w64",
           "resnet20_fixed_bn", "resnet56_fixed_bn")
VGGS = ("vgg11", "vgg13", "vgg16", "vgg19")


def _kernel_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.fixture(scope="module")
def resnet20():
    return models.build("resnet20", (32, 32, 3), 10, seed=0)


def resnet_param_count(depth, width, channels, classes):
    """(trainable, non-trainable) of OpenLTH's cifar_resnet: convs without bias, BN after each, 1x1 shortcuts."""
    blocks = (depth - 2) // 6
    kernels, bn_channels = 9 * channels * width, width  # stem
    current = width
    for filters in (width, 2 * width, 4 * width):
        for _ in range(blocks):
            kernels += 9 * current * filters + 9 * filters * filters
            bn_channels += 2 * filters
            if current != filters:  # the projection shortcut
                kernels += current * filters
                bn_channels += filters
            current = filters
    return kernels + current * classes + classes + 2 * bn_channels, 2 * bn_channels


def vgg_param_count(plan, channels, classes):
    """(conv kernels + biases, BN trainable, BN moving statistics, output layer) of OpenLTH's cifar_vgg on 32x32."""
    convs, bn_channels, current = 0, 0, channels
    for spec in plan:
        if spec != "M":
            convs += 9 * current * spec + spec
            bn_channels += spec
            current = spec
    return convs, 2 * bn_channels, 2 * bn_channels, current * classes + classes


def _count(weights):
    return sum(int(np.prod(weight.shape)) for weight in weights)


def test_resnet20_parameter_count(resnet20):
    trainable, frozen = resnet_param_count(20, 16, 3, 10)
    assert (_count(resnet20.trainable_weights), _count(resnet20.non_trainable_weights)) == (trainable, frozen)
    assert trainable == 272_474
    assert round(trainable / 1e6, 2) == 0.27  # He et al. (2016), Table 6: ResNet-20 has 0.27M parameters
    # 20 weight layers: stem, 18 block convs, the output layer (plus 2 projection shortcuts).
    kernels = _kernel_layers(resnet20)
    assert len([layer for layer in kernels if "shortcut" not in layer.name]) == 20
    assert [layer.name for layer in kernels if "shortcut" in layer.name] == [
        "stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"]
    assert not any(layer.use_bias for layer in kernels if isinstance(layer, keras.layers.Conv2D))


def test_wide_resnet_parameter_count():
    model = cifar.resnet(20, width=32)((32, 32, 3), 100)
    assert model.name == "resnet20_w32"
    assert _count(model.trainable_weights) == resnet_param_count(20, 32, 3, 100)[0]
    assert model.get_layer("output").kernel.shape == (128, 100)


def test_vgg16_parameter_count():
    model = models.build("vgg16", (32, 32, 3), 10, seed=0)
    convs, bn, moving, output = vgg_param_count(cifar.VGG_PLANS[16], 3, 10)
    assert convs == 14_714_688  # the 13 convs of VGG-16 (Keras's VGG16(include_top=False) has exactly these)
    assert _count(model.trainable_weights) == convs + bn + output
    assert _count(model.non_trainable_weights) == moving
    assert round((convs + bn + output) / 1e6, 1) == 14.7
    assert model.get_layer("output").kernel.shape == (512, 10)  # OpenLTH's Linear(512, outputs)


@pytest.mark.parametrize("name, convs, pools", [("vgg11", 8, 4), ("vgg13", 10, 4), ("vgg16", 13, 4), ("vgg19", 16, 4)])
def test_vgg_layer_plans(name, convs, pools):
    model = models.build(name, (32, 32, 3), 10, seed=0)
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]) == convs
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]) == convs
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]) == pools
    assert model.get_layer("avg_pool").output_shape == (None, 1, 1, 512)
    assert [layer.name for layer in _kernel_layers(model)][-1] == "output"


@pytest.mark.parametrize("name", RESNETS + VGGS)
def test_registered_models_output_logits_per_class(name):
    model = models.build(name, (32, 32, 3), 10, seed=0)
    assert model.name == name
    assert model.output_shape == (None, 10)
    assert model.layers[-1].name == "output" and model.layers[-1].activation is keras.activations.linear
    assert len({layer.name for layer in model.layers}) == len(model.layers)


def test_resnet20_runs_on_cifar_and_fashion_mnist_shapes(resnet20):
    logits = resnet20(np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32"), training=False)
    assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
    fashion = models.build("resnet20", (28, 28, 1), 10, seed=0)
    assert fashion(np.zeros((2, 28, 28, 1), "float32"), training=False).shape == (2, 10)
    assert fashion.get_layer("stage3_block3_relu").output_shape == (None, 7, 7, 64)


def test_stride_two_stages_halve_the_spatial_size(resnet20):
    sizes = [resnet20.get_layer(f"stage{stage}_block3_relu").output_shape for stage in (1, 2, 3)]
    assert sizes == [(None, 32, 32, 16), (None, 16, 16, 32), (None, 8, 8, 64)]


def test_stride_two_conv_samples_the_positions_of_its_shortcut(resnet20):
    # PyTorch pads 1 on every side: output (i, j) of the 3x3 stride-2 conv is centred on input
    # (2i, 2j), the pixel the 1x1 stride-2 shortcut reads. Keras's 'same' would centre it on (2i+1, 2j+1).
    block_input = resnet20.get_layer("stage1_block3_relu").output
    conv = resnet20.get_layer("stage2_block1_conv1")
    probe = keras.Model(block_input, conv.output)
    kernel = np.zeros(conv.kernel.shape, "float32")
    kernel[1, 1, 0, 0] = 1.0  # the centre tap copies input channel 0
    saved = conv.get_weights()
    conv.set_weights([kernel])
    try:
        x = np.random.default_rng(1).normal(size=(1, 32, 32, 16)).astype("float32")
        np.testing.assert_allclose(probe(x).numpy()[0, :, :, 0], x[0, ::2, ::2, 0])
    finally:
        conv.set_weights(saved)


@pytest.mark.parametrize("depth", [21, 2, 18, 19, 0])
def test_bad_resnet_depth_is_refused(depth):
    with pytest.raises(ValueError, match=rf"ResNet depth {depth} is invalid: it must be 6n\+2 with n >= 1"):
        cifar.resnet(depth)


def test_bad_vgg_depth_and_small_inputs_are_refused():
    with pytest.raises(ValueError, match=r"VGG depth 12 is invalid: choose one of \[11, 13, 16, 19\]"):
        cifar.vgg(12)
    with pytest.raises(ValueError, match=r"vgg11 takes images of at least 32x32"):
        cifar.vgg(11)((28, 28, 1), 10)
    with pytest.raises(ValueError, match=r"ResNet width must be a positive integer"):
        cifar.resnet(20, width=0)


def test_kernels_are_untruncated_kaiming_normal(resnet20):
    kernel = resnet20.get_layer("stage3_block2_conv1").kernel.numpy()  # 3x3x64x64: 36,864 weights
    sigma = math.sqrt(2.0 / (3 * 3 * 64))
    assert abs(kernel.std() / sigma - 1) < 0.03
    assert abs(kernel.mean()) < 0.05 * sigma
    # A truncated normal (Keras's 'truncated_normal') stays within about 2.3 target sigmas.
    assert np.abs(kernel).max() > 3 * sigma
    dense = resnet20.get_layer("output").kernel.numpy()  # fan_in 64: PyTorch's kaiming_normal_ on Linear too
    assert abs(dense.std() / math.sqrt(2.0 / 64) - 1) < 0.15


def test_biases_are_pytorch_default_uniform(resnet20):
    bias = resnet20.get_layer("output").bias.numpy()
    assert np.all(np.abs(bias) <= 1 / math.sqrt(64)) and np.any(bias != 0)
    vgg = cifar.vgg(11)((32, 32, 3), 10)
    conv_bias = vgg.get_layer("conv5_2").bias.numpy()  # 512 biases, fan_in 3*3*512
    bound = 1 / math.sqrt(9 * 512)
    assert np.all(np.abs(conv_bias) <= bound) and conv_bias.max() > 0.8 * bound and conv_bias.min() < -0.8 * bound


def test_batch_norm_is_openlth_uniform_with_pytorch_statistics(resnet20):
    norms = [layer for layer in resnet20.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 21
    gammas = np.concatenate([layer.gamma.numpy() for layer in norms])
    assert gammas.min() >= 0 and gammas.max() < 1 and len(np.unique(gammas)) > len(gammas) // 2
    assert 0.4 < gammas.mean() < 0.6  # U[0, 1): mean 1/2 over 1,568 values
    assert all(not np.any(layer.beta.numpy()) for layer in norms)
    assert {(layer.momentum, layer.epsilon) for layer in norms} == {(0.9, 1e-5)}


def test_fixed_batch_norm_init_starts_every_gamma_at_one_and_changes_nothing_else(resnet20):
    fixed = models.build("resnet20_fixed_bn", (32, 32, 3), 10, seed=0)
    assert fixed.name == "resnet20_fixed_bn" and fixed.count_params() == resnet20.count_params()
    for layer, reference in zip(fixed.layers, resnet20.layers):
        assert layer.name == reference.name
        if isinstance(layer, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(layer.gamma.numpy(), np.ones(layer.gamma.shape))
            assert not np.any(layer.beta.numpy()) and (layer.momentum, layer.epsilon) == (0.9, 1e-5)
    with pytest.raises(ValueError, match="batchnorm_init must be one of"):
        cifar.resnet(20, batchnorm_init="ones")


def test_registry_build_is_seeded():
    def weights(seed):
        return models.build("resnet20", (32, 32, 3), 10, seed=seed).get_weights()

    first, again, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    trainable_differ = [not np.array_equal(a, b) for a, b in zip(first, other) if np.unique(a).size > 1]
    assert trainable_differ and all(trainable_differ)


@pytest.mark.parametrize("name", RESNETS + VGGS)
def test_registry_carries_openlth_cifar_recipe(name):
    spec = models.get(name)
    recipe = (spec.optimizer, spec.learning_rate, spec.batch_size, spec.iterations, spec.epochs, spec.momentum,
              spec.nesterov, spec.weight_decay, spec.weight_decay_mode, spec.lr_schedule, spec.lr_milestones,
              spec.lr_gamma, spec.warmup, spec.strategy)
    assert recipe == ("sgd", 0.1, 128, None, 160, 0.9, False, 1e-4, "l2", "step", "80ep,120ep", 0.1, "", "global")
    assert spec.layers_to_ignore == (("output",) if name.startswith("vgg") else ())


def test_wrapper_wraps_every_conv_and_the_dense(resnet20):
    wrapped = wrappers.prune_low_magnitude(resnet20)
    names = [name for name, *_ in wrappers.pruning_entries(wrapped)]
    expected = [layer.name for layer in _kernel_layers(resnet20)]
    assert len(expected) == 22 and sorted(names) == sorted(expected)


def test_global_magnitude_pruning_keeps_half_across_layers(resnet20):
    wrapped = wrappers.prune_low_magnitude(resnet20)
    masks = pruning.prune(wrapped, 0.5, "global", "magnitude", np.random.default_rng(0))
    total = sum(mask.size for mask in masks.values())
    kept = sum(int(mask.sum()) for mask in masks.values())
    assert abs(kept - total / 2) <= 1
    per_layer = {name: mask.mean() for name, mask in masks.items()}
    assert max(per_layer.values()) - min(per_layer.values()) > 0.1  # ranked together, not layer by layer


def test_pruned_tiny_resnet_trains_a_step():
    keras.utils.set_random_seed(0)
    model = cifar.resnet(8, width=4)((32, 32, 3), 10)
    assert model.name == "resnet8_w4"
    wrapped = wrappers.prune_low_magnitude(model)
    pruning.prune(wrapped, 0.5, "global", "magnitude", np.random.default_rng(0))
    masks = wrappers.get_masks(wrapped)
    before = {name: weight.numpy() for name, _, weight, _ in wrappers.pruning_entries(wrapped)}
    wrapped.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 32, 32, 3)).astype("float32"), rng.integers(0, 10, size=4)
    history = wrapped.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for name, _, weight, _ in wrappers.pruning_entries(wrapped):
        after = weight.numpy()
        assert not np.any(after[masks[name] == 0]), name  # pruned weights stay exactly 0
        assert not np.array_equal(after, before[name]), name  # the others trained


def test_the_synchronized_batch_norm_copy_keeps_its_weights_and_wraps_like_batch_norm():
    from keras_lottery.models import registry  # noqa: PLC0415
    from keras_lottery.sparsity import wrappers  # noqa: PLC0415

    plain = registry.build("resnet20", (32, 32, 3), 10, seed=0)
    synchronized = registry.build("resnet20", (32, 32, 3), 10, seed=0, synchronized_batch_norm=True)
    for got, want in zip(synchronized.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(got, want)
    norms = [layer for layer in synchronized.layers if isinstance(layer, registry.SynchronizedBatchNormalization)]
    assert len(norms) == 21 and all(layer.synchronized for layer in norms)
    wrapped = wrappers.prune_low_magnitude(synchronized)  # every layer tfmot prunes; BatchNorm left as it is
    assert {name for name, _, _, _ in wrappers.pruning_entries(wrapped)} == {
        name for name, _, _, _ in wrappers.pruning_entries(wrappers.prune_low_magnitude(plain))}
    assert sum(isinstance(layer, registry.SynchronizedBatchNormalization) and layer.synchronized
               for layer in wrapped.layers) == 21  # still synchronized after tfmot's clone
