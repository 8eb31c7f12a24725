"""Export a (pruned) model to a verified TFLite file: strip, fuse, convert, check, write.

    report = export_tflite(pruned_model, "lenet.tflite", quantize="float16", sample_data=test_x[:100])
    report.as_dict()  # sizes, latency, accuracy of the conversion, fusion per layer

Unstructured zeros make no TFLite model faster (RESEARCH.md section 5): the speed
comes from neuron fusion (`keras_lottery.fusion`), which rewrites a pruned model into
a physically smaller dense one. `export_tflite` strips the pruning wrappers, fuses,
converts (`tflite.convert`), runs the file in the LiteRT interpreter on sample
inputs one at a time at batch 1 and compares with Keras — both the model that was
converted and the model that was passed in — and writes the file (atomically) only
if the outputs agree. A failed check raises `VerificationError` and leaves nothing
at `path`.

Tolerances (`tolerance_for`), with `scale` the largest |output| of the Keras model
over the samples:

* float32: max |TFLite - Keras| <= 1e-4 * max(1, scale). Only float rounding differs
  (XNNPACK sums in another order): 1e-4 absolute for outputs up to 1, and the same
  relative bound for larger logits, whose rounding grows with their size (LeNet-300-100
  logits of ~50 differ by ~1e-5).
* float16: max diff <= 1e-2 * scale. Weights are rounded to 11 significant bits
  (~5e-4 relative each); the sum of many such errors stays well within 1%.
* dynamic, int8: int8 weights (and int8 activations) move outputs by up to a few
  percent of the scale, so no tight bound holds. The check is that the predicted class
  (argmax) agrees on >= 90% of the samples, with max diff <= 0.1 * scale as a sanity
  bound (a wrong conversion is off by more). The exact figures are in the report.

When `merge` is given the fused model approximates the stripped one by design; its
distance to the input model is reported but not checked (`MergeBudget.tolerance`
bounds it inside fusion). Without merges, fusion is exact and the input model must
pass the same check.

A fused file is never larger than the unfused one without the report saying why
(`ExportReport.notes`):

* Padding to `width_multiple` is kept only if the padded model has fewer
  multiply-adds and no more parameters than the unfused one. At low unstructured
  sparsity fusion removes nothing, and padding LeNet's 300-100 to 304-112 would cost
  1.03x the multiply-adds and a 2.7% larger file: such a model is fused again without
  padding, and a note gives both sizes.
* The unfused (stripped) model is converted too, and its file size reported; if the
  fused file would still be larger in bytes or multiply-adds, the unfused one is
  exported instead (`ExportReport.fused` is False), with a note.
* When fusion removed no unit, a note says so.

The file's 'serving_default' signature names its input and output (`tflite.Signature`,
e.g. 'pixels_0_to_1' and 'logits'); the report records them as read back from the
file, with the input shape, dtype, preprocessing and what the outputs are. With
`evaluation_data`, the file's accuracy on it (batched in LiteRT) is reported next to
the Keras model's.
"""

import dataclasses
import os

import numpy as np

from keras_lottery import compat
from keras_lottery import fusion
from keras_lottery.compat import keras3_conversion
from keras_lottery.export import tflite
from keras_lottery.foundations import files
from keras_lottery.fusion import report as fusion_counts
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import wrappers

keras = compat.keras

FLOAT32_TOLERANCE = 1e-4
FLOAT16_TOLERANCE = 1e-2
QUANTIZED_SANITY_TOLERANCE = 0.1
MIN_ARGMAX_AGREEMENT = 0.9
WIDTH_MULTIPLE = 16  # XNNPACK's fully connected kernel is ~2x slower per unit at many other widths
DEFAULT_SAMPLES = 16
_PREDICT_BATCH = 256
EVALUATION_BATCH = 256  # examples per LiteRT invoke() when measuring accuracy: fast, and any batch gives the same outputs


