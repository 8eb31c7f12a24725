"""Tests of the sign-flip wrapper: exact in-graph flip counts, the criteria, wrapping, errors."""

import numpy as np
import pytest

import keras_lottery
from keras_lottery import keras
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import criteria
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import wrappers
from tests import processes

NEVER = 10**9  # a prune step no test reaches: masks stay all ones


def _wrapped_dense(kernel, **kwargs):
    """A built sign-flip-wrapped Dense layer (no bias) holding `kernel`, reference = `kernel`'s signs."""
    kernel = np.asarray(kernel, np.float32)
    layer = keras.layers.Dense(kernel.shape[1], use_bias=False)
    wrapper = keras_lottery.prune_low_sign_flip(layer, pruning_schedule=schedules.OneShot(0.5, NEVER), **kwargs)
    wrapper(np.zeros((1, kernel.shape[0]), np.float32))
    wrappers.manage_masks(wrapper)  # the tests prune by hand: training calls alone stay dense
    wrapper.pruning_vars[0][0].assign(kernel)
    wrapper.reset_reference()
    return wrapper


def _play(wrapper, trajectory):
    """Assigns each kernel of `trajectory` in turn, with one training call after each."""
    kernel = wrapper.pruning_vars[0][0]
    inputs = np.zeros((1, kernel.shape[0]), np.float32)
    for value in trajectory:
        kernel.assign(np.asarray(value, np.float32))
        wrapper(inputs, training=True)


def test_flip_counts_are_exact_on_a_hand_made_trajectory():
    wrapper = _wrapped_dense([[1, -1, 1], [1, 1, -1]])
    # Per weight: (0,0) + - + + : 2 flips; (0,1) - - + + : 1; (0,2) + + + - : 1 (seen
    # only when read: the last update has had no training call yet); (1,0) goes to 0 and
    # stays: 0 (zero has no sign); (1,1) never: 0; (1,2) - + - + : 3.
    _play(wrapper, [[[-1, -1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, -1]]])
    wrapper.pruning_vars[0][0].assign(np.array([[1, 1, -1], [0, 1, 1]], np.float32))
    kernel = wrapper.pruning_vars[0][0]
    np.testing.assert_array_equal(wrapper.flip_counts(kernel), [[2, 1, 1], [0, 0, 3]])
    np.testing.assert_array_equal(wrapper.flipped(kernel), [[False, True, True], [False, False, True]])


def test_zero_in_between_does_not_count_and_sign_is_remembered_across_it():
    wrapper = _wrapped_dense([[1.0, -2.0]])
    _play(wrapper, [[[0.0, 0.0]], [[-1.0, -1.0]], [[0.0, 0.0]], [[-3.0, 2.0]]])
    np.testing.assert_array_equal(wrapper.flip_counts(wrapper.pruning_vars[0][0]), [[1, 1]])


def test_inference_calls_do_not_count():
    wrapper = _wrapped_dense([[1.0, 1.0]])
    kernel = wrapper.pruning_vars[0][0]
    kernel.assign([[-1.0, -1.0]])
    wrapper(np.zeros((1, 1), np.float32), training=False)
    np.testing.assert_array_equal(wrapper.flip_vars[0][2].numpy(), [[0, 0]])  # the in-graph counter
    np.testing.assert_array_equal(wrapper.flip_counts(kernel), [[1, 1]])  # the pending flip, when read


