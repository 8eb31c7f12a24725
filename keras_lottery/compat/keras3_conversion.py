"""Converting a Keras 3 Sequential or functional model to tf_keras, checked on random inputs.

tfmot, and so keras_lottery, works on Keras 2 (`tf_keras`) models only. The public
functions that return a new model (`prune_low_magnitude`, `prune_low_sign_flip`,
`strip_pruning`, `fuse_neurons`, `fusion_report`, `export_tflite`) pass their model
through `to_tf_keras`, which rebuilds a Keras 3 model made of `SUPPORTED_LAYERS` in
tf_keras: each layer from its own config (Keras 3's serialized dtype policies,
initializers and input shapes translated), wired as the Keras 3 model's config says,
its weights copied. The copy is returned only if it gives the same outputs as the
original on seeded random inputs, with a `Keras3ConversionWarning`; anything else is
refused with a `Keras3ConversionError` that names the layer and says what to do.
"""

import sys
import warnings

import numpy as np
import tensorflow as tf

from keras_lottery.compat import keras2

keras = keras2.keras

# Keras 3 layer classes the conversion rebuilds (and the tests check) in tf_keras.
SUPPORTED_LAYERS = (
    "InputLayer", "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "LayerNormalization",
    "Flatten", "Reshape", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "GlobalMaxPooling2D", "Dropout", "SpatialDropout2D", "Activation", "ReLU", "LeakyReLU", "Softmax",
    "Concatenate", "Add", "Subtract", "Multiply",
)
CONVERSION_TOLERANCE = 1e-5  # x max(1, largest |output|): float32 rounding between the two runtimes
VERIFICATION_SAMPLES = 8
UNKNOWN_DIMENSION_SIZE = 32  # stands for a None (non-batch) input dimension in the verification inputs
# Config keys Keras 3 has and tf_keras does not, with the value meaning "feature unused"; any
# other value is refused.
_KERAS3_ONLY_OPTIONS = {
    "optional": False, "quantization_config": None, "lora_rank": None, "lora_alpha": None,
    "input_axes": None, "output_axes": None, "rms_scaling": False,
}
# Keras 3 names of tf_keras arguments, by class.
_RENAMED_OPTIONS = {"InputLayer": {"batch_shape": "batch_input_shape"}, "LeakyReLU": {"negative_slope": "alpha"}}
_DTYPE_POLICIES = ("DTypePolicy", "FloatDTypePolicy")
_BUILD_WITH_TF_KERAS = "Build the model with `from keras_lottery import keras` (tf_keras) instead of `import keras`."


class Keras3ConversionWarning(UserWarning):
    """A Keras 3 model was converted to tf_keras; the model returned is a tf_keras model."""


class Keras3ConversionError(TypeError):
    """A Keras 3 model that cannot be converted to tf_keras (or whose conversion changed its outputs)."""


def is_keras3_model(obj):
    """Returns True if `obj` is a Keras 3 model (of any kind, subclassed included)."""
    if not keras2.is_keras3_object(obj):
        return False
    import keras as keras3  # noqa: PLC0415  (already loaded: `obj` comes from it)

    return isinstance(obj, keras3.Model)


def to_tf_keras(model, what="The model"):
    """Returns `model` as a tf_keras model, converting a Keras 3 Sequential or functional one.

    The conversion rebuilds each layer in tf_keras from its config, wires the layers
    as in the Keras 3 model, copies the weights, and checks on seeded random inputs
    that both models give the same outputs (to `CONVERSION_TOLERANCE` x max(1, largest
    |output|)). Layer names, configs and weights are kept; the Keras 3 model is not
    modified.

    Args:
      model: any object. Only a Keras 3 model is converted; everything else (tf_keras
        models, Keras 3 layers, lists, ...) is returned as is, for the caller's own checks.
      what: how the warning and errors name the model, e.g. "The model to prune".

    Returns:
      `model` itself, or the new tf_keras model.

    Warns:
      Keras3ConversionWarning: `model` was a Keras 3 model and was converted.

    Raises:
      Keras3ConversionError: (a TypeError) a Keras 3 model that is subclassed, not
        built, or holds a nested model, a custom layer or a layer outside
        `SUPPORTED_LAYERS`; or whose tf_keras copy gives different outputs.
    """
    if not is_keras3_model(model):
        return model
    import keras as keras3  # noqa: PLC0415  (already loaded: `model` comes from it)

    _check_convertible(model, keras3, what)
    config = model.get_config()
    if isinstance(model, keras3.Sequential):
        converted = keras.Sequential([_tf_keras_layer(entry, what) for entry in config["layers"]],
                                     name=config["name"])
    else:
        converted = _rebuild_functional(config, what)
    _copy_weights(model, converted, what)
    difference, allowed = _output_difference(model, converted, keras3)
    if not difference <= allowed:  # a NaN difference is refused too
        raise Keras3ConversionError(
            f"{what} ({model.name!r}) was rebuilt in tf_keras, but the copy's outputs differ from the Keras 3 "
            f"model's by {difference:.3g} on {VERIFICATION_SAMPLES} random inputs (allowed {allowed:.3g}), so it "
            f"was not used. {_BUILD_WITH_TF_KERAS}"
        )
    warnings.warn(
        f"{what} ({model.name!r}) is a Keras 3 model; keras_lottery converted it to tf_keras (Keras 2, which "
        f"tfmot needs) and checked that the copy gives the same outputs (max difference {difference:.2g} on "
        f"{VERIFICATION_SAMPLES} random inputs). The model returned is a tf_keras model. Build models with "
        "`from keras_lottery import keras` to avoid the conversion.",
        Keras3ConversionWarning,
        stacklevel=_user_stacklevel(),
    )
    return converted


