"""Tests of methods/mask_updaters.py: SET, SNFS and RigL, their schedule, and MaskUpdateCallback.

Regrowth is checked against an independent choice (NumPy gradients of a linear model, a
momentum set by hand, the seed), counts against the package's count rule, and a fit
against the masks it must leave: per-layer counts fixed, pruned weights exactly 0.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.methods import mask_updaters as mu
from keras_lottery.methods import pruning_at_init as pai
from keras_lottery.sparsity import wrappers
from tests import conftest as tiny


def _linear(seed=0):
    """Flatten(8x8) -> Dense(10) 'out': the loss's gradient has a closed form."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8)), keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(10, name="out")])


def _sparse(dense, sparsity=0.7, optimizer=None, schedule=kl.OneShot(0.0), **compile_kwargs):
    """Wrapped (by default a schedule that only holds masks), random masks at `sparsity` per layer, compiled."""
    model = kl.prune_low_magnitude(dense, pruning_schedule=schedule)
    pai.prune_at_init(model, "random", sparsity, strategy="layerwise")
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
    return model


def _state(model):
    """dict mask name -> (kernel, boolean mask)."""
    return {name: (weight.numpy().copy(), mask.numpy() > 0.5)
            for name, _, weight, mask in wrappers.pruning_entries(model)}


