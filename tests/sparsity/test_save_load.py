"""Pruned models through H5, `.keras` and SavedModel: state kept, training goes on as if never saved.

Each test trains a pruned model part of the way, saves and loads it, and then
continues both the loaded model and the original in-memory one on the same data: the
loaded one must behave exactly like the original (masks at every step, final weights
to float tolerance). H5 and `.keras` keep the optimizer's state (iterations, momenta);
SavedModel does not (tf_keras's loader compiles a fresh optimizer, see
`tf_keras/src/saving/legacy/saved_model/load.py`), so there the original continues
after `reset_optimizer`, which is what the loaded model starts from.
(Sign-flip wrappers: `test_sign_flip.py`.)
"""

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import early_bird
from keras_lottery.sparsity import wrappers

FORMATS = ["model.h5", "model.keras", "saved_model"]
KEEPS_OPTIMIZER_STATE = {"model.h5": True, "model.keras": True, "saved_model": False}
BATCH, EXAMPLES = 16, 64  # 4 steps per epoch


def build_dense_stack():
    """Sequential: Flatten -> fc1 -> fc2 -> fc3 -> out; fc2 and fc3 have kernels of the same shape.

    Equal shapes matter: a `.keras` file loads every kernel as "kernel", so optimizer
    state must be matched to weights by more than name and shape.
    """
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8)),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.Dense(16, activation="relu", name="fc2"),
        keras.layers.Dense(16, activation="relu", name="fc3"),
        keras.layers.Dense(10, name="out"),
    ])


