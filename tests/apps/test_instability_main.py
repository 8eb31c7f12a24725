"""apps.instability_main end to end on a tiny IMP run, and its one-line errors."""

import json
import os
import sys

import pytest

from keras_lottery.experiments import imp
from keras_lottery.experiments import instability
from keras_lottery.report import instability as instability_report
from tests import processes
from tests.experiments.test_instability import SOURCE

pytestmark = pytest.mark.usefixtures("app_server")  # the app runs fork from the app server (tests/processes.py)


@pytest.fixture(scope="module")
def source(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("instability_app") / "imp"
    imp.run(imp.ImpConfig(output_dir=str(output), data_dir=tiny_fashion, **SOURCE))
    return str(output)


def _app(*arguments):
    return processes.run([sys.executable, "-m", "apps.instability_main", *arguments], cwd=processes.REPOSITORY,
                         env=dict(os.environ))


def test_the_app_analyzes_a_run_logs_each_cell_and_writes_the_report(source, tmp_path):
    output = tmp_path / "out"
    result = _app("--runs", source, f"--output_dir={output}", "--levels=1", "--rewind_iterations=10",
                  "--interpolation_points=3", "--test_examples=100")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(output / instability.INSTABILITY_FILE))
    (cell,) = results["cells"]
    assert (cell["level"], cell["k"], len(cell["alphas"])) == (1, 10, 3)
    assert results["settings"]["test_examples"] == 100
    assert f"level 1 (80% weights), k=10: error barrier {cell['error_barrier']:.4f}" in result.stderr
    assert "ticket to dense: error barrier" in result.stderr
    assert "### Error barrier (%)" in (output / instability_report.REPORT_FILE).read_text()
    assert len(list(output.glob("*.png"))) == 3


def test_the_app_ends_on_bad_input_with_one_line(source, tmp_path):
    for flags, words in ((["--rewind_iterations=0,-3"], "rewind_iterations must be comma-separated"),
                         (["--levels=7"], "levels [7]:"),
                         (["--interpolation_points=1"], "interpolation_points"),
                         (["--masks=randmo"], "masks must be 'imp'")):
        result = _app(f"--runs={source}", f"--output_dir={tmp_path / 'out'}", *flags)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and words in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_the_app_runs_the_random_mask_control(source, tmp_path):
    output = tmp_path / "random"
    result = _app("--runs", source, f"--output_dir={output}", "--levels=1", "--rewind_iterations=10",
                  "--interpolation_points=3", "--test_examples=100", "--masks=random")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(output / instability.INSTABILITY_FILE))
    assert [cell["masks"] for cell in results["cells"]] == ["random"] and results["ticket_to_dense"] == []
    assert "level 1 (80% weights, random masks), k=10: error barrier" in result.stderr
    assert "level 1 (80% weights, random masks)" in (output / instability_report.REPORT_FILE).read_text()
    assert len(list(output.glob("*.png"))) == 2  # barrier and paths: no ticket-to-dense line
