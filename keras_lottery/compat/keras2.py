"""Keras 2 (`tf_keras`) checks shared by every public entry point.

tfmot only works with Keras 2, which ships as the `tf_keras` package. `import keras`
gives Keras 3, whose models tfmot rejects with an error from deep inside its
registry. Every public function of keras_lottery calls `check_model` (or
`check_not_keras3`) first so that a Keras 3 object or a subclassed model fails at once
with a message that says what to do. The functions that return a new model first
convert a Keras 3 Sequential or functional model with `keras3_conversion.to_tf_keras`.
"""

import os

# tfmot sets this too; setting it before TensorFlow is imported makes `tf.keras`
# resolve to tf_keras, so models built with either spelling mix.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402  (must follow the environment variable)

KERAS3_MESSAGE = (
    "{what} is a Keras 3 object ({cls}). keras_lottery works on Keras 2 models, "
    "because tensorflow-model-optimization does. Build the model with "
    "`from keras_lottery import keras` (the same as `import tf_keras as keras`) "
    "instead of `import keras`, or convert a Keras 3 Sequential or functional model "
    "once with `model = keras_lottery.to_tf_keras(model)` and use the tf_keras model "
    "it returns from then on (prune_low_magnitude, prune_low_sign_flip, strip_pruning, "
    "fuse_neurons and export_tflite convert such a model themselves)."
)


def is_keras3_object(obj):
    """Returns True if `obj` is a Keras 3 layer, model or optimizer."""
    for cls in type(obj).__mro__:  # a user's subclass of a Keras 3 class counts too
        module = cls.__module__ or ""
        if module == "keras" or module.startswith("keras."):
            return True
    return False


def check_not_keras3(obj, what="The model"):
    """Raises a clear TypeError if `obj` (or any item of a list) is a Keras 3 object.

    Args:
      obj: a model, a layer, or a list of layers.
      what: how the error names the object, e.g. "The model".

    Raises:
      TypeError: `obj` comes from Keras 3.
    """
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    for item in items:
        if is_keras3_object(item):
            raise TypeError(KERAS3_MESSAGE.format(what=what, cls=type(item).__name__))


def check_model(model, what="The model"):
    """Checks that `model` is a tf_keras Sequential or functional model.

    Args:
      model: the object to check.
      what: how the error names the object.

    Raises:
      TypeError: a Keras 3 model, a subclassed model, or not a model at all.
    """
    check_not_keras3(model, what)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{what} must be a tf_keras Model (Sequential or functional); got {type(model).__name__}."
        )
    is_sequential = isinstance(model, keras.Sequential)
    if not is_sequential and not getattr(model, "_is_graph_network", False):
        raise TypeError(
            f"{what} is a subclassed model ({type(model).__name__}); keras_lottery and tfmot "
            "can only rewrite Sequential and functional models. Rebuild it with "
            "keras.Sequential([...]) or keras.Model(inputs, outputs)."
        )