def _user_stacklevel():
    """The `warnings.warn` stacklevel, from its caller, of the first frame outside keras_lottery."""
    frame, level = sys._getframe(1), 1  # the frame that calls warnings.warn (to_tf_keras) is level 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("keras_lottery"):
        frame, level = frame.f_back, level + 1
    return level


def _check_convertible(model, keras3, what):
    """Raises a Keras3ConversionError naming the first thing about `model` the conversion cannot rebuild."""
    from keras.src.models.functional import Functional  # noqa: PLC0415  (Keras 3 exports no public name)

    if type(model) not in (keras3.Sequential, Functional):
        raise Keras3ConversionError(
            f"{what} is a subclassed Keras 3 model ({type(model).__name__}); only Keras 3 Sequential and "
            f"functional models can be converted to tf_keras. {_BUILD_WITH_TF_KERAS} Use "
            "keras.Sequential([...]) or keras.Model(inputs, outputs) there."
        )
    if not model.built:
        raise Keras3ConversionError(
            f"{what} ({model.name!r}) is a Keras 3 model that is not built yet, so it has no input shape or "
            "weights to convert to tf_keras. Build it first: start it with keras.Input(shape), call "
            "model.build(input_shape), or call it on a batch."
        )
    supported = ", ".join(SUPPORTED_LAYERS)
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, keras3.Model):
            raise Keras3ConversionError(
                f"{what} holds a nested Keras 3 model, layer {layer.name!r} ({kind}); the conversion to tf_keras "
                f"needs a flat model: call the inner model's layers directly. {_BUILD_WITH_TF_KERAS}"
            )
        if type(layer) is not getattr(keras3.layers, kind, None):
            raise Keras3ConversionError(
                f"{what} has a custom Keras 3 layer {layer.name!r} ({type(layer).__module__}.{kind}); "
                f"the conversion to tf_keras rebuilds only Keras's own layers: {supported}. "
                f"{_BUILD_WITH_TF_KERAS} Custom layers subclass keras.layers.Layer there."
            )
        if not hasattr(keras.layers, kind):
            raise Keras3ConversionError(
                f"{what} has a Keras 3 {kind} layer ({layer.name!r}), which has no tf_keras counterpart; "
                f"the conversion to tf_keras supports: {supported}. {_BUILD_WITH_TF_KERAS}"
            )
        if kind not in SUPPORTED_LAYERS:
            raise Keras3ConversionError(
                f"{what} has a Keras 3 {kind} layer ({layer.name!r}), which the conversion to tf_keras does not "
                f"support; it supports: {supported}. {_BUILD_WITH_TF_KERAS}"
            )


def _tf_keras_layer(entry, what):
    """The tf_keras layer for one entry of a Keras 3 model config's "layers"."""
    kind = entry["class_name"]
    config = _translated_config(entry["config"], kind, entry["config"]["name"], what)
    if kind == "InputLayer":  # Keras 3 records the batch size it was first called with; any size is fine
        config["batch_input_shape"] = (None, *config["batch_input_shape"][1:])
    try:
        return getattr(keras.layers, kind).from_config(config)
    except (TypeError, ValueError) as error:
        raise Keras3ConversionError(
            f"{what} has a layer {entry['config']['name']!r} ({kind}) that tf_keras could not rebuild from its "
            f"Keras 3 config: {error} {_BUILD_WITH_TF_KERAS}"
        ) from error