class VerificationError(RuntimeError):
    """The TFLite file's outputs differ from the Keras model's beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """The check a conversion must pass (see the module docstring)."""

    max_abs_diff: float  # the bound, in output units (already scaled)
    min_argmax_agreement: float | None  # fraction of samples whose argmax must agree; None: not checked
    rule: str  # how `max_abs_diff` was derived, for the report


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How far TFLite outputs are from a Keras model's on the samples."""

    max_abs_diff: float
    argmax_agreement: float

    def failures(self, tolerance):
        """What breaks `tolerance`, as phrases (empty if it passes)."""
        problems = []
        if not self.max_abs_diff <= tolerance.max_abs_diff:  # also catches NaN
            problems.append(f"max |difference| {self.max_abs_diff:.3g} > {tolerance.max_abs_diff:.3g}")
        if tolerance.min_argmax_agreement is not None and self.argmax_agreement < tolerance.min_argmax_agreement:
            problems.append(f"argmax agrees on {self.argmax_agreement:.0%} of the samples "
                            f"< {tolerance.min_argmax_agreement:.0%}")
        return problems


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `export_tflite` wrote and measured. `as_dict()` gives JSON-ready values."""

    path: str
    quantize: str | None
    raw_bytes: int
    gzip_bytes: int
    latency_median_us: float  # invoke() at batch 1, after warm-up
    latency_p90_us: float
    latency_runs: int
    num_threads: int
    samples: int  # inputs the outputs were compared on
    max_abs_diff: float  # vs the Keras model that was converted (stripped, fused)
    argmax_agreement: float
    max_abs_diff_original: float  # vs the model passed in
    argmax_agreement_original: float
    original_checked: bool  # False when lossy merges made the converted model differ by design
    tolerance: Tolerance
    fusion: dict | None  # fusion_report(stripped, fused).as_dict(), None when not fused
    fused: bool  # the file is fusion's model (False: fuse=False, or fusion's model would have been larger)
    multiply_adds: int  # Dense/Conv2D multiply-adds per example of the exported model
    unfused_raw_bytes: int | None  # the stripped model's file, converted alike (None with fuse=False)
    unfused_multiply_adds: int | None
    notes: list  # what the export decided instead of what was asked, and why
    input_shape: tuple  # one example's; the file takes (batch, *input_shape), any batch
    input_dtype: str
    preprocessing: str | None  # how inputs are made from raw data (tflite.Signature); None: not stated
    outputs: str | None  # what the outputs are, e.g. 'logits (no softmax)'; None: not stated
    signature: dict | None  # the file's serving signature, read back (tflite.signature_details)
    evaluation_examples: int | None  # len(evaluation_data); None without
    accuracy_tflite: float | None  # argmax accuracy of the file on evaluation_data
    accuracy_keras: float | None  # of the model passed in, on the same data

    def as_dict(self):
        return dataclasses.asdict(self)


def tolerance_for(quantize, scale):
    """The `Tolerance` for a quantize mode, given the largest |output| of the Keras model."""
    tflite.check_quantize(quantize)
    scale = float(scale)
    if quantize is None:
        return Tolerance(FLOAT32_TOLERANCE * max(1.0, scale), None,
                         f"float32: {FLOAT32_TOLERANCE:g} x max(1, output scale {scale:.4g})")
    if quantize == "float16":
        return Tolerance(FLOAT16_TOLERANCE * scale, None, f"float16: {FLOAT16_TOLERANCE:g} x output scale {scale:.4g}")
    return Tolerance(QUANTIZED_SANITY_TOLERANCE * scale, MIN_ARGMAX_AGREEMENT,
                     f"{quantize}: argmax agreement >= {MIN_ARGMAX_AGREEMENT:g}, max diff <= "
                     f"{QUANTIZED_SANITY_TOLERANCE:g} x output scale {scale:.4g}")


def compare(lite_outputs, keras_outputs):
    """A `Comparison` of two output arrays of the same shape (argmax over the last axis)."""
    lite_outputs, keras_outputs = np.asarray(lite_outputs), np.asarray(keras_outputs)
    if lite_outputs.shape != keras_outputs.shape:
        return Comparison(float("inf"), 0.0)
    agreement = np.mean(np.argmax(lite_outputs, axis=-1) == np.argmax(keras_outputs, axis=-1))
    return Comparison(float(np.max(np.abs(lite_outputs - keras_outputs))), float(agreement))


def keras_outputs(model, inputs):
    """The model's inference outputs (masks applied, dropout off) as float32 NumPy."""
    return np.concatenate([np.asarray(model(inputs[start:start + _PREDICT_BATCH], training=False), np.float32)
                           for start in range(0, len(inputs), _PREDICT_BATCH)])


