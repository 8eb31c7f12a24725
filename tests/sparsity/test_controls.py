"""Tests of controls.py: random_reinit, random_prune, signed_constant, start_round."""

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import controls
from keras_lottery.sparsity import wrappers

RewindCallback = kl.RewindCallback


def trained_ticket(tiny, builder="build_conv", sparsity=0.6, optimizer=None):
    """A pruned model trained a few steps with a RewindCallback(0) snapshot, then pruned."""
    build = getattr(tiny, builder)
    model = tiny.compile_model(kl.prune_low_magnitude(build()), optimizer or keras.optimizers.Adam(1e-2))
    shape = (8, 8, 1) if builder == "build_conv" else (8, 8)
    x, y = tiny.make_data(64, shape)
    rewind = RewindCallback(0)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[rewind])
    kl.prune(model, sparsity)
    return model, rewind


def kernels(model):
    return {name: weight.numpy().copy() for name, _, weight, _ in wrappers.pruning_entries(model)}


def non_kernel_variables(model):
    kernel_ids = {id(weight) for _, _, weight, _ in wrappers.pruning_entries(model)}
    return [(v.name, v.numpy().copy()) for v in RewindCallback.rewindable_variables(model) if id(v) not in kernel_ids]


# ----------------------------------------------------------------------------------------
# random_reinit.


def test_random_reinit_keeps_masks_and_draws_new_survivors(tiny):
    model, _ = trained_ticket(tiny)
    masks = kl.get_masks(model)
    before = kernels(model)
    controls.random_reinit(model, seed=1)
    after = kernels(model)
    for name, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[name])
        assert np.all(after[name][mask == 0] == 0.0)
        survivors_changed = after[name][mask == 1] != before[name][mask == 1]
        assert survivors_changed.mean() > 0.99, name
    # Other variables come from their own initializers: zero biases, BatchNorm at its defaults.
    values = dict(non_kernel_variables(model))
    for name, value in values.items():
        if "bias" in name or "beta" in name or "moving_mean" in name:
            assert np.all(value == 0.0), name
        elif "gamma" in name or "moving_variance" in name:
            assert np.all(value == 1.0), name
    assert any("gamma" in n for n in values) and any("bias" in n for n in values)


def test_random_reinit_is_seeded(tiny):
    model, _ = trained_ticket(tiny)
    controls.random_reinit(model, seed=7)
    first = kernels(model)
    controls.random_reinit(model, seed=7)
    again = kernels(model)
    controls.random_reinit(model, seed=8)
    other = kernels(model)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
    # Same seed on a separately built model with the same masks: same weights.
    twin = kl.prune_low_magnitude(tiny.build_conv(seed=123))
    kl.set_masks(twin, kl.get_masks(model))
    controls.random_reinit(twin, seed=7)
    for name, value in kernels(twin).items():
        np.testing.assert_array_equal(value, first[name])


@pytest.mark.parametrize(
    "initializer, std",
    [
        ("glorot_uniform", np.sqrt(2.0 / (784 + 300))),
        ("glorot_normal", np.sqrt(2.0 / (784 + 300))),
        ("he_normal", np.sqrt(2.0 / 784)),
    ],
)
def test_random_reinit_draws_from_the_layer_initializer(initializer, std):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Flatten(),
        keras.layers.Dense(300, kernel_initializer=initializer, name="big"),
    ])
    pruned = kl.prune_low_magnitude(model)
    kl.prune(pruned, 0.5)
    big = pruned.get_layer("prune_low_magnitude_big").layer
    big.kernel.assign(big.kernel * 50.0)  # far from the initial distribution
    controls.random_reinit(pruned, seed=3)
    mask = kl.get_masks(pruned)["big"]
    survivors = big.kernel.numpy()[mask == 1]
    assert survivors.size == 117600
    assert np.std(survivors) == pytest.approx(std, rel=0.02)
    assert abs(np.mean(survivors)) < 0.05 * std
    if initializer == "glorot_uniform":
        assert np.abs(survivors).max() <= np.sqrt(3.0) * std + 1e-7
    assert np.all(big.kernel.numpy()[mask == 0] == 0.0)


def test_random_reinit_without_an_initializer_raises():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.w

    model = keras.Sequential([keras.layers.InputLayer(input_shape=(3,)), Scale(name="scale"), keras.layers.Dense(2, name="d")])
    pruned = kl.prune_low_magnitude(model, pruning_schedule={"d": kl.OneShot(0.5)})
    with pytest.raises(ValueError, match="initializer"):
        controls.random_reinit(pruned, seed=0)


# ----------------------------------------------------------------------------------------
# random_prune.


def test_random_prune_keeps_counts_and_moves_positions(tiny):
    model, _ = trained_ticket(tiny)
    old = kl.get_masks(model)
    controls.random_prune(model, seed=11)
    new = kl.get_masks(model)
    assert list(new) == list(old)
    for name in old:
        assert new[name].sum() == old[name].sum(), name
        assert not np.array_equal(new[name], old[name]), name
    for name, (weight, mask) in tiny.raw_kernels(model).items():
        assert np.all(weight[mask == 0] == 0.0)
    # Seeded: the same seed gives the same masks, another seed other masks.
    controls.random_prune(model, seed=11)
    for name, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, new[name])
    controls.random_prune(model, seed=12)
    assert not np.array_equal(kl.get_masks(model)["out"], new["out"])


