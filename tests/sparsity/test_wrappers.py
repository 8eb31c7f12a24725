"""Tests of wrappers.py: wrapping, masks, prune(), training with masks, strip_pruning."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

Wrapper = wrappers.PruneLowMagnitude


def layer_types(model):
    return {layer.name: type(layer).__name__ for layer in model.layers}


def all_weights(model):
    return [w.copy() for w in model.get_weights()]


def plain_copy_with(model_builder, pruned, seed=0):
    """A plain (unwrapped) model of the same architecture whose kernels are weight * mask."""
    plain = model_builder(seed)
    for layer in pruned.layers:
        inner = getattr(layer, "layer", layer)
        if not inner.weights:
            continue
        values = inner.get_weights()
        if isinstance(layer, Wrapper):
            by_id = {id(weight): mask.numpy() for weight, mask, _ in layer.pruning_vars}
            values = [v * by_id[id(var)] if id(var) in by_id else v for var, v in zip(inner.weights, values)]
        plain.get_layer(inner.name).set_weights(values)
    return plain


# ----------------------------------------------------------------------------------------
# What gets wrapped.


def test_sequential_wraps_only_layers_with_kernels(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_conv())
    assert layer_types(pruned) == {
        "prune_low_magnitude_conv1": "PruneLowMagnitude",
        "bn": "BatchNormalization",
        "prune_low_magnitude_conv2": "PruneLowMagnitude",
        "pool": "MaxPooling2D",
        "flatten": "Flatten",
        "dropout": "Dropout",
        "prune_low_magnitude_out": "PruneLowMagnitude",
    }
    assert isinstance(pruned, keras.Sequential)
    assert list(kl.get_masks(pruned)) == ["conv1", "conv2", "out"]


def test_functional_model_with_a_branch(tiny):
    model = tiny.build_branch()
    pruned = kl.prune_low_magnitude(model)
    wrapped = sorted(layer.layer.name for layer in pruned.layers if isinstance(layer, Wrapper))
    assert wrapped == ["left", "out", "right"]
    assert isinstance(pruned.get_layer("add"), keras.layers.Add)
    assert isinstance(pruned.get_layer("flatten"), keras.layers.Flatten)
    x, _ = tiny.make_data(32)
    # Masks start at all ones: same function as the dense model.
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6)
    masks = kl.prune(pruned, 0.5)
    assert {name: int(mask.sum()) for name, mask in masks.items()} == {"left": 384, "right": 384, "out": 60}


def test_single_layer_is_wrapped_in_place():
    dense = keras.layers.Dense(3, name="single")
    wrapped = kl.prune_low_magnitude(dense, pruning_schedule=kl.OneShot(0.5))
    assert isinstance(wrapped, Wrapper)
    assert wrapped.layer is dense
    assert isinstance(wrapped.pruning_schedule, kl.OneShot)
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), wrapped])
    assert kl.get_masks(model)["single"].shape == (4, 3)
    # A layer with nothing to prune, asked for on its own, is wrapped as tfmot wraps it (its keyword
    # arguments, such as input_shape, go to the wrapper); in a model it stays unwrapped.
    flatten = keras.layers.Flatten()
    wrapped_flatten = kl.prune_low_magnitude(flatten, input_shape=(2, 3))
    assert isinstance(wrapped_flatten, kl.PruneLowMagnitude) and wrapped_flatten.layer is flatten
    assert keras.Sequential([wrapped_flatten]).output_shape == (None, 6)
    model = kl.prune_low_magnitude(keras.Sequential([keras.layers.InputLayer(input_shape=(2, 3)), keras.layers.Flatten()]))
    assert not isinstance(model.layers[0], kl.PruneLowMagnitude)


def test_list_of_layers():
    layers = [keras.layers.Flatten(name="f"), keras.layers.Dense(5, name="d1"), keras.layers.Dropout(0.1, name="dr"),
              keras.layers.Dense(3, name="d2")]
    result = kl.prune_low_magnitude(layers)
    assert [type(layer).__name__ for layer in result] == ["Flatten", "PruneLowMagnitude", "Dropout", "PruneLowMagnitude"]
    assert result[0] is layers[0] and result[1].layer is layers[1]
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(2, 2))] + result)
    masks = kl.prune(model, 0.5)
    assert {name: int(mask.sum()) for name, mask in masks.items()} == {"d1": 10, "d2": 8}


def test_biases_and_batchnorm_are_never_masked(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_conv())
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in pruned.layers}
    masks = kl.prune(pruned, 0.9)
    kernels = {name: weight for name, _, weight, _ in wrappers.pruning_entries(pruned)}
    for name, mask in masks.items():
        assert mask.shape == tuple(kernels[name].shape)
        assert "kernel" in kernels[name].name
    for layer in pruned.layers:
        inner = getattr(layer, "layer", layer)
        for variable, value in zip(inner.weights, before[layer.name]):
            if "kernel" not in variable.name:
                np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.name)
    bn = pruned.get_layer("bn")
    assert len(bn.get_weights()) == 4


def test_schedule_dict_prunes_only_named_layers(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_conv(), pruning_schedule={"conv2": kl.OneShot(0.5), "out": kl.OneShot(0.7)})
    assert isinstance(pruned.get_layer("conv1"), keras.layers.Conv2D)
    assert isinstance(pruned.get_layer("prune_low_magnitude_conv2"), Wrapper)
    assert pruned.get_layer("prune_low_magnitude_out").pruning_schedule.target_sparsity == 0.7
    assert list(kl.get_masks(pruned)) == ["conv2", "out"]


def test_schedule_dict_with_unknown_layer_raises(tiny):
    with pytest.raises(ValueError, match="fc9"):
        kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule={"fc1": kl.OneShot(0.5), "fc9": kl.OneShot(0.5)})


def test_schedule_callable_per_layer(tiny):
    pruned = kl.prune_low_magnitude(
        tiny.build_dense(), pruning_schedule=lambda layer: kl.OneShot(0.25) if layer.name == "out" else None
    )
    assert list(kl.get_masks(pruned)) == ["out"]


def test_unknown_layer_class_raises_clear_error():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.scale

    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), Scale(name="scale_me"), keras.layers.Dense(2, name="d")])
    with pytest.raises(ValueError, match="scale_me") as error:
        kl.prune_low_magnitude(model)
    assert "Scale" in str(error.value)
    # Naming only the known layers works and leaves the custom layer plain.
    pruned = kl.prune_low_magnitude(model, pruning_schedule={"d": kl.OneShot(0.5)})
    assert list(kl.get_masks(pruned)) == ["d"]


def test_custom_prunable_layer_is_masked():
    class MyDense(keras.layers.Layer, prunable_layer.PrunableLayer):
        def build(self, input_shape):
            self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 3), initializer="ones")

        def call(self, inputs):
            return tf.matmul(inputs, self.kernel)

        def get_prunable_weights(self):
            return [self.kernel]

    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), MyDense(name="mine")])
    pruned = kl.prune_low_magnitude(model, pruning_schedule={"mine": kl.OneShot(0.5)})
    kl.set_masks(pruned, {"mine": np.array([[1, 0, 0]] * 4, np.float32)})
    np.testing.assert_array_equal(pruned(np.ones((1, 4), np.float32)).numpy(), [[4.0, 0.0, 0.0]])


def test_bad_block_and_m_by_n_patterns_raise(tiny):
    with pytest.raises(ValueError, match="block_size must be two integers >= 1"):
        kl.prune_low_magnitude(tiny.build_dense(), block_size=(0, 2))
    with pytest.raises(ValueError, match="0 < m < n"):
        kl.prune_low_magnitude(tiny.build_dense(), sparsity_m_by_n=(4, 4))
    with pytest.raises(ValueError, match="pooling must be one of"):
        kl.prune_low_magnitude(tiny.build_dense(), block_size=(2, 2), block_pooling_type="MIN")
    with pytest.raises(ValueError, match="strategy='layerwise'"):
        kl.prune_low_magnitude(tiny.build_dense(), sparsity_m_by_n=(2, 4), strategy="global")


def test_unknown_strategy_raises(tiny):
    with pytest.raises(ValueError, match="strategy"):
        kl.prune_low_magnitude(tiny.build_dense(), strategy="per_layer")


def test_a_nested_subclassed_model_raises(tiny):
    class Inner(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    inner = Inner()
    inner(np.zeros((1, 8), np.float32))
    outer = keras.Sequential([keras.layers.InputLayer(input_shape=(8,)), inner])
    with pytest.raises(TypeError, match="subclassed model"):  # tfmot refuses those too
        kl.prune_low_magnitude(outer)


def test_wrapper_config_round_trip():
    wrapper = Wrapper(keras.layers.Dense(3, name="d"), pruning_schedule=kl.Iterative(0.2, 5, 3), strategy="global")
    rebuilt = Wrapper.from_config(wrapper.get_config())
    assert rebuilt.strategy == "global"
    assert isinstance(rebuilt.pruning_schedule, kl.Iterative)
    assert rebuilt.pruning_schedule.get_config() == wrapper.pruning_schedule.get_config()
    assert rebuilt.layer.units == 3 and rebuilt.layer.name == "d"


# ----------------------------------------------------------------------------------------
# The input model is left alone.


def test_input_model_is_not_modified_by_training_the_pruned_model(tiny):
    model = tiny.build_conv()
    before = all_weights(model)
    pruned = kl.prune_low_magnitude(model, pruning_schedule=kl.OneShot(0.5))
    inner_layers = {id(getattr(layer, "layer", layer)) for layer in pruned.layers}
    assert not inner_layers & {id(layer) for layer in model.layers}
    for layer in model.layers:  # same starting values
        copy = pruned.get_layer(layer.name) if layer.name in layer_types(pruned) else pruned.get_layer(
            "prune_low_magnitude_" + layer.name).layer
        for a, b in zip(layer.get_weights(), copy.get_weights()):
            np.testing.assert_array_equal(a, b)
    tiny.compile_model(pruned)
    x, y = tiny.make_data(64, (8, 8, 1))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kl.UpdateMasks()])
    assert all(layer.__class__.__name__ != "PruneLowMagnitude" for layer in model.layers)
    after = all_weights(model)
    assert len(after) == len(before)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # ... while the pruned copy did change.
    assert not np.array_equal(pruned.get_layer("prune_low_magnitude_out").layer.get_weights()[1], before[-1])


# ----------------------------------------------------------------------------------------
# prune(): counts and strategies.


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.2, 0.5, 0.8, 0.97])
def test_prune_gives_exact_counts_on_dense_and_conv(tiny, sparsity):
    pruned = kl.prune_low_magnitude(tiny.build_conv())
    masks = kl.prune(pruned, sparsity)
    sizes = {"conv1": 36, "conv2": 144, "out": 360}
    assert {name: int(mask.sum()) for name, mask in masks.items()} == {
        name: masks_lib.keep_count(size, sparsity) for name, size in sizes.items()
    }
    for name, (weight, mask) in tiny.raw_kernels(pruned).items():
        assert np.all(weight[mask == 0] == 0.0)
        assert np.count_nonzero(weight) == mask.sum()  # survivors keep their (non-zero) values


def test_prune_survivors_are_largest_magnitudes(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_dense())
    dense_kernels = {name: weight.copy() for name, (weight, _) in tiny.raw_kernels(pruned).items()}
    masks = kl.prune(pruned, 0.75)
    expected = masks_lib.compute({n: np.abs(w) for n, w in dense_kernels.items()}, 0.75)
    for name in masks:
        np.testing.assert_array_equal(masks[name], expected[name])


def test_prune_iteratively_gives_exact_round_counts(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_dense())
    for rounds in range(1, 8):
        masks = kl.prune(pruned, masks_lib.sparsity_after_rounds(0.2, rounds))
        assert int(masks["fc1"].sum()) == int(np.floor(1024 * 0.8**rounds + 0.5))
        assert int(masks["out"].sum()) == int(np.floor(160 * 0.8**rounds + 0.5))


def test_prune_global_vs_layerwise(tiny):
    def model_with_big(name):
        pruned = kl.prune_low_magnitude(tiny.build_dense())
        layer = pruned.get_layer(f"prune_low_magnitude_{name}").layer
        kernel, bias = layer.get_weights()
        layer.set_weights([np.sign(kernel) * (10.0 + np.abs(kernel)), bias])  # every |w| > 10 > the other layer's
        return pruned

    for big in ("fc1", "out"):
        layerwise = kl.prune(model_with_big(big), 0.5, "layerwise")
        assert {n: int(m.sum()) for n, m in layerwise.items()} == {"fc1": 512, "out": 80}
    # Global keeps 592 of 1184 weights, the big layer's first.
    glob = kl.prune(model_with_big("fc1"), 0.5, "global")
    assert {n: int(m.sum()) for n, m in glob.items()} == {"fc1": 592, "out": 0}
    glob = kl.prune(model_with_big("out"), 0.5, "global")
    assert {n: int(m.sum()) for n, m in glob.items()} == {"fc1": 432, "out": 160}


# ----------------------------------------------------------------------------------------
# Training with masks: schedules through UpdateMasks, fixed masks, exact zeros.


def mask_counts(model):
    return {name: int(mask.sum()) for name, mask in kl.get_masks(model).items()}


def fit_steps(tiny, model, steps, callbacks, batch_size=16, shape=(8, 8)):
    x, y = tiny.make_data(steps * batch_size, shape)
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)


SIZES = {"fc1": 1024, "out": 160}


def test_tfmot_constant_sparsity_through_update_masks(tiny):
    schedule = tfmot_schedule.ConstantSparsity(0.75, begin_step=2, end_step=-1, frequency=100)
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=schedule))
    recorder = tiny.StepRecorder(mask_counts)
    fit_steps(tiny, pruned, 8, [kl.UpdateMasks(), recorder])
    dense = {name: size for name, size in SIZES.items()}
    pruned_counts = {name: masks_lib.keep_count(size, 0.75) for name, size in SIZES.items()}
    assert recorder.log == [(0, dense), (1, dense)] + [(step, pruned_counts) for step in range(2, 8)]
    for weight, mask in tiny.raw_kernels(pruned).values():
        assert np.all(weight[mask == 0] == 0.0)


def test_tfmot_polynomial_decay_through_update_masks(tiny):
    schedule = tfmot_schedule.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12, frequency=4)
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=schedule))
    recorder = tiny.StepRecorder(kl.get_masks)
    fit_steps(tiny, pruned, 16, [kl.UpdateMasks(), recorder])
    previous = None
    for step, masks in recorder.log:
        last_fire = min(step // 4 * 4, 12)
        sparsity = float(schedule(tf.constant(last_fire, tf.int64))[1])
        for name, size in SIZES.items():
            assert int(masks[name].sum()) == masks_lib.keep_count(size, sparsity), (step, name)
            if previous is not None:
                assert np.all(masks[name] <= previous[name])
        previous = masks
    assert mask_counts(pruned) == {name: masks_lib.keep_count(size, 0.75) for name, size in SIZES.items()}
    assert recorder.log[3][1]["fc1"].sum() > recorder.log[4][1]["fc1"].sum()  # it did prune along the way


def test_masks_change_only_at_scheduled_steps_and_pruned_stay_zero(tiny):
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.Iterative(0.5, 3, 2)))

    def record(model):
        kernels = tiny.raw_kernels(model)
        for name, (weight, mask) in kernels.items():
            assert np.all(weight[mask == 0] == 0.0), name  # plain SGD: no optimizer state to move them
        return {name: mask for name, (_, mask) in kernels.items()}

    recorder = tiny.StepRecorder(record)
    fit_steps(tiny, pruned, 12, [kl.UpdateMasks(), recorder])
    log = dict(recorder.log)
    for start, stop in ((0, 3), (3, 6), (6, 12)):
        for step in range(start + 1, stop):
            for name in SIZES:
                np.testing.assert_array_equal(log[step][name], log[start][name], err_msg=f"{name} at {step}")
    for name, size in SIZES.items():
        assert log[0][name].sum() == size
        assert log[3][name].sum() == masks_lib.keep_count(size, 0.5)
        assert log[6][name].sum() == masks_lib.keep_count(size, 0.75)


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "adam_weight_decay": lambda: keras.optimizers.Adam(1e-2, weight_decay=0.1),
    "loss_scale_sgd_momentum": lambda: keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
}


def kernel_slots(optimizer, shape):
    return [v.numpy() for v in optimizer.variables if tuple(v.shape) == tuple(shape)]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_weights_exactly_zero_after_training_with_masks_set_mid_training(tiny, optimizer):
    model = tiny.build_dense()
    pruned = tiny.compile_model(kl.prune_low_magnitude(model, pruning_schedule=kl.OneShot(0.5, prune_step=5)),
                                OPTIMIZERS[optimizer]())
    fit_steps(tiny, pruned, 12, [kl.UpdateMasks()])
    assert int(pruned.optimizer.iterations.numpy()) == 12
    assert mask_counts(pruned) == {"fc1": 512, "out": 80}
    x, _ = tiny.make_data(16)
    for name, (weight, mask) in tiny.raw_kernels(pruned).items():
        assert np.all(weight[mask == 0] == 0.0), name
        assert np.count_nonzero(weight[mask == 1]) == mask.sum()
        # The masks were set after 5 steps, when the optimizer had state on these
        # weights: set_masks zeroed that state too, so it is still 0 after 7 more steps.
        slots = kernel_slots(pruned.optimizer, weight.shape)
        assert slots and all(np.all(slot[mask == 0] == 0) for slot in slots), name
        assert any(np.any(slot[mask == 1] != 0) for slot in slots), name
    plain = plain_copy_with(tiny.build_dense, pruned)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_pruned_weights_exactly_zero_after_fit_following_prune(tiny, optimizer):
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), kl.OneShot(0.0)), OPTIMIZERS[optimizer]())
    fit_steps(tiny, pruned, 4, [])  # non-zero optimizer state, dense
    kl.prune(pruned, 0.5)
    fit_steps(tiny, pruned, 4, [])
    for name, (weight, mask) in tiny.raw_kernels(pruned).items():
        assert np.all(weight[mask == 0] == 0.0), name


def test_pruned_weights_exactly_zero_during_training(tiny):
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5, 3)),
                                OPTIMIZERS["adam"]())
    recorder = tiny.StepRecorder(tiny.raw_kernels, at="end")
    fit_steps(tiny, pruned, 8, [kl.UpdateMasks(), recorder])
    for step, kernels in recorder.log:
        for name, (weight, mask) in kernels.items():
            assert np.all(weight[mask == 0] == 0.0), (step, name)


# ----------------------------------------------------------------------------------------
# Forward pass and strip_pruning.


@pytest.mark.parametrize("builder", ["build_dense", "build_conv", "build_branch"])
def test_pruned_outputs_equal_plain_model_with_masked_weights(tiny, builder):
    build = getattr(tiny, builder)
    pruned = kl.prune_low_magnitude(build())
    kl.prune(pruned, 0.6)
    # Make the raw pruned weights non-zero: inference (predict) must still use w * m.
    for _, _, weight, mask in wrappers.pruning_entries(pruned):
        weight.assign(weight + (1.0 - mask) * 5.0)
    plain = plain_copy_with(build, pruned)
    shape = (8, 8, 1) if builder == "build_conv" else (8, 8)
    x, _ = tiny.make_data(32, shape)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=0, atol=1e-6)
    unmasked = build()  # the same model without masks gives other outputs
    for layer in unmasked.layers:
        source = pruned.get_layer(layer.name) if layer.name in layer_types(pruned) else pruned.get_layer(
            "prune_low_magnitude_" + layer.name).layer
        layer.set_weights(source.get_weights())
    assert not np.allclose(unmasked.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-3)


@pytest.mark.parametrize("builder", ["build_dense", "build_conv", "build_branch"])
def test_strip_pruning(tiny, builder):
    build = getattr(tiny, builder)
    pruned = kl.prune_low_magnitude(build())
    kl.prune(pruned, 0.7)
    for _, _, weight, mask in wrappers.pruning_entries(pruned):
        weight.assign(weight + (1.0 - mask) * 3.0)  # raw values under the masks are not zero
    masks = kl.get_masks(pruned)
    stripped = kl.strip_pruning(pruned)

    def walk(model):
        return [layer for layer in model.layers]

    assert not any(isinstance(layer, tfmot_wrapper.PruneLowMagnitude) for layer in walk(stripped))
    assert sorted(layer.name for layer in walk(stripped)) == sorted(layer.name for layer in walk(build()))
    assert not any("mask" in w.name or "threshold" in w.name for w in stripped.weights)
    for name, mask in masks.items():
        kernel = stripped.get_layer(name).kernel.numpy()
        assert np.all(kernel[mask == 0] == 0.0)
        assert np.count_nonzero(kernel) == mask.sum()
    shape = (8, 8, 1) if builder == "build_conv" else (8, 8)
    x, _ = tiny.make_data(32, shape)
    before = pruned.predict(x, verbose=0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), before, rtol=0, atol=1e-6)
    # Independent: changing the stripped model leaves the pruned model alone, and vice versa.
    pruned_ids = {id(v) for v in pruned.weights}
    assert not any(id(v) in pruned_ids for v in stripped.weights)
    for variable in stripped.trainable_weights:
        variable.assign(tf.ones_like(variable))
    np.testing.assert_array_equal(pruned.predict(x, verbose=0), before)
    stripped_now = stripped.predict(x, verbose=0)
    for _, _, weight, _ in wrappers.pruning_entries(pruned):
        weight.assign(tf.zeros_like(weight))
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), stripped_now)


# ----------------------------------------------------------------------------------------
# set_masks.


def test_set_masks_assigns_and_zeroes(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_dense())
    rng = np.random.default_rng(0)
    new = {"fc1": (rng.random((64, 16)) < 0.3).astype(np.float32), "out": (rng.random((16, 10)) < 0.5).astype(np.float32)}
    kl.set_masks(pruned, new)
    for name, mask in kl.get_masks(pruned).items():
        np.testing.assert_array_equal(mask, new[name])
    for name, (weight, mask) in tiny.raw_kernels(pruned).items():
        assert np.all(weight[mask == 0] == 0.0)
        assert np.count_nonzero(weight) == mask.sum()
    kl.set_masks(pruned, {"fc1": new["fc1"].astype(bool), "out": new["out"].astype(np.int64)})  # any 0/1 dtype


@pytest.mark.parametrize(
    "masks, match",
    [
        ({"fc1": np.ones((64, 16))}, "prunable layers"),
        ({"fc1": np.ones((64, 16)), "out": np.ones((16, 10)), "extra": np.ones(3)}, "prunable layers"),
        ({"fc1": np.ones((64, 16)), "output": np.ones((16, 10))}, "prunable layers"),
        ({"fc1": np.ones((16, 64)), "out": np.ones((16, 10))}, "shape"),
        ({"fc1": np.ones((64, 16)), "out": np.ones((16, 10, 1))}, "shape"),
        ({"fc1": np.full((64, 16), 0.5), "out": np.ones((16, 10))}, "0 and 1"),
        ({"fc1": np.ones((64, 16)), "out": np.full((16, 10), 2.0)}, "0 and 1"),
        ({"fc1": -np.ones((64, 16)), "out": np.ones((16, 10))}, "0 and 1"),
    ],
)
def test_set_masks_rejects_bad_masks(tiny, masks, match):
    pruned = kl.prune_low_magnitude(tiny.build_dense())
    before = kl.get_masks(pruned)
    with pytest.raises(ValueError, match=match):
        kl.set_masks(pruned, masks)
    for name, mask in kl.get_masks(pruned).items():
        np.testing.assert_array_equal(mask, before[name])


def test_rewrapping_a_pruned_model_keeps_its_masks(tiny):
    pruned = kl.prune_low_magnitude(tiny.build_dense())
    masks = kl.prune(pruned, 0.5)
    again = kl.prune_low_magnitude(pruned)
    assert all(isinstance(layer, Wrapper) for layer in again.layers[1:])
    for name, mask in kl.get_masks(again).items():
        np.testing.assert_array_equal(mask, masks[name], err_msg=name)


def test_weights_set_by_hand_are_re_zeroed_when_training_starts(tiny):
    # The training forward pass uses the kernel as it is (no w * m per step), so
    # UpdateMasks must clean weights that were set by hand before the first step.
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), kl.OneShot(0.0)), keras.optimizers.Adam(1e-2))
    kl.prune(pruned, 0.7)
    for _, _, weight, mask in wrappers.pruning_entries(pruned):
        weight.assign(weight + (1.0 - mask) * 5.0)
    recorded = []
    probe = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: recorded.append(tiny.raw_kernels(pruned)))
    fit_steps(tiny, pruned, 3, [kl.UpdateMasks(), probe])
    for kernels in recorded + [tiny.raw_kernels(pruned)]:
        for name, (weight, mask) in kernels.items():
            assert np.all(weight[mask == 0] == 0.0), name


def test_training_forward_pass_masks_gradients_not_weights(tiny):
    pruned = tiny.compile_model(kl.prune_low_magnitude(tiny.build_dense(), kl.OneShot(0.0)))
    kl.prune(pruned, 0.5)
    x, y = tiny.make_data(16)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, pruned(x, training=True))
    kernels = [weight for _, _, weight, _ in wrappers.pruning_entries(pruned)]
    for gradient, (name, (_, mask)) in zip(tape.gradient(loss, kernels), tiny.raw_kernels(pruned).items()):
        assert np.all(gradient.numpy()[mask == 0] == 0.0), name
        assert np.count_nonzero(gradient.numpy()[mask == 1]) > 0, name


def test_prune_on_a_model_without_wrappers_says_to_wrap_it(tiny):
    with pytest.raises(ValueError, match="prune_low_magnitude"):
        kl.prune(tiny.build_dense(), 0.5)


@pytest.mark.parametrize("extension", ["h5", "keras"])
def test_pruned_model_round_trips_through_a_file_with_custom_objects(tiny, tmp_path, extension):
    pruned = tiny.compile_model(
        kl.prune_low_magnitude(tiny.build_dense(), kl.Iterative(0.2, steps_per_round=100, rounds=3), strategy="global"))
    kl.prune(pruned, 0.6, "global")
    path = str(tmp_path / f"model.{extension}")
    pruned.save(path)
    loaded = keras.models.load_model(path, custom_objects=kl.custom_objects())
    wrapper = loaded.get_layer("prune_low_magnitude_fc1")
    assert isinstance(wrapper, kl.PruneLowMagnitude) and wrapper.strategy == "global"
    assert wrapper.pruning_schedule.get_config() == pruned.get_layer("prune_low_magnitude_fc1").pruning_schedule.get_config()
    for name, mask in kl.get_masks(pruned).items():
        np.testing.assert_array_equal(kl.get_masks(loaded)[name], mask)
    x, _ = tiny.make_data(8)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
