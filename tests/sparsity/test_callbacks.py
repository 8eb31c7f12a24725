"""Tests of callbacks.py: RewindCallback, UpdateMasks and reset_optimizer."""

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

RewindCallback = kl.RewindCallback


def variables_now(model):
    return [v.numpy().copy() for v in RewindCallback.rewindable_variables(model)]


def fit_steps(tiny, model, steps, callbacks=(), batch_size=16, shape=(8, 8), epochs=1):
    """Fits `steps` batches per epoch on fixed data, in a fixed order."""
    x, y = tiny.make_data(steps * batch_size, shape)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))


def pruned_dense(tiny, optimizer=None, schedule=None, seed=0):
    # Without a schedule: masks that only prune when a test calls kl.prune (training alone stays dense).
    model = kl.prune_low_magnitude(tiny.build_dense(seed), pruning_schedule=schedule or kl.OneShot(0.0))
    return tiny.compile_model(model, optimizer)


def assert_lists_equal(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# RewindCallback: snapshots.


def test_rewind_step_zero_snapshots_initial_weights(tiny):
    model = pruned_dense(tiny)
    initial = variables_now(model)
    rewind = RewindCallback(0)
    fit_steps(tiny, model, 5, [rewind])
    assert_lists_equal(rewind.snapshot, initial)
    assert not np.array_equal(variables_now(model)[0], initial[0])  # training did move the weights


@pytest.mark.parametrize("rewind_step", [1, 6, 8])
def test_rewind_step_k_snapshots_weights_after_k_steps(tiny, rewind_step):
    """Snapshot at k == the weights of a separate run that trains exactly k steps on the same data."""
    x, y = tiny.make_data(4 * 16)  # 4 batches per epoch: k=6 crosses an epoch, k=8 is the very end
    expected_model = pruned_dense(tiny, keras.optimizers.Adam(1e-2))
    repeated_x, repeated_y = np.concatenate([x, x]), np.concatenate([y, y])
    expected_model.fit(repeated_x[: rewind_step * 16], repeated_y[: rewind_step * 16], batch_size=16, epochs=1,
                       shuffle=False, verbose=0)
    assert int(expected_model.optimizer.iterations.numpy()) == rewind_step
    expected = variables_now(expected_model)

    model = pruned_dense(tiny, keras.optimizers.Adam(1e-2))
    rewind = RewindCallback(rewind_step)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[rewind])
    assert rewind.snapshot is not None
    assert_lists_equal(rewind.snapshot, expected)
    assert not np.array_equal(rewind.snapshot[0], variables_now(pruned_dense(tiny))[0])


def test_rewind_snapshot_matches_weights_recorded_at_step_k(tiny):
    model = pruned_dense(tiny, keras.optimizers.SGD(0.05, momentum=0.9))
    rewind = RewindCallback(3)
    recorder = tiny.StepRecorder(variables_now, at="end")
    fit_steps(tiny, model, 6, [rewind, recorder])
    recorded = dict(recorder.log)
    assert_lists_equal(rewind.snapshot, recorded[3])
    assert not np.array_equal(rewind.snapshot[0], recorded[4][0])


def test_rewind_before_snapshot_raises(tiny):
    model = pruned_dense(tiny)
    rewind = RewindCallback(10)
    with pytest.raises(RuntimeError, match="rewind_step=10"):
        rewind.rewind(model)
    fit_steps(tiny, model, 3, [rewind])  # never reaches step 10
    assert rewind.snapshot is None
    with pytest.raises(RuntimeError):
        rewind.rewind()


@pytest.mark.parametrize("rewind_step", [-1, 1.5, 2.0, "3", True, None])
def test_bad_rewind_step_raises(rewind_step):
    with pytest.raises(ValueError, match="rewind_step"):
        RewindCallback(rewind_step)


def test_numpy_integer_rewind_step_is_accepted():
    assert RewindCallback(np.int64(4)).rewind_step == 4


def test_rewindable_variables_exclude_pruning_bookkeeping(tiny):
    model = pruned_dense(tiny)
    names = [v.name for v in RewindCallback.rewindable_variables(model)]
    assert len(names) == 4  # fc1 kernel/bias, out kernel/bias
    assert not any("mask" in n or "threshold" in n or "pruning_step" in n for n in names)
    assert len(model.weights) == 4 + 2 * 3


# ----------------------------------------------------------------------------------------
# RewindCallback: rewinding.


