"""The sparse-training flow: each method's mask at its exact count, controls, tickets, budgets, resume."""

import json
import logging

import numpy as np
import pytest

from keras_lottery import data
from keras_lottery import models
from keras_lottery.experiments import imp
from keras_lottery.experiments import round_backup
from keras_lottery.experiments import run_models
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import sparse_training
from keras_lottery.experiments.sparse_config import SparseConfig
from keras_lottery.methods import distributions
from keras_lottery.sparsity import flops
from keras_lottery.sparsity import masks as masks_lib

LENET_SHAPES = {"fc1": (784, 300), "fc2": (300, 100), "output": (100, 10)}
LENET = {name: int(np.prod(shape)) for name, shape in LENET_SHAPES.items()}


def _config(data_dir, output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), dataset="fashion_mnist", data_dir=data_dir, model="lenet_300_100",
                    iterations=20, batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0,
                    learning_rate=0.01, update_frequency=5, backup_seconds=0)
    settings.update(overrides)
    return SparseConfig(**settings)


def _expected_kept(config):
    if config.distribution == "global":
        return masks_lib.keep_count(sum(LENET.values()), config.sparsity)
    per_layer = distributions.distribute(LENET_SHAPES, config.distribution, config.sparsity)
    return sum(masks_lib.keep_count(LENET[name], value) for name, value in per_layer.items())


@pytest.mark.parametrize("method", ["random", "snip", "grasp", "synflow", "set", "snfs", "rigl", "l0",
                                    "variational_dropout", "supermask", "edge_popup"])
def test_each_mask_method_trains_at_exactly_the_count_of_its_sparsity(tiny_fashion, tmp_path, method):
    config = _config(tiny_fashion, tmp_path, method=method, sparsity=0.9)
    record = sparse_training.run(config)["rounds"][0]
    resolved = config.resolved()
    masks = run_folder.RunFolder(tmp_path).load_masks(0)
    assert sum(int(mask.sum()) for mask in masks.values()) == record["kernel_weights"] == _expected_kept(resolved)
    assert record["weights_remaining"] == record["kernel_weights"] / sum(LENET.values())
    assert record["iterations"] == 20 and record["method"] == method
    # FLOPs: LeNet's multiply-adds are its kernel weights; training counts 3 per weight and example at least.
    assert record["dense_inference_flops"] == sum(LENET.values())
    assert record["inference_flops"] == record["kernel_weights"]
    assert record["training_flops"] >= 3 * record["inference_flops"] * 20 * 20
    if method in ("l0", "variational_dropout", "supermask", "edge_popup"):  # what the method reached on its own
        assert set(record["learned_density"]) == set(LENET) and all(
            0 <= value <= 1 for value in record["learned_density"].values())


def test_a_learned_mask_is_fixed_at_learn_until_and_trained_on(tiny_fashion, tmp_path):
    record = sparse_training.run(_config(tiny_fashion, tmp_path, method="variational_dropout", sparsity=0.9,
                                         learn_until=0.5, evaluations_per_round=4))["rounds"][0]
    # The mask is fixed at step 10 of 20: the early-stop record counts the two checks after it.
    assert record["evaluations"] == 4 and record["early_stop_iteration"] in (15, 20)
    assert record["kernel_weights"] == masks_lib.keep_count(sum(LENET.values()), 0.9)
    # L0/VD pay dense training while they learn, then static sparse training (RigL's counting).
    f_d, f_s = record["dense_inference_flops"], record["inference_flops"]
    assert record["training_flops"] == pytest.approx(3 * f_d * 10 * 20 + 3 * f_s * 10 * 20)


def test_dynamic_methods_move_the_mask_and_keep_every_layers_count(tiny_fashion, tmp_path):
    start = _config(tiny_fashion, tmp_path / "random", method="random", sparsity=0.9)
    sparse_training.run(start)
    initial = run_folder.RunFolder(tmp_path / "random").load_masks(0)  # the same seeded random mask SET starts from
    for method in ("set", "rigl"):
        sparse_training.run(_config(tiny_fashion, tmp_path / method, method=method, sparsity=0.9))
        final = run_folder.RunFolder(tmp_path / method).load_masks(0)
        moved = 0
        for name in initial:
            assert final[name].sum() == initial[name].sum(), (method, name)
            moved += int((final[name] != initial[name]).sum())
        assert moved > 0, method


