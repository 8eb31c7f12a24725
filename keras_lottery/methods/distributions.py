"""Per-layer sparsities for one global target: uniform, Erdos-Renyi and Erdos-Renyi-Kernel (ERK).

Each distribution gives every sparse layer a *raw density* and scales them by one factor
`eps` so that the layers together keep exactly the weights the target keeps, as
google-research/rigl's `sparse_utils.get_sparsities` does:

* `'uniform'`: raw density 1 (every layer at the target).
* `'erdos_renyi'` (Mocanu et al. 2018): `(n_in + n_out) / (n_in * n_out)` from the kernel's
  last two dimensions, as rigl does for convolutions too.
* `'erk'` (Evci et al. 2020, rigl's `'erdos_renyi_kernel'`): `sum(shape) / prod(shape)`, e.g.
  `(h + w + c_in + c_out) / (h * w * c_in * c_out)` for a Conv2D kernel, raised to `power`
  (rigl's `erk_power_scale`; 0 is uniform).

Rules:

* **Capping.** A layer whose density `eps * raw` would exceed 1 is made dense and `eps` is
  solved again over the others; as rigl, the layers with the largest raw density go first,
  one group at a time, until no density exceeds 1.
* **Exact counts.** The overall count is `masks.keep_count(total, sparsity)`, to the weight.
  rigl rounds each layer on its own (`floor(sparsity * size)` zeros), so its total may miss by
  a weight per layer; here each layer gets `floor(eps * raw * size)` weights (at least one,
  at most all), and the weights left over go one each to the layers with the largest
  fractional parts (ties to the earlier layer). A layer of `n` weights that keeps `k` gets
  sparsity `1 - k / n`, for which `masks.keep_count(n, 1 - k / n) == k`, so the dict works
  as the per-layer `sparsity` of `masks.compute`, `pruning.prune` and `prune_at_init`
  (strategy `'layerwise'`) and their layers together keep exactly the target's count.
* **Dense layers** (`dense=`): kept whole (sparsity 0). With `count_dense=True` (default) their
  weights count toward the target, so the others are pruned harder and the overall sparsity
  is the target. rigl's ImageNet script (`first_layer_sparsity=0`, its default) instead leaves
  the first layer unmasked and outside the count, so that only the other layers meet the
  target: `count_dense=False` does that.
"""

import math

import numpy as np

from keras_lottery import compat
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

keras = compat.keras


def _shapes(shapes):
    """dict mask name -> kernel shape from a dict of shapes or a model with pruning wrappers."""
    if isinstance(shapes, dict):
        result = {}
        for name, shape in shapes.items():
            # An array (a kernel, a mask) stands for its own shape.
            shape = tuple(int(size) for size in (np.shape(shape) if hasattr(shape, "dtype") else shape))
            if not shape or min(shape) < 1:
                raise ValueError(f"layer {name!r} has kernel shape {shape}: every dimension must be at least 1.")
            result[name] = shape
        return result
    if not isinstance(shapes, keras.Model):
        raise TypeError(f"shapes must be a dict mask name -> kernel shape, or a tf_keras model with pruning wrappers; "
                        f"got {type(shapes).__name__}.")
    if not wrappers.prunable_wrappers(shapes):
        raise ValueError("a sparsity distribution needs the layers' kernel shapes: pass a dict mask name -> shape, "
                         "or a model wrapped with keras_lottery.prune_low_magnitude(model).")
    return {name: tuple(weight.shape) for name, _, weight, _ in wrappers.pruning_entries(shapes)}


def uniform_density(shape):
    """Raw density of the uniform distribution: 1 for every layer."""
    del shape
    return 1.0


def erdos_renyi_density(shape):
    """Raw Erdos-Renyi density `(n_in + n_out) / (n_in * n_out)` from the last two dimensions."""
    if len(shape) < 2:
        raise ValueError(f"Erdos-Renyi needs kernels with input and output dimensions; got shape {shape}. "
                         "Use 'erk' or 'uniform' for it.")
    n_in, n_out = shape[-2:]
    return (n_in + n_out) / (n_in * n_out)


def erk_density(shape, power=1.0):
    """Raw ERK density `(sum(shape) / prod(shape)) ** power`."""
    return (float(sum(shape)) / float(np.prod(shape))) ** power


def uniform(shapes, sparsity, dense=(), count_dense=True):
    """Every sparse layer at the same density (the target's, when no layer is dense). See `distribute`."""
    return distribute(shapes, "uniform", sparsity, dense, count_dense)


def erdos_renyi(shapes, sparsity, dense=(), count_dense=True):
    """Density proportional to `(n_in + n_out) / (n_in * n_out)`. See `distribute`."""
    return distribute(shapes, "erdos_renyi", sparsity, dense, count_dense)


def erk(shapes, sparsity, dense=(), count_dense=True, power=1.0):
    """Density proportional to `(sum(shape) / prod(shape)) ** power` (ERK). See `distribute`."""
    return distribute(shapes, "erk", sparsity, dense, count_dense, power)


