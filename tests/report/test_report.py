"""Tests of the multi-run report on hand-made run folders with known numbers (no training)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from keras_lottery import report
from keras_lottery.report import render
from tests import processes

LENET_FLOPS = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}  # Dense: multiply-adds = kernel size
DENSE_FLOPS = sum(LENET_FLOPS.values())  # 266,200


def _lth_layers(round_index):
    """LeNet's per-layer weights remaining after `round_index` LTH rounds (20%, output 10%)."""
    return {"fc1": 0.8 ** round_index, "fc2": 0.8 ** round_index, "output": 0.9 ** round_index}


def _overall(layers):
    return sum(LENET_FLOPS[name] * layers[name] for name in layers) / DENSE_FLOPS


def _imp_summary(seed, accuracies, dataset="fashion_mnist", control="ticket", old_format=False, **config):
    """An IMP summary.json: round r has test accuracy accuracies[r], early stop 100(r+1) + 10 seed, 1,000 iterations."""
    rounds = []
    for round_index, accuracy in enumerate(accuracies):
        layers = _lth_layers(round_index)
        record = {"round": round_index, "weights_remaining": _overall(layers), "layers": layers,
                  "test_accuracy": accuracy, "best_val_accuracy": accuracy,
                  "early_stop_iteration": 100 * (round_index + 1) + 10 * seed, "iterations": 1000, "flips": {}}
        if not old_format:  # runs saved before total_iterations existed: the report sums "iterations"
            record["total_iterations"] = 1000 * (round_index + 1)
        rounds.append(record)
    settings = {"dataset": dataset, "model": "lenet_300_100", "seed": seed, "rounds": len(accuracies) - 1,
                "output_dir": f"runs/{control}_{seed}", "iterations": 1000, "learning_rate": 0.0012,
                "criterion": "magnitude", "control": control, "mode": "imp", "rewind_step": 0, **config}
    if old_format:
        del settings["criterion"], settings["mode"]
    return {"config": settings, "iterations_per_round": 1000, "rounds": rounds}


def _early_bird_summary(seed, accuracy, total_iterations):
    layers = {"fc1": 0.2, "fc2": 0.2, "output": 0.2}
    return {
        "config": {"dataset": "fashion_mnist", "model": "lenet_300_100", "seed": seed, "target_sparsity": 0.8,
                   "criterion": "magnitude", "stop_at_draw": True, "output_dir": f"runs/eb_{seed}"},
        "drawn_epoch": 3, "distances": [0.5, 0.2, 0.05], "search": {"test_accuracy": 0.8, "iterations": 3000},
        "retrain": {"test_accuracy": accuracy, "iterations": total_iterations - 3000},
        "weights_remaining": 0.2, "layers": layers, "total_iterations": total_iterations,
    }


def _one_pass_summary(seed, accuracy):
    layers = _lth_layers(2)
    record = {"round": 0, "weights_remaining": _overall(layers), "layers": layers, "test_accuracy": accuracy,
              "best_val_accuracy": accuracy, "early_stop_iteration": 2500, "iterations": 3000,
              "total_iterations": 3000, "flips": {"fc1": {"fraction_flipped": 0.1}}}
    config = {"dataset": "fashion_mnist", "model": "lenet_300_100", "seed": seed, "rounds": 2, "mode": "one_pass",
              "criterion": "sign_flip", "control": "ticket", "rewind_step": 0, "output_dir": "runs/one_pass"}
    return {"config": config, "mode": "one_pass", "iterations_per_round": 3000, "rounds": [record]}


