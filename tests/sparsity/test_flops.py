"""Tests of sparsity/flops.py: inference multiply-adds by hand and by brute force, RigL's training rules.

Independent computations: output sizes worked out by hand for each stride and padding, the matmul multiply-adds TensorFlow's own gradient graphs hold (for the
3 f_D and 9 f_D rules), and figures published by google-research/rigl (README's ResNet-50
tables).
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.methods import distributions
from keras_lottery.sparsity import flops


def _mask(shape, active, seed=0):
    """A 0/1 mask of `shape` with exactly `active` ones."""
    flat = np.zeros(int(np.prod(shape)), np.float32)
    flat[np.random.default_rng(seed).permutation(flat.size)[:active]] = 1
    return flat.reshape(shape)


def _conv_model(padding, strides):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(9, 9, 3)),
        keras.layers.Conv2D(4, 3, strides=strides, padding=padding, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(5, name="out"),
    ])


@pytest.mark.parametrize("padding, strides, out_size", [("valid", 2, 4), ("same", 2, 5), ("same", 1, 9),
                                                        ("valid", 1, 7)])
def test_conv_dense_and_depthwise_counts_by_hand(padding, strides, out_size):
    model = _conv_model(padding, strides)
    counted = flops.layer_flops(model)
    assert list(counted) == ["conv", "depthwise", "out"]  # BatchNorm, ReLU, pooling, flatten: not counted
    assert counted["conv"] == 3 * 3 * 3 * 4 * out_size ** 2
    assert counted["depthwise"] == 3 * 3 * 4 * 2 * out_size ** 2  # kernel (3, 3, 4, 2), 'same' at stride 1
    assert counted["out"] == (out_size // 2) ** 2 * 8 * 5
    assert flops.inference_flops(model) == sum(counted.values())
    # Masks with known counts: each layer's MACs scale to its active weights.
    masks = {"conv": _mask((3, 3, 3, 4), 40), "depthwise": _mask((3, 3, 4, 2), 7, 1)}
    sparse = flops.layer_flops(model, masks)
    assert sparse["conv"] == 40 * out_size ** 2 and sparse["depthwise"] == 7 * out_size ** 2
    assert sparse["out"] == counted["out"]  # not named: its kernel's nonzeros, all of them


def test_dense_on_sequences_counts_every_position_and_zeros_are_pruned():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(7, 5)), keras.layers.Dense(3, name="fc")])
    assert flops.layer_flops(model) == {"fc": 7 * 5 * 3}
    kernel = model.get_layer("fc").kernel
    kernel.assign(kernel * _mask((5, 3), 4))
    assert flops.layer_flops(model) == {"fc": 7 * 4}  # a plain model's exact zeros count as pruned
    assert flops.layer_flops(model, dense=True) == {"fc": 7 * 5 * 3}


def test_wrapped_model_counts_as_the_plain_model_with_its_masks():
    dense = _conv_model("same", 2)
    wrapped = kl.prune_low_magnitude(dense, kl.OneShot(0.0))
    masks = {name: _mask(mask.shape, int(mask.size * 0.3), seed) for seed, (name, mask)
             in enumerate(kl.get_masks(wrapped).items())}
    assert sorted(masks) == ["conv", "out"]  # tfmot leaves DepthwiseConv2D unwrapped: it counts dense
    kl.set_masks(wrapped, masks)
    expected = {"conv": int(masks["conv"].sum()) * 25, "depthwise": 3 * 3 * 4 * 2 * 25, "out": int(masks["out"].sum())}
    assert flops.layer_flops(wrapped) == expected
    assert flops.layer_flops(dense, masks) == expected
    assert flops.layer_flops(kl.strip_pruning(wrapped)) == expected
    assert flops.inference_flops(wrapped, dense=True) == flops.inference_flops(dense)
    # An active weight at exactly 0 (RigL's regrown weights start there) still counts in the wrapper.
    wrapper = next(layer for layer in wrapped.layers if getattr(layer, "layer", None) is not None
                   and layer.layer.name == "out")
    kernel = wrapper.layer.kernel
    kernel.assign(tf.where(masks["out"] > 0, tf.zeros_like(kernel), kernel))
    assert flops.layer_flops(wrapped)["out"] == expected["out"]
    assert flops.layer_flops(kl.strip_pruning(wrapped))["out"] == 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not built"):
        flops.layer_flops(keras.Sequential([keras.layers.Dense(3)]))
    model = _conv_model("same", 1)
    with pytest.raises(ValueError, match="no counted kernel"):
        flops.layer_flops(model, {"bn": np.ones(4)})
    with pytest.raises(ValueError, match="shape"):
        flops.layer_flops(model, {"conv": np.ones((3, 3))})
    separable = keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8, 3)), keras.layers.SeparableConv2D(4, 3)])
    with pytest.raises(ValueError, match="does not know"):
        flops.layer_flops(separable)
    with pytest.raises(TypeError):
        flops.layer_flops(keras.layers.Dense(3))


# ----------------------------------------------------------------------------------------
# Training and scoring rules.

F_D, F_S = 1000.0, 200.0


@pytest.mark.parametrize("interval", [1, 10, 100])
def test_rigl_is_static_sparse_training_when_nothing_is_pruned(interval):
    assert flops.training_flops("rigl", F_D, F_D, 50, 8, interval) == pytest.approx(3 * F_D * 50 * 8)
    # Closed form, and between static sparse (3 f_S) and SNFS (2 f_S + f_D).
    rigl = flops.training_flops("rigl", F_D, F_S, 50, 8, interval)
    assert rigl == pytest.approx((3 * F_S * interval + 2 * F_S + F_D) / (interval + 1) * 400)
    assert flops.training_flops("set", F_D, F_S, 50, 8) < rigl <= flops.training_flops("snfs", F_D, F_S, 50, 8)


def test_per_step_rules():
    def per_example_step(method, sparse=F_S):
        return flops.training_flops(method, F_D, sparse, 1, 1)

    assert per_example_step("dense", None) == 3 * F_D
    for method in ("static", "random", "snip", "grasp", "synflow", "lottery", "small_dense", "set"):
        assert per_example_step(method) == 3 * F_S, method
    assert per_example_step("snfs") == 2 * F_S + F_D > per_example_step("set")
    assert per_example_step("supermask") == per_example_step("edge_popup") == 2 * F_S + F_D
    assert per_example_step("l0", None) == per_example_step("variational_dropout", F_S) == 3 * F_D


@pytest.mark.parametrize("method", flops.TRAINING_METHODS)
def test_totals_are_linear_in_iterations_and_batch_size(method):
    def total(iterations, batch):
        sparse = [F_S] * iterations if method == "gradual" else F_S
        return flops.training_flops(method, F_D, sparse, iterations, batch, 10)

    assert total(60, 4) == pytest.approx(3 * total(20, 4)) == pytest.approx(12 * total(20, 1))


def test_gradual_pruning_counts_the_mean_sparse_flops():
    schedule = [F_D] * 30 + list(np.linspace(F_D, F_S, 40)) + [F_S] * 30
    total = flops.training_flops("gradual", F_D, schedule, 100, 2)
    assert total == pytest.approx(3 * np.mean(schedule) * 100 * 2)
    assert flops.training_flops("gradual", F_D, lambda step: schedule[step], 100, 2) == pytest.approx(total)
    with pytest.raises(ValueError, match="one number"):
        flops.training_flops("gradual", F_D, F_S, 100, 2)
    with pytest.raises(ValueError, match="one value per step"):
        flops.training_flops("gradual", F_D, schedule[:99], 100, 2)


def test_unknown_methods_and_bad_numbers_raise():
    with pytest.raises(ValueError, match="rigl") as error:
        flops.training_flops("rigel", F_D, F_S, 10, 1)
    assert "snfs" in str(error.value) and "small_dense" in str(error.value)
    with pytest.raises(ValueError, match="grasp"):
        flops.scoring_flops("snap", F_D, 8)
    for bad in (-1.0, float("nan"), "100"):
        with pytest.raises(ValueError, match="dense_flops"):
            flops.training_flops("set", bad, F_S, 10, 1)
    with pytest.raises(ValueError, match="iterations"):
        flops.training_flops("set", F_D, F_S, 0, 1)
    with pytest.raises(ValueError, match="sparse_flops"):
        flops.training_flops("set", F_D, None, 10, 1)


def test_imp_sums_three_sparse_flops_per_round():
    rounds = [F_D, 0.8 * F_D, 0.64 * F_D]
    assert flops.imp_training_flops(rounds, 100, 4) == pytest.approx(3 * sum(rounds) * 400)
    assert flops.imp_training_flops(rounds, [100, 80, 80], 4) == pytest.approx(
        3 * (F_D * 100 + 0.8 * F_D * 80 + 0.64 * F_D * 80) * 4)
    assert flops.imp_training_flops(rounds[:1], 100, 4) == flops.training_flops("dense", F_D, None, 100, 4)
    with pytest.raises(ValueError, match="rounds"):
        flops.imp_training_flops(rounds, [100, 80], 4)


def test_scoring_rules():
    assert flops.scoring_flops("snip", F_D, 64) == 3 * F_D * 64
    assert flops.scoring_flops("grasp", F_D, 64, iterations=2) == 9 * F_D * 64 * 2
    assert flops.scoring_flops("synflow", F_D, 64, 100) == flops.scoring_flops("synflow", F_D, 1, 100) == 300 * F_D


def _graph_matmul_macs(function):
    """Multiply-adds of the MatMuls in a traced function's graph (2-D matmuls only)."""
    total = 0
    for op in function.get_concrete_function().graph.get_operations():
        if op.type != "MatMul":
            continue
        a, b = op.inputs[0].shape, op.inputs[1].shape
        rows = a[1] if op.get_attr("transpose_a") else a[0]
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        cols = b[0] if op.get_attr("transpose_b") else b[1]
        total += rows * inner * cols
    return total


