"""The wrapper classes of `learned_sparsity`: L0 hard-concrete gates and sparse variational dropout.

`learned_sparsity`'s docstring describes both methods, their sources and every choice that
differs from the papers' code; this module holds the Keras layers (split off for size).
"""

import math
import numbers
import zlib

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

keras = compat.keras

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # hard-concrete temperature and stretch (l0_layers.py)
UNIFORM_EPSILON = 1e-6  # l0_layers.py's `epsilon`: keeps log u and log(1 - u) finite
L0_SHIFT = BETA * math.log(-GAMMA / ZETA)  # P(z != 0) = sigmoid(log_alpha - L0_SHIFT)
K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al.'s KL approximation
LOG_ALPHA_CLIP = 8.0
VD_THRESHOLD = 3.0  # the paper's cut: log_alpha >= 3 is dropped
VARIANCE_EPSILON = 1e-8
MNIST_SIZE = 60000
DEFAULT_L0_COEFFICIENT = 0.1 / MNIST_SIZE
DEFAULT_VD_COEFFICIENT = 1.0 / MNIST_SIZE
_KEEP = object()  # "leave this layer attribute as it is"


def check_coefficient(value):
    """Raises unless `value` (a penalty weight) is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"coefficient must be a number >= 0 (e.g. 1 / training-set size); got {value!r}.")
    if not (math.isfinite(float(value)) and float(value) >= 0.0):
        raise ValueError(f"coefficient must be a finite number >= 0 (e.g. 1 / training-set size); got {value}.")


def check_seed(seed):
    """Raises ValueError unless `seed` is an integer in [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63); got {seed!r}.")


def check_droprate(droprate_init):
    """Raises ValueError unless `droprate_init` (L0's initial closed-gate probability) is in (0, 1)."""
    if isinstance(droprate_init, bool) or not isinstance(droprate_init, numbers.Real) or not 0 < droprate_init < 1:
        raise ValueError(f"droprate_init must be a number in (0, 1); got {droprate_init!r}.")


