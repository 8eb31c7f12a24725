"""The neuron-fusion sweep over finished runs (experiments/fusion_sweep.py) and fusion_sweep_main."""

import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import data
from keras_lottery import keras
from keras_lottery import training
from keras_lottery.experiments import fusion_sweep
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_models
from keras_lottery.report import fusion_sweep as fusion_sweep_report
from tests import processes
from tests import spies

pytestmark = pytest.mark.usefixtures("app_server")  # the app run forks from the app server (tests/processes.py)
SETTINGS = dict(methods=("exact", "l1", "data_aware"), fractions=(0, 0.5), fine_tune_iterations=3,
                calibration_examples=200)
HIDDEN = {"fc1": 300, "fc2": 100}  # LeNet-300-100's layers fusion may narrow (the output layer is kept)


@pytest.fixture(scope="module")
def tiny_run(tiny_fashion, tmp_path_factory):
    """A finished 2-round IMP run of LeNet-300-100 (round 0 dense, round 1 pruned) on the tiny IDX data."""
    output = tmp_path_factory.mktemp("fusion_runs") / "imp"
    imp.run(imp.ImpConfig(
        output_dir=str(output), dataset="fashion_mnist", data_dir=tiny_fashion, model="lenet_300_100", rounds=1,
        iterations=20, batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0))
    return str(output)


def _config(run_dir, output_dir=None, **changes):
    return fusion_sweep.FusionSweepConfig(**{"runs": [run_dir], "output_dir": str(output_dir), **SETTINGS, **changes})


@pytest.fixture(scope="module")
def swept(tiny_run, tmp_path_factory):
    """The sweep of round 1, the pruned ticket (round 0, the dense network, is swept by the tests that need it)."""
    output = tmp_path_factory.mktemp("fusion_out")
    return str(output), fusion_sweep.run(_config(tiny_run, output, rounds="1"))


def _entry(results, round_index):
    return next(entry for entry in results["entries"] if entry["round"] == round_index)


def _record(entry, fusion, fraction):
    return next(r for r in entry["fusions"] if r["fusion"] == fusion and r["fraction"] == fraction)


def _numpy_scores(model, x, y):
    """(mean cross-entropy on logits, accuracy), computed in NumPy from the model's logits."""
    logits = model.predict(x, verbose=0).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(y)), y].mean()), float(np.mean(logits.argmax(axis=1) == y))


def test_the_exact_pass_scores_exactly_as_the_masked_ticket(tiny_run, swept):
    _, results = swept
    assert [entry["round"] for entry in results["entries"]] == [1]
    for entry in results["entries"]:
        loaded = run_models.load_run_model(tiny_run, entry["round"])
        loss, accuracy = _numpy_scores(loaded.model, loaded.splits.test_x, loaded.splits.test_y)
        assert entry["ticket"]["test_accuracy"] == accuracy
        assert entry["ticket"]["test_loss"] == pytest.approx(loss, rel=1e-5)
        exact = _record(entry, "exact", 0.0)
        # The same function: the same predictions (accuracy) and the same loss up to float rounding.
        assert exact["test_accuracy"] == accuracy and exact["test_loss"] == pytest.approx(loss, rel=1e-5)
        merged = _record(entry, "l1", 0.5)  # plain removal of half the units: a different function
        assert merged["test_loss"] != pytest.approx(loss, rel=1e-3)
        assert [entry["fusions"].index(r) for r in entry["fusions"] if r["fusion"] == "exact"] == [0]  # once, first


def test_multiply_adds_and_params_follow_the_fused_layer_shapes(tiny_run, swept):
    _, results = swept
    for entry in results["entries"]:
        loaded = run_models.load_run_model(tiny_run, entry["round"])
        kernels = [layer.kernel.numpy() for layer in loaded.model.layers if hasattr(layer, "kernel")]
        assert entry["ticket"]["multiply_adds"] == 784 * 300 + 300 * 100 + 100 * 10
        assert entry["ticket"]["multiply_adds_nonzero"] == sum(np.count_nonzero(kernel) for kernel in kernels)
        assert entry["ticket"]["params_nonzero"] == sum(np.count_nonzero(w) for w in loaded.model.get_weights())
        for record in entry["fusions"]:
            if "error" in record:
                continue
            widths = dict(record["widths"])
            first, second = widths["fc1"], widths["fc2"]
            assert record["multiply_adds"] == 784 * first + first * second + second * 10
            assert record["params"] == (784 + 1) * first + (first + 1) * second + (second + 1) * 10
            assert record["units_removed"] == 300 - first + 100 - second
            if record["fraction"] == 0.5:  # half of each hidden layer's units of the input model
                assert (first, second, widths["output"]) == (150, 50, 10)


