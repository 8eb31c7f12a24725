"""Tests for keras_lottery.fusion: the exact pass keeps outputs, merges narrow as planned."""

import numpy as np
import pytest

import keras_lottery
from keras_lottery import fusion
from keras_lottery import keras
from keras_lottery.fusion import exact
from tests.conftest import build_conv

EXACT = 1e-5


def sparsify(model, rate, seed=0):
    """Zeroes a random `rate` of every kernel, and perturbs biases so that they are not all zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ in ("Dense", "Conv2D"):
            kernel = weights[0] * (rng.random(weights[0].shape) >= rate)
            weights = [kernel, *(w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype) for w in weights[1:])]
        elif type(layer).__name__ == "BatchNormalization":  # non-trivial statistics, so the fold has work to do
            gamma, beta, mean, variance = weights
            weights = [gamma * 1.5, beta + 0.2, mean + rng.normal(size=mean.shape), variance * 2.0 + 0.1]
        layer.set_weights([w.astype(np.float32) for w in weights])


def edit(model, name, change):
    weights = model.get_layer(name).get_weights()
    change(weights)
    model.get_layer(name).set_weights(weights)


def kill_incoming(unit, bias):
    def change(weights):
        weights[0][..., unit] = 0.0
        weights[1][unit] = bias
    return change


def kill_outgoing(unit):
    def change(weights):
        weights[0][..., unit, :] = 0.0
    return change


def duplicate(unit, source, scale):
    def change(weights):
        weights[0][..., unit] = scale * weights[0][..., source]
        weights[1][unit] = scale * weights[1][source]
    return change


def dense_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.layers.InputLayer((20,)),
        keras.layers.Dense(24, activation="relu", name="fc1"),
        keras.layers.Dense(16, activation="relu", name="fc2"),
        keras.layers.Dense(5, name="out"),
    ])


def conv_model(padding="valid", seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.layers.InputLayer((10, 10, 3)),
        keras.layers.Conv2D(8, 3, name="conv1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.Conv2D(8, 3, padding=padding, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(12, activation="relu", name="fc"),
        keras.layers.Dense(4, name="out"),
    ])


def branch_model(seed=0):
    """Concatenate (fused per member) and Add (left alone) branches."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2), name="image")
    left = keras.layers.Conv2D(6, 3, activation="relu", name="left")(inputs)
    right = keras.layers.Conv2D(5, 3, activation="relu", name="right")(inputs)
    joined = keras.layers.Concatenate(name="concat")([left, right])
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(joined)
    first = keras.layers.Dense(7, activation="relu", name="first")(pooled)
    second = keras.layers.Dense(7, activation="relu", name="second")(pooled)
    added = keras.layers.Add(name="add")([first, second])
    outputs = keras.layers.Dense(3, name="out")(added)
    return keras.Model(inputs, outputs)


def inputs_for(model, count=64, seed=1):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype(np.float32)


def max_difference(first, second, x):
    return float(np.max(np.abs(first.predict(x, verbose=0) - second.predict(x, verbose=0))))


def units(model):
    return {layer.name: getattr(layer, "units", None) or layer.filters for layer in model.layers
            if type(layer).__name__ in ("Dense", "Conv2D")}


def test_exact_pass_dense_removes_dead_and_duplicate_units_and_keeps_outputs():
    model = dense_model()
    sparsify(model, 0.5)
    edit(model, "fc1", kill_incoming(3, 0.7))   # constant relu(0.7) folded into fc2's bias
    edit(model, "fc1", kill_incoming(4, -0.5))  # constant relu(-0.5) = 0
    edit(model, "fc2", kill_outgoing(5))        # fc1 unit 5 feeds nothing
    edit(model, "fc2", duplicate(7, 6, 2.5))    # fc2 unit 7 = 2.5 x unit 6
    x = inputs_for(model)
    before = [w.copy() for w in model.get_weights()]
    fused = fusion.fuse_neurons(model)
    assert max_difference(model, fused, x) <= EXACT
    assert units(fused) == {"fc1": 21, "fc2": 15, "out": 5}
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # input untouched


