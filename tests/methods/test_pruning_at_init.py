"""Tests of methods/pruning_at_init.py: SNIP, GraSP and SynFlow scores and `prune_at_init`.

Each score is checked against an independent computation (NumPy, finite differences, a
closed form); `prune_at_init` against the package's count rule and against magnitude
pruning on cases built so that the two must differ.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.methods import distributions
from keras_lottery.methods import pruning_at_init as pai
from keras_lottery.sparsity import masks


def _linear(seed=0, dtype="float32"):
    """Flatten(8x8) -> Dense(10) 'out': logits linear in the weights, so NumPy can check them."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8)), keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(10, name="out", dtype=dtype)])


def _mlp(widths=(32, 32), activation="relu", seed=0, use_bias=True, dtype="float32"):
    """Flatten(8x8) -> Dense(w, activation) 'fc1', 'fc2', ... -> Dense(10) 'out'."""
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.InputLayer(input_shape=(8, 8)), keras.layers.Flatten(name="flatten")]
    layers += [keras.layers.Dense(width, activation=activation, use_bias=use_bias, name=f"fc{i + 1}", dtype=dtype)
               for i, width in enumerate(widths)]
    layers.append(keras.layers.Dense(10, use_bias=use_bias, name="out", dtype=dtype))
    return keras.Sequential(layers)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _numpy_gradient(x, y, kernel, bias, temperature=1.0):
    """d mean cross-entropy(softmax((x W + b) / T), y) / dW for the linear model, in float64."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    probabilities = _softmax((flat @ kernel + bias) / temperature)
    probabilities[np.arange(len(y)), y] -= 1.0
    return flat.T @ probabilities / (len(y) * temperature)


def _kernel_and_bias(wrapped, name="out"):
    layer = next(w.layer for w in kl.sparsity.wrappers.prunable_wrappers(wrapped) if w.layer.name == name)
    return layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)


def _total_kept(new_masks):
    return sum(int(mask.sum()) for mask in new_masks.values()), sum(mask.size for mask in new_masks.values())


# ----------------------------------------------------------------------------------------
# SNIP.


def test_snip_is_the_absolute_gradient_times_weight_computed_with_numpy(tiny):
    model = kl.prune_low_magnitude(_linear())
    x, y = tiny.make_data(64)
    kernel, bias = _kernel_and_bias(model)
    expected = np.abs(_numpy_gradient(x, y, kernel, bias) * kernel)
    np.testing.assert_allclose(pai.snip_scores(model, x, y)["out"], expected, rtol=1e-4, atol=1e-9)


def test_snip_uses_the_masked_weights_and_scores_pruned_ones_zero(tiny):
    model = kl.prune_low_magnitude(_linear())
    x, y = tiny.make_data(64)
    mask = (np.random.default_rng(1).random((64, 10)) > 0.5).astype(np.float32)
    kl.set_masks(model, {"out": mask})
    kernel, bias = _kernel_and_bias(model)
    kernel = kernel + 0.5 * (1 - mask)  # weights set by hand under the mask: the network is still w * m
    model.get_layer("prune_low_magnitude_out").layer.kernel.assign(kernel)
    expected = np.abs(_numpy_gradient(x, y, kernel * mask, bias) * kernel * mask)
    scores = pai.snip_scores(model, x, y)["out"]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-9)
    assert np.all(scores[mask == 0] == 0)


def test_snip_on_a_hidden_layer_matches_a_tape_on_the_unwrapped_model(tiny):
    dense = tiny.build_dense()
    model = kl.prune_low_magnitude(dense)
    x, y = tiny.make_data(32)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, dense(x, training=False))
    kernels = [dense.get_layer("fc1").kernel, dense.get_layer("out").kernel]
    gradients = tape.gradient(loss, kernels)
    scores = pai.snip_scores(model, x, y)
    for name, kernel, gradient in zip(("fc1", "out"), kernels, gradients):
        np.testing.assert_allclose(scores[name], np.abs(gradient.numpy() * kernel.numpy()), rtol=1e-5, atol=1e-10)


# ----------------------------------------------------------------------------------------
# GraSP.


def test_hessian_gradient_product_matches_finite_differences_on_a_linear_model(tiny):
    model = kl.prune_low_magnitude(_linear())
    x, y = tiny.make_data(64)
    kernel, bias = _kernel_and_bias(model)
    temperature = 3.0
    g = _numpy_gradient(x, y, kernel, bias, temperature)
    step = 1e-4 / np.abs(g).max()
    finite = (_numpy_gradient(x, y, kernel + step * g, bias, temperature)
              - _numpy_gradient(x, y, kernel - step * g, bias, temperature)) / (2 * step)
    product = pai.hessian_gradient_product(model, x, y, temperature=temperature)["out"]
    np.testing.assert_allclose(product, finite, rtol=0, atol=2e-3 * np.abs(finite).max())


def test_hessian_gradient_product_matches_finite_differences_through_a_hidden_layer(tiny):
    # float64 layers and tanh (smooth): central differences with a step of 1e-4 agree to ~3e-5 of
    # the largest entry (smaller steps lose to round-off in the loss).
    model = kl.prune_low_magnitude(_mlp(widths=(12,), activation="tanh", dtype="float64"))
    x, y = tiny.make_data(48)
    kernels = [weight for _, _, weight, _ in kl.sparsity.wrappers.pruning_entries(model)]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def gradient():
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        return [g.numpy() for g in tape.gradient(value, kernels)]

    original = [kernel.numpy() for kernel in kernels]
    g = gradient()
    step = 1e-4 / max(np.abs(part).max() for part in g)
    shifted = []
    for sign in (1.0, -1.0):
        for kernel, value, part in zip(kernels, original, g):
            kernel.assign(value + sign * step * part)
        shifted.append(gradient())
    for kernel, value in zip(kernels, original):
        kernel.assign(value)
    product = pai.hessian_gradient_product(model, x, y)
    for name, plus, minus in zip(("fc1", "out"), *shifted):
        finite = (plus - minus) / (2 * step)
        np.testing.assert_allclose(product[name], finite, rtol=0, atol=1e-4 * np.abs(finite).max())
        assert np.abs(finite).max() > 0


def test_grasp_keeps_the_top_of_w_times_hg_which_removes_the_papers_largest_s(tiny):
    model = kl.prune_low_magnitude(tiny.build_dense())
    x, y = tiny.make_data(64)
    product = pai.hessian_gradient_product(model, x, y, temperature=pai.GRASP_TEMPERATURE)
    weights = kl.sparsity.wrappers.get_weights(model)
    paper_s = {name: -weights[name] * product[name] for name in weights}  # S(-theta) = -theta * Hg
    scores = pai.grasp_scores(model, x, y)
    for name in weights:
        np.testing.assert_allclose(scores[name], -paper_s[name], rtol=1e-6, atol=1e-30)
    new_masks = pai.prune_at_init(model, "grasp", 0.7, data=(x, y))
    flat_s = np.concatenate([paper_s[name].ravel() for name in weights])
    flat_mask = np.concatenate([new_masks[name].ravel() for name in weights])
    # Every weight GraSP removed has an S at least as large as every weight it kept.
    assert flat_s[flat_mask == 0].min() >= flat_s[flat_mask == 1].max() - 1e-12 * np.abs(flat_s).max()


# ----------------------------------------------------------------------------------------
# SynFlow.


def _set_kernels(model, values):
    for name, value in values.items():
        model.get_layer(name).kernel.assign(value)


def test_synflow_on_a_linear_chain_is_the_closed_form():
    dense = _mlp(widths=(6,), use_bias=False)  # relu is the identity on positive inputs and |w|
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(64, 6)), rng.normal(size=(6, 10))
    _set_kernels(dense, {"fc1": w1, "out": w2})
    model = kl.prune_low_magnitude(dense)
    mask1 = (rng.random(w1.shape) > 0.3).astype(np.float32)
    kl.set_masks(model, {"fc1": mask1, "out": np.ones_like(w2, dtype=np.float32)})
    # Weights set by hand under a mask: the network is still w * m, as tfmot's forward pass.
    model.get_layer("prune_low_magnitude_fc1").layer.kernel.assign(w1)
    a1, a2 = np.abs(w1) * mask1, np.abs(w2)
    # R = 1^T |W1| |W2| 1:  dR/dW1[i, j] = sum_k |W2[j, k]|,  dR/dW2[j, k] = sum_i |W1[i, j]|.
    scores = pai.synflow_scores(model)
    np.testing.assert_allclose(scores["fc1"], a1 * a2.sum(axis=1)[None, :], rtol=1e-6)
    np.testing.assert_allclose(scores["out"], a1.sum(axis=0)[:, None] * a2, rtol=1e-6)
    # No biases: every layer's scores sum to R (the paper's conservation law).
    total = a1.sum(axis=0) @ a2.sum(axis=1)
    assert scores["fc1"].sum() == pytest.approx(total) and scores["out"].sum() == pytest.approx(total)


def test_synflow_takes_batchnorm_in_inference_mode_with_absolute_parameters():
    keras.utils.set_random_seed(0)
    dense = keras.Sequential([keras.layers.InputLayer(input_shape=(5,)),
                              keras.layers.Dense(4, use_bias=False, name="fc1"),
                              keras.layers.BatchNormalization(name="bn", epsilon=1e-3),
                              keras.layers.Dense(3, use_bias=False, name="out")])
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(5, 4)), rng.normal(size=(4, 3))
    gamma, beta, mean, variance = -rng.random(4) - 0.5, -rng.random(4), -rng.random(4), rng.random(4) + 0.5
    _set_kernels(dense, {"fc1": w1, "out": w2})
    dense.get_layer("bn").set_weights([gamma, beta, mean, variance])
    model = kl.prune_low_magnitude(dense)
    # BN(h) = |gamma| (h - |mean|) / sqrt(|var| + eps) + |beta|, all with moving statistics.
    scale = np.abs(gamma) / np.sqrt(np.abs(variance) + 1e-3)
    a1, a2 = np.abs(w1), np.abs(w2)
    scores = pai.synflow_scores(model)
    np.testing.assert_allclose(scores["fc1"], a1 * (scale * a2.sum(axis=1))[None, :], rtol=1e-5)
    hidden = (a1.sum(axis=0) - np.abs(mean)) * scale + np.abs(beta)
    np.testing.assert_allclose(scores["out"], np.abs(hidden[:, None] * a2), rtol=1e-5)


def test_synflow_leaves_weights_masks_and_statistics_exactly_as_they_were(tiny):
    model = kl.prune_low_magnitude(tiny.build_conv())
    kl.prune(model, 0.5)  # some masks, and weights at exactly 0
    before = [variable.numpy().copy() for variable in model.variables]
    scores = pai.synflow_scores(model, input_shape=(8, 8, 1))
    after = [variable.numpy() for variable in model.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)) and len(before) == len(after)
    masks_now = kl.get_masks(model)
    assert set(scores) == set(masks_now)
    for name, score in scores.items():
        assert score.shape == masks_now[name].shape and np.all(np.isfinite(score)) and np.all(score >= 0)
        assert np.all(score[masks_now[name] == 0] == 0)


def test_synflow_reaches_the_layers_of_a_nested_model():
    keras.utils.set_random_seed(0)
    block_input = keras.Input((64,))
    block = keras.Model(block_input, keras.layers.Dense(8, use_bias=False, name="inner")(block_input), name="block")
    inputs = keras.Input((8, 8))
    outputs = keras.layers.Dense(3, use_bias=False, name="out")(block(keras.layers.Flatten()(inputs)))
    model = kl.prune_low_magnitude(keras.Model(inputs, outputs))
    scores = pai.synflow_scores(model)
    a1 = np.abs(model.get_layer("block").get_layer("prune_low_magnitude_inner").layer.kernel.numpy())
    a2 = np.abs(model.get_layer("prune_low_magnitude_out").layer.kernel.numpy())
    np.testing.assert_allclose(scores["inner"], a1 * a2.sum(axis=1)[None, :], rtol=1e-6)
    np.testing.assert_allclose(scores["out"], a1.sum(axis=0)[:, None] * a2, rtol=1e-6)


def test_synflow_does_not_overflow_where_float32_would():
    # 14 Dense layers of 256 units, weights 4, on 64 ones: the first gives 64 * 4 = 2**8 per unit,
    # each next one multiplies by 256 * 4 = 2**10, so R = 256 units * 2**8 * 2**130 = 2**146, past
    # float32's largest number (3.4e38 < 2**128); every layer's scores sum to R (no biases).
    layers = [keras.layers.InputLayer(input_shape=(64,))]
    layers += [keras.layers.Dense(256, use_bias=False, kernel_initializer=keras.initializers.Constant(4.0),
                                  name=f"fc{i}") for i in range(14)]
    model = kl.prune_low_magnitude(keras.Sequential(layers))
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(2.0) ** 146)
    scores = pai.synflow_scores(model)
    for score in scores.values():
        assert np.all(np.isfinite(score)) and score.sum() == pytest.approx(2.0 ** 146, rel=1e-12)


# ----------------------------------------------------------------------------------------
# prune_at_init.


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude", "random"])
def test_prune_at_init_hits_the_exact_global_count_and_stays_trainable(tiny, method):
    model = kl.prune_low_magnitude(tiny.build_conv())
    x, y = tiny.make_data(64, shape=(8, 8, 1))
    new_masks = pai.prune_at_init(model, method, 0.8, data=(x, y), iterations=None if method != "synflow" else 5)
    kept, total = _total_kept(new_masks)
    assert kept == masks.keep_count(total, 0.8)
    for name, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, new_masks[name])
    tiny.compile_model(model)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for name, (weight, mask) in tiny.raw_kernels(model).items():
        np.testing.assert_array_equal(mask, new_masks[name])  # training kept the masks
        assert np.all(weight[mask == 0] == 0)


def test_snip_differs_from_magnitude_where_an_input_is_always_zero(tiny):
    # The weights from pixel (0, 0) are the largest of fc1, and that pixel is 0 in every example:
    # magnitude keeps them, while their gradient, hence their SNIP score, is 0.
    dense = tiny.build_dense()
    kernel = dense.get_layer("fc1").kernel.numpy()
    kernel[0, :] = 10.0
    dense.get_layer("fc1").kernel.assign(kernel)
    x, y = tiny.make_data(64)
    x[:, 0, 0] = 0.0
    by_magnitude = pai.prune_at_init(kl.prune_low_magnitude(dense), "magnitude", 0.8)
    by_snip = pai.prune_at_init(kl.prune_low_magnitude(dense), "snip", 0.8, data=(x, y))
    assert np.all(by_magnitude["fc1"][0, :] == 1)
    assert np.all(by_snip["fc1"][0, :] == 0)


def test_synflow_differs_from_magnitude_where_a_unit_leads_nowhere(tiny):
    # Unit 3 of fc1 has the largest incoming weights but no outgoing ones: no flow goes through it.
    dense = tiny.build_dense()
    kernel = dense.get_layer("fc1").kernel.numpy()
    kernel[:, 3] = 5.0
    dense.get_layer("fc1").kernel.assign(kernel)
    out = dense.get_layer("out").kernel.numpy()
    out[3, :] = 0.0
    dense.get_layer("out").kernel.assign(out)
    by_magnitude = pai.prune_at_init(kl.prune_low_magnitude(dense), "magnitude", 0.8)
    by_synflow = pai.prune_at_init(kl.prune_low_magnitude(dense), "synflow", 0.8, iterations=1)
    assert np.all(by_magnitude["fc1"][:, 3] == 1)
    assert np.all(by_synflow["fc1"][:, 3] == 0)


def test_iterative_synflow_avoids_the_layer_collapse_of_magnitude_pruning():
    # fc2's weights are scaled down 20x: global magnitude pruning at 99% keeps none of them
    # (no path from input to output is left); SynFlow's flow is conserved layer by layer, so
    # iterative SynFlow keeps every layer, and a path through all of them.
    def build():
        dense = _mlp(widths=(32, 32))
        dense.get_layer("fc2").kernel.assign(dense.get_layer("fc2").kernel * 0.05)
        return kl.prune_low_magnitude(dense)

    by_magnitude = pai.prune_at_init(build(), "magnitude", 0.99)
    assert by_magnitude["fc2"].sum() == 0
    by_synflow = pai.prune_at_init(build(), "synflow", 0.99, iterations=100)
    kept, total = _total_kept(by_synflow)
    assert kept == masks.keep_count(total, 0.99)
    assert all(mask.sum() > 0 for mask in by_synflow.values())
    paths = np.ones(64) @ by_synflow["fc1"] @ by_synflow["fc2"] @ by_synflow["out"]
    assert paths.sum() > 0


def test_the_rounds_follow_the_exponential_schedule(tiny):
    model = kl.prune_low_magnitude(tiny.build_dense())
    seen = []

    def recording(model, data, rng, loss):
        def scorer():
            seen.append(_total_kept(kl.get_masks(model))[0])
            return kl.sparsity.pruning.scores(model, "magnitude")
        return scorer

    new_masks = pai.prune_at_init(model, recording, 0.9, iterations=4)
    total = sum(mask.size for mask in new_masks.values())
    # Before round k the masks keep (1 - 0.9) ** ((k - 1) / 4) of the weights.
    assert seen == [masks.keep_count(total, 1 - 0.1 ** (k / 4)) for k in range(4)]
    assert _total_kept(new_masks)[0] == masks.keep_count(total, 0.9)
    assert pai.round_sparsity(0.9, 4, 4) == 0.9 and pai.round_sparsity(0.9, 2, 4) == pytest.approx(1 - 0.1 ** 0.5)


def test_per_layer_sparsities_from_a_distribution(tiny):
    model = kl.prune_low_magnitude(tiny.build_conv())
    sparsities = distributions.erk(model, 0.8)
    new_masks = pai.prune_at_init(model, "synflow", sparsities, strategy="layerwise", iterations=3)
    for name, mask in new_masks.items():
        assert mask.sum() == masks.keep_count(mask.size, sparsities[name])
    kept, total = _total_kept(new_masks)
    assert kept == masks.keep_count(total, 0.8)


@pytest.mark.parametrize("method", ["random", "synflow"])
def test_masks_only_shrink(tiny, method):
    model = kl.prune_low_magnitude(tiny.build_dense())
    before = kl.prune(model, 0.5)
    after = pai.prune_at_init(model, method, 0.8, iterations=2)  # random scores would revive pruned weights
    for name in before:
        assert np.all(after[name] <= before[name])
    assert _total_kept(after)[0] == masks.keep_count(_total_kept(after)[1], 0.8)


def _never_called(model, data, rng, loss):
    raise AssertionError("scored before the inputs were checked")


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(method="snp"), r"unknown pruning-at-init method 'snp'.*'grasp', 'magnitude', 'random', 'snip', 'synflow'"),
    (dict(method="snip"), r"pass data=\(x, y\)"),
    (dict(method="grasp"), r"pass data=\(x, y\)"),
    (dict(sparsity=1.0), r"must be in \[0, 1\)"),
    (dict(sparsity=-0.5), r"must be in \[0, 1\)"),
    (dict(sparsity={"fc1": 0.5, "out": 0.5}), "need strategy='layerwise'"),
    (dict(sparsity={"fc1": 0.5}, strategy="layerwise"), r"the model's prunable layers are \['fc1', 'out'\]"),
    (dict(sparsity={"fc1": 0.5, "out": 1.5}, strategy="layerwise"), "sparsity of layer 'out' must be in"),
    (dict(iterations=0), "iterations must be an integer >= 1"),
    (dict(iterations=2.5), "iterations must be an integer >= 1"),
    (dict(strategy="per_layer"), "strategy must be one of"),
    (dict(data=(np.zeros((4, 8, 8)), np.zeros(3))), r"holds 4 inputs and 3 labels"),
    (dict(data=np.zeros((4, 8, 8))), r"data must be \(x, y\)"),
])
def test_bad_inputs_are_refused_before_any_work(tiny, kwargs, pattern):
    model = kl.prune_low_magnitude(tiny.build_dense())
    arguments = {"method": _never_called, "sparsity": 0.5, **kwargs}
    before = kl.get_masks(model)
    with pytest.raises(ValueError, match=pattern):
        pai.prune_at_init(model, **arguments)
    assert all(np.array_equal(before[name], mask) for name, mask in kl.get_masks(model).items())


def test_a_model_without_wrappers_is_refused(tiny):
    for call in (lambda model: pai.prune_at_init(model, "synflow", 0.5),
                 lambda model: pai.snip_scores(model, *tiny.make_data(4)),
                 lambda model: pai.synflow_scores(model)):
        with pytest.raises(ValueError, match=r"prune_low_magnitude\(model\) first"):
            call(tiny.build_dense())


def test_synflow_without_a_known_input_shape_asks_for_one():
    # A fully convolutional model takes images of any size: SynFlow's all-ones input needs one.
    inputs = keras.Input((None, None, 1))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = kl.prune_low_magnitude(keras.Model(inputs, keras.layers.Dense(3, name="out")(features)))
    with pytest.raises(ValueError, match="pass input_shape="):
        pai.synflow_scores(model)
    scores = pai.synflow_scores(model, input_shape=(8, 8, 1))
    assert scores["conv"].shape == (3, 3, 1, 4) and scores["conv"].sum() > 0
