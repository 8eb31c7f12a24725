"""Finished runs evaluated on corrupted test sets (experiments/shift.py), their report and shift_main."""

import json
import os
import shutil
import sys
import types

import numpy as np
import pytest

from keras_lottery import data
from keras_lottery.data import corruptions
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_models
from keras_lottery.experiments import shift
from keras_lottery.report import shift as shift_report
from tests import processes
from tests import spies

pytestmark = pytest.mark.usefixtures("app_server")  # the app runs fork from the app server (tests/processes.py)
SETTINGS = dict(corruptions=("gaussian_noise", "rotation", "contrast", "gaussian_blur"), severities=(0, 1, 5), seed=0)


@pytest.fixture(scope="module")
def tiny_run(tiny_fashion, tmp_path_factory):
    """A finished 2-round IMP run (round 0 dense, round 1 pruned) on the 200-image tiny test set."""
    output = tmp_path_factory.mktemp("shift_runs") / "imp"
    summary = imp.run(imp.ImpConfig(
        output_dir=str(output), dataset="fashion_mnist", data_dir=tiny_fashion, model="lenet_300_100", rounds=1,
        iterations=20, batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0))
    return str(output), summary


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("shift_out"))
    return output, shift.evaluate([os.path.dirname(tiny_run[0])], output, **SETTINGS)


def _entry(results, round_index):
    return next(entry for entry in results["entries"] if entry["round"] == round_index)


def test_clean_accuracy_is_the_rounds_recorded_test_accuracy(tiny_run, evaluated):
    _, summary = tiny_run
    _, results = evaluated
    assert sorted(entry["round"] for entry in results["entries"]) == [0, 1]
    for record in summary["rounds"]:
        entry = _entry(results, record["round"])
        for corruption in SETTINGS["corruptions"]:
            assert abs(entry["accuracy"][corruption]["0"] - record["test_accuracy"]) <= 1 / 200 + 1e-9
            # The tiny run scores 100%: the loss tells the clean set (and the round's model) apart sharply.
            assert entry["loss"][corruption]["0"] == pytest.approx(record["test_loss"], rel=1e-4)
        assert entry["weights_remaining"] == pytest.approx(record["weights_remaining"])


def test_shifted_accuracy_is_the_models_accuracy_on_the_seeded_corrupted_images(tiny_run, evaluated):
    run_dir, _ = tiny_run
    _, results = evaluated
    loaded = run_models.load_run_model(run_dir, 1)
    for corruption, severity in (("rotation", 5), ("gaussian_noise", 1), ("contrast", 5)):
        images = corruptions.corrupt(loaded.splits.test_x, corruption, severity, seed=0)
        predicted = np.argmax(loaded.model.predict(images, verbose=0), axis=1)
        expected = float(np.mean(predicted == loaded.splits.test_y))
        assert _entry(results, 1)["accuracy"][corruption][str(severity)] == pytest.approx(expected, abs=1e-9)


def test_entries_record_what_identifies_the_run(tiny_run, evaluated):
    run_dir, _ = tiny_run
    output, results = evaluated
    entry = _entry(results, 1)
    assert os.path.realpath(entry["run"]) == os.path.realpath(run_dir) and entry["kind"] == "imp"
    assert entry["method"] == "magnitude IMP (ticket)"
    assert {key: entry["config"][key] for key in ("control", "criterion", "seed", "model", "dataset")} == {
        "control": "ticket", "criterion": "magnitude", "seed": 0, "model": "lenet_300_100",
        "dataset": "fashion_mnist"}
    assert json.load(open(os.path.join(output, shift.SHIFT_FILE))) == results  # what is written is returned


def test_a_second_call_recomputes_nothing(tiny_run, evaluated, tmp_path, monkeypatch):
    output, results = evaluated
    resumed = str(tmp_path / "resumed")
    shutil.copytree(output, resumed)
    calls = spies.count_run_model_loads(monkeypatch)
    assert shift.evaluate([tiny_run[0]], resumed, **SETTINGS) == results and calls == []


