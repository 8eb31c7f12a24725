"""Tests of methods/supermasks.py: Zhou et al.'s supermask and edge-popup on frozen weights.

Each property is checked against an independent computation: NumPy forward passes and
gradients, `masks.compute` / `keep_count` for the selections, a Monte-Carlo mean for the
Bernoulli draws, NumPy's std for the signed constants, a plain `prune_low_magnitude` model
for the finalized network.
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import keras
from keras_lottery.methods import supermasks
from keras_lottery.sparsity import masks
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers
from keras_lottery.training import optimizers


def _mlp(seed=0, hidden=7, inputs=5, classes=3, activation="relu"):
    """Dense 'fc1' -> Dense 'out', biases random (so a frozen bias is visible)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(inputs,)),
        keras.layers.Dense(hidden, activation=activation, bias_initializer="random_normal", name="fc1"),
        keras.layers.Dense(classes, bias_initializer="random_normal", name="out"),
    ])


def _conv(seed=0):
    """Conv2D 'conv' -> Flatten -> Dense 'out' on 6x6x2 inputs (functional)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(4, 3, activation="relu", bias_initializer="random_normal", name="conv")(inputs)
    outputs = keras.layers.Dense(3, bias_initializer="random_normal", name="out")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs)


def _linear(seed=0):
    """One linear Dense 'out' (4 -> 3): its output is x @ W + b, which NumPy can check."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.InputLayer(input_shape=(4,)),
                             keras.layers.Dense(3, bias_initializer="random_normal", name="out")])


def _wrap(method, model, sparsity=0.5, **kwargs):
    """The model wrapped by `method`; `sparsity` is edge-popup's (the supermask has none)."""
    if method == "supermask":
        return supermasks.prune_low_supermask(model, **kwargs)
    return supermasks.prune_low_edge_popup(model, sparsity, **kwargs)


def _set_scores(model, rng, low=-2.0, high=2.0):
    """Random, tie-free scores in every wrapper; returns them by mask name."""
    values = {}
    for name, wrapper in zip(wrappers.get_masks(model), supermasks.supermask_wrappers(model)):
        score = wrapper.score_vars[0]
        values[name] = rng.uniform(low, high, score.shape).astype(np.float32)
        score.assign(values[name])
    return values


def _kernel_bias(wrapper):
    return wrapper.layer.kernel.numpy(), wrapper.layer.bias.numpy()


def _data(model, rng, count=16):
    shape = (count,) + tuple(model.input_shape[1:])
    return rng.normal(size=shape).astype(np.float32), rng.integers(0, 3, count)


# -- Frozen weights -------------------------------------------------------------------------


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.05),
    "coupled_weight_decay": lambda: optimizers.CoupledL2SGD(0.1, momentum=0.9, coupled_weight_decay=0.1),
}


