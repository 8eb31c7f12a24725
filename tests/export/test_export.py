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
    ({"evaluation_data": np.zeros((4, 8, 8))}, r"evaluation_data must be a pair \(inputs, labels\)"),
    ({"evaluation_data": (np.zeros((4, 8, 8)), np.zeros(3, np.int64))}, "labels must be 4 integer class indices"),
    ({"evaluation_data": (np.zeros((4, 8, 8)), np.zeros(4))}, "labels must be 4 integer class indices"),
    ({"evaluation_data": (np.zeros((4, 8)), np.zeros(4, np.int64))}, r"evaluation_data's inputs must be .*\(N, 8, 8\)"),
])
def test_bad_arguments_fail_before_any_work(dense_model, tmp_path, monkeypatch, arguments, message):
    _refuse_work(monkeypatch)
    settings = {"fuse": False, **arguments}
    with pytest.raises(ValueError, match=message):
        export.export_tflite(dense_model, tmp_path / "model.tflite", **settings)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("names, message", [
    (("0pixels", "logits"), "input_name must be a Python identifier"),
    (("pixels", "log its"), "output_name must be a Python identifier"),
    (("logits", "logits"), "different names"),
])
def test_bad_signature_names_fail_before_any_work(dense_model, tmp_path, monkeypatch, names, message):
    _refuse_work(monkeypatch)
    with pytest.raises(ValueError, match=message):
        export.export_tflite(dense_model, tmp_path / "m.tflite", fuse=False, signature=tflite.Signature(*names))
    with pytest.raises(TypeError, match="signature must be a keras_lottery.export.tflite.Signature"):
        export.export_tflite(dense_model, tmp_path / "m.tflite", fuse=False, signature={"inputs": "x"})
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
    # Padding that fusion's removals pay for is kept, without a note; the file is fusion's.
    assert report.fused and not report.notes and report.fusion["units_removed"] == 64 - 48  # after padding
    assert report.unfused_raw_bytes == unfused.raw_bytes and report.multiply_adds < report.unfused_multiply_adds
    exact_width = export.export_tflite(model, tmp_path / "exact.tflite", latency_runs=20, width_multiple=None)
    assert {row["name"]: row["units_after"] for row in exact_width.fusion["layers"]}["fc1"] == 40
    with pytest.raises(ValueError, match="width_multiple"):
        export.export_tflite(model, tmp_path / "bad.tflite", width_multiple=0)
    assert not (tmp_path / "bad.tflite").exists()


def _pruned_without_dead_units(tiny):
    """fc1 (20 units) at 50% random sparsity: every unit keeps weights, so fusion removes none.

    20 is no multiple of 16: padding would give 32 units, like LeNet's 300-100 becoming 304-112.
    """
    model = kl.prune_low_magnitude(tiny.build_dense(hidden=20), pruning_schedule=kl.OneShot(0.0))
    kl.prune(model, 0.5)
    return model


def test_padding_that_would_make_the_fused_file_larger_is_dropped_and_said(tiny, tmp_path):
    model = _pruned_without_dead_units(tiny)
    report = export.export_tflite(model, tmp_path / "fused.tflite", latency_runs=10)  # width_multiple=16
    unfused = export.export_tflite(model, tmp_path / "unfused.tflite", fuse=False, latency_runs=10)
    assert report.raw_bytes <= unfused.raw_bytes == report.unfused_raw_bytes
    assert report.multiply_adds <= report.unfused_multiply_adds == unfused.multiply_adds
    assert {row["name"]: row["units_after"] for row in report.fusion["layers"]}["fc1"] == 20  # not padded to 32
    padding_note, nothing_note = report.notes
    assert "padding to a multiple of 16 units would make the fused model larger" in padding_note
    assert "32-10 units" in padding_note and "20-10 units" in padding_note and "without padding" in padding_note
    assert nothing_note.startswith("fusion removed no unit") and report.fusion["units_removed"] == 0
    assert report.max_abs_diff_original <= report.tolerance.max_abs_diff


def test_fusion_removing_nothing_is_said_even_without_padding(tiny, tmp_path):
    model = _pruned_without_dead_units(tiny)
    report = export.export_tflite(model, tmp_path / "m.tflite", latency_runs=10, width_multiple=None)
    assert len(report.notes) == 1 and report.notes[0].startswith("fusion removed no unit: every Dense/Conv2D layer")
    assert "(20-10)" in report.notes[0] and report.fused
    assert "Fusion removed no unit" in fusion.fusion_report(model, fusion.fuse_neurons(model)).to_markdown()


