"""The comparison grid: its cells, their configs and commands, a tiny grid end to end, and keras-tuner workers."""

import concurrent.futures
import json
import os
import socket
import sys

import pytest

from keras_lottery.experiments import compare
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.report import compare as compare_report
from keras_lottery.sparsity import masks as masks_lib
from tests import processes

pytestmark = pytest.mark.usefixtures("app_server")  # the app runs fork from the app server (tests/processes.py)


def _grid(data_dir, output_dir, **overrides):
    settings = dict(dataset="fashion_mnist", data_dir=data_dir, model="lenet_300_100", iterations=20, batch_size=20,
                    validation_examples=100, evaluations_per_round=2, verbose=0, learning_rate=0.01,
                    update_frequency=5)
    grid = dict(output_dir=str(output_dir), methods=("dense", "imp", "scratch_e", "snip/layer_shuffle", "rigl"),
                sparsities=(0.8,), seeds=(0, 1), imp_rounds=2, settings=settings)
    grid.update(overrides)
    return compare.CompareConfig(**grid)


def test_cells_come_imp_first_with_dense_once_per_seed(tmp_path):
    config = _grid("unused", tmp_path, sparsities=(0.8, 0.9))
    cells = compare.cells(config)
    assert [cell.method for cell in cells[:4]] == ["imp"] * 4  # the ticket cells read their masks
    assert sorted((cell.sparsity, cell.seed) for cell in cells if cell.method == "dense") == [(0.0, 0), (0.0, 1)]
    assert len(cells) == 2 + 4 * 2 * 2
    assert cells[0].folder(str(tmp_path)).endswith(os.path.join("cells", "imp", "sparsity_0.8", "seed_0"))
    shuffled = next(cell for cell in cells if cell.method == "snip/layer_shuffle")
    assert "snip+layer_shuffle" in shuffled.folder(str(tmp_path))


def test_each_cell_runs_its_method_at_the_cells_sparsity(tmp_path):
    config = _grid("unused", tmp_path, methods=("imp", "magnitude", "scratch_b", "imp/layer_shuffle", "set"),
                   sparsities=(0.95,), seeds=(3,), imp_rounds=4)
    settings = {cell.method: compare.cell_config(config, cell) for cell in compare.cells(config)}
    rate = settings["imp"].prune_rate
    assert masks_lib.sparsity_after_rounds(rate, 4) == pytest.approx(0.95)
    assert isinstance(settings["imp"], imp.ImpConfig) and settings["imp"].strategy == "global"
    assert settings["magnitude"].mode == "one_pass" and settings["magnitude"].one_pass_iterations == 20
    assert (settings["scratch_b"].method, settings["scratch_b"].control, settings["scratch_b"].budget) == (
        "ticket", "reinit", "flops")
    assert settings["scratch_b"].masks_from == settings["imp"].output_dir
    assert settings["imp/layer_shuffle"].control == "layer_shuffle"
    assert all(setting.seed == 3 for setting in settings.values())
    assert settings["set"].update_frequency == 5 and not hasattr(settings["imp"], "update_frequency")