def test_fine_tune_takes_exactly_its_steps_on_the_seeded_batches(tiny):
    x, y = tiny.make_data(40, seed=1)
    model, reference = tiny.build_dense(seed=3), tiny.build_dense(seed=3)
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    done = fusion_sweep.fine_tune(model, x, y, iterations=7, batch_size=8, optimizer=keras.optimizers.SGD(0.1),
                                  seed=5)
    # The same 7 steps by hand: plain SGD on the documented batch order (40 examples: a pass is 5 batches).
    keras.utils.set_random_seed(5)
    batches = iter(data.to_dataset(x, y, 8, shuffle_seed=5, repeat=True))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(7):
        batch_x, batch_y = next(batches)
        with tf.GradientTape() as tape:
            value = loss(batch_y, reference(batch_x, training=True))
        for weight, gradient in zip(reference.trainable_weights, tape.gradient(value, reference.trainable_weights)):
            weight.assign_sub(0.1 * gradient)
    for trained, expected in zip(model.trainable_weights, reference.trainable_weights):
        np.testing.assert_allclose(trained.numpy(), expected.numpy(), atol=1e-5)
    assert done["iterations"] == 7
    change = np.sqrt(sum(np.sum((w.numpy() - b) ** 2) for w, b in zip(model.trainable_weights, before))
                     / sum(np.sum(b ** 2) for b in before))
    assert done["weight_change"] == pytest.approx(change, rel=1e-4) and change > 0


def test_every_fused_model_is_fine_tuned_for_its_iterations(swept):
    _, results = swept
    for entry in results["entries"]:
        for record in entry["fusions"]:
            tuned = record["fine_tune"]
            assert tuned["iterations"] == SETTINGS["fine_tune_iterations"] and tuned["weight_change"] > 0
            assert tuned["test_loss"] != record["test_loss"] and tuned["seconds"] > 0
            # LeNet's own recipe: Adam at its constant 1.2e-3, batches of the run's 20.
            assert (tuned["optimizer"], tuned["learning_rate"], tuned["batch_size"]) == ("adam", 1.2e-3, 20)


@pytest.mark.parametrize("run_config, given, expected", [
    ({"model": "lenet_300_100"}, None, ("adam", 1.2e-3, 0.0, 0.0)),
    ({"model": "resnet20", "dataset": "cifar10"}, None, ("sgd", 0.1 * 0.1 * 0.1, 0.9, 1e-4)),  # after both milestones
    ({"model": "resnet20", "lr_schedule": "cosine"}, None, ("sgd", 0.1 * fusion_sweep.COSINE_FINE_TUNE_SCALE, 0.9,
                                                            1e-4)),
    ({"model": "resnet20"}, 0.02, ("sgd", 0.02, 0.9, 1e-4)),
])
def test_the_fine_tune_uses_the_runs_recipe_at_the_rate_its_schedule_ended(run_config, given, expected):
    config = fusion_sweep.fine_tune_optimizer_config(run_config, given)
    assert (config.optimizer, config.learning_rate, config.momentum, config.weight_decay) == pytest.approx(expected)
    optimizer = training.make_optimizer(config, 1, None)
    schedule = training.schedule_of(optimizer)
    assert [float(schedule(step)) for step in (0, 10**6)] == pytest.approx([expected[1]] * 2)  # constant
    assert config.lr_schedule == "constant" and config.warmup == ""