def test_counts_during_fit_equal_a_python_recount_of_every_step(tiny):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(hidden=8), pruning_schedule=schedules.OneShot(0.5, NEVER))
    tiny.compile_model(model, keras.optimizers.SGD(0.5))  # a large rate: many flips
    wrappers.manage_masks(model)  # dense training on purpose: only the counting is tested
    entries = wrappers.pruning_entries(model)
    trajectory = [[weight.numpy().copy() for _, _, weight, _ in entries]]
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: trajectory.append([w.numpy().copy() for _, _, w, _ in entries]))
    x, y = tiny.make_data(128)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[record])
    counts = sign_flip.flip_counts(model)
    for index, (name, _, _, _) in enumerate(entries):
        signs = np.sign(np.stack([step[index] for step in trajectory]))
        expected = np.zeros(signs.shape[1:], np.int64)
        last = signs[0]
        for sign in signs[1:]:
            expected += (sign * last < 0)
            last = np.where(sign != 0, sign, last)
        np.testing.assert_array_equal(counts[name], expected, err_msg=name)
    assert sum(int(c.sum()) for c in counts.values()) > 0  # the test saw flips at all


def test_sign_flip_masks_prune_the_flipped_weights_first():
    #            flipped: yes   no   yes   no   no   no
    wrapper = _wrapped_dense([[1.0, 1.0, -1.0, 1.0, -1.0, 1.0]])
    _play(wrapper, [[[-0.9, 0.05, 0.7, 0.2, -0.3, 0.4]]])
    masks = keras_lottery.prune(_as_model(wrapper), 0.5)  # 3 of 6 go: both flipped, then the smallest |w|
    np.testing.assert_array_equal(next(iter(masks.values())), [[0, 0, 0, 1, 1, 1]])


def test_more_flips_are_pruned_first_then_smaller_magnitude():
    wrapper = _wrapped_dense([[1.0, 1.0, 1.0, 1.0]])
    # Weight 0 flips three times, weights 1-3 once (1 ends small, 2 large), weight 3 not at all.
    _play(wrapper, [[[-1, -1, -1, 1]], [[1, -0.1, -2, 1]], [[-1, -0.1, -2, 1]]])
    masks = keras_lottery.prune(_as_model(wrapper), 0.5)
    np.testing.assert_array_equal(next(iter(masks.values())), [[0, 0, 1, 1]])


def _as_model(wrapper):
    inputs = keras.Input((wrapper.pruning_vars[0][0].shape[0],))
    return keras.Model(inputs, wrapper(inputs))


def test_sign_flip_score_is_the_documented_formula():
    weights = {"a": np.array([0.5, -2.0, 0.1]), "b": np.array([4.0])}
    state = {"a": {"flip_count": np.array([2, 1, 0]), "flipped": np.array([True, True, False])},
             "b": {"flip_count": np.array([0]), "flipped": np.array([False])}}
    scores = criteria.score("sign_flip", weights, None, state)
    np.testing.assert_allclose(scores["a"], [-2 + 0.5 / 8, -1 + 2.0 / 8, 0.1])
    np.testing.assert_allclose(scores["b"], [4.0])
    assert criteria.get("flip") is criteria.get("sign_flip")


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5])
def test_hybrid_score_is_magnitude_over_one_plus_flips_to_the_alpha(alpha):
    weights = {"a": np.array([0.5, -2.0, 0.1, 3.0])}
    counts = np.array([0, 1, 3, 7])
    state = {"a": {"flip_count": counts, "flipped": counts > 0, "alpha": alpha}}
    np.testing.assert_allclose(criteria.score("hybrid", weights, None, state)["a"],
                               np.abs(weights["a"]) / (1 + counts) ** alpha)


def test_hybrid_prune_uses_the_wrappers_alpha():
    wrapper = _wrapped_dense([[1.0, 1.0, 1.0]], criterion="hybrid", alpha=2.0)
    _play(wrapper, [[[-1, 1, 1]], [[1, 1, 1]], [[1.5, 1, 0.5]]])  # weight 0: 2 flips, score 1.5/9
    masks = keras_lottery.prune(_as_model(wrapper), 1 / 3)
    np.testing.assert_array_equal(next(iter(masks.values())), [[0, 1, 1]])


