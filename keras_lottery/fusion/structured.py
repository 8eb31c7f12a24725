"""Structured pruning as a narrower network: remove the units a channel ticket drops.

    narrow = keras_lottery.remove_units(model, detector.removed_units(0.5))

This is network slimming's step (Liu et al., 2017), which early-bird channel tickets
use (You et al., 2020): each named unit goes, with its bias, its BatchNormalization
row and the next layer's input rows for it. Unlike `fuse_neurons`, nothing is
compensated: a removed unit's contribution is dropped, so outputs change, and the
narrow network is meant to be retrained. BatchNormalization layers stay (sliced), so
retraining trains them. The edit is fusion's own `transform_units`, with a selection
and no folded constants.
"""

import numpy as np

from keras_lottery.fusion import rewrite
from keras_lottery.fusion.graph import Graph

# Layers a BatchNormalization name may sit behind on the way back to its Dense/Conv2D.
_PASS_THROUGH = ("Activation", "ReLU", "LeakyReLU", "Dropout", "SpatialDropout2D")


def _producer_of(graph, name):
    """The Dense/Conv2D whose units layer `name` (itself, or a BatchNormalization after it) names."""
    node = graph.nodes[name]
    if node.kind in rewrite.PRODUCERS:
        return name
    if node.kind == "BatchNormalization":
        current = node
        while len(current.inbound) == 1:
            current = graph.nodes[current.inbound[0]]
            if current.kind in rewrite.PRODUCERS:
                return current.name
            if current.kind not in _PASS_THROUGH:
                break
    raise ValueError(
        f"layer {name!r} ({node.kind}) does not name units: give a Dense or Conv2D layer, or a "
        "BatchNormalization layer right after one (its channels are that layer's units)."
    )


def _plan(graph, removed_units):
    """producer name -> sorted unit indices to remove, checked before any edit."""
    if not isinstance(removed_units, dict):
        raise TypeError(f"removed_units must be a dict layer name -> unit indices; got {type(removed_units).__name__}.")
    plan = {}
    for name, units in removed_units.items():
        if name not in graph.nodes:
            raise ValueError(f"removed_units names layer {name!r}, which the model does not have.")
        producer = _producer_of(graph, name)
        if producer in plan:
            raise ValueError(f"layer {producer!r} is named twice in removed_units (directly and through {name!r}).")
        channels = graph.nodes[producer].weights[0].shape[-1]
        indices = np.unique(np.asarray(units, dtype=np.int64).reshape(-1))
        if indices.size and (indices.min() < 0 or indices.max() >= channels):
            raise ValueError(f"removed_units[{name!r}] has indices outside 0..{channels - 1} ({producer!r} has "
                             f"{channels} units).")
        if indices.size == channels:
            raise ValueError(f"removed_units[{name!r}] removes all {channels} units of {producer!r}: keep at least one.")
        if indices.size:
            fixed = rewrite.reach(graph, producer).fixed
            if fixed:
                raise ValueError(f"the units of {producer!r} cannot be removed: {fixed}. Remove units of other "
                                 "layers only (`removable_unit_layers` names those that can go).")
            plan[producer] = indices
    return plan


def removable_unit_layers(model, names):
    """The layers of `names` whose units `remove_units` can take out, in the order given.

    A unit stays where removing it would change an index that something else relies on:
    a model output (the output layer's classes), or an Add/Multiply whose members must
    keep matching channels (a ResNet's block outputs, its stem and its shortcut
    convolutions). A channel criterion that scores every layer would pick such units;
    pass it only these (`EarlyBirdCallback(layers=...)`).

    Args:
      model: a tf_keras model, pruned (wrapped) or not.
      names: candidate layer names: Dense/Conv2D layers, or BatchNormalization layers
        right after one (their channels are its units).

    Returns:
      The names (a list) whose units can be removed.

    Raises:
      ValueError: a name the model does not have, or one that names no units.
    """
    graph = Graph(model)
    removable = []
    for name in names:
        if name not in graph.nodes:
            raise ValueError(f"layer {name!r} is not in the model.")
        if rewrite.reach(graph, _producer_of(graph, name)).fixed is None:
            removable.append(name)
    return removable


def remove_units(model, removed_units):
    """Returns a new, narrower tf_keras model without the named units; `model` is unchanged.

    Args:
      model: a tf_keras Sequential or functional model, pruned (wrapped) or not; a
        Keras 3 one is converted first (with a warning).
      removed_units: dict layer name -> indices of the units to remove. A Dense or
        Conv2D name removes its units (filters); a BatchNormalization name removes the
        channels it normalizes, which are the units of the Dense/Conv2D before it (as
        `EarlyBirdCallback.removed_units` gives them for `criterion='bn_gamma'`).

    Returns:
      The narrow model (uncompiled). Layer names are kept. Its outputs differ from
      `model`'s wherever a removed unit contributed: retrain it.

    Raises:
      TypeError: removed_units is not a dict; see `fuse_neurons` for models it refuses.
      ValueError: an unknown layer, a layer that names no units, indices out of range,
        all units of a layer, or units that must stay (a model output, or feeding Add).
      FusionError: a layer between two Dense/Conv2D layers that cannot be rewritten.
    """
    graph = Graph(model)
    for producer, removed in _plan(graph, removed_units).items():
        channels = graph.nodes[producer].weights[0].shape[-1]
        rewrite.transform_units(graph, producer, np.setdiff1d(np.arange(channels), removed), fold=False)
    return graph.to_model()
