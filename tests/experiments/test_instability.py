"""Instability analysis of finished IMP runs (experiments/instability.py, interpolation.py) and its report."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_lottery import data
from keras_lottery import training
from keras_lottery.experiments import imp
from keras_lottery.experiments import instability
from keras_lottery.experiments import interpolation
from keras_lottery.experiments import run_folder
from keras_lottery.report import instability as instability_report
from keras_lottery.sparsity import callbacks

# LeNet-300-100, 30 iterations a round, rewound to iteration 10: one of the analysis' k.
SOURCE = dict(dataset="fashion_mnist", model="lenet_300_100", rounds=1, iterations=30, batch_size=20,
              validation_examples=100, evaluations_per_round=2, rewind_step=10, verbose=0)
ANALYSIS = dict(levels="all", rewind_iterations="0,10", interpolation_points=5, verbose=0)
KERNELS = {"fc1": "0000", "fc2": "0002", "output": "0004"}  # Dense kernel, bias, kernel, bias, ...


@pytest.fixture(scope="module")
def source(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("instability_source") / "imp"
    imp.run(imp.ImpConfig(output_dir=str(output), data_dir=tiny_fashion, **SOURCE))
    return str(output)


@pytest.fixture(scope="module")
def analysis(source, tmp_path_factory):
    """The analysis of every level at k = 0 and 10, copies kept for the tests to read."""
    output = str(tmp_path_factory.mktemp("instability_out"))
    results = instability.run(instability.InstabilityConfig(runs=[source], output_dir=output, keep_copies=True,
                                                            **ANALYSIS))
    return output, results


def _copies(output, level, k):
    folder = os.path.join(output, instability.COPIES_DIR)
    (name,) = os.listdir(folder)
    return [run_folder.read_npz(os.path.join(folder, name, f"level{level}_k{k}_copy{copy}.npz")) for copy in (0, 1)]


def _numpy_lenet(weights, masks, x, y):
    """(mean cross-entropy, error) of LeNet-300-100's masked weights on (x, y), in NumPy float64."""
    layer = x.reshape(len(x), -1).astype(np.float64)
    for index, name in enumerate(("fc1", "fc2", "output")):
        kernel = weights[f"{2 * index:04d}"] * masks[name]
        layer = layer @ kernel.astype(np.float64) + weights[f"{2 * index + 1:04d}"]
        if name != "output":
            layer = np.maximum(layer, 0.0)
    shifted = layer - layer.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(y)), y].mean()), float(np.mean(layer.argmax(axis=1) != y))


def test_the_path_endpoints_are_the_copies_own_test_loss_and_error(source, analysis, tiny_fashion):
    output, results = analysis
    splits = data.load_for_training("fashion_mnist", tiny_fashion, 100)
    folder = run_folder.RunFolder(source)
    assert sorted((cell["level"], cell["k"]) for cell in results["cells"]) == [(0, 0), (0, 10), (1, 0), (1, 10)]
    for cell in results["cells"]:
        masks = folder.load_masks(cell["level"])
        for copy, index in zip(_copies(output, cell["level"], cell["k"]), (0, -1)):
            loss, error = _numpy_lenet(copy, masks, splits.test_x, splits.test_y)
            assert cell["losses"][index] == pytest.approx(loss, rel=1e-4)
            assert cell["errors"][index] == pytest.approx(error, abs=1e-9)
        assert cell["alphas"] == pytest.approx(np.linspace(0, 1, 5))
        assert cell["error_barrier"] == pytest.approx(max(cell["errors"]) - (cell["errors"][0] + cell["errors"][-1]) / 2)
        assert cell["loss_barrier"] == pytest.approx(max(cell["losses"]) - (cell["losses"][0] + cell["losses"][-1]) / 2)
        assert cell["stable"] == (cell["error_barrier"] < 0.02) and cell["iterations"] == 30 - cell["k"]


