"""Supermasks on frozen random weights: Zhou et al.'s Bernoulli supermask and Ramanujan et al.'s edge-popup.

Both methods train one score per kernel weight and never the weights themselves: the network's
kernels and biases stay exactly as they were (random init, or signed constants), and the mask on
them is what is learned. They are wrappers subclassing `wrappers.PruneLowMagnitude`, so tfmot's
mask variables, `wrappers.pruning_entries / get_masks / set_masks` and the package's flows work.

    model = supermasks.prune_low_supermask(dense, seed=0, weights="signed_constant")
    model.compile(...); model.fit(...)               # only the scores train
    final = supermasks.finalize(model, 0.5)          # masks.compute on the scores, plain masked layers

**Supermask** (Zhou, Lan, Liu & Yosinski 2019, "Deconstructing lottery tickets: zeros, signs, and
the supermask"; code uber-research/deconstructing-lottery-tickets, `masked_networks.py`
`get_effective_mask`, `MaskedDense`): a score `s` per weight; a training forward pass samples
`m ~ Bernoulli(sigmoid(s))` and uses `kernel * m * mask`; the straight-through estimator hands the
gradient w.r.t. `m` to `sigmoid(s)` (the code's `m + p - stop_gradient(p)`; here a custom gradient,
so the forward value is exactly 0 or 1). Choices:

* Scores start at the constant `score_init` = 0 (sigmoid 0.5), the code's `--sigmoid_bias` default.
* The draw is `tf.random.stateless_uniform(seed=fold_in((seed, crc32(layer name)), draw_step)) <
  sigmoid(s)`, `draw_step` a non-trainable per-wrapper counter advanced by each training call:
  a resumed run draws the same masks (the code uses stateful TF1 sampling).
* Inference (predict/evaluate, before `finalize`) uses the deterministic mask `sigmoid(s) > 0.5`
  (i.e. `s > 0`; an untrained score of exactly 0 is off). The paper's code samples at test time
  as well and reports the mean accuracy of 10 Bernoulli draws; a deterministic mask makes
  evaluation reproducible and is what `finalize` at the mask's own density gives.
* `expected_density` is mean `sigmoid(s)` per layer (the code's "[Est] percent of 1s").
  The code's `round_mask` and `dynamic_scaling` variants are not implemented.

**Edge-popup** (Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari 2020, "What's hidden in a
randomly weighted neural network?"; code allenai/hidden-networks `utils/conv_type.py`, `GetSubnet`
and `SubnetConv`): a score per weight, initialized as the code's `kaiming_uniform_(a=sqrt(5))`, i.e.
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = prod(kernel.shape[:-1]) (stateless, seeded by
(seed, crc32(layer name))). Every forward pass keeps the top-k weights of each layer by |s|,
k = `masks.keep_count(size, sparsity)` (the code keeps `size - int((1 - k%) * size)`: rounding can
differ by one), ties to the lower flat index, exactly `masks.top_k_mask`'s rule (a test checks the
in-graph selection against `masks.compute`). The gradient goes straight through the top-k to |s|,
then through the absolute value, as in the code (autograd on `scores.abs()`): d loss / d s =
sign(s) * w * d loss / d(w * m). The paper writes the update without the sign(s); it agrees for
positive scores, and with the sign a negative score's |s| moves the right way.

**Frozen weights.** The wrapped layer's weights (kernel, bias) are left out of `trainable_weights`
(only the scores are listed there), so no optimizer, coupled weight decay included, ever touches
them: they are bit-identical after `fit`. `weights="signed_constant"` first replaces each kernel by
sign(w) * std(w) (the layer's initial kernel, population std as the code's `tf.nn.moments`); Zhou
et al. found it the best supermask weights, Ramanujan et al. use it too. Biases are kept as they are.

**Finalize.** `finalize` computes the masks with `masks.compute(scores(model), sparsity, strategy)`,
switches every wrapper's non-trainable `learning` flag (read in `call`, so nothing retraces and a
backup captures it) to 0 and sets the masks with `wrappers.set_masks`: from then on the forward pass
is op(x, kernel * mask) + bias, as a plain `wrappers.prune_low_magnitude` model's (set_masks sets
the pruned kernel entries to 0, the package's convention; the kept ones are unchanged). Nothing
is drawn or selected after it (a supermask's `draw_step` stops).

Saving: both wrappers are registered Keras serializables; `import keras_lottery` imports this
module, so `load_model(path, custom_objects=keras_lottery.custom_objects())` finds them.

Wrapping: every Dense and Conv2D (not Conv2DTranspose) layer, nested models included, with the
`OneShot(0.0)` schedule (nothing for `UpdateMasks` or tfmot's `UpdatePruningStep` to apply);
other prunable layers (Conv1D, DepthwiseConv2D, Embedding, ...) are refused, as their weights would
silently train. BatchNorm and other unwrapped layers are left as they are (the flow freezes them).
"""