def _conv_round(tiny, **changes):
    """A `_Round` of the tiny BatchNorm conv net, training and test sets apart (64 and 32 examples)."""
    x, y = tiny.make_data(64, shape=(8, 8, 1))
    test_x, test_y = tiny.make_data(32, shape=(8, 8, 1), seed=1)
    loaded = types.SimpleNamespace(model=tiny.build_conv(), config={"dataset": "mnist"},
                                   splits=types.SimpleNamespace(train_x=x, train_y=y, test_x=test_x, test_y=test_y))
    config = _config("unused", "unused", **{"fine_tune_iterations": 0, **changes}).resolved()
    return fusion_sweep._Round(loaded, {"model": "lenet_300_100"}, config), loaded.splits


def test_a_method_the_model_rules_out_is_recorded_and_the_others_still_run(tiny):
    unit, _ = _conv_round(tiny)
    failed = unit.fuse("data_free", 0.5)  # BatchNormalization between conv1 and conv2: no exact scaling
    assert set(failed) == {"fusion", "fraction", "error"} and "data_free merge needs ReLU" in failed["error"]
    worked = unit.fuse("l1", 0.5)
    assert dict(worked["widths"])["conv1"] == 2 and worked["fine_tune"] is None


def test_calibration_and_fine_tune_read_training_examples_and_the_score_the_test_set(tiny, monkeypatch):
    unit, splits = _conv_round(tiny, calibration_examples=20, fine_tune_iterations=1)
    seen = {}
    original_fuse, original_tune = fusion_sweep.fusion.fuse_neurons, fusion_sweep.fine_tune

    def fuse(model, **keywords):
        seen["calibration"] = keywords["calibration_data"]
        return original_fuse(model, **keywords)

    def tune(model, x, y, *arguments):
        seen["fine_tune"] = (x, y)
        return original_tune(model, x, y, *arguments)

    monkeypatch.setattr(fusion_sweep.fusion, "fuse_neurons", fuse)
    monkeypatch.setattr(fusion_sweep, "fine_tune", tune)
    record = unit.fuse("data_aware", 0.5)
    np.testing.assert_array_equal(seen["calibration"], splits.train_x[:20])  # the first training examples
    assert seen["fine_tune"][0] is splits.train_x and seen["fine_tune"][1] is splits.train_y
    _, accuracy = _numpy_scores(tiny.build_conv(), splits.test_x, splits.test_y)  # the ticket, on the test set
    assert unit.measure(unit.ticket)["test_accuracy"] == accuracy and record["fine_tune"]["iterations"] == 1


def test_a_second_call_recomputes_nothing(tiny_run, swept, tmp_path, monkeypatch):
    output, results = swept
    resumed = str(tmp_path / "resumed")
    shutil.copytree(output, resumed)
    calls = spies.count_run_model_loads(monkeypatch)
    assert fusion_sweep.run(_config(tiny_run, resumed, rounds="1")) == results and calls == []
    assert json.load(open(os.path.join(output, fusion_sweep.FUSION_SWEEP_FILE))) == results


def test_an_interrupted_sweep_resumes_after_its_last_round(tiny_run, tmp_path, monkeypatch):
    output = tmp_path / "interrupted"
    original = run_models.load_run_model

    def interrupted(run_dir, round_index=None, data_dir=None):
        if round_index == 1:
            raise KeyboardInterrupt  # Ctrl-C while round 1 loads: round 0 is done
        return original(run_dir, round_index, data_dir)

    monkeypatch.setattr(fusion_sweep.run_models, "load_run_model", interrupted)
    settings = dict(methods=("exact",), fine_tune_iterations=0)
    with pytest.raises(KeyboardInterrupt):
        fusion_sweep.run(_config(tiny_run, output, **settings))
    written = json.load(open(output / fusion_sweep.FUSION_SWEEP_FILE))
    assert [entry["round"] for entry in written["entries"]] == [0]
    monkeypatch.undo()
    calls = spies.count_run_model_loads(monkeypatch)
    again = fusion_sweep.run(_config(tiny_run, output, **settings))
    assert [call[1] for call in calls] == [1]  # only the round that was missing
    assert again["entries"][0] == written["entries"][0] and [e["round"] for e in again["entries"]] == [0, 1]


