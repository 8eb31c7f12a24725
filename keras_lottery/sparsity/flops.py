"""FLOPs accounting: a model's inference multiply-adds and a run's training multiply-adds, RigL's way.

Every count here is in **multiply-adds (MACs) per example**, dense-equivalent: a weight that is
pruned costs nothing, an active weight costs one multiply-add each time it is applied.

**Inference** (`layer_flops`, `inference_flops`), per layer with a kernel:

* Dense: nnz(kernel) per output position (one for a 2-D input; one per token for a Dense
  applied to a sequence).
* Conv1D/2D/3D: nnz(kernel) x the number of output positions (out_h x out_w for Conv2D), read
  from the layer's `output_shape`, so stride and 'valid'/'same' padding are the layer's own.
  Border taps that fall on zero padding are counted as any other (as every counter does).
* DepthwiseConv2D: nnz(depthwise_kernel) x out_h x out_w.

nnz is the number of ones in the layer's mask (a pruning wrapper's, or the `masks` given); a
plain model's kernels count their nonzero entries, so `strip_pruning`'s output counts as the
wrapped model it came from (unless an active weight is exactly 0, as RigL's just-regrown
weights are: the wrapper counts it, the stripped model does not). Not counted: bias adds,
BatchNorm, activations, pooling, residual adds, embedding look-ups (no multiply-adds on
weights), and the cost of computing masks. A layer with a kernel this counter does not know
(SeparableConv2D, transposed convolutions, RNN cells, attention, ...) is refused, not skipped.

**What RigL counts, and what differs.** RigL's counter (google-research/rigl,
`rigl/sparse_utils.py: get_stats`, on google-research's `micronet_challenge/counting.py:
count_ops`) visits the same layers (Conv2D, DepthwiseConv2D, Dense) and counts, per output
element, (1 - s) k multiplies and (1 - s) k - 1 adds for a kernel of fan-in k at sparsity s,
plus one bias add and one ReLU (counted as a multiply) on every such layer, whatever the real
network has; its output sizes assume 'same' padding. Its FLOPs are thus about 2x our MACs
(its dense ResNet-50 is 8.2e9 FLOPs, README, for about 4.1e9 MACs), and its sparse/dense
ratios exceed ours by the bias and ReLU terms, which do not shrink with sparsity (0.14% of a
dense ResNet-50's count; at 80% uniform sparsity its ratio is 0.2255 against our 0.2245). We count MACs on the weights only (exact nnz, not the expected
(1 - s) x size), because RigL reports FLOPs as ratios to the dense model, and those are what
the weights decide.

**Training** (`training_flops`), RigL's Appendix H (Evci et al. 2020, "Rigging the Lottery:
Making All Tickets Winners", ICML): a training step costs per example the forward pass (f)
and a backward pass of about 2f (the gradient with respect to the activations, f, and to the
weights, f); f_D is the dense model's inference MACs, f_S the sparse one's. Per example:

=====================  ===========================================  ============================
method                 per-example cost of a step                   source
=====================  ===========================================  ============================
dense                  3 f_D                                        RigL App. H
static sparse          3 f_S                                        RigL App. H (static, and the
 (random, snip,                                                      masks of SNIP/GraSP/SynFlow
 grasp, synflow,                                                     after scoring, lottery
 lottery, small_dense)                                               ticket retraining, Small-Dense
                                                                     with f_S its own f_D)
set                    3 f_S                                        RigL App. H
snfs                   2 f_S + f_D (a dense weight gradient         RigL App. H
                       each step, for the momentum)
rigl                   (3 f_S dT + 2 f_S + f_D) / (dT + 1)          RigL App. H (a dense
                                                                     gradient every dT steps)
gradual                3 x mean over training of f_S(t)             RigL App. H (pruning, Zhu &
                                                                     Gupta 2018); RigL's ResNet-50
                                                                     colab averages f_S(t)
l0, variational        3 f_D (gates and log-alphas cost nothing     ours: these methods train
 _dropout              counted; the weights are dense in training)  dense weights and multiply
                                                                     them by noise
supermask,             2 f_S + f_D: forward and activation          ours: the straight-through
 edge_popup            gradient through the masked weights (2 f_S),  score gradient dL/ds =
                       the weight gradient dense (f_D) since every  dL/d(w m) w needs every
                       score gets one                               weight's gradient
=====================  ===========================================  ============================

As RigL, the mask updates themselves (sorting, top-k, random draws) are not counted: they
happen every dT steps and are amortized. RigL's paper formula assumes updates all through
training; its schedule stops them at 75% of it (`mask_updaters.END_FRACTION`), after which a
step costs 3 f_S: the formula overstates RigL's cost by under (f_D - f_S) / (3 (dT + 1)) per
example-step. The package's RigL takes its dense gradient on an extra batch at update steps
(`mask_updaters.dense_gradients`), which the paper's rule (the update step's own backward
pass is dense) does not count either. Every rule is linear in f_S, so a sparse FLOPs that
changes over training (given as a sequence or a callable of the step) enters as its mean.

`scoring_flops` counts pruning at initialization (its scores, on the dense network):

* SNIP: one forward and backward pass on a batch, 3 f_D per example (the weight gradient is
  needed: the score is |g w|).
* GraSP: 9 f_D per example, as the package computes it (`pruning_at_init.
  hessian_gradient_product`): the gradient g with the graph kept (forward f_D + backward
  2 f_D), then H g by differentiating g . stop(g) again, which reverse-mode differentiation
  does for about twice the multiply-adds of the computation it differentiates (each matmul
  of the 3 f_D graph gives two in its derivative): 6 f_D. The authors' code
  (alecwangcq/GraSP, `pruner/GraSP.py`) first computes g in a pass of its own, which adds
  3 f_D: 12 f_D per example there.
* SynFlow: `iterations` forward and backward passes (3 f_D each) on one all-ones example;
  `batch_size` does not enter. Counted dense each round, though later rounds run on masked
  weights (an upper bound, as SynFlow's cost is negligible against training anyway).

`imp_training_flops` sums 3 f_S(round) over the rounds of iterative magnitude pruning (round 0
is the dense network).
"""

