"""Tests of compat/keras2.py and compat/keras3_conversion.py.

Keras 3 Sequential/functional models of supported layers are converted to tf_keras
with a warning and equal outputs; everything else (Keras 3 layers, subclassed,
custom-layer, unbuilt models, in-place entry points) fails early with a clear error.
"""

import os

import numpy as np
import pytest
import tf_keras

import keras_lottery as kl
from keras_lottery import compat
from keras_lottery.compat import keras2
from keras_lottery.compat import keras3_conversion
from keras_lottery import keras as kl_keras
from keras_lottery.compat.keras3_conversion import Keras3ConversionError, Keras3ConversionWarning

keras3 = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def keras3_model():
    assert keras3.__version__.startswith("3.")
    return keras3.Sequential([keras3.Input((8,)), keras3.layers.Dense(4, name="d3"), keras3.layers.Dense(2)])


@pytest.fixture(scope="module")
def keras3_functional():
    inputs = keras3.Input((8,))
    return keras3.Model(inputs, keras3.layers.Dense(3)(inputs))


class Subclassed(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = tf_keras.layers.Dense(3)

    def call(self, inputs):
        return self.dense(inputs)


def test_keras_is_tf_keras():
    assert kl_keras is tf_keras
    assert compat.keras is tf_keras
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"


def test_tensorflows_native_start_up_lines_below_tf_cpp_min_log_level_are_dropped_the_rest_kept():
    # The lines TensorFlow 2.21 logs while it loads, which TF_CPP_MIN_LOG_LEVEL does not reach (keras2.py).
    notice = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    info = b"I0000 00:00:1796128611.998604     987 port.cc:153] oneDNN custom operations are on.\n"
    error = b"E0000 00:00:1796128644.419390    1174 cuda_platform.cc:52] failed call to cuInit\n"
    other = b"/a/module.py:3: UserWarning: kept, whatever the level\n"
    text = notice + info + error + other
    assert keras2.filter_native_log(text, 0) == text
    assert keras2.filter_native_log(text, 1) == error + other
    assert keras2.filter_native_log(text, 3) == other


def test_is_keras3_object(keras3_model):
    assert compat.is_keras3_object(keras3_model)
    assert compat.is_keras3_object(keras3.layers.Dense(2))
    assert compat.is_keras3_object(keras3.optimizers.Adam())
    assert not compat.is_keras3_object(tf_keras.layers.Dense(2))
    assert not compat.is_keras3_object(tf_keras.Sequential())
    assert not compat.is_keras3_object("keras")


def test_prune_low_magnitude_rejects_keras3_layers():
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude(keras3.layers.Dense(4))
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude([tf_keras.layers.Dense(4), keras3.layers.Dense(4)])
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude(keras3.layers.Dense(4), pruning_schedule=kl.OneShot(0.5))


def test_subclassed_tf_keras_model_raises():
    model = Subclassed()
    model(tf_keras.Input((5,)))
    with pytest.raises(TypeError, match="subclassed"):
        kl.prune_low_magnitude(model)
    with pytest.raises(TypeError, match="subclassed"):
        kl.strip_pruning(model)
    with pytest.raises(TypeError, match="Sequential"):
        compat.check_model(model)


@pytest.mark.parametrize("obj", [42, "model", None, {"fc1": 1}, object()])
def test_non_models_raise_type_error(obj):
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude(obj)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.strip_pruning(obj)


def test_strip_pruning_rejects_a_layer():
    with pytest.raises(TypeError, match="tf_keras Model"):
        kl.strip_pruning(tf_keras.layers.Dense(3))


def test_check_model_accepts_sequential_and_functional(tiny):
    compat.check_model(tiny.build_dense())
    compat.check_model(tiny.build_branch())
    compat.check_model(kl.prune_low_magnitude(tiny.build_dense()))


def test_check_not_keras3_passes_tf_keras_objects():
    compat.check_not_keras3([tf_keras.layers.Dense(2), tf_keras.layers.Flatten()])
    compat.check_not_keras3(tf_keras.Sequential())
    with pytest.raises(TypeError, match="The thing"):
        compat.check_not_keras3((keras3.layers.Flatten(),), what="The thing")


def test_non_model_with_schedule_dict_raises_type_error():
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude("model", pruning_schedule={"fc1": kl.OneShot(0.5)})


class Keras3Scale(keras3.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


class Keras3Subclassed(keras3.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras3.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_user_subclassed_keras3_objects_raise_type_error():
    for obj in (Keras3Scale(), Keras3Subclassed()):
        with pytest.raises(TypeError, match="tf_keras"):
            kl.prune_low_magnitude(obj)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.strip_pruning(Keras3Subclassed())


@pytest.mark.parametrize("make", [Keras3Scale, Keras3Subclassed], ids=["layer", "model"])
def test_user_subclassed_keras3_objects_are_recognised(make):
    obj = make()
    assert compat.is_keras3_object(obj)
    with pytest.raises(TypeError, match="Keras 3"):
        kl.prune_low_magnitude(obj)


def test_keras3_model_is_refused_by_rewinding_and_controls():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    callback = kl.RewindCallback(0)
    with pytest.raises(TypeError, match="tf_keras"):
        callback.take_snapshot(model)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.controls.random_reinit(model, seed=0)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune(model, 0.5)


# ----------------------------------------------------------------------------------------
# Converting Keras 3 Sequential/functional models to tf_keras.


def randomize(model, seed=0):
    """Gives every weight a non-trivial random value (BatchNormalization variances positive)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
        else:
            layer.set_weights([rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


def keras3_sequential():
    """Conv2D -> BatchNormalization -> ReLU -> MaxPooling2D -> Dropout -> Flatten -> Dense -> Activation -> Dense."""
    layers = keras3.layers
    return randomize(keras3.Sequential([
        keras3.Input((8, 8, 3)),
        layers.Conv2D(4, 3, padding="same", name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.ReLU(name="relu"),
        layers.MaxPooling2D(name="pool"),
        layers.Dropout(0.25, name="dropout"),
        layers.Flatten(name="flatten"),
        layers.Dense(6, name="fc", trainable=False),
        layers.Activation("tanh", name="tanh"),
        layers.Dense(3, name="out"),
    ], name="k3_sequential"))


def keras3_branch():
    """Functional: two Dense paths, joined by Concatenate and by Add, then Concatenate -> Dense."""
    layers = keras3.layers
    inputs = keras3.Input((6,), name="x")
    left = layers.Dense(4, activation="relu", name="left")(inputs)
    right = layers.Dense(4, name="right")(inputs)
    joined = layers.Concatenate(name="concat")([left, right])
    summed = layers.Add(name="add")([left, right])
    outputs = layers.Dense(2, name="out")(layers.Concatenate(name="concat_both")([joined, summed]))
    return randomize(keras3.Model(inputs, outputs, name="k3_branch"))


def keras3_every_supported_layer():
    """Functional: one layer of every class in SUPPORTED_LAYERS."""
    layers = keras3.layers
    inputs = keras3.Input((10, 10, 2), name="image")
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(4, 3)(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.SpatialDropout2D(0.1)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.MaxPooling2D(1)(x)
    pooled = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.LayerNormalization()(pooled)
    left, right = layers.Dense(6)(x), layers.Dense(6)(x)
    x = layers.Concatenate()([layers.Add()([left, right]), layers.Subtract()([left, right]),
                              layers.Multiply()([left, right])])
    x = layers.Dropout(0.5)(layers.Activation("relu")(layers.ReLU(max_value=4.0)(layers.LeakyReLU(0.2)(x))))
    x = layers.Conv1D(2, 2)(layers.Reshape((3, 6))(x))
    outputs = layers.Softmax()(layers.Dense(3)(layers.Flatten()(x)))
    return randomize(keras3.Model(inputs, outputs, name="k3_every_layer"))


def sample_inputs(model, count=16, seed=1):
    return np.random.default_rng(seed).normal(size=(count, *model.inputs[0].shape[1:])).astype(np.float32)


def assert_same_outputs(keras3_model, tf_keras_model, inputs):
    expected = keras3.ops.convert_to_numpy(keras3_model(inputs, training=False))
    actual = np.asarray(tf_keras_model(inputs, training=False))
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=keras3_conversion.CONVERSION_TOLERANCE * scale)


def converted_with_warning(model):
    with pytest.warns(Keras3ConversionWarning, match="converted it to tf_keras") as record:
        converted = kl.to_tf_keras(model)
    assert "The model returned is a tf_keras model" in str(record[0].message)
    return converted


@pytest.mark.parametrize("build", [keras3_sequential, keras3_branch, keras3_every_supported_layer],
                         ids=["sequential", "functional_branch", "every_supported_layer"])
def test_keras3_models_convert_with_equal_outputs(build):
    model = build()
    converted = converted_with_warning(model)
    compat.check_model(converted)
    assert not compat.is_keras3_object(converted)
    assert isinstance(converted, tf_keras.Sequential) == isinstance(model, keras3.Sequential)
    assert [layer.name for layer in converted.layers] == [layer.name for layer in model.layers]
    assert converted.name == model.name
    assert_same_outputs(model, converted, sample_inputs(model))


def test_every_supported_layer_is_checked_and_configs_are_kept():
    model = keras3_every_supported_layer()
    assert {type(layer).__name__ for layer in model.layers} == set(keras3_conversion.SUPPORTED_LAYERS)
    converted = converted_with_warning(keras3_sequential())
    assert not converted.get_layer("fc").trainable
    assert converted.get_layer("dropout").rate == 0.25
    assert converted.get_layer("tanh").activation is tf_keras.activations.tanh


@pytest.mark.parametrize("how", ["call", "build"])
def test_keras3_sequential_without_input_converts_once_built(how):
    model = keras3.Sequential([keras3.layers.Dense(3, name="a"), keras3.layers.Dense(2, name="b")])
    with pytest.raises(Keras3ConversionError, match="not built yet.*Build it first"):
        kl.to_tf_keras(model)
    with pytest.raises(TypeError, match="not built"):
        kl.prune_low_magnitude(model)
    if how == "call":
        model(np.ones((2, 5), np.float32))  # Keras 3 records batch size 2; the copy takes any
    else:
        model.build((None, 5))
    converted = converted_with_warning(model)
    assert converted.input_shape == (None, 5)
    assert_same_outputs(model, converted, np.ones((3, 5), np.float32))


def test_to_tf_keras_returns_everything_else_as_is(tiny, recwarn):
    model, layer = tiny.build_dense(), keras3.layers.Dense(2)
    assert kl.to_tf_keras(model) is model
    assert kl.to_tf_keras(layer) is layer
    assert kl.to_tf_keras("model") == "model"
    assert not [warning for warning in recwarn if warning.category is Keras3ConversionWarning]


@pytest.mark.parametrize("build", [keras3_sequential, keras3_branch], ids=["sequential", "functional"])
def test_prune_low_magnitude_converts_keras3_models(build):
    model = build()
    with pytest.warns(Keras3ConversionWarning, match="The model to prune") as record:
        pruned = kl.prune_low_magnitude(model, pruning_schedule=kl.OneShot(0.0))
    conversion_warnings = [warning for warning in record if warning.category is Keras3ConversionWarning]
    assert [warning.filename for warning in conversion_warnings] == [__file__]  # points at the caller
    compat.check_model(pruned)
    assert kl.wrappers.prunable_wrappers(pruned)
    assert_same_outputs(model, kl.strip_pruning(pruned), sample_inputs(model))


def test_prune_low_sign_flip_and_strip_pruning_convert_keras3_models(keras3_functional):
    with pytest.warns(Keras3ConversionWarning):
        pruned = kl.prune_low_sign_flip(keras3_functional, pruning_schedule=kl.OneShot(0.0))
    assert kl.sign_flip.sign_flip_wrappers(pruned)
    with pytest.warns(Keras3ConversionWarning, match="The model to strip"):
        stripped = kl.strip_pruning(keras3_functional)
    compat.check_model(stripped)
    assert_same_outputs(keras3_functional, stripped, sample_inputs(keras3_functional))


def test_fuse_neurons_and_fusion_report_accept_keras3_models():
    layers = keras3.layers
    model = randomize(keras3.Sequential([keras3.Input((6,)), layers.Dense(5, activation="relu", name="fc"),
                                         layers.Dense(3, name="out")]))
    kernel, bias = model.get_layer("out").get_weights()
    kernel[2] = 0.0  # unit 2 of fc feeds nothing: the exact pass removes it
    model.get_layer("out").set_weights([kernel, bias])
    with pytest.warns(Keras3ConversionWarning, match="The model to fuse"):
        fused = kl.fuse_neurons(model)
    assert fused.get_layer("fc").units == 4
    assert_same_outputs(model, fused, sample_inputs(model))
    with pytest.warns(Keras3ConversionWarning, match="The original model"):
        report = kl.fusion_report(model, fused, sample_inputs(model))
    assert report.layers[0]["units_after"] == 4


def test_export_tflite_accepts_keras3_models(tmp_path):
    with pytest.warns(Keras3ConversionWarning, match="The model to export"):
        report = kl.export_tflite(keras3_sequential(), tmp_path / "keras3.tflite", fuse=False, latency_runs=1)
    assert os.path.getsize(report.path) > 0
    assert report.original_checked and report.max_abs_diff_original <= report.tolerance.max_abs_diff


def test_keras3_model_with_a_custom_layer_is_refused():
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3), Keras3Scale(name="scale")])
    with pytest.raises(Keras3ConversionError, match=r"custom Keras 3 layer 'scale' \(.*\.Keras3Scale\)") as error:
        kl.prune_low_magnitude(model)
    message = str(error.value)
    assert "The model to prune" in message and "Dense" in message and "from keras_lottery import keras" in message
    assert isinstance(error.value, TypeError)


@pytest.mark.parametrize("layer, match", [
    (lambda: keras3.layers.RMSNormalization(name="rms"), r"RMSNormalization layer \('rms'\), which has no tf_keras"),
    (lambda: keras3.layers.GaussianNoise(0.1, name="noise"), r"GaussianNoise layer \('noise'\), which the conv.*not sup"),
], ids=["keras3_only", "unsupported"])
def test_keras3_layers_the_conversion_cannot_rebuild_are_refused(layer, match):
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3), layer()])
    with pytest.raises(Keras3ConversionError, match=match) as error:
        kl.fuse_neurons(model)
    assert "supports: InputLayer, Dense" in str(error.value)


def test_subclassed_and_nested_keras3_models_are_refused():
    subclassed = Keras3Subclassed()
    subclassed(np.ones((2, 4), np.float32))
    with pytest.raises(Keras3ConversionError, match=r"subclassed Keras 3 model \(Keras3Subclassed\).*Sequential"):
        kl.export_tflite(subclassed, "unused.tflite", fuse=False)
    inner = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3)], name="inner")
    outer = keras3.Sequential([keras3.Input((4,)), inner, keras3.layers.Dense(2)])
    with pytest.raises(Keras3ConversionError, match="nested Keras 3 model, layer 'inner'"):
        kl.to_tf_keras(outer)


def test_keras3_only_options_are_refused():
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3, name="fc")])
    model.get_layer("fc").enable_lora(2)
    with pytest.raises(Keras3ConversionError, match="'fc' that sets the Keras 3 option lora_rank=2"):
        kl.to_tf_keras(model)


def test_a_conversion_that_changes_outputs_is_refused(monkeypatch):
    monkeypatch.setattr(keras3_conversion, "_copy_weights", lambda source, converted, what: None)
    with pytest.raises(Keras3ConversionError, match="outputs differ from the Keras 3 model's.*not used"):
        kl.to_tf_keras(keras3_branch())
