"""Learned sparsity: L0 regularization (hard-concrete gates) and sparse variational dropout.

The two methods "The state of sparsity in deep neural networks" (Gale et al. 2019) compared
magnitude pruning with, as subclasses of our magnitude wrapper (`wrappers.PruneLowMagnitude`),
so tfmot's mask variables, `get_masks`/`set_masks`, `strip_pruning` and the package's flows
keep working. Masks stay all ones while the method learns; `finalize` then turns the
method's own per-weight score into masks with `masks.compute` (the package's one mask
function) and makes the wrappers plain masked layers.

    model = prune_low_l0(dense_model, coefficient=0.1 / 60000)
    model.compile(...); model.fit(...)           # no UpdateMasks needed
    finalize(model, sparsity=0.9)                # masks from log_alpha, gates folded in

**L0** (Louizos, Welling & Kingma 2018, "Learning sparse neural networks through L0
regularization"; AMLab-Amsterdam/L0_regularization, `l0_layers.py`). One trainable
`log_alpha` per kernel weight and a hard-concrete gate (beta = 2/3, gamma = -0.1, zeta =
1.1). Training: `u ~ U(1e-6, 1 - 1e-6)`, `s = sigmoid((log u - log(1 - u) + log_alpha) /
beta)`, `z = clip(s (zeta - gamma) + gamma, 0, 1)`, kernel `w * z * mask`. Inference: `z =
clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)`. Penalty: `coefficient * sum
sigmoid(log_alpha - beta log(-gamma / zeta))`, the expected number of nonzero gates.
Where this differs from the official code:

* Gates are per weight (Gale et al.'s unstructured setting); `L0Dense` gates input units and
  `L0Conv2d` output channels.
* The penalty is the L0 term only. `_reg_w` also adds an L2 prior `0.5 * prior_prec * w**2`
  weighted by P(z != 0); use the optimizer's weight decay or a kernel regularizer instead.
* `log_alpha` starts as the code's `reset_parameters`: N(log(1 - d) - log(d), 0.01) with
  `d = droprate_init` (default 0.5, `L0Dense`'s default; `L0MLP` uses 0.2 for its first layer).
  The code's `constrain_parameters` (clamping log_alpha to [log 0.01, log 100] after each step)
  and its parameter EMA are not done.
* One gate sample per training call, shared by the batch (the code's default `local_rep=False`).

**Sparse variational dropout** (Molchanov, Ashukha & Vetrov 2017, "Variational dropout
sparsifies deep neural networks"; ars-ashuha/variational-dropout-sparsifies-dnn, now
bayesgroup/..., `svdo-lasagne/nets/layers.py`). The kernel is theta, plus one trainable `log_sigma2` per
weight (init -10, the code's `ard_init`); `log_alpha = clip(log_sigma2 - log(theta**2 +
1e-8), -8, 8)` (the code's conv layer; its dense layer omits the 1e-8). Training by the local
reparameterization trick, for Dense and Conv2D alike: `mean = op(x, theta * mask)`, `variance
= op(x**2, exp(log_sigma2) * mask)`, `out = mean + sqrt(variance + 1e-8) * eps`, then the
layer's bias and activation. The variance uses sigma**2 itself (the paper's additive
reparameterization); the code uses `exp(log_alpha) * theta**2`, the same wherever log_alpha is
inside the clip. Penalty: `coefficient * sum -(k1 sigmoid(k2 + k3 log_alpha) - 0.5
log1p(exp(-log_alpha)) - k1)`, k1 = 0.63576, k2 = 1.87320, k3 = 1.48695. Inference is `op(x,
theta * mask)`: the code's `log_alpha >= 3` cut (and `train_clip`) is not applied, the masks
decide; `expected_density` reports what that cut would keep. `scores` ranks by the *unclipped*
log_alpha, so weights beyond the clip are not tied.

**Common to both.**

* `coefficient` multiplies the penalty, which `add_loss` adds to the batch-mean loss of each
  training call (not to `evaluate`'s loss). The papers' per-example objective (loss + penalty /
  N) is `coefficient = lambda / N`, N the training-set size; the caller divides. The defaults
  are for MNIST (N = 60,000): L0 0.1 / N (the lambda = 0.1 / N of the paper's MNIST MLP, as we
  read its Table 1; the code's default `lamba=1` is 1 / N), VD 1 / N (the ELBO's KL weight; the
  code warms it up from 0 to 1 over epochs 5-20, `optpolicy.rw_linear`: do so with
  `set_coefficient`). It lives in a non-trainable variable: changing it never retraces.
* Noise is `stateless_*(seed = fold_in([seed, crc32(layer name)], noise_step))`, `noise_step` a
  variable counting the wrapper's training calls: a resumed run draws the same noise. Only a
  Python `training=True` (what `fit` passes) trains; a tensor-valued `training` is inference.
* After `finalize`, the variable `learning` is 0: the forward pass is exactly `op(x, kernel *
  mask)` + bias, in training too, and the penalty is 0. The gate parameters stay trainable
  variables but get zero gradients (an optimizer's momentum may still move them; they no longer
  affect anything). `finalize` refuses a second call. Before `finalize`, `strip_pruning` would
  drop L0's gates: finalize first.
* Only Dense and Conv2D layers (not Conv2DTranspose) are wrapped; other layers stay dense.
  Mixed precision is refused. The classes register with Keras when this module is imported:
  import it before `load_model` (or pass `custom_objects()`).
"""

