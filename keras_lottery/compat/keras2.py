"""Keras 2 (`tf_keras`) checks shared by every public entry point.

tfmot only works with Keras 2, which ships as the `tf_keras` package. `import keras`
gives Keras 3, whose models tfmot rejects with an error from deep inside its
registry. Every public function of keras_lottery calls `check_model` (or
`check_not_keras3`) first so that a Keras 3 object or a subclassed model fails at once
with a message that says what to do. The functions that return a new model first
convert a Keras 3 Sequential or functional model with `keras3_conversion.to_tf_keras`.

It also imports TensorFlow first, so that the lines TensorFlow's native libraries log while
they load honour TF_CPP_MIN_LOG_LEVEL (which they otherwise ignore; see `filter_native_log`).
"""

import contextlib
import os
import re
import sys
import tempfile

# tfmot sets this too; setting it before TensorFlow is imported makes `tf.keras`
# resolve to tf_keras, so models built with either spelling mix.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# While its native libraries load, TensorFlow logs "oneDNN custom operations are on" and "Could
# not find cuda drivers" through absl's C++ logging before anything has read TF_CPP_MIN_LOG_LEVEL,
# so the variable does not hide them. And they come twice: the profiler plugin that `import
# tensorflow` loads (tensorflow/python/profiler/internal/_pywrap_profiler_plugin.so) links its own
# copy of that code, whose static initializers log the same lines again. So TensorFlow is first
# imported here with the native stderr caught, and what comes back is what the variable allows.
# absl before InitializeLog() writes the time as 00:00:<seconds since 1970>.
_NATIVE_HEADER = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] ")
_NATIVE_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITIES = b"IWEF"  # absl's letters, in TF_CPP_MIN_LOG_LEVEL's order: 0 INFO ... 3 FATAL


def native_log_level():
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it: 0 (everything) unless it is 1, 2 or 3."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return int(value) if value in ("1", "2", "3") else 0


def filter_native_log(text, min_level):
    """The lines of native stderr output that TF_CPP_MIN_LOG_LEVEL=`min_level` lets through.

    absl-formatted lines (`I0000 00:00:... port.cc:153] ...`) below `min_level` and absl's notice that
    logging is not initialized are dropped; every other line (an error, Python's own output) is kept.

    Args:
      text: bytes written to file descriptor 2.
      min_level: 0 (keep everything), 1 (drop INFO), 2 (also WARNING) or 3 (also ERROR).

    Returns:
      The kept lines, as bytes, in their order.
    """
    if min_level <= 0:
        return text
    kept = []
    for line in text.splitlines(keepends=True):
        header = _NATIVE_HEADER.match(line)
        if line.rstrip(b"\r\n") == _NATIVE_NOTICE or (header and _SEVERITIES.index(header.group(1)) < min_level):
            continue
        kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def _native_stderr_filtered(min_level):
    """Within the block, file descriptor 2 goes to a temporary file; at its end the allowed lines go on."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    _flush_python_stderr()
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            _flush_python_stderr()  # what Python wrote meanwhile is in the file, in order
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = filter_native_log(caught.read(), min_level)
            while kept:
                kept = kept[os.write(2, kept):]


def _flush_python_stderr():
    if sys.stderr is not None:
        sys.stderr.flush()


if "tensorflow" not in sys.modules and native_log_level() > 0:
    with _native_stderr_filtered(native_log_level()):
        import tensorflow  # noqa: E402,F401  (loads the native libraries while their start-up lines are caught)

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
