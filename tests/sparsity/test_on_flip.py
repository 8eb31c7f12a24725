"""Tests of on_flip.py and schedules.OnFlip: weights pruned as their signs flip, capped, then filled."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_callbacks as tfmot_callbacks

import keras_lottery
from keras_lottery import keras
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import on_flip
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import wrappers


def _planted(kernel, schedule, criterion="hybrid", **kwargs):
    """(model, wrapper) of one sign-flip-wrapped Dense layer 'd' (no bias) holding `kernel`, reference its signs."""
    kernel = np.asarray(kernel, np.float32)
    wrapper = keras_lottery.prune_low_sign_flip(keras.layers.Dense(kernel.shape[1], use_bias=False, name="d"),
                                                pruning_schedule=schedule, criterion=criterion, **kwargs)
    inputs = keras.Input((kernel.shape[0],))
    model = keras.Model(inputs, wrapper(inputs))
    wrappers.manage_masks(model)  # the checks are called by hand here
    wrapper.pruning_vars[0][0].assign(kernel)
    wrapper.reset_reference()
    return model, wrapper


def _play(wrapper, *kernels):
    """Training moves the kernel through `kernels` (pruned weights stay 0), a training call after each."""
    weight, mask, _ = wrapper.pruning_vars[0]
    for value in kernels:
        weight.assign(np.asarray(value, np.float32) * mask.numpy())
        wrapper(np.zeros((1, weight.shape[0]), np.float32), training=True)


def _mask(model):
    return keras_lottery.get_masks(model)["d"]


def test_flipped_weights_are_pruned_at_each_check_capped_at_the_target():
    # 8 weights, target 75%: 2 stay. Checks at 10, 15, 20; hybrid: |w| / (1 + flips).
    model, wrapper = _planted(np.ones((2, 4)), schedules.OnFlip(0.75, begin_step=10, frequency=5, updates=2))
    _play(wrapper, [[-0.5, 1, -2, 1], [1, 1, 1, 0.3]])  # two flips: both go (the cap allows 6)
    assert on_flip.prune(model, 10, ["d"]) == {"d": {"pruned_for_flips": 2, "filled": 0, "kept": 6}}
    np.testing.assert_array_equal(_mask(model), [[0, 1, 0, 1], [1, 1, 1, 1]])
    # Five more flip; the cap allows 4: the flipped weight of the largest score, (0, 3) at 3 / 2, stays, while
    # the unflipped (1, 2) at 1.0 stays too although its magnitude is below (0, 3)'s.
    _play(wrapper, [[0, -0.4, 0, -3], [-0.2, -0.9, 1, -0.3]])
    assert on_flip.prune(model, 15, ["d"])["d"] == {"pruned_for_flips": 4, "filled": 0, "kept": 2}
    np.testing.assert_array_equal(_mask(model), [[0, 0, 0, 1], [0, 0, 1, 0]])
    _play(wrapper, [[0, 0, 0, -3], [0, 0, -1, 0]])  # (1, 2) flips now, but the layer is at its target
    assert on_flip.prune(model, 20, ["d"])["d"] == {"pruned_for_flips": 0, "filled": 0, "kept": 2}
    np.testing.assert_array_equal(_mask(model), [[0, 0, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(wrapper.pruning_vars[0][0].numpy(), [[0, 0, 0, -3], [0, 0, -1, 0]])
    history = on_flip.history(model)["d"]
    assert [check["iteration"] for check in history["checks"]] == [10, 15, 20]
    assert (history["pruned_for_flips"], history["filled"], history["target_reached_iteration"]) == (6, 0, 15)


def test_the_last_check_fills_the_target_after_the_flipped_weights():
    # 8 weights, target 50%: 4 stay. sign_flip ranks the unflipped by |w|.
    model, wrapper = _planted(np.ones((2, 4)), schedules.OnFlip(0.5, begin_step=10, frequency=5, updates=1),
                              criterion="sign_flip")
    _play(wrapper, [[1, 1, 1, 1], [1, -1, 1, 1]])
    assert on_flip.prune(model, 10, ["d"])["d"] == {"pruned_for_flips": 1, "filled": 0, "kept": 7}
    # (0, 0) flips with the largest |w| of all: it still goes first; then the two smallest unflipped, 0.05 and 0.2.
    _play(wrapper, [[-0.95, 0.5, 0.2, 0.9], [0.3, 0, 0.7, 0.05]])
    assert on_flip.prune(model, 15, ["d"])["d"] == {"pruned_for_flips": 1, "filled": 2, "kept": 4}
    np.testing.assert_array_equal(_mask(model), [[0, 1, 0, 1], [1, 0, 1, 0]])
    assert on_flip.history(model)["d"]["target_reached_iteration"] == 15


def test_min_flips_counts_sign_changes_not_the_sign_now():
    # Weight 0 flips and flips back (2 changes, its sign as the reference's); weight 1 flips once.
    model, wrapper = _planted(np.ones((1, 4)), schedules.OnFlip(0.5, 10, 5, 1, min_flips=2))
    _play(wrapper, [[-1, -1, 1, 1]], [[1, -1, 1, 1]])
    assert on_flip.prune(model, 10, ["d"])["d"]["pruned_for_flips"] == 1
    np.testing.assert_array_equal(_mask(model), [[0, 1, 1, 1]])
    # At the fill, hybrid scores |w| / (1 + flips): weight 1 0.8 / 2 = 0.4 < weight 3's 0.5 < weight 2's 0.6.
    _play(wrapper, [[0, -0.8, 0.6, 0.5]])
    assert on_flip.prune(model, 15, ["d"])["d"] == {"pruned_for_flips": 0, "filled": 1, "kept": 2}
    np.testing.assert_array_equal(_mask(model), [[0, 0, 1, 1]])


def test_global_strategy_caps_the_layers_together():
    kernel_a, kernel_b = np.ones((1, 4), np.float32), np.ones((1, 4), np.float32)
    inputs = keras.Input((1,))
    schedule = schedules.OnFlip(0.5, 10, 5, 1)
    layers = [keras.layers.Dense(4, use_bias=False, name=name) for name in ("a", "b")]
    model = keras_lottery.prune_low_sign_flip(keras.Model(inputs, [layers[0](inputs), layers[1](inputs)]),
                                              pruning_schedule=schedule, criterion="hybrid", strategy="global")
    wrappers.manage_masks(model)
    found = wrappers.prunable_wrappers(model)
    for wrapper, kernel in zip(found, (kernel_a, kernel_b)):
        wrapper.pruning_vars[0][0].assign(kernel)
    sign_flip.reset_reference(model)
    # Five flips in all, 4 may go (8 weights, 4 stay): all of a's but its largest, and b's one, by 1 / 2 first.
    for wrapper, value in zip(found, ([[-0.1, -0.2, -0.3, -0.9]], [[-0.4, 1, 1, 1]])):
        wrapper.pruning_vars[0][0].assign(np.asarray(value, np.float32))
    record = on_flip.prune(model, 10, ["a", "b"], strategy="global")
    assert record == {"a": {"pruned_for_flips": 3, "filled": 0, "kept": 1},
                      "b": {"pruned_for_flips": 1, "filled": 0, "kept": 3}}
    history = on_flip.history(model)
    assert history["a"]["target_reached_iteration"] == history["b"]["target_reached_iteration"] == 10


def _gradual_keep(size, target_sparsity, check, updates):
    """Zhu & Gupta's cubic schedule in closed form: weights kept at the `check`-th of `updates` updates."""
    sparsity = target_sparsity * (1 - (1 - check / updates) ** 3)
    return int(np.floor(size * (1 - sparsity) + 0.5))


