"""Reading and writing masks: the only place that touches the pruning wrappers' mask variables.

Works on our wrappers and tfmot's alike (`prunable_wrappers` finds both, nested models
included). Masks are keyed by the wrapped layer's name (`"<layer>/<i>"` for a layer with
several prunable weights). `wrappers` re-exports every function here.
"""

import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

from keras_lottery import compat
from keras_lottery.sparsity.tfmot_protocol import manage_masks



def prunable_wrappers(model):
    """All pruning wrappers (ours or tfmot's) in `model`, nested models included, in order."""
    return tfmot_wrapper.collect_prunable_layers(model)


def pruning_entries(model):
    """(mask name, wrapper, weight variable, mask variable) for every prunable weight."""
    compat.check_not_keras3(model)
    entries = []
    for wrapper in prunable_wrappers(model):
        several = len(wrapper.pruning_vars) > 1
        for index, (weight, mask, _) in enumerate(wrapper.pruning_vars):
            name = f"{wrapper.layer.name}/{index}" if several else wrapper.layer.name
            entries.append((name, wrapper, weight, mask))
    if not entries and prunable_wrappers(model):
        raise ValueError("The model's pruning wrappers are not built yet: call the model once, or build it.")
    return entries


def get_masks(model):
    """dict mask name -> 0/1 NumPy mask, in model order."""
    return {name: mask.numpy() for name, _, _, mask in pruning_entries(model)}


def get_weights(model):
    """dict mask name -> effective kernel (weight * mask) as NumPy, in model order."""
    return {name: weight.numpy() * mask.numpy() for name, _, weight, mask in pruning_entries(model)}


def set_masks(model, new_masks):
    """Assigns masks to the wrappers and sets pruned weights to exactly 0.

    Args:
      model: a model with pruning wrappers.
      new_masks: dict mask name -> 0/1 array; must name every prunable weight.

    Raises:
      ValueError: names or shapes do not match the model.
    """
    entries = pruning_entries(model)
    expected = [name for name, _, _, _ in entries]
    if sorted(expected) != sorted(new_masks):
        raise ValueError(
            f"masks name layers {sorted(new_masks)}, but the model's prunable layers are "
            f"{sorted(expected)}: were they saved from a different model?"
        )
    for name, _, weight, mask in entries:
        value = np.asarray(new_masks[name])
        if value.shape != tuple(mask.shape):
            raise ValueError(f"mask {name!r} has shape {value.shape}; the layer's kernel is {tuple(mask.shape)}.")
        if not np.isin(value, (0, 1)).all():
            raise ValueError(f"mask {name!r} holds values other than 0 and 1.")
        mask.assign(value.astype(mask.dtype.as_numpy_dtype))
    manage_masks(model)
    apply_masks(model)


def optimizer_slots(optimizer, weight):
    """The optimizer's state variables for `weight` (momentum, Adam moments, ...) shaped like it.

    New (non-legacy) optimizers keep one list per kind of state (`momentums`,
    `_velocities`, ...), indexed like the variables the optimizer was built on
    (`_index_dict`). Slots are found through that index, not by name: a model loaded
    from a `.keras` file names every kernel "kernel", so two layers with kernels of the
    same shape would share a slot name. Factored state (Adafactor's row/column
    statistics) has another shape and is left alone. A `LossScaleOptimizer` (mixed
    precision) is looked through to the optimizer it wraps.
    """
    if optimizer is None:
        return []
    while hasattr(optimizer, "inner_optimizer"):  # LossScaleOptimizer
        optimizer = optimizer.inner_optimizer
    if hasattr(optimizer, "get_slot_names"):  # legacy optimizers
        return [optimizer.get_slot(weight, name) for name in optimizer.get_slot_names()
                if weight._unique_id in optimizer._slots and name in optimizer._slots[weight._unique_id]]
    index_of = getattr(optimizer, "_index_dict", None) or {}
    index = index_of.get(optimizer._var_key(weight))
    if index is None:  # the optimizer has not been built on this weight yet: no state
        return []
    own = {id(variable) for variable in optimizer.variables} - {id(optimizer.iterations)}
    slots = []
    for value in vars(optimizer).values():
        if not isinstance(value, list) or len(value) != len(index_of) or value is optimizer.variables:
            continue
        slot = value[index]
        if id(slot) in own and slot.shape == weight.shape:
            slots.append(slot)
    return slots


def apply_masks(model):
    """Sets every pruned weight, and its optimizer state, to exactly 0.

    With zero weight, zero state and (thanks to `w * m` in the forward pass) zero
    gradient, SGD with momentum, Adam and decoupled weight decay all leave a pruned
    weight at exactly 0 for the rest of training.
    """
    optimizer = getattr(model, "optimizer", None)
    for _, _, weight, mask in pruning_entries(model):
        weight.assign(weight * tf.cast(mask, weight.dtype))
        for slot in optimizer_slots(optimizer, weight):
            slot.assign(slot * tf.cast(mask, slot.dtype))
