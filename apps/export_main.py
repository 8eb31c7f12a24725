r"""Export a ticket to a verified TFLite file: strip the pruning, fuse neurons, quantize, measure.

    python -m apps.export_main --run_dir=runs/lenet --round=5 --quantize=float16
    python -m apps.export_main --model_path=my_model.keras --nofuse --output=my_model.tflite

`--run_dir` takes the --output_dir of apps.imp_main or apps.early_bird_main (the last
finished round by default); `--model_path` a model saved with `model.save` (.keras,
.h5, or a SavedModel folder). Calibration examples come from the run's training split
(data-aware merges, int8), sample examples from its test split (the check and the
report); with --model_path, name a dataset with --dataset, or the check uses random
inputs and int8 / data-aware merges are refused. The file is written only if the
LiteRT interpreter reproduces Keras within the tolerance (`keras_lottery.export`).
With a dataset, the file's accuracy on the whole test split (LiteRT, batched) is
reported next to the Keras model's.

The file's 'serving_default' signature takes `pixels_0_to_1`: float32 images of the
dataset's shape with a batch axis, pixels scaled to [0, 1] (uint8 / 255, as
keras_lottery.data loads them), and for a run returns `logits` (no softmax: argmax
is the class). A --model_path export names its output `outputs` (the saved model may
end in a softmax), and without --dataset its input `inputs`.

Results: the .tflite (default <run_dir>/export/round_<r>.tflite, early_bird.tflite for
an early-bird run, or <model file>.tflite; `_nofuse` and `_<quantize>` are added for
those settings) and a JSON report next to it (sizes raw and gzip, against the unfused
file's, invoke() latency at batch 1, differences from Keras, test accuracy, the
signature and preprocessing, fusion per layer, and notes on what the export decided:
padding dropped, fusion removing nothing).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

from apps import app_errors
from keras_lottery import data
from keras_lottery import export
from keras_lottery import fusion
from keras_lottery.experiments import run_models
from keras_lottery.export import tflite
from keras_lottery.foundations import files

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "Run folder (--output_dir of apps.imp_main / apps.early_bird_main).")
flags.DEFINE_integer("round", None, "IMP round to export (default: the last finished one).")
flags.DEFINE_string("model_path", None,
                    "A saved tf_keras model (.keras, .h5 or SavedModel folder), instead of --run_dir.")
flags.DEFINE_string("output", None, "The .tflite path (default: see the module docstring).")
flags.DEFINE_boolean("fuse", True, "Fuse neurons (remove dead units) before converting; --nofuse converts as is.")
flags.DEFINE_float("merge_fraction", None, "Fusion's merge budget: fraction of units merged per layer (lossy).")
flags.DEFINE_enum("merge_method", "data_free", list(fusion.METHODS),
                  "How fusion merges units (see keras_lottery.fusion); data_aware is the most accurate "
                  "(bench/RESULTS.md) and uses --calibration_examples.")
flags.DEFINE_integer("width_multiple", export.WIDTH_MULTIPLE, "Round fused layer widths to a multiple of this "
                     "(XNNPACK runs those at full speed); 0 leaves them as fusion makes them.")
flags.DEFINE_float("merge_tolerance", None, "Fusion's merge budget: largest relative change of a layer's "
                   "pre-activation on the calibration examples.")
flags.DEFINE_enum("quantize", "none", ["none", "dynamic", "float16", "int8"], "TFLite quantization.")
flags.DEFINE_integer("calibration_examples", 1000, "Training examples for data-aware merges and int8 calibration.")
flags.DEFINE_integer("sample_examples", 100, "Test examples the TFLite file is checked against Keras on (its "
                     "accuracy is measured on the whole test split).")
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_integer("latency_runs", tflite.DEFAULT_LATENCY_RUNS, "Timed invoke() calls.")
flags.DEFINE_string("data_dir", None, "Where the dataset is, if not where the run read it from.")
flags.DEFINE_string("dataset", None, "With --model_path: dataset for calibration and sample examples.")


PIXELS_PREPROCESSING = ("float32 pixels scaled to [0, 1] (uint8 value / 255), channels last, as keras_lottery.data "
                        "loads them")
LOGITS = "logits (no softmax): argmax is the class, softmax gives probabilities"


def signature(from_run, has_dataset, normalization=None):
    """The `tflite.Signature` of the file: what its input and output are called and mean.

    Args:
      from_run: True for --run_dir, whose registry models output logits.
      has_dataset: True if the inputs come from keras_lottery.data (pixels in [0, 1]).
      normalization: (mean, std) per channel the run trained its inputs with
        (`run_models.input_normalization`), or None for pixels in [0, 1].
    """
    if from_run and normalization is not None:
        mean, std = (", ".join(f"{value:.4f}" for value in values) for values in normalization)
        return tflite.Signature("normalized_pixels", "logits",
                                f"float32 (pixels / 255 - mean) / std per channel, channels last, mean ({mean}), "
                                f"std ({std}): as the run trained on them", LOGITS)
    if from_run:
        return tflite.Signature("pixels_0_to_1", "logits", PIXELS_PREPROCESSING, LOGITS)
    return tflite.Signature("pixels_0_to_1" if has_dataset else "inputs", "outputs",
                            PIXELS_PREPROCESSING if has_dataset else None,
                            "as the saved model computes them (not checked to be logits)")


def check_flags():
    """Refuses conflicting flags before any work.

    Raises:
      app.UsageError: naming the conflict and the fix.
    """
    if (FLAGS.run_dir is None) == (FLAGS.model_path is None):
        raise app.UsageError("give exactly one of --run_dir (a run folder) and --model_path (a saved model).")
    if FLAGS.model_path is not None and FLAGS.round is not None:
        raise app.UsageError("--round picks a round of --run_dir; a --model_path has none.")
    if FLAGS.run_dir is not None and FLAGS.dataset is not None:
        raise app.UsageError("--dataset is for --model_path; a run folder's dataset is in its summary.json.")
    merging = merge_budget() is not None
    if not FLAGS.fuse and (merging or FLAGS["merge_method"].present):
        raise app.UsageError("--merge_fraction, --merge_method and --merge_tolerance set fusion's merges: drop them "
                             "or drop --nofuse.")
    if FLAGS["merge_method"].present and not merging:
        raise app.UsageError("--merge_method needs --merge_fraction or --merge_tolerance (how much to merge).")
    if FLAGS.merge_fraction is not None and not 0 <= FLAGS.merge_fraction < 1:
        raise app.UsageError(f"--merge_fraction is the share of units removed, in [0, 1); got {FLAGS.merge_fraction}.")
    if FLAGS.merge_tolerance is not None and not FLAGS.merge_tolerance > 0:
        raise app.UsageError(f"--merge_tolerance must be > 0; got {FLAGS.merge_tolerance}.")
    for name in ("calibration_examples", "sample_examples", "num_threads", "latency_runs"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {FLAGS[name].value}.")
    if (FLAGS.quantize == "int8" or merge_needs_calibration()) and FLAGS.model_path is not None and (
            FLAGS.dataset is None):
        raise app.UsageError("--quantize=int8, --merge_method=data_aware and --merge_tolerance need calibration "
                             "examples: with --model_path, name their dataset with --dataset (and --data_dir).")


def merge_budget():
    """The `fusion.MergeBudget` the merge flags describe, or None (no merge pass)."""
    if FLAGS.merge_fraction is None and FLAGS.merge_tolerance is None:
        return None
    return fusion.MergeBudget(FLAGS.merge_fraction, FLAGS.merge_method, FLAGS.merge_tolerance)


def merge_needs_calibration():
    """True if the merge flags ask for a merge that runs on calibration examples."""
    data_aware = FLAGS.merge_fraction is not None and FLAGS.merge_method == "data_aware"
    return FLAGS.merge_tolerance is not None or data_aware


def _subset(array, count, seed):
    """Up to `count` rows of `array`, drawn without replacement with a fixed seed."""
    if count >= len(array):
        return array
    return array[np.sort(np.random.default_rng(seed).choice(len(array), count, replace=False))]


def load_model():
    """(model, splits or None, default output path, the run's test accuracy or None, input normalization or None).

    A run's splits come as the run trained on them (normalized per channel where the flows
    normalize: `run_models.splits_as_trained`), so that the accuracy check and the
    calibration feed the model what it expects.
    """
    if FLAGS.run_dir is not None:
        loaded = run_models.load_run_model(FLAGS.run_dir, FLAGS.round, FLAGS.data_dir)
        stem = "early_bird" if loaded.kind == "early_bird" else f"round_{loaded.round_index}"
        logging.info("%s: %s run, %s, %.2f%% weights remaining, test accuracy %.4f", FLAGS.run_dir, loaded.kind,
                     stem, 100 * loaded.record["weights_remaining"], loaded.record["test_accuracy"])
        return (loaded.model, run_models.splits_as_trained(loaded), os.path.join(FLAGS.run_dir, "export", stem),
                loaded.record["test_accuracy"], run_models.input_normalization(loaded))
    model = run_models.load_model_file(FLAGS.model_path)
    splits = data.load(FLAGS.dataset, FLAGS.data_dir) if FLAGS.dataset else None
    return model, splits, os.path.splitext(os.path.normpath(FLAGS.model_path))[0], None, None


def output_path(default_stem):
    if FLAGS.output:
        return FLAGS.output
    suffixes = ("" if FLAGS.fuse else "_nofuse") + ("" if FLAGS.quantize == "none" else f"_{FLAGS.quantize}")
    return f"{default_stem}{suffixes}.tflite"


def log_report(report, recorded_accuracy=None):
    """Logs what the export wrote and measured; its notes (decisions, fusion removing nothing) as warnings.

    Args:
      report: the `export.ExportReport`.
      recorded_accuracy: the run's own test accuracy of the round, or None.
    """
    logging.info("wrote %s: %d bytes (%d gzip'ed); invoke() at batch 1 on %d thread(s): median %.1f us, p90 %.1f us",
                 report.path, report.raw_bytes, report.gzip_bytes, report.num_threads, report.latency_median_us,
                 report.latency_p90_us)
    if report.unfused_raw_bytes is not None:
        logging.info("%s file: %d bytes and %d multiply-adds per example; the unfused one: %d bytes, %d multiply-adds",
                     "fused" if report.fused else "unfused (see the notes)", report.raw_bytes, report.multiply_adds,
                     report.unfused_raw_bytes, report.unfused_multiply_adds)
    logging.info("max |TFLite - Keras| on %d samples: %.3g (converted model), %.3g (original); argmax agreement "
                 "%.1f%% / %.1f%%; check: %s", report.samples, report.max_abs_diff, report.max_abs_diff_original,
                 100 * report.argmax_agreement, 100 * report.argmax_agreement_original, report.tolerance.rule)
    if report.accuracy_tflite is not None:
        logging.info("accuracy on the full test set (%d examples): TFLite %.4f, Keras %.4f%s", report.evaluation_examples,
                     report.accuracy_tflite, report.accuracy_keras,
                     "" if recorded_accuracy is None else f" (the run recorded {recorded_accuracy:.4f})")
    log_signature(report)
    if report.fusion is not None:
        log_fusion(report.fusion)
    for note in report.notes:
        logging.warning("export: %s", note)


def log_signature(report):
    """Logs the file's serving signature: names, shapes, dtypes, preprocessing and what the outputs are."""
    if report.signature is None:
        return
    for kind, described in (("inputs", report.preprocessing), ("outputs", report.outputs)):
        for name, detail in report.signature[kind].items():
            logging.info("signature %r %s %r: %s %s (-1: any batch)%s", report.signature["key"], kind[:-1], name,
                         detail["dtype"], detail["shape"], f"; {described}" if described else "")