import numbers

import numpy as np
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import mask_variables

keras = compat.keras


# ----------------------------------------------------------------------------------------
# Inference.


def _kernel_attribute(layer):
    """The attribute holding the layer's counted kernel, or None for a layer without multiply-adds on weights.

    Raises:
      ValueError: a layer with a kernel this counter does not know how to count.
    """
    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise_kernel"
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) \
            and not isinstance(layer, transposed):
        return "kernel"
    if any("kernel" in weight.name.split("/")[-1] for weight in layer.weights):
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) has a kernel whose FLOPs this counter does not know; it "
            "counts Dense, Conv1D/2D/3D and DepthwiseConv2D. Count that layer yourself, or leave it out of the model."
        )
    return None


def _output_positions(shell, inner):
    """How many times each weight of `inner` is applied per example, from the output shape of `shell`."""
    try:
        shape = shell.output_shape
    except (AttributeError, RuntimeError) as error:
        raise ValueError(
            f"layer {inner.name!r} has no single output shape ({error}): build the model on an input shape (an "
            "InputLayer or input_shape for a Sequential, keras.Input for a functional model); a layer called "
            "several times is not counted."
        ) from None
    shape = tuple(shape)
    if isinstance(inner, keras.layers.Dense):
        positions = shape[1:-1]
    elif getattr(inner, "data_format", "channels_last") == "channels_first":
        positions = shape[2:]
    else:
        positions = shape[1:-1]
    if any(size is None for size in positions):
        raise ValueError(
            f"layer {inner.name!r} has output shape {shape} with unknown sizes: build the model on a fixed input shape."
        )
    return int(np.prod(positions, dtype=np.int64))


def _counted_layers(model):
    """(name, shell, inner, kernel) of every counted layer, nested models included, in model order.

    `shell` is the layer in the model (a pruning wrapper, or the layer itself) and `inner` the
    layer with the kernel; `name` is the inner layer's name, a pruning wrapper's mask name.
    """
    found = []
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, tfmot_wrapper.PruneLowMagnitude) else layer
        if isinstance(inner, keras.Model):
            found += _counted_layers(inner)
            continue
        attribute = _kernel_attribute(inner)
        if attribute is not None:
            found.append((inner.name, layer, inner, getattr(inner, attribute)))
    return found