def test_folding_constant_units_is_needed():
    """Removing a constant unit without the bias fold changes outputs: the fold is what keeps them."""
    model = dense_model()
    sparsify(model, 0.3)
    edit(model, "fc1", kill_incoming(3, 0.9))
    graph = fusion.Graph(model)
    keras_lottery.fusion.rewrite.transform_units(graph, "fc1", np.delete(np.arange(24), 3))  # no constants
    x = inputs_for(model)
    assert max_difference(model, graph.to_model(), x) > 1e-2
    assert max_difference(model, fusion.fuse_neurons(model), x) <= EXACT


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_exact_pass_conv_bn_flatten_dense(padding):
    model = conv_model(padding)
    sparsify(model, 0.4)
    edit(model, "conv1", kill_incoming(2, 0.8))  # after BN folding: a constant map into conv2
    edit(model, "conv2", kill_outgoing(6))       # conv1 filter 6 feeds nothing
    edit(model, "conv2", kill_incoming(1, 0.5))  # constant map through pool/flatten into fc
    x = inputs_for(model)
    fused = fusion.fuse_neurons(model)
    assert max_difference(model, fused, x) <= EXACT
    assert "bn1" not in [layer.name for layer in fused.layers]  # folded into conv1
    # 'same' padding: conv1's constant filter cannot be folded into conv2 (border sums differ), so it stays.
    assert units(fused)["conv1"] == (6 if padding == "valid" else 7)
    assert units(fused)["conv2"] == 7


def test_exact_pass_functional_branches():
    model = branch_model()
    sparsify(model, 0.3)
    edit(model, "right", kill_incoming(0, 0.4))
    edit(model, "left", kill_incoming(2, 0.0))
    edit(model, "first", kill_incoming(1, 0.3))  # feeds Add: left alone
    x = inputs_for(model)
    fused = fusion.fuse_neurons(model)
    assert max_difference(model, fused, x) <= EXACT
    assert units(fused) == {"left": 5, "right": 4, "first": 7, "second": 7, "out": 3}
    notes = getattr(fused, fusion.NOTES_ATTRIBUTE)
    assert any("'first' keeps its units" in note and "Add 'add'" in note for note in notes)


def test_pruned_wrapped_model_fuses_and_stays_wrapped():
    model = dense_model()
    pruned = keras_lottery.prune_low_magnitude(model, pruning_schedule=keras_lottery.OneShot(0.9))
    keras_lottery.prune(pruned, 0.9)
    x = inputs_for(model)
    fused = fusion.fuse_neurons(pruned)
    stripped = keras_lottery.strip_pruning(pruned)
    assert max_difference(stripped, fused, x) <= EXACT
    assert len(keras_lottery.wrappers.prunable_wrappers(pruned)) == 3
    assert fused.count_params() < stripped.count_params()


def test_positive_duplicates_only():
    vectors = np.array([[1.0, 2.0, -1.0, 0.5], [2.0, 4.0, -2.0, 1.0], [0.5, 1.0, -0.5, 0.3]])
    assert exact.positive_duplicates(vectors, [0, 1, 2, 3]) == {1: (0, pytest.approx(2.0))}


@pytest.mark.parametrize("method", ["l1", "data_free", "data_aware"])
def test_merge_shapes_as_planned(method):
    model = dense_model()
    sparsify(model, 0.2)
    x = inputs_for(model, 256)
    fused = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, method), calibration_data=x)
    assert units(fused) == {"fc1": 12, "fc2": 8, "out": 5}
    per_layer = fusion.MergeBudget({"fc1": 0.75}, method)
    assert units(fusion.fuse_neurons(model, merge=per_layer, calibration_data=x)) == {"fc1": 6, "fc2": 16, "out": 5}


def test_data_free_merge_of_near_duplicates_beats_plain_removal():
    model = dense_model()
    sparsify(model, 0.2)
    for unit in range(12, 24):  # every removed unit has a close, positively scaled twin among the kept
        edit(model, "fc1", duplicate(unit, unit - 12, 1.0 + unit / 24))
        edit(model, "fc1", lambda w, unit=unit: w[0].__setitem__((slice(None), unit), w[0][:, unit] * 3))
    x = inputs_for(model, 256)
    errors = {method: max_difference(model, fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, method)), x)
              for method in ("l1", "data_free")}
    assert errors["data_free"] < errors["l1"]