def test_three_and_nine_dense_passes_match_tensorflows_gradient_graphs():
    """The MACs TF's own graphs spend on a step (3 f_D) and on GraSP's H g (9 f_D), per example.

    The first layer's input gradient is never computed (the input is no variable), so the
    graphs hold f_1 (backward) and 5 f_1 (H g) less than the rules; a 2-feature input makes
    f_1 small.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(2,))] + [
        keras.layers.Dense(48, activation="tanh") for _ in range(4)] + [keras.layers.Dense(10)])
    dense_flops, first = flops.inference_flops(model), 2 * 48
    batch = 8
    x, y = tf.random.normal((batch, 2)), tf.constant(np.arange(batch) % 10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = [layer.kernel for layer in model.layers]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(y, model(x))
        return tape.gradient(value, kernels)

    @tf.function
    def hessian_gradient():  # as pruning_at_init.hessian_gradient_product
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss(y, model(x) / 200.0)
            gradients = inner.gradient(value, kernels)
            product = tf.add_n([tf.reduce_sum(tf.stop_gradient(g) * g) for g in gradients])
        return outer.gradient(product, kernels)

    step_macs = _graph_matmul_macs(step) / batch
    assert flops.training_flops("dense", dense_flops, None, 1, 1) - first <= step_macs
    assert step_macs <= flops.training_flops("dense", dense_flops, None, 1, 1)
    grasp_macs = _graph_matmul_macs(hessian_gradient) / batch
    assert flops.scoring_flops("grasp", dense_flops, 1) - 5 * first <= grasp_macs
    assert grasp_macs <= flops.scoring_flops("grasp", dense_flops, 1)


# ----------------------------------------------------------------------------------------
# google-research/rigl's published ResNet-50 figures (README.md, "Extended Training Results" and
# "1x Training Results"): (sparsity distribution, sparsity, training length x, training FLOPs
# x dense training, inference FLOPs x dense inference). RigL's ImageNet runs update masks every
# 100 steps. The README's MobileNet-v1 table is left out: it is not consistent with any per-step
# rule (its ERK 0.89 runs cost 1.39x at 10x and 2.79x at 50x, not five times as much).
RIGL_RESNET50 = [
    ("erk", 0.8, 5, 2.09, 0.42), ("uniform", 0.8, 5, 1.14, 0.23), ("erk", 0.9, 5, 1.23, 0.24),
    ("uniform", 0.9, 5, 0.66, 0.13), ("erk", 0.95, 5, 0.63, 0.12), ("uniform", 0.95, 5, 0.42, 0.08),
    ("erk", 0.965, 5, 0.45, 0.09), ("uniform", 0.965, 5, 0.34, 0.07), ("erk", 0.99, 5, 0.29, 0.05),
    ("erk", 0.99, 10, 0.58, 0.05), ("erk", 0.99, 40, 2.32, 0.05), ("erk", 0.99, 100, 5.8, 0.05),
    ("erk", 0.8, 1, 0.42, 0.42), ("uniform", 0.8, 1, 0.23, 0.23), ("erk", 0.9, 1, 0.24, 0.24),
    ("uniform", 0.9, 1, 0.13, 0.13),
]


@pytest.mark.parametrize("distribution, sparsity, length, training, inference", RIGL_RESNET50)
def test_rigl_training_figures_follow_from_its_inference_figures(distribution, sparsity, length, training, inference):
    """The training column is RigL's rule applied to the inference column (both rounded to 0.01)."""
    iterations = 1000

    def ratio(inference_ratio):
        run = flops.training_flops("rigl", 1.0, inference_ratio, length * iterations, 1, update_frequency=100)
        return run / flops.training_flops("dense", 1.0, None, iterations, 1)

    assert ratio(inference - 0.005) - 0.005 <= training <= ratio(inference + 0.005) + 0.005