import zlib

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

keras = compat.keras

WEIGHTS = ("init", "signed_constant")


@tf.custom_gradient
def _straight_through(mask, source):
    """Returns `mask`; its gradient goes to `source` unchanged (the straight-through estimator)."""

    def gradient(upstream):
        return None, upstream

    return tf.identity(mask), gradient


def _check_weights(weights):
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS} (the frozen weights' values); got {weights!r}.")


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer; got {seed!r}.")
    return int(seed)


def _check_score_init(score_init):
    if isinstance(score_init, bool) or not isinstance(score_init, (int, float)) or not np.isfinite(score_init):
        raise ValueError(f"score_init (the supermask scores' initial value) must be a finite number; "
                         f"got {score_init!r}.")


def _supported(layer):
    return isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and not isinstance(
        layer, keras.layers.Conv2DTranspose)


class _FrozenScores(wrappers.PruneLowMagnitude):
    """A pruning wrapper whose layer's weights are frozen and whose mask comes from trained scores.

    Subclasses define `_score_initializer` and `_learned_mask`.
    """

    def __init__(self, layer, pruning_schedule=None, seed=0, frozen_weights="init", **kwargs):
        _check_weights(frozen_weights)
        if pruning_schedule is None:
            pruning_schedule = schedules.OneShot(0.0)  # masks stay ones until `finalize`: nothing to apply
        super().__init__(layer, pruning_schedule=pruning_schedule, **kwargs)
        self.seed = _check_seed(seed)
        self.frozen_weights = frozen_weights
        self.score_vars = []

    def build(self, input_shape):
        super().build(input_shape)
        if self._masked_attributes is None or len(self.pruning_vars) != 1:
            raise ValueError(f"layer {self.layer.name!r}: supermask wrappers take Dense and Conv2D layers only.")
        self._layer_seed = [self.seed, zlib.crc32(self.layer.name.encode()) & 0x7FFFFFFF]
        weight = self.pruning_vars[0][0]
        self.score_vars = [self.add_weight("scores", shape=weight.shape, initializer=self._score_initializer,
                                           dtype=tf.float32, trainable=True)]
        # 1 while the scores choose the mask, 0 after `finalize` (plain masked layer). A variable, not a
        # Python attribute: a backup captures it and a traced step reads it without retracing.
        self.learning = self.add_weight("learning", shape=(), initializer="ones", dtype=tf.float32, trainable=False,
                                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    # -- Only the scores train: the wrapped layer's weights are listed as non-trainable (the
    # wrapper's own `_trainable_weights` hold the kernel too: tfmot assigns it to an attribute). --

    @property
    def trainable_weights(self):
        return list(self.score_vars) if self.trainable else []

    @property
    def non_trainable_weights(self):
        frozen = list(self.layer.weights)
        for weight in self._trainable_weights + self._non_trainable_weights:
            if not any(weight is known for known in frozen + self.score_vars):
                frozen.append(weight)
        return frozen if self.trainable else list(self.score_vars) + frozen

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        (weight, mask, _), attribute = self.pruning_vars[0], self._masked_attributes[0]
        value = tf.convert_to_tensor(weight)  # the compute dtype under mixed precision
        mask = tf.cast(tf.convert_to_tensor(mask), value.dtype)
        # After `finalize` (learning = 0) no mask is drawn or selected: op(x, kernel * mask) + bias.
        chosen = tf.cond(self.learning > 0.5, lambda: tf.cast(self._learned_mask(training), value.dtype),
                         lambda: tf.ones_like(value))
        layer = self.layer
        try:
            # As the parent: the layer reads its kernel attribute, set here to the masked value
            # (object.__setattr__ keeps Keras's tracking, and the layer's weight order, as they are).
            object.__setattr__(layer, attribute, value * (mask * chosen))
            if training is not None and "training" in wrappers._call_arguments(layer):
                kwargs["training"] = training
            return layer.call(inputs, **kwargs)
        finally:
            object.__setattr__(layer, attribute, weight)

    def bookkeeping_variables(self):
        """The parent's (step, mask, threshold) plus `learning`: pruning state, never rewound (scores are)."""
        return super().bookkeeping_variables() + [self.learning]

    def _fan_in(self):
        return int(np.prod(self.pruning_vars[0][0].shape[:-1]))

    def set_signed_constant(self):
        """Replaces the kernel by sign(w) * std(w), std over the layer's current kernel (population std)."""
        weight = self.pruning_vars[0][0]
        kernel = weight.numpy().astype(np.float64)
        weight.assign((np.sign(kernel) * kernel.std()).astype(weight.dtype.as_numpy_dtype))

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed, frozen_weights=self.frozen_weights)
        return config


@keras.utils.register_keras_serializable(package="keras_lottery")
class PruneLowSupermask(_FrozenScores):
    """Zhou et al.'s supermask: Bernoulli(sigmoid(s)) masks on frozen weights (see the module docstring).

    Args:
      layer: a Dense or Conv2D layer.
      pruning_schedule: default `OneShot(0.0)` (masks stay ones until `finalize`).
      seed: seeds the Bernoulli draws, with the layer's name and the draw step.
      frozen_weights: 'init' or 'signed_constant' (recorded; `prune_low_supermask` applies it).
      score_init: the scores' initial value (the code's `--sigmoid_bias`, default 0).
      **kwargs: passed to `PruneLowMagnitude`.
    """

    def __init__(self, layer, pruning_schedule=None, seed=0, frozen_weights="init", score_init=0.0, **kwargs):
        _check_score_init(score_init)
        super().__init__(layer, pruning_schedule=pruning_schedule, seed=seed, frozen_weights=frozen_weights, **kwargs)
        self.score_init = float(score_init)

    def build(self, input_shape):
        super().build(input_shape)
        # Training calls so far: the draw of a call is a function of (seed, layer, this counter).
        self.draw_step = self.add_weight("draw_step", shape=(), initializer="zeros", dtype=tf.int64, trainable=False,
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def bookkeeping_variables(self):
        return super().bookkeeping_variables() + [self.draw_step]

    def _score_initializer(self, shape, dtype=None):
        return tf.fill(shape, tf.constant(self.score_init, dtype or tf.float32))

    def probabilities(self):
        """sigmoid(s) as a tensor."""
        return tf.sigmoid(self.score_vars[0])

    def sampled_mask(self, step):
        """The 0/1 Bernoulli(sigmoid(s)) mask a training call at draw step `step` uses (a tensor)."""
        seed = tf.random.experimental.stateless_fold_in(tf.constant(self._layer_seed, tf.int64),
                                                        tf.cast(step, tf.int64))
        uniform = tf.random.stateless_uniform(self.score_vars[0].shape, seed=seed, dtype=tf.float32)
        return tf.cast(uniform < self.probabilities(), tf.float32)

    def deterministic_mask(self):
        """The inference mask sigmoid(s) > 0.5 (a tensor)."""
        return tf.cast(self.probabilities() > 0.5, tf.float32)

    def _sample(self):
        step = self.draw_step.read_value()
        self.draw_step.assign_add(1)  # after the read: automatic control dependencies keep program order
        return _straight_through(self.sampled_mask(step), self.probabilities())

    def _learned_mask(self, training):
        if isinstance(training, (bool, int)):
            return self._sample() if training else self.deterministic_mask()
        return tf.cond(tf.cast(training, tf.bool), self._sample, self.deterministic_mask)

    def score_values(self):
        """The raw scores s (higher survives; monotone in sigmoid(s), with no float32 saturation ties)."""
        return self.score_vars[0].numpy()

    def density(self):
        """Mean sigmoid(s): the expected fraction of the layer a draw keeps."""
        return float(np.mean(self.probabilities().numpy()))

    def get_config(self):
        config = super().get_config()
        config["score_init"] = self.score_init
        return config


@keras.utils.register_keras_serializable(package="keras_lottery")
class PruneLowEdgePopup(_FrozenScores):
    """Ramanujan et al.'s edge-popup: the top-k weights by |score| on frozen weights (see the module docstring).

    Args:
      layer: a Dense or Conv2D layer.
      sparsity: the fraction of the layer's weights the forward pass drops, in [0, 1).
      pruning_schedule: default `OneShot(0.0)` (masks stay ones until `finalize`).
      seed: seeds the scores' initialization, with the layer's name.
      frozen_weights: 'init' or 'signed_constant' (recorded; `prune_low_edge_popup` applies it).
      **kwargs: passed to `PruneLowMagnitude`.
    """

    def __init__(self, layer, sparsity=0.5, pruning_schedule=None, seed=0, frozen_weights="init", **kwargs):
        masks_lib.check_sparsity(sparsity, f"sparsity of layer {getattr(layer, 'name', layer)!r}")
        super().__init__(layer, pruning_schedule=pruning_schedule, seed=seed, frozen_weights=frozen_weights, **kwargs)
        self.sparsity = float(sparsity)

    def build(self, input_shape):
        super().build(input_shape)
        self.keep = masks_lib.keep_count(int(np.prod(self.score_vars[0].shape)), self.sparsity)

    def _score_initializer(self, shape, dtype=None):
        # PyTorch's kaiming_uniform_(a=sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in).
        bound = 1.0 / np.sqrt(self._fan_in())
        return tf.random.stateless_uniform(shape, seed=self._layer_seed, minval=-bound, maxval=bound,
                                           dtype=dtype or tf.float32)

    def selected_mask(self):
        """The 0/1 mask of the top-k |s| the forward pass uses (a tensor; gradient straight to |s|)."""
        magnitude = tf.abs(self.score_vars[0])
        flat = tf.reshape(magnitude, [-1])
        # top_k puts the lower index first among equal values, as masks.top_k_mask's tie rule.
        _, indices = tf.math.top_k(tf.stop_gradient(flat), k=self.keep, sorted=True)
        selected = tf.scatter_nd(indices[:, None], tf.ones([self.keep], tf.float32), tf.shape(flat, tf.int32))
        return _straight_through(tf.reshape(selected, tf.shape(magnitude)), magnitude)

    def _learned_mask(self, training):
        del training  # the same top-k in training and inference
        return self.selected_mask()

    def score_values(self):
        """|s| (higher survives)."""
        return np.abs(self.score_vars[0].numpy())

    def density(self):
        """The fraction of the layer the forward pass keeps, keep_count(size, sparsity) / size."""
        return self.keep / int(np.prod(self.score_vars[0].shape))

    def get_config(self):
        config = super().get_config()
        config["sparsity"] = self.sparsity
        return config


# ----------------------------------------------------------------------------------------
# Wrapping a model, reading the scores, finalizing.


def _walk(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def _checked_model(model, function_name):
    """The model as tf_keras, after refusing what the wrappers cannot freeze (before any work)."""
    single_layer = isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model)
    if isinstance(model, (list, tuple)) or single_layer:
        raise TypeError(f"{function_name} takes a Sequential or functional model (it wraps every Dense and Conv2D "
                        f"layer of it); got {type(model).__name__}.")
    model = compat.to_tf_keras(model, f"The model given to {function_name}")
    compat.check_model(model, f"The model given to {function_name}")
    for layer in _walk(model):
        if isinstance(layer, wrappers.tfmot_wrapper.PruneLowMagnitude):
            raise ValueError(f"layer {layer.layer.name!r} is wrapped already: give {function_name} the dense model "
                             "(strip_pruning first).")
        if not _supported(layer) and wrappers._has_prunable_weights(layer):
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has weights to prune, but "
                             f"{function_name} wraps Dense and Conv2D layers only: its weights would train. "
                             "Replace the layer, or freeze it yourself and build the model without it.")
    if not any(_supported(layer) for layer in _walk(model)):
        raise ValueError(f"{model.name} has no Dense or Conv2D layer for {function_name} to wrap.")
    return model


def _wrap(model, make_wrapper, weights, function_name):
    def schedule_for(layer):
        return schedules.OneShot(0.0) if _supported(layer) else None

    wrapped = wrappers.wrap_layers(model, schedule_for, None, make_wrapper, function_name)
    wrappers.manage_masks(wrapped)  # `finalize` sets the masks: training without UpdateMasks is meant
    if weights == "signed_constant":
        # After wrap_layers, which copied the input's kernels into the clone: the std is the initial kernel's.
        for wrapper in supermask_wrappers(wrapped):
            wrapper.set_signed_constant()
    return wrapped


def prune_low_supermask(model, seed=0, weights="init", score_init=0.0):
    """Wraps every Dense and Conv2D layer for Zhou et al.'s supermask training (weights frozen).

    Args:
      model: a Sequential or functional tf_keras model (or a Keras 3 one, converted); unchanged.
      seed: seeds the Bernoulli draws (with each layer's name and its draw step).
      weights: 'init' (the model's weights) or 'signed_constant' (each kernel -> sign(w) * std(w)).
      score_init: the scores' initial value (0: sigmoid 0.5, the paper's code's default).

    Returns:
      A new model whose wrapped layers train only their scores; masks all ones.

    Raises:
      TypeError: not a model, or a bad seed.
      ValueError: unknown `weights`, a non-finite `score_init`, a wrapped model, a prunable layer
        other than Dense/Conv2D, or no Dense/Conv2D layer at all.
    """
    seed = _check_seed(seed)
    _check_weights(weights)
    _check_score_init(score_init)
    model = _checked_model(model, "prune_low_supermask")

    def make_wrapper(layer, schedule, **kwargs):
        return PruneLowSupermask(layer, pruning_schedule=schedule, seed=seed, frozen_weights=weights,
                                 score_init=score_init, **kwargs)

    return _wrap(model, make_wrapper, weights, "prune_low_supermask")


def prune_low_edge_popup(model, sparsity, seed=0, weights="init"):
    """Wraps every Dense and Conv2D layer for Ramanujan et al.'s edge-popup (weights frozen).

    Args:
      model: a Sequential or functional tf_keras model (or a Keras 3 one, converted); unchanged.
      sparsity: the fraction each layer's forward pass drops, a float in [0, 1), or a dict mask
        name (the layer's name) -> float naming every Dense/Conv2D layer (e.g. from
        `methods.distributions`).
      seed: seeds the scores' initialization (with each layer's name).
      weights: 'init' (the model's weights) or 'signed_constant' (each kernel -> sign(w) * std(w)).

    Returns:
      A new model whose wrapped layers train only their scores; masks all ones.

    Raises:
      TypeError: not a model, a bad seed or sparsity type.
      ValueError: a sparsity outside [0, 1), a dict that misses or adds layers, unknown `weights`,
        a wrapped model, a prunable layer other than Dense/Conv2D, or no Dense/Conv2D layer at all.
    """
    seed = _check_seed(seed)
    _check_weights(weights)
    if isinstance(sparsity, dict):
        for name, value in sparsity.items():
            masks_lib.check_sparsity(value, f"sparsity of layer {name!r}")
    else:
        masks_lib.check_sparsity(sparsity)
    model = _checked_model(model, "prune_low_edge_popup")
    if isinstance(sparsity, dict):
        names = [layer.name for layer in _walk(model) if _supported(layer)]
        missing, unknown = sorted(set(names) - set(sparsity)), sorted(set(sparsity) - set(names))
        if missing or unknown:
            raise ValueError(f"the sparsity dict must name every Dense/Conv2D layer, {names}; it misses {missing} "
                             f"and names unknown layers {unknown}.")

    def make_wrapper(layer, schedule, **kwargs):
        rate = sparsity[layer.name] if isinstance(sparsity, dict) else sparsity
        return PruneLowEdgePopup(layer, sparsity=rate, pruning_schedule=schedule, seed=seed, frozen_weights=weights,
                                 **kwargs)

    return _wrap(model, make_wrapper, weights, "prune_low_edge_popup")


def supermask_wrappers(model):
    """The supermask and edge-popup wrappers of `model`, in model order."""
    return [wrapper for wrapper in wrappers.prunable_wrappers(model) if isinstance(wrapper, _FrozenScores)]


def _entries(model):
    """(mask name, wrapper) of every prunable weight, after checking they are all ours."""
    entries = wrappers.pruning_entries(model)
    others = [name for name, wrapper, _, _ in entries if not isinstance(wrapper, _FrozenScores)]
    if others or not entries:
        found = f"layers {others} have other pruning wrappers" if others else "it has no pruning wrappers"
        raise ValueError(f"expected a model from prune_low_supermask or prune_low_edge_popup; {found}.")
    return [(name, wrapper) for name, wrapper, _, _ in entries]


def scores(model):
    """dict mask name -> NumPy score, higher survives: supermask s, edge-popup |s|; model order.

    Raises:
      ValueError: the model has other (or no) pruning wrappers.
    """
    return {name: wrapper.score_values() for name, wrapper in _entries(model)}


def expected_density(model):
    """dict mask name -> the fraction the method's own rule keeps: mean sigmoid(s), or keep_count / size.

    Raises:
      ValueError: the model has other (or no) pruning wrappers.
    """
    return {name: wrapper.density() for name, wrapper in _entries(model)}


def finalize(model, sparsity, strategy="layerwise"):
    """Masks from the scores by `masks.compute`, and the wrappers switched to plain masked layers.

    After it the forward pass (training or not) is op(x, kernel * mask) + bias, the weights still
    frozen; the switch is the non-trainable `learning` variable, so a compiled step needs no retrace.

    Args:
      model: a model from `prune_low_supermask` or `prune_low_edge_popup`.
      sparsity: a float, or dict mask name -> float (layerwise only), as `masks.compute`.
      strategy: 'layerwise' or 'global'.

    Returns:
      dict mask name -> the 0/1 float32 mask set.

    Raises:
      ValueError: the model has other (or no) pruning wrappers, or `masks.compute` refuses the
        sparsity or strategy.
    """
    new_masks = masks_lib.compute(scores(model), sparsity, strategy)
    for wrapper in supermask_wrappers(model):
        wrapper.learning.assign(0.0)
    wrappers.set_masks(model, new_masks)
    return new_masks
