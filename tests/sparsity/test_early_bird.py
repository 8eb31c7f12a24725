"""Tests of early-bird detection: distances, the queue, detection on scripted weights, the schedule."""

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import early_bird
from keras_lottery.sparsity import pruning


def test_mask_distance_is_the_fraction_of_differing_entries():
    first = {"a": np.array([1, 1, 0, 0]), "b": np.ones((2, 3))}
    second = {"a": np.array([1, 0, 0, 1]), "b": np.array([[1, 1, 1], [1, 1, 0]])}
    assert early_bird.mask_distance(first, second) == pytest.approx(3 / 10)
    assert early_bird.mask_distance(first, first) == 0.0
    with pytest.raises(ValueError, match="different layers"):
        early_bird.mask_distance(first, {"a": first["a"]})


def test_queue_is_stable_only_when_full_and_every_distance_is_small():
    queue = early_bird.MaskQueue(queue_size=3, epsilon=0.25)
    a, b = {"w": np.array([1, 1, 1, 1])}, {"w": np.array([1, 1, 1, 0])}  # distance 0.25
    c = {"w": np.array([0, 0, 1, 0])}  # distance 0.5 to b, 0.75 to a
    assert queue.push(a) == []
    distances = queue.push(b)
    assert distances == [0.25] and not queue.stable(distances)  # not full yet
    distances = queue.push(c)
    assert distances == [0.75, 0.5] and not queue.stable(distances)
    distances = queue.push(b)  # queue: b, c, b
    assert distances == [0.0, 0.5] and not queue.stable(distances)
    queue.push(b)
    distances = queue.push(b)  # queue: b, b, b
    assert distances == [0.0, 0.0] and queue.stable(distances)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"epsilon": 0.0}, "epsilon"), ({"epsilon": 1.0}, "epsilon"), ({"epsilon": -0.1}, "epsilon"),
        ({"queue_size": 1}, "queue_size"), ({"queue_size": 2.5}, "queue_size"),
        ({"target_sparsity": 1.0}, "target_sparsity"), ({"target_sparsity": []}, "at least one"),
        ({"criterion": "taylor"}, "criterion"), ({"strategy": "local"}, "strategy"),
    ],
)
def test_bad_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        early_bird.EarlyBirdCallback(**arguments)


class ScriptedWeights(keras.callbacks.Callback):
    """Sets fc1's kernel at each epoch end from a script (training itself changes nothing: lr 0)."""

    def __init__(self, kernels):
        super().__init__()
        self.kernels = kernels

    def on_epoch_end(self, epoch, logs=None):
        layer = next(getattr(l, "layer", l) for l in self.model.layers if getattr(l, "layer", l).name == "fc1")
        layer.kernel.assign(self.kernels[epoch])


def _script(epochs, settle_at, shape=(64, 16)):
    """Kernels whose 50% magnitude mask changes completely each epoch until `settle_at`."""
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=shape).astype(np.float32) for _ in range(settle_at)]
    return kernels + [kernels[-1]] * (epochs - settle_at)


def _fit(tiny, model, callbacks, epochs):
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tiny.make_data(32)
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks)


def test_detection_fires_at_the_right_epoch_on_scripted_weights(tiny):
    model = tiny.build_dense()
    detector = early_bird.EarlyBirdCallback(target_sparsity=[0.5, 0.3], queue_size=3, epsilon=0.05)
    # Masks change every epoch up to epoch 4, then stay: the queue of 3 holds three
    # equal masks for the first time after epoch 6.
    _fit(tiny, model, [ScriptedWeights(_script(10, settle_at=4)), detector], epochs=10)
    assert detector.drawn_epoch == {0.5: 6, 0.3: 6}
    assert detector.drawn_step == {0.5: 12, 0.3: 12}  # 2 steps per epoch
    assert detector.distances[0.5][0] is None and detector.distances[0.5][5] == 0.0
    assert all(d > 0.05 for d in detector.distances[0.5][1:5])
    drawn = detector.drawn_masks[0.5]
    assert sum(int(m.sum()) for m in drawn.values()) == 512 + 80  # 50% of fc1 (1024) and out (160)


def test_stop_training_ends_the_search_once_every_ticket_is_drawn(tiny):
    model = tiny.build_dense()
    detector = early_bird.EarlyBirdCallback(0.5, queue_size=2, epsilon=0.05, stop_training=True)
    history = _fit(tiny, model, [ScriptedWeights(_script(10, settle_at=3)), detector], epochs=10)
    assert detector.drawn_epoch == {0.5: 4}
    assert len(history.history["loss"]) == 4
    assert "early_bird_distance_0.5" in history.history