@pytest.mark.parametrize("builder", ["build_dense", "build_conv", "build_branch"])
def test_wrapping_training_and_strip_on_sequential_and_functional(tiny, builder):
    dense = getattr(tiny, builder)()
    model = keras_lottery.prune_low_sign_flip(dense, pruning_schedule=schedules.OneShot(0.5, 4), criterion="hybrid")
    kinds = {type(w.layer).__name__ for w in wrappers.prunable_wrappers(model)}
    assert kinds <= {"Dense", "Conv2D"} and isinstance(wrappers.prunable_wrappers(model)[0], sign_flip.PruneLowSignFlip)
    if builder == "build_conv":
        assert kinds == {"Dense", "Conv2D"}
    tiny.compile_model(model)
    shape = (8, 8, 1) if builder == "build_conv" else (8, 8)
    x, y = tiny.make_data(64, shape)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    for mask in keras_lottery.get_masks(model).values():
        assert mask.sum() == int(np.floor(mask.size * 0.5 + 0.5))
    assert sign_flip.flip_statistics(model)
    plain = keras_lottery.strip_pruning(model)
    assert not wrappers.prunable_wrappers(plain)
    assert not any("flip" in v.name or "sign" in v.name for v in plain.weights)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # The input model is untouched: still dense, no wrappers.
    assert not wrappers.prunable_wrappers(dense)


def test_reference_rewind_takes_the_snapshot_signs_and_counts_from_there(tiny):
    rewind = keras_lottery.RewindCallback(rewind_step=4)
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, 8),
                                              reference=rewind)
    tiny.compile_model(model, keras.optimizers.SGD(0.5))
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[rewind])  # 4 steps: the snapshot
    wrapper = wrappers.prunable_wrappers(model)[0]
    kernel = wrapper.pruning_vars[0][0]
    np.testing.assert_array_equal(wrapper.flip_vars[0][0].numpy(), np.sign(rewind.snapshot_kernels(model)["fc1"]))
    assert int(wrapper.reference_step.numpy()) == 4
    np.testing.assert_array_equal(wrapper.flip_counts(kernel), 0)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[rewind, keras_lottery.UpdateMasks()])
    assert keras_lottery.get_masks(model)["fc1"].mean() == pytest.approx(0.5, abs=0.01)


def test_flip_state_is_not_rewound(tiny):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, NEVER))
    names = [v.name.split("/")[-1] for v in callbacks.RewindCallback.rewindable_variables(model)]
    assert sorted(names) == ["bias:0", "bias:0", "kernel:0", "kernel:0"]


@pytest.mark.parametrize("file_name", ["model.h5", "model.keras", "saved_model"])
def test_save_and_load_keeps_flip_state_and_training_goes_on(tiny, tmp_path, file_name):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, 2),
                                              criterion="hybrid", alpha=0.5)
    tiny.compile_model(model, keras.optimizers.SGD(0.5))
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    path = str(tmp_path / file_name)
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=keras_lottery.custom_objects())
    loaded_wrapper = wrappers.prunable_wrappers(loaded)[0]
    assert isinstance(loaded_wrapper, sign_flip.PruneLowSignFlip)
    assert (loaded_wrapper.criterion, loaded_wrapper.alpha) == ("hybrid", 0.5)
    counts = sign_flip.flip_counts(model)
    for name, value in counts.items():
        np.testing.assert_array_equal(sign_flip.flip_counts(loaded)[name], value)
    for original, copy in zip(wrappers.prunable_wrappers(model), wrappers.prunable_wrappers(loaded)):
        np.testing.assert_array_equal(copy.flip_vars[0][0].numpy(), original.flip_vars[0][0].numpy())  # reference
    masks = keras_lottery.get_masks(model)
    for key, mask in masks.items():
        np.testing.assert_array_equal(keras_lottery.get_masks(loaded)[key], mask)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[keras_lottery.UpdateMasks()])
    for name, value in sign_flip.flip_counts(loaded).items():
        assert np.all(value >= counts[name])  # counting goes on from the saved counts
    for name, _, weight, _ in wrappers.pruning_entries(loaded):
        assert np.all(weight.numpy()[masks[name] == 0] == 0)  # pruned weights stay 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"criterion": "flipout"}, ValueError, "unknown sign-flip criterion"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"alpha": "big"}, ValueError, "alpha"),
        ({"reference": "final"}, ValueError, "reference must be"),
        ({"reference": callbacks.RewindCallback(rewind_step=100), "pruning_schedule": schedules.OneShot(0.5, 10)},
         ValueError, "before the RewindCallback's snapshot"),
        ({"pruning_schedule": "often"}, TypeError, "pruning_schedule must be a PruningSchedule"),
    ],
)
def test_bad_arguments_are_refused_at_wrap_time(tiny, kwargs, error, message):
    with pytest.raises(error, match=message):
        keras_lottery.prune_low_sign_flip(tiny.build_dense(), **kwargs)


