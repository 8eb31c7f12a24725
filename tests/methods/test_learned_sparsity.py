"""Tests of learned sparsity: L0 hard-concrete gates, sparse variational dropout, `finalize`.

Every expected value is computed here independently (NumPy closed forms, Monte Carlo over
the layer's own training calls, `tf.nn.conv2d`, a plain `prune_low_magnitude` model).
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import keras
from keras_lottery.methods import learned_sparsity as ls
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

METHODS = {"l0": ls.prune_low_l0, "vd": ls.prune_low_variational_dropout}
GATE = {"l0": "log_alpha", "vd": "log_sigma2"}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _wrapper(cls, layer, input_shape, **kwargs):
    wrapper = cls(layer, **kwargs)
    wrapper(np.zeros((1,) + tuple(input_shape), np.float32))
    return wrapper


def _randomize(model, seed=0):
    """Random gate parameters (no ties in the scores); returns the scores computed here, in NumPy."""
    rng = np.random.default_rng(seed)
    expected = {}
    for name, wrapper, kernel, _ in wrappers.pruning_entries(model):
        if isinstance(wrapper, ls.PruneLowL0):
            wrapper.log_alpha.assign(rng.normal(0.0, 2.0, kernel.shape).astype(np.float32))
            expected[name] = wrapper.log_alpha.numpy().astype(np.float64)
        else:
            wrapper.log_sigma2.assign(rng.uniform(-8.0, 0.0, kernel.shape).astype(np.float32))
            theta = kernel.numpy().astype(np.float64)
            expected[name] = -(wrapper.log_sigma2.numpy().astype(np.float64) - np.log(theta**2 + 1e-8))
    return expected


# ----------------------------------------------------------------------------------------
# L0.


def test_l0_penalty_is_the_expected_number_of_open_gates(tiny):
    model = ls.prune_low_l0(tiny.build_dense(), coefficient=0.01)
    _randomize(model)
    x, _ = tiny.make_data(4)
    model(x, training=True)
    expected = 0.0
    for wrapper in ls.learned_wrappers(model):
        log_alpha = wrapper.log_alpha.numpy().astype(np.float64)
        expected += np.sum(_sigmoid(log_alpha - (2.0 / 3.0) * np.log(0.1 / 1.1)))
    np.testing.assert_allclose(float(tf.add_n(model.losses)), 0.01 * expected, rtol=1e-5)
    np.testing.assert_allclose(ls.penalty(model), 0.01 * expected, rtol=1e-5)
    model(x, training=False)
    assert not model.losses  # inference adds no penalty


def test_l0_log_alpha_starts_as_the_official_droprate_init(tiny):
    model = ls.prune_low_l0(tiny.build_dense(hidden=64), droprate_init=0.2)
    values = ls.learned_wrappers(model)[0].log_alpha.numpy()
    assert abs(values.mean() - np.log(0.8 / 0.2)) < 5 * 0.01 / np.sqrt(values.size)
    assert 0.009 < values.std() < 0.011


def test_l0_expected_density_is_the_monte_carlo_fraction_of_open_training_gates():
    wrapper = _wrapper(ls.PruneLowL0, keras.layers.Dense(25, use_bias=False), (8,))
    wrapper.kernel_variable.assign(np.ones((8, 25), np.float32))
    log_alpha = np.linspace(-4.0, 4.0, 200).reshape(8, 25).astype(np.float32)
    wrapper.log_alpha.assign(log_alpha)
    identity = np.eye(8, dtype=np.float32)  # row i of the output is row i of kernel * z = z
    calls = 400
    gates = np.stack([wrapper(identity, training=True).numpy() for _ in range(calls)])
    assert gates.min() == 0.0 and gates.max() == 1.0 and ((gates > 0) & (gates < 1)).any()  # hard concrete
    open_fraction = (gates != 0).mean(axis=0)
    probability = _sigmoid(log_alpha.astype(np.float64) - (2.0 / 3.0) * np.log(0.1 / 1.1))
    # Binomial standard error per weight (5 sigma; the floor covers P near 0 or 1).
    tolerance = 5 * np.sqrt(probability * (1 - probability) / calls) + 2.0 / calls
    assert np.all(np.abs(open_fraction - probability) <= tolerance)
    density = ls.PruneLowL0.density(wrapper)
    np.testing.assert_allclose(density, probability.mean(), rtol=1e-6)
    assert abs(open_fraction.mean() - density) <= 5 * np.sqrt(0.25 / (calls * log_alpha.size))


def test_l0_inference_uses_the_deterministic_gate():
    wrapper = _wrapper(ls.PruneLowL0, keras.layers.Dense(10, use_bias=False), (6,))
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(6, 10)).astype(np.float32)
    log_alpha = rng.normal(0.0, 3.0, (6, 10)).astype(np.float32)  # reaches both clipped ends
    wrapper.kernel_variable.assign(kernel)
    wrapper.log_alpha.assign(log_alpha)
    gate = np.clip(_sigmoid(log_alpha.astype(np.float64)) * 1.2 - 0.1, 0.0, 1.0)
    assert (gate == 0).any() and (gate == 1).any()
    output = wrapper(np.eye(6, dtype=np.float32), training=False).numpy()
    np.testing.assert_allclose(output, kernel * gate, rtol=1e-6, atol=1e-7)
    assert int(wrapper.noise_step.numpy()) == 0  # inference draws no noise


def test_l0_noise_depends_only_on_seed_layer_and_step(tiny):
    x, _ = tiny.make_data(8)
    first, second, other = (ls.prune_low_l0(tiny.build_dense(), seed=seed) for seed in (3, 3, 4))
    for source, target in zip(ls.learned_wrappers(first), ls.learned_wrappers(other)):
        target.log_alpha.assign(source.log_alpha)  # the seed also draws log_alpha's init: only the noise may differ
    outputs = {id(model): [model(x, training=True).numpy() for _ in range(2)] for model in (first, second, other)}
    np.testing.assert_array_equal(outputs[id(first)][0], outputs[id(second)][0])
    np.testing.assert_array_equal(outputs[id(first)][1], outputs[id(second)][1])
    assert not np.array_equal(outputs[id(first)][0], outputs[id(first)][1])  # the step advanced the noise
    assert not np.array_equal(outputs[id(first)][0], outputs[id(other)][0])  # another seed, other noise
    assert [int(w.noise_step.numpy()) for w in ls.learned_wrappers(first)] == [2, 2]
    for wrapper in ls.learned_wrappers(first):
        wrapper.noise_step.assign(0)  # as a resumed backup would
    np.testing.assert_array_equal(first(x, training=True).numpy(), outputs[id(first)][0])
    # Two layers of one model draw different noise at the same step.
    a, b = (_wrapper(ls.PruneLowL0, keras.layers.Dense(5, name=name), (5,), seed=3) for name in ("a", "b"))
    b.log_alpha.assign(a.log_alpha)
    assert not np.array_equal(a.sampled_gate(1).numpy(), b.sampled_gate(1).numpy())


def test_l0_training_with_a_large_coefficient_lowers_expected_density(tiny):
    x, y = tiny.make_data(256)
    densities = {}
    for coefficient in (0.0, 0.05):
        model = ls.prune_low_l0(tiny.build_dense(), coefficient=coefficient)
        tiny.compile_model(model, keras.optimizers.Adam(0.05))
        model.fit(x, y, batch_size=32, epochs=3, verbose=0)  # no UpdateMasks: allowed
        densities[coefficient] = np.mean(list(ls.expected_density(model).values()))
        assert all(int(w.noise_step.numpy()) == 24 for w in ls.learned_wrappers(model))  # one draw per step
    assert densities[0.05] < densities[0.0] - 0.1, densities  # about 0.60 against 0.82 here


# ----------------------------------------------------------------------------------------
# Sparse variational dropout.


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_vd_local_reparameterization_has_the_right_mean_and_variance(kind):
    rng = np.random.default_rng(2)
    if kind == "dense":
        layer, example = keras.layers.Dense(4), rng.normal(size=(5,))
    else:
        layer, example = keras.layers.Conv2D(3, 3, padding="same"), rng.normal(size=(4, 4, 2))
    wrapper = _wrapper(ls.PruneLowVariationalDropout, layer, example.shape)
    theta = rng.normal(size=wrapper.kernel_variable.shape).astype(np.float32)
    log_sigma2 = rng.uniform(-3.0, 0.0, theta.shape).astype(np.float32)
    bias = rng.normal(size=wrapper.layer.bias.shape).astype(np.float32)
    wrapper.kernel_variable.assign(theta)
    wrapper.log_sigma2.assign(log_sigma2)
    wrapper.layer.bias.assign(bias)
    draws = 4000
    x = np.repeat(example[None].astype(np.float32), draws, axis=0)  # each row draws its own noise
    outputs = wrapper(x, training=True).numpy().astype(np.float64)

    def op(inputs, kernel):
        inputs = tf.constant(inputs[:1], tf.float64)
        kernel = tf.constant(kernel, tf.float64)
        if kind == "dense":
            return tf.matmul(inputs, kernel).numpy()[0]
        return tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME").numpy()[0]

    mean = op(x.astype(np.float64), theta) + bias
    variance = op(x.astype(np.float64) ** 2, np.exp(log_sigma2.astype(np.float64))) + 1e-8
    assert np.all(np.abs(outputs.mean(axis=0) - mean) <= 5 * np.sqrt(variance / draws))
    assert np.all(np.abs(outputs.var(axis=0, ddof=1) - variance) <= 5 * variance * np.sqrt(2.0 / (draws - 1)))
    np.testing.assert_allclose(wrapper(x[:1], training=False).numpy()[0], mean, rtol=1e-5, atol=1e-5)


def test_vd_kl_penalty_is_molchanovs_approximation():
    wrapper = _wrapper(ls.PruneLowVariationalDropout, keras.layers.Dense(6), (5,), coefficient=0.5)
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(5, 6)).astype(np.float32)
    log_sigma2 = rng.uniform(-12.0, 6.0, (5, 6)).astype(np.float32)
    theta[0, 0], log_sigma2[0, 0] = 1e-3, 5.0  # log_alpha above the clip
    theta[0, 1], log_sigma2[0, 1] = 3.0, -15.0  # below it
    wrapper.kernel_variable.assign(theta)
    wrapper.log_sigma2.assign(log_sigma2)
    log_alpha = np.clip(log_sigma2.astype(np.float64) - np.log(theta.astype(np.float64) ** 2 + 1e-8), -8, 8)
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    kl = -(k1 * _sigmoid(k2 + k3 * log_alpha) - 0.5 * np.log1p(np.exp(-log_alpha)) - k1)
    wrapper(np.ones((2, 5), np.float32), training=True)
    np.testing.assert_allclose(float(tf.add_n(wrapper.losses)), 0.5 * kl.sum(), rtol=1e-5)


def test_vd_a_weight_with_large_sigma_for_its_theta_is_pruned_first(tiny):
    model = ls.prune_low_variational_dropout(tiny.build_dense(hidden=8))
    wrapper = ls.learned_wrappers(model)[0]
    rng = np.random.default_rng(4)
    theta = rng.uniform(0.5, 1.0, wrapper.kernel_variable.shape) * rng.choice([-1, 1], wrapper.kernel_variable.shape)
    wrapper.kernel_variable.assign(theta.astype(np.float32))
    log_sigma2 = np.full(theta.shape, -10.0, np.float32)
    log_sigma2[17, 3] = 4.0  # sigma ~ 7.4 against |theta| <= 1: log_alpha >= 4 > 3
    log_sigma2[0, 0] = 2.5 + np.log(theta[0, 0] ** 2)  # log_alpha 2.5: noisy, but kept by the < 3 rule
    wrapper.log_sigma2.assign(log_sigma2)
    assert np.unravel_index(np.argmin(ls.scores(model)["fc1"]), theta.shape) == (17, 3)
    assert ls.expected_density(model)["fc1"] == pytest.approx(1 - 1 / theta.size)
    masks = ls.finalize(model, {"fc1": 1 / theta.size, "out": 0.0}, strategy="layerwise")
    assert masks["fc1"][17, 3] == 0 and masks["fc1"].sum() == theta.size - 1


# ----------------------------------------------------------------------------------------
# Both methods: finalize, the plain model after it, saving, the coefficient.


@pytest.mark.parametrize("strategy", ["global", "layerwise"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_finalize_keeps_exactly_the_top_scores(tiny, method, strategy):
    model = METHODS[method](tiny.build_dense())
    expected_scores = _randomize(model)
    for name, value in ls.scores(model).items():
        np.testing.assert_allclose(value, expected_scores[name], rtol=1e-6)
    masks = ls.finalize(model, 0.7, strategy=strategy)
    groups = [list(expected_scores)] if strategy == "global" else [[name] for name in expected_scores]
    for names in groups:
        flat = np.concatenate([expected_scores[name].ravel() for name in names])
        kept = masks_lib.keep_count(flat.size, 0.7)
        expected = np.zeros(flat.size, bool)
        expected[np.argsort(-flat, kind="stable")[:kept]] = True
        got = np.concatenate([masks[name].ravel() for name in names])
        assert got.sum() == kept
        np.testing.assert_array_equal(got > 0, expected)
    for name, mask in wrappers.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[name])


def _train(tiny, model, x, y):
    tiny.compile_model(model, keras.optimizers.Adam(0.01))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("method", sorted(METHODS))
def test_after_finalize_the_model_is_the_plain_masked_model(tiny, method):
    x, y = tiny.make_data(64)
    model = _train(tiny, METHODS[method](tiny.build_dense(), coefficient=1e-3), x, y)
    before = {name: (kernel.numpy(), wrapper) for name, wrapper, kernel, _ in wrappers.pruning_entries(model)}
    folded = {}
    for name, (kernel, wrapper) in before.items():
        gate = np.clip(_sigmoid(wrapper.log_alpha.numpy()) * 1.2 - 0.1, 0, 1) if method == "l0" else 1.0
        folded[name] = kernel * gate
    masks = ls.finalize(model, 0.6)
    for name, _, kernel, _ in wrappers.pruning_entries(model):
        np.testing.assert_allclose(kernel.numpy(), folded[name] * masks[name], rtol=1e-6, atol=1e-7)
    plain = wrappers.prune_low_magnitude(tiny.build_dense(seed=9))
    for source, target in zip(model.layers, plain.layers):
        getattr(target, "layer", target).set_weights(getattr(source, "layer", source).get_weights())
    wrappers.set_masks(plain, masks)
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = []
    for network in (model, plain):
        with tf.GradientTape() as tape:
            output = network(x, training=True)
            value = loss(y, output) + sum(network.losses)
        results.append((output.numpy(), network.trainable_weights, tape.gradient(value, network.trainable_weights)))
    np.testing.assert_array_equal(results[0][0], results[1][0])  # training forward: plain, no noise
    assert float(sum(model.losses)) == 0.0 and ls.penalty(model) == 0.0
    plain_gradients = {id(w): g for w, g in zip(results[1][1], results[1][2])}
    kernels = {id(model_w): id(plain_w) for model_w, plain_w in zip(
        [w for layer in model.layers for w in getattr(layer, "layer", layer).trainable_weights],
        [w for layer in plain.layers for w in getattr(layer, "layer", layer).trainable_weights])}
    for weight, gradient in zip(results[0][1], results[0][2]):
        if GATE[method] in weight.name:
            assert gradient is None or not np.any(gradient.numpy())
        else:
            np.testing.assert_allclose(gradient.numpy(), plain_gradients[kernels[id(weight)]].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="finalize was called on this model already"):
        ls.finalize(model, 0.6)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("file_name", ["model.keras", "model.h5"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_save_and_load_round_trip(tiny, tmp_path, method, file_name):
    x, y = tiny.make_data(32)
    extra = {"droprate_init": 0.3} if method == "l0" else {"log_sigma2_init": -9.0}
    model = _train(tiny, METHODS[method](tiny.build_dense(), seed=7, **extra), x, y)
    ls.set_coefficient(model, 0.125)
    path = str(tmp_path / file_name)
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=ls.custom_objects())
    kinds = [type(w) for w in wrappers.prunable_wrappers(loaded)]
    assert kinds == [type(w) for w in wrappers.prunable_wrappers(model)] and len(kinds) == 2
    for original, copy in zip(ls.learned_wrappers(model), ls.learned_wrappers(loaded)):
        for key in ("coefficient", "seed", next(iter(extra)), "strategy", "layer", "pruning_schedule"):
            assert copy.get_config()[key] == original.get_config()[key], key
        assert copy.seed == 7 and getattr(copy, next(iter(extra))) == next(iter(extra.values()))
    assert [float(w.coefficient.numpy()) for w in ls.learned_wrappers(loaded)] == [0.125, 0.125]
    for original, copy in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), copy.numpy())
    np.testing.assert_array_equal(loaded(x, training=True).numpy(), model(x, training=True).numpy())  # same noise
    np.testing.assert_allclose(ls.penalty(loaded), ls.penalty(model), rtol=1e-6)
    ls.finalize(model, 0.5)
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=ls.custom_objects())
    np.testing.assert_array_equal(loaded(x, training=True).numpy(), model.predict(x, verbose=0))


def test_set_coefficient_changes_the_penalty_without_retracing(tiny):
    model = ls.prune_low_variational_dropout(tiny.build_dense(), coefficient=1e-3)
    x, _ = tiny.make_data(8)
    traces = []

    @tf.function
    def penalty_of_a_training_call(inputs):
        traces.append(1)
        model(inputs, training=True)
        return tf.add_n(model.losses)

    first = float(penalty_of_a_training_call(x))
    ls.set_coefficient(model, 4e-3)
    np.testing.assert_allclose(float(penalty_of_a_training_call(x)), 4 * first, rtol=1e-5)
    ls.set_coefficient(model, 0)
    assert float(penalty_of_a_training_call(x)) == 0.0
    assert len(traces) == 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_wrapping_takes_dense_and_conv2d_and_trains_their_gate_parameters(tiny, method):
    model = METHODS[method](tiny.build_conv(), layers_to_ignore=["conv2"])
    assert [w.layer.name for w in ls.learned_wrappers(model)] == ["conv1", "out"]
    assert all(np.all(mask == 1) for mask in wrappers.get_masks(model).values())
    before = [w.trainable_weights[-1].numpy() for w in ls.learned_wrappers(model)]
    assert all(GATE[method] in w.trainable_weights[-1].name for w in ls.learned_wrappers(model))
    x, y = tiny.make_data(32, (8, 8, 1))
    _train(tiny, model, x, y)
    for value, wrapper in zip(before, ls.learned_wrappers(model)):
        assert not np.array_equal(value, wrapper.trainable_weights[-1].numpy())  # the optimizer saw them
    assert len(ls.expected_density(model)) == 2


def test_functional_models_are_wrapped_and_finalized(tiny):
    model = ls.prune_low_variational_dropout(tiny.build_branch())
    assert [w.layer.name for w in ls.learned_wrappers(model)] == ["left", "right", "out"]
    x, y = tiny.make_data(32)
    _train(tiny, model, x, y)
    masks = ls.finalize(model, 0.5)
    total = sum(mask.size for mask in masks.values())
    assert sum(mask.sum() for mask in masks.values()) == masks_lib.keep_count(total, 0.5)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: ls.prune_low_l0(m, coefficient=-1.0), ValueError, "coefficient must be a finite number"),
        (lambda m: ls.prune_low_l0(m, coefficient="big"), TypeError, "coefficient must be a number"),
        (lambda m: ls.prune_low_l0(m, seed=-1), ValueError, "seed must be an integer"),
        (lambda m: ls.prune_low_l0(m, droprate_init=1.0), ValueError, "droprate_init"),
        (lambda m: ls.prune_low_variational_dropout(m, log_sigma2_init=float("nan")), ValueError, "log_sigma2_init"),
        (lambda m: ls.prune_low_l0(m, layers_to_ignore=["nope"]), ValueError, "does not have"),
        (lambda m: ls.prune_low_l0(m, layers_to_ignore="fc1"), TypeError, "list of layer names"),
        (lambda m: ls.prune_low_l0(m, layers_to_ignore=["fc1", "out"]), ValueError, "no Dense or Conv2D"),
        (lambda m: ls.prune_low_l0(m.layers[1]), TypeError, "Sequential or functional"),
        (lambda m: ls.scores(wrappers.prune_low_magnitude(m)), ValueError, "prune_low_l0"),
        (lambda m: ls.set_coefficient(ls.prune_low_l0(m), float("inf")), ValueError, "finite"),
        (lambda m: ls.finalize(ls.prune_low_l0(m), 1.0), ValueError, "sparsity"),
        (lambda m: ls.finalize(ls.prune_low_l0(m), 0.5, strategy="per_layer"), ValueError, "strategy"),
    ],
)
def test_bad_inputs_are_refused_clearly(tiny, call, error, message):
    with pytest.raises(error, match=message):
        call(tiny.build_dense())


def test_mixed_precision_is_refused():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)),
                              keras.layers.Dense(3, dtype="mixed_float16", name="half")])
    with pytest.raises(ValueError, match="mixed precision"):
        ls.prune_low_variational_dropout(model)