def test_schedule_prunes_exactly_once_at_the_drawn_step(tiny, monkeypatch):
    detector = early_bird.EarlyBirdCallback(0.5, queue_size=2, epsilon=0.05)
    pruned = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=early_bird.EarlyBirdSchedule(detector))
    calls = []
    original = pruning.prune
    monkeypatch.setattr(pruning, "prune", lambda *a, **k: calls.append(1) or original(*a, **k))
    kernels = _script(8, settle_at=3)
    _fit(tiny, pruned, [ScriptedWeights(kernels), detector, kl.UpdateMasks()], epochs=8)
    assert detector.drawn_epoch == {0.5: 4} and detector.drawn_step == {0.5: 8}
    assert len(calls) == 1
    masks = kl.get_masks(pruned)
    assert {name: int(mask.sum()) for name, mask in masks.items()} == {"fc1": 512, "out": 80}
    np.testing.assert_array_equal(masks["fc1"], detector.drawn_masks[0.5]["fc1"])


def test_bn_gamma_criterion_is_one_global_threshold_and_names_removed_units(tiny):
    model = tiny.build_conv()
    model.get_layer("bn").gamma.assign([0.1, -2.0, 0.05, 1.0])
    detector = early_bird.EarlyBirdCallback(0.5, criterion="bn_gamma")
    detector.set_model(model)
    np.testing.assert_array_equal(detector.compute_masks(0.5)["bn"], [0, 1, 0, 1])
    detector.drawn_masks[0.5] = detector.compute_masks(0.5)
    assert detector.removed_units(0.5) == {"bn": [0, 2]}


def test_bn_gamma_without_batchnorm_fails_before_any_step(tiny):
    model = tiny.build_dense()
    detector = early_bird.EarlyBirdCallback(0.5, criterion="bn_gamma")
    with pytest.raises(ValueError, match="criterion='l1'"):
        _fit(tiny, model, [detector], epochs=1)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_l1_criterion_scores_each_unit_by_the_l1_norm_of_its_weights(tiny):
    model = tiny.build_dense()
    kernel = np.zeros((64, 16), np.float32)
    kernel[:, 3] = -1.0  # unit 3: L1 64
    kernel[0, 7] = 5.0  # unit 7: L1 5
    model.get_layer("fc1").kernel.assign(kernel)
    scores = early_bird.criterion_scores(model, "l1")
    assert scores["fc1"].shape == (16,) and scores["fc1"][3] == 64.0 and scores["fc1"][7] == 5.0
    masks = kl.masks.compute({"fc1": scores["fc1"]}, 14 / 16)
    assert np.flatnonzero(masks["fc1"]).tolist() == [3, 7]


def test_gamma_l1_penalty_is_added_to_the_loss_and_can_be_switched_off(tiny):
    model = tiny.build_conv()
    model.get_layer("bn").gamma.assign([1.0, -2.0, 0.5, 0.5])
    strength = early_bird.add_gamma_l1_penalty(model, 1e-2)
    assert float(sum(loss.numpy() for loss in model.losses)) == pytest.approx(1e-2 * 4.0)
    strength.assign(0.0)
    assert float(sum(loss.numpy() for loss in model.losses)) == 0.0
    with pytest.raises(ValueError, match="BatchNormalization"):
        early_bird.add_gamma_l1_penalty(tiny.build_dense())


def test_sign_flip_criteria_need_the_sign_flip_wrapper_and_use_its_scores(tiny):
    plain = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.0))
    tiny.compile_model(plain)
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="prune_low_sign_flip"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[early_bird.EarlyBirdCallback(0.5, criterion="hybrid")])
    model = kl.prune_low_sign_flip(tiny.build_dense(), pruning_schedule=kl.OneShot(0.0), criterion="hybrid")
    tiny.compile_model(model, keras.optimizers.SGD(0.5))
    detector = early_bird.EarlyBirdCallback(0.5, criterion="hybrid", queue_size=2, epsilon=0.5)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[detector])
    expected = kl.masks.compute(pruning.scores(model, "hybrid"), 0.5)
    for name, mask in detector.compute_masks(0.5).items():
        np.testing.assert_array_equal(mask, expected[name])
    assert detector.distances[0.5]  # distances were recorded each epoch


def test_layers_limits_what_the_masks_cover(tiny):
    model = tiny.build_dense()
    assert set(early_bird.criterion_scores(model, "magnitude")) == {"fc1", "out"}
    assert set(early_bird.criterion_scores(model, "magnitude", layers=["out"])) == {"out"}
    detector = early_bird.EarlyBirdCallback(0.5, layers=["fc1"])
    detector.set_model(model)
    masks = detector.compute_masks(0.5)
    assert set(masks) == {"fc1"} and int(masks["fc1"].sum()) == 512
    # 'l1' never scores the output layer (its units are the classes): naming it is refused, as is nothing.
    with pytest.raises(ValueError, match=r"\['out'\] are not among them.*\['fc1'\]"):
        early_bird.criterion_scores(model, "l1", layers=["out"])
    with pytest.raises(ValueError, match="none given"):
        early_bird.criterion_scores(model, "l1", layers=[])
    refused = early_bird.EarlyBirdCallback(0.5, layers=["nope"])
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        _fit(tiny, model, [refused], epochs=1)
    assert int(model.optimizer.iterations.numpy()) == 0