def test_sparsity_outside_range_is_refused(tiny):
    with pytest.raises(ValueError, match="sparsity"):
        schedules.OneShot(1.0)
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, NEVER))
    with pytest.raises(ValueError, match="sparsity"):
        keras_lottery.prune(model, 1.2)


def test_rewind_reference_before_its_snapshot_is_refused(tiny):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, NEVER),
                                              reference="rewind")
    with pytest.raises(RuntimeError, match="no RewindCallback has taken its snapshot"):
        keras_lottery.prune(model, 0.5)
    keras_lottery.prune(model, 0.5, criterion="magnitude")  # magnitude needs no reference


@pytest.mark.parametrize("rewind_step", [None, 8])
def test_rewind_reference_without_a_snapshot_in_time_fails_before_training(tiny, rewind_step):
    model = keras_lottery.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, 4),
                                              reference="rewind")
    tiny.compile_model(model)
    before = [w.numpy().copy() for w in model.trainable_weights]
    extra = [] if rewind_step is None else [keras_lottery.RewindCallback(rewind_step)]
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="reference='rewind'.*first prune is at step 4"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[*extra, keras_lottery.UpdateMasks()])
    for value, weight in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(value, weight.numpy())


def test_flip_criterion_on_a_magnitude_model_fails_before_training(tiny):
    model = keras_lottery.prune_low_magnitude(tiny.build_dense(), pruning_schedule=schedules.OneShot(0.5, 2))
    tiny.compile_model(model)
    before = [w.numpy().copy() for w in model.trainable_weights]
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="prune_low_sign_flip"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_lottery.UpdateMasks(criterion="sign_flip")])
    for value, weight in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(value, weight.numpy())


_MIRRORED_SCRIPT = r'''
import numpy as np
import tensorflow as tf
import keras_lottery as kl

keras = kl.keras
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 4, 64)


def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        dense = keras.Sequential([keras.layers.InputLayer(input_shape=(8,)),
                                  keras.layers.Dense(16, activation="relu", name="fc1"), keras.layers.Dense(4, name="out")])
        model = kl.prune_low_sign_flip(dense, kl.OneShot(0.5, 6), criterion="hybrid")
        model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[kl.UpdateMasks()])
    return {name: value.tolist() for name, value in kl.flip_counts(model).items()}, \
        {name: value.tolist() for name, value in kl.get_masks(model).items()}


single = run(tf.distribute.get_strategy())
mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
RESULT = {"single": single, "mirrored": mirrored}
'''
processes.TWO_CPU_SCRIPTS["sign_flip"] = _MIRRORED_SCRIPT


def test_flip_counts_and_masks_under_mirrored_strategy_equal_one_device(two_cpu_result):
    # Two logical CPUs must be configured before TensorFlow starts: a fresh process (see tests/processes.py).
    output = two_cpu_result("sign_flip")
    counts, masks = output["single"]
    assert output["mirrored"] == [counts, masks]
    assert sum(np.sum(value) for value in counts.values()) > 0
