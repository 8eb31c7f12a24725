"""Linear interpolation between two networks' weights, and the barrier along the line.

    alphas, errors, losses = interpolate(model, weights_a, weights_b, 30, test_x, test_y)
    error_barrier = barrier(errors)

The pure path evaluation of Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity
and the Lottery Ticket Hypothesis" (ICML 2020), Section 2: the network with weights
(1 - a) W_A + a W_B is evaluated at `points` evenly spaced a in [0, 1], both ends
included (the paper uses 30), and the error barrier is the largest error on that path
minus the mean of the two endpoints' errors. The analysis over IMP runs that uses it is
`instability.py`.

Choices of ours:
* Every variable of the model is interpolated (`RewindCallback.rewindable_variables`:
  the model's weights without the pruning wrappers' masks and counters), BatchNorm's
  moving mean and variance included: the paper does not say, and recomputing the
  statistics at each a is left for later.
* The line is computed as W_A + a (W_B - W_A), and W_B itself at a = 1, in the variables'
  dtype: exact at both endpoints, exactly W_A all along when W_A == W_B (so two copies
  trained alike have a barrier of exactly 0), and weights zero in both stay zero.
* `barrier` keeps the raw value, unclipped. Since the endpoints are points of the curve it
  is never negative: a curve below its chord (convex) with endpoint errors e0 != e1 has
  barrier |e0 - e1| / 2, the paper's definition taken literally.
"""

import numpy as np

from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import callbacks
from keras_lottery.training import evaluation


def alphas(points):
    """The `points` evenly spaced interpolation coefficients in [0, 1], 0 and 1 included.

    Raises:
      ValueError: `points` is not an int >= 2 (both endpoints are needed for a barrier).
    """
    return np.linspace(0.0, 1.0, check_int(points, "interpolation_points (both endpoints are points)", 2))


def _as_list(weights, count, which):
    values = [weights[key] for key in sorted(weights)] if isinstance(weights, dict) else list(weights)
    if len(values) != count:
        raise ValueError(f"{which} has {len(values)} arrays, the model {count} variables: pass the weights of this "
                         "model (a dict keyed in variable order, as run folders save them, or a list).")
    return [np.asarray(value) for value in values]


def line(weights_a, weights_b, alpha):
    """The weights at `alpha` on the line from `weights_a` (alpha 0) to `weights_b` (alpha 1).

    Args:
      weights_a, weights_b: lists of arrays of the same shapes.
      alpha: a float in [0, 1].

    Returns:
      A list of arrays, each in its `weights_a` array's dtype. Arrays that are not floating
      point (counters) must be equal in both and are returned as they are.

    Raises:
      ValueError: shapes differ, or integer arrays differ.
    """
    result = []
    for index, (a, b) in enumerate(zip(weights_a, weights_b)):
        if a.shape != b.shape:
            raise ValueError(f"variable {index} is {a.shape} in weights_a but {b.shape} in weights_b.")
        if not np.issubdtype(a.dtype, np.floating):
            if not np.array_equal(a, b):
                raise ValueError(f"variable {index} is not floating point ({a.dtype}) and differs between the two "
                                 "networks: it cannot be interpolated.")
            result.append(a)
            continue
        b = b.astype(a.dtype)
        # W_A + a (W_B - W_A): exact at a = 0, and exactly W_A along the line when W_A == W_B.
        result.append(b if alpha == 1.0 else (a + a.dtype.type(alpha) * (b - a)).astype(a.dtype))
    return result


def interpolate(model, weights_a, weights_b, points, x, y, batch_size=1000):
    """Test loss and error of `model` along the line between two of its weight settings.

    Args:
      model: a tf_keras classifier on logits (pruning wrappers allowed: their masks stay as set,
        so a masked path needs both endpoints masked alike, or masks of ones).
      weights_a, weights_b: the endpoints, each a list of arrays in the order of
        `RewindCallback.rewindable_variables(model)`, or a dict whose sorted keys give that order
        (as `final_weights.npz` holds them).
      points: how many evenly spaced alphas in [0, 1], both ends included (>= 2).
      x, y: the evaluation examples and their integer labels.
      batch_size: examples per evaluation call.

    Returns:
      (alphas, errors, losses): lists of floats; error = 1 - accuracy, loss = mean cross-entropy
      (`training.Evaluator`). The model's variables hold their values from before the call when it returns.

    Raises:
      ValueError: bad points, weights that do not fit the model, or no examples.
    """
    coefficients = alphas(points)
    variables = callbacks.RewindCallback.rewindable_variables(model)
    weights_a = _as_list(weights_a, len(variables), "weights_a")
    weights_b = _as_list(weights_b, len(variables), "weights_b")
    for variable, value in zip(variables, weights_a):
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"weights_a's array for {variable.name} is {value.shape}, the variable "
                             f"{tuple(variable.shape)}: pass the weights of this model.")
    evaluator = evaluation.Evaluator(x, y, batch_size)
    before = [variable.numpy() for variable in variables]
    errors, losses = [], []
    try:
        for alpha in coefficients:
            for variable, value in zip(variables, line(weights_a, weights_b, float(alpha))):
                variable.assign(value)
            loss, accuracy = evaluator(model)
            errors.append(1.0 - float(accuracy))
            losses.append(float(loss))
    finally:
        for variable, value in zip(variables, before):
            variable.assign(value)
    return [float(alpha) for alpha in coefficients], errors, losses


def barrier(values):
    """The barrier of a curve sampled from alpha 0 to 1: max(values) - (values[0] + values[-1]) / 2.

    Frankle et al.'s error barrier height (applied to losses too). Raw, not clipped; never
    negative, since the endpoints are among the values.

    Raises:
      ValueError: fewer than two values, or one that is not finite.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"barrier needs a curve of at least two finite values, endpoints first and last; got "
                         f"{values.tolist()!r}.")
    return float(values.max() - (values[0] + values[-1]) / 2.0)