def test_rewind_restores_survivors_zeroes_pruned_and_resets_optimizer(tiny):
    keras.utils.set_random_seed(0)
    model = kl.prune_low_magnitude(tiny.build_conv())
    tiny.compile_model(model, keras.optimizers.Adam(0.0123))
    rewind = RewindCallback(2)
    fit_steps(tiny, model, 6, [rewind], shape=(8, 8, 1))
    snapshot = [value.copy() for value in rewind.snapshot]
    masks = kl.prune(model, 0.6)
    fit_steps(tiny, model, 3, [], shape=(8, 8, 1))
    optimizer = model.optimizer
    assert int(optimizer.iterations.numpy()) == 9
    assert any(np.any(v.numpy() != 0) for v in optimizer.variables if "iteration" not in v.name)

    rewind.rewind()

    by_position = dict(zip([id(v) for v in RewindCallback.rewindable_variables(model)], snapshot))
    kernels = {id(weight): name for name, _, weight, _ in wrappers.pruning_entries(model)}
    for variable in RewindCallback.rewindable_variables(model):
        value, reference = variable.numpy(), by_position[id(variable)]
        if id(variable) in kernels:
            mask = masks[kernels[id(variable)]]
            np.testing.assert_array_equal(value[mask == 1], reference[mask == 1])
            assert np.all(value[mask == 0] == 0.0)
        else:  # biases, BatchNorm gamma/beta/moving statistics
            np.testing.assert_array_equal(value, reference, err_msg=variable.name)
    names = [v.name for v in RewindCallback.rewindable_variables(model)]
    assert any("moving_mean" in n for n in names) and any("bias" in n for n in names)
    assert int(optimizer.iterations.numpy()) == 0
    for variable in optimizer.variables:
        assert np.all(variable.numpy() == 0), variable.name
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.0123, rel=1e-6)
    np.testing.assert_array_equal(kl.get_masks(model)["conv1"], masks["conv1"])  # masks untouched


def test_rewind_without_optimizer_reset_keeps_state(tiny):
    model = pruned_dense(tiny, keras.optimizers.SGD(0.05, momentum=0.9))
    rewind = RewindCallback(0)
    fit_steps(tiny, model, 3, [rewind])
    rewind.rewind(reset_optimizer_state=False)
    assert int(model.optimizer.iterations.numpy()) == 3
    assert_lists_equal(variables_now(model), rewind.snapshot)


def test_rewind_state_round_trip(tiny):
    model = pruned_dense(tiny)
    rewind = RewindCallback(0)
    fit_steps(tiny, model, 3, [rewind])
    restored = RewindCallback(0)
    restored.load_state(dict(rewind.state()))
    kl.prune(model, 0.5)
    restored.rewind(model)
    mask_of = {id(weight): mask.numpy() for _, _, weight, mask in wrappers.pruning_entries(model)}
    assert len(mask_of) == 2
    for variable, reference in zip(RewindCallback.rewindable_variables(model), rewind.snapshot):
        expected = reference * mask_of[id(variable)] if id(variable) in mask_of else reference
        np.testing.assert_array_equal(variable.numpy(), expected)
    kernels = restored.snapshot_kernels(model)
    assert sorted(kernels) == ["fc1", "out"]
    np.testing.assert_array_equal(kernels["out"], rewind.snapshot[2])


def test_rewind_to_a_different_model_raises(tiny):
    model = pruned_dense(tiny)
    rewind = RewindCallback(0)
    fit_steps(tiny, model, 1, [rewind])
    other = kl.prune_low_magnitude(tiny.build_conv())
    with pytest.raises(ValueError):
        rewind.rewind(other)


# ----------------------------------------------------------------------------------------
# reset_optimizer.


@pytest.mark.parametrize(
    "make",
    [lambda: keras.optimizers.SGD(0.03, momentum=0.9), lambda: keras.optimizers.Adam(0.03),
     lambda: keras.optimizers.legacy.SGD(0.03, momentum=0.9)],
    ids=["sgd_momentum", "adam", "legacy_sgd_momentum"],
)
def test_reset_optimizer(tiny, make):
    model = tiny.compile_model(tiny.build_dense(), make())
    fit_steps(tiny, model, 3)
    optimizer = model.optimizer
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    slots = [v for v in variables if "iter" not in v.name]
    assert slots and all(np.any(v.numpy() != 0) for v in slots if v.shape.rank)
    kl.reset_optimizer(optimizer)
    assert int(optimizer.iterations.numpy()) == 0
    for variable in variables:
        assert np.all(variable.numpy() == 0), variable.name
    lr = optimizer.learning_rate
    assert float(lr.numpy() if hasattr(lr, "numpy") else lr) == pytest.approx(0.03, rel=1e-6)
    kl.reset_optimizer(None)  # no-op


# ----------------------------------------------------------------------------------------
# UpdateMasks.


def test_update_masks_batch_hooks_only_while_a_prune_is_pending(tiny):
    model = pruned_dense(tiny, schedule=kl.OneShot(0.5, prune_step=5))
    callback = kl.UpdateMasks()
    callback.set_model(model)
    assert callback._implements_train_batch_hooks() is True
    fit_steps(tiny, model, 8, [callback])
    assert {n: int(m.sum()) for n, m in kl.get_masks(model).items()} == {"fc1": 512, "out": 80}
    assert callback._implements_train_batch_hooks() is False  # masks applied: nothing pending

    done = pruned_dense(tiny, schedule=kl.OneShot(0.5, prune_step=0))
    first = kl.UpdateMasks()
    first.set_model(done)
    # Step 0 is handled by on_train_begin, so no batch hooks are needed even before the fit.
    assert first._implements_train_batch_hooks() is False
    fit_steps(tiny, done, 2, [first])
    assert {n: int(m.sum()) for n, m in kl.get_masks(done).items()} == {"fc1": 512, "out": 80}
    assert first._implements_train_batch_hooks() is False

    iterative = pruned_dense(tiny, schedule=kl.Iterative(0.5, 2, 2))
    third = kl.UpdateMasks()
    third.set_model(iterative)
    assert third._implements_train_batch_hooks() is True
    fit_steps(tiny, iterative, 3, [third])
    assert third._implements_train_batch_hooks() is True  # round 2 (step 4) still pending
    fit_steps(tiny, iterative, 2, [third])
    assert third._implements_train_batch_hooks() is False
    assert {n: int(m.sum()) for n, m in kl.get_masks(iterative).items()} == {"fc1": 256, "out": 40}