DISTRIBUTIONS = {"uniform": uniform_density, "erdos_renyi": erdos_renyi_density, "erk": erk_density}
ALIASES = {"random": "uniform", "er": "erdos_renyi", "erdos_renyi_kernel": "erk"}  # rigl's names and short ones


def check_name(distribution):
    """The canonical name of `distribution`.

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    name = ALIASES.get(distribution, distribution)
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown sparsity distribution {distribution!r}; choose one of "
                         f"{sorted(DISTRIBUTIONS) + sorted(ALIASES)}.")
    return name


def distribute(shapes, distribution, sparsity, dense=(), count_dense=True, power=1.0):
    """Per-layer sparsities that together keep exactly the weights a global `sparsity` keeps.

    Args:
      shapes: dict mask name -> kernel shape (in model order; ties go to earlier layers), or a
        model with pruning wrappers.
      distribution: 'uniform', 'erdos_renyi' or 'erk' (aliases: 'random', 'er',
        'erdos_renyi_kernel', rigl's names).
      sparsity: the overall target in [0, 1).
      dense: names of layers kept whole (sparsity 0), e.g. the first layer.
      count_dense: whether the dense layers' weights count toward the target (default; the
        overall sparsity is then the target) or stand outside it (rigl's unmasked first layer).
      power: ERK's exponent (rigl's `erk_power_scale`); ignored by the other distributions.

    Returns:
      dict mask name -> sparsity, in the order of `shapes`.

    Raises:
      ValueError: an unknown distribution, a sparsity outside [0, 1), dense names that are not
        layers, a kernel shape the distribution cannot take, or dense layers that hold more
        weights than the target keeps.
    """
    name = check_name(distribution)
    masks_lib.check_sparsity(sparsity)
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power) or power < 0:
        raise ValueError(f"power must be a number >= 0 (1 is ERK, 0 uniform); got {power!r}.")
    shapes = _shapes(shapes)
    dense = [dense] if isinstance(dense, str) else list(dense)
    unknown = sorted(set(dense) - set(shapes))
    if unknown:
        raise ValueError(f"dense names layers {unknown} that are not prunable layers; they are {list(shapes)}.")
    raw_density = DISTRIBUTIONS[name]
    raw = {layer: raw_density(shape, power) if name == "erk" else raw_density(shape)
           for layer, shape in shapes.items() if layer not in dense}
    sizes = {layer: int(np.prod(shape)) for layer, shape in shapes.items()}
    counted = [layer for layer in shapes if count_dense or layer not in dense]
    total = sum(sizes[layer] for layer in counted)
    target = masks_lib.keep_count(total, sparsity)
    budget = target - sum(sizes[layer] for layer in counted if layer in dense)  # what the sparse layers keep
    if not raw and target < total:
        raise ValueError(f"every layer is dense, so nothing can be pruned to sparsity {sparsity}: keep fewer layers "
                         "dense, or pass count_dense=False.")
    if raw and budget < len(raw):
        raise ValueError(
            f"the dense layers {dense} hold {target - budget} weights; sparsity {sparsity} keeps {target} of {total}, "
            "too few to leave the other layers one weight each: keep fewer layers dense, lower the sparsity, or pass "
            "count_dense=False."
        )
    kept = _allocate(raw, sizes, budget)
    return {layer: 0.0 if layer not in kept else 1.0 - kept[layer] / sizes[layer] for layer in shapes}


def _allocate(raw, sizes, budget):
    """dict layer -> kept count: densities `eps * raw` capped at 1, summing to `budget` exactly."""
    free = list(raw)  # layers that are neither dense nor capped, in model order
    kept = {}
    while free:
        eps = budget / sum(raw[layer] * sizes[layer] for layer in free)
        largest = max(raw[layer] for layer in free)
        if eps * largest <= 1.0:
            break
        # As rigl: only the layers with the largest raw density go dense, then eps is solved again.
        for layer in [layer for layer in free if raw[layer] == largest]:
            kept[layer] = sizes[layer]
            budget -= sizes[layer]
            free.remove(layer)
    if not free:
        return kept
    exact = {layer: eps * raw[layer] * sizes[layer] for layer in free}
    counts = {layer: min(sizes[layer], max(1, math.floor(exact[layer]))) for layer in free}
    remainder = {layer: exact[layer] - math.floor(exact[layer]) for layer in free}
    short = budget - sum(counts.values())
    # Largest fractional parts first (ties to the earlier layer: sorted is stable); the round-off
    # is at most one weight per layer, but the loop also absorbs the "at least one" floor.
    order = sorted(free, key=lambda layer: -remainder[layer]) if short > 0 else sorted(free, key=remainder.get)
    while short:
        changed = False
        for layer in order:
            if short > 0 and counts[layer] < sizes[layer]:
                counts[layer], short, changed = counts[layer] + 1, short - 1, True
            elif short < 0 and counts[layer] > 1:
                counts[layer], short, changed = counts[layer] - 1, short + 1, True
            if not short:
                break
        if not changed:  # unreachable: 1 * len(free) <= budget <= sum of the free sizes
            raise AssertionError(f"cannot allocate {budget} weights to layers of sizes {sizes}.")
    kept.update(counts)
    return kept
