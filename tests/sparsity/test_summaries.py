"""Tests of the TensorBoard summaries, read back from the event files."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import early_bird
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import summaries


def _events(folder):
    """dict tag -> list of (step, value or histogram proto), from every event file in `folder`."""
    found = {}
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                found.setdefault(value.tag, []).append((event.step, array, value.metadata.plugin_data.plugin_name))
    return found


@pytest.fixture(scope="module")
def logged(tiny, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("summaries"))
    model = kl.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=kl.OneShot(0.75, 8), criterion="hybrid")
    tiny.compile_model(model, keras.optimizers.SGD(0.5))
    detector = early_bird.EarlyBirdCallback(0.5, queue_size=2, epsilon=0.5)
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0,
              callbacks=[kl.UpdateMasks(), detector, summaries.SparsitySummaries(folder, early_bird=detector)])
    return model, detector, _events(folder)


def test_weights_remaining_and_mask_changes_per_layer(logged):
    model, _, events = logged
    steps = [step for step, _, _ in events["sparsity/fc1/weights_remaining"]]
    assert steps == [0, 4, 8, 12, 16]  # train begin, then each epoch end
    remaining = [float(value) for _, value, _ in events["sparsity/fc1/weights_remaining"]]
    assert remaining[:2] == [1.0, 1.0] and remaining[-1] == pytest.approx(kl.get_masks(model)["fc1"].mean())
    changes = [int(value) for _, value, _ in events["sparsity/fc1/mask_changes"]]
    # The prune at step 8 happens at the start of epoch 3: logged at its end (step 12).
    assert changes == [0, 0, 0, int(kl.get_masks(model)["fc1"].size * 0.75), 0]
    total = [float(v) for _, v, _ in events["sparsity/weights_remaining"]]
    assert total[-1] == pytest.approx(1 - 0.75, abs=0.01)


def test_flip_statistics_and_rate(logged):
    model, _, events = logged
    final = sign_flip.flip_statistics(model)
    for name, statistics in final.items():
        for key, value in statistics.items():
            assert float(events[f"flips/{name}/{key}"][-1][1]) == pytest.approx(value, rel=1e-5)
    rates = [float(v) for _, v, _ in events["flips/fc1/flip_rate"]]
    assert len(rates) == 4 and all(rate >= 0 for rate in rates) and max(rates) > 0


def test_histograms_of_surviving_weights_and_early_bird_distance(logged):
    model, detector, events = logged
    histograms = events["weights/fc1/surviving"]
    assert histograms and histograms[-1][2] == "histograms"
    counts = histograms[-1][1][:, 2]  # [left, right, count] per bucket
    assert counts.sum() == pytest.approx(kl.get_masks(model)["fc1"].sum())
    logged_distances = [float(v) for _, v, _ in events["early_bird/distance_0.5"]]
    assert logged_distances[-1] == pytest.approx(detector.distances[0.5][-1])


def test_every_n_steps_and_bad_arguments(tiny, tmp_path):
    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5, 3))
    tiny.compile_model(model)
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[kl.UpdateMasks(), summaries.SparsitySummaries(str(tmp_path), update_freq=3, histograms=False)])
    events = _events(str(tmp_path))
    assert [step for step, _, _ in events["sparsity/out/weights_remaining"]] == [0, 3, 6]
    assert "flips/out/mean_flips" not in events and "weights/out/surviving" not in events
    with pytest.raises(ValueError, match="update_freq"):
        summaries.SparsitySummaries(str(tmp_path), update_freq=0)
    dense = tiny.compile_model(tiny.build_dense())
    with pytest.raises(ValueError, match="pruning wrappers"):
        dense.fit(x, y, epochs=1, verbose=0, callbacks=[summaries.SparsitySummaries(str(tmp_path / "d"))])


def test_hparams_are_written_without_unset_values_or_non_hyperparameters(tmp_path):
    log_dir = tmp_path / "run_a" / "tensorboard" / "imp"
    summaries.write_hparams(str(log_dir), {"criterion": "hybrid", "alpha": 1.0, "rounds": 3, "data_dir": None,
                                           "train_examples": None, "output_dir": "runs/a", "verbose": 1})
    events = _events(str(log_dir))
    plugins = {plugin for entries in events.values() for _, _, plugin in entries}
    assert "hparams" in plugins
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData()
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(str(log_dir / name)):
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    content.ParseFromString(value.metadata.plugin_data.content)
    start = content.session_start_info
    assert dict(start.hparams)["criterion"].string_value == "hybrid"
    assert set(start.hparams) == {"criterion", "alpha", "rounds"}  # no "None", no folders, no verbosity
    assert start.group_name == os.path.normpath(tmp_path / "run_a")  # the run folder, not a hash


def test_hparams_session_of_a_folder_below_the_working_one_is_named_relative(tmp_path, monkeypatch):
    from tensorboard.plugins.hparams import plugin_data_pb2

    monkeypatch.chdir(tmp_path)
    summaries.write_hparams(str(tmp_path / "runs" / "b" / "tensorboard" / "imp"), {"seed": 1})
    content = plugin_data_pb2.HParamsPluginData()
    folder = tmp_path / "runs" / "b" / "tensorboard" / "imp"
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    content.ParseFromString(value.metadata.plugin_data.content)
    assert content.session_start_info.group_name == os.path.join("runs", "b")


def test_hparams_session_end_and_its_bad_status(tmp_path):
    from keras_lottery.foundations import tensorboard

    tensorboard.end_hparams_session(str(tmp_path), "success")
    assert "_hparams_/session_end_info" in _events(str(tmp_path))
    with pytest.raises(ValueError, match="status must be one of"):
        tensorboard.end_hparams_session(str(tmp_path), "done")


def test_histograms_every_histogram_freq_logs_and_at_the_end(tiny, tmp_path):
    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5, 0))
    tiny.compile_model(model)
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0,
              callbacks=[kl.UpdateMasks(), summaries.SparsitySummaries(str(tmp_path), histogram_freq=3)])
    events = _events(str(tmp_path))
    # Logs at steps 0 (start), 4, 8, 12, 16, 20 (epoch ends): histograms at logs 0 and 3, and at the end.
    assert [step for step, _, _ in events["weights/fc1/surviving"]] == [0, 12, 20]
    assert len(events["sparsity/fc1/weights_remaining"]) == 6
    with pytest.raises(ValueError, match="histogram_freq"):
        summaries.SparsitySummaries(str(tmp_path), histogram_freq=0)


def test_scalars_of_one_log_are_one_event_tensorboard_reads_as_scalars(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        summaries.write_scalars({"a/x": 1.5, "a/y": 2}, step=3)
        summaries.write_scalars({"a/x": 2.5}, step=4)
    writer.close()
    events = [event for name in os.listdir(tmp_path)
              for event in tf.compat.v1.train.summary_iterator(os.path.join(tmp_path, name)) if event.summary.value]
    assert [len(event.summary.value) for event in events] == [2, 1]
    loaded = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
    loaded.Reload()
    assert sorted(loaded.PluginTagToContent("scalars")) == ["a/x", "a/y"]
    assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in loaded.Tensors("a/x")] == [(3, 1.5), (4, 2.5)]


def test_first_log_counts_mask_changes_from_masks_before(tiny, tmp_path):
    """An IMP round's prune happens before its fit: `masks_before` makes its first log count it."""
    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.0, 0))
    tiny.compile_model(model)
    before = kl.get_masks(model)
    kl.prune(model, 0.5)
    x, y = tiny.make_data(32)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[summaries.SparsitySummaries(str(tmp_path), masks_before=before)])
    changes = [int(value) for _, value, _ in _events(str(tmp_path))["sparsity/fc1/mask_changes"]]
    assert changes == [int(np.count_nonzero(before["fc1"] != kl.get_masks(model)["fc1"])), 0]
    assert changes[0] == before["fc1"].size // 2


def test_callbacks_share_a_writer_into_one_event_file(tiny, tmp_path):
    from keras_lottery import training

    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5, 0))
    tiny.compile_model(model)
    writer = tf.summary.create_file_writer(str(tmp_path))
    x, y = tiny.make_data(32)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x, y),
              callbacks=[kl.UpdateMasks(), training.TrainingSummaries(writer), summaries.SparsitySummaries(writer)])
    writer.close()
    assert len(os.listdir(tmp_path)) == 1
    events = _events(str(tmp_path))
    assert {"train/loss", "validation/loss", "sparsity/fc1/weights_remaining"} <= set(events)
