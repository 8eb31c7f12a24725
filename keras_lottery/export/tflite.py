"""TFLite conversion, inference and measurement through the LiteRT interpreter.

    content = convert(model, quantize="float16", signature=Signature("pixels_0_to_1", "logits"))
    outputs = predict(content, inputs)                  # one input at a time, batch 1
    outputs = predict(content, inputs, batch_size=256)  # the interpreter resized to a batch
    measurement = measure_tflite(model)                 # sizes and invoke() latency, no check

`convert` turns a plain tf_keras model into TFLite flatbuffer bytes with
`tf.lite.TFLiteConverter.from_concrete_functions`, through a `tf.function` whose
input is a named `TensorSpec` and whose output is a dict, so that the file's
'serving_default' signature names its input and output (`Signature`; read back with
`signature_details`). `predict` and `measure_content` run bytes in
`ai_edge_litert.interpreter.Interpreter` (the replacement of the deprecated
`tf.lite.Interpreter`). Latency is the wall time of `invoke()` at batch
1, timed in Python after a warm-up (no `benchmark_model` binary is available here),
reported as median and 90th percentile in microseconds. Sizes are the raw file and
the file gzip'ed in memory: unstructured zeros do not shrink a TFLite file, but they
do shrink its download.

Quantization modes (`QUANTIZE_MODES`):

* None: float32 weights and compute.
* 'dynamic': `Optimize.DEFAULT`; weights stored as int8 (tensors of at least 1024
  elements), activations quantized on the fly.
* 'float16': `Optimize.DEFAULT` with float16 weights, computed in float32.
* 'int8': full integer quantization calibrated on `representative_data`; every op is
  int8 (conversion fails if one cannot be). Input and output stay float32, with a
  quantize and a dequantize op at the ends, so the file is called exactly like the
  Keras model (an int8-only accelerator needs `inference_input_type` and
  `inference_output_type` set to int8 instead).

Models must have one input and one output; the batch dimension is the only one
that may be unknown.
"""

import dataclasses
import gzip
import time

import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int

keras = compat.keras

QUANTIZE_MODES = (None, "dynamic", "float16", "int8")
DEFAULT_LATENCY_RUNS = 300
MIN_WARMUP_RUNS = 10
SIGNATURE_KEY = "serving_default"  # what TFLite's and TF Serving's callers look up by default


@dataclasses.dataclass(frozen=True)
class Signature:
    """How a TFLite file's serving signature names its input and output, and what they mean.

    Attributes:
      input_name: the signature's input name (a Python identifier), e.g. 'pixels_0_to_1'.
      output_name: the signature's output name, e.g. 'logits'.
      preprocessing: how callers make inputs from raw data, for the report, e.g.
        'uint8 pixels / 255'; None: not stated.
      outputs: what the outputs are, for the report, e.g. 'logits (no softmax)'; None: not stated.
    """

    input_name: str = "inputs"
    output_name: str = "outputs"
    preprocessing: str | None = None
    outputs: str | None = None

    def check(self):
        """Raises TypeError/ValueError naming a bad field, else returns self."""
        for field in ("input_name", "output_name"):
            name = getattr(self, field)
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"Signature.{field} must be a Python identifier such as 'logits' (TFLite callers "
                                 f"pass it as a keyword); got {name!r}.")
        if self.input_name == self.output_name:
            raise ValueError(f"Signature input and output need different names; both are {self.input_name!r}.")
        for field in ("preprocessing", "outputs"):
            if getattr(self, field) is not None and not isinstance(getattr(self, field), str):
                raise TypeError(f"Signature.{field} must be a string or None; got {type(getattr(self, field)).__name__}.")
        return self


def check_signature(signature):
    """`signature` checked, or the default `Signature()` for None.

    Raises:
      TypeError: not a `Signature`, or a description that is not a string.
      ValueError: a name that is not an identifier, or the same name twice.
    """
    if signature is None:
        return Signature()
    if not isinstance(signature, Signature):
        raise TypeError(f"signature must be a keras_lottery.export.tflite.Signature or None; "
                        f"got {type(signature).__name__}.")
    return signature.check()


def check_quantize(quantize):
    """Raises ValueError unless `quantize` is one of `QUANTIZE_MODES`."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES} (None is float32); got {quantize!r}.")


def check_quantization(quantize, representative_data, shape):
    """Checks a quantize mode and its calibration data together.

    Args:
      quantize: one of `QUANTIZE_MODES`.
      representative_data: required for 'int8', refused otherwise (see `convert`).
      shape: one input example's shape (see `input_shape`).

    Raises:
      ValueError: a bad mode (the message lists the choices), int8 without data, data
        without int8, or examples of another shape.
      TypeError: data that is neither an array nor a dataset.
    """
    check_quantize(quantize)
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: a few hundred typical inputs (an array or a "
            "tf.data.Dataset) to calibrate the activation ranges. Pass some training examples, or use "
            "quantize='dynamic', which needs none."
        )
    if quantize != "int8" and representative_data is not None:
        raise ValueError(f"representative_data calibrates quantize='int8' only; drop it for quantize={quantize!r}.")
    if representative_data is not None:
        next(representative_rows(representative_data, shape))  # a bad shape or type fails here


def input_shape(model):
    """The shape of one input example of `model` (without the batch axis).

    Raises:
      ValueError: the model has several inputs or outputs, or a non-batch dimension is unknown.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"TFLite export takes models with one input and one output; {model.name!r} has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(dimension is None for dimension in shape):
        raise ValueError(
            f"{model.name!r} takes inputs of shape {shape}: every dimension but the batch must be known "
            "for a TFLite export. Rebuild the model with a fixed input shape."
        )
    return tuple(int(dimension) for dimension in shape)