def test_the_gradual_floor_prunes_by_the_criterion_after_the_hits_down_to_the_gradual_count():
    # 20 weights, target 75%: 5 stay. Checks at 10, 15, 20, 25 (updates 3); the cubic keeps 20, 9, 6, 5.
    schedule = schedules.OnFlip(0.75, begin_step=10, frequency=5, updates=3, floor="gradual")
    assert [_gradual_keep(20, 0.75, k, 3) for k in range(4)] == [20, 9, 6, 5]
    magnitudes = (np.random.default_rng(0).permutation(20) + 1.0).reshape(2, 10) / 10  # 0.1 .. 2.0, distinct
    model, wrapper = _planted(np.ones((2, 10)), schedule)
    flipped = np.zeros((2, 10), bool)

    def check(step, flip, expected):
        flipped.flat[flip] = True
        alive = _mask(model).astype(bool)
        _play(wrapper, np.where(flipped, -magnitudes, magnitudes))
        assert on_flip.prune(model, step, ["d"])["d"] == expected, step
        # The independent recount: hits go first, by |w| / 2 (each flipped once), then unflipped by |w|.
        score = np.where(flipped, magnitudes / 2 - 100, magnitudes).ravel()
        survivors = [i for i in np.argsort(-score, kind="stable") if alive.flat[i]][:expected["kept"]]
        np.testing.assert_array_equal(_mask(model).ravel(), np.isin(np.arange(20), survivors), err_msg=str(step))

    # One flip: it goes; the floor keeps all 20 at the first check, so nothing else goes.
    check(10, [3], {"pruned_for_flips": 1, "filled": 0, "kept": 19})
    # Two flips leave 17 > 9: the floor binds and the 8 smallest unflipped go after the two hits.
    check(15, [5, 12], {"pruned_for_flips": 2, "filled": 8, "kept": 9})
    # Five of the 9 survivors flip, more than the floor's 3: only hits go, 4 of them (the target keeps 5).
    alive = np.flatnonzero(_mask(model))
    check(20, alive[:5], {"pruned_for_flips": 4, "filled": 0, "kept": 5})
    check(25, [], {"pruned_for_flips": 0, "filled": 0, "kept": 5})
    history = on_flip.history(model)["d"]
    assert (history["pruned_for_flips"], history["filled"], history["target_reached_iteration"]) == (7, 8, 20)


