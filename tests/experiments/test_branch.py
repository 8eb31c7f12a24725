"""Branches: a finished IMP run's tickets retrained at chosen levels, with another recipe or dataset."""

import json
import sys

import numpy as np
import pytest

from keras_lottery.experiments import branch
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from tests import processes
from tests.data import cifar_fixture

SOURCE = dict(rounds=2, iterations=40, batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0)


@pytest.fixture(scope="module")
def source(tiny_fashion, tmp_path_factory):
    """A finished 2-round LeNet IMP run (Adam, rewind to init) on the tiny IDX dataset."""
    output = tmp_path_factory.mktemp("source")
    imp.run(imp.ImpConfig(output_dir=str(output), data_dir=tiny_fashion, **SOURCE))
    return output


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_a_branch_retrains_only_the_levels_asked_with_its_own_recipe(source, tmp_path):
    output = tmp_path / "sgd"
    summary = branch.run(branch.BranchConfig(source_dir=str(source), output_dir=str(output), levels="0,2",
                                             optimizer="sgd", learning_rate=0.05, momentum=0.9))
    assert [record["round"] for record in summary["rounds"]] == [0, 2]
    assert not (output / "round_1").exists()  # level 1 is not retrained
    config = summary["config"]
    assert (config["optimizer"], config["momentum"], config["learning_rate"]) == ("sgd", 0.9, 0.05)
    assert (config["dataset"], config["iterations"], config["batch_size"]) == ("fashion_mnist", 40, 20)  # the source's
    source_rounds = _summary(source)["rounds"]
    for record in summary["rounds"]:
        assert record["weights_remaining"] == source_rounds[record["round"]]["weights_remaining"]
        got, want = (run_folder.RunFolder(folder).load_masks(record["round"]) for folder in (output, source))
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    # Rerun: finished, nothing trained again (the records are the same, seconds included).
    assert branch.run(branch.BranchConfig(source_dir=str(source), output_dir=str(output), levels="0,2",
                                          optimizer="sgd", learning_rate=0.05, momentum=0.9))["rounds"] == \
        summary["rounds"]


def test_the_ticket_starts_from_the_sources_rewind_point_with_its_masks(source, tmp_path):
    # A learning rate too small to move anything: what the level ends with is what it started from.
    summary = branch.run(branch.BranchConfig(source_dir=str(source), output_dir=str(tmp_path), levels="2",
                                             optimizer="sgd", learning_rate=1e-12))
    assert [record["round"] for record in summary["rounds"]] == [2]
    folder, origin = run_folder.RunFolder(tmp_path), run_folder.RunFolder(source)
    final, snapshot, masks = folder.load_final_weights(2), origin.load_snapshot(), origin.load_masks(2)
    kernels = {"fc1": "0000", "fc2": "0002", "output": "0004"}  # Dense kernel, bias, kernel, bias, ...
    for name, key in kernels.items():
        np.testing.assert_allclose(final[key], snapshot[key] * masks[name], atol=1e-9)
    assert not np.allclose(final["0000"], origin.load_final_weights(2)["0000"])  # not the source's trained weights


def test_a_ticket_of_other_shapes_is_refused_before_any_training(source, tmp_path):
    cifar = cifar_fixture.prepare_tiny_cifar10(tmp_path / "tfds")
    config = branch.BranchConfig(source_dir=str(source), output_dir=str(tmp_path / "out"), levels="1",
                                 dataset="cifar10", data_dir=str(cifar), validation_examples=40)
    with pytest.raises(ValueError, match=r"variable .*fc1.* is \(3072, 300\) for cifar10 but \(784, 300\) in the "
                                         r"source run: a ticket of fashion_mnist transfers to datasets with the same"):
        branch.run(config)
    assert not list((tmp_path / "out").glob("round_*"))


@pytest.mark.parametrize("overrides, message", [
    (dict(levels="1,5"), r"levels \[5\]: .* has finished rounds \[0, 1, 2\]"),
    (dict(levels="one"), "levels must be 'all' or comma-separated round numbers"),
    (dict(model="conv2"), "a branch retrains the source's tickets, which are of 'lenet_300_100'"),
    (dict(source_dir=""), "source_dir is required"),
    (dict(optimizer="adamw"), "optimizer must be one of"),
])
def test_bad_settings_are_refused_naming_the_fix(source, tmp_path, overrides, message):
    config = branch.BranchConfig(**{"source_dir": str(source), "output_dir": str(tmp_path), **overrides})
    with pytest.raises(ValueError, match=message):
        branch.run(config)


def test_the_app_says_what_is_wrong_in_one_line(app_server, tmp_path):
    result = processes.run([sys.executable, "-m", "apps.branch_main", f"--source_dir={tmp_path / 'none'}",
                            f"--output_dir={tmp_path / 'out'}"], cwd=processes.REPOSITORY)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "holds no IMP run (no summary.json)" in result.stderr.strip().splitlines()[-1]