def test_the_copies_read_different_data_orders_and_keep_pruned_weights_zero(source, analysis):
    output, results = analysis
    masks = run_folder.RunFolder(source).load_masks(1)
    for k in (0, 10):
        cell = next(cell for cell in results["cells"] if (cell["level"], cell["k"]) == (1, k))
        assert cell["copy_seeds"][0] != cell["copy_seeds"][1]
        copy_a, copy_b = _copies(output, 1, k)
        assert not np.allclose(copy_a["0000"], copy_b["0000"])  # other SGD noise, other weights
        for name, key in KERNELS.items():
            for copy in (copy_a, copy_b):
                assert np.all(copy[key][masks[name] == 0] == 0) and np.any(copy[key][masks[name] == 1] != 0)
            for alpha in (0.3, 0.77):  # and every point of the line between them
                point = interpolation.line([copy_a[key]], [copy_b[key]], alpha)[0]
                assert np.all(point[masks[name] == 0] == 0)
    assert (masks["fc1"] == 0).mean() == pytest.approx(0.2, abs=0.01)  # level 1 is pruned


def test_the_replay_reaches_the_sources_rewind_snapshot_and_starts_at_its_init(source, analysis, tiny_fashion):
    output, results = analysis
    folder = os.path.join(output, instability.COPIES_DIR, os.listdir(os.path.join(output, instability.COPIES_DIR))[0])
    replayed, snapshot = run_folder.read_npz(os.path.join(folder, "replay_k10.npz")), \
        run_folder.RunFolder(source).load_snapshot()
    assert sorted(replayed) == sorted(snapshot)
    for key in snapshot:
        np.testing.assert_allclose(replayed[key], snapshot[key], rtol=0, atol=1e-6)
    check = results["sources"][os.path.realpath(source)]["replay_check"]
    assert check["k"] == 10 and check["matches"] and check["max_abs_difference"] <= 1e-6
    # k = 0 is the source's initialization: the network models.build makes with its seed.
    config = imp.ImpConfig(output_dir="unused", data_dir=tiny_fashion, **SOURCE).resolved()
    model = imp.build_model(config, data.load_for_training("fashion_mnist", tiny_fashion, 100), 30)
    initial = [variable.numpy() for variable in callbacks.RewindCallback.rewindable_variables(model)]
    start = run_folder.read_npz(os.path.join(folder, "replay_k0.npz"))
    for value, key in zip(initial, sorted(start)):
        np.testing.assert_array_equal(start[key], value)
    assert not np.allclose(start["0000"], snapshot["0000"])  # ten iterations moved it


class _TrainingStarts(training.StopOnDivergence):
    """Records, as each training of the analysis begins, its schedule start, optimizer state and first kernel."""

    log = []

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        moments = [v.numpy() for v in callbacks.optimizer_variables(optimizer)
                   if "iteration" not in v.name and "learning_rate" not in v.name]
        self.log.append({"start": training.schedule_of(optimizer).start_step, "step": int(optimizer.iterations),
                         "moments": (len(moments), max((float(np.max(np.abs(m), initial=0)) for m in moments),
                                                       default=0.0)),
                         "kernel": callbacks.RewindCallback.rewindable_variables(self.model)[0].numpy()})


def test_the_same_data_order_gives_a_barrier_of_exactly_zero(source, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "StopOnDivergence", _TrainingStarts)
    _TrainingStarts.log = []
    results = instability.run(instability.InstabilityConfig(
        runs=[source], output_dir=str(tmp_path), levels="1", rewind_iterations="10", interpolation_points=5,
        same_data_order=True, keep_copies=True, verbose=0))
    (cell,) = results["cells"]
    assert cell["copy_seeds"][0] == cell["copy_seeds"][1]
    assert cell["error_barrier"] == 0.0 and cell["loss_barrier"] == 0.0
    assert len(set(cell["losses"])) == 1
    copy_a, copy_b = _copies(str(tmp_path), 1, 10)
    for key in copy_a:
        np.testing.assert_array_equal(copy_a[key], copy_b[key])
    # The replay from iteration 0, then each copy from W_10 masked, a fresh optimizer, the schedule at 10.
    replay, *copies = _TrainingStarts.log
    assert (replay["start"], replay["step"]) == (0, 0) and len(copies) == 2
    w_10 = run_folder.RunFolder(source).load_snapshot()["0000"] * run_folder.RunFolder(source).load_masks(1)["fc1"]
    for start in copies:
        assert (start["start"], start["step"], start["moments"][1]) == (10, 0, 0.0) and start["moments"][0] >= 6
        np.testing.assert_array_equal(start["kernel"], w_10)


