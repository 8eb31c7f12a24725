"""Tests of rebuilding a run's ticket from its folder, and of loading saved model files."""

import json
import os
import shutil

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.experiments import early_bird_flow
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_models
from keras_lottery.sparsity import wrappers


def imp_config(data_dir, output_dir):
    """A tiny IMP run: LeNet-300-100, 2 rounds of 20 iterations on `tiny_fashion`."""
    return imp.ImpConfig(
        output_dir=str(output_dir), dataset="fashion_mnist", data_dir=data_dir, model="lenet_300_100",
        rounds=1, iterations=20, batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0,
    )


@pytest.fixture(scope="module")
def imp_run(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("imp_run")
    return output, imp.run(imp_config(tiny_fashion, output))


def _accuracy(loaded):
    model = loaded.model
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model.evaluate(loaded.splits.test_x, loaded.splits.test_y, batch_size=1000, verbose=0)[1]


def _has_wrappers(model):
    return bool(wrappers.prunable_wrappers(model))


def test_last_round_is_rebuilt_with_its_masks_and_final_weights(imp_run):
    output, summary = imp_run
    loaded = run_models.load_run_model(output)
    assert loaded.kind == "imp" and loaded.round_index == 1 and loaded.record == summary["rounds"][1]
    assert loaded.config == summary["config"] and not _has_wrappers(loaded.model)
    kernel = {layer.name: layer.get_weights()[0] for layer in loaded.model.layers if layer.get_weights()}
    for name, mask in loaded.masks.items():
        assert np.all(kernel[name][mask == 0] == 0)  # pruned weights are exact zeros
        assert np.count_nonzero(kernel[name]) == int(mask.sum())
    assert _accuracy(loaded) == pytest.approx(summary["rounds"][1]["test_accuracy"], abs=1e-6)


def test_an_earlier_round_and_unknown_rounds(imp_run):
    output, summary = imp_run
    loaded = run_models.load_run_model(output, round_index=0)
    assert loaded.round_index == 0 and all(mask.all() for mask in loaded.masks.values())
    assert _accuracy(loaded) == pytest.approx(summary["rounds"][0]["test_accuracy"], abs=1e-6)
    for bad in (2, -1, True):
        with pytest.raises(run_models.RunFolderError, match=r"its rounds are \[0, 1\]"):
            run_models.load_run_model(output, round_index=bad)


def test_missing_and_incomplete_folders_are_named(imp_run, tmp_path):
    with pytest.raises(run_models.RunFolderError, match="does not exist"):
        run_models.load_run_model(tmp_path / "nowhere")
    with pytest.raises(run_models.RunFolderError, match="no summary.json"):
        run_models.load_run_model(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(imp_run[0], copy, ignore=shutil.ignore_patterns("tensorboard"))
    os.remove(copy / "round_1" / "final_weights.npz")
    with pytest.raises(run_models.RunFolderError, match="final_weights.npz is missing"):
        run_models.load_run_model(copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "rounds": []}))
    with pytest.raises(run_models.RunFolderError, match="no finished round"):
        run_models.load_run_model(copy)


@pytest.mark.parametrize("summary, words", [
    ({"config": {}, "rounds": "oops"}, "'rounds' is 'oops'"),
    ({"rounds": []}, "it has no 'config'"),
    ([1, 2], "it holds a list"),
])
def test_a_summary_of_the_wrong_structure_is_named(tmp_path, summary, words):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(run_models.RunFolderError, match=f"summary.json is not a valid run summary \\({words}"):
        run_models.load_run_model(str(tmp_path))


