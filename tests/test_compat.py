"""Tests of compat.py: Keras 3, subclassed and non-model inputs fail early with clear errors."""

import os

import pytest
import tf_keras

import keras_lottery as kl
from keras_lottery import compat
from keras_lottery import keras as kl_keras

keras3 = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def keras3_model():
    assert keras3.__version__.startswith("3.")
    return keras3.Sequential([keras3.Input((8,)), keras3.layers.Dense(4, name="d3"), keras3.layers.Dense(2)])


@pytest.fixture(scope="module")
def keras3_functional():
    inputs = keras3.Input((8,))
    return keras3.Model(inputs, keras3.layers.Dense(3)(inputs))


class Subclassed(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = tf_keras.layers.Dense(3)

    def call(self, inputs):
        return self.dense(inputs)


def test_keras_is_tf_keras():
    assert kl_keras is tf_keras
    assert compat.keras is tf_keras
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"


def test_is_keras3_object(keras3_model):
    assert compat.is_keras3_object(keras3_model)
    assert compat.is_keras3_object(keras3.layers.Dense(2))
    assert compat.is_keras3_object(keras3.optimizers.Adam())
    assert not compat.is_keras3_object(tf_keras.layers.Dense(2))
    assert not compat.is_keras3_object(tf_keras.Sequential())
    assert not compat.is_keras3_object("keras")


@pytest.mark.parametrize("which", ["sequential", "functional"])
def test_prune_low_magnitude_rejects_keras3_models(keras3_model, keras3_functional, which):
    model = keras3_model if which == "sequential" else keras3_functional
    with pytest.raises(TypeError, match="tf_keras") as error:
        kl.prune_low_magnitude(model)
    assert "Keras 3" in str(error.value)


def test_prune_low_magnitude_rejects_keras3_layers():
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude(keras3.layers.Dense(4))
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude([tf_keras.layers.Dense(4), keras3.layers.Dense(4)])
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude(keras3.layers.Dense(4), pruning_schedule=kl.OneShot(0.5))


def test_strip_pruning_rejects_keras3_models(keras3_model):
    with pytest.raises(TypeError, match="tf_keras") as error:
        kl.strip_pruning(keras3_model)
    assert "Keras 3" in str(error.value)


def test_subclassed_tf_keras_model_raises():
    model = Subclassed()
    model(tf_keras.Input((5,)))
    with pytest.raises(TypeError, match="subclassed"):
        kl.prune_low_magnitude(model)
    with pytest.raises(TypeError, match="subclassed"):
        kl.strip_pruning(model)
    with pytest.raises(TypeError, match="Sequential"):
        compat.check_model(model)


@pytest.mark.parametrize("obj", [42, "model", None, {"fc1": 1}, object()])
def test_non_models_raise_type_error(obj):
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude(obj)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.strip_pruning(obj)


def test_strip_pruning_rejects_a_layer():
    with pytest.raises(TypeError, match="tf_keras Model"):
        kl.strip_pruning(tf_keras.layers.Dense(3))


def test_check_model_accepts_sequential_and_functional(tiny):
    compat.check_model(tiny.build_dense())
    compat.check_model(tiny.build_branch())
    compat.check_model(kl.prune_low_magnitude(tiny.build_dense()))


def test_check_not_keras3_passes_tf_keras_objects():
    compat.check_not_keras3([tf_keras.layers.Dense(2), tf_keras.layers.Flatten()])
    compat.check_not_keras3(tf_keras.Sequential())
    with pytest.raises(TypeError, match="The thing"):
        compat.check_not_keras3((keras3.layers.Flatten(),), what="The thing")


def test_non_model_with_schedule_dict_raises_type_error():
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune_low_magnitude("model", pruning_schedule={"fc1": kl.OneShot(0.5)})


class Keras3Scale(keras3.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


class Keras3Subclassed(keras3.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras3.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_user_subclassed_keras3_objects_raise_type_error():
    for obj in (Keras3Scale(), Keras3Subclassed()):
        with pytest.raises(TypeError, match="tf_keras"):
            kl.prune_low_magnitude(obj)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.strip_pruning(Keras3Subclassed())


@pytest.mark.parametrize("make", [Keras3Scale, Keras3Subclassed], ids=["layer", "model"])
def test_user_subclassed_keras3_objects_are_recognised(make):
    obj = make()
    assert compat.is_keras3_object(obj)
    with pytest.raises(TypeError, match="Keras 3"):
        kl.prune_low_magnitude(obj)


def test_keras3_model_is_refused_by_rewinding_and_controls():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    callback = kl.RewindCallback(0)
    with pytest.raises(TypeError, match="tf_keras"):
        callback.take_snapshot(model)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.controls.random_reinit(model, seed=0)
    with pytest.raises(TypeError, match="tf_keras"):
        kl.prune(model, 0.5)