def check_inputs(inputs, shape, what):
    """`inputs` as a float32 array of examples of `shape`.

    Args:
      inputs: an array-like of shape (N,) + shape, N >= 1.
      shape: one example's shape (see `input_shape`).
      what: how the error names `inputs`, e.g. "sample_data".

    Raises:
      ValueError: wrong shape or no example.
    """
    array = np.asarray(inputs, dtype=np.float32)
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != tuple(shape) or len(array) == 0:
        raise ValueError(
            f"{what} must be an array of examples of shape (N, {', '.join(map(str, shape))}) with N >= 1 "
            f"(the model's input shape with a batch axis first); got shape {array.shape}."
        )
    return array


def representative_rows(data, shape):
    """Yields the examples of `data` one at a time, each as a float32 array of shape (1,) + shape.

    Args:
      data: an array of examples (N,) + shape, or a `tf.data.Dataset` of inputs or of
        (inputs, labels) pairs, batched or not.
      shape: one example's shape.

    Raises:
      TypeError: `data` is neither an array nor a dataset.
      ValueError: the examples have another shape.
    """
    if isinstance(data, tf.data.Dataset):
        for element in data.as_numpy_iterator():
            inputs = np.asarray(element[0] if isinstance(element, tuple) else element, dtype=np.float32)
            batch = inputs[np.newaxis] if inputs.shape == tuple(shape) else inputs
            for row in check_inputs(batch, shape, "representative_data (a dataset)"):
                yield row[np.newaxis]
        return
    if not isinstance(data, (np.ndarray, list, tuple)):
        raise TypeError(
            f"representative_data must be a NumPy array of inputs or a tf.data.Dataset; got {type(data).__name__}."
        )
    for row in check_inputs(data, shape, "representative_data"):
        yield row[np.newaxis]


def convert(model, quantize=None, representative_data=None, sparse_encoding=False, signature=None):
    """Converts a plain tf_keras model (no pruning wrappers) to TFLite bytes.

    Args:
      model: a tf_keras Sequential or functional model with one input and one output.
      quantize: one of `QUANTIZE_MODES` (see the module docstring).
      representative_data: calibration inputs for quantize='int8' (required there,
        refused elsewhere): an array of examples or a `tf.data.Dataset`.
      sparse_encoding: store sparse weight tensors in TFLite's sparse format
        (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`): the converter encodes those it finds
        sparse enough (block and 2:4 patterns among them) and LiteRT densifies or runs
        them sparse (bench/RESULTS.md measures what that buys).
      signature: a `Signature` naming the 'serving_default' input and output
        (default `Signature()`: 'inputs' and 'outputs'). The input has a dynamic batch
        axis, so an interpreter can be resized to any batch.

    Returns:
      The flatbuffer, as bytes.

    Raises:
      TypeError: not a tf_keras model, or a bad `signature`.
      ValueError: a bad `quantize`, missing or unneeded `representative_data`, a bad
        signature name, or a model with several inputs/outputs or an unknown input dimension.
    """
    compat.check_model(model, "The model to convert")
    shape = input_shape(model)
    check_quantization(quantize, representative_data, shape)
    signature = check_signature(signature)

    # A tf.function rather than from_keras_model: only this way are the signature's
    # input and output named by us, not after the Keras layers.
    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=signature.input_name)])
    def serve(inputs):
        return {signature.output_name: model(inputs, training=False)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    optimizations = [tf.lite.Optimize.DEFAULT] if quantize is not None else []
    if sparse_encoding:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if optimizations:
        converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = lambda: ([row] for row in representative_rows(representative_data, shape))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def _interpreter(content, num_threads, batch=1):
    """A LiteRT interpreter over `content`, its input resized to `batch` examples and allocated."""
    check_int(num_threads, "num_threads", 1)
    interpreter = litert.Interpreter(model_content=content, num_threads=num_threads)
    _resize(interpreter, batch)
    interpreter.allocate_tensors()
    return interpreter


def _resize(interpreter, batch):
    """Resizes the interpreter's input to `batch` examples; True if it did (then allocate again)."""
    detail = interpreter.get_input_details()[0]
    if int(detail["shape"][0]) == batch:
        return False
    interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    return True


def signature_details(content):
    """The 'serving_default' signature of TFLite bytes, as JSON-ready values.

    Returns:
      {'key': 'serving_default', 'inputs': {name: {'shape': [-1, ...], 'dtype': 'float32'}},
      'outputs': {...}}, read back from the file (-1: a dynamic axis), or None for a
      file without that signature.
    """
    interpreter = litert.Interpreter(model_content=content)
    if SIGNATURE_KEY not in interpreter.get_signature_list():
        return None
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)

    def describe(details):
        return {name: {"shape": [int(d) for d in detail["shape_signature"]], "dtype": np.dtype(detail["dtype"]).name}
                for name, detail in details.items()}

    return {"key": SIGNATURE_KEY, "inputs": describe(runner.get_input_details()),
            "outputs": describe(runner.get_output_details())}