def test_an_interrupted_evaluation_resumes_after_its_last_round(tiny_run, evaluated, tmp_path, monkeypatch):
    _, results = evaluated
    output = str(tmp_path / "interrupted")
    original = run_models.load_run_model

    def interrupted(run_dir, round_index=None, data_dir=None):
        if round_index == 1:
            raise KeyboardInterrupt  # Ctrl-C while round 1 loads: round 0 is done
        return original(run_dir, round_index, data_dir)

    monkeypatch.setattr(shift.run_models, "load_run_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shift.evaluate([tiny_run[0]], output, **SETTINGS)
    assert [entry["round"] for entry in json.load(open(os.path.join(output, shift.SHIFT_FILE)))["entries"]] == [0]
    monkeypatch.undo()
    calls = spies.count_run_model_loads(monkeypatch)
    again = shift.evaluate([tiny_run[0]], output, **SETTINGS)
    assert [call[1] for call in calls] == [1]  # only the round that was missing
    assert again["entries"] == results["entries"]


@pytest.mark.parametrize("change, named", [
    (dict(severities=(0, 2)), "severities [0, 1, 5] there, [0, 2] now"),
    (dict(seed=3), "seed 0 there, 3 now"),
    (dict(corruptions=("rotation",)), "corruptions"),
    (dict(test_examples=50), "test_examples None there, 50 now"),
])
def test_other_settings_for_the_same_output_dir_are_refused(tiny_run, evaluated, tmp_path, monkeypatch, change,
                                                            named):
    output, _ = evaluated
    resumed = str(tmp_path / "resumed")
    shutil.copytree(output, resumed)
    calls = spies.count_run_model_loads(monkeypatch)
    with pytest.raises(shift.ShiftError, match=named.replace("[", r"\[").replace("]", r"\]")):
        shift.evaluate([tiny_run[0]], resumed, **{**SETTINGS, **change})
    assert calls == []


def test_levels_and_test_examples_evaluate_those_rounds_on_the_first_examples(tiny_run, evaluated, tmp_path):
    run_dir, _ = tiny_run
    results = shift.evaluate([run_dir], str(tmp_path), **SETTINGS, test_examples=50, levels="1")
    (entry,) = results["entries"]
    assert entry["round"] == 1 and results["settings"]["test_examples"] == 50
    loaded = run_models.load_run_model(run_dir, 1)
    images = corruptions.corrupt(loaded.splits.test_x[:50], "rotation", 5, seed=0)
    predicted = np.argmax(loaded.model.predict(images, verbose=0), axis=1)
    assert entry["accuracy"]["rotation"]["5"] == pytest.approx(float(np.mean(predicted == loaded.splits.test_y[:50])))
    assert entry["loss"]["rotation"]["5"] != _entry(evaluated[1], 1)["loss"]["rotation"]["5"]  # not all 200
    # Adding level 0 later evaluates only it, on the same 50 examples.
    again = shift.evaluate([run_dir], str(tmp_path), **SETTINGS, test_examples=50, levels="0,1")
    assert [entry["round"] for entry in again["entries"]] == [1, 0]


def test_results_written_before_test_examples_resume_as_every_example(tiny_run, evaluated, tmp_path, monkeypatch):
    output, results = evaluated
    older = str(tmp_path / "older")
    shutil.copytree(output, older)
    path = os.path.join(older, shift.SHIFT_FILE)
    written = json.load(open(path))
    del written["settings"]["test_examples"]
    json.dump(written, open(path, "w"))
    calls = spies.count_run_model_loads(monkeypatch)
    assert shift.evaluate([tiny_run[0]], older, **SETTINGS)["entries"] == results["entries"] and calls == []


@pytest.mark.parametrize("change, message", [
    (dict(levels="1,3"), r"levels \[3\]: no IMP run given has finished them; their finished rounds are \[0, 1\]"),
    (dict(levels="one"), "levels must be 'all' or comma-separated"),
    (dict(test_examples=0), "test_examples .* must be an integer >= 1"),
    (dict(test_examples=500), "test_examples=500, but fashion_mnist's test set has 200"),
])
def test_bad_levels_and_test_examples_are_refused_before_any_evaluation(tiny_run, tmp_path, monkeypatch, change,
                                                                        message):
    made = []
    monkeypatch.setattr(shift.corruption_lib, "corrupt", lambda *arguments: made.append(arguments))
    with pytest.raises(shift.ShiftError, match=message):
        shift.evaluate([tiny_run[0]], str(tmp_path / "out"), **{**SETTINGS, **change})
    assert made == []


def test_each_corrupted_test_set_is_computed_once_for_every_model(tiny_run, tmp_path, monkeypatch):
    made = []
    original = corruptions.corrupt

    def counted(images, corruption, severity, seed=0):
        made.append((corruption, severity))
        return original(images, corruption, severity, seed)

    monkeypatch.setattr(shift.corruption_lib, "corrupt", counted)
    shift.evaluate([tiny_run[0]], str(tmp_path), corruptions=("rotation", "contrast"), severities=(0, 3))
    # Two rounds (two models), yet each set once; severity 0 (the clean set) shared by the corruptions.
    assert sorted(made, key=str) == sorted([("rotation", 0), ("rotation", 3), ("contrast", 3)], key=str)


def test_datasets_trained_normalized_are_corrupted_with_the_seed_then_normalized():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 4, 4, 3)).astype(np.float32)
    loaded = types.SimpleNamespace(config={"dataset": "cifar10"}, splits=types.SimpleNamespace(
        test_x=images, test_y=np.arange(6) % 3, train_x=images, file_hashes=()))
    test_sets = shift.TestSets(shift.check_settings(["contrast", "gaussian_noise"], [0, 5], seed=3))
    evaluators = test_sets.for_run(loaded)
    mean, std = data.CHANNEL_STATISTICS["cifar10"]
    for corruption in ("contrast", "gaussian_noise"):  # the noise drawn with the settings' seed
        expected = (corruptions.corrupt(images, corruption, 5, seed=3) - np.float32(mean)) / np.float32(std)
        np.testing.assert_allclose(evaluators[corruption, 5].batches[0][0].numpy(), expected, atol=1e-6)
    other = dict(vars(loaded), config={"dataset": "fashion_mnist"})  # an IDX dataset: trained on [0, 1] images
    clean = shift.TestSets(test_sets.settings).for_run(types.SimpleNamespace(**other))["contrast", 0]
    np.testing.assert_array_equal(clean.batches[0][0].numpy(), images)


