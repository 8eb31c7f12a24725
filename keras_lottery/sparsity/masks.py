"""Scores -> masks: the one mask computation every criterion uses.

A *criterion* (see `criteria.py`) turns a layer's state into one score per weight;
this module turns scores into 0/1 masks at a target sparsity. It is pure NumPy and
knows nothing about Keras, so magnitude pruning, random pruning, the IMP loop and
later criteria (sign-flip, early-bird) all share the same counts and tie rule.

Rules, documented once:

* **Counts.** A layer of `n` prunable weights at sparsity `s` keeps
  `keep_count(n, s) = max(1, floor(n * (1 - s) + 1/2))` weights (half rounds up; never
  none while `s < 1`, as tfmot, so no layer is cut off entirely). IMP at rate `p` for `r`
  rounds asks for sparsity `1 - (1 - p) ** r`, so exactly `round((1 - p) ** r * n)`
  weights remain after round `r` (at least one), to the weight; the count is derived
  from the round number, never compounded from the previous round's rounded count.
* **Ties.** Higher score survives. Among equal scores, the weight that comes first in
  row-major (C) order of the kernel survives; with `strategy='global'` layers are
  concatenated in the order given, so an earlier layer wins a tie with a later one.
* **Masks only shrink.** Weights already pruned in `previous_masks` rank below every
  surviving weight and are never revived; a target below the current sparsity
  leaves the mask as it is.
* **Strategies.** `'layerwise'` prunes each layer to its own sparsity; `'global'`
  ranks all layers' scores together against one sparsity (as OpenLTH does).
* **Patterns** (`Pattern`, layerwise only), tfmot's two structured kinds on the same
  counts and tie rule: `block_size=(h, w)` ranks blocks of a 2-D kernel by the mean (or
  max) score of their weights (edge blocks over the weights they hold) and keeps
  `keep_count(blocks, s)` whole blocks; `m_by_n=(m, n)` keeps the `n - m` highest
  scores of every `n` consecutive weights along the input channels of the kernel as
  TFLite lays it out (`[out, in]` for Dense, `[out, h, w, in]` for Conv2D) — what sparse
  tensor cores and TFLite's sparse encoding use — whatever the sparsity asked for, as
  tfmot does. Ties in a block ranking or an m-by-n group go to the lower index.
"""

import dataclasses
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
    """Number of weights kept out of `size` at `sparsity`: half rounds up, at least one while sparsity < 1."""
    check_sparsity(sparsity, allow_one=True)
    # The 1e-9 absorbs float error in 1 - (1 - (1 - p) ** r), so that x.5 rounds up as documented.
    kept = int(math.floor(size * (1.0 - float(sparsity)) + 0.5 + 1e-9))
    return max(kept, 1) if size and float(sparsity) < 1.0 else kept


def sparsity_keeping(size, keep):
    """The sparsity at which `keep_count(size, sparsity) == keep`, for callers that decide a count.

    `compute` takes sparsities; a caller that chose how many weights a layer keeps (e.g.
    `on_flip`) passes this one, so the count is exact and the tie rule the same.

    Args:
      size: the layer's (or layers') number of weights.
      keep: how many to keep, 0 <= keep <= size (0 only as `compute` allows sparsity 1).

    Raises:
      ValueError: `keep` outside [0, size].
    """
    if not 0 <= keep <= size:
        raise ValueError(f"cannot keep {keep} of {size} weights.")
    return 1.0 - keep / size if size else 0.0


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
    alive_flat = np.ones(flat.shape, dtype=bool) if alive is None else np.asarray(alive, dtype=bool).ravel()
    # Only the alive scores are ranked: NumPy's partition slows down ~30x on an array where
    # half the entries are one repeated value (the pruned weights, at -inf here before), which
    # made each mask update of a pruned LeNet cost ~30 ms instead of ~4.
    candidates = np.flatnonzero(alive_flat)
    keep = min(keep, candidates.size)
    mask = np.zeros(flat.shape, dtype=bool)
    if keep >= candidates.size:
        mask[candidates] = True
    elif keep > 0:
        alive_scores = flat[candidates]
        threshold = np.partition(alive_scores, alive_scores.size - keep)[alive_scores.size - keep]
        above = alive_scores > threshold
        mask[candidates[above]] = True
        still_needed = keep - int(above.sum())
        # Ties at the threshold: the first alive ones in flat order survive.
        mask[candidates[np.flatnonzero(alive_scores == threshold)[:still_needed]]] = True
    return mask.reshape(np.shape(scores)).astype(np.float32)


