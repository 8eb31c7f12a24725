"""Shipping a pruned model: a verified TFLite file, its size and latency in LiteRT.

* `exporter`: `export_tflite` (strip, fuse, convert, verify against Keras, write), `ExportReport`.
* `tflite`: conversion (with a named serving signature, `Signature`), inference and
  measurement through the LiteRT interpreter.
"""

from keras_lottery.export.exporter import (  # noqa: F401
    DEFAULT_SAMPLES,
    EVALUATION_BATCH,
    MIN_ARGMAX_AGREEMENT,
    WIDTH_MULTIPLE,
    Comparison,
    ExportReport,
    Tolerance,
    VerificationError,
    compare,
    default_samples,
    export_tflite,
    keras_outputs,
    tolerance_for,
)
from keras_lottery.export.tflite import Signature  # noqa: F401
