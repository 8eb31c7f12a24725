"""Pruning at initialization: SNIP, GraSP and SynFlow scores, and `prune_at_init`.

Each score function reads a wrapped model (its effective kernels `w * m`) and returns
dict mask name -> score array shaped like the kernel, **higher survives**, for
`masks.compute` (the package's one mask function; ties, counts and "masks only shrink"
are its rules). `prune_at_init` computes the scores, the masks and assigns them.

* **SNIP** (Lee et al. 2019): `|g * w|`, g the gradient of the loss on one batch.
* **GraSP** (Wang et al. 2020): the paper scores `S = -w * (H g)` and removes the weights with
  the *largest* S (alecwangcq/GraSP, `pruner/GraSP.py`: `-theta * Hg`, then keeps
  `S <= the cut`). `grasp_scores` returns `w * (H g) = -S`, so keeping the top-k of the
  returned score is GraSP's rule. As that code, the logits are divided by a temperature
  (T = 200) and H g is a Hessian-vector product by double backprop, with g the
  (stopped) gradient restricted to the prunable kernels.
* **SynFlow** (Tanaka et al. 2020): data-free. Every weight of the network is replaced by its
  absolute value (kernels, biases and, as ganguli-lab/Synaptic-Flow's `linearize` does with
  the whole `state_dict`, BatchNorm's gamma, beta and moving mean and variance), BatchNorm
  runs in inference mode (that code prunes in `model.eval()`), R is the sum of the outputs on
  one all-ones input, and the score is `|w * dR/dw|`. This is computed on a float64 copy of
  the model's layers, not on the model: R grows geometrically with depth (each layer
  multiplies it by about fan-in x mean |w|, some 25-80 for 3x3 convolutions at Glorot init),
  so deep nets overflow float32 (3.4e38); float64 reaches 1.8e308. The model's weights and
  masks are never modified, so there is nothing to restore.
* `prune_at_init` is one-shot for SNIP and GraSP and, by default, iterative for SynFlow with
  100 rounds (the paper's) on its exponential schedule: after round k of n the kept fraction
  is `(1 - sparsity) ** (k / n)` (Synaptic-Flow's `prune.py`: `sparse = density ** ((epoch +
  1) / epochs)`), each round re-scored with the current masks applied.

SNIP and GraSP run the model in inference mode (`training=False`: moving statistics, no
dropout) so that scoring changes nothing in the model; at initialization BatchNorm's moving
statistics are (0, 1), so it acts as a fixed affine map. The authors' code ran the network in
training mode (batch statistics).
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

from keras_lottery import compat
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import pruning
from keras_lottery.sparsity import wrappers

keras = compat.keras

GRASP_TEMPERATURE = 200.0  # alecwangcq/GraSP's T: logits / T before the cross-entropy


def _entries(model, what):
    """The model's pruning entries, after checking it has wrappers."""
    compat.check_not_keras3(model)
    if not isinstance(model, keras.Model) or not wrappers.prunable_wrappers(model):
        raise ValueError(f"{what} scores the kernels of pruning wrappers, and the model has none: wrap it with "
                         "keras_lottery.prune_low_magnitude(model) first.")
    return wrappers.pruning_entries(model)


def _batch(x, y):
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x holds {x.shape[0]} examples and y {y.shape[0]} labels: pass one batch of both.")
    return x, y


def _loss(loss):
    return loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _zeros_if_none(gradients, variables):
    return [tf.zeros_like(variable) if gradient is None else gradient
            for gradient, variable in zip(gradients, variables)]


def snip_scores(model, x, y, loss=None):
    """SNIP's connection sensitivity `|g * w|` of every prunable weight on one batch.

    Args:
      model: a model with pruning wrappers (at initialization, usually).
      x: a batch of inputs.
      y: their labels (integer class ids for the default loss).
      loss: callable (y_true, y_pred) -> scalar; default sparse categorical cross-entropy on
        logits.

    Returns:
      dict mask name -> float64 scores shaped like the kernel (pruned weights score 0).

    Raises:
      ValueError: a model without pruning wrappers, or x and y of different lengths.
    """
    entries = _entries(model, "snip_scores")
    x, y = _batch(x, y)
    kernels = [weight for _, _, weight, _ in entries]
    with tf.GradientTape() as tape:
        tape.watch(kernels)
        value = _loss(loss)(y, model(x, training=False))
    gradients = _zeros_if_none(tape.gradient(value, kernels), kernels)
    return {name: np.abs(gradient.numpy().astype(np.float64) * weight.numpy() * mask.numpy())
            for (name, _, weight, mask), gradient in zip(entries, gradients)}