POOLINGS = ("AVG", "MAX")


@dataclasses.dataclass(frozen=True)
class Pattern:
    """The structure of a layer's mask: unstructured (the default), blocks, or m-by-n.

    Attributes:
      block_size: (height, width) of the blocks of a 2-D kernel pruned together.
      block_pooling: how a block's weights score it: 'AVG' (mean) or 'MAX'.
      m_by_n: (m, n): m zeros in every n consecutive input-channel weights, or None.
    """

    block_size: tuple = (1, 1)
    block_pooling: str = "AVG"
    m_by_n: tuple | None = None

    def __post_init__(self):
        block = tuple(int(size) for size in self.block_size)
        if len(block) != 2 or min(block) < 1:
            raise ValueError(f"block_size must be two integers >= 1, e.g. (1, 4); got {self.block_size!r}.")
        object.__setattr__(self, "block_size", block)
        if self.block_pooling not in POOLINGS:
            raise ValueError(f"block pooling must be one of {POOLINGS}; got {self.block_pooling!r}.")
        if self.m_by_n is not None:
            m, n = (int(value) for value in self.m_by_n)
            if not 0 < m < n:
                raise ValueError(f"m_by_n=(m, n) needs 0 < m < n (m zeros in every n weights), e.g. (2, 4); "
                                 f"got {self.m_by_n!r}.")
            if block != (1, 1):
                raise ValueError("a mask is either block or m-by-n structured, not both.")
            object.__setattr__(self, "m_by_n", (m, n))

    @property
    def structured(self):
        return self.m_by_n is not None or self.block_size != (1, 1)

    def check_shape(self, shape, name):
        """Raises ValueError if a kernel of `shape` cannot take this pattern."""
        if self.m_by_n is not None and len(shape) not in (2, 4):
            raise ValueError(f"{name}: m-by-n sparsity needs a 2-D (Dense) or 4-D (Conv2D) kernel; its kernel is "
                             f"{len(shape)}-D {tuple(shape)}.")
        if self.block_size != (1, 1) and len([size for size in shape if size != 1]) > 2:
            raise ValueError(f"{name}: block sparsity needs a 2-D kernel (as tfmot); its kernel is {tuple(shape)}.")


UNSTRUCTURED = Pattern()


def _to_tflite_rows(array):
    """The kernel as TFLite lays it out, rows x input channels: [out, in] or [out * h * w, in]."""
    if array.ndim == 2:
        return array.T
    return array.transpose(3, 0, 1, 2).reshape(-1, array.shape[2])


def _from_tflite_rows(rows, shape):
    if len(shape) == 2:
        return rows.T
    return rows.reshape(shape[3], shape[0], shape[1], shape[2]).transpose(1, 2, 3, 0)


def m_by_n_mask(scores, m, n, alive=None):
    """Keeps the `n - m` highest scores of every `n` consecutive input-channel weights (ties: lower index).

    Args:
      scores: a 2-D or 4-D kernel's scores.
      m, n: m zeros in every n weights; a last group of fewer than n keeps up to n - m.
      alive: optional boolean array; weights that are False are never kept.

    Returns:
      A float32 0/1 mask of the shape of `scores`.
    """
    values = np.asarray(scores, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("scores contain NaN: the weights are NaN, probably a diverged training run.")
    if alive is not None:
        values = np.where(np.asarray(alive, dtype=bool), values, -np.inf)
    rows = _to_tflite_rows(values)
    padding = (-rows.shape[1]) % n
    padded = np.pad(rows, ((0, 0), (0, padding)), constant_values=-np.inf)
    groups = padded.reshape(rows.shape[0], -1, n)
    order = np.argsort(-groups, axis=-1, kind="stable")  # stable: among equal scores the lower index first
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(n)[None, None, :], axis=-1)
    kept = (ranks < n - m) & np.isfinite(groups)
    mask = kept.reshape(rows.shape[0], -1)[:, :rows.shape[1]]
    return _from_tflite_rows(mask, values.shape).astype(np.float32)


