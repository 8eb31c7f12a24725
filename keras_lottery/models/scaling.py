"""Width scaling, and the Small-Dense baseline: the dense network with a sparse one's parameter count.

RigL (Evci et al. 2020, "Rigging the Lottery", Section 4, "Small-Dense") compares sparse
training with "a small dense network with the same parameter count": every layer's width is
multiplied by one factor (google-research/rigl, `sparse_utils.get_stats(width=...)` and its
ResNet-50 colab "Finding the width multiplier for small dense model", which searches the
factor by hand; the first and last layers keep their input and output sizes).

* `scale_width(model, factor, seed)`: a copy of the architecture where every Dense's `units`
  and every Conv1D/2D/3D/SeparableConv2D's `filters` is `max(1, floor(factor * width + 1/2))`
  (half rounds up, the package's count rule), except the output layer (the last layer with a
  kernel, which keeps the number of classes). Everything else keeps its config: BatchNorm,
  depthwise convolutions and the input sizes of later layers follow the channels they get,
  and the residual adds of a ResNet stay matched, since both branches scale the same count in
  the same way. Weights are fresh, drawn from the layers' initializers after
  `keras.utils.set_random_seed(seed)` (as `models.build`; the same seed gives the same
  weights, though at factor 1 not always `models.build`'s own: a functional model's copy may
  build its branches in another order, so the draws land elsewhere). One exception to "the same
  config": a bias initializer that is PyTorch's default `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
  (`cifar.torch_bias`, OpenLTH's networks) is redrawn for the scaled layer's own fan-in, as a
  narrower PyTorch layer would be; VarianceScaling/Glorot kernels adapt to the fan-in by
  themselves.
* `kernel_count(model)`: the weights that pruning counts, the kernels of Dense, Conv and
  DepthwiseConv2D layers (SeparableConv2D: both kernels). Biases and BatchNorm are not
  counted, as sparsity is measured on kernels (RigL's `get_stats` likewise counts the kernels
  only for its sparsity; its model size adds the biases).
* `width_for_parameters(model, target)`: the factor whose scaled network's count is nearest
  `target`. The count is a step function of the factor (widths are rounded): it only changes
  at `f = (k + 1/2) / width`, so the search runs over those breakpoints (the count never
  decreases with the factor; interpolation on sqrt(count), safeguarded by bisection) and
  compares the two steps on either side of the target. The
  factor returned is the middle of its step, away from the rounding edges.
* `small_dense(model, density, seed)`: the scaled network whose count is nearest
  `density x kernel_count(model)`, and its factor.
"""

import bisect
import math
import numbers

import numpy as np

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int

keras = compat.keras

_MAX_FACTOR = 64.0  # far beyond any use; the upward search stops here


def _width_key(layer):
    """The config key of the layer's width ('units', 'filters'), or None for a layer that is not scaled."""
    if isinstance(layer, keras.layers.Dense):
        return "units"
    config = layer.get_config()
    # Conv1D/2D/3D, their transposes and SeparableConv: a `filters`; DepthwiseConv2D has none
    # (its output channels are its input's times depth_multiplier: they follow).
    if isinstance(layer, keras.layers.Layer) and "filters" in config and config["filters"] is not None:
        return "filters"
    return None


def _kernels(layer):
    return [getattr(layer, name) for name in ("kernel", "depthwise_kernel", "pointwise_kernel")
            if getattr(layer, name, None) is not None]


def kernel_count(model):
    """Weights in the kernels of `model`'s Dense, Conv and DepthwiseConv2D layers (what pruning counts).

    Args:
      model: a built tf_keras model (wrapped layers and nested models are looked into).

    Returns:
      The count, an int (biases and BatchNorm left out).
    """
    total = 0
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, keras.layers.Wrapper) else layer  # a pruning wrapper's layer
        if isinstance(inner, keras.Model):
            total += kernel_count(inner)
            continue
        total += sum(int(np.prod(kernel.shape)) for kernel in _kernels(inner))
    return total