def test_layer_shuffle_keeps_each_layers_count_and_moves_its_weights(tiny_fashion, tmp_path):
    sparse_training.run(_config(tiny_fashion, tmp_path / "snip", method="snip", sparsity=0.9))
    sparse_training.run(_config(tiny_fashion, tmp_path / "shuffled", method="snip", sparsity=0.9,
                                control="layer_shuffle"))
    snip, shuffled = (run_folder.RunFolder(tmp_path / name).load_masks(0) for name in ("snip", "shuffled"))
    for name in snip:
        assert shuffled[name].sum() == snip[name].sum()
        if snip[name].mean() < 1:
            assert (shuffled[name] != snip[name]).mean() > 0.05, name


@pytest.fixture(scope="module")
def imp_source(tiny_fashion, tmp_path_factory):
    output = tmp_path_factory.mktemp("imp_source")
    imp.run(imp.ImpConfig(output_dir=str(output), dataset="fashion_mnist", data_dir=tiny_fashion,
                          model="lenet_300_100", rounds=1, prune_rate=0.8, strategy="global", iterations=20,
                          batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0,
                          learning_rate=0.01))
    return output


@pytest.mark.parametrize("control", ["none", "reinit"])
def test_a_ticket_trains_the_source_masks_from_its_init_or_fresh_weights(tiny_fashion, imp_source, tmp_path, control):
    config = _config(tiny_fashion, tmp_path, method="ticket", sparsity=0.8, masks_from=str(imp_source),
                     control=control).resolved()
    splits = data.load_for_training("fashion_mnist", tiny_fashion, 100)
    dense = models.build("lenet_300_100", splits.input_shape, splits.num_classes, config.seed)
    model = sparse_training.wrap(config, dense, sparse_training.prunable_layers(config, dense), splits)
    sparse_training.initial_masks(config, model, splits)
    source = run_folder.RunFolder(imp_source)
    masks = sparse_training.wrappers.get_masks(model)
    for name, mask in source.load_masks(1).items():
        np.testing.assert_array_equal(masks[name], mask)
    snapshot = source.load_snapshot()["0000"]  # IMP's rewind point: fc1's kernel at initialization
    kernel = model.get_layer("prune_low_magnitude_fc1").layer.kernel.numpy()
    kept = masks["fc1"] > 0
    if control == "none":
        np.testing.assert_array_equal(kernel[kept], snapshot[kept])
    else:
        assert not np.allclose(kernel[kept], snapshot[kept])
        # Drawn afresh from the initializer, not picked by magnitude: the scale of the whole initial kernel.
        assert abs(kernel[kept].std() / snapshot.std() - 1) < 0.05


def test_budget_flops_trains_as_long_as_the_dense_training_costs_capped(tiny_fashion, imp_source, tmp_path):
    record = sparse_training.run(_config(tiny_fashion, tmp_path / "b", method="ticket", sparsity=0.8,
                                         masks_from=str(imp_source), control="reinit", budget="flops",
                                         max_budget_factor=3))["rounds"][0]
    ratio = record["dense_inference_flops"] / record["inference_flops"]  # 5x at 20% of the weights
    assert ratio > 3 and record["iterations"] == 60  # capped at 3 x 20
    record = sparse_training.run(_config(tiny_fashion, tmp_path / "b2", method="ticket", sparsity=0.8,
                                         masks_from=str(imp_source), control="reinit", budget="flops",
                                         max_budget_factor=100, evaluations_per_round=1))["rounds"][0]
    assert record["iterations"] == round(20 * ratio)


def test_small_dense_has_the_kernel_weights_of_the_sparse_budget(tiny_fashion, tmp_path):
    record = sparse_training.run(_config(tiny_fashion, tmp_path, method="small_dense", sparsity=0.9))["rounds"][0]
    assert abs(record["weights_remaining"] - 0.1) < 0.002
    assert record["inference_flops"] == record["kernel_weights"]
    masks = run_folder.RunFolder(tmp_path).load_masks(0)
    assert all(mask.all() for mask in masks.values())  # dense: nothing masked
    assert masks["output"].shape[1] == 10


def _crash_after(monkeypatch, evaluations):
    original = round_backup.RoundBackup.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if len(self.logs) == evaluations:
            raise KeyboardInterrupt

    monkeypatch.setattr(round_backup.RoundBackup, "on_epoch_end", on_epoch_end)


