"""Tests of the early-bird flow: search, draw, retrain, and its channel tickets retrained narrow."""

import dataclasses
import json

import pytest

from keras_lottery.experiments import early_bird_flow
from tests.data.test_datasets import write_idx_dataset


def test_early_bird_flow_end_to_end(tmp_path):
    folder = write_idx_dataset(tmp_path / "data", train=300, test=60)
    config = early_bird_flow.EarlyBirdConfig(
        output_dir=str(tmp_path / "run"), data_dir=folder, target_sparsity=0.8, queue_size=2, epsilon=0.5,
        search_epochs=4, retrain_epochs=2, batch_size=50, validation_examples=50, verbose=0,
    )
    summary = early_bird_flow.run(config)
    assert summary["drawn_epoch"] is not None and summary["drawn_epoch"] <= 4
    assert summary["search"]["epochs"] == summary["drawn_epoch"]  # the search stopped at the draw
    assert summary["total_iterations"] == (summary["search"]["epochs"] + 2) * 5
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
    assert summary["weights_remaining"] == pytest.approx(sum(round(0.2 * n) for n in sizes.values()) / sum(sizes.values()))
    assert (tmp_path / "run" / "masks.npz").exists()
    with pytest.raises(ValueError, match="retrain_from"):
        early_bird_flow.run(early_bird_flow.EarlyBirdConfig(retrain_from="scratch"))
    # Checked 5 times per epoch (every iteration here), the queue of 2 fills within the first epoch.
    finer = early_bird_flow.run(dataclasses.replace(config, output_dir=str(tmp_path / "finer"), checks_per_epoch=5))
    assert finer["drawn_epoch"] is not None and finer["drawn_epoch"] * 5 == int(finer["drawn_epoch"] * 5)
    assert finer["drawn_epoch"] < summary["drawn_epoch"]
    assert finer["search"]["iterations"] == finer["drawn_epoch"] * 5  # one iteration per check
    assert len(finer["distances"]) == finer["drawn_epoch"] * 5
    with pytest.raises(ValueError, match="checks_per_epoch"):
        early_bird_flow.run(dataclasses.replace(config, checks_per_epoch=0))


def test_bn_gamma_flow_retrains_a_narrower_network_and_counts_its_cheaper_iterations(tmp_path):
    folder = write_idx_dataset(tmp_path / "data", train=150, test=50)
    config = early_bird_flow.EarlyBirdConfig(
        output_dir=str(tmp_path / "run"), data_dir=folder, model="conv2_bn", criterion="bn_gamma",
        target_sparsity=0.5, queue_size=2, epsilon=0.5, search_epochs=3, retrain_epochs=1, batch_size=50,
        validation_examples=50, verbose=0,
    )
    summary = early_bird_flow.run(config)
    removed = summary["removed_units"]
    assert set(removed) == {"bn1_1", "bn1_2"}
    assert sum(len(units) for units in removed.values()) == 64  # one global threshold over 128 channels
    search, retrain = summary["search"], summary["retrain"]
    assert retrain["multiply_adds_per_example"] < search["multiply_adds_per_example"]
    assert summary["total_iterations"] == search["iterations"] + retrain["iterations"]
    assert summary["total_dense_iterations"] == pytest.approx(
        search["iterations"] + retrain["iterations"] * retrain["multiply_adds_per_example"]
        / search["multiply_adds_per_example"])
    assert summary["total_dense_iterations"] < summary["total_iterations"]
    assert 0 < summary["weights_remaining"] < 1 and summary["layers"]["output"] == 1.0
    assert summary["layers"]["conv1_1"] == pytest.approx(1 - len(removed["bn1_1"]) / 64)

    # A channel run an older version retrained at full width (no removed_units) is run again.
    path = tmp_path / "run" / "summary.json"
    path.write_text(json.dumps({key: value for key, value in summary.items() if key != "removed_units"}))
    assert early_bird_flow.run(config)["removed_units"] == removed
    with pytest.raises(ValueError, match="gamma_penalty"):
        early_bird_flow.run(dataclasses.replace(config, gamma_penalty=-1.0))
    with pytest.raises(ValueError, match="sign-flip"):
        early_bird_flow.run(dataclasses.replace(config, criterion="hybrid"))
    no_batch_norm = dataclasses.replace(config, model="lenet_300_100", output_dir=str(tmp_path / "lenet"))
    with pytest.raises(ValueError, match="needs BatchNormalization.*criterion='l1'"):
        early_bird_flow.run(no_batch_norm)
    assert not (tmp_path / "lenet" / "summary.json").exists() and not (tmp_path / "lenet" / "tensorboard").exists()


def test_channel_tickets_of_a_resnet_take_units_only_where_the_network_can_lose_them(tmp_path):
    # A ResNet's stem, second block convolutions and shortcuts feed Adds: a ticket scoring every BatchNorm
    # picked some of their channels and the flow failed after the whole search, when it built the narrow network.
    folder = write_idx_dataset(tmp_path / "data", train=100, test=50)
    config = early_bird_flow.EarlyBirdConfig(
        output_dir=str(tmp_path / "run"), data_dir=folder, model="resnet20", criterion="bn_gamma",
        target_sparsity=0.5, queue_size=2, epsilon=0.99, search_epochs=2, retrain_epochs=1, batch_size=50,
        validation_examples=50, verbose=0,
    )
    summary = early_bird_flow.run(config)
    removed = summary["removed_units"]
    assert sorted(removed) == sorted(f"stage{stage}_block{block}_bn1" for stage in (1, 2, 3) for block in (1, 2, 3))
    # One global threshold over the 9 x (16, 32 or 64) channels of those layers.
    assert sum(len(units) for units in removed.values()) == (3 * 16 + 3 * 32 + 3 * 64) // 2
    assert summary["layers"]["stem_conv"] == 1.0 and summary["layers"]["stage1_block1_conv2"] < 1.0
    assert summary["retrain"]["multiply_adds_per_example"] < summary["search"]["multiply_adds_per_example"]


def test_a_channel_ticket_of_a_model_with_no_removable_units_is_refused_before_any_training(tmp_path, monkeypatch):
    from keras_lottery import keras, models

    def every_unit_feeds_an_add(name, input_shape, num_classes, seed, **kwargs):
        inputs = keras.Input(input_shape)
        flat = keras.layers.Flatten()(inputs)
        added = keras.layers.Add()([keras.layers.Dense(num_classes, name="a")(flat),
                                    keras.layers.Dense(num_classes, name="b")(flat)])
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(added))

    monkeypatch.setattr(models, "build", every_unit_feeds_an_add)
    folder = write_idx_dataset(tmp_path / "data", train=100, test=50)
    config = early_bird_flow.EarlyBirdConfig(output_dir=str(tmp_path / "run"), data_dir=folder, criterion="l1",
                                             batch_size=50, validation_examples=50, verbose=0)
    with pytest.raises(ValueError, match="no layer of model 'lenet_300_100' can lose any.*criterion='magnitude'"):
        early_bird_flow.run(config)
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / "tensorboard").exists()