def test_summarize_aggregates_seeds_with_relative_accuracy():
    def entry(seed, clean, noisy, level=1, weights=0.2):
        return {"run": f"r{seed}", "kind": "imp", "method": "magnitude IMP (ticket)", "level": level,
                "config": {"dataset": "d", "model": "m", "seed": seed}, "round": level, "weights_remaining": weights,
                "accuracy": {"gaussian_noise": {"0": clean, "3": noisy}}}

    results = {"settings": {"corruptions": ["gaussian_noise"], "severities": [0, 3], "seed": 0},
               "entries": [entry(0, 0.8, 0.6), entry(1, 0.9, 0.45), entry(0, 0.95, 0.9, level=0, weights=1.0),
                           # Another IMP run of seed 0 (another prune rate): its round 0 is the same dense network,
                           # counted once; its round 1 is another level.
                           entry(0, 0.95, 0.9, level=0, weights=1.0), entry(0, 0.7, 0.5, level=1, weights=0.5)]}
    rows = shift.summarize(results)
    assert [(row["level"], row["dense"], row["accuracy"]["gaussian_noise"]["3"]["n"]) for row in rows] == [
        (1.0, True, 1), (0.5, False, 1), (0.2, False, 2)]
    rows = [rows[0], rows[2]]
    noisy = rows[1]["accuracy"]["gaussian_noise"]["3"]
    assert noisy["mean"] == pytest.approx(0.525) and noisy["std"] == pytest.approx(np.std([0.6, 0.45], ddof=1))
    relative = rows[1]["relative"]["gaussian_noise"]["3"]
    assert relative["mean"] == pytest.approx((0.6 / 0.8 + 0.45 / 0.9) / 2)
    assert relative["std"] == pytest.approx(np.std([0.75, 0.5], ddof=1))
    assert rows[0]["relative"]["gaussian_noise"]["3"] == {"mean": pytest.approx(0.9 / 0.95), "std": None, "n": 1}


