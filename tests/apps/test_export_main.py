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


def test_export_main_int8_of_an_earlier_round(run_dir, tmp_path):
    output = tmp_path / "int8.tflite"
    _export_in_process(f"--run_dir={run_dir}", "--round=0", "--nofuse", "--quantize=int8", f"--output={output}")
    assert output.exists()
    report = json.loads((tmp_path / "int8.json").read_text())
    assert report["quantize"] == "int8" and report["argmax_agreement"] >= 0.9


def test_export_main_fused_exports_and_logs_fusion(run_dir, tmp_path, caplog):
    # In this process (the app's start-up is tested above): main's log lines reach caplog.
    output = tmp_path / "fused.tflite"
    with caplog.at_level(logging.INFO):
        _export_in_process(f"--run_dir={run_dir}", f"--output={output}", "--verbosity=0")  # INFO, as app.run logs
    report = json.loads((tmp_path / "fused.json").read_text())
    assert report["fusion"] is not None and report["original_checked"]
    assert "fusion total" in caplog.text and f"wrote {output}" in caplog.text


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
