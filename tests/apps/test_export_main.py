"""End-to-end tests of apps.export_main on a tiny IMP run, and of its flag checks."""

import json
import logging
import sys

import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from apps import export_main
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_models
from tests import processes
from tests.experiments.test_run_models import imp_config

pytestmark = pytest.mark.usefixtures("app_server")


@pytest.fixture(scope="module")
def run_dir(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("export_run")
    imp.run(imp_config(tiny_fashion, output))
    return output


def _export_in_process(*arguments):
    """Runs the app's main in this process (no TensorFlow start-up), flags restored afterwards."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["export_main", "--sample_examples=20", "--calibration_examples=100", "--latency_runs=20",
                     *arguments])
        export_main.main(["export_main"])


def _export(*arguments):
    command = [sys.executable, "-m", "apps.export_main", "--sample_examples=20", "--calibration_examples=100",
               "--latency_runs=20", *arguments]
    return processes.run(command, cwd=processes.REPOSITORY)  # in the app server (tests/processes.py)


def test_export_main_writes_a_verified_file_and_its_report(run_dir):
    result = _export(f"--run_dir={run_dir}", "--nofuse")
    assert result.returncode == 0, result.stderr[-3000:]
    path = run_dir / "export" / "round_1_nofuse.tflite"  # the last round, by default
    report = json.loads((run_dir / "export" / "round_1_nofuse.json").read_text())
    assert path.exists() and report["path"] == str(path) and report["raw_bytes"] == path.stat().st_size
    assert report["samples"] == 20 and report["latency_runs"] == 20 and report["fusion"] is None
    assert report["max_abs_diff"] <= report["tolerance"]["max_abs_diff"]
    assert f"wrote {path}" in result.stderr and "round_1" in result.stderr
    assert not report["fused"] and report["unfused_raw_bytes"] is None and not report["notes"]
    assert f"accuracy on the full test set ({report['evaluation_examples']} examples)" in result.stderr


def test_export_main_int8_of_an_earlier_round(run_dir, tmp_path):
    output = tmp_path / "int8.tflite"
    _export_in_process(f"--run_dir={run_dir}", "--round=0", "--nofuse", "--quantize=int8", f"--output={output}")
    assert output.exists()
    report = json.loads((tmp_path / "int8.json").read_text())
    assert report["quantize"] == "int8" and report["argmax_agreement"] >= 0.9


def test_export_main_fused_exports_no_larger_file_and_says_fusion_removed_nothing(run_dir, tmp_path, caplog):
    """Round 1 of the tiny run (20% pruned, unstructured): LeNet's 300-100 keep every unit.

    Padding them to 304-112 (the default --width_multiple=16) would make the file larger.
    In this process (the app's start-up is tested above): main's log lines reach caplog.
    """
    output = tmp_path / "fused.tflite"
    with caplog.at_level(logging.INFO):
        _export_in_process(f"--run_dir={run_dir}", f"--output={output}", "--verbosity=0")  # INFO, as app.run logs
    report = json.loads((tmp_path / "fused.json").read_text())
    assert report["fusion"] is not None and report["original_checked"]
    assert "fusion total" in caplog.text and f"wrote {output}" in caplog.text
    assert [row["units_after"] for row in report["fusion"]["layers"]] == [300, 100, 10]  # not 304-112
    assert report["raw_bytes"] <= report["unfused_raw_bytes"] and report["raw_bytes"] == output.stat().st_size
    assert report["multiply_adds"] <= report["unfused_multiply_adds"]
    assert report["fusion"]["units_removed"] == 0
    padding, nothing = report["notes"]
    assert "304-112-10 units" in padding and "without padding" in padding
    assert nothing.startswith("fusion removed no unit")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(message.startswith("export: fusion removed no unit") for message in warnings)
    assert any("would make the fused model larger" in message for message in warnings)


def test_export_main_reports_full_test_accuracy_and_a_named_signature(run_dir, tmp_path, caplog):
    from ai_edge_litert import interpreter as litert

    output = tmp_path / "m.tflite"
    with caplog.at_level(logging.INFO):
        _export_in_process(f"--run_dir={run_dir}", f"--output={output}", "--nofuse", "--verbosity=0")
    report = json.loads((tmp_path / "m.json").read_text())
    loaded = run_models.load_run_model(str(run_dir))
    assert report["samples"] == 20 and report["evaluation_examples"] == len(loaded.splits.test_y) > 20
    assert report["accuracy_keras"] == pytest.approx(loaded.record["test_accuracy"], abs=1e-6)
    assert abs(report["accuracy_tflite"] - report["accuracy_keras"]) <= 1 / len(loaded.splits.test_y)
    assert f"accuracy on the full test set ({len(loaded.splits.test_y)} examples): TFLite" in caplog.text
    interpreter = litert.Interpreter(model_path=str(output))
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["pixels_0_to_1"], "outputs": ["logits"]}}
    assert report["signature"]["inputs"]["pixels_0_to_1"] == {"shape": [-1, 28, 28, 1], "dtype": "float32"}
    assert report["input_shape"] == [28, 28, 1] and report["input_dtype"] == "float32"
    assert "[0, 1]" in report["preprocessing"] and "/ 255" in report["preprocessing"]
    assert report["outputs"].startswith("logits (no softmax)")
    assert "signature 'serving_default' input 'pixels_0_to_1': float32 [-1, 28, 28, 1]" in caplog.text


def test_a_saved_model_file_does_not_claim_logits():
    assert export_main.signature(from_run=True, has_dataset=True).output_name == "logits"
    with_data = export_main.signature(from_run=False, has_dataset=True)
    assert (with_data.input_name, with_data.output_name) == ("pixels_0_to_1", "outputs")
    assert "not checked to be logits" in with_data.outputs
    without = export_main.signature(from_run=False, has_dataset=False)
    assert without.input_name == "inputs" and without.preprocessing is None


def test_a_run_on_normalized_images_names_its_input_as_normalized():
    normalized = export_main.signature(from_run=True, has_dataset=True,
                                       normalization=((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)))
    assert normalized.input_name == "normalized_pixels" and normalized.output_name == "logits"
    assert "(pixels / 255 - mean) / std" in normalized.preprocessing and "0.4914, 0.4822, 0.4465" in normalized.preprocessing


@pytest.mark.parametrize("arguments, message", [
    ([], "exactly one of --run_dir"),
    (["--run_dir=a", "--model_path=b.keras"], "exactly one of --run_dir"),
    (["--model_path=b.keras", "--round=1"], "--round"),
    (["--run_dir=a", "--dataset=mnist"], "--dataset is for --model_path"),
    (["--run_dir=a", "--nofuse", "--merge_fraction=0.5"], "drop --nofuse"),
    (["--run_dir=a", "--nofuse", "--merge_method=l1"], "drop --nofuse"),
    (["--run_dir=a", "--merge_method=l1"], "needs --merge_fraction"),
    (["--run_dir=a", "--merge_fraction=1.5"], r"\[0, 1\)"),
    (["--run_dir=a", "--merge_tolerance=0"], "> 0"),
    (["--run_dir=a", "--sample_examples=0"], "--sample_examples must be >= 1"),
    (["--model_path=b.keras", "--quantize=int8"], "--dataset"),
    (["--model_path=b.keras", "--merge_fraction=0.5", "--merge_method=data_aware"], "--dataset"),
])
def test_conflicting_flags_are_usage_errors(arguments, message):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["export_main", *arguments])
        with pytest.raises(app.UsageError, match=message):
            export_main.check_flags()


def test_a_missing_run_folder_is_a_usage_error(tmp_path):
    with pytest.raises(app.UsageError, match="does not exist"):
        _export_in_process(f"--run_dir={tmp_path / 'nowhere'}")
    assert not (tmp_path / "nowhere").exists()