@pytest.mark.parametrize("method", ["supermask", "edge_popup"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_weights_stay_bit_identical_through_fit_while_the_scores_train(method, optimizer):
    model = _wrap(method, _conv(), seed=1)
    rng = np.random.default_rng(0)
    _set_scores(model, rng, -0.5, 0.5)
    frozen = {wrapper.layer.name: [w.numpy().copy() for w in wrapper.layer.weights]
              for wrapper in supermasks.supermask_wrappers(model)}
    before_scores = {name: s.copy() for name, s in supermasks.scores(model).items()}
    # Only the scores are trainable: the optimizer (and its coupled decay) never sees a weight.
    assert [v.name.split("/")[-1] for v in model.trainable_weights] == ["scores:0", "scores:0"]
    model.compile(OPTIMIZERS[optimizer](), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(model, rng, 32)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for wrapper in supermasks.supermask_wrappers(model):
        for weight, value in zip(wrapper.layer.weights, frozen[wrapper.layer.name]):
            np.testing.assert_array_equal(weight.numpy(), value, err_msg=weight.name)
    for name, score in supermasks.scores(model).items():
        assert np.abs(score - before_scores[name]).max() > 1e-4, name


# -- Edge-popup -----------------------------------------------------------------------------


def test_edge_popup_selection_is_masks_compute_layerwise_of_the_absolute_scores():
    sparsity = {"conv": 0.3, "out": 0.75}
    model = supermasks.prune_low_edge_popup(_conv(), sparsity)
    scores = _set_scores(model, np.random.default_rng(1))  # uniform floats: no ties
    expected = masks.compute({name: np.abs(score) for name, score in scores.items()}, sparsity, "layerwise")
    assert list(supermasks.scores(model)) == list(wrappers.get_masks(model)) == ["conv", "out"]
    for name, wrapper in zip(scores, supermasks.supermask_wrappers(model)):
        selected = wrapper.selected_mask().numpy()
        assert selected.sum() == masks.keep_count(selected.size, sparsity[name])
        np.testing.assert_array_equal(selected, expected[name])
        density = masks.keep_count(selected.size, sparsity[name]) / selected.size
        assert supermasks.expected_density(model)[name] == density


def test_edge_popup_selection_follows_the_tie_rule_of_masks_compute():
    """Equal |s| (measure zero for trained float scores): the lower flat index survives, as `top_k_mask`."""
    model = supermasks.prune_low_edge_popup(_conv(), 0.5)
    rng = np.random.default_rng(15)
    for wrapper in supermasks.supermask_wrappers(model):
        score = wrapper.score_vars[0]
        values = rng.integers(-2, 3, score.shape).astype(np.float32)  # five values, |s| in {0, 1, 2}
        score.assign(values)
        expected = masks.top_k_mask(np.abs(values), wrapper.keep)
        np.testing.assert_array_equal(wrapper.selected_mask().numpy(), expected)


def test_edge_popup_forward_pass_uses_the_top_k_of_the_scores_in_training_and_inference():
    model = supermasks.prune_low_edge_popup(_linear(), 0.5)
    scores = _set_scores(model, np.random.default_rng(2))
    wrapper = supermasks.supermask_wrappers(model)[0]
    kernel, bias = _kernel_bias(wrapper)
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    kept = masks.top_k_mask(np.abs(scores["out"]), masks.keep_count(12, 0.5))
    for training in (True, False):
        np.testing.assert_allclose(wrapper(x, training=training).numpy(), x @ (kernel * kept) + bias, rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("method", ["supermask", "edge_popup"])
def test_score_gradient_is_straight_through_the_mask(method):
    """d L / d s by tape vs. NumPy: (x^T r) * w * sign(s) (edge-popup), * sigmoid'(s) (supermask)."""
    model = _wrap(method, _linear(), seed=3)
    scores = _set_scores(model, np.random.default_rng(4))["out"]
    wrapper = supermasks.supermask_wrappers(model)[0]
    kernel, _ = _kernel_bias(wrapper)
    rng = np.random.default_rng(5)
    x, upstream = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(wrapper(x, training=True) * upstream)
    gradient = tape.gradient(loss, wrapper.score_vars[0]).numpy()
    effective = x.astype(np.float64).T @ upstream  # d loss / d (w * m): the layer is linear
    if method == "edge_popup":
        expected = effective * kernel * np.sign(scores)  # through |s|, as autograd on scores.abs()
    else:
        probability = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
        expected = effective * kernel * probability * (1.0 - probability)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-6)


# -- Supermask draws ------------------------------------------------------------------------


def test_supermask_training_masks_are_bernoulli_of_sigmoid_scores():
    model = supermasks.prune_low_supermask(_mlp(), seed=7)
    _set_scores(model, np.random.default_rng(6), -3.0, 3.0)
    wrapper = supermasks.supermask_wrappers(model)[0]  # fc1: 35 weights
    probability = wrapper.probabilities().numpy().astype(np.float64)
    draws = 3000
    draw = tf.function(wrapper.sampled_mask)
    mean = sum(draw(tf.constant(step, tf.int64)).numpy().astype(np.float64) for step in range(draws)) / draws
    # 4.5 standard errors per weight (35 weights: a false alarm about once in 10^4 runs); 1/draws for p near 0/1.
    tolerance = 4.5 * np.sqrt(probability * (1 - probability) / draws) + 1.0 / draws
    assert np.all(np.abs(mean - probability) <= tolerance), np.abs(mean - probability) / tolerance
    np.testing.assert_allclose(supermasks.expected_density(model)["fc1"], probability.mean(), rtol=1e-6)


def test_supermask_draw_is_a_function_of_seed_and_step_and_training_calls_advance_the_step():
    first, again, other = (supermasks.prune_low_supermask(_linear(), seed=seed) for seed in (1, 1, 2))
    wrappers_ = [supermasks.supermask_wrappers(model)[0] for model in (first, again, other)]
    for wrapper in wrappers_:
        wrapper.score_vars[0].assign(np.zeros((4, 3), np.float32))  # p = 1/2: draws differ often
    np.testing.assert_array_equal(wrappers_[0].deterministic_mask().numpy(), 0.0)  # s = 0 is off: sigmoid > 0.5
    np.testing.assert_array_equal(wrappers_[0].sampled_mask(5).numpy(), wrappers_[1].sampled_mask(5).numpy())
    assert not np.array_equal(wrappers_[0].sampled_mask(5).numpy(), wrappers_[2].sampled_mask(5).numpy())
    assert not np.array_equal(wrappers_[0].sampled_mask(5).numpy(), wrappers_[0].sampled_mask(6).numpy())

    wrapper = wrappers_[0]
    scores = _set_scores(first, np.random.default_rng(8))["out"]
    kernel, bias = _kernel_bias(wrapper)
    x = np.random.default_rng(9).normal(size=(5, 4)).astype(np.float32)
    for step in range(3):  # a training call uses the draw of the current step, then advances it
        assert int(wrapper.draw_step.numpy()) == step
        expected = x @ (kernel * wrapper.sampled_mask(step).numpy()) + bias
        np.testing.assert_allclose(wrapper(x, training=True).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Inference: the deterministic mask sigmoid(s) > 0.5, and no step taken.
    np.testing.assert_allclose(wrapper(x, training=False).numpy(), x @ (kernel * (scores > 0)) + bias, rtol=1e-5,
                               atol=1e-6)
    assert int(wrapper.draw_step.numpy()) == 3

    model = supermasks.prune_low_supermask(_mlp(), seed=0)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(model, np.random.default_rng(10), 20)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 5 steps
    assert [int(w.draw_step.numpy()) for w in supermasks.supermask_wrappers(model)] == [5, 5]


# -- Signed constant ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["supermask", "edge_popup"])
@pytest.mark.parametrize("build", [_mlp, _conv])
def test_signed_constant_is_the_sign_times_the_std_of_the_initial_kernel(method, build):
    dense = build()
    initial = {layer.name: [w.numpy() for w in layer.weights] for layer in dense.layers if layer.weights}
    model = _wrap(method, dense, weights="signed_constant")
    for wrapper in supermasks.supermask_wrappers(model):
        kernel, bias = _kernel_bias(wrapper)
        start_kernel, start_bias = initial[wrapper.layer.name]
        magnitudes = np.unique(np.abs(kernel))
        assert magnitudes.size == 1
        np.testing.assert_allclose(magnitudes[0], np.std(start_kernel.astype(np.float64)), rtol=1e-6)
        np.testing.assert_array_equal(np.sign(kernel), np.sign(start_kernel))
        np.testing.assert_array_equal(bias, start_bias)
    # The input model is not touched; 'init' keeps the kernels as they were.
    np.testing.assert_array_equal(dense.get_layer("out").kernel.numpy(), initial["out"][0])
    kept = _wrap(method, dense, weights="init")
    np.testing.assert_array_equal(supermasks.supermask_wrappers(kept)[-1].layer.kernel.numpy(), initial["out"][0])


# -- Finalize -------------------------------------------------------------------------------


def _plain_masked(dense, model, final):
    """A `prune_low_magnitude` model with `model`'s kernels and biases and the masks `final`."""
    plain = wrappers.prune_low_magnitude(dense, pruning_schedule=schedules.OneShot(0.0))
    for source, target in zip(supermasks.supermask_wrappers(model), wrappers.prunable_wrappers(plain)):
        target.layer.set_weights(source.layer.get_weights())
    wrappers.set_masks(plain, final)
    return plain


@pytest.mark.parametrize("method", ["supermask", "edge_popup"])
@pytest.mark.parametrize("strategy", ["layerwise", "global"])
def test_finalize_keeps_exact_counts_and_predicts_as_the_plain_masked_model(method, strategy):
    dense = _conv()
    model = _wrap(method, dense, weights="signed_constant", sparsity=0.6)
    scores = _set_scores(model, np.random.default_rng(11))
    frozen = {w.layer.name: _kernel_bias(w) for w in supermasks.supermask_wrappers(model)}
    sparsity = 0.3  # keeps more than edge-popup's top-k and some negative supermask scores
    final = supermasks.finalize(model, sparsity, strategy)
    ranked = {name: supermasks.scores(model)[name] for name in scores}
    if strategy == "layerwise":
        for name, mask in final.items():
            assert mask.sum() == masks.keep_count(mask.size, sparsity)
            assert ranked[name][mask > 0].min() > ranked[name][mask == 0].max()  # the highest scores survive
    else:
        every = np.concatenate([ranked[name].ravel() for name in final])
        kept = np.concatenate([final[name].ravel() for name in final]) > 0
        assert kept.sum() == masks.keep_count(every.size, sparsity)
        assert every[kept].min() > every[~kept].max()
    assert wrappers.get_masks(model).keys() == final.keys()
    for name, mask in wrappers.get_masks(model).items():
        np.testing.assert_array_equal(mask, final[name])
    for wrapper in supermasks.supermask_wrappers(model):
        assert float(wrapper.learning.numpy()) == 0.0
        kernel, bias = _kernel_bias(wrapper)  # frozen: kept weights as they were, pruned ones at 0
        mask = final[wrapper.layer.name]
        np.testing.assert_array_equal(kernel, frozen[wrapper.layer.name][0] * mask)
        np.testing.assert_array_equal(bias, frozen[wrapper.layer.name][1])

    x, _ = _data(model, np.random.default_rng(12), 8)
    plain = _plain_masked(dense, model, final)
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    steps = [int(w.draw_step.numpy()) for w in supermasks.supermask_wrappers(model) if hasattr(w, "draw_step")]
    np.testing.assert_allclose(model(x, training=True).numpy(), plain(x, training=False).numpy(), rtol=1e-6,
                               atol=1e-6)
    # Nothing is drawn any more: the supermask's step stays where it was.
    assert [int(w.draw_step.numpy()) for w in supermasks.supermask_wrappers(model) if hasattr(w, "draw_step")] == steps


# -- Learning something ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["supermask", "edge_popup"])
def test_scores_learn_a_separable_problem_on_frozen_weights(method):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    model = _wrap(method, _mlp(seed=2, hidden=64, inputs=2, classes=2), seed=0, weights="signed_constant")
    frozen = [w.numpy().copy() for wrapper in supermasks.supermask_wrappers(model) for w in wrapper.layer.weights]
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)[1]
    model.fit(x, y, batch_size=32, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)[1]
    assert after >= 0.9 and after > before + 0.2, (before, after)
    now = [w.numpy() for wrapper in supermasks.supermask_wrappers(model) for w in wrapper.layer.weights]
    for value, start in zip(now, frozen):
        np.testing.assert_array_equal(value, start)


# -- Saving ---------------------------------------------------------------------------------


def _own_config(wrapper):
    """The wrapper's config, the wrapped layer's by its own config (a built layer adds its build config)."""
    config = dict(wrapper.get_config())
    config["layer"] = config["layer"]["config"]
    config["block_size"] = tuple(config["block_size"])  # tfmot's: a list once loaded
    return config


@pytest.mark.parametrize("method", ["supermask", "edge_popup"])
@pytest.mark.parametrize("file_name", ["model.keras", "model.h5"])
def test_saved_and_loaded_model_keeps_scores_flags_and_predictions(method, file_name, tmp_path):
    model = _wrap(method, _mlp(), seed=4, sparsity=0.7)
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(model, np.random.default_rng(14), 12)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for wrapper in supermasks.supermask_wrappers(model):
        clone = type(wrapper).from_config(wrapper.get_config())
        assert _own_config(clone) == _own_config(wrapper)
    path = str(tmp_path / file_name)
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=wrappers.custom_objects())
    assert [type(w) for w in supermasks.supermask_wrappers(loaded)] == [type(w) for w in
                                                                         supermasks.supermask_wrappers(model)]
    for name, score in supermasks.scores(model).items():
        np.testing.assert_array_equal(supermasks.scores(loaded)[name], score)
    assert [_own_config(w) for w in supermasks.supermask_wrappers(loaded)] == [
        _own_config(w) for w in supermasks.supermask_wrappers(model)]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    if method == "supermask":
        assert [int(w.draw_step.numpy()) for w in supermasks.supermask_wrappers(loaded)] == [3, 3]
    supermasks.finalize(model, 0.5)
    model.save(path)
    final = keras.models.load_model(path, custom_objects=wrappers.custom_objects())
    assert [float(w.learning.numpy()) for w in supermasks.supermask_wrappers(final)] == [0.0, 0.0]
    np.testing.assert_array_equal(final.predict(x, verbose=0), model.predict(x, verbose=0))
    assert {"PruneLowSupermask", "PruneLowEdgePopup"} <= set(wrappers.custom_objects())


_LOAD_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
import keras_lottery as kl
model = kl.keras.models.load_model(sys.argv[1], custom_objects=kl.custom_objects())
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


def test_a_fresh_process_loads_the_model_with_only_keras_lottery_imported(tmp_path):
    """`import keras_lottery` registers the wrappers: `custom_objects()` has them without importing methods."""
    model = supermasks.prune_low_edge_popup(_conv(), 0.5, weights="signed_constant")
    x, _ = _data(model, np.random.default_rng(16), 4)
    np.save(tmp_path / "x.npy", x)
    model.save(tmp_path / "model.keras")
    root = pathlib.Path(__file__).resolve().parents[2]  # this checkout's keras_lottery, not an installed one
    subprocess.run([sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, str(tmp_path / "model.keras"),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], cwd=root, check=True, capture_output=True,
                   timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0))


# -- Bad input ------------------------------------------------------------------------------


def test_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ValueError, match="weights must be one of"):
        supermasks.prune_low_supermask(_mlp(), weights="zeros")
    with pytest.raises(TypeError, match="seed must be an integer"):
        supermasks.prune_low_edge_popup(_mlp(), 0.5, seed="1")
    with pytest.raises(ValueError, match="sparsity"):
        supermasks.prune_low_edge_popup(_mlp(), 1.0)
    with pytest.raises(ValueError, match=r"misses \['out'\]"):
        supermasks.prune_low_edge_popup(_mlp(), {"fc1": 0.5})
    with pytest.raises(TypeError, match="takes a Sequential or functional model"):
        supermasks.prune_low_supermask(keras.layers.Dense(3))
    conv1d = keras.Sequential([keras.layers.InputLayer(input_shape=(8, 2)), keras.layers.Conv1D(2, 3, name="c1"),
                               keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'c1' \\(Conv1D\\)"):
        supermasks.prune_low_supermask(conv1d)
    plain = wrappers.prune_low_magnitude(_mlp(), pruning_schedule=schedules.OneShot(0.0))
    with pytest.raises(ValueError, match="other pruning wrappers"):
        supermasks.scores(plain)
    with pytest.raises(ValueError, match="wrapped already"):
        supermasks.prune_low_supermask(plain)