from keras_lottery import compat
from keras_lottery.compat import keras3_conversion
from keras_lottery.methods.learned_wrappers import (  # noqa: F401  (part of this module's API)
    BETA,
    DEFAULT_L0_COEFFICIENT,
    DEFAULT_VD_COEFFICIENT,
    GAMMA,
    ZETA,
    LearnedSparsity,
    PruneLowL0,
    PruneLowVariationalDropout,
    check_coefficient,
    check_droprate,
    check_log_sigma2_init,
    check_precision,
    check_seed,
    supported,
)
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

keras = compat.keras


# ----------------------------------------------------------------------------------------
# Wrapping a model.


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _wrap(model, function_name, layers_to_ignore, make_wrapper):
    model = keras3_conversion.to_tf_keras(model, "The model to wrap")
    compat.check_not_keras3(model, "The model to wrap")
    if not isinstance(model, keras.Model):
        raise TypeError(f"{function_name} takes a tf_keras Sequential or functional model; got {type(model).__name__}.")
    compat.check_model(model, "The model to wrap")
    if isinstance(layers_to_ignore, str) or not all(isinstance(name, str) for name in layers_to_ignore):
        raise TypeError(f"layers_to_ignore must be a list of layer names; got {layers_to_ignore!r}.")
    ignore = set(layers_to_ignore)
    names = {layer.name for layer in _all_layers(model)}
    if ignore - names:
        raise ValueError(f"layers_to_ignore names {sorted(ignore - names)}, which the model does not have; its "
                         f"layers are {sorted(names)}.")
    chosen = [layer for layer in _all_layers(model) if supported(layer) and layer.name not in ignore]
    if not chosen:
        raise ValueError(f"{function_name}: the model has no Dense or Conv2D layer to wrap (outside layers_to_ignore).")
    for layer in chosen:
        check_precision(layer)
    schedule = schedules.OneShot(0.0)  # prunes nothing: masks stay all ones until `finalize`

    def schedule_for(layer):
        return schedule if supported(layer) and layer.name not in ignore else None

    wrapped = wrappers.wrap_layers(model, schedule_for, None, make_wrapper, function_name)
    wrappers.manage_masks(wrapped)  # training without UpdateMasks is the point: the masks come from `finalize`
    return wrapped


def prune_low_l0(model, coefficient=DEFAULT_L0_COEFFICIENT, seed=0, droprate_init=0.5, layers_to_ignore=()):
    """Wraps every Dense and Conv2D layer of `model` for L0 regularization, masks all ones.

    Args:
      model: a Sequential or functional tf_keras model (a Keras 3 one is converted); it is
        not modified.
      coefficient: the penalty weight per gate; lambda / N for the paper's objective (default
        0.1 / 60000, see the module docstring). Change it later with `set_coefficient`.
      seed: integer seed of the gates' noise and of log_alpha's initialization.
      droprate_init: initial probability of a closed gate (log_alpha's mean is log((1 - d) / d)).
      layers_to_ignore: names of layers to leave dense.

    Returns:
      A new model with `PruneLowL0` wrappers.

    Raises:
      TypeError: not a tf_keras model, or layers_to_ignore not a list of names.
      ValueError: a bad coefficient, seed or droprate_init, unknown ignored names, no layer
        to wrap, or mixed precision.
    """
    check_coefficient(coefficient)
    check_seed(seed)
    check_droprate(droprate_init)

    def make_wrapper(layer, schedule, **kwargs):
        return PruneLowL0(layer, coefficient=coefficient, seed=seed, droprate_init=droprate_init,
                          pruning_schedule=schedule, **kwargs)

    return _wrap(model, "prune_low_l0", layers_to_ignore, make_wrapper)


def prune_low_variational_dropout(model, coefficient=DEFAULT_VD_COEFFICIENT, seed=0, log_sigma2_init=-10.0,
                                  layers_to_ignore=()):
    """Wraps every Dense and Conv2D layer of `model` for sparse variational dropout, masks all ones.

    Args:
      model: a Sequential or functional tf_keras model (a Keras 3 one is converted); it is
        not modified.
      coefficient: the KL weight; 1 / N for the paper's ELBO (default 1 / 60000). Warm it up
        with `set_coefficient`.
      seed: integer seed of the local reparameterization noise.
      log_sigma2_init: initial log sigma**2 of every weight.
      layers_to_ignore: names of layers to leave dense.

    Returns:
      A new model with `PruneLowVariationalDropout` wrappers.

    Raises:
      TypeError, ValueError: as `prune_low_l0` (log_sigma2_init must be finite).
    """
    check_coefficient(coefficient)
    check_seed(seed)
    check_log_sigma2_init(log_sigma2_init)

    def make_wrapper(layer, schedule, **kwargs):
        return PruneLowVariationalDropout(layer, coefficient=coefficient, seed=seed, log_sigma2_init=log_sigma2_init,
                                          pruning_schedule=schedule, **kwargs)

    return _wrap(model, "prune_low_variational_dropout", layers_to_ignore, make_wrapper)