def test_the_report_holds_a_table_per_corruption_and_a_plot(evaluated):
    output, results = evaluated
    written = shift_report.write_report(results, output)
    markdown = open(written["markdown"]).read()
    rows = {0 if row["dense"] else 1: row for row in shift.summarize(results)}  # IMP's dense round 0 and round 1
    for corruption in SETTINGS["corruptions"]:
        assert f"### {corruption}" in markdown
    dense = rows[0]["accuracy"]["rotation"]
    assert (f"| magnitude IMP (ticket), 100% weights (dense) | {100 * dense['0']['mean']:.2f} (1) | "
            f"{100 * dense['1']['mean']:.2f} (1) | {100 * dense['5']['mean']:.2f} (1) |") in markdown
    assert f"| magnitude IMP (ticket), {100 * rows[1]['weights_remaining']:.3g}% weights |" in markdown
    assert len(written["plots"]) == 1 and open(written["plots"][0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("summary, kind, rounds", [
    ({"config": {}, "rounds": [{"round": 0}, {"round": 1}, {"round": 2}]}, "imp", [0, 1, 2]),
    ({"config": {"mode": "one_pass"}, "rounds": [{"round": 0}]}, "one_pass", [0]),
    ({"mode": "sparse", "config": {}, "rounds": [{"round": 0}]}, "sparse", [0]),
    ({"config": {}, "retrain": {}}, "early_bird", [None]),
])
def test_each_kind_of_run_is_evaluated_at_its_rounds(summary, kind, rounds):
    assert shift.run_kind(summary) == kind
    assert shift.rounds_to_evaluate(kind, summary) == rounds


def test_bad_runs_and_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(shift.ShiftError, match="does not exist"):
        shift.evaluate([str(tmp_path / "nowhere")], str(tmp_path / "out"))
    with pytest.raises(shift.ShiftError, match="no summary.json"):
        shift.evaluate([str(tmp_path)], str(tmp_path / "out"))
    with pytest.raises(shift.ShiftError, match="choose one of gaussian_noise"):
        shift.evaluate([str(tmp_path)], str(tmp_path / "out"), corruptions=("fog",))
    with pytest.raises(shift.ShiftError, match="severity must be an integer 0..5"):
        shift.evaluate([str(tmp_path)], str(tmp_path / "out"), severities=(0, 7))
    assert not (tmp_path / "out").exists()


def _app(*arguments):
    return processes.run([sys.executable, "-m", "apps.shift_main", *arguments], cwd=processes.REPOSITORY,
                         env=dict(os.environ))


def test_the_app_evaluates_and_reports_a_run(tiny_run, tmp_path):
    output, copy = tmp_path / "app", str(tmp_path / "copy")
    shutil.copytree(tiny_run[0], copy)  # a second run folder
    # Three folders after one --runs: the run, its copy, and the run again (through its parent: evaluated once).
    result = _app("--runs", tiny_run[0], copy, os.path.dirname(tiny_run[0]), f"--output_dir={output}",
                  "--corruptions=contrast,rotation", "--severities=0,5", "--seed=2")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(output / shift.SHIFT_FILE))
    assert results["settings"] == {"corruptions": ["contrast", "rotation"], "severities": [0, 5], "seed": 2,
                                   "test_examples": None}
    assert sorted((entry["run"], entry["round"]) for entry in results["entries"]) == sorted(
        [(copy, 0), (copy, 1), (tiny_run[0], 0), (tiny_run[0], 1)])
    assert "### rotation" in (output / shift_report.REPORT_FILE).read_text()


def test_the_app_passes_levels_and_test_examples(tiny_run, tmp_path):
    output = tmp_path / "some"
    result = _app(f"--runs={tiny_run[0]}", f"--output_dir={output}", "--corruptions=contrast", "--severities=0,5",
                  "--levels=1", "--test_examples=100")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(output / shift.SHIFT_FILE))
    assert results["settings"]["test_examples"] == 100 and [entry["round"] for entry in results["entries"]] == [1]
    bad = _app(f"--runs={tiny_run[0]}", f"--output_dir={tmp_path / 'bad'}", "--levels=9")
    lines = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 1 and len(lines) == 1 and "levels [9]" in lines[0], bad.stderr[-2000:]


def test_the_app_ends_on_a_missing_folder_with_one_line_and_on_a_bad_flag_with_usage(tmp_path):
    result = _app(f"--runs={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "nowhere does not exist" in lines[0], result.stderr[-2000:]
    bad = _app(f"--runs={tmp_path}", f"--output_dir={tmp_path / 'out'}", "--corruptions=fog")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "--corruptions takes" in bad.stderr
    assert not (tmp_path / "out").exists()
