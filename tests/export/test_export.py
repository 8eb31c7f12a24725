"""Tests of TFLite export: conversion, the LiteRT check, quantization, reports, and what is written when."""

import os

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import fusion
from keras_lottery import keras
from keras_lottery.export import exporter as export
from keras_lottery.export import tflite


@pytest.fixture(scope="module")
def dense_model(tiny):
    """8x8 -> Dense(64) -> Dense(10): fc1 has 4096 weights, above dynamic quantization's 1024 minimum."""
    return tiny.build_dense(hidden=64)


@pytest.fixture(scope="module")
def float_export(dense_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("float") / "dense.tflite"
    return path, export.export_tflite(dense_model, path, fuse=False, latency_runs=50)


def _pruned(tiny, sparsity=0.8):
    model = kl.prune_low_magnitude(tiny.build_dense(hidden=64), pruning_schedule=kl.OneShot(0.0))
    kl.prune(model, sparsity)
    return model


def _refuse_work(monkeypatch):
    """Makes any stripping (the first step of an export's work) fail the test."""
    def fail(model):
        raise AssertionError("the export started working before refusing its arguments")

    monkeypatch.setattr(export.wrappers, "strip_pruning", fail)


def test_float_export_writes_a_file_that_matches_keras(dense_model, float_export):
    path, report = float_export
    assert path.exists() and report.path == str(path)
    content = path.read_bytes()
    assert report.raw_bytes == len(content) and 0 < report.gzip_bytes < report.raw_bytes
    x = np.random.default_rng(5).standard_normal((10, 8, 8)).astype(np.float32)
    lite = tflite.predict(content, x)
    assert np.max(np.abs(lite - dense_model(x, training=False).numpy())) <= 1e-4
    assert report.quantize is None and report.fusion is None and report.samples == export.DEFAULT_SAMPLES
    assert report.max_abs_diff <= 1e-4 and report.max_abs_diff_original == report.max_abs_diff
    assert report.argmax_agreement == 1.0 and report.original_checked
    assert report.tolerance.max_abs_diff >= 1e-4 and report.tolerance.min_argmax_agreement is None
    assert 0 < report.latency_median_us <= report.latency_p90_us
    assert report.latency_runs == 50 and report.num_threads == 1
    as_dict = report.as_dict()
    assert as_dict["tolerance"]["rule"].startswith("float32") and as_dict["raw_bytes"] == report.raw_bytes
    assert not [name for name in os.listdir(path.parent) if name.startswith(".tmp-")]


def test_conv_model_exports_and_matches_keras_on_given_samples(tiny, tmp_path):
    model = tiny.build_conv()
    samples = np.random.default_rng(1).uniform(size=(12, 8, 8, 1)).astype(np.float32)
    report = export.export_tflite(model, tmp_path / "conv.tflite", fuse=False, sample_data=samples, latency_runs=20)
    assert report.samples == 12 and report.max_abs_diff <= 1e-4
    lite = tflite.predict((tmp_path / "conv.tflite").read_bytes(), samples)
    np.testing.assert_allclose(lite, model(samples, training=False).numpy(), atol=1e-4)


def test_pruned_model_exports_sparse_and_is_left_unchanged(tiny, tmp_path):
    model = _pruned(tiny)
    before_weights = [w.numpy().copy() for w in model.weights]
    before_layers = [type(layer) for layer in model.layers]
    report = export.export_tflite(model, tmp_path / "pruned.tflite", fuse=False, latency_runs=20)
    assert [type(layer) for layer in model.layers] == before_layers
    assert isinstance(model.layers[1], kl.PruneLowMagnitude)
    for before, after in zip(before_weights, model.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert report.max_abs_diff_original <= 1e-4  # the masked network, not the raw kernels
    assert report.gzip_bytes < 0.6 * report.raw_bytes  # 80% zeros compress


@pytest.mark.parametrize("quantize", ["dynamic", "float16", "int8"])
def test_quantized_exports_are_smaller_and_pass_their_checks(dense_model, float_export, tiny, tmp_path, quantize):
    representative = tiny.make_data(64, seed=3)[0] if quantize == "int8" else None
    report = export.export_tflite(dense_model, tmp_path / f"{quantize}.tflite", fuse=False, quantize=quantize,
                                  representative_data=representative, latency_runs=20)
    assert (tmp_path / f"{quantize}.tflite").exists() and report.quantize == quantize
    assert report.raw_bytes < float_export[1].raw_bytes
    assert report.max_abs_diff <= report.tolerance.max_abs_diff
    if quantize == "float16":
        assert report.tolerance.min_argmax_agreement is None
    else:
        assert report.argmax_agreement >= report.tolerance.min_argmax_agreement == export.MIN_ARGMAX_AGREEMENT


def test_int8_takes_a_dataset_as_representative_data(dense_model, tiny, tmp_path):
    import tensorflow as tf

    x, y = tiny.make_data(64, seed=3)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    report = export.export_tflite(dense_model, tmp_path / "int8.tflite", fuse=False, quantize="int8",
                                  representative_data=dataset, latency_runs=10)
    assert report.argmax_agreement >= export.MIN_ARGMAX_AGREEMENT


def test_int8_without_representative_data_fails_before_any_work(dense_model, tmp_path, monkeypatch):
    _refuse_work(monkeypatch)
    with pytest.raises(ValueError, match="representative_data"):
        export.export_tflite(dense_model, tmp_path / "int8.tflite", fuse=False, quantize="int8")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("arguments, message", [
    ({"quantize": "int4"}, "'dynamic', 'float16', 'int8'"),
    ({"quantize": "dynamic", "representative_data": np.zeros((4, 8, 8))}, "'int8' only"),
    ({"merge": object()}, "fuse=True"),
    ({"calibration_data": np.zeros((4, 8, 8))}, "fuse=True"),
    ({"sample_data": np.zeros((4, 8))}, r"sample_data must be an array of examples of shape \(N, 8, 8\)"),
    ({"num_threads": 0}, "num_threads"),
    ({"latency_runs": 0}, "latency_runs"),
])
def test_bad_arguments_fail_before_any_work(dense_model, tmp_path, monkeypatch, arguments, message):
    _refuse_work(monkeypatch)
    settings = {"fuse": False, **arguments}
    with pytest.raises(ValueError, match=message):
        export.export_tflite(dense_model, tmp_path / "model.tflite", **settings)
    assert not os.listdir(tmp_path)


def test_an_unusable_merge_budget_fails_before_any_work(dense_model, tmp_path, monkeypatch):
    _refuse_work(monkeypatch)
    with pytest.raises(ValueError, match="calibration_data"):
        export.export_tflite(dense_model, tmp_path / "m.tflite", merge=fusion.MergeBudget(0.5, "data_aware"))
    with pytest.raises(TypeError, match="MergeBudget"):
        export.export_tflite(dense_model, tmp_path / "m.tflite", merge={"fraction": 0.5})
    assert not os.listdir(tmp_path)


def test_models_tflite_cannot_take_are_refused(tmp_path):
    first, second = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([first, second], keras.layers.Dense(2)(keras.layers.Concatenate()([first, second])))
    with pytest.raises(ValueError, match="one input and one output"):
        export.export_tflite(two_inputs, tmp_path / "two.tflite", fuse=False)
    with pytest.raises(TypeError, match="tf_keras Model"):
        export.export_tflite("model.keras", tmp_path / "model.tflite", fuse=False)
    with pytest.raises(ValueError, match="folder"):
        export.export_tflite(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), tmp_path, fuse=False)


def test_a_failed_check_raises_and_writes_nothing(dense_model, tmp_path, monkeypatch):
    real_predict = tflite.predict
    monkeypatch.setattr(tflite, "predict", lambda content, inputs, num_threads=1: real_predict(
        content, inputs, num_threads) + 1e-3)
    path = tmp_path / "out" / "dense.tflite"
    with pytest.raises(export.VerificationError, match=r"max \|difference\| 0\.001 > ") as error:
        export.export_tflite(dense_model, path, fuse=False, latency_runs=10)
    assert "Nothing was written" in str(error.value)
    assert not path.exists()
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_an_existing_file_survives_a_failed_check(dense_model, tmp_path, monkeypatch):
    path = tmp_path / "dense.tflite"
    path.write_bytes(b"previous export")
    monkeypatch.setattr(tflite, "predict", lambda content, inputs, num_threads=1: np.zeros((len(inputs), 3)))
    with pytest.raises(export.VerificationError):
        export.export_tflite(dense_model, path, fuse=False, latency_runs=10)
    assert path.read_bytes() == b"previous export"


def test_tolerances_per_mode():
    assert export.tolerance_for(None, 0.5).max_abs_diff == pytest.approx(1e-4)
    assert export.tolerance_for(None, 50.0).max_abs_diff == pytest.approx(5e-3)
    assert export.tolerance_for("float16", 50.0).max_abs_diff == pytest.approx(0.5)
    assert export.tolerance_for("int8", 50.0).min_argmax_agreement == 0.9
    comparison = export.Comparison(max_abs_diff=0.2, argmax_agreement=0.8)
    assert len(comparison.failures(export.tolerance_for("dynamic", 1.0))) == 2
    assert export.compare(np.zeros((2, 3)), np.zeros((2, 4))).max_abs_diff == float("inf")


def test_measure_tflite_sizes_and_times_without_a_check(dense_model):
    measurement = tflite.measure_tflite(dense_model, quantize="dynamic", latency_runs=20)
    assert measurement.raw_bytes > measurement.gzip_bytes > 0
    assert 0 < measurement.latency_median_us <= measurement.latency_p90_us
    assert measurement.as_dict()["latency_runs"] == 20


def test_export_fused_pruned_model_with_dead_units_matches_the_original(tiny, tmp_path):
    """24 of fc1's 64 units go (40 stay); the default width_multiple=16 pads fc1 to 48 with zero units."""
    model = _pruned(tiny, sparsity=0.5)
    masks = kl.get_masks(model)
    masks["fc1"][:, :16] = 0  # 16 of fc1's 64 units receive nothing (constant relu(bias)): fusion folds them
    masks["out"][16:24, :] = 0  # 8 more send nothing: fusion removes them
    kl.set_masks(model, masks)
    report = export.export_tflite(model, tmp_path / "fused.tflite", latency_runs=20)
    assert (tmp_path / "fused.tflite").exists()
    assert report.original_checked and report.max_abs_diff_original <= report.tolerance.max_abs_diff
    assert isinstance(report.fusion, dict) and report.fusion
    unfused = export.export_tflite(model, tmp_path / "unfused.tflite", fuse=False, latency_runs=20)
    assert report.raw_bytes < unfused.raw_bytes
    widths = {row["name"]: row["units_after"] for row in report.fusion["layers"]}
    assert widths["fc1"] == 48
    exact_width = export.export_tflite(model, tmp_path / "exact.tflite", latency_runs=20, width_multiple=None)
    assert {row["name"]: row["units_after"] for row in exact_width.fusion["layers"]}["fc1"] == 40
    with pytest.raises(ValueError, match="width_multiple"):
        export.export_tflite(model, tmp_path / "bad.tflite", width_multiple=0)
    assert not (tmp_path / "bad.tflite").exists()