def test_data_aware_merge_error_and_tolerance():
    model = dense_model()
    sparsify(model, 0.2)
    x = inputs_for(model, 512)
    l1 = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "l1"))
    aware = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "data_aware"), calibration_data=x)
    assert max_difference(model, aware, x) < max_difference(model, l1, x)
    tight = fusion.fuse_neurons(model, merge=fusion.MergeBudget(None, "data_aware", tolerance=1e-3),
                                calibration_data=x)
    loose = fusion.fuse_neurons(model, merge=fusion.MergeBudget(None, "data_aware", tolerance=0.3),
                                calibration_data=x)
    assert units(loose)["fc1"] < units(tight)["fc1"] <= 24
    assert max_difference(model, tight, x) < max_difference(model, loose, x)


def test_merge_conv_data_aware_and_report():
    model = conv_model("same")
    sparsify(model, 0.3)
    x = inputs_for(model, 128)
    fused = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "data_aware"), calibration_data=x)
    assert units(fused) == {"conv1": 4, "conv2": 4, "fc": 6, "out": 4}
    report = fusion.fusion_report(model, fused, x)
    rows = {row["name"]: row for row in report.layers}
    assert rows["conv2"]["multiply_adds_before"] == 8 * 8 * 9 * 8 * 8  # 8x8 outputs, 3x3 kernel, 8 -> 8
    assert rows["conv2"]["multiply_adds_after"] == 8 * 8 * 9 * 4 * 4
    assert rows["bn1"]["params_after"] == 0
    assert report.params_after == fused.count_params()
    assert report.max_output_difference == pytest.approx(max_difference(model, fused, x), rel=1e-5)
    assert "conv2" in report.to_markdown()


def test_fine_tune_trains_the_fused_model():
    model = dense_model()
    x = inputs_for(model, 128)
    y = np.random.default_rng(0).integers(0, 5, 128)
    merge = fusion.MergeBudget(0.5, "l1")
    untuned = fusion.fuse_neurons(model, merge=merge)
    fused = fusion.fuse_neurons(model, merge=merge, fine_tune=fusion.FineTune(x, y, epochs=2, learning_rate=1e-2))
    assert fused.optimizer is not None and fused.optimizer.iterations.numpy() == 2 * 2

    def loss(network):
        return float(np.mean(keras.losses.sparse_categorical_crossentropy(y, network(x), from_logits=True)))

    # Same architecture, trained weights: lower loss on the data it was tuned on than the merge gave.
    assert [w.shape for w in fused.weights] == [w.shape for w in untuned.weights]
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(fused.weights, untuned.weights))
    assert loss(fused) < loss(untuned) - 0.01


def test_unsupported_layer_between_fused_layers_is_named():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, activation="relu", name="fc1")(inputs)
    normalized = keras.layers.LayerNormalization(name="layer_norm")(hidden)
    outputs = keras.layers.Dense(3, name="out")(normalized)
    with pytest.raises(fusion.FusionError, match="layer_norm.*LayerNormalization"):
        fusion.fuse_neurons(keras.Model(inputs, outputs))


def test_unknown_layer_after_the_last_dense_leaves_it_alone():
    model = keras.Sequential([keras.layers.InputLayer((8,)), keras.layers.Dense(6, activation="relu", name="fc1"),
                              keras.layers.Dense(3, name="out"), keras.layers.Softmax(name="softmax")])
    fused = fusion.fuse_neurons(model)
    assert units(fused) == {"fc1": 6, "out": 3}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"merge": {"fraction": 0.5}}, TypeError, "MergeBudget"),
    ({"merge": fusion.MergeBudget(1.0, "l1")}, ValueError, r"\[0, 1\)"),
    ({"merge": fusion.MergeBudget(0.5, "magic")}, ValueError, "method"),
    ({"merge": fusion.MergeBudget(0.5, "data_aware")}, ValueError, "calibration_data"),
    ({"merge": fusion.MergeBudget(None, "l1", tolerance=0.1)}, ValueError, "calibration_data"),
    ({"merge": fusion.MergeBudget(None, "l1")}, ValueError, "fraction"),
    ({"fine_tune": (1, 2)}, TypeError, "FineTune"),
])
def test_bad_arguments_fail_before_work(kwargs, error, match):
    with pytest.raises(error, match=match):
        fusion.fuse_neurons(dense_model(), **kwargs)