def layer_flops(model, masks=None, dense=False):
    """Multiply-adds per example of each layer with a kernel, counting only active weights.

    Args:
      model: a built Sequential or functional tf_keras model, plain or with pruning wrappers
        (`keras_lottery.prune_low_magnitude`), nested models included.
      masks: optional dict layer name -> 0/1 array shaped like that layer's kernel; the
        layers it names count its ones. Default: a wrapped layer counts its wrapper's mask
        (`get_masks`), any other layer its kernel's nonzero entries.
      dense: count every weight (f_D, the dense network's MACs), ignoring masks and zeros.

    Returns:
      dict layer name -> multiply-adds per example (int), in model order; a wrapped layer is
      named by the layer it wraps (its mask name).

    Raises:
      TypeError: not a tf_keras model.
      ValueError: an unbuilt model or one without fixed output shapes, a layer this counter
        does not know, or masks that name unknown layers or have the wrong shape.
    """
    compat.check_not_keras3(model, "The model to count")
    if not isinstance(model, keras.Model):
        raise TypeError(f"layer_flops counts a tf_keras model; got {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built: build it on an input shape (an InputLayer or input_shape for a "
            "Sequential, keras.Input for a functional model) before counting its FLOPs."
        )
    counted = _counted_layers(model)
    names = [name for name, _, _, _ in counted]
    given = dict(masks or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"masks name layers {unknown} that have no counted kernel; the counted layers are {names}.")
    wrapper_masks = {} if dense or masks is not None else mask_variables.get_masks(model)
    flops = {}
    for name, shell, inner, kernel in counted:
        if dense:
            active = int(np.prod(kernel.shape))
        elif name in given:
            mask = np.asarray(given[name])
            if mask.shape != tuple(kernel.shape):
                raise ValueError(f"mask {name!r} has shape {mask.shape}; the layer's kernel is {tuple(kernel.shape)}.")
            active = int(np.count_nonzero(mask))
        elif name in wrapper_masks:
            active = int(np.count_nonzero(wrapper_masks[name]))
        else:
            active = int(np.count_nonzero(kernel.numpy()))
        flops[name] = active * _output_positions(shell, inner)
    return flops


def inference_flops(model, masks=None, dense=False):
    """Multiply-adds per example of the whole model: the sum of `layer_flops` (same arguments and errors)."""
    return sum(layer_flops(model, masks, dense).values())


# ----------------------------------------------------------------------------------------
# Training.


def _static(f_dense, f_sparse, interval):
    return 3.0 * f_sparse


def _dense(f_dense, f_sparse, interval):
    return 3.0 * f_dense


def _sparse_forward_dense_weight_gradient(f_dense, f_sparse, interval):
    return 2.0 * f_sparse + f_dense


def _rigl(f_dense, f_sparse, interval):
    return (3.0 * f_sparse * interval + 2.0 * f_sparse + f_dense) / (interval + 1.0)


# method -> (per-example cost of one step from (f_D, f_S, dT), does it read f_S). One rule per kind
# of method; the names below share them (see the module docstring's table).
_STEP_RULES = {
    "dense": (_dense, False),
    "l0": (_dense, False),
    "variational_dropout": (_dense, False),
    **{name: (_static, True) for name in (
        "static", "random", "snip", "grasp", "synflow", "lottery", "small_dense", "set", "gradual")},
    "snfs": (_sparse_forward_dense_weight_gradient, True),
    "supermask": (_sparse_forward_dense_weight_gradient, True),
    "edge_popup": (_sparse_forward_dense_weight_gradient, True),
    "rigl": (_rigl, True),
}
TRAINING_METHODS = tuple(sorted(_STEP_RULES))
_SCHEDULE_REQUIRED = ("gradual",)  # methods whose f_S changes over training by definition

# method -> (forward-and-backward-equivalents in units of f_D per example, examples per pass).
_SCORING_RULES = {
    "snip": (3.0, "batch"),
    "grasp": (9.0, "batch"),
    "synflow": (3.0, "one"),
}
SCORING_METHODS = tuple(sorted(_SCORING_RULES))


