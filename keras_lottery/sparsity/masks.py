"""Scores -> masks: the one mask computation every criterion uses.

A *criterion* (see `criteria.py`) turns a layer's state into one score per weight;
this module turns scores into 0/1 masks at a target sparsity. It is pure NumPy and
knows nothing about Keras, so magnitude pruning, random pruning, the IMP loop and
later criteria (sign-flip, early-bird) all share the same counts and tie rule.

Rules, documented once:

* **Counts.** A layer of `n` prunable weights at sparsity `s` keeps
  `keep_count(n, s) = floor(n * (1 - s) + 1/2)` weights (half rounds up). IMP at rate
  `p` for `r` rounds asks for sparsity `1 - (1 - p) ** r`, so exactly
  `round((1 - p) ** r * n)` weights remain after round `r`, to the weight; the count
  is derived from the round number, never compounded from the previous round's
  rounded count.
* **Ties.** Higher score survives. Among equal scores, the weight that comes first in
  row-major (C) order of the kernel survives; with `strategy='global'` layers are
  concatenated in the order given, so an earlier layer wins a tie with a later one.
* **Masks only shrink.** Weights already pruned in `previous_masks` rank below every
  surviving weight and are never revived; a target below the current sparsity
  leaves the mask as it is.
* **Strategies.** `'layerwise'` prunes each layer to its own sparsity; `'global'`
  ranks all layers' scores together against one sparsity (as OpenLTH does).
"""

import math

import numpy as np

STRATEGIES = ("layerwise", "global")


def check_sparsity(sparsity, what="sparsity", allow_one=False):
    """Raises ValueError unless 0 <= sparsity < 1 (or <= 1 with `allow_one`).

    User-facing arguments (rates, schedule targets) must be below 1. The mask
    computation itself accepts 1.0, which `sparsity_after_rounds` returns once
    (1 - p) ** r underflows in float64 (e.g. p = 0.9, r >= 17): every weight goes.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a number in [0, 1); got {sparsity!r}.")
    above = float(sparsity) > 1.0 if allow_one else float(sparsity) >= 1.0
    if float(sparsity) < 0.0 or above or math.isnan(float(sparsity)):
        raise ValueError(
            f"{what} must be in [0, 1) (the fraction of weights pruned); got {sparsity}. "
            "Use e.g. 0.8 to keep 20% of the weights."
        )


def check_strategy(strategy):
    """Raises ValueError unless `strategy` is 'layerwise' or 'global'."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}.")


def sparsity_after_rounds(prune_rate, rounds):
    """Sparsity after `rounds` rounds that each prune `prune_rate` of the survivors."""
    check_sparsity(prune_rate, "prune_rate")
    return 1.0 - (1.0 - prune_rate) ** rounds


def keep_count(size, sparsity):
    """Number of weights kept out of `size` at `sparsity` (half rounds up)."""
    check_sparsity(sparsity, allow_one=True)
    # The 1e-9 absorbs float error in 1 - (1 - (1 - p) ** r), so that x.5 rounds up as documented.
    return int(math.floor(size * (1.0 - float(sparsity)) + 0.5 + 1e-9))


def top_k_mask(scores, keep, alive=None):
    """0/1 mask keeping the `keep` highest scores, ties to the lower flat index.

    Runs in O(n) (a partition, not a sort), since it is called on every mask update.

    Args:
      scores: array of per-weight scores; NaN is not allowed.
      keep: how many weights to keep.
      alive: optional boolean array of the same shape; weights that are False are
        never kept, and `keep` is capped at the number alive.

    Returns:
      A float32 array of the shape of `scores`, 1 where kept.
    """
    flat = np.asarray(scores, dtype=np.float64).ravel()
    if np.isnan(flat).any():
        raise ValueError("scores contain NaN: the weights are NaN, probably a diverged training run.")
    if alive is not None:
        alive_flat = np.asarray(alive, dtype=bool).ravel()
        keep = min(keep, int(alive_flat.sum()))
        flat = np.where(alive_flat, flat, -np.inf)
    mask = np.zeros(flat.shape, dtype=bool)
    if keep >= flat.size:
        mask[:] = True
    elif keep > 0:
        threshold = np.partition(flat, flat.size - keep)[flat.size - keep]
        mask = flat > threshold
        still_needed = keep - int(mask.sum())
        # Ties at the threshold: the first ones in flat order survive.
        mask[np.flatnonzero(flat == threshold)[:still_needed]] = True
    return mask.reshape(np.shape(scores)).astype(np.float32)


def compute(scores, sparsity, strategy="layerwise", previous_masks=None):
    """Masks for every layer from their scores.

    Args:
      scores: dict name -> score array (higher survives), in model order.
      sparsity: a float for all layers, or dict name -> float (layerwise only;
        with 'global' all values must be equal).
      strategy: 'layerwise' or 'global'.
      previous_masks: optional dict name -> 0/1 array; weights pruned there stay
        pruned.

    Returns:
      dict name -> float32 0/1 mask, same keys and order as `scores`.

    Raises:
      ValueError: unknown strategy, sparsity outside [0, 1), shapes that do not match,
        or per-layer sparsities with the global strategy.
    """
    check_strategy(strategy)
    names = list(scores)
    if isinstance(sparsity, dict):
        missing = [name for name in names if name not in sparsity]
        if missing:
            raise ValueError(f"no sparsity given for layers {missing}.")
        per_layer = {name: sparsity[name] for name in names}
    else:
        per_layer = {name: sparsity for name in names}
    for name, value in per_layer.items():
        check_sparsity(value, f"sparsity of layer {name!r}", allow_one=True)
    alive = {}
    for name in names:
        previous = None if previous_masks is None else previous_masks.get(name)
        if previous is not None and np.shape(previous) != np.shape(scores[name]):
            raise ValueError(
                f"mask of layer {name!r} has shape {np.shape(previous)}, but its weights have "
                f"shape {np.shape(scores[name])}."
            )
        alive[name] = None if previous is None else np.asarray(previous) > 0.5

    if strategy == "layerwise":
        return {
            name: top_k_mask(scores[name], keep_count(np.size(scores[name]), per_layer[name]), alive[name])
            for name in names
        }

    if len(set(per_layer.values())) > 1:
        raise ValueError(
            "strategy='global' ranks all layers against one sparsity; got different per-layer "
            f"sparsities {per_layer}. Use strategy='layerwise' for per-layer rates."
        )
    if not names:
        return {}
    flat_scores = np.concatenate([np.ravel(scores[name]) for name in names])
    flat_alive = None
    if any(value is not None for value in alive.values()):
        flat_alive = np.concatenate(
            [np.ones(np.size(scores[n]), bool) if alive[n] is None else alive[n].ravel() for n in names]
        )
    flat_mask = top_k_mask(flat_scores, keep_count(flat_scores.size, per_layer[names[0]]), flat_alive)
    masks, start = {}, 0
    for name in names:
        size = np.size(scores[name])
        masks[name] = flat_mask[start:start + size].reshape(np.shape(scores[name]))
        start += size
    return masks


def weights_remaining(masks):
    """Fraction of weights kept overall and per layer.

    Args:
      masks: dict name -> 0/1 array.

    Returns:
      (overall fraction, dict name -> fraction).
    """
    kept = {name: float(np.sum(mask)) for name, mask in masks.items()}
    sizes = {name: int(np.size(mask)) for name, mask in masks.items()}
    total = sum(sizes.values())
    overall = sum(kept.values()) / total if total else 1.0
    return overall, {name: kept[name] / sizes[name] if sizes[name] else 1.0 for name in masks}