def check_log_sigma2_init(value):
    """Raises ValueError unless `value` (VD's initial log sigma**2) is a finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"log_sigma2_init must be a finite number; got {value!r}.")


def supported(layer):
    """True for the layers these methods wrap: Dense and Conv2D (Conv2DTranspose is another op)."""
    return isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and not isinstance(
        layer, keras.layers.Conv2DTranspose)


def check_precision(layer):
    """Raises ValueError if `layer` computes in another dtype than its variables (mixed precision)."""
    policy = layer.dtype_policy
    if policy.compute_dtype != policy.variable_dtype:
        raise ValueError(f"layer {layer.name!r} uses mixed precision ({policy.name}); L0 and variational dropout "
                         "are float32 only here: build the model under the 'float32' policy.")


class LearnedSparsity(wrappers.PruneLowMagnitude):
    """What the L0 and variational-dropout wrappers share: coefficient, `learning`, noise, finalize.

    Subclasses define `_build_parameters`, `_penalty_terms`, `_forward`, `score_values`,
    `density` and `fold`.

    Args:
      layer: a Dense or Conv2D layer.
      coefficient: the penalty weight (see the module docstring).
      seed: integer seed of the noise (and of L0's log_alpha initialization).
      pruning_schedule: kept for tfmot's protocol; default `OneShot(0.0)`, which prunes nothing.
      strategy: as `PruneLowMagnitude`.
      **kwargs: passed to `PruneLowMagnitude`.

    Raises:
      TypeError, ValueError: a layer other than Dense/Conv2D, mixed precision, a bad coefficient or seed.
    """

    def __init__(self, layer, coefficient, seed=0, pruning_schedule=None, strategy="layerwise", **kwargs):
        if not supported(layer):
            raise TypeError(f"{type(self).__name__} wraps Dense and Conv2D layers; got {type(layer).__name__}.")
        check_precision(layer)
        check_coefficient(coefficient)
        check_seed(seed)
        super().__init__(layer, pruning_schedule=pruning_schedule or schedules.OneShot(0.0), strategy=strategy,
                         **kwargs)
        self.initial_coefficient = float(coefficient)
        self.seed = int(seed)

    @property
    def salt(self):
        """A per-layer integer (crc32 of the layer's name) that separates layers' noise."""
        return zlib.crc32(self.layer.name.encode("utf-8")) & 0x7FFFFFFF

    def build(self, input_shape):
        super().build(input_shape)
        if self._masked_attributes is None or len(self.pruning_vars) != 1:
            raise ValueError(f"layer {self.layer.name!r}: expected one kernel held as an attribute.")
        self.coefficient = self._state("coefficient", keras.initializers.Constant(self.initial_coefficient))
        self.learning = self._state("learning", keras.initializers.Constant(1.0))
        self.noise_step = self._state("noise_step", "zeros", tf.int64)
        self._build_parameters(self.kernel_variable.shape, self.kernel_variable.dtype)

    def _state(self, name, initializer, dtype=tf.float32):
        # ONLY_FIRST_REPLICA: replicas share one counter and one coefficient (as sign_flip's state).
        return self.add_weight(name, shape=(), initializer=initializer, dtype=dtype, trainable=False,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    # tfmot's wrapper lists only the inner layer's trainable weights, which would hide the gate
    # parameters from the optimizer (and from `model.weights`, hence from saving and backups).
    # Its own `_trainable_weights` also holds the inner kernel (tracked through `pruning_vars`).
    def _own_trainable(self):
        inner = {id(weight) for weight in self.layer.weights}
        return [weight for weight in self._trainable_weights if id(weight) not in inner]

    @property
    def trainable_weights(self):
        return self.layer.trainable_weights + (self._own_trainable() if self.trainable else [])

    @property
    def non_trainable_weights(self):
        frozen = [] if self.trainable else self._own_trainable()
        return self.layer.non_trainable_weights + frozen + self._non_trainable_weights

    @property
    def losses(self):
        # tfmot's override misses losses added in eager calls; Keras's own covers them and the inner layer's.
        return keras.layers.Layer.losses.fget(self)

    @property
    def kernel_variable(self):
        """The inner layer's kernel (L0's w, VD's theta)."""
        return self.pruning_vars[0][0]

    @property
    def mask_variable(self):
        """tfmot's 0/1 mask variable of the kernel."""
        return self.pruning_vars[0][1]

    def noise_seed(self, step):
        """The stateless seed of training call number `step`."""
        return tf.random.experimental.stateless_fold_in(tf.constant([self.seed, self.salt], tf.int64), step)

    def penalty(self):
        """The penalty this wrapper adds in a training call: coefficient * learning * sum of terms."""
        terms = self._penalty_terms(tf.convert_to_tensor(self.kernel_variable))
        return self.coefficient * self.learning * tf.reduce_sum(tf.cast(terms, tf.float32))

    def call(self, inputs, training=None, **kwargs):
        del kwargs  # Dense and Conv2D take no other call arguments
        if training is None:
            training = keras.backend.learning_phase()
        training_step = isinstance(training, (bool, int)) and bool(training)  # as PruneLowMagnitude
        kernel = tf.convert_to_tensor(self.kernel_variable)
        mask = tf.cast(tf.convert_to_tensor(self.mask_variable), kernel.dtype)
        step = None
        if training_step:
            step = tf.convert_to_tensor(self.noise_step.assign_add(1))
            self.add_loss(self.penalty())
        return self._forward(inputs, kernel, mask, self.learning > 0.5, step)

    def _call_layer(self, inputs, kernel, activation=_KEEP, use_bias=_KEEP):
        """The inner layer's own call (its strides, padding, bias, data format) on `kernel`.

        As `PruneLowMagnitude`, the kernel attribute is swapped for a tensor for the call;
        object.__setattr__ keeps Keras from tracking (and reordering) anything.
        """
        layer = self.layer
        changes = {self._masked_attributes[0]: kernel, "activation": activation, "use_bias": use_bias}
        changes = {name: value for name, value in changes.items() if value is not _KEEP}
        saved = {name: getattr(layer, name) for name in changes}
        try:
            for name, value in changes.items():
                object.__setattr__(layer, name, value)
            return layer.call(inputs)
        finally:
            for name, value in saved.items():
                object.__setattr__(layer, name, value)

    def get_config(self):
        config = super().get_config()
        config.update(coefficient=self.initial_coefficient, seed=self.seed)
        return config

    def bookkeeping_variables(self):
        return super().bookkeeping_variables() + [self.coefficient, self.learning, self.noise_step]


@keras.utils.register_keras_serializable(package="keras_lottery")
class PruneLowL0(LearnedSparsity):
    """L0 regularization with one hard-concrete gate per kernel weight (see the module docstring).

    Args:
      layer, coefficient, seed, **kwargs: as `LearnedSparsity`.
      droprate_init: the initial probability of a gate being closed; log_alpha starts at
        N(log(1 - d) - log(d), 0.01).

    Raises:
      ValueError: droprate_init outside (0, 1), and as `LearnedSparsity`.
    """

    def __init__(self, layer, coefficient=DEFAULT_L0_COEFFICIENT, seed=0, droprate_init=0.5, **kwargs):
        check_droprate(droprate_init)
        super().__init__(layer, coefficient=coefficient, seed=seed, **kwargs)
        self.droprate_init = float(droprate_init)

    def _build_parameters(self, shape, dtype):
        mean = math.log(1.0 - self.droprate_init) - math.log(self.droprate_init)
        seed = (self.seed * 1_000_003 + self.salt) % 2**31  # the initializer takes one int
        self.log_alpha = self.add_weight("log_alpha", shape=shape, dtype=dtype, trainable=True,
                                         initializer=keras.initializers.RandomNormal(mean, 0.01, seed=seed))

    def sampled_gate(self, step):
        """The training gate z of call number `step` (a tensor shaped like the kernel)."""
        log_alpha = tf.convert_to_tensor(self.log_alpha)
        u = tf.random.stateless_uniform(tf.shape(log_alpha), self.noise_seed(step), UNIFORM_EPSILON,
                                        1.0 - UNIFORM_EPSILON, dtype=log_alpha.dtype)
        s = tf.sigmoid((tf.math.log(u) - tf.math.log(1.0 - u) + log_alpha) / BETA)
        return tf.clip_by_value(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def deterministic_gate(self):
        """The inference gate clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)."""
        return tf.clip_by_value(tf.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def _penalty_terms(self, kernel):
        del kernel
        return tf.sigmoid(self.log_alpha - L0_SHIFT) * tf.cast(self.mask_variable, self.log_alpha.dtype)

    def _forward(self, inputs, kernel, mask, learning, step):
        gate = self.deterministic_gate if step is None else lambda: self.sampled_gate(step)
        # tf.cond, not a blend: once finalized the kernel is used as it is, exactly.
        effective = tf.cond(learning, lambda: kernel * gate(), lambda: kernel)
        return self._call_layer(inputs, effective * mask)

    def score_values(self):
        """log_alpha as float64 NumPy (higher survives)."""
        return self.log_alpha.numpy().astype(np.float64)

    def density(self):
        """The mean over the kernel of P(z != 0) * mask."""
        probability = 1.0 / (1.0 + np.exp(-(self.score_values() - L0_SHIFT)))
        return float(np.mean(probability * self.mask_variable.numpy()))

    def fold(self):
        """kernel <- kernel * deterministic gate (what `finalize` does before masking)."""
        self.kernel_variable.assign(self.kernel_variable * self.deterministic_gate())

    def get_config(self):
        config = super().get_config()
        config["droprate_init"] = self.droprate_init
        return config


@keras.utils.register_keras_serializable(package="keras_lottery")
class PruneLowVariationalDropout(LearnedSparsity):
    """Sparse variational dropout with the local reparameterization trick (see the module docstring).

    Args:
      layer, coefficient, seed, **kwargs: as `LearnedSparsity`.
      log_sigma2_init: the initial log sigma**2 of every weight (the code's -10).

    Raises:
      ValueError: a non-finite log_sigma2_init, and as `LearnedSparsity`.
    """

    def __init__(self, layer, coefficient=DEFAULT_VD_COEFFICIENT, seed=0, log_sigma2_init=-10.0, **kwargs):
        check_log_sigma2_init(log_sigma2_init)
        super().__init__(layer, coefficient=coefficient, seed=seed, **kwargs)
        self.log_sigma2_init = float(log_sigma2_init)

    def _build_parameters(self, shape, dtype):
        self.log_sigma2 = self.add_weight("log_sigma2", shape=shape, dtype=dtype, trainable=True,
                                          initializer=keras.initializers.Constant(self.log_sigma2_init))

    def log_alpha(self, kernel=None, clip=True):
        """log sigma**2 - log(theta**2 + 1e-8), clipped to [-8, 8] unless `clip=False`."""
        theta = tf.convert_to_tensor(self.kernel_variable) if kernel is None else kernel
        value = self.log_sigma2 - tf.math.log(tf.square(theta) + VARIANCE_EPSILON)
        return tf.clip_by_value(value, -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP) if clip else value

    def _penalty_terms(self, kernel):
        log_alpha = self.log_alpha(kernel)
        negative_kl = K1 * tf.sigmoid(K2 + K3 * log_alpha) - 0.5 * tf.math.log1p(tf.exp(-log_alpha)) - K1
        return -negative_kl * tf.cast(self.mask_variable, log_alpha.dtype)

    def _forward(self, inputs, kernel, mask, learning, step):
        if step is None:
            return self._call_layer(inputs, kernel * mask)
        inputs = tf.cast(inputs, kernel.dtype)
        activation = self.layer.activation
        mean = self._call_layer(inputs, kernel * mask, activation=None)  # op(x, theta) + bias

        def noise():
            variance = self._call_layer(tf.square(inputs), tf.exp(self.log_sigma2) * mask, activation=None,
                                        use_bias=False)
            eps = tf.random.stateless_normal(tf.shape(variance), self.noise_seed(step), dtype=variance.dtype)
            return tf.sqrt(variance + VARIANCE_EPSILON) * eps

        # tf.cond: once finalized no variance is computed and mean + 0 is exactly the plain output.
        outputs = mean + tf.cond(learning, noise, lambda: tf.zeros_like(mean))
        return outputs if activation is None else activation(outputs)

    def score_values(self):
        """-log_alpha, unclipped, as float64 NumPy (higher survives)."""
        theta = self.kernel_variable.numpy().astype(np.float64)
        return -(self.log_sigma2.numpy().astype(np.float64) - np.log(theta**2 + VARIANCE_EPSILON))

    def density(self):
        """The fraction of the kernel with log_alpha < 3 and mask 1."""
        return float(np.mean((-self.score_values() < VD_THRESHOLD) * self.mask_variable.numpy()))

    def fold(self):
        """Nothing: the kernel is theta already."""

    def get_config(self):
        config = super().get_config()
        config["log_sigma2_init"] = self.log_sigma2_init
        return config