def _check_model(model):
    compat.check_not_keras3(model, "The model to scale")
    compat.check_model(model, "The model to scale")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built: build it on an input shape first.")
    for layer in model.layers:
        if hasattr(layer, "pruning_vars") or isinstance(layer, keras.layers.Wrapper):
            raise ValueError(
                f"layer {layer.name!r} is a wrapper ({type(layer).__name__}); scale the plain model "
                "(keras_lottery.strip_pruning(model) for a pruned one)."
            )
        if isinstance(layer, keras.Model):
            raise ValueError(f"layer {layer.name!r} is a nested model, which scale_width does not scale; flatten it.")
    widths = [layer for layer in model.layers if _width_key(layer) is not None]
    if not widths:
        raise ValueError(f"model {model.name!r} has no Dense or Conv layer to scale.")
    return widths[-1].name  # the output layer keeps its width


def _check_factor(factor):
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"factor must be a finite number > 0; got {factor!r}.")
    return float(factor)


def _scaled(width, factor):
    return max(1, math.floor(factor * width + 0.5))


def _fan_in(kernel):
    return int(np.prod(kernel.shape[:-1]))


def _torch_bias_bound(layer):
    """b if the layer's bias initializer is PyTorch's U(-b, b) with b = 1/sqrt(fan_in), else None."""
    config = layer.get_config()
    initializer = config.get("bias_initializer")
    kernels = _kernels(layer)
    if not config.get("use_bias", False) or not isinstance(initializer, dict) or not kernels:
        return None
    if initializer.get("class_name") != "RandomUniform":
        return None
    low, high = initializer["config"].get("minval"), initializer["config"].get("maxval")
    bound = 1.0 / math.sqrt(_fan_in(kernels[-1]))
    return bound if low == -high and math.isclose(high, bound, rel_tol=1e-6) else None


def _clone(model, factor, output_name, fan_ins=None, cheap=False):
    """The scaled copy; `fan_ins` (name -> fan-in of the scaled layer) fixes PyTorch-style bias bounds."""

    def clone(layer):
        config = layer.get_config()
        key = _width_key(layer)
        if key is not None and layer.name != output_name:
            config[key] = _scaled(config[key], factor)
        if fan_ins is not None and layer.name in fan_ins and _torch_bias_bound(layer) is not None:
            bound = 1.0 / math.sqrt(fan_ins[layer.name])
            config["bias_initializer"] = keras.initializers.serialize(keras.initializers.RandomUniform(-bound, bound))
        if cheap:  # only the shapes are wanted: no random draws
            for name in ("kernel_initializer", "depthwise_initializer", "pointwise_initializer", "bias_initializer"):
                if name in config:
                    config[name] = "zeros"
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def scale_width(model, factor, seed):
    """A fresh copy of `model`'s architecture with every Dense/Conv width times `factor` but the output's.

    Args:
      model: a built Sequential or functional tf_keras model without wrappers or nested models
        (e.g. `models.build("resnet20", ...)`).
      factor: the width multiplier, > 0; widths are rounded half up, at least 1.
      seed: seeds Keras's global generators before the new weights are drawn.

    Returns:
      An uncompiled tf_keras model of the same kind and name, its weights freshly initialized.

    Raises:
      ValueError: a factor that is not a finite number > 0, an unbuilt model, a model with
        wrappers (pruning wrappers: strip them) or nested models, or nothing to scale.
      TypeError: not a Sequential or functional tf_keras model.
    """
    factor = _check_factor(factor)
    seed = check_int(seed, "seed")
    output_name = _check_model(model)
    shapes = _clone(model, factor, output_name, cheap=True)
    fan_ins = {layer.name: _fan_in(_kernels(layer)[-1]) for layer in shapes.layers if _kernels(layer)}
    keras.utils.set_random_seed(seed)
    return _clone(model, factor, output_name, fan_ins=fan_ins)


def _breakpoints(model, output_name, high):
    """Sorted factors in (0, high] where some scaled width changes: (k + 1/2) / width, k >= 1."""
    widths = {layer.get_config()[_width_key(layer)] for layer in model.layers
              if _width_key(layer) is not None and layer.name != output_name}
    points = set()
    for width in widths:
        points.update((k + 0.5) / width for k in range(1, int(high * width) + 1))
    return sorted(point for point in points if point <= high)