def block_mask(scores, sparsity, block_size, pooling="AVG", alive=None):
    """Keeps `keep_count(blocks, sparsity)` whole blocks of a 2-D kernel, ranked by pooled score.

    Args:
      scores: a kernel's scores; all but two dimensions must be 1 (tfmot's rule).
      sparsity: fraction of blocks to prune.
      block_size: (height, width).
      pooling: 'AVG' (mean of the block's weights) or 'MAX'.
      alive: optional boolean array; a block with no live weight is never kept, and a
        kept block keeps only its live weights (masks only shrink).

    Returns:
      A float32 0/1 mask of the shape of `scores`.
    """
    values = np.asarray(scores, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("scores contain NaN: the weights are NaN, probably a diverged training run.")
    flat = values.reshape([size for size in values.shape if size != 1] or [1, 1])
    if flat.ndim == 1:
        flat = flat[None, :]
    height, width = block_size
    rows, cols = flat.shape
    padded_rows, padded_cols = -(-rows // height) * height, -(-cols // width) * width
    grid = np.full((padded_rows, padded_cols), np.nan)
    grid[:rows, :cols] = flat
    blocks = grid.reshape(padded_rows // height, height, padded_cols // width, width).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(blocks.shape[0], blocks.shape[1], -1)
    pooled = np.nanmean(blocks, axis=-1) if pooling == "AVG" else np.nanmax(blocks, axis=-1)
    alive_blocks = None
    if alive is not None:
        live = np.zeros((padded_rows, padded_cols), dtype=bool)
        live[:rows, :cols] = np.asarray(alive, dtype=bool).reshape(rows, cols)
        live_blocks = live.reshape(padded_rows // height, height, padded_cols // width, width).transpose(0, 2, 1, 3)
        alive_blocks = live_blocks.reshape(live_blocks.shape[0], live_blocks.shape[1], -1).any(axis=-1)
    kept_blocks = top_k_mask(pooled, keep_count(pooled.size, sparsity), alive_blocks)
    mask = np.kron(kept_blocks, np.ones((height, width), dtype=np.float32))[:rows, :cols]
    if alive is not None:
        mask = mask * np.asarray(alive, dtype=bool).reshape(rows, cols)
    return mask.reshape(values.shape).astype(np.float32)


def compute(scores, sparsity, strategy="layerwise", previous_masks=None, patterns=None):
    """Masks for every layer from their scores.

    Args:
      scores: dict name -> score array (higher survives), in model order.
      sparsity: a float for all layers, or dict name -> float (layerwise only;
        with 'global' all values must be equal).
      strategy: 'layerwise' or 'global'.
      previous_masks: optional dict name -> 0/1 array; weights pruned there stay
        pruned.
      patterns: optional dict name -> `Pattern` (block or m-by-n structure); the
        layers not named are unstructured. Layerwise only.

    Returns:
      dict name -> float32 0/1 mask, same keys and order as `scores`.

    Raises:
      ValueError: unknown strategy, sparsity outside [0, 1), shapes that do not match,
        per-layer sparsities with the global strategy, or a structured pattern with it
        or on a kernel that cannot take it.
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

    patterns = {name: pattern for name, pattern in (patterns or {}).items() if name in scores and pattern.structured}
    for name, pattern in patterns.items():
        pattern.check_shape(np.shape(scores[name]), f"layer {name!r}")
    if strategy == "layerwise":
        return {name: _layer_mask(scores[name], per_layer[name], alive[name], patterns.get(name, UNSTRUCTURED))
                for name in names}
    if patterns:
        raise ValueError(f"strategy='global' ranks single weights of all layers together; layers {sorted(patterns)} "
                         "have block or m-by-n patterns: prune them layerwise.")

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


def _layer_mask(scores, sparsity, alive, pattern):
    if pattern.m_by_n is not None:
        return m_by_n_mask(scores, *pattern.m_by_n, alive=alive)
    if pattern.block_size != (1, 1):
        return block_mask(scores, sparsity, pattern.block_size, pattern.block_pooling, alive)
    return top_k_mask(scores, keep_count(np.size(scores), sparsity), alive)


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