def _write(folder, summary):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "summary.json"), "w") as file:
        json.dump(summary, file)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """fashion_mnist: ticket (3 seeds, seed 2 one round short), random_reinit (2 seeds, old format),
    early bird (2 seeds), one pass (1 seed), at depths 2 and 3; mnist: one ticket seed."""
    root = tmp_path_factory.mktemp("runs")
    ticket = {0: [0.80, 0.81, 0.82, 0.83], 1: [0.82, 0.83, 0.84, 0.85], 2: [0.84, 0.85, 0.86]}
    for seed, accuracies in ticket.items():
        _write(root / "fashion" / "imp" / f"ticket_seed{seed}", _imp_summary(seed, accuracies))
    for seed, accuracies in {0: [0.80, 0.70, 0.60], 1: [0.84, 0.74, 0.64]}.items():
        _write(root / "fashion" / "imp" / f"reinit_seed{seed}",
               _imp_summary(seed, accuracies, control="random_reinit", old_format=True,
                            masks_from=f"runs/ticket_seed{seed}"))
    _write(root / "fashion" / "early_bird" / "seed0", _early_bird_summary(0, 0.85, 5000))
    _write(root / "fashion" / "early_bird" / "seed1", _early_bird_summary(1, 0.87, 5200))
    _write(root / "fashion" / "one_pass_seed0", _one_pass_summary(0, 0.90))
    _write(root / "mnist" / "ticket_seed0", _imp_summary(0, [0.99, 0.98], dataset="mnist"))
    return root