def hessian_gradient_product(model, x, y, loss=None, temperature=1.0):
    """H g of the loss on one batch, by double backprop, over the prunable kernels.

    g is the gradient of `loss(y, model(x) / temperature)` with respect to the kernels and H
    the Hessian of the same loss with respect to them; g is held constant (stopped) in the
    second differentiation, so this is `d/dw (g_stopped . g(w)) = H g`.

    Args:
      model, x, y, loss: as `snip_scores`.
      temperature: the logits are divided by it before the loss.

    Returns:
      dict mask name -> H g as a float64 array shaped like the kernel.

    Raises:
      ValueError: as `snip_scores`.
    """
    entries = _entries(model, "hessian_gradient_product")
    x, y = _batch(x, y)
    kernels = [weight for _, _, weight, _ in entries]
    loss = _loss(loss)
    with tf.GradientTape() as outer:
        outer.watch(kernels)
        with tf.GradientTape() as inner:
            inner.watch(kernels)
            value = loss(y, model(x, training=False) / temperature)
        gradients = _zeros_if_none(inner.gradient(value, kernels), kernels)
        product = tf.add_n([tf.reduce_sum(tf.stop_gradient(gradient) * gradient) for gradient in gradients])
    products = _zeros_if_none(outer.gradient(product, kernels), kernels)
    return {name: product.numpy().astype(np.float64) for (name, _, _, _), product in zip(entries, products)}


def grasp_scores(model, x, y, loss=None, temperature=GRASP_TEMPERATURE):
    """GraSP's scores as "higher survives": `w * (H g)`, the negative of the paper's `S = -w * (H g)`.

    GraSP removes the weights whose removal least reduces the gradient flow, the largest S;
    keeping the top-k of `w * (H g)` is that rule (see the module docstring for the source).
    GraSP's code scores a class-balanced batch (`samples_per_class` of each class): pass one.

    Args:
      model, x, y, loss: as `snip_scores`.
      temperature: logits are divided by it (GraSP's code uses 200).

    Returns:
      dict mask name -> float64 scores shaped like the kernel (pruned weights score 0; scores
      may be negative).

    Raises:
      ValueError: as `snip_scores`.
    """
    products = hessian_gradient_product(model, x, y, loss, temperature)
    return {name: weight.numpy().astype(np.float64) * mask.numpy() * products[name]
            for name, _, weight, mask in wrappers.pruning_entries(model)}


# ----------------------------------------------------------------------------------------
# SynFlow: a float64 copy of the model's layers that holds |w| * m.


def _float64_layer(layer):
    """A float64, unwrapped copy of `layer` (nested models copied layer by layer)."""
    if isinstance(layer, keras.Model):
        return keras.models.clone_model(layer, clone_function=_float64_layer)
    inner = layer.layer if isinstance(layer, tfmot_wrapper.PruneLowMagnitude) else layer
    config = inner.get_config()
    config["dtype"] = "float64"
    return inner.__class__.from_config(config)


def _paired_layers(model, copy):
    """(unwrapped layer of `model`, its pruning wrapper or None, the copy's layer) for every layer."""
    by_name = {layer.name: layer for layer in copy.layers}
    for layer in model.layers:
        wrapped = isinstance(layer, tfmot_wrapper.PruneLowMagnitude)
        inner = layer.layer if wrapped else layer
        target = by_name[inner.name]
        if isinstance(layer, keras.Model):
            yield from _paired_layers(layer, target)
        else:
            yield inner, layer if wrapped else None, target


