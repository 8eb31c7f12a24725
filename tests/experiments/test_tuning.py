"""Tests of the keras-tuner search over pruning hyperparameters (tiny trials on tiny data)."""

import json
import os
import socket
import sys

import keras_tuner
import pytest

from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import tuning
from tests import processes

TARGET = 0.5
# 0.3 reaches the target in 2 rounds, 0.5 in 1: every trial stays cheap.
SPACE = tuning.SearchSpace(prune_rates=(0.3, 0.5), rewind_steps=(0, 2), learning_rate_span=10.0)
pytestmark = pytest.mark.usefixtures("app_server")  # the app tests run in the app server (tests/processes.py)


def _base(data_dir, **overrides):
    settings = dict(dataset="fashion_mnist", data_dir=data_dir, model="lenet_300_100", iterations=6,
                    batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0)
    settings.update(overrides)
    return imp.ImpConfig(**settings)


def _tuner(data_dir, directory, **overrides):
    settings = dict(target_weights_remaining=TARGET, space=SPACE, oracle="random", max_trials=3,
                    directory=str(directory), project_name="search")
    settings.update(overrides)
    return tuning.PruningTuner(_base(data_dir), **settings)


def _app_command(data_dir, output_dir, max_trials=2):
    return [
        sys.executable, "-m", "apps.tune_main", "--dataset=fashion_mnist", f"--data_dir={data_dir}",
        "--model=lenet_300_100", f"--target_weights_remaining={TARGET}", f"--max_trials={max_trials}",
        "--oracle=random", f"--output_dir={output_dir}", "--iterations=6", "--batch_size=20",
        "--validation_examples=100", "--evaluations_per_round=2", "--prune_rates=0.5", "--criteria=magnitude,hybrid",
        "--rewind_steps=0",
    ]