def test_a_fused_model_larger_than_the_unfused_one_is_never_exported(tiny, tmp_path, monkeypatch):
    """Whatever fusion returns: here a fusion that always pads to 32 units, even when asked not to pad."""
    real_fuse = fusion.fuse_neurons
    monkeypatch.setattr(export.fusion, "fuse_neurons",
                        lambda model, **kwargs: real_fuse(model, **{**kwargs, "width_multiple": 32}))
    model = _pruned_without_dead_units(tiny)
    report = export.export_tflite(model, tmp_path / "m.tflite", latency_runs=10)
    assert not report.fused and report.raw_bytes == report.unfused_raw_bytes
    assert report.multiply_adds == report.unfused_multiply_adds
    assert "exported the unfused model" in report.notes[-2]  # then: fusion removed no unit
    lite = tflite.predict((tmp_path / "m.tflite").read_bytes(), export.default_samples(model))
    np.testing.assert_allclose(lite, export.keras_outputs(model, export.default_samples(model)), atol=1e-4)


def test_the_serving_signature_names_input_and_output(dense_model, tmp_path):
    from ai_edge_litert import interpreter as litert

    signature = tflite.Signature("pixels_0_to_1", "logits", "pixels / 255", "logits (no softmax)")
    x = np.random.default_rng(2).uniform(size=(6, 8, 8)).astype(np.float32)
    report = export.export_tflite(dense_model, tmp_path / "m.tflite", fuse=False, latency_runs=10, signature=signature)
    interpreter = litert.Interpreter(model_content=(tmp_path / "m.tflite").read_bytes())
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["pixels_0_to_1"], "outputs": ["logits"]}}
    logits = interpreter.get_signature_runner("serving_default")(pixels_0_to_1=x)["logits"]  # any batch
    np.testing.assert_allclose(logits, dense_model(x, training=False).numpy(), atol=1e-4)
    assert report.signature == {"key": "serving_default",
                                "inputs": {"pixels_0_to_1": {"shape": [-1, 8, 8], "dtype": "float32"}},
                                "outputs": {"logits": {"shape": [-1, 10], "dtype": "float32"}}}
    assert report.input_shape == (8, 8) and report.input_dtype == "float32"
    assert (report.preprocessing, report.outputs) == ("pixels / 255", "logits (no softmax)")


def test_an_int8_file_keeps_float32_signature_input(dense_model, tiny, tmp_path):
    report = export.export_tflite(dense_model, tmp_path / "int8.tflite", fuse=False, quantize="int8",
                                  representative_data=tiny.make_data(32, seed=3)[0], latency_runs=10,
                                  signature=tflite.Signature("pixels_0_to_1", "logits"))
    assert report.input_dtype == "float32" and list(report.signature["outputs"]) == ["logits"]


def test_predict_in_batches_matches_batch_one(dense_model, float_export):
    content = float_export[0].read_bytes()
    x = np.random.default_rng(4).standard_normal((10, 8, 8)).astype(np.float32)
    one_by_one = tflite.predict(content, x)
    batched = tflite.predict(content, x, batch_size=4)  # 4 + 4 + 2: the last batch is resized
    assert batched.shape == one_by_one.shape == (10, 10)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        tflite.predict(content, x, batch_size=0)


def test_evaluation_data_reports_tflite_and_keras_accuracy(dense_model, tiny, tmp_path):
    x, y = tiny.make_data(300, seed=7)  # more than one EVALUATION_BATCH
    report = export.export_tflite(dense_model, tmp_path / "m.tflite", fuse=False, quantize="dynamic",
                                  latency_runs=10, evaluation_data=(x, y))
    lite = tflite.predict((tmp_path / "m.tflite").read_bytes(), x)  # one at a time: another path than the report's
    assert report.evaluation_examples == 300
    assert report.accuracy_tflite == pytest.approx(np.mean(np.argmax(lite, -1) == y))
    assert report.accuracy_keras == pytest.approx(np.mean(np.argmax(dense_model(x, training=False), -1) == y))
    assert export.export_tflite(dense_model, tmp_path / "n.tflite", fuse=False, latency_runs=10).accuracy_tflite is None
