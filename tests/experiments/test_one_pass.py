"""End-to-end tests of sign-flip pruning in the IMP loop and of the one-pass mode."""

import dataclasses
import json
import os
import shutil
import sys

import numpy as np
import pytest

from keras_lottery import training
from keras_lottery.experiments import imp
from keras_lottery.experiments import one_pass
from keras_lottery.experiments import rounds
from keras_lottery.experiments import run_folder
from keras_lottery.sparsity import masks as masks_lib
from tests import processes

LENET_SIZES = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
LENET_RATES = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
pytestmark = pytest.mark.usefixtures("app_server")  # the app test runs in the app server (tests/processes.py)


def _config(data_dir, output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir), dataset="fashion_mnist", data_dir=data_dir, model="lenet_300_100",
        rounds=2, iterations=40, batch_size=20, validation_examples=100, evaluations_per_round=4, verbose=0,
        learning_rate=0.01,  # larger than LTH's, so that a few tiny rounds flip signs
    )
    settings.update(overrides)
    return imp.ImpConfig(**settings)


@pytest.fixture(scope="module")
def sign_flip_run(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("sign_flip_imp")
    return output, imp.run(_config(tiny_fashion, output, criterion="sign_flip"))


def test_sign_flip_imp_prunes_the_weights_flipped_in_the_previous_round(sign_flip_run):
    output, summary = sign_flip_run
    folder = run_folder.RunFolder(output)
    snapshot = folder.load_snapshot()  # the rewind point: the reference signs of every round
    final = folder.load_final_weights(0)  # the weights that round 0 ended with
    masks = folder.load_masks(1)
    kernels = {"fc1": "0000", "fc2": "0002", "output": "0004"}  # kernel, bias, kernel, bias, ...
    for name, key in kernels.items():
        flipped = np.sign(final[key]) * np.sign(snapshot[key]) < 0
        pruned = masks[name] == 0
        assert flipped.sum() > 0, name
        if flipped.sum() <= pruned.sum():
            assert np.all(pruned[flipped]), name  # every flipped weight is gone ...
        else:
            assert np.all(flipped[pruned]), name  # ... or only flipped weights are
    first = summary["rounds"][0]["flips"]
    assert set(first) == set(kernels) and first["fc1"]["fraction_flipped"] > 0


def test_sign_flip_imp_keeps_lth_counts_and_records_iterations(sign_flip_run):
    _, summary = sign_flip_run
    for record in summary["rounds"]:
        for name, size in LENET_SIZES.items():
            keep = masks_lib.keep_count(size, masks_lib.sparsity_after_rounds(LENET_RATES[name], record["round"]))
            assert record["layers"][name] == pytest.approx(keep / size)
    assert [r["total_iterations"] for r in summary["rounds"]] == [40, 80, 120]


@pytest.fixture(scope="module")
def hybrid_run(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("hybrid_imp")
    return output, imp.run(_config(tiny_fashion, output, criterion="hybrid", alpha=3.0))


@pytest.fixture(scope="module")
def magnitude_run(tiny_fashion, tmp_path_factory):
    """A 1-round magnitude run; tests that change it work on a copy (`copy_run`)."""
    output = tmp_path_factory.mktemp("magnitude_imp")
    return output, imp.run(_config(tiny_fashion, output, rounds=1))


def copy_run(source, destination, rounds=None):
    """Copies a run folder; with `rounds`, keeps only its first `rounds` records, as if stopped there."""
    shutil.copytree(source, destination)
    if rounds is not None:
        summary = json.loads((destination / "summary.json").read_text())
        for record in summary["rounds"][rounds:]:
            shutil.rmtree(destination / f"round_{record['round']}")
        summary["rounds"] = summary["rounds"][:rounds]
        (destination / "summary.json").write_text(json.dumps(summary))


def test_resume_restores_the_flip_counts_the_next_prune_ranks_by(tiny_fashion, hybrid_run, tmp_path):
    # The hybrid ranks by |w| / (1 + flips): lost counts would make round 2 a magnitude prune.
    whole, uninterrupted = hybrid_run
    copy_run(whole, tmp_path / "resumed", rounds=2)  # stopped after round 1
    state = run_folder.RunFolder(tmp_path / "resumed").load_flip_state(1)
    assert state is not None and state["fc1/0/flip_count"].sum() > 0
    resumed = imp.run(_config(tiny_fashion, tmp_path / "resumed", criterion="hybrid", alpha=3.0))
    expected = run_folder.RunFolder(whole).load_masks(2)
    got = run_folder.RunFolder(tmp_path / "resumed").load_masks(2)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    for layer, statistics in uninterrupted["rounds"][2]["flips"].items():
        assert resumed["rounds"][2]["flips"][layer] == pytest.approx(statistics)


def test_hybrid_and_sign_flip_differ_from_magnitude(sign_flip_run, hybrid_run, magnitude_run):
    (output, _), (hybrid_output, hybrid), (magnitude_output, magnitude) = sign_flip_run, hybrid_run, magnitude_run
    assert magnitude["rounds"][0]["flips"] == {}  # magnitude runs keep no flip state
    masks = {kind: run_folder.RunFolder(path).load_masks(1)["fc1"]
             for kind, path in (("magnitude", magnitude_output), ("hybrid", hybrid_output), ("sign_flip", output))}
    assert not np.array_equal(masks["magnitude"], masks["sign_flip"])
    assert not np.array_equal(masks["magnitude"], masks["hybrid"])
    assert hybrid["rounds"][1]["test_accuracy"] > 0.2


def test_an_old_run_without_the_new_fields_still_resumes(tiny_fashion, magnitude_run, tmp_path):
    output = tmp_path / "run"
    copy_run(magnitude_run[0], output)
    path = output / "summary.json"
    summary = json.loads(path.read_text())
    for field in ("criterion", "alpha", "mode", "one_pass_iterations", "prune_begin", "prune_end", "prune_updates",
                  "prune_schedule", "min_flips", "on_flip_floor"):
        del summary["config"][field]  # as written before sign-flip pruning existed
    path.write_text(json.dumps(summary))
    assert len(imp.run(_config(tiny_fashion, output, rounds=2))["rounds"]) == 3
    with pytest.raises(run_folder.ConfigMismatchError, match="criterion"):
        imp.run(_config(tiny_fashion, output, rounds=2, criterion="hybrid"))


@pytest.fixture(scope="module")
def one_pass_run(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("one_pass")
    config = _config(tiny_fashion, output, mode="one_pass", criterion="hybrid", rounds=5, one_pass_iterations=200,
                     evaluations_per_round=5, prune_updates=4)
    return output, config, imp.run(config)


def test_one_pass_reaches_imps_sparsity_in_one_training_run(one_pass_run):
    output, _, summary = one_pass_run
    assert summary["mode"] == "one_pass" and len(summary["rounds"]) == 1
    record = summary["rounds"][0]
    for name, size in LENET_SIZES.items():
        keep = masks_lib.keep_count(size, masks_lib.sparsity_after_rounds(LENET_RATES[name], 5))
        assert record["layers"][name] == pytest.approx(keep / size), name
    # 200 steps, updates from 20% to 70%: at 40, 65, 90, 115, 140.
    assert summary["prune_steps"] == [40, 65, 90, 115, 140]
    assert record["iterations"] == record["total_iterations"] == 200
    assert record["test_accuracy"] > 0.2 and set(record["flips"]) == set(LENET_SIZES)
    assert os.path.exists(output / "round_0" / "masks.npz")


def test_one_pass_rerun_returns_the_finished_run(one_pass_run):
    _, config, summary = one_pass_run
    assert imp.run(config) == summary


@pytest.fixture(scope="module")
def on_flip_run(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("on_flip")
    config = _config(tiny_fashion, output, mode="one_pass", criterion="hybrid", prune_schedule="on_flip", rounds=5,
                     one_pass_iterations=100, evaluations_per_round=5, prune_updates=5, learning_rate=0.05)
    return output, config, imp.run(config)


def test_on_flip_prunes_flipped_weights_then_fills_to_imps_sparsity(on_flip_run):
    output, _, summary = on_flip_run
    record = summary["rounds"][0]
    # 100 steps, checks from 20% to 70% in 5 updates: every 10 steps from 20 to 70, the last the fill.
    assert summary["prune_steps"] == [20, 30, 40, 50, 60, 70] and record["target_reached_iteration"] == 70
    masks = run_folder.RunFolder(output).load_masks(0)
    for name, size in LENET_SIZES.items():
        keep = masks_lib.keep_count(size, masks_lib.sparsity_after_rounds(LENET_RATES[name], 5))
        assert masks[name].sum() == keep and record["layers"][name] == pytest.approx(keep / size), name
        history = record["on_flip"][name]
        checks = history["checks"]
        assert [check["iteration"] for check in checks] == summary["prune_steps"]
        # Each check's count follows from the one before; together they prune exactly down to the target.
        kept = [size] + [check["kept"] for check in checks]
        assert all(kept[i] - kept[i + 1] == c["pruned_for_flips"] + c["filled"] for i, c in enumerate(checks))
        assert history["pruned_for_flips"] + history["filled"] == size - keep and checks[-1]["kept"] == keep
        assert all(check["filled"] == 0 for check in checks[:-1]), name  # only the last check fills
        reached = next(check["iteration"] for check in checks if check["kept"] == keep)
        assert history["target_reached_iteration"] == reached, name
    assert sum(record["on_flip"][name]["pruned_for_flips"] for name in LENET_SIZES) > 0  # flips were pruned


def test_on_flip_differs_from_gradual_one_pass(tiny_fashion, on_flip_run, tmp_path):
    # The same run with the gradual schedule prunes to other masks (the flips, not only the ranking, decide).
    _, config, _ = on_flip_run
    gradual = dataclasses.replace(config, output_dir=str(tmp_path), prune_schedule="gradual")
    imp.run(gradual)
    got = run_folder.RunFolder(config.output_dir).load_masks(0)["fc1"]
    assert not np.array_equal(got, run_folder.RunFolder(tmp_path).load_masks(0)["fc1"])


def test_on_flip_rerun_returns_the_finished_run(on_flip_run):
    _, config, summary = on_flip_run
    assert imp.run(config) == summary


def test_on_flip_gradual_floor_keeps_at_most_the_gradual_count_at_every_check(tiny_fashion, on_flip_run, tmp_path):
    _, config, _ = on_flip_run
    floored = dataclasses.replace(config, output_dir=str(tmp_path / "floor"), on_flip_floor="gradual")
    summary = imp.run(floored)
    record = summary["rounds"][0]
    assert summary["config"]["on_flip_floor"] == "gradual" and summary["prune_steps"] == [20, 30, 40, 50, 60, 70]
    updates = len(summary["prune_steps"]) - 1
    masks = run_folder.RunFolder(tmp_path / "floor").load_masks(0)
    bound = 0
    for name, size in LENET_SIZES.items():
        target = 1 - (1 - LENET_RATES[name]) ** 5
        # Zhu & Gupta's cubic in closed form: what gradual one-pass keeps at each update.
        gradual = [int(np.floor(size * (1 - target * (1 - (1 - k / updates) ** 3)) + 0.5)) for k in range(updates + 1)]
        checks = record["on_flip"][name]["checks"]
        kept = [size] + [check["kept"] for check in checks]
        for index, check in enumerate(checks):
            assert kept[index] - kept[index + 1] == check["pruned_for_flips"] + check["filled"], (name, index)
            if check["filled"]:  # the floor (or the last fill) pruned by the criterion: exactly gradual's count
                assert check["kept"] == gradual[index], (name, index)
            else:  # only hits went: as many as the floor asked for, or more (never below the target)
                assert gradual[-1] <= check["kept"] <= gradual[index], (name, index)
            bound += bool(check["filled"]) and index < updates
        assert checks[-1]["kept"] == gradual[-1] == masks[name].sum(), name
    assert bound > 0  # the floor bound before the last check
    assert sum(record["on_flip"][name]["pruned_for_flips"] for name in LENET_SIZES) > 0  # hits went first
    assert imp.run(floored) == summary  # a rerun returns the finished run


def test_an_on_flip_run_saved_without_the_floor_field_resumes_as_none(on_flip_run, tmp_path):
    output, config, summary = on_flip_run
    copy_run(output, tmp_path / "old")
    saved = json.loads((tmp_path / "old" / "summary.json").read_text())
    del saved["config"]["on_flip_floor"]
    (tmp_path / "old" / "summary.json").write_text(json.dumps(saved))
    assert imp.run(dataclasses.replace(config, output_dir=str(tmp_path / "old")))["rounds"] == summary["rounds"]
    with pytest.raises(run_folder.ConfigMismatchError, match="on_flip_floor"):
        imp.run(dataclasses.replace(config, output_dir=str(tmp_path / "old"), on_flip_floor="gradual"))


def test_random_pruning_at_init_is_one_pass_with_an_empty_window(tiny_fashion, tmp_path):
    summary = imp.run(_config(tiny_fashion, tmp_path, mode="one_pass", criterion="random", rounds=3,
                              prune_begin=0.0, prune_end=0.0, one_pass_iterations=40))
    assert summary["prune_steps"] == [0]
    assert summary["rounds"][0]["weights_remaining"] == pytest.approx(
        sum(masks_lib.keep_count(n, masks_lib.sparsity_after_rounds(LENET_RATES[k], 3))
            for k, n in LENET_SIZES.items()) / sum(LENET_SIZES.values()))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"criterion": "flips"}, "criterion must be one of"),
        ({"alpha": -0.5}, "alpha"),
        ({"mode": "two_pass"}, "mode must be one of"),
        ({"prune_begin": 0.8, "prune_end": 0.5}, "prune_begin <= prune_end"),
        ({"prune_end": 1.0}, "prune_end < 1"),
        ({"prune_updates": 0}, "prune_updates"),
        ({"one_pass_iterations": 0}, "one_pass_iterations"),
        ({"mode": "one_pass", "masks_from": "elsewhere"}, "masks_from"),
        ({"mode": "one_pass", "one_pass_iterations": 40, "prune_updates": 30}, "do not fit"),
        ({"mode": "one_pass", "rewind_step": 20, "prune_begin": 0.1}, "comes after the first mask update"),
        ({"mode": "one_pass", "prune_schedule": "cubic"}, "prune_schedule must be one of"),
        ({"mode": "one_pass", "criterion": "hybrid", "prune_schedule": "on_flip", "min_flips": 0}, "min_flips"),
        ({"mode": "one_pass", "criterion": "hybrid", "prune_schedule": "on_flip", "min_flips": True}, "min_flips"),
        ({"mode": "one_pass", "prune_schedule": "on_flip"}, "criterion='magnitude' keeps none"),
        ({"mode": "one_pass", "criterion": "random", "prune_schedule": "on_flip"}, "criterion='random' keeps none"),
        ({"criterion": "hybrid", "prune_schedule": "on_flip"}, "use it with --mode=one_pass"),
        ({"mode": "one_pass", "criterion": "hybrid", "min_flips": 2}, "applies to --prune_schedule=on_flip only"),
        ({"mode": "one_pass", "criterion": "hybrid", "prune_schedule": "on_flip", "on_flip_floor": "cubic"},
         r"on_flip_floor must be one of \('none', 'gradual'\)"),
        ({"mode": "one_pass", "criterion": "hybrid", "on_flip_floor": "gradual"},
         "on_flip_floor='gradual' applies to --prune_schedule=on_flip only"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, tiny_fashion, overrides, message):
    with pytest.raises(ValueError, match=message):
        imp.run(_config(tiny_fashion, tmp_path / "out", **overrides))
    assert not os.path.exists(tmp_path / "out")


def test_pruning_steps_window():
    config = imp.ImpConfig(prune_begin=0.2, prune_end=0.7, prune_updates=20)
    assert one_pass.pruning_steps(config, 18000) == (3600, 450, 20)
    assert one_pass.pruning_steps(imp.ImpConfig(prune_begin=0.5, prune_end=0.5), 100) == (50, 1, 0)


def test_app_one_pass_hybrid_end_to_end(tiny_fashion, tmp_path):
    output = tmp_path / "app_one_pass"
    command = [
        sys.executable, "-m", "apps.imp_main", f"--data_dir={tiny_fashion}", f"--output_dir={output}",
        "--mode=one_pass", "--criterion=hybrid", "--alpha=2", "--rounds=3", "--iterations=20",
        "--batch_size=20", "--validation_examples=100", "--evaluations_per_round=2",
    ]
    result = processes.run(command, cwd=processes.REPOSITORY)  # in the app server (tests/processes.py)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "51.3% weights remaining" in result.stderr and "sign changes per weight" in result.stderr
    saved = json.loads((output / "summary.json").read_text())
    assert saved["config"]["alpha"] == 2.0 and saved["rounds"][0]["iterations"] == 60
    # What a one-pass run is, its progress, and an end that does not call it rounds, in this order.
    begin, frequency, updates = one_pass.pruning_steps(imp.ImpConfig(), 60)
    target = begin + frequency * updates
    expected = ["one_pass (hybrid criterion): lenet_300_100 on fashion_mnist, pruned while it trains to the "
                "sparsity of 3 IMP rounds",
                f"one pass: 60 iterations, pruning from iteration {begin} to {target} in {updates} updates to 51.3% "
                "weights remaining",
                "one pass: iteration 30 of 60 (evaluation 1 of 2), validation accuracy ",
                "one pass: iteration 60 of 60 (evaluation 2 of 2), validation accuracy ",
                f"one pass trained: 51.3% weights remaining, test accuracy {saved['rounds'][0]['test_accuracy']:.4f}; "
                f"after the target sparsity (iteration {target}): best validation accuracy",
                "done: one pass of 60 iterations in "]
    lines = result.stderr.splitlines()
    found = [next((n for n, line in enumerate(lines) if wanted in line), None) for wanted in expected]
    assert None not in found and found == sorted(found), list(zip(expected, found))
    assert "round" not in result.stderr.replace("IMP round", "") and "Epoch" not in result.stdout + result.stderr


def _scripted_checks(monkeypatch, val_loss, val_accuracy):
    """The held-out checks log these values at evaluation 0, 1, ... (the model is not evaluated)."""
    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"], logs["val_accuracy"] = val_loss[epoch], val_accuracy[epoch]

    monkeypatch.setattr(training.HeldOutChecks, "on_epoch_end", on_epoch_end)


def test_one_pass_early_stop_counts_only_evaluations_at_the_target_sparsity(tiny_fashion, tmp_path, monkeypatch):
    # 100 steps, an evaluation every 20; mask updates from 20 to 20 + 4 * 12 = 68: the evaluations at 80
    # and 100 are of the final sparsity. The best validation loss and accuracy come earlier, at 20.
    config = _config(tiny_fashion, tmp_path, mode="one_pass", rounds=2, one_pass_iterations=100,
                     evaluations_per_round=5, prune_updates=4)
    _scripted_checks(monkeypatch, val_loss=[0.1, 0.5, 0.4, 0.3, 0.2], val_accuracy=[0.9, 0.1, 0.2, 0.3, 0.4])
    summary = imp.run(config)
    record = summary["rounds"][0]
    assert summary["prune_steps"][-1] == record["target_reached_iteration"] == 68
    assert record["early_stop_iteration"] == 100  # not 20, where pruning had not begun
    assert record["best_val_accuracy"] == pytest.approx(0.4)  # not 0.9


def test_imp_rounds_still_count_every_evaluation(tiny_fashion, tmp_path, monkeypatch):
    _scripted_checks(monkeypatch, val_loss=[0.3, 0.1, 0.2, 0.4], val_accuracy=[0.5, 0.9, 0.7, 0.6])
    record = imp.run(_config(tiny_fashion, tmp_path, rounds=0))["rounds"][0]
    assert record["early_stop_iteration"] == 20 and record["best_val_accuracy"] == pytest.approx(0.9)
    assert "target_reached_iteration" not in record


def test_a_last_mask_update_at_the_end_of_the_round_is_refused_before_training():
    with pytest.raises(ValueError, match="final_masks_at=40 leaves no evaluation"):
        rounds.train_round(None, None, None, 0, 40, 10, None, [], final_masks_at=40)


def test_flip_statistics_reach_tensorboard(sign_flip_run):
    import tensorflow as tf

    output, summary = sign_flip_run
    folder = output / "tensorboard" / "imp"
    values = {}
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":  # not the hparams entry
                    values[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
    for record in summary["rounds"]:
        for layer, statistics in record["flips"].items():
            for key, expected in statistics.items():
                assert values[f"imp/flips/{layer}/{key}", record["round"]] == pytest.approx(expected, rel=1e-6)


def test_rounds_log_sparsity_summaries_and_the_config_as_hparams(sign_flip_run):
    import tensorflow as tf

    output, summary = sign_flip_run
    sparsity_folder = output / "tensorboard" / "round_2"
    tags, plugins = set(), set()
    for folder in (sparsity_folder, output / "tensorboard" / "imp"):
        for name in os.listdir(folder):
            for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
                for value in event.summary.value:
                    tags.add(value.tag)
                    plugins.add(value.metadata.plugin_data.plugin_name)
    assert {"sparsity/fc1/weights_remaining", "flips/fc1/flip_rate", "weights/fc1/surviving"} <= tags
    assert "hparams" in plugins