def build_conv_branch():
    """Functional: Conv2D -> BatchNorm -> Conv2D, then two Dense paths of the same shape, added.

    No Dropout: its randomness would differ between the loaded and the original model.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    hidden = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(hidden))
    hidden = keras.layers.Flatten(name="flatten")(keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(hidden))
    left = keras.layers.Dense(12, activation="relu", name="left")(hidden)
    right = keras.layers.Dense(12, activation="tanh", name="right")(hidden)
    outputs = keras.layers.Dense(10, name="out")(keras.layers.Add(name="add")([left, right]))
    return keras.Model(inputs, outputs)


MODELS = {  # case -> (builder, input shape, strategy)
    "sequential-layerwise": (build_dense_stack, (8, 8), "layerwise"),
    "functional-conv-bn-global": (build_conv_branch, (8, 8, 1), "global"),
}


def compile_model(model):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def make_data(shape):
    rng = np.random.default_rng(0)
    return rng.normal(size=(EXAMPLES, *shape)).astype(np.float32), rng.integers(0, 10, EXAMPLES).astype(np.int32)


def fit(model, data, epochs, extra_callbacks=()):
    """Fits with UpdateMasks; returns [(step, masks)] recorded at each batch start, after any mask update."""
    log = []
    record = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: log.append(
        (callbacks.optimizer_step(model), kl.get_masks(model))))
    x, y = data
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[*extra_callbacks, kl.UpdateMasks(), record])
    return log


def save_and_load(model, tmp_path, file_name):
    path = str(tmp_path / file_name)
    model.save(path)
    return keras.models.load_model(path)


def assert_same_state(loaded, original, x):
    """Masks, every weight and the predictions are equal."""
    for name, mask in kl.get_masks(original).items():
        np.testing.assert_array_equal(kl.get_masks(loaded)[name], mask, err_msg=name)
    assert [w.name.split("/")[-1] for w in loaded.weights] == [w.name.split("/")[-1] for w in original.weights]
    for copy, value in zip(loaded.get_weights(), original.get_weights()):
        np.testing.assert_array_equal(copy, value)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), original.predict(x, verbose=0))


def assert_optimizer_state(loaded, original, file_name):
    """H5 and .keras restore iterations and momenta; SavedModel starts a fresh optimizer."""
    step = callbacks.optimizer_step(original)
    if KEEPS_OPTIMIZER_STATE[file_name]:
        assert callbacks.optimizer_step(loaded) == step
        for copy, value in zip(callbacks.optimizer_variables(loaded.optimizer),
                               callbacks.optimizer_variables(original.optimizer)):
            np.testing.assert_array_equal(copy.numpy(), value.numpy())
    else:
        assert callbacks.optimizer_step(loaded) == 0
        callbacks.reset_optimizer(original.optimizer)  # continue the original from the same point


def assert_continues_like_the_original(loaded, original, data, epochs, schedule):
    """Continues both for `epochs` on the same data; checks they stay the same model.

    Masks equal at every step and changed only where `schedule` fires; weights and
    optimizer state equal at the end (float tolerance); pruned weights exactly 0.
    """
    loaded_log, original_log = fit(loaded, data, epochs), fit(original, data, epochs)
    assert [step for step, _ in loaded_log] == [step for step, _ in original_log]
    for (step, masks), (_, expected) in zip(loaded_log, original_log):
        for name, mask in expected.items():
            np.testing.assert_array_equal(masks[name], mask, err_msg=f"{name} at step {step}")
    for (_, before), (step, after) in zip(loaded_log, loaded_log[1:]):
        changed = any(not np.array_equal(before[name], after[name]) for name in before)
        assert changed <= bool(schedule(step)[0]), f"masks changed at step {step}, where the schedule does not fire"
    for copy, value in zip(loaded.get_weights(), original.get_weights()):
        np.testing.assert_allclose(copy, value, rtol=1e-5, atol=1e-6)
    for copy, value in zip(callbacks.optimizer_variables(loaded.optimizer),
                           callbacks.optimizer_variables(original.optimizer)):
        np.testing.assert_allclose(copy.numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=copy.name)
    for name, _, weight, mask in wrappers.pruning_entries(loaded):
        assert np.all(weight.numpy()[mask.numpy() == 0] == 0), f"a pruned weight of {name} is not 0"


# Every format on the Sequential model, and the functional conv/BN/global model on `.keras`
# (whose loader must match optimizer state to weights that all load as "kernel", here
# `left` and `right` of one shape in a functional graph): each format and each model kind
# at least once, without the whole cross product (SavedModel is the slow one).
ROUND_TRIPS = [("sequential-layerwise", file_name) for file_name in FORMATS] + [
    ("functional-conv-bn-global", "model.keras")]


@pytest.mark.parametrize("case, file_name", ROUND_TRIPS)
def test_magnitude_pruned_model_round_trips_and_training_goes_on(tmp_path, case, file_name):
    builder, shape, strategy = MODELS[case]
    schedule = kl.Iterative(0.5, steps_per_round=4, rounds=2)  # prunes at steps 4 and 8
    original = compile_model(kl.prune_low_magnitude(builder(), pruning_schedule=schedule, strategy=strategy))
    x, y = make_data(shape)
    fit(original, (x, y), epochs=2)  # steps 0-7: round 1 at step 4; round 2 is due at step 8
    loaded = save_and_load(original, tmp_path, file_name)

    for copy, wrapper in zip(wrappers.prunable_wrappers(loaded), wrappers.prunable_wrappers(original)):
        assert type(copy) is kl.PruneLowMagnitude
        assert (copy.strategy, copy.criterion) == (strategy, "magnitude")
        assert copy.pruning_schedule.get_config() == wrapper.pruning_schedule.get_config()
    assert_same_state(loaded, original, x)
    assert_optimizer_state(loaded, original, file_name)
    assert_continues_like_the_original(loaded, original, (x, y), epochs=2, schedule=schedule)
    total = sum(mask.size for mask in kl.get_masks(loaded).values())
    kept = sum(int(mask.sum()) for mask in kl.get_masks(loaded).values())
    # H5/.keras resume at step 8 and prune round 2; SavedModel counts from 0 again (round 1 again: no change).
    assert kept / total == pytest.approx(0.25 if KEEPS_OPTIMIZER_STATE[file_name] else 0.5, abs=0.01)


@pytest.mark.parametrize("file_name", FORMATS)
def test_early_bird_model_saved_between_draw_and_prune_prunes_at_the_drawn_step_after_loading(tmp_path, file_name):
    detector = kl.EarlyBirdCallback(0.5, queue_size=2, epsilon=0.99)  # draws at the 2nd epoch end
    schedule = kl.EarlyBirdSchedule(detector)
    original = compile_model(kl.prune_low_magnitude(build_dense_stack(), pruning_schedule=schedule))
    data = make_data((8, 8))
    fit(original, data, epochs=2, extra_callbacks=[detector])
    assert detector.drawn_step == {0.5: 8}
    assert all(mask.all() for mask in kl.get_masks(original).values())  # drawn, pruning not done yet
    loaded = save_and_load(original, tmp_path, file_name)

    loaded_schedule = wrappers.prunable_wrappers(loaded)[0].pruning_schedule
    assert isinstance(loaded_schedule, kl.EarlyBirdSchedule) and loaded_schedule.detector is None
    assert loaded_schedule.get_config() == schedule.get_config() == {
        "class_name": "EarlyBirdSchedule", "config": {"target_sparsity": 0.5, "drawn_step": 8}}
    assert_same_state(loaded, original, data[0])
    assert_optimizer_state(loaded, original, file_name)
    # Both prune at step 8: at once for H5/.keras, after 8 new steps for SavedModel (counting from 0 again).
    assert_continues_like_the_original(loaded, original, data, epochs=3, schedule=loaded_schedule)
    assert all(mask.mean() == 0.5 for mask in kl.get_masks(loaded).values())


def test_early_bird_model_saved_before_the_draw_asks_for_a_detector_then_searches_again(tmp_path):
    detector = kl.EarlyBirdCallback(0.5, queue_size=3, epsilon=0.99)
    original = compile_model(kl.prune_low_magnitude(build_dense_stack(),
                                                    pruning_schedule=kl.EarlyBirdSchedule(detector)))
    data = make_data((8, 8))
    fit(original, data, epochs=1, extra_callbacks=[detector])  # one mask in a queue of 3: no draw
    loaded = save_and_load(original, tmp_path, "model.keras")
    assert wrappers.prunable_wrappers(loaded)[0].pruning_schedule.get_config()["config"] == {
        "target_sparsity": 0.5, "drawn_step": None}
    before = loaded.get_weights()
    with pytest.raises(RuntimeError, match="attach_detector"):
        fit(loaded, data, epochs=1)
    for value, weight in zip(before, loaded.get_weights()):
        np.testing.assert_array_equal(value, weight)  # refused before any step

    search = kl.EarlyBirdCallback(0.5, queue_size=2, epsilon=0.99)
    assert early_bird.attach_detector(loaded, search) == 4
    fit(loaded, data, epochs=3, extra_callbacks=[search])  # resumes at step 4; epochs end at 8, 12, 16
    assert search.drawn_step == {0.5: 12}
    for name, mask in kl.get_masks(loaded).items():
        np.testing.assert_array_equal(mask, search.drawn_masks[0.5][name])


def test_early_bird_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="needs its target_sparsity"):
        kl.EarlyBirdSchedule()
    with pytest.raises(ValueError, match="drawn_step is for a schedule without a detector"):
        kl.EarlyBirdSchedule(kl.EarlyBirdCallback(0.5), drawn_step=3)
    with pytest.raises(ValueError, match="drawn_step"):
        kl.EarlyBirdSchedule(target_sparsity=0.5, drawn_step=-1)
    with pytest.raises(ValueError, match="watches sparsities"):
        kl.EarlyBirdSchedule(target_sparsity=0.3).attach(kl.EarlyBirdCallback(0.5))
    fixed = kl.EarlyBirdSchedule(target_sparsity=0.5, drawn_step=6)
    assert [fixed.next_prune_step(step) for step in (0, 6, 7)] == [6, 6, None]
    assert [bool(fixed(step)[0]) for step in (5, 6, 7)] == [False, True, False]


def test_prune_scope_resolves_plain_class_names(tmp_path):
    model = kl.prune_low_magnitude(build_dense_stack(), pruning_schedule=kl.Iterative(0.2, 5, 3))
    model.build((None, 8, 8))
    plain_names = model.to_json().replace('"keras_lottery>', '"')  # as tfmot or hand-written configs spell them
    schedule_config = {"class_name": "EarlyBirdSchedule", "config": {"target_sparsity": 0.5, "drawn_step": 3}}
    with pytest.raises(TypeError, match="Could not locate class 'EarlyBirdSchedule'"):
        keras.utils.deserialize_keras_object(schedule_config)
    path = str(tmp_path / "model.h5")
    model.save(path)
    with kl.prune_scope():
        rebuilt = keras.models.model_from_json(plain_names)
        schedule = keras.utils.deserialize_keras_object(schedule_config)
        loaded = keras.models.load_model(path)
    assert [type(w) for w in wrappers.prunable_wrappers(rebuilt)] == [kl.PruneLowMagnitude] * 4
    assert isinstance(schedule, kl.EarlyBirdSchedule) and schedule.drawn_step == 3
    assert isinstance(wrappers.prunable_wrappers(loaded)[0].pruning_schedule, kl.Iterative)
    assert {"PruneLowMagnitude", "PruneLowSignFlip", "OneShot", "Iterative", "Gradual", "EarlyBirdSchedule",
            "ConstantSparsity", "PolynomialDecay"} <= set(kl.custom_objects())