@pytest.mark.parametrize("overrides, message", [
    (dict(methods=("nope",)), "unknown grid method 'nope'"),
    (dict(methods=("rigl/layer_shuffle",)), "a control is one of"),
    (dict(methods=("snip/twice",)), "a control is one of"),
    (dict(sparsities=(1.0,)), "sparsities"),
    (dict(sparsities=(0.0,)), "'dense' method is the 0"),
    (dict(seeds=(-1,)), "seeds"),
    (dict(budget="time"), "budget must be one of"),
    (dict(settings={"rounds": 3}), "not fields every cell shares"),
    (dict(methods=("magnitude",), settings={"epochs": 2}), "give iterations"),
    (dict(methods=("rigl",), settings={"distribution": "global"}), "cell rigl at sparsity 0.8, seed 0"),
])
def test_a_bad_grid_is_refused_before_any_cell_runs(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _grid("unused", tmp_path, **overrides).resolved()
    assert not (tmp_path / compare.CELLS).exists()


@pytest.fixture(scope="module")
def tiny_grid(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("grid")
    config = _grid(tiny_fashion, output)
    summaries = compare.run(config)
    return config, summaries, compare_report.write(config)


def test_a_tiny_grid_runs_every_cell_and_reports_mean_std_and_n(tiny_grid):
    config, summaries, written = tiny_grid
    assert len(summaries) == 2 + 4 * 2 and written["cells"] == (10, 10)
    numbers = json.loads(open(written["json"]).read())
    rows = {(row["method"], row["sparsity"]): row for row in numbers["rows"]}
    for method in ("imp", "scratch_e", "snip/layer_shuffle", "rigl"):
        row = rows[(method, 0.8)]
        accuracies = [c["test_accuracy"] for c in numbers["cells"] if c["method"] == method]
        assert row["test_accuracy"]["n"] == 2 and row["test_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
        assert row["weights_remaining"]["mean"] == pytest.approx(0.2, abs=1e-4)
    # IMP trains 3 rounds (dense + 2); its ticket's scratch training only the last one's iterations.
    assert rows[("imp", 0.8)]["total_iterations"]["mean"] == 60 and rows[("scratch_e", 0.8)]["total_iterations"][
        "mean"] == 20
    assert rows[("imp", 0.8)]["training_flops"]["mean"] > rows[("dense", 0.0)]["training_flops"]["mean"]
    assert rows[("rigl", 0.8)]["training_flops"]["mean"] < rows[("dense", 0.0)]["training_flops"]["mean"]
    markdown = open(written["markdown"]).read()
    assert "| imp | " in markdown and "(n=2)" in markdown and "apps.sparse_main" in markdown
    assert all(os.path.getsize(path) > 10_000 for path in written["plots"])
    # The scratch cells' masks are their IMP cell's last round's.
    for seed in (0, 1):
        source = run_folder.RunFolder(compare.Cell("imp", 0.8, seed).folder(config.output_dir)).load_masks(2)
        scratch = run_folder.RunFolder(compare.Cell("scratch_e", 0.8, seed).folder(config.output_dir))
        initial = json.loads(open(os.path.join(scratch.path, "summary.json")).read())["config"]
        assert initial["masks_from"].endswith(os.path.join("imp", "sparsity_0.8", f"seed_{seed}"))
        assert {k: int(v.sum()) for k, v in scratch.load_masks(0).items()} == {k: int(v.sum()) for k, v in
                                                                                source.items()}


def test_a_cells_command_is_its_run(tiny_grid):
    config, _, _ = tiny_grid
    cell = compare.Cell("rigl", 0.8, 1)
    command = compare.command(config, cell)
    assert command.startswith("python -m apps.sparse_main --output_dir=") and "--method=rigl" in command
    arguments = command.split()[3:]
    # Rerun with the cell's command: the same config (else ConfigMismatchError), so it reads the run back.
    result = processes.run([sys.executable, "-m", "apps.sparse_main", *arguments], cwd=processes.REPOSITORY,
                           env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(open(os.path.join(cell.folder(config.output_dir), "summary.json")).read())
    assert summary["config"]["method"] == "rigl" and summary["config"]["seed"] == 1


def test_a_rerun_grid_reads_its_cells_back(tiny_grid):
    config, summaries, _ = tiny_grid
    again = compare.run(config)
    assert again == summaries


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_grid_is_shared_out_by_keras_tuner_chief_and_worker(tiny_fashion, tmp_path):
    command = [sys.executable, "-m", "apps.compare_main", f"--data_dir={tiny_fashion}", "--model=lenet_300_100",
               "--iterations=20", "--batch_size=20", "--validation_examples=100", "--evaluations_per_round=2",
               "--learning_rate=0.01", "--methods=dense,random", "--sparsities=0.8", "--seeds=0",
               f"--output_dir={tmp_path}"]
    environment = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(_free_port()))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = {tuner_id: pool.submit(processes.run, command, cwd=processes.REPOSITORY,
                                      env=dict(environment, KERASTUNER_TUNER_ID=tuner_id), timeout=300)
                for tuner_id in ("chief", "tuner0")}
        chief, worker = runs["chief"].result(), runs["tuner0"].result()
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "dense at sparsity 0, seed 0: test accuracy" in worker.stderr  # the worker ran the cells
    assert "random at sparsity 0.8, seed 0: test accuracy" in worker.stderr
    assert "test accuracy" not in chief.stderr.split("report of")[0]  # the chief only served the oracle
    assert "report of 2 of 2 cells" in chief.stderr
    for method, sparsity in (("dense", 0.0), ("random", 0.8)):
        summary = run_folder.RunFolder(compare.Cell(method, sparsity, 0).folder(str(tmp_path))).load_summary()
        assert summary["config"]["method"] == method


def test_the_papers_claims_are_checked_against_the_noise_of_the_seeds(tmp_path):
    config = _grid("unused", tmp_path, methods=("imp", "imp/layer_shuffle", "snip", "snip/layer_shuffle", "set",
                                                "rigl"), sparsities=(0.9,))

    def row(method, mean, std):
        return {"method": method, "sparsity": 0.9, "test_accuracy": {"mean": mean, "std": std, "n": 3}}

    rows = [row("imp", 0.88, 0.003), row("imp/layer_shuffle", 0.85, 0.003),  # 3 points worse: beyond 2 s.e.
            row("snip", 0.86, 0.01), row("snip/layer_shuffle", 0.855, 0.01),  # 0.5 points: within the noise
            row("set", 0.87, 0.001), row("rigl", 0.86, 0.001)]  # RigL 1 point below SET: the claim fails here
    checks = {(c["first"], c["second"]): c for c in compare_report.claim_checks(config, rows)}
    assert checks[("imp/layer_shuffle", "imp")]["holds"]
    assert checks[("snip/layer_shuffle", "snip")]["holds"]
    assert not checks[("rigl", "set")]["holds"]
    noise = checks[("rigl", "set")]["noise"]
    assert checks[("rigl", "set")]["difference"] == pytest.approx(-0.01) and noise == pytest.approx(
        2 * (2 * 0.001 ** 2 / 3) ** 0.5)
    assert ("set", "random") not in checks  # 'random' is not in this grid