@pytest.fixture(scope="module")
def written(runs_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("report")
    paths = report.write_report([runs_root / "fashion", runs_root / "mnist"], output)
    with open(paths["json"]) as file:
        content = json.load(file)
    with open(paths["markdown"]) as file:
        markdown = file.read()
    return paths, content, markdown


def _method(content, dataset, label):
    group = next(g for g in content["groups"] if g["dataset"] == dataset)
    return next(m for m in group["methods"] if m["label"] == label)


def test_seeds_are_aggregated_on_the_rounds_every_seed_has(written):
    _, content, _ = written
    ticket = _method(content, "fashion_mnist", "magnitude IMP (ticket)")
    assert ticket["seeds"] == [0, 1, 2] and ticket["left_out"] == 2  # round 3 of seeds 0 and 1
    assert [level["key"] for level in ticket["levels"]] == [0, 1, 2]
    for level, mean in zip(ticket["levels"], (0.82, 0.83, 0.84)):
        assert level["test_accuracy"]["mean"] == pytest.approx(mean)
        assert level["test_accuracy"]["std"] == pytest.approx(0.02)  # sample std of mean-0.02, mean, mean+0.02
        assert level["test_accuracy"]["n"] == 3
    assert ticket["levels"][2]["early_stop_iteration"]["mean"] == pytest.approx(310)  # 300, 310, 320
    reinit = _method(content, "fashion_mnist", "magnitude IMP (random_reinit)")  # criterion defaults to magnitude
    assert reinit["levels"][1]["test_accuracy"]["std"] == pytest.approx(0.04 / 2 ** 0.5)
    assert [level["total_iterations"]["mean"] for level in reinit["levels"]] == [1000, 2000, 3000]  # running sum


def test_compression_and_theoretical_speedup_by_hand(written):
    _, content, markdown = written
    level = _method(content, "fashion_mnist", "magnitude IMP (ticket)")["levels"][2]
    nonzero = 0.64 * 784 * 300 + 0.64 * 300 * 100 + 0.81 * 100 * 10  # 170,538 multiply-adds left
    assert level["weights_remaining"] == pytest.approx(nonzero / 266_200)
    assert level["compression"] == pytest.approx(266_200 / nonzero)
    assert level["speedup"] == pytest.approx(266_200 / nonzero)
    assert "| magnitude IMP (ticket) | 64.1 | 1.6x | 1.6x | 84.00 ± 2.00 | 3 | 310 | 3,000 |" in markdown
    assert "| magnitude IMP (random_reinit) | 80 | 1.2x | 1.2x | 72.00 ± 2.83 | 2 | 205 | 2,000 |" in markdown
    assert "| early-bird magnitude | 20 | 5.0x | 5.0x | 86.00 ± 1.41 | 2 | — | 5,100 |" in markdown
    assert "| one-pass sign_flip | 64.1 | 1.6x | 1.6x | 90.00 | 1 | — | 3,000 |" in markdown


def test_conv_multiply_adds_scale_with_output_positions():
    flops = report.layer_flops("conv2", "mnist")
    assert flops == {"conv1_1": 3 * 3 * 1 * 64 * 28 * 28, "conv1_2": 3 * 3 * 64 * 64 * 28 * 28,
                     "fc1": 14 * 14 * 64 * 256, "fc2": 256 * 256, "output": 256 * 10}
    halved_convs = {name: 0.5 if name.startswith("conv") else 1.0 for name in flops}
    conv = flops["conv1_1"] + flops["conv1_2"]
    total = sum(flops.values())
    assert report.theoretical_speedup(halved_convs, flops) == pytest.approx(total / (total - conv / 2))
    assert report.layer_flops("lenet_300_100", "fashion_mnist") == LENET_FLOPS
    assert report.layer_flops("lenet_300_100", "unknown_dataset") is None
    assert report.theoretical_speedup({"fc1": 0.5}, LENET_FLOPS) is None  # layers that do not match


def test_datasets_are_never_mixed(written):
    _, content, markdown = written
    assert [(g["dataset"], g["model"]) for g in content["groups"]] == [
        ("fashion_mnist", "lenet_300_100"), ("mnist", "lenet_300_100")]
    fashion, mnist = markdown.split("## mnist / lenet_300_100")
    assert "## fashion_mnist / lenet_300_100" in fashion and "99.00" not in fashion
    assert "| magnitude IMP (ticket) | 100 | 1.0x | 1.0x | 99.00 | 1 |" in mnist and "82.00" not in mnist
    assert _method(content, "mnist", "magnitude IMP (ticket)")["seeds"] == [0]
    assert [m["label"] for m in content["groups"][0]["methods"]] == [
        "magnitude IMP (random_reinit)", "magnitude IMP (ticket)", "one-pass sign_flip", "early-bird magnitude"]


def test_plots_are_written_per_group(written):
    paths, _, markdown = written
    assert len(paths["plots"]) == 6  # accuracy, early stop, iterations for each of the 2 groups
    for path in paths["plots"]:
        with open(path, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 10_000
        assert f"({os.path.basename(path)})" in markdown  # linked from its section


def _axes(written, dataset, name):
    """The drawn axes of plot `name` of `dataset`'s group, as write_report draws it from report.json's group."""
    group = next(g for g in written[1]["groups"] if g["dataset"] == dataset)
    figure = render.figure(group, name, {m["label"]: f"C{i}" for i, m in enumerate(group["methods"])})
    figure.canvas.draw()  # tick labels are only set when drawn
    return figure.axes[0]


def test_weights_axis_is_labelled_at_the_runs_levels(written):
    # fashion_mnist's levels: IMP rounds 0-2 (100%, 80.04%, 64.06% overall), one pass at round 2's, early bird 20%.
    axes = _axes(written, "fashion_mnist", "accuracy")
    assert [label.get_text() for label in axes.get_xticklabels()] == ["100", "80", "64.1", "20"]
    assert [label.get_text() for label in _axes(written, "fashion_mnist", "early_stop").get_xticklabels()] == [
        "100", "80", "64.1"]  # IMP only
    assert [label.get_text() for label in _axes(written, "mnist", "accuracy").get_xticklabels()] == ["100", "80"]


def test_level_ticks_leave_out_levels_whose_labels_would_collide():
    # On a 40-115% axis, labels keep log10(115 / 40) / 14 decades apart: a ratio of 1.079.
    assert render.level_ticks([50.9, 100, 98, 80, 51.2, 100.0004], 40, 115) == [100, 80, 51.2]
    assert render.level_ticks([100, 98], 40, 115, max_ticks=100) == [100, 98]


def test_iterations_plot_says_each_points_weights_remaining(written):
    axes = _axes(written, "fashion_mnist", "iterations")
    notes = {}
    for text in axes.texts:
        notes.setdefault(text.get_text(), []).append(text.xy)
    # random_reinit and the ticket at rounds 0-2, the one pass at round 2's level, the early bird at 20%.
    assert {note: len(points) for note, points in notes.items()} == {"100%": 2, "80%": 2, "64.1%": 3, "20%": 1}
    assert notes["20%"] == [(5100, pytest.approx(86.0))]  # at the early bird's point: 5,100 iterations, 86%


def test_one_seed_draws_no_error_bar_or_band(written):
    axes = _axes(written, "fashion_mnist", "accuracy")
    bars = [container for container in axes.containers if isinstance(container, ErrorbarContainer)]
    assert [container.get_label() for container in bars] == ["early-bird magnitude (n=2)"]  # not the one pass (n=1)
    assert bars[0].lines[1]  # with its caps
    assert "one-pass sign_flip (n=1)" in [line.get_label() for line in axes.lines]  # drawn as a marker
    bands = [collection for collection in axes.collections if isinstance(collection, PolyCollection)]
    assert len(bands) == 2  # ticket and random_reinit (3 and 2 seeds)
    mnist = _axes(written, "mnist", "accuracy")  # a single seed's line
    assert not [collection for collection in mnist.collections if isinstance(collection, PolyCollection)]
    assert "magnitude IMP (ticket) (n=1)" in [line.get_label() for line in mnist.lines]


def test_early_bird_and_one_pass_summaries_are_read(runs_root):
    (early_bird,) = report.find_runs(runs_root / "fashion" / "early_bird" / "seed1")
    assert early_bird.kind == "early_bird" and early_bird.seed == 1
    (point,) = early_bird.points
    assert (point.key, point.weights_remaining, point.test_accuracy, point.total_iterations) == (0.8, 0.2, 0.87, 5200)
    assert early_bird.config["retrain_from"] == "drawn"  # a field the summary lacks: EarlyBirdConfig's default
    (one_pass,) = report.find_runs(runs_root / "fashion" / "one_pass_seed0")
    assert one_pass.kind == "one_pass" and one_pass.points[0].key == 2  # placed on its curve by `rounds`
    assert one_pass.points[0].early_stop_iteration is None  # early stop is an IMP-round notion
    assert list(report.group_runs([one_pass, early_bird])[("fashion_mnist", "lenet_300_100")]) == [
        "one-pass sign_flip", "early-bird magnitude"]


def test_runs_are_found_recursively_and_read_once(runs_root):
    assert len(report.find_runs([runs_root])) == 9
    ticket = runs_root / "fashion" / "imp" / "ticket_seed0"
    assert [run.path for run in report.find_runs([ticket])] == [str(ticket)]
    assert len(report.find_runs(str(ticket / "summary.json"))) == 1
    assert len(report.find_runs([runs_root / "fashion", ticket, runs_root / "fashion" / "imp"])) == 8


def test_configs_that_differ_beyond_the_seed_are_not_averaged(tmp_path):
    for seed, rate in ((0, 0.0012), (1, 0.0012), (2, 0.01)):
        _write(tmp_path / f"ticket{seed}", _imp_summary(seed, [0.8], learning_rate=rate))
    for seed in (0, 1):  # each random_reinit seed takes its own ticket's masks: still one method
        _write(tmp_path / f"reinit{seed}", _imp_summary(seed, [0.8], control="random_reinit",
                                                        masks_from=f"runs/ticket{seed}", rounds=seed + 3))
    methods = report.group_runs(report.find_runs(tmp_path))[("fashion_mnist", "lenet_300_100")]
    assert {label: [run.seed for run in runs] for label, runs in methods.items()} == {
        "magnitude IMP (random_reinit)": [0, 1],
        "magnitude IMP (ticket) [learning_rate=0.0012]": [0, 1],
        "magnitude IMP (ticket) [learning_rate=0.01]": [2],
    }


def _corrupt(folder):
    os.makedirs(folder)
    (folder / "summary.json").write_text('{"config": {"dataset": ')


def _foreign(folder):
    _write(folder, {"config": {"dataset": "mnist", "model": "lenet_300_100", "seed": 0}, "accuracy": 0.9})


def _unfinished(folder):
    _write(folder, {**_imp_summary(0, [0.8]), "rounds": []})


def _copied(folder):
    _write(folder / "a", _imp_summary(0, [0.8]))
    shutil.copytree(folder / "a", folder / "b")


@pytest.mark.parametrize("make, message", [
    (lambda folder: None, "does not exist"),
    (os.makedirs, "no summary.json in"),
    (_corrupt, "cannot read"),
    (_foreign, "not a summary written by"),
    (_unfinished, "no finished round"),
    (_copied, "count twice"),
])
def test_bad_input_fails_before_anything_is_written(runs_root, tmp_path, make, message):
    make(tmp_path / "runs")
    with pytest.raises(report.ReportError, match=message) as raised:
        report.write_report([runs_root / "mnist", tmp_path / "runs"], tmp_path / "out")  # a good folder first
    assert str(tmp_path / "runs") in str(raised.value)  # names the bad path
    assert not os.path.exists(tmp_path / "out")


def test_app_runs_end_to_end(runs_root, tmp_path):
    output = tmp_path / "app_report"
    # `--runs A B`: several folders after one flag.
    command = [sys.executable, "-m", "apps.report_main", "--runs", str(runs_root / "mnist"),
               str(runs_root / "fashion" / "early_bird"), "--output_dir", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=processes.REPOSITORY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(output) in result.stderr
    markdown = (output / "report.md").read_text()
    assert "## fashion_mnist / lenet_300_100" in markdown and "## mnist / lenet_300_100" in markdown
    assert "| early-bird magnitude | 20 | 5.0x | 5.0x | 86.00 ± 1.41 | 2 | — | 5,100 |" in markdown
    assert len(json.loads((output / "report.json").read_text())["groups"]) == 2
    # mnist: 3 plots; fashion_mnist has no IMP method here, so no early-stop plot.
    assert sorted(path.name for path in output.glob("*.png")) == [
        "fashion_mnist-lenet_300_100-accuracy.png", "fashion_mnist-lenet_300_100-iterations.png",
        "mnist-lenet_300_100-accuracy.png", "mnist-lenet_300_100-early_stop.png", "mnist-lenet_300_100-iterations.png"]


def _sparse_summary(method, seed, sparsity, accuracy, training_flops, control="none"):
    kept = round((1 - sparsity) * DENSE_FLOPS)
    record = {"round": 0, "weights_remaining": kept / DENSE_FLOPS, "layers": {name: 1 - sparsity for name in LENET_FLOPS},
              "test_accuracy": accuracy, "best_val_accuracy": accuracy, "early_stop_iteration": 1000,
              "iterations": 1000, "method": method, "sparsity": sparsity, "kernel_weights": kept,
              "dense_kernel_weights": DENSE_FLOPS, "inference_flops": kept, "dense_inference_flops": DENSE_FLOPS,
              "training_flops": training_flops}
    config = {"dataset": "fashion_mnist", "model": "lenet_300_100", "seed": seed, "method": method,
              "sparsity": sparsity, "control": control, "output_dir": f"runs/{method}_{seed}", "iterations": 1000,
              "batch_size": 60}
    return {"config": config, "mode": "sparse", "iterations_per_round": 1000, "rounds": [record]}


def test_sparse_runs_are_methods_at_their_sparsity_with_training_flops(tmp_path):
    for seed in (0, 1):
        for sparsity in (0.8, 0.9):
            _write(tmp_path / "rigl" / f"s{sparsity}_{seed}", _sparse_summary("rigl", seed, sparsity, 0.8 + seed / 100,
                                                                              1e9 * (1 - sparsity)))
        _write(tmp_path / "snip_shuffled" / str(seed), _sparse_summary("snip", seed, 0.9, 0.7, 5e8, "layer_shuffle"))
    imp_run = _imp_summary(0, [0.9, 0.89])
    imp_run["config"]["batch_size"] = 60
    _write(tmp_path / "imp", imp_run)
    written = report.write_report([tmp_path], tmp_path / "report")
    group = json.loads(open(written["json"]).read())["groups"][0]
    methods = {method["label"]: method for method in group["methods"]}
    rigl = methods["rigl"]
    assert [level["key"] for level in rigl["levels"]] == [0.8, 0.9]  # one point per sparsity, seeds aggregated
    assert rigl["levels"][0]["test_accuracy"]["mean"] == pytest.approx(0.805) and rigl["levels"][0]["test_accuracy"][
        "n"] == 2
    assert rigl["levels"][1]["training_flops"]["mean"] == pytest.approx(1e8)
    assert "snip (layer_shuffle)" in methods
    # IMP's training FLOPs: 3 multiply-adds per weight, example and step, round after round.
    imp_levels = next(m for m in group["methods"] if m["kind"] == "imp")["levels"]
    dense_round = 3 * DENSE_FLOPS * 1000 * 60
    assert imp_levels[0]["training_flops"]["mean"] == pytest.approx(dense_round)
    second = 3 * sum(LENET_FLOPS[n] * v for n, v in _lth_layers(1).items()) * 1000 * 60
    assert imp_levels[1]["training_flops"]["mean"] == pytest.approx(dense_round + second)
    assert any(path.endswith("-flops.png") for path in written["plots"])