@pytest.mark.parametrize("change, named", [
    (dict(fractions=(0, 0.25)), "fractions [0.0, 0.5] there, [0.0, 0.25] now"),
    (dict(methods=("exact", "l1")), "methods ['exact', 'l1', 'data_aware'] there, ['exact', 'l1'] now"),
    (dict(fine_tune_iterations=9), "fine_tune_iterations 3 there, 9 now"),
    (dict(calibration_examples=100, seed=2), "calibration_examples 200 there, 100 now; seed 0 there, 2 now"),
    (dict(test_examples=50), "test_examples None there, 50 now"),
])
def test_other_settings_for_the_same_output_dir_are_refused(tiny_run, swept, tmp_path, monkeypatch, change, named):
    output, _ = swept
    resumed = str(tmp_path / "resumed")
    shutil.copytree(output, resumed)
    calls = spies.count_run_model_loads(monkeypatch)
    with pytest.raises(fusion_sweep.FusionSweepError, match=named.replace("[", r"\[").replace("]", r"\]")):
        fusion_sweep.run(_config(tiny_run, resumed, **{"rounds": "1", **change}))
    assert calls == []


@pytest.mark.parametrize("change, words", [
    (dict(methods=("exact", "merge")), "unknown fusion method 'merge': choose among exact, l1, data_free, data_aware"),
    (dict(fractions=(0, 1.0)), r"each in \[0, 1\); got 1.0"),
    (dict(fractions=(0.5, 0.5)), "without repeats"),
    (dict(fine_tune_iterations=-1), "fine_tune_iterations must be an integer >= 0"),
    (dict(calibration_examples=0), "calibration_examples must be an integer >= 1"),
    (dict(fine_tune_learning_rate=0.0), "fine_tune_learning_rate must be a number > 0"),
    (dict(rounds="1,x"), "rounds must be 'all' or IMP round numbers"),
    (dict(rounds=(1, 5)), r"has not finished rounds \[5\]; its finished rounds are \[0, 1\]"),
    (dict(runs=()), "no run folders given"),
    (dict(output_dir=""), "output_dir is required"),
])
def test_bad_settings_are_refused_before_any_work(tiny_run, tmp_path, monkeypatch, change, words):
    calls = spies.count_run_model_loads(monkeypatch)
    with pytest.raises(fusion_sweep.FusionSweepError, match=words):
        fusion_sweep.run(_config(tiny_run, **{"output_dir": tmp_path / "out", **change}))
    assert calls == [] and not (tmp_path / "out").exists()


def test_rounds_pick_the_imp_rounds_fused(tiny_run, tmp_path):
    results = fusion_sweep.run(_config(tiny_run, tmp_path, methods=("exact",), fine_tune_iterations=0, rounds=[0],
                                       test_examples=50))
    assert [entry["round"] for entry in results["entries"]] == [0]
    loaded = run_models.load_run_model(tiny_run, 0)
    loss, accuracy = _numpy_scores(loaded.model, loaded.splits.test_x[:50], loaded.splits.test_y[:50])
    ticket = results["entries"][0]["ticket"]
    assert ticket["test_accuracy"] == accuracy and ticket["test_loss"] == pytest.approx(loss, rel=1e-5)  # 50 only
    assert ticket["test_loss"] != pytest.approx(_numpy_scores(loaded.model, loaded.splits.test_x,
                                                              loaded.splits.test_y)[0], rel=1e-3)  # not all 200