def _translated_config(config, kind, layer_name, what):
    """A Keras 3 layer's (or initializer's, ...) config with the keys and values tf_keras expects."""
    renamed = _RENAMED_OPTIONS.get(kind, {})
    translated = {}
    for key, value in config.items():
        if key in _KERAS3_ONLY_OPTIONS:
            if value != _KERAS3_ONLY_OPTIONS[key]:
                raise Keras3ConversionError(
                    f"{what} has a layer {layer_name!r} that sets the Keras 3 option {key}={value!r}, which "
                    f"tf_keras does not have, so it cannot be converted. {_BUILD_WITH_TF_KERAS}"
                )
            continue
        translated[renamed.get(key, key)] = _translated_value(value, layer_name, what)
    return translated


def _translated_value(value, layer_name, what):
    """A config value with Keras 3's serialized objects in tf_keras's form (recursively)."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:  # a serialized Keras 3 object
        if value["class_name"] in _DTYPE_POLICIES:
            return value["config"]["name"]
        inner = value["config"]
        if isinstance(inner, dict):
            inner = _translated_config(inner, value["class_name"], layer_name, what)
        return {"class_name": value["class_name"], "config": inner}
    if isinstance(value, dict):
        return {key: _translated_value(item, layer_name, what) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_translated_value(item, layer_name, what) for item in value)
    return value


def _rebuild_functional(config, what):
    """A tf_keras functional model wired like the Keras 3 functional model `config` describes."""
    tensors = {}  # (layer name, node index) -> that call's output tensors
    pending = []  # (layer, node index, node), every call of every layer
    for entry in config["layers"]:
        layer = _tf_keras_layer(entry, what)
        if entry["class_name"] == "InputLayer":
            tensors[(layer.name, 0)] = [layer.output]
        else:
            pending += [(layer, index, node) for index, node in enumerate(entry["inbound_nodes"])]

    def resolve(value):  # a call's arguments: Keras 3 tensor references -> tf_keras tensors
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            name, node_index, tensor_index = value["config"]["keras_history"]
            return tensors[(name, node_index)][tensor_index]
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(item) for item in value)
        return value

    while pending:  # calls whose inputs do not exist yet (a shared layer's later calls) wait a round
        waiting = []
        for layer, index, node in pending:
            try:
                args, kwargs = resolve(node["args"]), resolve(node["kwargs"])
            except KeyError:
                waiting.append((layer, index, node))
                continue
            outputs = layer(*args, **kwargs)
            tensors[(layer.name, index)] = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(waiting) == len(pending):
            raise Keras3ConversionError(
                f"{what} has layers {[layer.name for layer, _, _ in waiting]} that read tensors no layer of its "
                f"config produces, so it cannot be rewired in tf_keras. {_BUILD_WITH_TF_KERAS}"
            )
        pending = waiting

    def model_tensors(spec):  # input_layers / output_layers: [name, node, tensor] triples, nested
        if isinstance(spec, dict):
            return {key: model_tensors(item) for key, item in spec.items()}
        if len(spec) == 3 and isinstance(spec[0], str):
            return tensors[(spec[0], spec[1])][spec[2]]
        structure = [model_tensors(item) for item in spec]
        return structure[0] if len(structure) == 1 else structure

    return keras.Model(model_tensors(config["input_layers"]), model_tensors(config["output_layers"]),
                       name=config["name"])


def _copy_weights(source, converted, what):
    """Sets each tf_keras layer's weights to those of the Keras 3 layer of the same name."""
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in converted.layers:
        if not layer.weights:
            continue
        try:
            layer.set_weights(source_layers[layer.name].get_weights())
        except ValueError as error:
            raise Keras3ConversionError(
                f"{what} has a layer {layer.name!r} ({type(layer).__name__}) whose Keras 3 weights do not fit its "
                f"tf_keras counterpart: {error} {_BUILD_WITH_TF_KERAS}"
            ) from error


def _output_difference(source, converted, keras3):
    """(largest |difference| between the two models' outputs, the largest allowed) on seeded random inputs."""
    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal((VERIFICATION_SAMPLES, *[size or UNKNOWN_DIMENSION_SIZE for size in tensor.shape[1:]]))
        .astype(tensor.dtype.as_numpy_dtype)
        for tensor in tf.nest.flatten(converted.input)
    ]
    feed = tf.nest.pack_sequence_as(converted.input, inputs)  # the same structure (tensor, list, dict) as the model's
    expected = [keras3.ops.convert_to_numpy(output) for output in tf.nest.flatten(source(feed, training=False))]
    actual = [np.asarray(output) for output in tf.nest.flatten(converted(feed, training=False))]
    if [output.shape for output in expected] != [output.shape for output in actual]:
        return float("inf"), 0.0
    difference = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(expected, actual))
    scale = max(float(np.max(np.abs(output), initial=0.0)) for output in expected)
    return difference, CONVERSION_TOLERANCE * max(1.0, scale)