def test_static_sparse_rule_does_not_explain_rigls_long_runs():
    """The 40x and 100x runs cost more than 3 f_S: the dense gradient every 100 steps shows (the test above can fail)."""
    for length, training in ((40, 2.32), (100, 5.8)):
        static = flops.training_flops("static", 1.0, 0.055, length, 1) / flops.training_flops("dense", 1.0, None, 1, 1)
        assert static + 0.005 < training


def test_resnet50_uniform_inference_ratios_match_rigls():
    """RigL's 'uniform' ResNet-50: the first conv dense and outside the count, every other layer at the target.

    tf_keras's ResNet50 is v1 (stride in the first 1x1 conv), RigL's the TPU v1.5 model, and
    RigL's counter adds bias and ReLU terms: agreement to 0.01 is what is expected.
    """
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    per_layer = flops.layer_flops(model, dense=True)
    assert 3.8e9 < sum(per_layer.values()) < 4.2e9  # ResNet-50's ~4 GMACs (RigL: 8.2e9 FLOPs = mults + adds)
    shapes = {name: tuple(model.get_layer(name).kernel.shape) for name in per_layer}
    for sparsity, published in ((0.8, 0.23), (0.9, 0.13), (0.95, 0.08), (0.965, 0.07)):
        per_layer_sparsity = distributions.uniform(shapes, sparsity, dense=("conv1_conv",), count_dense=False)
        masks = {name: _mask(shape, round(np.prod(shape) * (1 - per_layer_sparsity[name])))
                 for name, shape in shapes.items()}
        ratio = flops.inference_flops(model, masks) / sum(per_layer.values())
        assert abs(ratio - published) <= 0.01, (sparsity, ratio)