def default_samples(model, quantize=None, representative_data=None, count=DEFAULT_SAMPLES, seed=0):
    """Inputs to verify on when none are given.

    Seeded standard-normal inputs of the model's input shape; for int8, the first
    `count` examples of `representative_data` instead, since int8 ranges are
    calibrated on those and inputs outside them saturate.
    """
    shape = tflite.input_shape(model)
    if quantize == "int8" and representative_data is not None:
        rows = []
        for row in tflite.representative_rows(representative_data, shape):
            rows.append(row[0])
            if len(rows) == count:
                break
        return np.stack(rows)
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def _check_evaluation_data(evaluation_data, shape):
    """(inputs, labels) checked: examples of the model's input shape and as many integer labels."""
    if not (isinstance(evaluation_data, (tuple, list)) and len(evaluation_data) == 2):
        raise ValueError("evaluation_data must be a pair (inputs, labels), e.g. (splits.test_x, splits.test_y); "
                         f"got {type(evaluation_data).__name__}.")
    inputs = tflite.check_inputs(evaluation_data[0], shape, "evaluation_data's inputs")
    labels = np.asarray(evaluation_data[1])
    if labels.shape != (len(inputs),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"evaluation_data's labels must be {len(inputs)} integer class indices, one per input; "
                         f"got shape {labels.shape} and dtype {labels.dtype}.")
    return inputs, labels


def _check_arguments(model, path, fuse, merge, calibration_data, quantize, representative_data, num_threads,
                     latency_runs, width_multiple):
    compat.check_model(model, "The model to export")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a file path for the .tflite file; got {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"path {os.fspath(path)!r} is a folder; give a file path such as model.tflite.")
    if not fuse and (merge is not None or calibration_data is not None):
        raise ValueError("merge and calibration_data are fusion settings: pass fuse=True, or drop them.")
    if merge is not None:
        if not isinstance(merge, fusion.MergeBudget):
            raise TypeError(f"merge must be a keras_lottery.fusion.MergeBudget or None; got {type(merge).__name__}.")
        merge.check(calibration_data)
    check_int(num_threads, "num_threads", 1)
    check_int(latency_runs, "latency_runs", 1)
    if width_multiple is not None:
        check_int(width_multiple, "width_multiple", 1)
    tflite.check_quantization(quantize, representative_data, tflite.input_shape(model))


def _larger(model, than):
    """True if `model` costs more than `than`: more multiply-adds or more parameters."""
    return (fusion_counts.model_multiply_adds(model) > fusion_counts.model_multiply_adds(than)
            or model.count_params() > than.count_params())


def _sizes(model):
    return (f"{'-'.join(map(str, fusion_counts.widths(model).values()))} units, "
            f"{fusion_counts.model_multiply_adds(model):,} multiply-adds, {model.count_params():,} parameters")


def _fuse(stripped, merge, calibration_data, width_multiple):
    """(fused model, notes): fusion's model, padded to `width_multiple` only where padding pays.

    Padding pays when the padded model has fewer multiply-adds and no more parameters
    than the unfused one. Otherwise (fusion removed too little to absorb the zero
    units) the model is fused again without padding, so the file never grows because
    of it.
    """
    fused = fusion.fuse_neurons(stripped, merge=merge, calibration_data=calibration_data,
                                width_multiple=width_multiple)
    if not width_multiple or (fusion_counts.model_multiply_adds(fused) < fusion_counts.model_multiply_adds(stripped)
                              and fused.count_params() <= stripped.count_params()):
        return fused, []
    notes = []
    if _larger(fused, stripped):
        notes.append(f"padding to a multiple of {width_multiple} units would make the fused model larger than the "
                     f"unfused one ({_sizes(fused)}, against {_sizes(stripped)}): exported without padding. "
                     "(XNNPACK may run padded widths faster, bench/RESULTS.md: to ship them anyway, pass "
                     f"fuse_neurons(model, width_multiple={width_multiple}) to export_tflite with fuse=False.)")
    # Not smaller: whatever the padding did, the widths fusion made are the better file.
    return fusion.fuse_neurons(stripped, merge=merge, calibration_data=calibration_data), notes