def test_update_masks_without_optimizer_has_no_hooks(tiny):
    callback = kl.UpdateMasks()
    callback.set_model(kl.prune_low_magnitude(tiny.build_dense()))
    assert callback._implements_train_batch_hooks() is False


def test_one_shot_masks_come_from_the_weights_at_the_prune_step(tiny):
    model = pruned_dense(tiny, keras.optimizers.Adam(1e-2), schedule=kl.OneShot(0.7, prune_step=4))
    # Listed before UpdateMasks: records the effective kernels at the start of each step, before any update.
    recorder = tiny.StepRecorder(wrappers.get_weights)
    after = tiny.StepRecorder(kl.get_masks)
    fit_steps(tiny, model, 8, [recorder, kl.UpdateMasks(), after])
    at_step = dict(recorder.log)
    expected = masks_lib.compute({n: np.abs(w) for n, w in at_step[4].items()}, float(np.float32(0.7)))
    masks_at = dict(after.log)
    for name in expected:
        np.testing.assert_array_equal(masks_at[4][name], expected[name])
        np.testing.assert_array_equal(masks_at[3][name], np.ones_like(expected[name]))
        np.testing.assert_array_equal(kl.get_masks(model)[name], expected[name])
    stale = masks_lib.compute({n: np.abs(w) for n, w in at_step[0].items()}, float(np.float32(0.7)))
    assert not np.array_equal(stale["fc1"], expected["fc1"])


def test_update_masks_global_strategy_in_fit(tiny):
    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5), strategy="global")
    tiny.compile_model(model)
    out = model.get_layer("prune_low_magnitude_out").layer
    kernel, bias = out.get_weights()
    out.set_weights([np.sign(kernel) * (10.0 + np.abs(kernel)), bias])  # every |w| of out > every |w| of fc1
    expected = masks_lib.compute({n: np.abs(w) for n, w in wrappers.get_weights(model).items()}, 0.5, "global")
    fit_steps(tiny, model, 2, [kl.UpdateMasks()])
    masks = kl.get_masks(model)
    for name in expected:
        np.testing.assert_array_equal(masks[name], expected[name])
    assert {n: int(m.sum()) for n, m in masks.items()} == {"fc1": 432, "out": 160}


def test_update_masks_mixed_strategies_and_schedules(tiny):
    """Wrappers pruned by name with their own schedules: only firing layers change."""
    model = kl.prune_low_magnitude(
        tiny.build_dense(), pruning_schedule={"fc1": kl.OneShot(0.5, 0), "out": kl.OneShot(0.25, 3)}
    )
    tiny.compile_model(model)
    recorder = tiny.StepRecorder(lambda m: {n: int(v.sum()) for n, v in kl.get_masks(m).items()})
    fit_steps(tiny, model, 5, [kl.UpdateMasks(), recorder])
    assert recorder.log == [(0, {"fc1": 512, "out": 160}), (1, {"fc1": 512, "out": 160}),
                            (2, {"fc1": 512, "out": 160}), (3, {"fc1": 512, "out": 120}),
                            (4, {"fc1": 512, "out": 120})]


def test_update_masks_random_criterion_is_seeded(tiny):
    def run(seed):
        model = pruned_dense(tiny, schedule=kl.OneShot(0.5, 0))
        fit_steps(tiny, model, 1, [kl.UpdateMasks(criterion="random", seed=seed)])
        return kl.get_masks(model)

    first, again, other = run(1), run(1), run(2)
    np.testing.assert_array_equal(first["fc1"], again["fc1"])
    assert not np.array_equal(first["fc1"], other["fc1"])
    assert first["fc1"].sum() == 512


def test_update_masks_unknown_criterion_raises():
    with pytest.raises(ValueError, match="criterion"):
        kl.UpdateMasks(criterion="taylor")


@pytest.mark.parametrize("schedule", [kl.OneShot(0.3, 0), kl.Iterative(0.3, 1, 1)], ids=["oneshot", "iterative"])
def test_update_masks_count_equals_keep_count_of_the_schedule_sparsity(tiny, schedule):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(5,)), keras.layers.Dense(5, name="d")])
    pruned = tiny.compile_model(kl.prune_low_magnitude(model, pruning_schedule=schedule))
    x = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32)
    y = np.zeros(32, np.int32)
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kl.UpdateMasks()])
    assert int(kl.get_masks(pruned)["d"].sum()) == masks_lib.keep_count(25, 0.3) == 18
