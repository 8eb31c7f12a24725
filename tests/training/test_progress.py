"""Tests of `training.Progress`: a logged line per evaluation instead of Keras's display."""

import logging

import numpy as np
import pytest

from keras_lottery import data
from keras_lottery import training
from keras_lottery.experiments import early_bird_flow

_LOGGER = "keras_lottery.training.progress"


def _fit(tiny, progress, epochs=3, initial_epoch=0, steps=4):
    x, y = tiny.make_data(64)
    model = tiny.build_dense()
    training.compile_for_training(model, "sgd", 0.05)
    checks = training.HeldOutChecks(x[:32], y[:32])
    return model.fit(data.to_dataset(x, y, 16, shuffle_seed=0, repeat=True), epochs=epochs,
                     initial_epoch=initial_epoch, steps_per_epoch=steps, verbose=0, callbacks=[checks, progress])


def test_a_line_per_evaluation_with_iterations_and_the_validation_accuracy(tiny):
    lines = []
    history = _fit(tiny, training.Progress("round 2 of 5", 3, 4, log=lines.append))
    accuracies = history.history["val_accuracy"]
    assert lines == [f"round 2 of 5: iteration {4 * (k + 1)} of 12 (evaluation {k + 1} of 3), "
                     f"validation accuracy {accuracies[k]:.4f}" for k in range(3)]
    assert not any("epoch" in line.lower() for line in lines)


def test_verbose_0_logs_nothing_and_2_adds_losses_and_seconds(tiny):
    silent, detailed = [], []
    _fit(tiny, training.Progress("search", 3, 4, verbose=0, log=silent.append))
    history = _fit(tiny, training.Progress("search", 3, 4, verbose=2, log=detailed.append))
    assert silent == []
    assert len(detailed) == 3
    for line, loss, val_loss in zip(detailed, history.history["loss"], history.history["val_loss"]):
        assert f"validation loss {val_loss:.4f}, training loss {loss:.4f}, " in line
        assert line.endswith(" s")


def test_a_resumed_fit_says_where_it_resumed(tiny):
    lines = []
    _fit(tiny, training.Progress("round 1 of 3", 4, 4, log=lines.append), epochs=4, initial_epoch=2)
    assert lines[0] == "round 1 of 3: resumed at iteration 8 of 16 (evaluation 2 of 4 done)"
    assert [line.split(" (")[0] for line in lines[1:]] == ["round 1 of 3: iteration 12 of 16",
                                                           "round 1 of 3: iteration 16 of 16"]


def test_lines_go_to_the_module_logger_by_default(tiny, caplog):
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        _fit(tiny, training.Progress("one pass", 3, 4), epochs=1)
    assert [record.getMessage().split(",")[0] for record in caplog.records if record.name == _LOGGER] == [
        "one pass: iteration 4 of 12 (evaluation 1 of 3)"]


@pytest.mark.parametrize("verbose", [-1, 3, True, "auto", 1.0])
def test_a_bad_verbose_is_refused_naming_the_levels(verbose):
    with pytest.raises(ValueError, match=r"verbose must be 0 \(no progress lines\), 1 .* or 2"):
        training.Progress("round 0 of 1", 2, 10, verbose=verbose)
    with pytest.raises(ValueError, match="verbose must be 0"):
        training.TrainingConfig(verbose=verbose).resolved()


def test_the_early_bird_flow_logs_its_phases_and_keras_prints_nothing(tiny_fashion, tmp_path, caplog, capfd):
    config = early_bird_flow.EarlyBirdConfig(
        output_dir=str(tmp_path), dataset="fashion_mnist", data_dir=tiny_fashion, model="lenet_300_100",
        search_epochs=2, retrain_epochs=1, batch_size=100, validation_examples=50, verbose=1, queue_size=2,
    )
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        summary = early_bird_flow.run(config)
    lines = [record.getMessage() for record in caplog.records if record.name == _LOGGER]
    steps = summary["retrain"]["iterations"]  # one retrain epoch, one check: the steps of an epoch
    assert lines[0].startswith(f"search: iteration {steps} of {2 * steps} (evaluation 1 of 2), validation accuracy ")
    assert lines[-1].startswith(f"retrain: iteration {steps} of {steps} (evaluation 1 of 1), validation accuracy ")
    assert len(lines) == summary["search"]["epochs"] + 1
    out, err = capfd.readouterr()
    assert "Epoch" not in out + err and "step" not in out  # Keras's display: "Epoch 1/2", "6/6 [===] - 1s 9ms/step"
    assert np.isfinite(summary["retrain"]["test_accuracy"])