def test_the_gradual_floor_binds_a_global_ranking_over_the_layers_together():
    # Two layers of 10, target 50% of the 20 together: the cubic (updates 2) keeps 20, 11, 10. No weight flips:
    # the floor alone prunes the 9 smallest |w| of both layers at the second check.
    inputs = keras.Input((1,))
    layers = [keras.layers.Dense(10, use_bias=False, name=name) for name in ("a", "b")]
    model = keras_lottery.prune_low_sign_flip(keras.Model(inputs, [layers[0](inputs), layers[1](inputs)]),
                                              pruning_schedule=schedules.OnFlip(0.5, 0, 5, 2, floor="gradual"),
                                              criterion="hybrid", strategy="global")
    wrappers.manage_masks(model)
    assert [_gradual_keep(20, 0.5, k, 2) for k in range(3)] == [20, 11, 10]
    magnitudes = (np.random.default_rng(1).permutation(20) + 1.0) / 10
    for wrapper, values in zip(wrappers.prunable_wrappers(model), (magnitudes[:10], magnitudes[10:])):
        wrapper.pruning_vars[0][0].assign(values[None, :].astype(np.float32))
    sign_flip.reset_reference(model)
    assert {n: r["kept"] for n, r in on_flip.prune(model, 0, ["a", "b"], strategy="global").items()} == {
        "a": 10, "b": 10}
    record = on_flip.prune(model, 5, ["a", "b"], strategy="global")
    masks = keras_lottery.get_masks(model)
    kept = np.concatenate([masks["a"].ravel(), masks["b"].ravel()])
    np.testing.assert_array_equal(kept, magnitudes >= np.sort(magnitudes)[9])  # the 11 largest of the 20
    assert sum(r["filled"] for r in record.values()) == 9 and sum(r["pruned_for_flips"] for r in record.values()) == 0


def _expected_check(weights, counts, masks, sizes, schedule, final, alpha, floor_keep=None):
    """An independent recount of one check (a sort, not masks.compute): dict name -> expected mask.

    `floor_keep`: dict name -> the most a layer may keep at this check (the gradual floor), or None.
    """
    expected = {}
    for name, weight in weights.items():
        alive = masks[name].ravel() > 0
        hit = alive & (counts[name].ravel() >= schedule.min_flips)
        score = np.abs(weight.ravel()) / (1.0 + counts[name].ravel()) ** alpha
        target = int(np.floor(sizes[name] * (1 - schedule.target_sparsity) + 0.5))
        wanted = int(alive.sum() - hit.sum())
        if floor_keep is not None:
            wanted = min(wanted, floor_keep[name])
        keep = target if final else max(target, wanted)
        # Dead weights last, then hits, then by score; among equals the lower index survives.
        order = np.lexsort((np.arange(score.size), -score, hit, ~alive))
        mask = np.zeros(score.size, np.float32)
        mask[order[:keep]] = 1
        expected[name] = mask.reshape(weight.shape)
    return expected