# ----------------------------------------------------------------------------------------
# Reading, steering and finalizing.


def learned_wrappers(model, what="this function"):
    """The model's learned-sparsity wrappers, in model order, after checking it holds only one kind.

    Raises:
      ValueError: no such wrappers, other pruning wrappers beside them, or both kinds mixed
        (their scores are not comparable).
    """
    compat.check_not_keras3(model)
    found = wrappers.prunable_wrappers(model) if isinstance(model, keras.Model) else []
    kinds = {type(wrapper) for wrapper in found}
    if not found or not kinds <= {PruneLowL0, PruneLowVariationalDropout}:
        raise ValueError(f"{what} needs a model wrapped with prune_low_l0 or prune_low_variational_dropout "
                         f"(and no other pruning wrappers); its wrappers are {sorted(k.__name__ for k in kinds)}.")
    if len(kinds) > 1:
        raise ValueError(f"{what}: the model mixes L0 and variational-dropout wrappers, whose scores differ in kind.")
    wrappers.pruning_entries(model)  # fails clearly if unbuilt
    return found


def _by_name(model, read, what):
    learned = learned_wrappers(model, what)
    return {name: read(wrapper) for name, wrapper, _, _ in wrappers.pruning_entries(model) if wrapper in learned}


def scores(model):
    """dict mask name -> NumPy score, higher survives: L0 log_alpha; VD -log_alpha (unclipped).

    Raises:
      ValueError: as `learned_wrappers`.
    """
    return _by_name(model, lambda wrapper: wrapper.score_values(), "scores")


def expected_density(model):
    """dict mask name -> the fraction of weights the method keeps by its own rule.

    L0: the mean of P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)); VD: the
    fraction with log_alpha < 3. Pruned weights (mask 0) count as not kept.

    Raises:
      ValueError: as `learned_wrappers`.
    """
    return _by_name(model, lambda wrapper: wrapper.density(), "expected_density")


def penalty(model):
    """The total penalty a training call adds now (coefficient included; 0 after `finalize`)."""
    return float(sum(float(wrapper.penalty().numpy()) for wrapper in learned_wrappers(model, "penalty")))


def set_coefficient(model, value):
    """Sets every wrapper's penalty weight (a variable: no retracing), e.g. for a warm-up.

    Raises:
      TypeError, ValueError: `value` not a finite number >= 0, or as `learned_wrappers`.
    """
    check_coefficient(value)
    for wrapper in learned_wrappers(model, "set_coefficient"):
        wrapper.coefficient.assign(float(value))


def finalize(model, sparsity, strategy="global"):
    """Masks from the learned scores, the learned part folded in, the wrappers made plain.

    Computes `masks.compute(scores(model), sparsity, strategy)` (weights already pruned stay
    pruned), folds L0's deterministic gate into the kernel (VD keeps theta), sets `learning`
    to 0 (plain `op(x, kernel * mask)`, penalty 0) and assigns the masks with `set_masks`.

    Args:
      model: a model wrapped by `prune_low_l0` or `prune_low_variational_dropout`.
      sparsity: a float in [0, 1), or dict mask name -> float (as `masks.compute` takes).
      strategy: 'global' (all layers ranked together) or 'layerwise'.

    Returns:
      dict mask name -> the 0/1 masks assigned.

    Raises:
      ValueError: a model already finalized, a bad sparsity or strategy, or as `learned_wrappers`.
    """
    learned = learned_wrappers(model, "finalize")
    masks_lib.check_strategy(strategy)
    for value in (sparsity.values() if isinstance(sparsity, dict) else [sparsity]):
        masks_lib.check_sparsity(value)
    if any(float(wrapper.learning.numpy()) < 0.5 for wrapper in learned):
        raise ValueError("finalize was called on this model already: its learned parameters are folded in. Set other "
                         "masks with keras_lottery.sparsity.wrappers.set_masks (or prune) instead.")
    new_masks = masks_lib.compute(scores(model), sparsity, strategy, previous_masks=wrappers.get_masks(model))
    for wrapper in learned:
        wrapper.fold()
        wrapper.learning.assign(0.0)
    wrappers.set_masks(model, new_masks)
    return new_masks


def custom_objects():
    """`wrappers.custom_objects()`, which holds this module's wrappers once it is imported."""
    return wrappers.custom_objects()