def _first_reaching(factors, count_of, target):
    """The first index whose count reaches `target` (len(factors) if none), counts nondecreasing in the index.

    Each count builds a model, so the search interpolates: the count grows about as the square of
    the factor (a layer's kernel is its input width times its output width), so the next index
    tried is where sqrt(count) reaches sqrt(target) on the line through the bracket's ends. Every
    other step bisects instead, which bounds the search at twice the bisection's steps.
    """
    low, high = 0, len(factors) - 1
    if count_of(low) >= target:
        return low
    if count_of(high) < target:
        return len(factors)
    interpolate = True
    while high - low > 1:  # count_of(low) < target <= count_of(high)
        middle = (low + high) // 2
        if interpolate:
            root_low, root_high = math.sqrt(count_of(low)), math.sqrt(count_of(high))
            share = (math.sqrt(target) - root_low) / (root_high - root_low)
            guess = factors[low] + share * (factors[high] - factors[low])
            middle = min(max(bisect.bisect_left(factors, guess), low + 1), high - 1)
        interpolate = not interpolate
        if count_of(middle) >= target:
            high = middle
        else:
            low = middle
    return high


def width_for_parameters(model, target_parameters, count=kernel_count):
    """The width factor whose `scale_width` network has the count nearest `target_parameters`.

    Args:
      model: as `scale_width`.
      target_parameters: the count wanted, > 0 (e.g. a sparse network's active weights).
      count: model -> int, nondecreasing in the widths; default `kernel_count` (kernels only,
        as sparsity is counted). `keras.Model.count_params` counts biases and BatchNorm too.

    Returns:
      (factor, achieved count): the middle of the factor interval that gives that network
      (any factor in it gives the same one); ties go to the smaller network.

    Raises:
      ValueError: a target that is not a number > 0, or a model `scale_width` refuses.
    """
    if isinstance(target_parameters, bool) or not isinstance(target_parameters, numbers.Real) or not (
            math.isfinite(target_parameters) and target_parameters > 0):
        raise ValueError(f"target_parameters must be a number > 0; got {target_parameters!r}.")
    output_name = _check_model(model)
    cache = {}

    def count_at(factor):
        if factor not in cache:
            cache[factor] = int(count(_clone(model, factor, output_name, cheap=True)))
        return cache[factor]

    high = 1.0
    while count_at(high) < target_parameters and high < _MAX_FACTOR:
        high *= 2.0
    # Breakpoints up to 2 x high, so that the step holding `high` is whole (the last one may run past it).
    points = _breakpoints(model, output_name, 2.0 * high)
    # Step i covers (points[i - 1], points[i]): its middle stands for it; step 0 is every width at 1.
    edges = [0.0] + points + [points[-1] + 1.0 if points else 1.0]
    middles = [(edges[i] + edges[i + 1]) / 2 for i in range(len(edges) - 1)]
    reaching = _first_reaching(middles, lambda i: count_at(middles[i]), target_parameters)
    candidates = [i for i in (reaching - 1, reaching) if 0 <= i < len(middles)]
    best = min(candidates, key=lambda i: (abs(count_at(middles[i]) - target_parameters), i))
    return middles[best], count_at(middles[best])


def small_dense(model, density, seed):
    """RigL's Small-Dense baseline: the scaled network with `density` of `model`'s kernel weights.

    Args:
      model: the dense network, as `scale_width`.
      density: the sparse network's fraction of kernel weights kept, in (0, 1].
      seed: seeds the new weights.

    Returns:
      (small model, factor): the model from `scale_width(model, factor, seed)` whose
      `kernel_count` is nearest `density * kernel_count(model)`.

    Raises:
      ValueError: a density outside (0, 1], or a model `scale_width` refuses.
    """
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1] (the fraction of weights kept); got {density!r}.")
    factor, _ = width_for_parameters(model, density * kernel_count(model))
    return scale_width(model, factor, seed), factor