class SynflowNetwork:
    """The model's layers in float64 with every weight replaced by |w| * m, for SynFlow scores.

    Built once; `scores()` reloads the weights and masks from the model each call, so the
    rounds of iterative SynFlow share one copy. The model itself is only read.

    Args:
      model: a model with pruning wrappers.
      input_shape: one input's shape without the batch dimension (a list of them for a
        model with several inputs); default the model's own.
    """

    def __init__(self, model, input_shape=None):
        self.entries = _entries(model, "synflow_scores")
        if input_shape is None:
            input_shape = [tuple(tensor.shape[1:]) for tensor in model.inputs] if model.inputs else None
        elif input_shape and not isinstance(input_shape[0], (list, tuple)):
            input_shape = [input_shape]
        if not input_shape or any(size is None for shape in input_shape for size in shape):
            raise ValueError(f"synflow_scores needs the input shape without the batch dimension, e.g. (8, 8, 1); the "
                             f"model's is {getattr(model, 'input_shape', None)}: pass input_shape=.")
        self.inputs = [tf.ones((1,) + tuple(int(size) for size in shape)) for shape in input_shape]
        self.copy = keras.models.clone_model(model, clone_function=_float64_layer)
        self.pairs = list(_paired_layers(model, self.copy))
        by_wrapper = {id(wrapper): target for _, wrapper, target in self.pairs if wrapper is not None}
        self.kernels = []  # the copy's variable for each mask name, in model order
        for _, wrapper, weight, _ in self.entries:
            index = next(i for i, variable in enumerate(wrapper.layer.weights) if variable is weight)
            self.kernels.append(by_wrapper[id(wrapper)].weights[index])

    def load(self):
        """Sets the copy's weights to |w| * m of the model's current weights and masks (in float64)."""
        for inner, wrapper, target in self.pairs:
            if not inner.weights:
                continue
            masks_by_weight = {} if wrapper is None else {id(weight): mask for weight, mask, _ in wrapper.pruning_vars}
            values = [variable.numpy().astype(np.float64) * (masks_by_weight[id(variable)].numpy()
                                                            if id(variable) in masks_by_weight else 1.0)
                      for variable in inner.weights]
            target.set_weights([np.abs(value) for value in values])

    def scores(self):
        """dict mask name -> float64 `|w * dR/dw|` at the model's current weights and masks.

        Raises:
          ValueError: R is not finite even in float64.
        """
        self.load()
        with tf.GradientTape() as tape:
            tape.watch(self.kernels)
            outputs = self.copy(self.inputs if len(self.inputs) > 1 else self.inputs[0], training=False)
            total = tf.add_n([tf.reduce_sum(tf.cast(output, tf.float64)) for output in tf.nest.flatten(outputs)])
        if not np.isfinite(total.numpy()):
            raise ValueError(f"SynFlow's R (the summed output of the network with |w| on all-ones input) is "
                             f"{total.numpy()} even in float64: the network is too deep for this score without "
                             "rescaling.")
        gradients = _zeros_if_none(tape.gradient(total, self.kernels), self.kernels)
        return {name: np.abs(kernel.numpy() * gradient.numpy())
                for (name, _, _, _), kernel, gradient in zip(self.entries, self.kernels, gradients)}


def synflow_scores(model, input_shape=None):
    """SynFlow's data-free scores `|w * dR/dw|` (see the module docstring for |w|, BatchNorm, float64).

    Args:
      model: a model with pruning wrappers.
      input_shape: one input's shape without the batch dimension; default the model's.

    Returns:
      dict mask name -> float64 scores shaped like the kernel (pruned weights score 0). The
      model's weights and masks are left exactly as they were (only a copy is changed).

    Raises:
      ValueError: a model without wrappers, an unknown input shape, or R overflowing float64.
    """
    return SynflowNetwork(model, input_shape).scores()


# ----------------------------------------------------------------------------------------
# The registry and prune_at_init.


def _on_batch(score):
    def make(model, data, rng, loss):
        del rng
        x, y = _batch(*data)
        return lambda: score(model, x, y, loss)
    return make


def _synflow(model, data, rng, loss):
    del rng, loss
    network = SynflowNetwork(model, None if data is None else tuple(np.shape(data[0])[1:]))
    return network.scores


def _criterion(criterion):
    def make(model, data, rng, loss):
        del data, loss
        return lambda: pruning.scores(model, criterion, rng)
    return make


# name -> function (model, data, rng, loss) -> scorer, a callable () -> scores read from the model's
# current state; prune_at_init calls the scorer once per round.
METHODS = {"snip": _on_batch(snip_scores), "grasp": _on_batch(grasp_scores), "synflow": _synflow,
           "magnitude": _criterion("magnitude"), "random": _criterion("random")}
NEEDS_DATA = ("snip", "grasp")
DEFAULT_ITERATIONS = {"synflow": 100}  # the others are one-shot