def _numpy_gradient(x, y, kernel, bias):
    """d mean cross-entropy(softmax(x W + b), y) / dW, in float64."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    logits = flat @ kernel + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    probabilities[np.arange(len(y)), y] -= 1.0
    return flat.T @ probabilities / len(y)


def _top(scores, count, alive):
    """Flat indices of the `count` highest scores among `alive` (by a full sort, not the package's top-k)."""
    flat = np.where(alive.ravel(), scores.ravel(), -np.inf)
    return set(np.argsort(-flat, kind="stable")[:count].tolist())


def _expected_k(active, fraction):
    return active - math.floor(active * (1 - fraction) + 0.5)


# ----------------------------------------------------------------------------------------
# The schedule.


def test_cosine_and_constant_drop_fractions_and_update_steps():
    cosine = mu.SET(total_steps=400, drop_fraction=0.3, frequency=100)
    assert cosine.end_step == 300  # 75% of training
    for step in (0, 50, 100, 150, 300):
        assert cosine.drop_fraction_at(step) == pytest.approx(0.3 * (1 + math.cos(math.pi * step / 300)) / 2)
    assert cosine.drop_fraction_at(301) == 0.0 and cosine.drop_fraction_at(400) == 0.0
    # Step 300 decays to 0 exactly, so it is no update; step 0 precedes any training.
    assert [s for s in range(500) if cosine.is_update_step(s)] == [100, 200]
    assert cosine.next_update_step(101) == 200 and cosine.next_update_step(201) is None

    constant = mu.SET(drop_fraction=0.2, frequency=10, begin_step=5, end_step=35, decay="constant")
    assert [constant.drop_fraction_at(s) for s in (4, 5, 20, 35, 36)] == [0.0, 0.2, 0.2, 0.2, 0.0]
    assert [s for s in range(100) if constant.is_update_step(s)] == [15, 25, 35]
    shifted = mu.RigL(drop_fraction=0.4, frequency=10, begin_step=10, end_step=50)
    assert shifted.drop_fraction_at(30) == pytest.approx(0.4 * (1 + math.cos(math.pi * 20 / 40)) / 2)


def test_drop_count_follows_the_package_count_rule():
    # round(f * active): 2.7 -> 3 and 0.9 -> 1 (rigl's truncation gives 2 and 0); an exact half rounds down.
    assert [mu.drop_count(9, 0.3), mu.drop_count(3, 0.3), mu.drop_count(7, 0.3), mu.drop_count(5, 0.5)] == [3, 1, 2, 2]
    assert mu.drop_count(0, 0.3) == 0
    assert mu.drop_count(1, 0.9) == 0 and mu.drop_count(2, 0.9) == 1  # at least one old weight stays


# ----------------------------------------------------------------------------------------
# Drop and regrowth.


@pytest.mark.parametrize("method", ["set", "rigl", "snfs"])
def test_update_swaps_exactly_k_weights_per_layer_and_keeps_counts(method):
    model = _sparse(tiny.build_dense(), 0.7)
    x, y = tiny.make_data(64)
    updater = mu.get(method, drop_fraction=0.3, frequency=10, end_step=100, decay="constant", beta=0.9) \
        if method == "snfs" else mu.get(method, drop_fraction=0.3, frequency=10, end_step=100, decay="constant")
    if method == "snfs":
        updater.prepare(model)
        updater.observe(model, (x, y), 10)
    before = _state(model)
    dropped = updater.update(model, 10, batch=(x, y))
    after = _state(model)
    for name, (weights, active) in before.items():
        new = after[name][1]
        k = _expected_k(int(active.sum()), 0.3)
        assert k > 0 and dropped[name] == k
        assert new.sum() == active.sum()
        assert (active & ~new).sum() == k and (new & ~active).sum() == k
        # The dropped ones are the k lowest |w| among the active weights.
        magnitudes = np.abs(weights).ravel()
        order = np.argsort(np.where(active.ravel(), magnitudes, np.inf), kind="stable")
        assert set(np.flatnonzero((active & ~new).ravel())) == set(order[:k].tolist())


def test_a_dense_layer_and_a_zero_fraction_change_nothing():
    model = _sparse(tiny.build_dense(), 0.7)
    masks = wrappers.get_masks(model)
    masks["out"] = np.ones_like(masks["out"])
    wrappers.set_masks(model, masks)
    updater = mu.SET(drop_fraction=0.5, frequency=1, end_step=10)
    assert updater.update(model, 3)["out"] == 0  # no inactive candidate
    assert (wrappers.get_masks(model)["out"] == 1).all()
    assert updater.update(model, 10) == {"fc1": 0, "out": 0}  # cosine is 0 at end_step


def test_set_regrowth_is_random_and_reproducible_from_the_seed():
    def grown(seed, step=10):
        model = _sparse(tiny.build_dense(), 0.8)
        old = wrappers.get_masks(model)["fc1"] > 0.5
        mu.SET(drop_fraction=0.3, frequency=10, end_step=100, decay="constant", seed=seed).update(model, step)
        return frozenset(np.flatnonzero((wrappers.get_masks(model)["fc1"] > 0.5) & ~old).tolist()), old

    first, old = grown(0)
    assert grown(0)[0] == first
    draws = [grown(seed)[0] for seed in range(1, 9)] + [grown(0, step=20)[0]]
    assert all(draw != first for draw in draws)
    candidates = set(np.flatnonzero(~old).tolist())
    picked = set().union(first, *draws)
    assert picked <= candidates
    # Ten uniform draws of k cover about 1 - (1 - k / n) ** 10 of the candidates; a fixed order covers k / n.
    uniform_coverage = 1 - (1 - len(first) / len(candidates)) ** len([first] + draws)
    assert abs(len(picked) / len(candidates) - uniform_coverage) < 0.08


def test_rigl_regrows_the_largest_dense_gradients():
    model = _sparse(_linear(), 0.8)
    x, y = tiny.make_data(64, seed=1)
    layer = model.get_layer("prune_low_magnitude_out").layer
    kernel, active = layer.kernel.numpy().astype(np.float64), wrappers.get_masks(model)["out"] > 0.5
    expected_gradient = _numpy_gradient(x, y, kernel * active, layer.bias.numpy())
    got = mu.dense_gradients(model, (x, y))["out"]
    np.testing.assert_allclose(got, expected_gradient, rtol=1e-4, atol=1e-6)
    assert np.abs(got[~active]).min() > 0  # dense: the masked entries have their gradient too

    k = _expected_k(int(active.sum()), 0.3)
    mu.RigL(drop_fraction=0.3, frequency=5, end_step=50, decay="constant").update(model, 5, batch=(x, y))
    new = wrappers.get_masks(model)["out"] > 0.5
    assert set(np.flatnonzero((new & ~active).ravel()).tolist()) == _top(np.abs(expected_gradient), k, ~active)


def test_dense_gradients_leave_the_model_unchanged():
    model = _sparse(tiny.build_conv(), 0.6)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    y = np.arange(16) % 10
    model.fit(x, y, batch_size=8, verbose=0)  # builds the loss metric, which the gradient's loss would update
    state = list(model.variables) + [variable for metric in model.metrics for variable in metric.variables]
    before = [variable.numpy().copy() for variable in state]
    gradients = mu.dense_gradients(model, (x, y))
    assert set(gradients) == {"conv1", "conv2", "out"}
    for variable, value in zip(state, before):  # masks, BatchNorm statistics, loss metric, weights
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.name)


