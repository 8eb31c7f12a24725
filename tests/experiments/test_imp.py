"""End-to-end tests of the IMP loop and its run folder, on a tiny on-disk dataset."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from keras_lottery.experiments import imp
from keras_lottery.experiments import imp_config
from keras_lottery.experiments import round_backup
from keras_lottery.experiments import run_folder
from keras_lottery.sparsity import masks as masks_lib
from tests import processes


def _config(data_dir, output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir), dataset="fashion_mnist", data_dir=data_dir, model="lenet_300_100",
        rounds=2, iterations=40, batch_size=20, validation_examples=100, evaluations_per_round=4, verbose=0,
    )
    settings.update(overrides)
    return imp.ImpConfig(**settings)


@pytest.fixture(scope="module", autouse=True)
def app_run(tiny_fashion, tmp_path_factory, request):
    """(output folder, `processes.BackgroundProcess`): the app's run for `test_app_runs_end_to_end`,
    started with the module's first test so that it overlaps the tests before that one. A fresh
    `python -m` process (not the app server's): the apps' cold start is tested here."""
    output = tmp_path_factory.mktemp("app") / "app_run"
    command = [
        sys.executable, "-m", "apps.imp_main", f"--data_dir={tiny_fashion}", f"--output_dir={output}",
        "--rounds=1", "--iterations=20", "--batch_size=20", "--validation_examples=100",
        "--evaluations_per_round=2",  # and the default --verbose=1: a progress line per evaluation
    ]
    # TensorFlow's start-up lines as the apps start by default (no TF_CPP_MIN_LOG_LEVEL of the caller's).
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    with processes.early_process(request, "test_app_runs_end_to_end", command, fresh=True,
                                cwd=processes.REPOSITORY, env=env) as process:
        yield output, process


@pytest.fixture(scope="module")
def finished_run(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    summary = imp.run(_config(tiny_fashion, output))
    return output, summary


def test_every_round_records_its_flops_as_rigl_counts_them(finished_run):
    output, summary = finished_run
    total = 0
    for record in summary["rounds"]:
        masks = run_folder.RunFolder(output).load_masks(record["round"])
        kept = sum(int(mask.sum()) for mask in masks.values())
        assert record["inference_flops"] == kept  # LeNet's Dense layers: one multiply-add per active weight
        assert record["training_flops"] == 3 * kept * record["iterations"] * 20  # batch 20
        total += record["training_flops"]
        assert record["total_training_flops"] == total


def test_summary_has_every_round_with_its_records(finished_run):
    output, summary = finished_run
    assert [record["round"] for record in summary["rounds"]] == [0, 1, 2]
    for record in summary["rounds"]:
        for key in ("weights_remaining", "layers", "test_accuracy", "best_val_accuracy",
                    "early_stop_iteration", "train_seconds"):
            assert key in record, key
        assert 0 < record["early_stop_iteration"] <= 40
    on_disk = json.loads((output / "summary.json").read_text())
    assert on_disk["rounds"] == summary["rounds"]
    assert on_disk["config"]["prune_rate"] is None and on_disk["config"]["model"] == "lenet_300_100"


def test_exact_counts_per_layer_follow_lth_rates(finished_run):
    output, summary = finished_run
    rates = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
    for round_index in (0, 1, 2):
        saved = run_folder.RunFolder(output).load_masks(round_index)
        assert sorted(saved) == sorted(rates)
        for name, mask in saved.items():
            expected = int(np.floor((1 - rates[name]) ** round_index * sizes[name] + 0.5))
            assert int(mask.sum()) == expected, (name, round_index)
            assert summary["rounds"][round_index]["layers"][name] == pytest.approx(expected / sizes[name])
    total = sum(sizes.values())
    kept = sum(np.floor(0.8 ** 2 * sizes[n] + 0.5) if n != "output" else np.floor(0.81 * sizes[n] + 0.5) for n in sizes)
    assert summary["rounds"][2]["weights_remaining"] == pytest.approx(kept / total)


def test_masks_are_nested_across_rounds(finished_run):
    output, _ = finished_run
    folder = run_folder.RunFolder(output)
    for round_index in (1, 2):
        before, after = folder.load_masks(round_index - 1), folder.load_masks(round_index)
        for name in before:
            assert np.all(after[name] <= before[name])


def test_ticket_learns_and_tensorboard_logs_exist(finished_run):
    output, summary = finished_run
    assert summary["rounds"][0]["test_accuracy"] > 0.3  # chance is 0.1
    assert os.path.isdir(output / "tensorboard" / "imp")
    assert any(name.startswith("events") for name in os.listdir(output / "tensorboard" / "imp"))
    assert any(name.startswith("events") for name in os.listdir(output / "tensorboard" / "round_2"))
    assert (output / "rewind_snapshot.npz").exists()


def test_rerun_of_a_finished_run_trains_nothing(finished_run, tiny_fashion):
    output, summary = finished_run
    before = (output / "summary.json").read_text()
    again = imp.run(_config(tiny_fashion, output))
    assert again["rounds"] == summary["rounds"]
    assert (output / "summary.json").read_text() == before


def test_resume_after_interruption_equals_uninterrupted_run(finished_run, tiny_fashion, tmp_path):
    output, summary = finished_run
    # Interrupted after round 1 was written: extend a 1-round run to 2 rounds.
    imp.run(_config(tiny_fashion, tmp_path, rounds=1))
    # Simulate a crash between writing round 2's files and its summary entry: a
    # half-written masks file under the round folder must not matter.
    os.makedirs(tmp_path / "round_2")
    (tmp_path / "round_2" / "masks.npz").write_bytes(b"garbage")
    resumed = imp.run(_config(tiny_fashion, tmp_path, rounds=2))
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2]
    for round_index in (0, 1, 2):
        expected = run_folder.RunFolder(output).load_masks(round_index)
        got = run_folder.RunFolder(tmp_path).load_masks(round_index)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
    # Resuming restores every variable and the data order: the result is bit-identical on CPU.
    assert resumed["rounds"][2]["test_accuracy"] == summary["rounds"][2]["test_accuracy"]
    assert resumed["rounds"][2]["test_loss"] == summary["rounds"][2]["test_loss"]


def test_a_different_config_in_the_same_folder_is_refused(finished_run, tiny_fashion):
    output, _ = finished_run
    with pytest.raises(run_folder.ConfigMismatchError, match="prune_rate"):
        imp.run(_config(tiny_fashion, output, prune_rate=0.5))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rewind_step": 41}, "beyond"),
        ({"control": "reinit"}, "unknown control"),
        ({"strategy": "local"}, "strategy"),
        ({"prune_rate": 1.0}, "prune_rate"),
        ({"model": "resnet"}, "unknown model"),
        ({"iterations": 10, "epochs": 1.0}, "either iterations or epochs"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"rounds": -1}, "rounds"),
        ({"evaluation_examples": 0}, "evaluation_examples"),
        ({"evaluation_examples": "most"}, "evaluation_examples"),
        ({"evaluation_examples": 101}, "more than the 100 validation examples"),
        ({"backup_seconds": -1}, "backup_seconds"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, tiny_fashion, overrides, message):
    with pytest.raises(ValueError, match=message):
        imp.run(_config(tiny_fashion, tmp_path / "out", **overrides))
    assert not os.path.exists(tmp_path / "out")


def test_controls_and_branches(finished_run, tiny_fashion, tmp_path):
    output, _ = finished_run
    branch = imp.run(_config(tiny_fashion, tmp_path / "reinit", control="random_reinit", masks_from=str(output)))
    for round_index in (1, 2):
        ticket = run_folder.RunFolder(output).load_masks(round_index)
        reinit = run_folder.RunFolder(tmp_path / "reinit").load_masks(round_index)
        for name in ticket:
            np.testing.assert_array_equal(reinit[name], ticket[name])
    assert len(branch["rounds"]) == 3
    # Round 0 is the same dense training in both runs; from round 1 the same masks train from fresh
    # weights in the branch, not from the ticket's rewind point: the trained weights differ.
    final = {kind: [run_folder.RunFolder(folder).load_final_weights(r) for r in range(3)]
             for kind, folder in (("ticket", output), ("reinit", tmp_path / "reinit"))}
    for key in final["ticket"][0]:
        np.testing.assert_array_equal(final["reinit"][0][key], final["ticket"][0][key])
    for round_index in (1, 2):
        kernels = [key for key in final["ticket"][round_index] if final["ticket"][round_index][key].ndim == 2]
        assert kernels and all(not np.array_equal(final["reinit"][round_index][key], final["ticket"][round_index][key])
                               for key in kernels), f"random_reinit left round {round_index}'s weights as the ticket's"
    random_prune = imp.run(_config(tiny_fashion, tmp_path / "random", control="random_prune", rounds=1))
    ticket, control = (run_folder.RunFolder(p).load_masks(1) for p in (output, tmp_path / "random"))
    assert all(control[n].sum() == ticket[n].sum() for n in ticket)
    assert any(not np.array_equal(control[n], ticket[n]) for n in ticket)
    assert random_prune["rounds"][1]["weights_remaining"] == pytest.approx(branch["rounds"][1]["weights_remaining"])


def test_global_strategy_prunes_one_rate_across_layers(tiny_fashion, tmp_path):
    summary = imp.run(_config(tiny_fashion, tmp_path, strategy="global", rounds=1, prune_rate=0.5))
    total = 784 * 300 + 300 * 100 + 100 * 10
    kept = summary["rounds"][1]["weights_remaining"] * total
    assert kept == masks_lib.keep_count(total, 0.5)
    assert len(set(summary["rounds"][1]["layers"].values())) > 1  # layers differ under a global ranking


# What TensorFlow 2.21 logs while its native libraries load (twice: the profiler plugin has its own copy).
TENSORFLOW_START_UP = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                       "Could not find cuda drivers", "This TensorFlow binary is optimized")


def test_app_runs_end_to_end(app_run):
    output, process = app_run
    result = process.result()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 1: 80.0% weights remaining" in result.stderr  # one summary line per round
    assert str(output) in result.stderr
    assert len(json.loads((output / "summary.json").read_text())["rounds"]) == 2
    # One stream: Keras's display ("Epoch 1/2" and its bars on stdout) is gone, the progress lines are
    # logged on stderr, in order with the round summaries; TensorFlow's start-up noise is quiet.
    assert result.stdout == ""
    assert "Epoch" not in result.stderr
    for line in TENSORFLOW_START_UP:
        assert line not in result.stderr, line
    expected = []
    for round_index in (0, 1):
        label = "dense round 0" if round_index == 0 else f"pruning round {round_index} of 1"
        expected += [f"{label}: iteration {i} of 20 (evaluation {i // 10} of 2), validation accuracy"
                     for i in (10, 20)]
        expected.append(f"] round {round_index}: ")  # the round's summary line, not its progress lines
    expected.append("done: 2 rounds")
    lines = result.stderr.splitlines()
    found = [next((n for n, line in enumerate(lines) if wanted in line), None) for wanted in expected]
    assert None not in found and found == sorted(found), list(zip(expected, found))


def test_checks_read_a_fixed_subset_whose_size_bounds_their_cost(tiny_fashion):
    config = _config(tiny_fashion, "unused", validation_examples=5000).resolved()
    share = imp_config.EVALUATION_BUDGET
    # 'auto': examples checked per round <= EVALUATION_BUDGET x examples trained, at least the minimum a check...
    assert imp_config.evaluation_examples(config, 2000, 5000) == int(share * 2000 * 20 / 4)
    assert imp_config.evaluation_examples(config, 100, 5000) == imp_config.MIN_EVALUATION_EXAMPLES
    # ...and all of them in LTH's long rounds (50,000 iterations of batch 60, 20 checks).
    lth = dataclasses.replace(config, batch_size=60, evaluations_per_round=20)
    assert imp_config.evaluation_examples(lth, 50_000, 5000) == 5000
    assert imp_config.evaluation_examples(dataclasses.replace(config, evaluation_examples="all"), 100, 5000) == 5000
    assert imp_config.evaluation_examples(dataclasses.replace(config, evaluation_examples=70), 2000, 5000) == 70
    # A run saved before the field existed read every held-out example at every check.
    assert imp_config.config_defaults()["evaluation_examples"] == "all"


def test_the_checks_of_a_round_are_on_the_subset_and_recorded(finished_run, tiny_fashion, tmp_path):
    _, summary = finished_run
    assert [record["evaluation_examples"] for record in summary["rounds"]] == [100, 100, 100]  # 500 > all 100
    small = imp.run(_config(tiny_fashion, tmp_path, rounds=0, evaluation_examples=30))
    assert small["rounds"][0]["evaluation_examples"] == 30
    # The validation accuracies are of 30 examples: multiples of 1/30.
    accuracy = small["rounds"][0]["best_val_accuracy"] * 30
    assert accuracy == pytest.approx(round(accuracy), abs=1e-4)


@pytest.mark.parametrize("seconds, backups", [(0, 3), (3600, 0)])
def test_backups_at_most_every_backup_seconds(tiny_fashion, tmp_path, monkeypatch, seconds, backups):
    written = []
    original = round_backup.files.BackgroundWriter.submit
    monkeypatch.setattr(round_backup.files.BackgroundWriter, "submit",
                        lambda self, path, arrays: written.append(path) or original(self, path, arrays))
    imp.run(_config(tiny_fashion, tmp_path, rounds=0, backup_seconds=seconds))  # 4 checks: 3 before the last
    assert len(written) == backups


@pytest.mark.parametrize("after_rewind, iterations", [("continue", [40, 30, 30]), ("restart", [40, 40, 40])])
def test_rounds_after_a_rewind_to_k_train_from_k_to_the_end_or_whole_again(tiny_fashion, tmp_path, after_rewind,
                                                                            iterations):
    summary = imp.run(_config(tiny_fashion, tmp_path, rewind_step=10, after_rewind=after_rewind,
                              evaluations_per_round=2))
    assert [record["iterations"] for record in summary["rounds"]] == iterations
    assert summary["iterations_after_rewind"] == iterations[1]


def test_runs_saved_before_the_recipe_fields_resume_with_what_they_trained_with(tiny_fashion, tmp_path):
    config = dataclasses.asdict(_config(tiny_fashion, tmp_path, rewind_step=10, optimizer="momentum",
                                        learning_rate=0.01).resolved())
    new_fields = ("momentum", "nesterov", "weight_decay", "weight_decay_mode", "lr_schedule", "lr_milestones",
                  "lr_gamma", "warmup", "after_rewind", "layers_to_ignore", "augment", "distribution_strategy",
                  "freeze_batch_norm", "freeze_output")
    old = {key: value for key, value in config.items() if key not in new_fields}
    folder = run_folder.RunFolder(str(tmp_path))
    with pytest.raises(run_folder.ConfigMismatchError, match="after_rewind: 'restart' there, 'continue' now"):
        folder.check_config({"config": old}, config, imp_config.config_defaults())  # it rewound, then restarted
    assert config["momentum"] == 0.9  # the LTH paper's 'momentum' optimizer, now written out
    folder.check_config({"config": old}, {**config, "after_rewind": "restart"}, imp_config.config_defaults())
    restored = imp_config.with_defaults(old)
    assert (restored["after_rewind"], restored["momentum"], restored["augment"]) == ("restart", 0.9, False)
    assert imp_config.with_defaults({**old, "rewind_step": 0})["after_rewind"] == "continue"  # the same run