def test_the_ticket_to_dense_path_runs_from_the_trained_ticket_to_the_trained_dense_network(source, analysis,
                                                                                            tiny_fashion):
    _, results = analysis
    (path,) = results["ticket_to_dense"]
    assert path["level"] == 1
    splits = data.load_for_training("fashion_mnist", tiny_fashion, 100)
    folder = run_folder.RunFolder(source)
    ones = {name: np.ones_like(mask) for name, mask in folder.load_masks(1).items()}
    ticket, dense = folder.load_final_weights(1), folder.load_final_weights(0)
    middle = {key: (ticket[key] + dense[key]) / 2 for key in ticket}  # alpha 0.5: the third of 5 points
    for weights, index in ((ticket, 0), (middle, 2), (dense, -1)):
        loss, error = _numpy_lenet(weights, ones, splits.test_x, splits.test_y)
        assert path["losses"][index] == pytest.approx(loss, rel=1e-4) and path["errors"][index] == pytest.approx(error)
    assert path["loss_barrier"] == pytest.approx(interpolation.barrier(path["losses"]))


@pytest.mark.parametrize("curve, expected", [
    ([0.1, 0.1, 0.1], 0.0),              # flat: connected
    ([0.1, 0.5, 0.3, 0.1], 0.4),         # a hill between equal endpoints
    ([0.3, 0.1, 0.3], 0.0),              # convex, equal ends: max is an endpoint
    ([0.4, 0.1, 0.2], 0.1),              # convex, unequal ends: |e0 - e1| / 2, never negative
    ([0.2, 0.6, 0.4], 0.3),              # max - mean of the ends
])
def test_barrier_is_the_max_minus_the_mean_of_the_endpoints(curve, expected):
    assert interpolation.barrier(curve) == pytest.approx(expected)


def test_barrier_refuses_a_curve_without_two_finite_endpoints():
    for bad in ([0.1], [0.1, float("nan")], []):
        with pytest.raises(ValueError, match="at least two finite values"):
            interpolation.barrier(bad)


def test_interpolate_evaluates_the_line_and_restores_the_model(tiny):
    model = tiny.build_dense(seed=0)
    x, y = tiny.make_data(64)
    rng = np.random.default_rng(1)
    a = [rng.normal(size=v.shape).astype(np.float32) for v in model.weights]
    b = [rng.normal(size=v.shape).astype(np.float32) for v in model.weights]
    before = [v.numpy() for v in model.weights]
    alphas, errors, losses = interpolation.interpolate(model, a, b, 3, x, y)
    assert alphas == [0.0, 0.5, 1.0]
    for alpha, error, loss in zip(alphas, errors, losses):
        w = [(1 - alpha) * wa.astype(np.float64) + alpha * wb for wa, wb in zip(a, b)]
        logits = np.maximum(x.reshape(64, -1) @ w[0] + w[1], 0) @ w[2] + w[3]
        shifted = logits - logits.max(axis=1, keepdims=True)
        expected_loss = -(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(64), y].mean()
        assert error == pytest.approx(np.mean(logits.argmax(axis=1) != y)) and loss == pytest.approx(expected_loss,
                                                                                                     rel=1e-4)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert [np.array_equal(p, q) for p, q in zip(interpolation.line(a, b, 1.0), b)] == [True] * 4  # exact ends
    assert [np.array_equal(p, q) for p, q in zip(interpolation.line(a, b, 0.0), a)] == [True] * 4
    with pytest.raises(ValueError, match="interpolation_points"):
        interpolation.interpolate(model, a, b, 1, x, y)


def _counting_copies(monkeypatch, fail_at=None):
    calls = []
    original = instability._train_copy

    def counted(*arguments):
        calls.append(arguments[4:])  # (masks, k, iterations, seed)
        if len(calls) == fail_at:
            raise KeyboardInterrupt  # killed while this copy trains
        return original(*arguments)

    monkeypatch.setattr(instability, "_train_copy", counted)
    return calls


