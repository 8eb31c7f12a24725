"""Shared tiny models and data for the keras_lottery unit tests.

Everything here is small on purpose (8x8 inputs, a few hundred examples) so that the
whole suite runs in well under a few minutes on two CPU cores. How tests start
processes (the app server, the two-CPU process) is in `tests/processes.py`; its
fixtures are registered here.
"""

import gzip
import types

import numpy as np
import pytest

import keras_lottery  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from keras_lottery import keras
from keras_lottery.sparsity import wrappers
from tests.processes import _app_server_session, _two_cpu_process, app_server, two_cpu_result  # noqa: F401  (fixtures)


def build_dense(seed=0, hidden=16, classes=10):
    """Flatten(8x8) -> Dense(hidden, relu) 'fc1' -> Dense(classes) 'out' (logits)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(hidden, activation="relu", name="fc1"),
            keras.layers.Dense(classes, name="out"),
        ],
        name="tiny_dense",
    )


def build_conv(seed=0):
    """8x8x1 -> Conv2D 'conv1' -> BatchNorm 'bn' -> Conv2D 'conv2' -> MaxPool -> Flatten -> Dropout -> Dense 'out'."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dropout(0.25, name="dropout"),
            keras.layers.Dense(10, name="out"),
        ],
        name="tiny_conv",
    )


def build_branch(seed=0):
    """Functional: Flatten -> two Dense paths 'left'/'right' -> Add -> Dense 'out'."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8), name="image")
    flat = keras.layers.Flatten(name="flatten")(inputs)
    left = keras.layers.Dense(12, activation="relu", name="left")(flat)
    right = keras.layers.Dense(12, activation="tanh", name="right")(flat)
    merged = keras.layers.Add(name="add")([left, right])
    outputs = keras.layers.Dense(10, name="out")(merged)
    return keras.Model(inputs, outputs, name="tiny_branch")


def make_data(count=256, shape=(8, 8), seed=0):
    """Random images and labels 0..9 (float32, int32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, 10, count).astype(np.int32)
    return x, y


def compile_model(model, optimizer=None):
    """Compiles with sparse categorical cross-entropy on logits (SGD 0.05 by default)."""
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def raw_kernels(model):
    """dict mask name -> (raw kernel variable value, mask) as NumPy."""
    return {name: (weight.numpy(), mask.numpy()) for name, _, weight, mask in wrappers.pruning_entries(model)}


class StepRecorder(keras.callbacks.Callback):
    """Calls `record(model, iteration)` at the start (or end) of every training batch."""

    def __init__(self, record, at="begin"):
        super().__init__()
        self.record = record
        self.at = at
        self.log = []

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        if self.at == "begin":
            self.log.append((self._step(), self.record(self.model)))

    def on_train_batch_end(self, batch, logs=None):
        if self.at == "end":
            self.log.append((self._step(), self.record(self.model)))


@pytest.fixture(scope="session")
def tiny():
    """The helpers above as one namespace: `tiny.build_dense()`, `tiny.make_data()`, ..."""
    return types.SimpleNamespace(
        build_dense=build_dense,
        build_conv=build_conv,
        build_branch=build_branch,
        make_data=make_data,
        compile_model=compile_model,
        raw_kernels=raw_kernels,
        StepRecorder=StepRecorder,
    )


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_fashion(tmp_path_factory):
    """A learnable 10-class IDX dataset: the label decides which image row is bright."""
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 700), ("t10k", 200)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 60, (count, 28, 28))
        for index, label in enumerate(labels):
            images[index, 2 * label + 3, :] = 255
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 0x803)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x801)
    return str(folder)