def log_fusion(fusion_dict):
    """Logs fusion's per-layer units, parameters and multiply-adds, the totals and the notes."""
    for row in fusion_dict.get("layers", []):
        logging.info("fusion %s (%s): units %s -> %s, parameters %s -> %s, multiply-adds %s -> %s",
                     row.get("name"), row.get("kind"), row.get("units_before"), row.get("units_after"),
                     row.get("params_before"), row.get("params_after"), row.get("multiply_adds_before"),
                     row.get("multiply_adds_after"))
    logging.info("fusion total: parameters %s -> %s, multiply-adds %s -> %s (%.3fx)", fusion_dict.get("params_before"),
                 fusion_dict.get("params_after"), fusion_dict.get("multiply_adds_before"),
                 fusion_dict.get("multiply_adds_after"), fusion_dict.get("multiply_adds_ratio", float("nan")))
    for note in fusion_dict.get("notes", []):
        logging.info("fusion note: %s", note)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    check_flags()
    try:
        model, splits, default_stem, recorded_accuracy, normalization = load_model()
    except (ValueError, data.DataUnavailableError, FileNotFoundError) as error:  # folder, file or dataset
        raise app.UsageError(str(error)) from error
    quantize = None if FLAGS.quantize == "none" else FLAGS.quantize
    calibration = _subset(splits.train_x, FLAGS.calibration_examples, seed=0) if splits is not None else None
    samples = _subset(splits.test_x, FLAGS.sample_examples, seed=1) if splits is not None else None
    path = output_path(default_stem)
    try:
        report = export.export_tflite(
            model, path, fuse=FLAGS.fuse, merge=merge_budget(),
            calibration_data=calibration if merge_needs_calibration() else None,
            quantize=quantize, representative_data=calibration if quantize == "int8" else None,
            sample_data=samples, num_threads=FLAGS.num_threads, latency_runs=FLAGS.latency_runs,
            width_multiple=FLAGS.width_multiple or None,
            signature=signature(FLAGS.run_dir is not None, splits is not None, normalization),
            evaluation_data=(splits.test_x, splits.test_y) if splits is not None else None,
        )
    except fusion.FusionError as error:
        logging.error("%s --nofuse exports the model without fusion.", error)
        sys.exit(1)
    except (ValueError, TypeError) as error:  # the model or the settings do not fit (checked before any work)
        raise app.UsageError(str(error)) from error
    except export.VerificationError as error:
        logging.error("%s", error)
        sys.exit(1)
    report_path = os.path.splitext(path)[0] + ".json"
    files.write_json(report_path, report.as_dict())
    log_report(report, recorded_accuracy)
    logging.info("report: %s", report_path)


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main, "error: interrupted; rerun the same command (a file is written whole or not at all)"))