def test_an_interrupted_analysis_resumes_without_training_a_finished_copy_again(source, analysis, tmp_path,
                                                                                 monkeypatch):
    output = str(tmp_path / "interrupted")
    config = instability.InstabilityConfig(runs=[source], output_dir=output, **{**ANALYSIS, "levels": "1"})
    _counting_copies(monkeypatch, fail_at=4)  # cell 1's two copies, cell 2's copy A done; B killed
    with pytest.raises(KeyboardInterrupt):
        instability.run(config)
    written = json.load(open(os.path.join(output, instability.INSTABILITY_FILE)))
    assert [(cell["level"], cell["k"]) for cell in written["cells"]] == [(1, 0)]
    monkeypatch.undo()
    calls = _counting_copies(monkeypatch)
    resumed = instability.run(config)
    assert [call[1] for call in calls] == [10]  # cell 2's copy B only; its copy A is read back
    # As the uninterrupted analysis, number for number.
    assert resumed["cells"] == [cell for cell in analysis[1]["cells"] if cell["level"] == 1]
    assert resumed["ticket_to_dense"] == analysis[1]["ticket_to_dense"]
    assert not os.path.exists(os.path.join(output, instability.COPIES_DIR))  # gone once their cells are written
    calls.clear()
    assert instability.run(config)["cells"] == resumed["cells"] and calls == []  # finished: nothing again


def test_another_k_later_adds_only_its_cells(source, analysis, tmp_path, monkeypatch):
    output = str(tmp_path / "more")
    shutil.copytree(analysis[0], output)
    shutil.rmtree(os.path.join(output, instability.COPIES_DIR))
    calls = _counting_copies(monkeypatch)
    results = instability.run(instability.InstabilityConfig(runs=[source], output_dir=output,
                                                            **{**ANALYSIS, "levels": "1", "rewind_iterations": "5"}))
    assert [call[1] for call in calls] == [5, 5]
    assert [(cell["level"], cell["k"]) for cell in results["cells"]] == [(0, 0), (0, 10), (1, 0), (1, 10), (1, 5)]


@pytest.mark.parametrize("change, named", [
    (dict(interpolation_points=7), "interpolation_points 5 there, 7 now"),
    (dict(test_examples=50), "test_examples None there, 50 now"),
    (dict(same_data_order=True), "same_data_order False there, True now"),
])
def test_other_settings_for_the_same_output_dir_are_refused(source, analysis, tmp_path, monkeypatch, change, named):
    output = str(tmp_path / "other")
    shutil.copytree(analysis[0], output)
    calls = _counting_copies(monkeypatch)
    with pytest.raises(instability.InstabilityError, match=named):
        instability.run(instability.InstabilityConfig(runs=[source], output_dir=output, **{**ANALYSIS, **change}))
    assert calls == []


def test_entries_written_before_the_masks_field_resume_as_imp_cells(source, analysis, tmp_path, monkeypatch):
    output = str(tmp_path / "older")
    shutil.copytree(analysis[0], output)
    path = os.path.join(output, instability.INSTABILITY_FILE)
    older = json.load(open(path))
    for entry in older["cells"] + older["ticket_to_dense"]:
        del entry["masks"]
    json.dump(older, open(path, "w"))
    calls = _counting_copies(monkeypatch)
    results = instability.run(instability.InstabilityConfig(runs=[source], output_dir=output, **ANALYSIS))
    assert calls == [] and len(results["cells"]) == len(analysis[1]["cells"])
    summary = instability.summarize(results)
    assert summary == instability.summarize(analysis[1])  # grouped as IMP cells


def test_random_masks_keep_each_layers_count_at_other_positions(source):
    imp_masks = run_folder.RunFolder(source).load_masks(1)
    drawn = instability.random_masks(imp_masks, 0, 1)
    assert sorted(drawn) == sorted(imp_masks)
    for name, mask in imp_masks.items():
        assert drawn[name].shape == mask.shape and set(np.unique(drawn[name])) <= {0.0, 1.0}
        assert drawn[name].sum() == mask.sum()
    assert not np.array_equal(drawn["fc1"], imp_masks["fc1"])
    # Only about a random share (80%) of the kept weights coincide with the IMP mask's.
    assert (drawn["fc1"] * imp_masks["fc1"]).sum() / imp_masks["fc1"].sum() == pytest.approx(0.8, abs=0.02)
    again, other_seed = instability.random_masks(imp_masks, 0, 1), instability.random_masks(imp_masks, 1, 1)
    assert all(np.array_equal(again[name], drawn[name]) for name in drawn)
    assert not np.array_equal(other_seed["fc1"], drawn["fc1"])


