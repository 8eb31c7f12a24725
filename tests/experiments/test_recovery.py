"""Every recovery message's advice, followed: each ends with a finished run equal to a clean one.

A run folder damaged after the fact (a truncated or deleted results file, a lost round
folder or rewind snapshot) is repaired by rerunning the same command: the rounds whose
files do not read back are recomputed from the last round whose files do. The advice of
the errors that remain (a summary.json that is not a run's, a branch whose source run is
damaged, a model loaded from a damaged run, a resume on other data, a folder in use) is
followed here as a user would follow it, and the run it leads to is compared, bit for bit,
with an undamaged run of the same command.
"""

import json
import shutil
import sys

import numpy as np
import pytest

from keras_lottery.data import datasets
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import run_models
from tests import processes
from tests.conftest import _write_idx
from tests.experiments.test_fault_tolerance import _assert_same_results

# 3 rounds of a hybrid (sign-flip) run: masks, final weights and flip state in each round folder.
SETTINGS = dict(rounds=2, iterations=40, batch_size=20, validation_examples=100, evaluations_per_round=2,
                criterion="hybrid", verbose=0)
pytestmark = pytest.mark.usefixtures("app_server")


def _command(data_dir, output, **overrides):
    flags = {**SETTINGS, **overrides}
    return [sys.executable, "-m", "apps.imp_main", f"--data_dir={data_dir}", f"--output_dir={output}",
            *[f"--{name}={value}" for name, value in flags.items()]]


def _rerun(data_dir, output, **overrides):
    """Reruns the app's command; returns the CompletedProcess."""
    return processes.run(_command(data_dir, output, **overrides), cwd=processes.REPOSITORY)


def _finish(data_dir, output, **overrides):
    result = _rerun(data_dir, output, **overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def clean(tiny_fashion, tmp_path_factory):
    """The command's run, never damaged (in this process; the apps' runs must match it bit for bit)."""
    output = tmp_path_factory.mktemp("clean")
    imp.run(imp.ImpConfig(output_dir=str(output), data_dir=tiny_fashion, **SETTINGS))
    return output


@pytest.fixture
def damaged(clean, tmp_path):
    """A copy of the clean run to damage."""
    shutil.copytree(clean, tmp_path / "run")
    return tmp_path / "run"


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("damage, recomputed_from", [
    (lambda run: _truncate(run / "round_2" / "masks.npz"), "rounds 2 to 2 are recomputed from round 1"),
    (lambda run: _truncate(run / "round_1" / "flip_state.npz"), "rounds 1 to 2 are recomputed from round 0"),
    (lambda run: shutil.rmtree(run / "round_1"), "rounds 1 to 2 are recomputed from round 0"),
    (lambda run: (run / run_folder.SNAPSHOT).unlink(), "rounds 0 to 2 are recomputed from the start"),
], ids=["truncated-masks", "truncated-flip-state", "deleted-round-folder", "missing-snapshot"])
def test_rerunning_the_same_command_recomputes_what_does_not_read_back(tiny_fashion, clean, damaged, damage,
                                                                        recomputed_from):
    damage(damaged)
    stderr = _finish(tiny_fashion, damaged)
    assert recomputed_from in stderr
    _assert_same_results(damaged, clean)


def test_a_summary_that_is_not_a_runs_is_left_alone_and_its_advice_gives_a_clean_run(tiny_fashion, clean, damaged,
                                                                                      tmp_path):
    (damaged / "summary.json").write_text(json.dumps({"config": {}, "rounds": "oops"}))
    result = _rerun(tiny_fashion, damaged)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a valid summary ('rounds' is 'oops', not a list of round records). Move the folder away or choose " \
           "another --output_dir." in result.stderr
    moved = tmp_path / "moved_away"
    damaged.rename(moved)  # the advice: move the folder away (or choose another --output_dir), rerun
    _finish(tiny_fashion, damaged)
    _assert_same_results(damaged, clean)
    assert json.loads((moved / "summary.json").read_text())["rounds"] == "oops"  # nothing of it was touched


def test_a_branch_of_a_damaged_run_says_to_repair_it_and_then_runs(tiny_fashion, clean, damaged, tmp_path):
    branch = dict(control="random_reinit", masks_from=str(damaged))
    clean_branch = tmp_path / "clean_branch"
    imp.run(imp.ImpConfig(output_dir=str(clean_branch), data_dir=tiny_fashion, **SETTINGS, **branch))  # not damaged yet
    _truncate(damaged / "round_2" / "masks.npz")
    result = _rerun(tiny_fashion, tmp_path / "branch", **branch)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot read {damaged}/round_2/masks.npz" in result.stderr
    assert "Rerun the command of the run it belongs to" in result.stderr
    assert not (tmp_path / "branch" / "summary.json").exists()  # refused before any training
    _finish(tiny_fashion, damaged)  # the advice: rerun the damaged run's command...
    _finish(tiny_fashion, tmp_path / "branch", **branch)  # ...then the branch's
    _assert_same_results(tmp_path / "branch", clean_branch)


def test_loading_a_damaged_rounds_model_says_to_rerun_the_run_and_then_loads(tiny_fashion, clean, damaged):
    _truncate(damaged / "round_1" / "final_weights.npz")
    with pytest.raises(run_models.RunFolderError, match="Rerun the command of the run it belongs to"):
        run_models.load_run_model(str(damaged), round_index=1)
    _finish(tiny_fashion, damaged)
    repaired = run_models.load_run_model(str(damaged), round_index=1).model
    expected = run_models.load_run_model(str(clean), round_index=1).model
    for got, want in zip(repaired.weights, expected.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_a_resume_on_other_data_is_refused_and_resumes_on_the_data_it_started_with(tiny_fashion, clean, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(clean, output)
    summary = json.loads((output / "summary.json").read_text())
    summary["rounds"] = summary["rounds"][:2]  # as if stopped after round 1
    (output / "summary.json").write_text(json.dumps(summary))
    other = tmp_path / "other"
    shutil.copytree(tiny_fashion, other)
    path = other / "t10k-images-idx3-ubyte.gz"
    images = np.array(datasets.read_idx(str(path), datasets.IMAGE_MAGIC))
    images[0, 0, 0] ^= 1  # one test pixel differs
    _write_idx(path, images, datasets.IMAGE_MAGIC)
    result = _rerun(str(other), output)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "was started on other data" in result.stderr and "t10k-images-idx3-ubyte.gz: sha256" in result.stderr
    assert "Point --data_dir at the data the run started with" in result.stderr
    _finish(tiny_fashion, output)  # the advice: the data it started with
    _assert_same_results(output, clean)