def test_snfs_regrows_by_momentum_which_is_the_dense_gradient_average():
    model = _sparse(_linear(), 0.8)
    active = wrappers.get_masks(model)["out"] > 0.5
    updater = mu.SNFS(drop_fraction=0.3, frequency=10, end_step=100, decay="constant")
    updater.prepare(model)
    assert updater.beta == 0.9 and updater.window() == 10  # log(0.01) / log(0.9) = 43.7, at most frequency
    layer = model.get_layer("prune_low_magnitude_out").layer
    batches = [tiny.make_data(32, seed=seed) for seed in (1, 2)]
    kernel = layer.kernel.numpy().astype(np.float64) * active
    grads = [_numpy_gradient(x, y, kernel, layer.bias.numpy()) for x, y in batches]
    updater.observe(model, batches[0], 7)
    updater.observe(model, batches[1], 9)  # two steps later: the old average decays by beta ** 2
    expected = 0.81 * (0.1 * grads[0]) + 0.19 * grads[1]
    np.testing.assert_allclose(updater.momenta["out"], expected, rtol=1e-4, atol=1e-7)

    momentum = np.random.default_rng(3).normal(size=active.shape)  # a known momentum, unlike any gradient
    updater.momenta = {"out": momentum}
    k = _expected_k(int(active.sum()), 0.3)
    updater.update(model, 10)
    new = wrappers.get_masks(model)["out"] > 0.5
    assert set(np.flatnonzero((new & ~active).ravel()).tolist()) == _top(np.abs(momentum), k, ~active)
    assert updater.momenta == {}  # the next window starts afresh
    with pytest.raises(RuntimeError, match="no momentum"):
        updater.update(model, 20)


def test_the_optimizer_momentum_of_inactive_weights_is_zero_so_snfs_cannot_use_it():
    """Why SNFS keeps its own momentum: the wrappers mask gradients, so the optimizer's slot is 0 there."""
    model = _sparse(tiny.build_dense(), 0.7)
    model.fit(*tiny.make_data(64), batch_size=16, verbose=0)
    for _, _, weight, mask in wrappers.pruning_entries(model):
        (slot,) = wrappers.optimizer_slots(model.optimizer, weight)
        assert np.abs(slot.numpy()[mask.numpy() < 0.5]).max() == 0.0
        assert np.abs(slot.numpy()[mask.numpy() > 0.5]).max() > 0.0