def _check_flops(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of multiply-adds >= 0; got {value!r}.")
    return float(value)


def _mean_sparse_flops(sparse_flops, iterations):
    """The mean over `iterations` steps of a number, a sequence of one value per step, or a callable of the step."""
    if callable(sparse_flops):
        values = [_check_flops(sparse_flops(step), f"sparse_flops({step})") for step in range(iterations)]
    elif isinstance(sparse_flops, numbers.Real) and not isinstance(sparse_flops, bool):
        return _check_flops(sparse_flops, "sparse_flops")
    else:
        values = list(np.asarray(sparse_flops, dtype=np.float64).ravel()) if not isinstance(
            sparse_flops, (str, bytes)) else None
        if values is None or len(values) != iterations:
            raise ValueError(
                f"sparse_flops must be a number, a callable step -> FLOPs, or a sequence of one value per step "
                f"({iterations}); got {sparse_flops!r:.80}."
            )
        values = [_check_flops(value, "sparse_flops[...]") for value in values]
    return float(np.mean(values))


def _rule(table, method, what):
    if method not in table:
        raise ValueError(f"unknown {what} method {method!r}; choose one of {sorted(table)}.")
    return table[method]


def training_flops(method, dense_flops, sparse_flops, iterations, batch_size, update_frequency=100):
    """Total training multiply-adds of a run, by RigL's Appendix H (see the module docstring's table).

    Args:
      method: one of `TRAINING_METHODS`.
      dense_flops: f_D, the dense network's inference MACs per example (`inference_flops(model,
        dense=True)`).
      sparse_flops: f_S, the trained network's inference MACs per example: a number; or, for a
        sparsity that changes over training ('gradual' requires it), a sequence of one value
        per step or a callable step -> value for steps 0 .. iterations - 1 (its mean enters).
        Ignored (may be None) by 'dense', 'l0' and 'variational_dropout'; for 'small_dense' it
        is the small network's own f_D.
      iterations: training steps.
      batch_size: examples per step.
      update_frequency: dT, steps between RigL's mask updates (RigL's default 100); only
        'rigl' reads it.

    Returns:
      The run's training multiply-adds, a float.

    Raises:
      ValueError: unknown method (the message lists the known ones), negative or non-finite
        FLOPs, a sequence of the wrong length, non-positive counts, or 'gradual' with a
        single number.
    """
    rule, reads_sparse = _rule(_STEP_RULES, method, "training")
    dense_flops = _check_flops(dense_flops, "dense_flops")
    iterations = check_int(iterations, "iterations", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    interval = check_int(update_frequency, "update_frequency", minimum=1)
    if not reads_sparse:
        mean_sparse = dense_flops
    else:
        if method in _SCHEDULE_REQUIRED and (
                sparse_flops is None or isinstance(sparse_flops, numbers.Real)):
            raise ValueError(
                f"{method!r} prunes during training: pass sparse_flops as a sequence of one value per step or a "
                "callable step -> FLOPs (its mean over training is counted), not one number."
            )
        if sparse_flops is None:
            raise ValueError(f"{method!r} trains a sparse network: pass its sparse_flops (inference_flops(model)).")
        mean_sparse = _mean_sparse_flops(sparse_flops, iterations)
    return rule(dense_flops, mean_sparse, interval) * iterations * batch_size


def scoring_flops(method, dense_flops, batch_size, iterations=1):
    """Multiply-adds of pruning at initialization's scoring, on the dense network (module docstring).

    Args:
      method: 'snip', 'grasp' or 'synflow'.
      dense_flops: f_D per example.
      batch_size: examples in the scored batch (SNIP, GraSP); SynFlow scores one all-ones
        example and ignores it.
      iterations: scoring passes: batches for SNIP/GraSP, rounds for SynFlow (the package's
        default 100).

    Returns:
      The scoring's multiply-adds, a float.

    Raises:
      ValueError: unknown method (the message lists the known ones), bad FLOPs or counts.
    """
    per_example, examples = _rule(_SCORING_RULES, method, "scoring")
    dense_flops = _check_flops(dense_flops, "dense_flops")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    iterations = check_int(iterations, "iterations", minimum=1)
    return per_example * dense_flops * (batch_size if examples == "batch" else 1) * iterations


def imp_training_flops(round_sparse_flops, iterations_per_round, batch_size):
    """Training multiply-adds of iterative magnitude pruning: the sum over rounds of 3 f_S(round).

    Args:
      round_sparse_flops: f_S of each round's network, round 0 the dense one.
      iterations_per_round: training steps of every round (an int), or one count per round
        (e.g. fewer after rewinding to step k).
      batch_size: examples per step.

    Returns:
      The multiply-adds of all rounds' training, a float (pruning itself is not counted).

    Raises:
      ValueError: no rounds, bad FLOPs, or counts that are not positive or do not match the rounds.
    """
    rounds = [_check_flops(value, "round_sparse_flops[...]") for value in np.asarray(
        round_sparse_flops, dtype=np.float64).ravel()] if not isinstance(round_sparse_flops, numbers.Real) else None
    if not rounds:
        raise ValueError(f"round_sparse_flops must be a sequence of one f_S per round; got {round_sparse_flops!r}.")
    if isinstance(iterations_per_round, (numbers.Integral, np.integer)):
        steps = [check_int(iterations_per_round, "iterations_per_round", minimum=1)] * len(rounds)
    else:
        steps = [check_int(value, "iterations_per_round[...]", minimum=1) for value in iterations_per_round]
        if len(steps) != len(rounds):
            raise ValueError(f"iterations_per_round has {len(steps)} counts for {len(rounds)} rounds.")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return float(sum(3.0 * flops * count for flops, count in zip(rounds, steps))) * batch_size