@pytest.mark.parametrize("floor", ["none", "gradual"])
def test_checks_during_fit_equal_an_independent_recount(tiny, floor):
    alpha = 0.5
    schedule = schedules.OnFlip(0.8, begin_step=4, frequency=4, updates=4, floor=floor)
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(hidden=8), pruning_schedule=schedule,
                                              criterion="hybrid", alpha=alpha)
    tiny.compile_model(model, keras.optimizers.SGD(0.5))  # a large rate: many flips
    entries = wrappers.pruning_entries(model)
    sizes = {name: int(np.size(weight)) for name, _, weight, _ in entries}
    seen = {}

    def before_update(batch, logs):
        step = int(model.optimizer.iterations.numpy())
        if schedule.next_prune_step(step) == step:
            seen[step] = ({name: (weight * mask).numpy() for name, _, weight, mask in entries},
                          sign_flip.flip_counts(model), keras_lottery.get_masks(model))

    def after_update(batch, logs):
        step = int(model.optimizer.iterations.numpy())
        if step in seen and len(seen[step]) == 3:
            seen[step] += (keras_lottery.get_masks(model),)

    x, y = tiny.make_data(112)  # 7 steps an epoch: no check at an epoch start, where UpdateMasks checks earlier
    model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.LambdaCallback(on_train_batch_begin=before_update), keras_lottery.UpdateMasks(),
        keras.callbacks.LambdaCallback(on_train_batch_begin=after_update)])
    assert sorted(seen) == [4, 8, 12, 16, 20]
    history = on_flip.history(model)
    flipped = floored = 0
    for index, step in enumerate(sorted(seen)):
        weights, counts, before, after = seen[step]
        floor_keep = None if floor == "none" else {n: _gradual_keep(size, 0.8, index, 4) for n, size in sizes.items()}
        expected = _expected_check(weights, counts, before, sizes, schedule, step == schedule.end_step, alpha,
                                   floor_keep)
        for name in sizes:
            np.testing.assert_array_equal(after[name], expected[name], err_msg=f"{name} at step {step}")
            assert np.all(after[name] <= before[name])  # masks only shrink
            check = history[name]["checks"][index]
            removed = (before[name] > 0) & (after[name] == 0)
            hit = counts[name] >= schedule.min_flips
            assert (check["iteration"], check["pruned_for_flips"], check["filled"], check["kept"]) == (
                step, int((removed & hit).sum()), int((removed & ~hit).sum()), int(after[name].sum()))
            flipped += check["pruned_for_flips"]
            floored += check["filled"] if step < schedule.end_step else 0
    for name, size in sizes.items():  # the fill: exactly the target count at the end
        assert keras_lottery.get_masks(model)[name].sum() == masks_lib.keep_count(size, 0.8)
    assert flipped > 0  # the test saw weights pruned for flips at all
    assert (floored > 0) == (floor == "gradual")  # ... and, with the floor, weights it pruned before the end


@pytest.mark.parametrize("floor", ["none", "gradual"])
def test_a_resumed_fit_checks_as_an_uninterrupted_one(tiny, floor):
    # The log lives in the model's variables: copying them (as a round backup does) mid-way and training on
    # gives the uninterrupted run's masks, weights and log.
    x, y = tiny.make_data(96)

    def build():
        model = keras_lottery.prune_low_sign_flip(tiny.build_dense(hidden=8), criterion="hybrid",
                                                  pruning_schedule=schedules.OnFlip(0.8, 4, 4, 4, floor=floor))
        return tiny.compile_model(model, keras.optimizers.SGD(0.5))

    whole = build()
    whole.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    first = build()
    first.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    resumed = build()
    resumed.optimizer.build(resumed.trainable_variables)
    for target, source in zip(resumed.weights + resumed.optimizer.variables, first.weights + first.optimizer.variables):
        target.assign(source.numpy())
    resumed.fit(x, y, batch_size=16, initial_epoch=2, epochs=4, shuffle=False, verbose=0,
                callbacks=[keras_lottery.UpdateMasks()])
    for got, want in zip(resumed.weights, whole.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.name)
    assert on_flip.history(resumed) == on_flip.history(whole)


def _fires(schedule, horizon):
    return [step for step in range(horizon) if bool(schedule(tf.constant(step, tf.int64))[0])]


def test_schedule_fires_at_its_checks_and_next_prune_step_agrees():
    schedule = schedules.OnFlip(0.6, begin_step=3, frequency=4, updates=3)
    assert _fires(schedule, 40) == [3, 7, 11, 15] and schedule.end_step == 15
    for step in range(40):
        upcoming = [s for s in _fires(schedule, 40) if s >= step]
        assert schedule.next_prune_step(step) == (upcoming[0] if upcoming else None), step
    assert float(schedule(tf.constant(7, tf.int64))[1]) == pytest.approx(0.6)
    assert [schedule.check_index(s) for s in (3, 7, 15)] == [0, 1, 3]
    with pytest.raises(ValueError, match="not a check"):
        schedule.check_index(8)
    assert _fires(schedules.OnFlip(0.5, 5, 1, 0), 10) == [5]  # no updates after begin: one check, the fill
    rebuilt = schedules.OnFlip(**schedule.get_config()["config"])
    assert rebuilt.get_config() == schedule.get_config() and _fires(rebuilt, 40) == [3, 7, 11, 15]


