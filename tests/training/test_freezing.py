"""Frozen parameters as OpenLTH freezes them: out of training, BatchNorm still normalizing by the batch."""

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.training import freezing
from tests.conftest import build_conv

keras = kl.keras


def _fit(model, steps=3):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 32)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=steps, verbose=0)


def _values(layer):
    return {variable.name: variable.numpy().copy() for variable in layer.weights}


def test_frozen_batch_norm_keeps_gamma_and_beta_and_still_normalizes_by_the_batch():
    model = build_conv()
    norm = model.get_layer("bn")
    before, conv_before = _values(norm), model.get_layer("conv1").kernel.numpy().copy()
    frozen = freezing.freeze(model, batch_norm=True)
    assert sorted(name.split("/")[-1].split(":")[0] for name in frozen) == ["beta", "gamma"]
    assert norm.trainable  # still in training mode: Keras's trainable=False would switch it to inference
    _fit(model)
    after = _values(norm)
    for name in before:
        changed = not np.array_equal(before[name], after[name])
        assert changed == ("moving" in name), name  # statistics update; scale and offset do not
    assert not np.array_equal(conv_before, model.get_layer("conv1").kernel.numpy())


def test_a_frozen_output_layer_stays_at_init_under_the_pruning_wrapper_with_its_mask_applied():
    model = kl.prune_low_magnitude(build_conv(), kl.OneShot(0.0))
    kl.prune(model, 0.5)
    out = next(layer for layer in model.layers if getattr(getattr(layer, "layer", None), "name", None) == "out")
    kernel = out.layer.kernel.numpy().copy()
    freezing.freeze(model, output=True, output_layer="out")
    _fit(model)
    np.testing.assert_array_equal(out.layer.kernel.numpy(), kernel)
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.01)  # its pruned half stays at 0
    assert model.get_layer("bn").gamma.trainable


def test_freezing_an_output_layer_that_is_not_there_names_the_layers():
    with pytest.raises(ValueError, match="has no layer called 'output' to freeze; its layers are"):
        freezing.freeze(build_conv(), output=True)
