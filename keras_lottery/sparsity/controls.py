"""Controls for lottery-ticket research, applied at the start of a round.

Each control replaces the ticket's rewinding (see `start_round`):

* `'ticket'` (no control): surviving weights back to the rewind snapshot.
* `'random_reinit'`: same mask, fresh weights from each layer's own initializers
  (LTH's random reinitialization).
* `'random_prune'`: a random mask with the same number of weights per layer, then
  the snapshot values (LTH's random pruning baseline).
* `'signed_constant'`: `sign(snapshot) * std(layer's initial kernel)` on the
  surviving weights (Zhou et al., "Deconstructing lottery tickets").
"""

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

CONTROLS = ("ticket", "random_reinit", "random_prune", "signed_constant")


def check_control(control):
    """Raises ValueError for an unknown control name."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; choose one of {CONTROLS}.")


def random_reinit(model, seed):
    """Draws fresh values for every variable from its layer's initializer, keeps masks.

    A variable's initializer is found by Keras's naming convention: the attribute
    `kernel` is initialized by `kernel_initializer`, `gamma` by `gamma_initializer`,
    and so on. Seeded, so the same seed gives the same weights.

    Raises:
      ValueError: a variable with no initializer attribute to draw from.
    """
    compat.check_not_keras3(model)
    seeds = iter(np.random.SeedSequence(seed).generate_state(len(model.weights) + 1))
    for layer in model.layers:
        layer = getattr(layer, "layer", layer)  # the wrapped layer; masks are not its weights
        for variable in layer.weights:
            attribute = wrappers.attribute_holding(layer, variable)
            initializer = getattr(layer, f"{attribute}_initializer", None) if attribute else None
            if initializer is None:
                raise ValueError(
                    f"random_reinit cannot find the initializer of {variable.name} in layer {layer.name!r}."
                )
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = int(next(seeds))
            fresh = type(initializer).from_config(config)
            variable.assign(tf.cast(fresh(variable.shape, dtype=variable.dtype), variable.dtype))
    wrappers.apply_masks(model)


def random_prune(model, seed):
    """Replaces every mask by a random one keeping the same number of weights per layer."""
    current = wrappers.get_masks(model)
    new_masks = {}
    for index, (name, mask) in enumerate(current.items()):
        scores = np.random.default_rng([seed, index]).random(mask.shape)
        new_masks[name] = masks_lib.top_k_mask(scores, int(mask.sum()))
    wrappers.set_masks(model, new_masks)


def signed_constant(model, reference_kernels):
    """Sets each surviving weight to sign(reference) * the std of the layer's reference kernel.

    Args:
      model: a model with pruning wrappers.
      reference_kernels: dict mask name -> the kernel at the rewind point (all
        weights, pruned or not, so the std is that of the initial distribution).
    """
    for name, _, weight, mask in wrappers.pruning_entries(model):
        reference = reference_kernels[name]
        value = np.sign(reference) * np.std(reference) * mask.numpy()
        weight.assign(value.astype(weight.dtype.as_numpy_dtype))


def start_round(model, control, rewind_callback, seed):
    """Sets the weights for a new round after its masks were assigned.

    Args:
      model: the pruned model, masks already set for the round.
      control: one of `CONTROLS`.
      rewind_callback: the `RewindCallback` holding the snapshot.
      seed: seed for the random controls (use a different one per round).
    """
    check_control(control)
    if control == "random_prune":
        random_prune(model, seed)
    if control == "random_reinit":
        random_reinit(model, seed)
        callbacks.reset_optimizer(getattr(model, "optimizer", None))
        return
    rewind_callback.rewind(model)
    if control == "signed_constant":
        signed_constant(model, rewind_callback.snapshot_kernels(model))