def test_early_bird_run_saves_and_loads_its_retrained_ticket(tmp_path):
    from tests.data.test_datasets import write_idx_dataset

    folder = write_idx_dataset(tmp_path / "data", train=300, test=60)
    config = early_bird_flow.EarlyBirdConfig(
        output_dir=str(tmp_path / "run"), data_dir=folder, target_sparsity=0.8, queue_size=2, epsilon=0.5,
        search_epochs=2, retrain_epochs=1, batch_size=50, validation_examples=50, verbose=0,
    )
    summary = early_bird_flow.run(config)
    weights_path = tmp_path / "run" / "final_weights.npz"
    assert weights_path.exists()
    loaded = run_models.load_run_model(tmp_path / "run")
    assert loaded.kind == "early_bird" and loaded.round_index is None and not _has_wrappers(loaded.model)
    assert loaded.record["weights_remaining"] == summary["weights_remaining"]
    assert _accuracy(loaded) == pytest.approx(summary["retrain"]["test_accuracy"], abs=1e-6)
    with pytest.raises(run_models.RunFolderError, match="pass no round"):
        run_models.load_run_model(tmp_path / "run", round_index=0)

    os.remove(weights_path)  # as an older version left it
    with pytest.raises(run_models.RunFolderError, match="Rerun the same early-bird command"):
        run_models.load_run_model(tmp_path / "run")
    early_bird_flow.run(config)  # the rerun the message asks for retrains and saves the weights
    assert weights_path.exists()
    assert early_bird_flow.run(config) == json.loads((tmp_path / "run" / "summary.json").read_text())


def test_early_bird_channel_ticket_loads_as_its_narrow_network(tmp_path):
    from tests.data.test_datasets import write_idx_dataset

    folder = write_idx_dataset(tmp_path / "data", train=300, test=60)
    config = early_bird_flow.EarlyBirdConfig(
        output_dir=str(tmp_path / "run"), data_dir=folder, criterion="l1", target_sparsity=0.5, queue_size=2,
        epsilon=0.5, search_epochs=2, retrain_epochs=1, batch_size=50, validation_examples=50, verbose=0,
    )
    summary = early_bird_flow.run(config)
    loaded = run_models.load_run_model(tmp_path / "run")
    assert loaded.model.get_layer("fc1").units == 300 - len(summary["removed_units"]["fc1"])
    assert loaded.model.get_layer("fc2").units == 100 - len(summary["removed_units"]["fc2"])
    assert loaded.masks["fc1"].shape == (300,) and int(loaded.masks["fc1"].sum()) == loaded.model.get_layer("fc1").units
    assert _accuracy(loaded) == pytest.approx(summary["retrain"]["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("name", ["pruned.keras", "pruned.h5"])
def test_model_files_load_with_keras_lottery_wrappers(tiny, tmp_path, name):
    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.0))
    kl.prune(model, 0.5)
    model.save(tmp_path / name)
    loaded = run_models.load_model_file(tmp_path / name)
    assert isinstance(loaded.layers[1], kl.PruneLowMagnitude)
    x = tiny.make_data(8)[0]
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


def test_model_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_models.load_model_file(tmp_path / "missing.keras")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=".keras, .h5"):
        run_models.load_model_file(tmp_path / "weights.npz")
    with pytest.raises(ValueError, match="saved_model.pb"):
        run_models.load_model_file(tmp_path)


def _run_model(dataset, splits):
    return run_models.RunModel(model=None, config={"dataset": dataset}, splits=splits, kind="imp", round_index=0,
                               record={}, masks={})


def test_splits_as_trained_normalize_the_datasets_the_flows_normalize():
    rng = np.random.default_rng(0)
    images = {part: rng.random((5, 4, 4, 3)).astype(np.float32) for part in ("train", "validation", "test")}
    splits = kl.data.Splits(images["train"], np.zeros(5), images["validation"], np.zeros(5), images["test"],
                            np.zeros(5), 10, (4, 4, 3), "test")
    assert run_models.splits_as_trained(_run_model("fashion_mnist", splits)) is splits  # trained on [0, 1]
    mean = np.array([0.49139968, 0.48215841, 0.44653091])  # CIFAR-10's published statistics, as data.streaming
    std = np.array([0.24703223, 0.24348513, 0.26158784])
    normalized = run_models.splits_as_trained(_run_model("cifar10", splits))
    for part in ("train", "validation", "test"):
        np.testing.assert_allclose(getattr(normalized, f"{part}_x"), (images[part] - mean) / std, rtol=1e-5, atol=1e-6)
    # A TFDS dataset without published statistics: the kept training images' own per-channel mean and std.
    own = run_models.splits_as_trained(_run_model("svhn_cropped", splits))
    pixels = images["train"].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(own.test_x, (images["test"] - pixels.mean(0)) / pixels.std(0), rtol=1e-5, atol=1e-6)