@pytest.mark.parametrize("optimizer", [lambda: keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam])
def test_regrown_weights_and_their_optimizer_slots_start_at_zero(optimizer):
    model = _sparse(tiny.build_dense(), 0.7, optimizer=optimizer())
    model.fit(*tiny.make_data(64), batch_size=16, verbose=0)  # builds the slots
    # Simulate state on inactive weights (as tfmot's own wrappers or a hand-set kernel leave it).
    for _, _, weight, _ in wrappers.pruning_entries(model):
        weight.assign(weight + 0.5)
        for slot in wrappers.optimizer_slots(model.optimizer, weight):
            slot.assign(tf.ones_like(slot))
    before = _state(model)
    mu.SET(drop_fraction=0.3, frequency=1, end_step=10, decay="constant").update(model, 1)
    for name, _, weight, mask in wrappers.pruning_entries(model):
        old_weights, old = before[name]
        new = mask.numpy() > 0.5
        grown, stayed = new & ~old, new & old
        assert grown.any()
        assert (weight.numpy()[grown] == 0).all() and (weight.numpy()[~new] == 0).all()
        np.testing.assert_array_equal(weight.numpy()[stayed], old_weights[stayed])
        slots = wrappers.optimizer_slots(model.optimizer, weight)
        assert len(slots) == (2 if isinstance(model.optimizer, keras.optimizers.Adam) else 1)
        for slot in slots:
            assert (slot.numpy()[grown] == 0).all() and (slot.numpy()[~new] == 0).all()
            assert (slot.numpy()[stayed] == 1).all()


def test_regrow_dropped_lets_the_just_dropped_compete_as_rigl_does():
    model = _sparse(_linear(), 0.5)
    active = wrappers.get_masks(model)["out"] > 0.5
    kernel = model.get_layer("prune_low_magnitude_out").layer.kernel
    updater = mu.SNFS(drop_fraction=0.3, frequency=1, end_step=10, decay="constant", beta=0.9, regrow_dropped=True)
    updater.prepare(model)
    updater.momenta = {"out": np.abs(kernel.numpy()) * active}  # scores favour the active weights, dropped ones too
    old_kernel = kernel.numpy().copy()
    dropped = updater.update(model, 1)["out"]
    new = wrappers.get_masks(model)["out"] > 0.5
    assert new.sum() == active.sum() and dropped > 0
    assert (new == active).all()  # every dropped weight was regrown at once, with its value
    np.testing.assert_array_equal(kernel.numpy(), old_kernel * active)


# ----------------------------------------------------------------------------------------
# The callback.