def test_the_floor_schedule_is_gradual_with_the_same_steps_and_target():
    assert schedules.OnFlip(0.6, 3, 4, 3).floor_schedule() is None
    floored = schedules.OnFlip(0.6, 3, 4, 3, floor="gradual")
    rebuilt = schedules.OnFlip(**floored.get_config()["config"])
    assert rebuilt.floor == "gradual" and rebuilt.get_config() == floored.get_config()
    floor = floored.floor_schedule()
    assert isinstance(floor, schedules.Gradual) and floor.get_config()["config"] == {
        "target_sparsity": 0.6, "begin_step": 3, "frequency": 4, "updates": 3, "power": 3}
    for check, step in enumerate((3, 7, 11, 15)):
        assert floor.exact_sparsity(step) == pytest.approx(0.6 * (1 - (1 - check / 3) ** 3))
    # A single check: the floor is the target there (one pass's OneShot for an empty window).
    assert schedules.OnFlip(0.6, 5, 1, 0, floor="gradual").floor_schedule().exact_sparsity(5) == 0.6
    # A schedule saved before the field (its config has no 'floor') loads as floor 'none'.
    old = {key: value for key, value in floored.get_config()["config"].items() if key != "floor"}
    assert schedules.OnFlip(**old).floor == "none"


def test_a_saved_model_keeps_its_check_log(tiny, tmp_path):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(hidden=8), criterion="hybrid",
                                              pruning_schedule=schedules.OnFlip(0.5, 2, 2, 1))
    tiny.compile_model(model, keras.optimizers.SGD(0.5))
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"), custom_objects=keras_lottery.custom_objects())
    assert on_flip.history(loaded) == on_flip.history(model) and len(on_flip.history(model)["fc1"]["checks"]) == 2


@pytest.mark.parametrize("size", [1, 2, 3, 7, 10, 99, 1000, 266_200, 4_194_304, 23_000_000])
def test_sparsity_keeping_gives_back_the_count(size):
    keeps = sorted({1, 2, size // 3, size // 2, size - 1, size} | set(np.random.default_rng(size).integers(
        1, size + 1, 200).tolist()))
    for keep in [k for k in keeps if 1 <= k <= size]:
        assert masks_lib.keep_count(size, masks_lib.sparsity_keeping(size, keep)) == keep, (size, keep)


@pytest.mark.parametrize("kwargs, message", [
    ({"min_flips": 0}, "min_flips"),
    ({"min_flips": 1.5}, "min_flips"),
    ({"updates": -1}, "updates"),
    ({"frequency": 0}, "frequency"),
    ({"target_sparsity": 1.0}, "target_sparsity"),
])
def test_bad_schedule_arguments_are_refused(kwargs, message):
    settings = {**dict(target_sparsity=0.5, begin_step=0, frequency=1, updates=1), **kwargs}
    with pytest.raises(ValueError, match=message):
        schedules.OnFlip(**settings)
    with pytest.raises(TypeError, match="fill"):
        schedules.OnFlip(0.5, 0, 1, 1, fill="yes")
    with pytest.raises(ValueError, match=r"floor must be one of \('none', 'gradual'\).*got 'cubic'"):
        schedules.OnFlip(0.5, 0, 1, 1, floor="cubic")


def test_on_flip_on_a_magnitude_wrapper_fails_before_training(tiny):
    model = keras_lottery.prune_low_magnitude(tiny.build_dense(), pruning_schedule=schedules.OnFlip(0.5, 2, 2, 1))
    tiny.compile_model(model)
    before = [w.numpy().copy() for w in model.weights]
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="counts no flips.*prune_low_sign_flip"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    for value, weight in zip(before, model.weights):
        np.testing.assert_array_equal(value, weight.numpy())


def test_on_flip_with_a_pattern_is_refused_before_training(tiny):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OnFlip(0.5, 2, 2, 1),
                                              block_size=(1, 2))
    tiny.compile_model(model)
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="block or m-by-n pattern"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_lottery.UpdateMasks()])


def test_tfmot_callback_cannot_drive_on_flip(tiny):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OnFlip(0.5, 2, 2, 1))
    tiny.compile_model(model)
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="OnFlip.*UpdateMasks"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tfmot_callbacks.UpdatePruningStep()])