def _to_input(example, detail):
    """A batch of examples (B, ...) in the input tensor's type (quantized for integer inputs)."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        limits = np.iinfo(detail["dtype"])
        return np.clip(np.round(example / scale + zero_point), limits.min, limits.max).astype(detail["dtype"])
    return example.astype(detail["dtype"])


def _from_output(value, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer) and scale:
        return (value.astype(np.float32) - zero_point) * scale
    return value.astype(np.float32)


def predict(content, inputs, num_threads=1, batch_size=1):
    """Runs TFLite bytes on `inputs`, `batch_size` examples per `invoke()`.

    Args:
      content: TFLite flatbuffer bytes (from `convert`).
      inputs: float array of examples, (N, ...) with the model's example shape.
      num_threads: LiteRT interpreter threads.
      batch_size: examples per `invoke()`; 1 (the default) runs them one at a time, as
        a device would; more resizes the interpreter's input, for evaluating many
        examples fast (the last batch is resized to what is left).

    Returns:
      float32 array of the N outputs, stacked along the first axis.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    inputs = np.asarray(inputs, dtype=np.float32)
    interpreter = _interpreter(content, num_threads, min(batch_size, max(len(inputs), 1)))
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        if _resize(interpreter, len(batch)):  # the last, shorter batch
            interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], _to_input(batch, input_detail))
        interpreter.invoke()
        outputs.append(_from_output(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs)


@dataclasses.dataclass(frozen=True)
class TfliteMeasurement:
    """Sizes of a TFLite file and the latency of its `invoke()` at batch 1."""

    raw_bytes: int
    gzip_bytes: int  # the file gzip'ed (level 9) in memory
    latency_median_us: float
    latency_p90_us: float
    latency_runs: int  # timed invoke() calls, after the warm-up
    num_threads: int

    def as_dict(self):
        return dataclasses.asdict(self)


def measure_content(content, example=None, num_threads=1, latency_runs=DEFAULT_LATENCY_RUNS):
    """Sizes of TFLite bytes and the latency of `invoke()` at batch 1.

    Args:
      content: TFLite flatbuffer bytes.
      example: one input example (without batch axis) to time on; default zeros
        (arithmetic on dense kernels takes the same time whatever the values).
      num_threads: LiteRT interpreter threads.
      latency_runs: timed `invoke()` calls, after max(10, latency_runs // 10) untimed ones.

    Returns:
      A `TfliteMeasurement`.
    """
    check_int(latency_runs, "latency_runs", 1)
    interpreter = _interpreter(content, num_threads)
    detail = interpreter.get_input_details()[0]
    if example is None:
        example = np.zeros(detail["shape"][1:], np.float32)
    interpreter.set_tensor(detail["index"], _to_input(np.asarray(example, np.float32)[np.newaxis], detail))
    for _ in range(max(MIN_WARMUP_RUNS, latency_runs // 10)):
        interpreter.invoke()
    nanoseconds = np.empty(latency_runs)
    for run in range(latency_runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        nanoseconds[run] = time.perf_counter_ns() - start
    microseconds = nanoseconds / 1000.0
    return TfliteMeasurement(
        raw_bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9, mtime=0)),
        latency_median_us=round(float(np.median(microseconds)), 3),
        latency_p90_us=round(float(np.percentile(microseconds, 90)), 3),
        latency_runs=latency_runs,
        num_threads=num_threads,
    )


def measure_tflite(model, quantize=None, representative_data=None, num_threads=1, latency_runs=DEFAULT_LATENCY_RUNS,
                   sparse_encoding=False):
    """Converts a plain tf_keras model and measures it, without checking its outputs.

    For benchmarks; `export.export_tflite` strips, fuses, verifies and writes.

    Args:
      model: a tf_keras model without pruning wrappers (see `convert`).
      quantize, representative_data, sparse_encoding: see `convert`.
      num_threads, latency_runs: see `measure_content`.

    Returns:
      A `TfliteMeasurement`.

    Raises:
      TypeError, ValueError: see `convert`; bad num_threads or latency_runs (before converting).
    """
    check_int(num_threads, "num_threads", 1)
    check_int(latency_runs, "latency_runs", 1)
    content = convert(model, quantize, representative_data, sparse_encoding)
    return measure_content(content, num_threads=num_threads, latency_runs=latency_runs)