def get(method):
    """The registry entry for `method` (a callable is returned as it is).

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    if callable(method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown pruning-at-init method {method!r}; choose one of {sorted(METHODS)} "
                         "(or pass a callable (model, data, rng, loss) -> scorer).")
    return METHODS[method]


def round_sparsity(sparsity, round_index, iterations):
    """Sparsity after round `round_index` of `iterations`: kept fraction `(1 - sparsity) ** (k / n)`.

    Exactly `sparsity` at the last round (no float round-off in the final count).
    """
    if round_index >= iterations:
        return sparsity
    return 1.0 - (1.0 - float(sparsity)) ** (round_index / iterations)


def _check_data(name, data):
    if data is None:
        if name in NEEDS_DATA:
            raise ValueError(f"method {name!r} scores weights with the loss's gradient on a batch: pass "
                             "data=(x, y), e.g. data=(x_train[:256], y_train[:256]).")
        return None
    if isinstance(data, tf.data.Dataset):
        data = next(iter(data))  # its first batch
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"data must be (x, y): one batch of inputs and their labels; got {type(data).__name__}"
                         f"{f' of length {len(data)}' if isinstance(data, (tuple, list)) else ''}.")
    if len(data[0]) != len(data[1]):
        raise ValueError(f"data=(x, y) holds {len(data[0])} inputs and {len(data[1])} labels: pass as many of each.")
    return tuple(data)


def prune_at_init(model, method, sparsity, data=None, iterations=None, strategy="global", rng=None, loss=None):
    """Scores the model at its current (initial) weights with `method` and assigns masks at `sparsity`.

    Masks come from `masks.compute` and go to the wrappers with `wrappers.set_masks`, as
    `pruning.prune` does; masks only shrink (weights pruned already stay pruned).

    Args:
      model: a model with pruning wrappers.
      method: 'snip', 'grasp', 'synflow', or the data-free baselines 'magnitude' and
        'random'; or a callable (model, data, rng, loss) -> scorer (see `METHODS`).
      sparsity: the final fraction pruned, in [0, 1): a float, or dict mask name -> float
        (e.g. from `distributions.erk`) with strategy 'layerwise'.
      data: (x, y), one batch (or a `tf.data.Dataset`, whose first batch is used); needed
        by SNIP and GraSP. SynFlow uses only its input shape, if given.
      iterations: scoring rounds on the exponential schedule (`round_sparsity`); default
        100 for SynFlow (the paper's), 1 (one-shot) for the others.
      strategy: 'global' (one ranking across layers, as the papers) or 'layerwise'.
      rng: NumPy Generator for 'random' (default: seed 0).
      loss: for SNIP and GraSP; default sparse categorical cross-entropy on logits.

    Returns:
      dict mask name -> the new 0/1 masks.

    Raises:
      ValueError: an unknown method or strategy, SNIP/GraSP without data, malformed data, a
        sparsity outside [0, 1) or a dict of them with strategy 'global' or not naming every
        layer, iterations below 1, or a model without pruning wrappers. All are checked before
        any scoring.
    """
    make_scorer = get(method)
    name = method if isinstance(method, str) else getattr(method, "__name__", "callable")
    masks_lib.check_strategy(strategy)
    entries = _entries(model, "prune_at_init")
    names = [entry[0] for entry in entries]
    if isinstance(sparsity, dict):
        if strategy == "global":
            raise ValueError("per-layer sparsities need strategy='layerwise' (strategy='global' ranks all layers "
                             "against one sparsity).")
        if sorted(sparsity) != sorted(names):
            raise ValueError(f"sparsity names layers {sorted(sparsity)}; the model's prunable layers are {names}.")
        for layer, value in sparsity.items():
            masks_lib.check_sparsity(value, f"sparsity of layer {layer!r}")
    else:
        masks_lib.check_sparsity(sparsity)
    if iterations is None:
        iterations = DEFAULT_ITERATIONS.get(name, 1)
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1 (1 is one-shot); got {iterations!r}.")
    data = _check_data(name, data)
    patterns = wrappers.patterns(model)
    if patterns and strategy == "global":
        raise ValueError(f"layers {sorted(patterns)} have block or m-by-n patterns, which strategy='global' cannot "
                         "rank: pass strategy='layerwise'.")

    scorer = make_scorer(model, data, rng or np.random.default_rng(0), loss)
    current = wrappers.get_masks(model)
    for round_index in range(1, int(iterations) + 1):
        if isinstance(sparsity, dict):
            target = {layer: round_sparsity(value, round_index, iterations) for layer, value in sparsity.items()}
        else:
            target = round_sparsity(sparsity, round_index, iterations)
        current = masks_lib.compute(scorer(), target, strategy, previous_masks=current, patterns=patterns)
        wrappers.set_masks(model, current)  # the next round scores the model with these masks applied
    return current
