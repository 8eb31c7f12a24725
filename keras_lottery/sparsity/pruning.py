"""Scores and masks from a wrapped model's current state: `scores`, `prune`, `check_criterion`.

The one path from a model to new masks: every wrapper's weights (and, for sign-flip
wrappers, their flip state) go through a criterion (`criteria.py`) to scores, and
`masks.compute` turns the scores into masks, which `wrappers.set_masks` assigns.
"""

import numpy as np

from keras_lottery import compat
from keras_lottery.sparsity import criteria
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity.wrappers import get_masks, get_weights, patterns, prunable_wrappers, pruning_entries, set_masks


def check_criterion(model, criterion=None):
    """Raises ValueError if some wrapper cannot serve `criterion` (None: its own).

    Sign-flip criteria need the flip counts only `prune_low_sign_flip` keeps.
    """
    for wrapper in prunable_wrappers(model):
        chosen = criterion if criterion is not None else getattr(wrapper, "criterion", "magnitude")
        criteria.get(chosen)
        if chosen in criteria.FLIP_CRITERIA and not hasattr(wrapper, "flip_counts"):
            raise ValueError(
                f"criterion {chosen!r} needs sign-flip counts, and layer {wrapper.layer.name!r} has none: "
                "wrap the model with keras_lottery.prune_low_sign_flip(...) instead of prune_low_magnitude."
            )


def scores(model, criterion=None, rng=None, names=None, strategy="layerwise"):
    """Each prunable weight's score under `criterion` (higher survives), from the current weights.

    Args:
      model: a model with pruning wrappers.
      criterion: a name from `criteria.CRITERIA` or a callable (weights, rng[, state])
        -> scores; None ranks each layer by its wrapper's own criterion.
      rng: NumPy Generator for random criteria (default: a fresh one, seed 0).
      names: only these mask names (default: all).
      strategy: 'global' refuses layers with different criteria (their scores are
        not comparable).

    Returns:
      dict mask name -> scores, shaped like the kernel.

    Raises:
      ValueError: no wrappers, an unknown criterion, a criterion the wrappers cannot
        serve, or a global ranking across different criteria.
    """
    compat.check_not_keras3(model)
    if not prunable_wrappers(model):
        raise ValueError(
            "The model has no pruning wrappers: wrap it with keras_lottery.prune_low_magnitude(model) first."
        )
    check_criterion(model, criterion)
    weights = get_weights(model)
    groups = {}  # criterion -> names it ranks
    states = {}
    for name, wrapper, weight, _ in pruning_entries(model):
        if names is not None and name not in set(names):
            continue
        chosen = criterion if criterion is not None else getattr(wrapper, "criterion", "magnitude")
        groups.setdefault(chosen, []).append(name)
        # Only criteria that may use it read the flip state (a 'rewind' reference may not exist yet).
        wants_state = chosen in criteria.FLIP_CRITERIA or callable(chosen)
        states[name] = wrapper.criterion_state(weight) if wants_state and hasattr(wrapper, "criterion_state") else {}
    if strategy == "global" and len(groups) > 1:
        raise ValueError(
            f"strategy='global' ranks all layers together, but they use different criteria {sorted(map(str, groups))}: "
            "pass one criterion, or prune layerwise."
        )
    rng = rng or np.random.default_rng(0)
    result = {}
    for chosen, group in groups.items():
        result.update(criteria.score(chosen, {n: weights[n] for n in group}, rng, {n: states[n] for n in group}))
    return result


def prune(model, sparsity, strategy="layerwise", criterion=None, rng=None, names=None):
    """Computes masks at `sparsity` from the current weights and assigns them.

    Masks only shrink: weights already pruned stay pruned (see `masks.compute`).

    Args:
      model: a model with pruning wrappers.
      sparsity: a float, or dict mask name -> float.
      strategy: 'layerwise' or 'global'.
      criterion: a name from `criteria.CRITERIA` or a callable (weights, rng[, state])
        -> scores; None (default) ranks each layer by its wrapper's own criterion
        ('magnitude' for `prune_low_magnitude`, the chosen one for `prune_low_sign_flip`).
      rng: NumPy Generator for random criteria (default: a fresh one, seed 0).
      names: only update these masks (default: all).

    Returns:
      dict mask name -> the new masks of all layers.

    Raises:
      ValueError: see `scores`, and a sparsity outside [0, 1): 1 would prune every
        weight and leave a dead network, as `OneShot(1.0)` would (both are refused).
    """
    layer_scores = scores(model, criterion, rng, names, strategy)
    for name in layer_scores:
        masks_lib.check_sparsity(sparsity.get(name, 0.0) if isinstance(sparsity, dict) else sparsity,
                                 f"sparsity of layer {name!r}")
    current_masks = get_masks(model)
    updated = masks_lib.compute(layer_scores, sparsity, strategy, previous_masks=current_masks,
                                patterns=patterns(model))
    current_masks.update(updated)
    set_masks(model, current_masks)
    return current_masks