def test_summarize_aggregates_seeds_per_level_and_fusion():
    def record(fusion, fraction, accuracy, width, error=None):
        if error:
            return {"fusion": fusion, "fraction": fraction, "error": error}
        return {"fusion": fusion, "fraction": fraction, "test_accuracy": accuracy, "test_loss": 1 - accuracy,
                "multiply_adds": 10 * width, "params": 11 * width, "units_removed": 8 - width, "fuse_seconds": 1.0,
                "widths": [["fc1", width], ["out", 2]], "fine_tune": {"test_accuracy": accuracy + 0.05,
                                                                      "test_loss": 0.1, "seconds": 2.0,
                                                                      "iterations": 3}}

    def entry(seed, weights, ticket, fusions):
        return {"run": f"r{seed}", "kind": "imp", "method": "magnitude IMP (ticket)", "round": int(weights < 1),
                "level": int(weights < 1), "config": {"dataset": "d", "model": "m", "seed": seed},
                "weights_remaining": weights, "fusions": fusions,
                "ticket": {"test_accuracy": ticket, "test_loss": 0.5, "multiply_adds_nonzero": 70 * weights,
                           "params_nonzero": 77 * weights, "multiply_adds": 80, "params": 88,
                           "widths": [["fc1", 8], ["out", 2]]}}

    results = {"settings": {}, "entries": [
        entry(0, 1.0, 0.9, [record("exact", 0.0, 0.9, 8), record("l1", 0.5, 0.6, 4)]),
        entry(0, 0.5, 0.8, [record("exact", 0.0, 0.8, 8), record("l1", 0.5, 0.5, 4),
                            record("data_free", 0.5, None, None, error="needs ReLU")]),
        entry(1, 0.5, 0.7, [record("exact", 0.0, 0.7, 7), record("l1", 0.5, 0.3, 4),
                            record("data_free", 0.5, 0.2, 4)]),
        entry(1, 0.5, 0.1, [record("exact", 0.0, 0.1, 1)]),  # seed 1 again: only its first run counts
    ]}
    rows = fusion_sweep.summarize(results)
    assert [(row["weights_remaining"], row["fusion"], row["fraction"]) for row in rows] == [
        (1.0, "exact", 0.0), (1.0, "l1", 0.5), (0.5, "exact", 0.0), (0.5, "l1", 0.5), (0.5, "data_free", 0.5)]
    assert rows[0]["dense"] and not rows[2]["dense"]
    l1 = rows[3]
    assert l1["fused_accuracy"] == {"mean": pytest.approx(0.4), "std": pytest.approx(np.std([0.5, 0.3], ddof=1)),
                                    "n": 2}
    assert l1["fine_tuned_accuracy"]["mean"] == pytest.approx(0.45)
    assert l1["ticket_accuracy"]["mean"] == pytest.approx(0.75) and l1["seeds"] == [0, 1]
    exact = rows[2]
    assert exact["widths"] == {"fc1": 7.5, "out": 2.0} and exact["ticket_widths"] == {"fc1": 8, "out": 2}
    free = rows[4]  # failed on seed 0: its numbers are seed 1's, the ticket's both seeds'
    assert free["fused_accuracy"] == {"mean": pytest.approx(0.2), "std": None, "n": 1}
    assert free["ticket_accuracy"]["n"] == 2 and free["errors"] == ["needs ReLU"]


def _app(*arguments):
    return processes.run([sys.executable, "-m", "apps.fusion_sweep_main", *arguments], cwd=processes.REPOSITORY,
                         env=dict(os.environ))


def test_the_app_sweeps_and_reports_a_run(tiny_run, tmp_path):
    output = tmp_path / "app"
    result = _app("--runs", tiny_run, f"--output_dir={output}", "--methods=exact,l1", "--fractions=0,0.5",
                  "--fine_tune_iterations=2", "--calibration_examples=100", "--rounds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(output / fusion_sweep.FUSION_SWEEP_FILE))
    assert results["settings"]["methods"] == ["exact", "l1"] and results["settings"]["fine_tune_iterations"] == 2
    assert [(entry["round"], len(entry["fusions"])) for entry in results["entries"]] == [(1, 2)]
    assert f"fusion sweep: {tiny_run} round 1" in result.stderr  # a line per (run, round)
    assert "| l1 50% |" in (output / fusion_sweep_report.REPORT_FILE).read_text()
    assert len(list(output.glob("*.png"))) == 2


def test_the_app_ends_on_bad_input_with_one_line_and_on_a_bad_flag_with_usage(tiny_run, tmp_path):
    result = _app(f"--runs={tiny_run}", f"--output_dir={tmp_path / 'out'}", "--rounds=7")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "has not finished rounds [7]" in lines[0], result.stderr[-2000:]
    bad = _app(f"--runs={tiny_run}", f"--output_dir={tmp_path / 'out'}", "--fractions=0,1.5")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "--fractions takes" in bad.stderr
    assert not (tmp_path / "out").exists()