@pytest.mark.parametrize("method, learn_until", [("snfs", None), ("l0", None), ("l0", 0.25)])
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(tiny_fashion, tmp_path, monkeypatch, caplog,
                                                                   method, learn_until):
    # SNFS: updates every 5 steps until step 30 of 40; 4 checks: the crash after check 2 (step 20) lands between
    # updates, with the momentum window of the next update open. L0: its gates' noise resumes at its step, and the
    # mask is fixed at step 30 (learn_until 0.75), after the crash, or at step 10, before it (the density the fix
    # recorded comes back with the backup).
    settings = dict(method=method, sparsity=0.9, iterations=40, evaluations_per_round=4, learn_until=learn_until)
    sparse_training.run(_config(tiny_fashion, tmp_path / "whole", **settings))
    _crash_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        sparse_training.run(_config(tiny_fashion, tmp_path / "resumed", **settings))
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger=round_backup.__name__):
        sparse_training.run(_config(tiny_fashion, tmp_path / "resumed", **settings))
    assert "Round 0 resumes from its backup after evaluation 2 of 4" in caplog.text
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "resumed")]
    for summary in summaries:
        del summary["config"]["output_dir"], summary["rounds"][0]["train_seconds"]
    assert summaries[0] == summaries[1]
    for name in ("masks.npz", "final_weights.npz"):
        got, want = (run_folder.read_npz(tmp_path / run / "round_0" / name) for run in ("resumed", "whole"))
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")


def test_a_finished_run_is_read_back_not_retrained(tiny_fashion, tmp_path):
    first = sparse_training.run(_config(tiny_fashion, tmp_path, method="random", sparsity=0.5))
    again = sparse_training.run(_config(tiny_fashion, tmp_path, method="random", sparsity=0.5))
    assert again == first
    with pytest.raises(run_folder.ConfigMismatchError, match="sparsity: 0.5 there, 0.6 now"):
        sparse_training.run(_config(tiny_fashion, tmp_path, method="random", sparsity=0.6))


@pytest.mark.parametrize("overrides, message", [
    (dict(method="rigl", distribution="global"), "needs per-layer sparsities"),
    (dict(method="rigl", control="layer_shuffle"), "has none"),
    (dict(method="ticket"), "give --masks_from"),
    (dict(method="snip", masks_from="somewhere"), "for method 'ticket' only"),
    (dict(method="dense", sparsity=0.5), "sparsity must be 0"),
    (dict(method="snip", sparsity=0.0), "prunes nothing"),
    (dict(method="nope"), "method must be one of"),
    (dict(method="rigl", drop_fraction=1.5), "drop_fraction"),
    (dict(method="l0", learn_until=0), "learn_until"),
    (dict(method="snip", budget="time"), "budget must be one of"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        SparseConfig(output_dir=str(tmp_path), **overrides).resolved()


def test_masks_from_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no finished run"):
        SparseConfig(output_dir=str(tmp_path / "x"), method="ticket", masks_from=str(tmp_path)).resolved()


def test_training_flops_follow_rigl_counting(tiny_fashion, tmp_path):
    # RigL pays a dense gradient every update_frequency steps on top of sparse training; SET does not.
    set_record = sparse_training.run(_config(tiny_fashion, tmp_path / "set", method="set", sparsity=0.9))["rounds"][0]
    rigl_record = sparse_training.run(_config(tiny_fashion, tmp_path / "rigl", method="rigl",
                                              sparsity=0.9))["rounds"][0]
    f_s, f_d = set_record["inference_flops"], set_record["dense_inference_flops"]
    assert set_record["training_flops"] == pytest.approx(flops.training_flops("set", f_d, f_s, 20, 20))
    assert rigl_record["training_flops"] > set_record["training_flops"]


@pytest.mark.parametrize("method", ["l0", "small_dense", "rigl"])
def test_a_sparse_run_loads_back_as_the_plain_model_it_tested(tiny_fashion, tmp_path, method):
    record = sparse_training.run(_config(tiny_fashion, tmp_path, method=method, sparsity=0.9))["rounds"][0]
    loaded = run_models.load_run_model(tmp_path)
    assert loaded.kind == "sparse" and not sparse_training.wrappers.prunable_wrappers(loaded.model)
    kernels = sum(int(np.count_nonzero(layer.kernel.numpy())) for layer in loaded.model.layers
                  if hasattr(layer, "kernel"))
    assert kernels <= record["kernel_weights"]  # pruned weights are exact zeros
    predictions = loaded.model.predict(loaded.splits.test_x, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predictions == loaded.splits.test_y))
    assert abs(accuracy - record["test_accuracy"]) <= 1 / len(loaded.splits.test_y)