def test_the_random_mask_control_trains_the_copies_under_random_masks(source, analysis, tmp_path, monkeypatch):
    output = str(tmp_path / "random")
    shutil.copytree(analysis[0], output)  # the IMP cells of levels 0 and 1 are there: only random ones are new
    calls = _counting_copies(monkeypatch)
    results = instability.run(instability.InstabilityConfig(
        runs=[source], output_dir=output, masks="imp,random", keep_copies=True,
        **{**ANALYSIS, "rewind_iterations": "10"}))
    assert [call[1] for call in calls] == [10, 10]  # level 1's two random copies; no level-0 random cell
    (cell,) = [entry for entry in results["cells"] if entry["masks"] == "random"]
    assert cell["level"] == 1 and len(results["ticket_to_dense"]) == 1  # no line from a random "ticket"
    drawn = instability.random_masks(run_folder.RunFolder(source).load_masks(1), cell["seed"], 1)
    folder = os.path.join(output, instability.COPIES_DIR, os.listdir(os.path.join(output, instability.COPIES_DIR))[0])
    for copy in (0, 1):
        weights = run_folder.read_npz(os.path.join(folder, f"level1_k10_random_copy{copy}.npz"))
        for name, key in KERNELS.items():
            assert np.all(weights[key][drawn[name] == 0] == 0) and np.all(weights[key][drawn[name] == 1] != 0)
    imp_cell = next(entry for entry in analysis[1]["cells"] if (entry["level"], entry["k"]) == (1, 10))
    assert cell["copy_seeds"] == imp_cell["copy_seeds"] and cell["losses"] != imp_cell["losses"]
    rows = [(row["level"], row["masks"], row["k"]) for row in instability.summarize(results)["cells"]]
    assert rows == [(0, "imp", 0), (0, "imp", 10), (1, "imp", 0), (1, "imp", 10), (1, "random", 10)]
    written = instability_report.write_report(results, output)
    assert "| level 1 (80% weights, random masks) | — |" in open(written["markdown"]).read()


def _fake_run(folder, summary):
    os.makedirs(folder)
    with open(os.path.join(folder, "summary.json"), "w") as file:
        json.dump(summary, file)
    return str(folder)


@pytest.mark.parametrize("change, message", [
    (dict(runs=[]), "runs is empty"),
    (dict(output_dir=""), "output_dir is required"),
    (dict(interpolation_points=1), "interpolation_points .* must be an integer >= 2"),
    (dict(interpolation_points=True), "interpolation_points"),
    (dict(rewind_iterations="0,-5"), "rewind_iterations must be comma-separated iterations >= 0"),
    (dict(rewind_iterations="ten"), "rewind_iterations must be"),
    (dict(levels="one"), "levels must be 'all' or comma-separated"),
    (dict(test_examples=0), "test_examples .* must be an integer >= 1"),
    (dict(same_data_order="yes"), "same_data_order must be True or False"),
    (dict(masks="lottery"), "masks must be 'imp' .*, 'random' .* or 'imp,random'; got 'lottery'"),
    (dict(masks=""), "masks must be 'imp'"),
    (dict(masks="random", levels="0"), "masks='random' at level 0 alone has nothing to analyze"),
    (dict(levels="3"), r"levels \[3\]: .* has finished rounds \[0, 1\]"),
    (dict(rewind_iterations="0,30"), r"rewind_iterations \[30\] are not before the end of .* \(30 iterations"),
    (dict(test_examples=500), "test_examples=500, but .* test set has 200"),
    (dict(runs=["nowhere"]), "nowhere does not exist"),
])
def test_bad_settings_are_refused_before_any_training(source, tmp_path, monkeypatch, change, message):
    calls = _counting_copies(monkeypatch)
    config = dict(runs=[source], output_dir=str(tmp_path / "out"), **ANALYSIS)
    with pytest.raises(instability.InstabilityError, match=message):
        instability.run(instability.InstabilityConfig(**{**config, **change}))
    assert calls == [] and not (tmp_path / "out" / instability.INSTABILITY_FILE).exists()


