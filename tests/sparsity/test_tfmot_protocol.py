"""tfmot's idioms on keras_lottery's wrappers: its callbacks, a custom loop, no silent dense training, layer kinds.

A tfmot user changes one import (`tfmot.sparsity.keras.prune_low_magnitude` ->
`keras_lottery.prune_low_magnitude`) and keeps `ConstantSparsity`, `UpdatePruningStep`
and `PruningSummaries`: the schedule must be reached, with keras_lottery's counts and
tie rule (the masks equal what `keras_lottery.prune` computes from the same weights).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

import keras_lottery as kl
from keras_lottery import keras
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

TFMOT = tfmot.sparsity.keras


def _data(model, count=64, classes=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = tuple(model.input_shape[1:])
    x = rng.normal(size=(count, *shape)).astype(np.float32)
    outputs = int(np.prod(model.output_shape[1:]))
    y = rng.integers(0, classes or outputs, count)
    return x, y


def _compile(model):
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _sparsity(model):
    return {name: 1 - float(mask.mean()) for name, mask in kl.get_masks(model).items()}


@pytest.mark.parametrize("wrap", [kl.prune_low_magnitude, lambda model, **kw: kl.prune_low_sign_flip(
    model, criterion="hybrid", **kw)], ids=["magnitude", "sign_flip"])
def test_update_pruning_step_in_fit_reaches_the_schedule_with_our_counts(tiny, wrap):
    model = _compile(wrap(tiny.build_dense(hidden=10), pruning_schedule=TFMOT.ConstantSparsity(0.7, 0, frequency=1)))
    x, y = tiny.make_data(64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[TFMOT.UpdatePruningStep()])
    sizes = {name: weight.shape.num_elements() for name, _, weight, _ in wrappers.pruning_entries(model)}
    for name, mask in kl.get_masks(model).items():
        assert int(mask.sum()) == masks_lib.keep_count(sizes[name], 0.7), name  # our count, not tfmot's
    stripped = kl.strip_pruning(model)  # exports sparse
    assert all(float(np.mean(layer.kernel.numpy() == 0)) > 0.69 for layer in stripped.layers if hasattr(layer, "kernel"))


def test_the_masks_are_those_of_our_mask_computation_from_the_same_weights(tiny):
    model = _compile(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=TFMOT.ConstantSparsity(0.5, 3, 100)))
    x, y = tiny.make_data(48)
    before = {}
    watch = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: batch == 3 and before.update(
        {name: weight.numpy().copy() for name, _, weight, _ in wrappers.pruning_entries(model)}))
    # The wrapper counts its step up in each training call: step 3 is the 3rd batch (batch index 2) of tfmot's count.
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[TFMOT.UpdatePruningStep(), watch])
    masks = kl.get_masks(model)
    assert all(abs(1 - mask.mean() - 0.5) < 0.02 for mask in masks.values())
    # Weights pruned stay 0 (exported sparse) and survivors equal a ranking of |w| at the update by masks.compute.
    for name, _, weight, _ in wrappers.pruning_entries(model):
        assert np.all(weight.numpy()[masks[name] == 0] == 0)


def test_a_custom_training_loop_driven_the_tfmot_way(tiny):
    model = kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=TFMOT.PolynomialDecay(0.2, 0.6, 1, 4, 3, 1))
    optimizer = keras.optimizers.SGD(0.05)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = tiny.make_data(64)
    step_callback = TFMOT.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    for batch in range(6):
        step_callback.on_train_batch_begin(batch=batch)
        with tf.GradientTape() as tape:
            value = loss(y[batch * 8:(batch + 1) * 8], model(x[batch * 8:(batch + 1) * 8], training=True))
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))
        step_callback.on_epoch_end(batch=batch)
    assert all(abs(value - 0.6) < 0.02 for value in _sparsity(model).values())


def test_pruning_summaries_logs_the_sparsity_it_reaches(tiny, tmp_path):
    model = _compile(kl.prune_low_magnitude(tiny.build_dense(),
                                            pruning_schedule=TFMOT.ConstantSparsity(0.5, 0, frequency=1)))
    x, y = tiny.make_data(32)
    # PruningSummaries logs at each epoch's start: the second one sees the first epoch's pruning.
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[TFMOT.UpdatePruningStep(), TFMOT.PruningSummaries(log_dir=str(tmp_path))])
    values = []
    for folder, _, names in os.walk(tmp_path):
        for name in names:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
                values += [float(tf.make_ndarray(v.tensor)) for v in event.summary.value if "sparsity" in v.tag]
    assert values and max(values) == pytest.approx(0.5, abs=0.02)


def test_training_that_would_stay_dense_is_refused_before_the_first_step(tiny):
    x, y = tiny.make_data(32)
    model = _compile(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=TFMOT.ConstantSparsity(0.8, 0)))
    with pytest.raises(ValueError, match=r"nothing applies it.*UpdateMasks\(\).*UpdatePruningStep\(\)"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert float(model.optimizer.iterations.numpy()) == 0  # not one step
    kl.prune(model, 0.8)  # masks set by hand (the IMP flow): training with them is what was asked
    _compile(model).fit(x, y, batch_size=16, epochs=1, verbose=0)
    holder = _compile(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.0)))
    holder.fit(x, y, batch_size=16, epochs=1, verbose=0)  # a schedule that never prunes needs no callback


def test_update_masks_after_a_tfmot_driven_fit_takes_over(tiny):
    model = _compile(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5, 0)))
    x, y = tiny.make_data(32)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[TFMOT.UpdatePruningStep()])
    assert all(abs(value - 0.5) < 0.02 for value in _sparsity(model).values())
    traced_for_tfmot = model.train_function
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kl.UpdateMasks()])
    assert model.train_function is not traced_for_tfmot  # traced again, for the fast path
    assert all(int(wrapper.pruning_step.numpy()) == -1 for wrapper in wrappers.prunable_wrappers(model))


def test_global_wrappers_refuse_tfmots_callback(tiny):
    model = _compile(kl.prune_low_magnitude(tiny.build_dense(), pruning_schedule=kl.OneShot(0.5, 0), strategy="global"))
    x, y = tiny.make_data(32)
    with pytest.raises(ValueError, match="strategy='global'.*UpdateMasks"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[TFMOT.UpdatePruningStep()])


def _dense_head(body, input_shape):
    inputs = keras.Input(input_shape)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(body(inputs)))
    return keras.Model(inputs, outputs)


LAYERS = {
    "Conv1D": (lambda: keras.layers.Conv1D(4, 3, name="layer"), (12, 3)),
    "Conv2D": (lambda: keras.layers.Conv2D(4, 3, name="layer"), (8, 8, 2)),
    "Conv3D": (lambda: keras.layers.Conv3D(4, 2, name="layer"), (5, 5, 5, 2)),
    "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(4, 3, name="layer"), (6, 6, 2)),
    "SeparableConv1D": (lambda: keras.layers.SeparableConv1D(4, 3, name="layer"), (12, 3)),
    "SeparableConv2D": (lambda: keras.layers.SeparableConv2D(4, 3, name="layer"), (8, 8, 2)),
    "SimpleRNN": (lambda: keras.layers.SimpleRNN(6, return_sequences=True, name="layer"), (5, 4)),
    "LSTM": (lambda: keras.layers.LSTM(6, return_sequences=True, name="layer"), (5, 4)),
    "GRU": (lambda: keras.layers.GRU(6, return_sequences=True, name="layer"), (5, 4)),
    "StackedRNNCells": (lambda: keras.layers.RNN(keras.layers.StackedRNNCells(
        [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)]), return_sequences=True, name="layer"), (5, 4)),
    "MultiHeadAttention": (None, (6, 8)),
}


def _model_with(kind):
    make, shape = LAYERS[kind]
    if kind == "MultiHeadAttention":
        inputs = keras.Input(shape)
        attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="layer")(inputs, inputs)
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(attended)))
    return _dense_head(make(), shape)


@pytest.mark.parametrize("driver", ["UpdateMasks", "UpdatePruningStep"])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer_kind_tfmot_prunes_reaches_the_target(kind, driver):
    keras.utils.set_random_seed(0)
    model = _compile(kl.prune_low_magnitude(_model_with(kind), pruning_schedule=kl.OneShot(0.5, 0)))
    x, y = _data(model, classes=3)
    callback = kl.UpdateMasks() if driver == "UpdateMasks" else TFMOT.UpdatePruningStep()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    pruned = {name: value for name, value in _sparsity(model).items() if not name.startswith("head")}
    assert pruned and all(abs(value - 0.5) < 0.05 for value in pruned.values()), pruned
    stripped = kl.strip_pruning(model)
    np.testing.assert_allclose(stripped.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), atol=1e-5)


def test_embedding_reaches_the_target(tiny):
    inputs = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Flatten()(keras.layers.Embedding(20, 4, name="embedding")(inputs))
    model = _compile(kl.prune_low_magnitude(keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden)),
                                            pruning_schedule=kl.OneShot(0.5, 0)))
    x = np.random.default_rng(0).integers(0, 20, (32, 6))
    model.fit(x, x[:, 0] % 3, batch_size=16, epochs=1, verbose=0, callbacks=[TFMOT.UpdatePruningStep()])
    assert _sparsity(model)["embedding"] == pytest.approx(0.5, abs=0.01)


class _Custom(keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):
    def get_prunable_weights(self):
        return [self.kernel]


def test_a_custom_prunable_layer_and_a_wrapped_layer_are_taken_as_tfmot_takes_them(tiny):
    inputs = keras.Input((8,))
    already = kl.prune_low_magnitude(keras.layers.Dense(5, name="already"), pruning_schedule=kl.OneShot(0.5, 0))
    outputs = _Custom(3, name="custom")(already(inputs))
    model = kl.prune_low_magnitude(keras.Model(inputs, outputs), pruning_schedule=kl.OneShot(0.5, 0))
    wrapped = {layer.layer.name: layer for layer in model.layers if isinstance(layer, kl.PruneLowMagnitude)}
    assert sorted(wrapped) == ["already", "custom"]  # the wrapped layer is not wrapped twice
    assert not isinstance(wrapped["already"].layer, kl.PruneLowMagnitude)
    with pytest.raises(ValueError, match="'already' is wrapped already, with schedule"):
        kl.prune_low_magnitude(keras.Model(inputs, outputs), pruning_schedule=kl.OneShot(0.8, 0))


def test_share_layers_wraps_the_models_own_layers_as_tfmot(tiny):
    dense = tiny.build_dense()
    shared = kl.prune_low_magnitude(dense, pruning_schedule=kl.OneShot(0.5, 0), share_layers=True)
    copied = kl.prune_low_magnitude(dense, pruning_schedule=kl.OneShot(0.5, 0))
    kernel = dense.get_layer("fc1").kernel
    assert shared.get_layer("prune_low_magnitude_fc1").layer.kernel is kernel
    assert copied.get_layer("prune_low_magnitude_fc1").layer.kernel is not kernel
    np.testing.assert_array_equal(copied.get_layer("prune_low_magnitude_fc1").layer.kernel.numpy(), kernel.numpy())


def test_tfmots_pruning_policy_is_applied(tiny):
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.ZeroPadding2D(1)(inputs)
    hidden = keras.layers.Conv2D(8, 3, strides=2, padding="valid", name="stem")(hidden)
    hidden = keras.layers.Conv2D(8, 1, name="pointwise")(hidden)
    outputs = keras.layers.GlobalAveragePooling2D(keepdims=True)(hidden)
    model = keras.Model(inputs, outputs)
    pruned = kl.prune_low_magnitude(model, pruning_policy=TFMOT.PruneForLatencyOnXNNPack())
    wrapped = sorted(layer.layer.name for layer in pruned.layers if isinstance(layer, kl.PruneLowMagnitude))
    theirs = TFMOT.prune_low_magnitude(model, pruning_policy=TFMOT.PruneForLatencyOnXNNPack())
    expected = sorted(layer.layer.name for layer in theirs.layers
                      if isinstance(layer, tfmot_wrapper.PruneLowMagnitude) and layer.layer.get_weights())
    assert wrapped == expected == ["pointwise"]  # only what XNNPack runs sparse, as tfmot decides
    with pytest.raises(ValueError, match="ZeroPadding2D"):  # the policy's own check of the model
        kl.prune_low_magnitude(tiny.build_conv(), pruning_policy=TFMOT.PruneForLatencyOnXNNPack())


def test_a_nested_model_is_pruned_recursively_and_strips(tiny):
    inner = keras.Sequential([keras.layers.InputLayer((8,)), keras.layers.Dense(6, name="inner_fc")], name="inner")
    outer = keras.Sequential([keras.layers.InputLayer((8,)), inner, keras.layers.Dense(3, name="outer_fc")])
    model = _compile(kl.prune_low_magnitude(outer, pruning_schedule=kl.OneShot(0.5, 0)))
    assert sorted(kl.get_masks(model)) == ["inner_fc", "outer_fc"]
    assert not isinstance(inner.layers[0], kl.PruneLowMagnitude)  # the input model is unchanged
    x, y = tiny.make_data(32, (8,))
    model.fit(x, y % 3, batch_size=16, epochs=1, verbose=0, callbacks=[kl.UpdateMasks()])
    assert all(abs(value - 0.5) < 0.02 for value in _sparsity(model).values())
    stripped = kl.strip_pruning(model)
    assert not any(isinstance(layer, kl.PruneLowMagnitude) for layer in stripped.layers[0].layers)
    np.testing.assert_allclose(stripped.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), atol=1e-6)


@pytest.mark.parametrize("driver", ["UpdateMasks", "UpdatePruningStep"])
@pytest.mark.parametrize("wrap", [kl.prune_low_magnitude, lambda model, **kw: kl.prune_low_sign_flip(
    model, criterion="hybrid", **kw)], ids=["magnitude", "hybrid"])
def test_two_by_four_and_blocks_through_either_callback(tiny, wrap, driver):
    def callbacks():
        return [kl.UpdateMasks() if driver == "UpdateMasks" else TFMOT.UpdatePruningStep()]

    x, y = tiny.make_data(32)
    model = _compile(wrap(tiny.build_dense(hidden=8), pruning_schedule=kl.OneShot(0.5, 0), sparsity_m_by_n=(2, 4)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks())
    for name, mask in kl.get_masks(model).items():
        rows = mask.T
        assert all(rows[r, c:c + 4].sum() <= 2 for r in range(rows.shape[0]) for c in range(0, rows.shape[1], 4)), name
    blocks = _compile(wrap(tiny.build_dense(hidden=8), pruning_schedule=kl.OneShot(0.5, 0), block_size=(1, 4)))
    blocks.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks())
    fc1 = kl.get_masks(blocks)["fc1"]  # 64 x 8: rows of 2 blocks of 4
    assert fc1.mean() == pytest.approx(0.5) and all(len(set(fc1[r, c:c + 4])) == 1 for r in range(64) for c in (0, 4))