@pytest.fixture(scope="module")
def random_search(tiny_fashion, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tune")
    ended = []
    tuner = _tuner(tiny_fashion, directory, on_trial_end=lambda trial, metrics: ended.append((trial, metrics)))
    tuner.search()
    return tuner, directory, ended


def test_rounds_for_target_picks_the_nearest_count():
    assert tuning.rounds_for_target(0.2, 0.1) == 10  # 0.8^10 = 0.107
    assert tuning.rounds_for_target(0.5, 0.1) == 3  # 0.125 is nearer than 0.0625
    assert tuning.rounds_for_target(0.3, 0.5) == 2
    assert tuning.rounds_for_target(0.9, 0.5) == 1  # never fewer than one round


def test_build_declares_conditional_space_and_matches_the_target(tiny_fashion):
    hypermodel = tuning.PruningHyperModel(
        _base(tiny_fashion), 0.1, tuning.SearchSpace(modes=("imp", "one_pass"), rewind_steps=(0, 3)))
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    hp.values.update(mode="imp", criterion="hybrid", prune_rate=0.5, rewind_step=3, alpha=1.5)
    config = hypermodel.build(hp)
    assert (config.rounds, config.rewind_step, config.alpha, config.criterion) == (3, 3, 1.5, "hybrid")
    assert (1 - config.prune_rate) ** 3 == pytest.approx(0.1)  # the rate is adjusted to land on the target
    hp.values.update(mode="one_pass", criterion="magnitude")
    config = hypermodel.build(hp)
    assert (config.mode, config.rounds, config.prune_rate, config.rewind_step) == ("one_pass", 1, pytest.approx(0.9), 0)
    assert not hp.is_active("rewind_step") and not hp.is_active("alpha")  # conditional on imp / hybrid


def test_random_search_returns_the_best_recorded_trial(random_search):
    tuner, _, ended = random_search
    assert len(ended) == 3 and all(metrics is not None for _, metrics in ended)
    recorded = {}
    for trial_id in ("0", "1", "2"):
        with open(os.path.join(tuner.project_dir, f"trial_{trial_id}", "trial.json")) as file:
            saved = json.load(file)
        assert saved["status"] == "COMPLETED"
        recorded[trial_id] = saved["score"]
    best = tuner.oracle.get_best_trials(1)[0]
    assert best.score == max(recorded.values()) == recorded[best.trial_id]
    assert tuner.get_best_hyperparameters()[0].values == best.hyperparameters.values
    assert set(best.hyperparameters.values) >= {"criterion", "learning_rate", "mode"}


def test_each_trial_is_an_imp_run_at_the_target(random_search):
    tuner, _, ended = random_search
    for trial, metrics in ended:
        summary = run_folder.RunFolder(tuner.trial_output_dir(trial.trial_id)).load_summary()
        last = summary["rounds"][-1]
        assert last["weights_remaining"] == pytest.approx(TARGET, abs=0.005)  # output layer at half rate
        assert len(summary["rounds"]) == 1 + tuning.rounds_for_target(trial.hyperparameters["prune_rate"], TARGET)
        assert metrics == {
            tuning.OBJECTIVE.name: last["best_val_accuracy"], "test_accuracy_at_target": last["test_accuracy"],
            "weights_remaining": last["weights_remaining"], "total_iterations": last["total_iterations"],
        }
        assert summary["config"]["learning_rate"] == trial.hyperparameters["learning_rate"]
        stored = tuner.oracle.get_trial(trial.trial_id).metrics
        assert stored.get_last_value("test_accuracy_at_target") == pytest.approx(last["test_accuracy"])


def test_rerun_resumes_without_rerunning_finished_trials(random_search, tiny_fashion, monkeypatch):
    _, directory, _ = random_search
    calls = []
    run = imp.run
    monkeypatch.setattr(imp, "run", lambda config, **kwargs: calls.append(config.output_dir) or run(config, **kwargs))
    again = _tuner(tiny_fashion, directory)
    again.search()
    assert calls == [] and len(again.oracle.trials) == 3
    more = _tuner(tiny_fashion, directory, max_trials=4)  # a raised max_trials extends the search
    more.search()
    assert calls == [more.trial_output_dir("3")]
    with pytest.raises(run_folder.ConfigMismatchError, match="target_weights_remaining"):
        _tuner(tiny_fashion, directory, target_weights_remaining=0.3)


def test_hyperband_budget_sets_iterations_per_round(tiny_fashion, tmp_path):
    # max_budget 2, factor 2: two trials at half budget, then the better one promoted to the full budget.
    tuner = _tuner(tiny_fashion, tmp_path, oracle="hyperband", max_budget=2, hyperband_factor=2,
                   space=tuning.SearchSpace(prune_rates=(0.5,), rewind_steps=(0, 2)))
    tuner.search()
    trials = [tuner.oracle.get_trial(trial_id) for trial_id in ("0", "1", "2")]
    assert [trial.hyperparameters["tuner/epochs"] for trial in trials] == [1, 1, 2]
    iterations = [run_folder.RunFolder(tuner.trial_output_dir(t.trial_id)).load_summary()["iterations_per_round"]
                  for t in trials]
    assert iterations == [3, 3, 6]
    first_round = sorted(trials[:2], key=lambda trial: trial.score, reverse=True)
    assert trials[2].hyperparameters["tuner/trial_id"] == first_round[0].trial_id


@pytest.mark.parametrize("overrides, message", [
    (dict(target_weights_remaining=0.0), "target_weights_remaining"),
    (dict(target_weights_remaining=1.0), "target_weights_remaining"),
    (dict(target_weights_remaining=True), "target_weights_remaining"),
    (dict(oracle="grid"), "oracle must be one of"),
    (dict(max_trials=0), "max_trials"),
    (dict(space=tuning.SearchSpace(criteria=("magnitude", "best"))), "criteria"),
    (dict(space=tuning.SearchSpace(rewind_steps=(0, 7))), "beyond the 6 iterations"),
])
def test_bad_input_fails_before_any_work(tiny_fashion, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _tuner(tiny_fashion, tmp_path / "search_dir", **overrides)
    assert not (tmp_path / "search_dir").exists()


def test_app_runs_end_to_end(tiny_fashion, tmp_path):
    output = tmp_path / "app"
    result = processes.run(_app_command(tiny_fashion, output), timeout=600, cwd=processes.REPOSITORY)  # in the app server
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trial 0: starting" in result.stderr and "trial 1: val_accuracy_at_target" in result.stderr
    assert "best trial" in result.stderr and "criterion=" in result.stderr
    for trial_id in ("0", "1"):
        assert (output / "pruning" / f"trial_{trial_id}" / "run" / "summary.json").exists()


def _grpc_available():
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not _grpc_available(), reason="keras-tuner's distributed mode needs grpcio, not installed")
def test_chief_and_worker_on_loopback(tiny_fashion, tmp_path):
    output = tmp_path / "distributed"
    environment = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(_free_port()),
                       no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    tuners = {}
    try:
        for tuner_id in ("chief", "tuner0"):  # the chief first: the worker waits for it
            tuners[tuner_id] = processes.BackgroundProcess(
                _app_command(tiny_fashion, output), timeout=600, cwd=processes.REPOSITORY,
                env=dict(environment, KERASTUNER_TUNER_ID=tuner_id))
        worker = tuners["tuner0"].result()
        chief = tuners["chief"].result()
    finally:
        for process in tuners.values():
            process.stop()
    worker_err, chief_err = worker.stderr, chief.stderr
    assert worker.returncode == 0, worker_err[-3000:]
    assert "trial 0: val_accuracy_at_target" in worker_err and "worker done" in worker_err
    assert chief.returncode == 0, chief_err[-3000:]
    assert "chief: serving" in chief_err and "best trial" in chief_err
    assert "trial 0: starting" not in chief_err  # the chief only serves the oracle
    with open(output / "pruning" / "oracle.json") as file:
        assert len(json.load(file)["end_order"]) == 2
    assert (output / "pruning" / "trial_1" / "run" / "summary.json").exists()