def test_runs_that_are_not_imp_runs_are_refused(tmp_path):
    sparse = _fake_run(tmp_path / "sparse", {"mode": "sparse", "config": {}, "rounds": []})
    with pytest.raises(instability.InstabilityError, match="is a sparse run: .*pass IMP run folders"):
        instability.run(instability.InstabilityConfig(runs=[sparse], output_dir=str(tmp_path / "out")))
    one_pass = _fake_run(tmp_path / "one_pass", {"config": {"mode": "one_pass"}, "rounds": []})
    with pytest.raises(instability.InstabilityError, match="is a one-pass run"):
        instability.run(instability.InstabilityConfig(runs=[one_pass], output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_copy_seeds_differ_between_copies_and_cells_and_repeat_for_the_same_cell():
    seeds = {(level, k, copy): instability.copy_seed(0, level, k, copy)
             for level in range(3) for k in (0, 25, 100) for copy in (0, 1)}
    assert len(set(seeds.values())) == len(seeds)
    assert instability.copy_seed(0, 2, 25, 1) == seeds[2, 25, 1] and instability.copy_seed(1, 2, 25, 1) != seeds[
        2, 25, 1]


def _entry(seed, level, k, barrier, weights=1.0, errors=(0.1, 0.2, 0.1)):
    return {"run": f"r{seed}", "source": f"r{seed}", "dataset": "d", "model": "m", "seed": seed, "level": level,
            "weights_remaining": weights, "k": k, "error_barrier": barrier, "loss_barrier": 2 * barrier,
            "alphas": [0.0, 0.5, 1.0], "errors": list(errors)}


def test_summarize_aggregates_seeds_per_level_and_k():
    results = {"cells": [_entry(0, 0, 0, 0.01), _entry(1, 0, 0, 0.05, errors=(0.3, 0.4, 0.3)),
                         _entry(0, 0, 0, 0.9),  # the same seed again (another copy of the run): counted once
                         _entry(0, 2, 0, 0.002, weights=0.64), _entry(0, 0, 100, 0.0)],
               "ticket_to_dense": [{k: v for k, v in _entry(0, 2, 0, 0.3, weights=0.64).items() if k != "k"}]}
    summary = instability.summarize(results)
    rows = {(row["level"], row["k"]): row for row in summary["cells"]}
    assert list(rows) == [(0, 0), (0, 100), (2, 0)]
    dense = rows[0, 0]
    assert dense["error_barrier"] == {"mean": pytest.approx(0.03), "std": pytest.approx(np.std([0.01, 0.05], ddof=1)),
                                      "n": 2}
    assert dense["loss_barrier"]["mean"] == pytest.approx(0.06) and dense["stable"] is False  # 3% > 2%
    assert dense["errors"] == pytest.approx([0.2, 0.3, 0.2]) and dense["seeds"] == [0, 1]
    assert rows[2, 0]["stable"] is True and rows[2, 0]["error_barrier"]["std"] is None
    (path,) = summary["ticket_to_dense"]
    assert path["level"] == 2 and path["error_barrier"]["mean"] == pytest.approx(0.3) and "k" not in path


def test_the_report_has_the_barrier_table_and_three_plots(analysis):
    output, results = analysis
    written = instability_report.write_report(results, output)
    markdown = open(written["markdown"]).read()
    summary = instability.summarize(results)
    row = next(row for row in summary["cells"] if (row["level"], row["k"]) == (1, 10))
    assert "| level (weights remaining) | k = 0 | k = 10 |" in markdown
    assert f"{100 * row['error_barrier']['mean']:.2f} (1) {'stable' if row['stable'] else 'unstable'}" in markdown
    # The loss barrier is in nats, as computed, not scaled as the error's percentages are.
    loss_table = markdown.split("### Loss barrier", 1)[1].split("###", 1)[0]
    assert f"{row['loss_barrier']['mean']:.3f} (1)" in loss_table
    assert "### Ticket to dense network" in markdown and "level 1 (80% weights)" in markdown
    assert len(written["plots"]) == 3
    for plot in written["plots"]:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