class _Recorder(keras.callbacks.Callback):
    """Records (step, masks, kernels) after every batch (it runs after MaskUpdateCallback)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        self.records.append((int(self.model.optimizer.iterations.numpy()), _state(self.model)))


@pytest.mark.parametrize("method", ["set", "snfs", "rigl"])
def test_fit_with_the_callback_updates_masks_and_keeps_them_applied(method):
    model = _sparse(tiny.build_dense(), 0.75)
    x, y = tiny.make_data(128)
    counts = {name: int(mask.sum()) for name, mask in wrappers.get_masks(model).items()}
    updater = mu.get(method, total_steps=32, drop_fraction=0.3, frequency=4)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    data = {"set": None, "snfs": iter(dataset.repeat()), "rigl": dataset}[method]
    recorder = _Recorder()
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[mu.MaskUpdateCallback(updater, data), recorder])
    masks_at = {step: state for step, state in recorder.records}
    changed = [step for step in sorted(masks_at) if step > 1 and any(
        (masks_at[step][name][1] != masks_at[step - 1][name][1]).any() for name in counts)]
    assert changed == [4, 8, 12, 16, 20]  # 24 = 75% of 32: the cosine is 0 there
    for step, state in recorder.records:
        for name, (weights, active) in state.items():
            assert active.sum() == counts[name], (step, name)
            assert (weights[~active] == 0).all(), (step, name)  # the forward pass sees exactly 0 there
    # The masked network is what predict computes.
    effective = wrappers.get_weights(model)
    bias = {name: model.get_layer(f"prune_low_magnitude_{name}").layer.bias.numpy() for name in counts}
    logits = np.maximum(x.reshape(len(x), -1) @ effective["fc1"] + bias["fc1"], 0) @ effective["out"] + bias["out"]
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, rtol=1e-4, atol=1e-5)


def test_updates_on_execution_boundaries_with_steps_per_execution():
    # tfmot's default schedule (ConstantSparsity(0.5)) on the wrappers: it must not act, the masks stay at 75%.
    model = _sparse(tiny.build_dense(), 0.75, schedule=None, steps_per_execution=2)
    counts = {name: int(mask.sum()) for name, mask in wrappers.get_masks(model).items()}
    x, y = tiny.make_data(128)
    updater = mu.RigL(end_step=16, drop_fraction=0.3, frequency=4, decay="constant")
    recorder = _Recorder()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[mu.MaskUpdateCallback(updater, (x[:32], y[:32])), recorder])
    steps = [step for step, _ in recorder.records]
    assert steps == list(range(2, 17, 2))
    changed = [b for (a, sa), (b, sb) in zip(recorder.records, recorder.records[1:])
               if any((sa[name][1] != sb[name][1]).any() for name in sa)]
    assert changed == [4, 8, 12, 16]
    assert {name: int(mask.sum()) for name, mask in wrappers.get_masks(model).items()} == counts


# ----------------------------------------------------------------------------------------
# Bad inputs, refused before training.


@pytest.mark.parametrize("kwargs, match", [
    ({"drop_fraction": 0.0}, "drop_fraction must be a number in"),
    ({"drop_fraction": 1.0}, "drop_fraction must be a number in"),
    ({"drop_fraction": -0.1}, "drop_fraction must be a number in"),
    ({"frequency": 0}, "frequency"),
    ({"decay": "linear"}, "decay must be one of"),
    ({"end_step": 0}, "must come after begin_step"),
    ({"end_step": None, "total_steps": None}, "pass total_steps"),
])
def test_bad_arguments_raise(kwargs, match):
    arguments = {"total_steps": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        mu.get("rigl", **arguments)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown mask updater 'sett'.*\['rigl', 'set', 'snfs'\]"):
        mu.get("sett", total_steps=100)
    assert isinstance(mu.get("RigL", total_steps=100), mu.RigL)


def _fit_refused(model, callback, match, error=ValueError):
    x, y = tiny.make_data(64)
    with pytest.raises(error, match=match):
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[callback])
    assert int(model.optimizer.iterations.numpy()) == 0  # not a single step was taken


def test_snfs_refuses_an_optimizer_without_momentum_before_training():
    model = _sparse(tiny.build_dense(), optimizer=keras.optimizers.SGD(0.05))
    callback = mu.MaskUpdateCallback(mu.SNFS(total_steps=100), tiny.make_data(32))
    _fit_refused(model, callback, "SNFS regrows by momentum, and the optimizer SGD has none")
    assert mu.optimizer_momentum(keras.optimizers.legacy.SGD(0.1, momentum=0.8)) == 0.8
    assert mu.optimizer_momentum(keras.optimizers.Adam(beta_1=0.85)) == 0.85
    assert mu.optimizer_momentum(keras.optimizers.RMSprop()) is None


def test_misaligned_steps_per_execution_is_refused_before_training():
    model = _sparse(tiny.build_dense(), steps_per_execution=3)
    _fit_refused(model, mu.MaskUpdateCallback(mu.SET(total_steps=100, frequency=4)), "steps_per_execution=3")


def test_rigl_without_data_and_tfmot_wrappers_are_refused():
    with pytest.raises(ValueError, match="takes gradients on batches"):
        mu.MaskUpdateCallback(mu.RigL(total_steps=100))
    with pytest.raises(TypeError, match="must be a MaskUpdater"):
        mu.MaskUpdateCallback("rigl")
    import tensorflow_model_optimization as tfmot

    foreign = tfmot.sparsity.keras.prune_low_magnitude(tiny.build_dense())
    tiny.compile_model(foreign)
    with pytest.raises(TypeError, match="tfmot's prune_low_magnitude"):
        mu.SET(total_steps=100).update(foreign, 100)


def test_tfmot_update_pruning_step_is_refused():
    import tensorflow_model_optimization as tfmot

    model = _sparse(tiny.build_dense(), schedule=None)
    x, y = tiny.make_data(64)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), mu.MaskUpdateCallback(mu.SET(total_steps=8, frequency=2))]
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x, y, batch_size=16, verbose=0, callbacks=callbacks)