def test_random_prune_is_not_magnitude_pruning(tiny):
    model, _ = trained_ticket(tiny, builder="build_dense", sparsity=0.5)
    old = kl.get_masks(model)["fc1"]
    controls.random_prune(model, seed=0)
    new = kl.get_masks(model)["fc1"]
    overlap = float((new * old).sum() / old.sum())
    assert 0.35 < overlap < 0.65  # independent of the magnitude mask: about half overlap


def test_start_round_random_prune_uses_snapshot_at_new_positions(tiny):
    model, rewind = trained_ticket(tiny)
    old = kl.get_masks(model)
    controls.start_round(model, "random_prune", rewind, seed=5)
    new = kl.get_masks(model)
    snapshot = rewind.snapshot_kernels(model)
    for name, value in kernels(model).items():
        assert not np.array_equal(new[name], old[name])
        assert new[name].sum() == old[name].sum()
        np.testing.assert_array_equal(value, snapshot[name] * new[name])
    assert int(model.optimizer.iterations.numpy()) == 0


def test_random_prune_with_a_fully_pruned_layer(tiny):
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(1,)), keras.layers.Dense(1, name="a"),
                              keras.layers.Dense(4, name="b")])
    pruned = kl.prune_low_magnitude(model)
    kl.prune(pruned, 0.6)  # a layer keeps at least one weight (masks.keep_count): "a" is emptied by hand
    assert {n: int(m.sum()) for n, m in kl.get_masks(pruned).items()} == {"a": 1, "b": 2}
    kl.set_masks(pruned, {"a": np.zeros((1, 1)), "b": kl.get_masks(pruned)["b"]})
    controls.random_prune(pruned, seed=0)
    assert {n: int(m.sum()) for n, m in kl.get_masks(pruned).items()} == {"a": 0, "b": 2}


# ----------------------------------------------------------------------------------------
# signed_constant and start_round.


def test_signed_constant(tiny):
    model, rewind = trained_ticket(tiny)
    masks = kl.get_masks(model)
    snapshot = rewind.snapshot_kernels(model)
    controls.start_round(model, "signed_constant", rewind, seed=0)
    for name, value in kernels(model).items():
        reference = snapshot[name]
        expected = (np.sign(reference) * np.std(reference)).astype(np.float32)
        assert np.all(value[masks[name] == 0] == 0.0)
        np.testing.assert_array_equal(value[masks[name] == 1], expected[masks[name] == 1])
        assert len(np.unique(np.abs(value[masks[name] == 1]))) == 1
    snapshot_rest = dict(
        (v.name, s) for v, s in zip(RewindCallback.rewindable_variables(model), rewind.snapshot)
    )
    for name, value in non_kernel_variables(model):
        np.testing.assert_array_equal(value, snapshot_rest[name], err_msg=name)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_signed_constant_direct_call_uses_full_kernel_std(tiny):
    model = kl.prune_low_magnitude(tiny.build_dense())
    kl.set_masks(model, {"fc1": np.eye(64, 16, dtype=np.float32), "out": np.ones((16, 10), np.float32)})
    reference = {"fc1": np.arange(-512, 512, dtype=np.float32).reshape(64, 16), "out": -np.ones((16, 10))}
    controls.signed_constant(model, reference)
    fc1 = kernels(model)["fc1"]
    std = np.std(reference["fc1"])
    np.testing.assert_array_equal(np.diag(fc1[:16]), np.float32(np.sign(np.diag(reference["fc1"][:16])) * std))
    assert np.count_nonzero(fc1) == 16
    np.testing.assert_array_equal(kernels(model)["out"], np.zeros((16, 10)))  # std of a constant kernel is 0


def test_start_round_ticket_equals_rewind(tiny):
    model, rewind = trained_ticket(tiny, optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    rewind.rewind(model)
    expected = [v.numpy().copy() for v in RewindCallback.rewindable_variables(model)]
    # Move everything away again, then start the round.
    for variable in RewindCallback.rewindable_variables(model):
        variable.assign(variable + 1.0)
    model.optimizer.iterations.assign(17)
    controls.start_round(model, "ticket", rewind, seed=0)
    for variable, value in zip(RewindCallback.rewindable_variables(model), expected):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.name)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_start_round_random_reinit_resets_optimizer(tiny):
    model, rewind = trained_ticket(tiny)
    masks = kl.get_masks(model)
    snapshot = rewind.snapshot_kernels(model)
    controls.start_round(model, "random_reinit", rewind, seed=4)
    assert int(model.optimizer.iterations.numpy()) == 0
    for variable in model.optimizer.variables:
        assert np.all(variable.numpy() == 0), variable.name
    for name, value in kernels(model).items():
        assert np.all(value[masks[name] == 0] == 0.0)
        assert not np.array_equal(value, snapshot[name] * masks[name])


@pytest.mark.parametrize("control", ["shuffle", "Ticket", None, ""])
def test_unknown_control_raises(tiny, control):
    with pytest.raises(ValueError, match="control"):
        controls.check_control(control)
    model = kl.prune_low_magnitude(tiny.build_dense())
    with pytest.raises(ValueError, match="control"):
        controls.start_round(model, control, RewindCallback(0), seed=0)