def _input_dtype(read_back, signature):
    """The dtype callers feed, as the file declares it (float32 in every quantize mode, see `tflite`)."""
    return read_back["inputs"][signature.input_name]["dtype"]


def _accuracy(outputs, labels):
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def export_tflite(model, path, fuse=True, merge=None, calibration_data=None, quantize=None,
                  representative_data=None, sample_data=None, num_threads=1,
                  latency_runs=tflite.DEFAULT_LATENCY_RUNS, width_multiple=WIDTH_MULTIPLE, sparse_encoding=False,
                  signature=None, evaluation_data=None):
    """Strips, fuses, converts and verifies `model`, then writes it to `path` as TFLite.

    Args:
      model: a tf_keras Sequential or functional model with one input and one output,
        pruned (wrapped by `prune_low_magnitude` / `prune_low_sign_flip`) or plain.
        It is not modified. A Keras 3 Sequential or functional model is converted to
        tf_keras first (see `keras3_conversion.to_tf_keras`, which warns); the report's
        "model passed in" is then the converted model.
      path: where the .tflite file goes (written atomically, only if verified).
      fuse: rewrite the stripped model with `fusion.fuse_neurons` (removes dead units).
      merge: optional `fusion.MergeBudget` (lossy neuron merging); needs fuse=True.
      calibration_data: inputs for fusion's data-aware merge; needs fuse=True.
      width_multiple: fused layer widths are rounded to a multiple of this (None: not);
        16 by default, where XNNPACK's fully connected kernel runs at full speed
        (bench/RESULTS.md: without it a fused LeNet can be slower than the sparse one).
        Padding that would make the fused model larger than the unfused one is
        dropped, with a note (see the module docstring).
      quantize: None (float32), 'dynamic', 'float16' or 'int8' (see `tflite`).
      representative_data: calibration inputs for quantize='int8' (required there):
        an array of examples or a `tf.data.Dataset`.
      sample_data: array of inputs (N, ...) to verify on and report with; default
        `default_samples(...)` (16 seeded random inputs; for int8, representative examples).
      num_threads: LiteRT interpreter threads for the check and the latency.
      latency_runs: timed `invoke()` calls (after warm-up).
      sparse_encoding: store sparse weights in TFLite's sparse format (see
        `tflite.convert`); for block and 2:4 patterns, with fuse=False (fusion only
        removes whole units).
      signature: a `tflite.Signature`: the names of the file's serving signature input
        and output, and (for the report) the preprocessing and what the outputs are;
        default `tflite.Signature()` ('inputs', 'outputs', not described).
      evaluation_data: optional (inputs, integer labels), e.g. the full test set: the
        file's argmax accuracy on it (LiteRT, batches of `EVALUATION_BATCH`) is reported
        next to the accuracy of the model passed in.

    Returns:
      An `ExportReport`.

    Raises:
      TypeError: not a tf_keras Sequential/functional model (nor a Keras 3 one that can
        be converted), or a merge that is not a `MergeBudget`.
      ValueError: bad arguments (quantize lists the choices, int8 without
        representative_data, fusion settings with fuse=False, an unusable merge
        budget, bad sample shape, bad evaluation data or signature names, ...), all
        before any work.
      fusion.FusionError: a layer fusion cannot rewrite (export with fuse=False).
      VerificationError: TFLite outputs differ beyond the tolerance; nothing is written.
    """
    tflite.check_quantize(quantize)  # before converting a Keras 3 model: a bad mode is the likeliest mistake
    model = keras3_conversion.to_tf_keras(model, "The model to export")
    _check_arguments(model, path, fuse, merge, calibration_data, quantize, representative_data, num_threads,
                     latency_runs, width_multiple)
    signature = tflite.check_signature(signature)
    shape = tflite.input_shape(model)
    if sample_data is not None:
        samples = tflite.check_inputs(sample_data, shape, "sample_data")
    else:
        samples = default_samples(model, quantize, representative_data)
    if evaluation_data is not None:
        evaluation_data = _check_evaluation_data(evaluation_data, shape)

    def to_tflite(keras_model):
        return tflite.convert(keras_model, quantize, representative_data, sparse_encoding, signature)

    stripped = wrappers.strip_pruning(model)
    converted, notes, unfused_content = stripped, [], None
    if fuse:
        converted, notes = _fuse(stripped, merge, calibration_data, width_multiple)
    content = to_tflite(converted)
    fused_model = converted
    if fuse:
        # The unfused file, converted alike: its size is what fusion is judged against.
        unfused_content = to_tflite(stripped)
        if len(content) > len(unfused_content) or _larger(converted, stripped):
            notes.append(f"the fused file would be larger than the unfused one ({len(content):,} bytes, "
                         f"{_sizes(converted)}; against {len(unfused_content):,} bytes, {_sizes(stripped)}): "
                         "exported the unfused model.")
            converted, content = stripped, unfused_content

    lite = tflite.predict(content, samples, num_threads)
    reference = keras_outputs(converted, samples)
    tolerance = tolerance_for(quantize, np.max(np.abs(reference)))
    against_converted = compare(lite, reference)
    against_original = compare(lite, keras_outputs(model, samples))
    original_checked = merge is None or converted is stripped
    problems = [f"vs the converted Keras model: {problem}" for problem in against_converted.failures(tolerance)]
    if original_checked:
        problems += [f"vs the model passed in: {problem}" for problem in against_original.failures(tolerance)]
    if problems:
        raise VerificationError(
            f"the TFLite conversion (quantize={quantize!r}, fuse={fuse}) does not reproduce the Keras model on "
            f"{len(samples)} samples: {'; '.join(problems)} ({tolerance.rule}). Nothing was written to {path}. "
            + ("Try fuse=False to tell a fusion problem from a conversion one." if fuse else
               "Try a less aggressive quantize mode, or pass sample_data from the real input distribution.")
        )

    measurement = tflite.measure_content(content, samples[0], num_threads, latency_runs)
    fusion_dict = None
    if fuse:
        fusion_dict = fusion.fusion_report(stripped, fused_model, samples).as_dict()
        if not fusion_dict["units_removed"]:
            notes.append(f"fusion removed no unit: every Dense/Conv2D layer keeps its width "
                         f"({'-'.join(map(str, fusion_counts.widths(stripped).values()))}), so the file is as large "
                         "and as slow as the unfused one. Unstructured zeros rarely empty a whole unit; a merge budget "
                         "(merge=MergeBudget(...)) or structured pruning removes units.")
    accuracies = (None, None)
    if evaluation_data is not None:
        inputs, labels = evaluation_data
        accuracies = (_accuracy(tflite.predict(content, inputs, num_threads, EVALUATION_BATCH), labels),
                      _accuracy(keras_outputs(model, inputs), labels))
    read_back = tflite.signature_details(content)
    files.write_bytes(os.fspath(path), content)
    return ExportReport(
        path=os.fspath(path), quantize=quantize, **measurement.as_dict(), samples=len(samples),
        max_abs_diff=against_converted.max_abs_diff, argmax_agreement=against_converted.argmax_agreement,
        max_abs_diff_original=against_original.max_abs_diff,
        argmax_agreement_original=against_original.argmax_agreement,
        original_checked=original_checked, tolerance=tolerance, fusion=fusion_dict,
        fused=fuse and converted is not stripped, multiply_adds=fusion_counts.model_multiply_adds(converted),
        unfused_raw_bytes=None if unfused_content is None else len(unfused_content),
        unfused_multiply_adds=fusion_counts.model_multiply_adds(stripped) if fuse else None, notes=notes,
        input_shape=shape, input_dtype=_input_dtype(read_back, signature), preprocessing=signature.preprocessing, outputs=signature.outputs,
        signature=read_back, evaluation_examples=None if evaluation_data is None else len(evaluation_data[0]),
        accuracy_tflite=accuracies[0], accuracy_keras=accuracies[1],
    )