def test_data_free_needs_homogeneous_layers():
    model = keras.Sequential([keras.layers.InputLayer((8,)), keras.layers.Dense(6, activation="tanh", name="fc1"),
                              keras.layers.Dense(3, name="out")])
    with pytest.raises(fusion.FusionError, match="data_free.*data_aware"):
        fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "data_free"))


def test_keras3_model_is_converted():  # the conversion itself is tested in tests/compat/test_compat.py
    keras3 = pytest.importorskip("keras")
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.warns(keras_lottery.Keras3ConversionWarning):
        fused = fusion.fuse_neurons(model)
    assert isinstance(fused, keras.Model)


def test_exact_pass_through_average_pooling_reshape_and_activation_layers():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.InputLayer((8, 8, 2)),
        keras.layers.Conv2D(6, 3, padding="same", name="conv"),
        keras.layers.Activation("relu", name="act"),
        keras.layers.AveragePooling2D(2, name="avg"),
        keras.layers.Reshape((16, 6), name="reshape"),  # the channel axis stays last
        keras.layers.LeakyReLU(0.1, name="leaky"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(4, name="out"),
    ])
    sparsify(model, 0.3)
    edit(model, "conv", kill_incoming(1, 0.6))  # constant relu(0.6) through pooling/reshape into out's bias
    edit(model, "conv", duplicate(4, 3, 1.7))
    x = inputs_for(model)
    fused = fusion.fuse_neurons(model)
    assert max_difference(model, fused, x) <= EXACT
    assert units(fused)["conv"] == 4
    assert fused.get_layer("reshape").output_shape == (None, 16, 4)


@pytest.mark.parametrize("method", ["l1", "data_aware"])
def test_merge_through_concatenate_keeps_each_member_in_place(method):
    model = branch_model()
    sparsify(model, 0.2)
    x = inputs_for(model, 256)
    fused = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, method), calibration_data=x)
    assert units(fused) == {"left": 3, "right": 3, "first": 7, "second": 7, "out": 3}
    assert fused.get_layer("concat").output_shape == (None, 4, 4, 6)
    if method == "data_aware":  # the refit reproduces the kept units' contribution better than dropping
        dropped = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "l1"))
        assert max_difference(model, fused, x) < max_difference(model, dropped, x)


@pytest.mark.parametrize("build", [conv_model, branch_model, build_conv])
def test_width_multiple_pads_exactly_and_rounds_merges(build):
    model = build()  # build_conv: BatchNormalization after a ReLU stays, and is padded with neutral channels
    sparsify(model, 0.3)
    if build is conv_model:
        edit(model, "conv2", kill_outgoing(6))  # conv1 loses a filter: 7 -> padded back to 8
    x = inputs_for(model)
    padded = fusion.fuse_neurons(model, width_multiple=3 if build is build_conv else 4)
    assert max_difference(model, padded, x) <= EXACT
    changeable = {"conv1", "conv2", "fc", "left", "right"} if build is not build_conv else {"conv1", "conv2"}
    multiple = 3 if build is build_conv else 4
    assert all(width % multiple == 0 for name, width in units(padded).items() if name in changeable)
    merged = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.6, "data_aware"), calibration_data=x,
                                 width_multiple=4)
    assert all(width % 4 == 0 for name, width in units(merged).items() if name in changeable)
    with pytest.raises(ValueError, match="width_multiple"):
        fusion.fuse_neurons(model, width_multiple=0)


def test_data_aware_merge_on_wide_consumers_ranks_by_activation(monkeypatch):
    """Past MAX_GREEDY_FEATURES the cheap ranking is used; the refit still beats plain removal."""
    monkeypatch.setattr(fusion.merge_lib, "MAX_GREEDY_FEATURES", 10)
    model = dense_model()
    sparsify(model, 0.2)
    x = inputs_for(model, 512)
    aware = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "data_aware"), calibration_data=x)
    l1 = fusion.fuse_neurons(model, merge=fusion.MergeBudget(0.5, "l1"))
    assert units(aware) == {"fc1": 12, "fc2": 8, "out": 5}
    assert max_difference(model, aware, x) < max_difference(model, l1, x)
