"""Pruning wrappers on tfmot, and the one path that turns scores into wrapper masks.

`prune_low_magnitude` wraps every layer that has a kernel to prune in
`PruneLowMagnitude`, a subclass of tfmot's wrapper: masks live in tfmot's `mask`
variables, so tfmot's tools (`strip_pruning`, `collect_prunable_layers`, weight
checkpoints) keep working. What differs from tfmot:

* **No mask update inside the training graph with `UpdateMasks`.** tfmot re-ranks |w|
  in the graph on its schedule, which makes masks non-monotone and costs about 1.24x
  per step. Here masks change through `pruning.prune()` (called by the `UpdateMasks`
  callback or the IMP loop). Driven by tfmot's own `UpdatePruningStep` (a migrating
  user's script), a wrapper counts its step as tfmot's and, when its schedule fires,
  computes its masks on the host with the same mask computation (`update_masks_at`);
  its forward pass then multiplies by the mask, as tfmot's. A training whose schedule
  prunes and that nothing drives is refused before its first step (`manage_masks`).
* **Pruned weights are kept at exactly 0 instead of being multiplied away.** Every
  mask change sets pruned weights and their optimizer state (momentum, Adam
  moments) to 0, and the gradient reaching the kernel is multiplied by the mask. With
  zero weight, zero state and zero gradient, SGD (with momentum), Adam and weight
  decay leave pruned weights at exactly 0, so the training forward pass uses the
  kernel as it is: no `w * m` per step (that multiply cost about 10% of a LeNet
  step here). `UpdateMasks` re-zeroes pruned weights at the start and end of every
  fit, in case weights were set by hand in between (or call `apply_masks`).
  Inference (`predict`, `evaluate`) multiplies by the mask, so what you measure is
  always the masked network.
* **The input model is not modified**: layers are copied, not shared with the
  dense model (tfmot wraps the original layer objects; `share_layers=True` does too).
* Masks may be structured as tfmot's: `block_size`, `sparsity_m_by_n` (`masks.Pattern`).
* `strategy='global'` ranks all layers together; per-layer schedules (a dict) give
  per-layer rates.

Masks are keyed by the wrapped layer's name (`"<layer>/<i>"` for a layer with
several prunable weights).
"""

import inspect

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

from keras_lottery import compat
from keras_lottery.compat import keras3_conversion
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import tfmot_protocol
from keras_lottery.sparsity.mask_variables import (  # noqa: F401  (part of this module's API)
    apply_masks,
    get_masks,
    get_weights,
    optimizer_slots,
    prunable_wrappers,
    pruning_entries,
    set_masks,
)
from keras_lottery.sparsity.tfmot_protocol import manage_masks  # noqa: F401  (part of this module's API)

keras = compat.keras


@tf.custom_gradient
def _gradient_masked(weight, mask):
    """Identity on `weight` whose gradient is multiplied by `mask`."""

    def gradient(upstream):
        return upstream * mask, None

    return tf.identity(weight), gradient


def attribute_holding(layer, variable):
    """Name of the attribute of `layer` that holds `variable`, or None."""
    for name, value in vars(layer).items():
        if value is variable:
            return name
    return None


@keras.utils.register_keras_serializable(package="keras_lottery")
class PruneLowMagnitude(tfmot_protocol.TfmotProtocol, tfmot_wrapper.PruneLowMagnitude):
    """tfmot's pruning wrapper with masks fixed in the graph and gradients masked.

    Args:
      layer: the layer to prune (Dense, Conv2D, or anything tfmot supports).
      pruning_schedule: a `PruningSchedule` evaluated by `UpdateMasks`.
      strategy: 'layerwise' or 'global' (how `UpdateMasks` ranks this layer).
      **kwargs: passed to tfmot's wrapper.
    """

    criterion = "magnitude"  # what `prune` ranks this layer's weights by (subclasses change it)

    def __init__(self, layer, pruning_schedule=None, strategy="layerwise", **kwargs):
        masks_lib.check_strategy(strategy)
        if pruning_schedule is None:
            pruning_schedule = tfmot_schedule.ConstantSparsity(0.5, 0)
        super().__init__(layer, pruning_schedule=pruning_schedule, **kwargs)
        self.strategy = strategy
        self._masked_attributes = None

    def build(self, input_shape):
        super().build(input_shape)
        attributes = [attribute_holding(self.layer, weight) for weight, _, _ in self.pruning_vars]
        # Layers whose weights are not plain attributes (e.g. RNN cells) fall back to
        # tfmot's way: assign w * m to the variable before each call.
        self._masked_attributes = attributes if all(attributes) else None

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        # Only a Python True (as `fit` passes) takes the fast path; a tensor-valued
        # `training` gets the always-correct multiply.
        training_step = isinstance(training, (bool, int)) and bool(training)
        driven = training_step and self._driven_by_tfmot()
        object.__setattr__(self, "_traced_driven", driven)  # not a tracked attribute: Keras need not see it
        update = self._schedule_update() if driven else None
        if training_step and not driven:
            self._check_schedule_applied()
        if self._masked_attributes is None:
            with tf.control_dependencies([update] if update is not None else []):
                self.add_update(self.pruning_obj.weight_mask_op())
            return self.layer.call(inputs, **kwargs)
        layer = self.layer
        try:
            for (weight, mask, _), attribute in zip(self.pruning_vars, self._masked_attributes):
                with tf.control_dependencies([update] if update is not None else []):  # masks read after it
                    value = tf.convert_to_tensor(weight)  # the compute dtype under mixed precision
                    mask = tf.cast(tf.convert_to_tensor(mask), value.dtype)
                # Driven by tfmot's callback, as tfmot's wrapper: w * m (its weights and optimizer state are
                # not zeroed at each mask update, which our fast path relies on).
                masked = _gradient_masked(value, mask) if training_step and not driven else value * mask
                # object.__setattr__ bypasses Keras's attribute tracking, which would
                # otherwise untrack the variable and reorder the layer's weights.
                object.__setattr__(layer, attribute, masked)
            if training is not None and "training" in _call_arguments(layer):
                kwargs["training"] = training
            return layer.call(inputs, **kwargs)
        finally:
            for (weight, _, _), attribute in zip(self.pruning_vars, self._masked_attributes):
                object.__setattr__(layer, attribute, weight)

    def bookkeeping_variables(self):
        """Variables that record pruning state rather than the model (never rewound)."""
        variables = [self.pruning_step]
        for _, mask, threshold in self.pruning_vars:
            variables += [mask, threshold]
        return variables

    def criterion_state(self, weight):
        """Extra per-weight state a criterion may need for `weight` (none for magnitude)."""
        del weight
        return {}

    def get_config(self):
        config = super().get_config()
        config["strategy"] = self.strategy
        if self.sparsity_m_by_n:  # tfmot's own get_config leaves it out
            config["sparsity_m_by_n"] = list(self.sparsity_m_by_n)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["pruning_schedule"] = keras.utils.deserialize_keras_object(
            config.pop("pruning_schedule"), custom_objects=custom_objects()
        )
        config["layer"] = keras.layers.deserialize(config.pop("layer"))
        return cls(**config)


def _call_arguments(layer):
    return inspect.signature(layer.call).parameters


def pattern_of(wrapper):
    """The mask `Pattern` a wrapper (ours or tfmot's) was made with: block_size, block pooling, m-by-n."""
    return masks_lib.Pattern(block_size=tuple(getattr(wrapper, "block_size", (1, 1))),
                             block_pooling=getattr(wrapper, "block_pooling_type", "AVG"),
                             m_by_n=getattr(wrapper, "sparsity_m_by_n", None))


def patterns(model):
    """dict mask name -> `Pattern` of every structured prunable weight of `model`."""
    found = {name: pattern_of(wrapper) for name, wrapper, _, _ in pruning_entries(model)}
    return {name: pattern for name, pattern in found.items() if pattern.structured}


REGISTERED_PACKAGE = "keras_lottery"  # the package name of our `register_keras_serializable` classes


def custom_objects():
    """dict class name -> class of every wrapper and schedule a pruned model may hold.

    These are the classes keras_lottery registers with Keras (wrappers, `OneShot`,
    `Iterative`, `Gradual`, `EarlyBirdSchedule`, ...) under their plain names, plus
    tfmot's `ConstantSparsity` and `PolynomialDecay`. Pass it as
    `load_model(..., custom_objects=custom_objects())`, or use `prune_scope()`.
    """
    prefix = REGISTERED_PACKAGE + ">"
    registered = {name[len(prefix):]: cls for name, cls in keras.utils.get_custom_objects().items()
                  if name.startswith(prefix)}
    return {"ConstantSparsity": tfmot_schedule.ConstantSparsity, "PolynomialDecay": tfmot_schedule.PolynomialDecay,
            **registered}


def prune_scope():
    """A scope in which Keras finds every keras_lottery wrapper and schedule (like tfmot's `prune_scope`).

    Our classes are registered with Keras, so `load_model` finds them in files saved
    by keras_lottery even without it; the scope also resolves plain class names
    ("OneShot", "PruneLowMagnitude", ...), as hand-written or tfmot-style configs use:

        with keras_lottery.prune_scope():
            model = keras.models.load_model(path)

    Returns:
      A `keras.utils.custom_object_scope` holding `custom_objects()`.
    """
    return keras.utils.custom_object_scope(custom_objects())


# ----------------------------------------------------------------------------------------
# Wrapping and stripping.


def _has_prunable_weights(layer):
    if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return True
    registry = prune_registry.PruneRegistry
    if isinstance(layer, keras.layers.BatchNormalization):
        return False  # tfmot never prunes BatchNorm; its registry knows the class only, not subclasses
    if not registry.supports(layer):
        return None  # unknown to tfmot
    weight_map = registry._LAYERS_WEIGHTS_MAP  # pylint: disable=protected-access
    return bool(weight_map[layer.__class__]) if layer.__class__ in weight_map else True


def _copy_layer(layer):
    copy = layer.__class__.from_config(layer.get_config())
    if isinstance(layer, keras.layers.MultiHeadAttention) and getattr(layer, "_built_from_signature", False):
        # from_config creates the attention's projection layers but builds them only on the first call;
        # tfmot reads their kernels when it wraps the layer, so the copy is called once here.
        def zeros(shape):
            return tf.zeros([1 if size is None else size for size in tf.TensorShape(shape).as_list()])

        copy(query=zeros(layer._query_shape), value=zeros(layer._value_shape), key=zeros(layer._key_shape))
    return copy


def _copy_weights(source, target, transform=lambda layer, weights: weights):
    """Copies weights layer by layer (matched by the inner layer's name), masks included."""
    by_name = {getattr(layer, "layer", layer).name: layer for layer in target.layers}
    for layer in source.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name not in by_name:
            continue
        copy = by_name[inner.name]
        if isinstance(inner, keras.Model) and isinstance(copy, keras.Model):
            _copy_weights(inner, copy, transform)  # a nested model, layer by layer
            continue
        if inner.weights:
            getattr(copy, "layer", copy).set_weights(transform(layer, inner.get_weights()))
        both_wrapped = isinstance(layer, tfmot_wrapper.PruneLowMagnitude) and isinstance(
            copy, tfmot_wrapper.PruneLowMagnitude)
        if both_wrapped:
            for (_, mask, threshold), (_, copy_mask, copy_threshold) in zip(layer.pruning_vars, copy.pruning_vars):
                copy_mask.assign(mask)
                copy_threshold.assign(threshold)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    strategy="layerwise",
    share_layers=False,
    **kwargs,
):
    """Wraps a model, a layer or a list of layers for magnitude pruning.

    Same signature and accepted inputs as `tfmot.sparsity.keras.prune_low_magnitude`,
    plus `strategy` and per-layer schedules. Train with the `UpdateMasks` callback
    (it applies the schedules), or set masks with `prune()` / `keras_lottery.imp`.
    A Keras 3 Sequential or functional model is first converted to tf_keras (see
    `keras3_conversion.to_tf_keras`, which warns); the model returned is a tf_keras model.

    Args:
      to_prune: a Sequential or functional tf_keras model, a layer, or a list of layers.
      pruning_schedule: a `PruningSchedule` for every layer (default tfmot's
        `ConstantSparsity(0.5, 0)`); or a dict layer name -> schedule, in which case
        only the named layers are pruned; or a callable layer -> schedule or None.
      block_size: (height, width) of the blocks of a 2-D kernel pruned together, as
        tfmot (`masks.Pattern`); (1, 1) prunes single weights.
      block_pooling_type: 'AVG' or 'MAX': how a block's weights score it.
      pruning_policy: optional tfmot `PruningPolicy` (which layers may be pruned).
      sparsity_m_by_n: (m, n), e.g. (2, 4): m zeros in every n consecutive input-channel
        weights (Dense and Conv2D kernels), whatever the schedule's sparsity, as tfmot.
      strategy: 'layerwise' (each layer to its own sparsity) or 'global' (all layers
        ranked together; unstructured only).
      share_layers: wrap the model's own layer objects, as tfmot does (training the
        pruned model then trains the input model's weights too). Default False: the
        layers are copied and the input model stays as it was.
      **kwargs: passed to the wrapper when `to_prune` is a layer.

    Returns:
      A new model with the prunable layers wrapped (the input model is unchanged unless
      `share_layers`), or the wrapped layer(s).

    Raises:
      TypeError: Keras 3 layers, Keras 3 models that cannot be converted, subclassed
        models, or objects that are not layers/models.
      ValueError: unsupported arguments, unknown layer names in a schedule dict, a
        layer tfmot cannot prune, or a nested model.
    """
    masks_lib.check_strategy(strategy)
    pattern = check_pattern(block_size, block_pooling_type, sparsity_m_by_n, strategy)

    def make_wrapper(layer, schedule, **wrapper_kwargs):
        return PruneLowMagnitude(layer, pruning_schedule=schedule, strategy=strategy, **pattern, **wrapper_kwargs)

    return wrap_layers(to_prune, pruning_schedule, pruning_policy, make_wrapper, "prune_low_magnitude",
                       share_layers=share_layers, **kwargs)


def check_pattern(block_size, block_pooling_type, sparsity_m_by_n, strategy):
    """The wrapper arguments of a mask pattern, after checking it (`masks.Pattern`).

    Raises:
      ValueError: a malformed block size, pooling or m-by-n, or a structured pattern
        with the global strategy (it ranks single weights).
    """
    pattern = masks_lib.Pattern(block_size=tuple(block_size), block_pooling=block_pooling_type, m_by_n=sparsity_m_by_n)
    if pattern.structured and strategy != "layerwise":
        raise ValueError("block and m-by-n sparsity are per layer: use strategy='layerwise' with them.")
    return {"block_size": pattern.block_size, "block_pooling_type": pattern.block_pooling,
            "sparsity_m_by_n": pattern.m_by_n}


def wrap_layers(to_prune, pruning_schedule, pruning_policy, make_wrapper, function_name, share_layers=False, **kwargs):
    """Wraps the prunable layers of a model, a layer or a list of layers (shared by every wrapper kind).

    Args:
      to_prune: a Sequential or functional tf_keras model (or a Keras 3 one, converted
        with `keras3_conversion.to_tf_keras`), a layer, or a list of layers.
      pruning_schedule: a schedule, a dict layer name -> schedule, or a callable
        layer -> schedule or None (see `prune_low_magnitude`).
      pruning_policy: optional tfmot `PruningPolicy`.
      make_wrapper: callable (layer, schedule, **kwargs) -> the wrapper.
      function_name: the public function's name, for error messages.
      share_layers: wrap the model's own layers instead of copies (tfmot's way).
      **kwargs: passed to `make_wrapper` when `to_prune` is a layer.

    Returns:
      A new model (layers copied unless `share_layers`), or the wrapped layer(s).
    """

    def schedule_for(layer):
        if isinstance(pruning_schedule, dict):
            return pruning_schedule.get(layer.name)
        if callable(pruning_schedule) and not isinstance(pruning_schedule, tfmot_schedule.PruningSchedule):
            return pruning_schedule(layer)
        return pruning_schedule or tfmot_schedule.ConstantSparsity(0.5, 0)

    def wrap(layer, copy, single=False, **wrapper_kwargs):
        if isinstance(layer, tfmot_wrapper.PruneLowMagnitude):  # never wrapped twice
            asked = schedule_for(layer.layer) if pruning_schedule is not None else None
            if asked is not None and asked.get_config() != layer.pruning_schedule.get_config():
                raise ValueError(
                    f"layer {layer.layer.name!r} is wrapped already, with schedule {layer.pruning_schedule.get_config()}; "
                    f"this call asks for {asked.get_config()}. Unwrap it first (strip_pruning), or leave it out of "
                    "the schedule (a dict of per-layer schedules)."
                )
            return _copy_layer(layer) if copy else layer
        if isinstance(layer, keras.Model):
            # A nested model is pruned recursively, as tfmot does (a subclassed one is refused there).
            compat.check_model(layer, f"The nested model {layer.name!r}")
            return wrap_layers(layer, pruning_schedule, pruning_policy, make_wrapper, function_name,
                               share_layers=share_layers or not copy)
        schedule = schedule_for(layer)
        allowed = pruning_policy is None or pruning_policy.allow_pruning(layer)
        prunable = _has_prunable_weights(layer)
        if prunable is False and single and schedule is not None and allowed:
            # A layer asked for on its own is wrapped, as tfmot does, even with nothing to prune (its
            # keyword arguments, input_shape say, go to the wrapper); in a model such layers stay as they are.
            return make_wrapper(layer, schedule, **wrapper_kwargs)
        if schedule is None or not allowed or prunable is False:
            return _copy_layer(layer) if copy else layer
        if prunable is None:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is not one tfmot knows how to prune. "
                "Make it a tfmot PrunableLayer (define get_prunable_weights), or pass a dict "
                "pruning_schedule that names only the layers to prune."
            )
        return make_wrapper(_copy_layer(layer) if copy else layer, schedule, **wrapper_kwargs)

    given = list(pruning_schedule.values()) if isinstance(pruning_schedule, dict) else [pruning_schedule]
    for schedule in given:
        if not (schedule is None or isinstance(schedule, tfmot_schedule.PruningSchedule) or (
                callable(schedule) and not isinstance(pruning_schedule, dict))):
            raise TypeError(
                f"pruning_schedule must be a PruningSchedule (e.g. keras_lottery.OneShot(0.8)), a dict layer "
                f"name -> PruningSchedule, or a callable layer -> PruningSchedule; got {schedule!r}."
            )
    to_prune = keras3_conversion.to_tf_keras(to_prune, "The model to prune")
    compat.check_not_keras3(to_prune, "The object to prune")
    if not isinstance(to_prune, (keras.Model, keras.layers.Layer, list, tuple)):
        raise TypeError(
            f"{function_name} takes a tf_keras model, a layer or a list of layers; got {type(to_prune).__name__}."
        )
    if isinstance(pruning_schedule, dict):
        layers = to_prune.layers if isinstance(to_prune, keras.Model) else (
            to_prune if isinstance(to_prune, (list, tuple)) else [to_prune])
        names = {layer.name for layer in layers}
        unknown = sorted(set(pruning_schedule) - names)
        if unknown:
            raise ValueError(f"pruning_schedule names layers {unknown} that are not in the model; its layers are {sorted(names)}.")

    if isinstance(to_prune, keras.Model):
        compat.check_model(to_prune, "The model to prune")
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        if share_layers:
            return keras.models.clone_model(to_prune, clone_function=lambda layer: wrap(layer, copy=False))
        pruned = keras.models.clone_model(to_prune, clone_function=lambda layer: wrap(layer, copy=True))
        _copy_weights(to_prune, pruned)
        return pruned
    if isinstance(to_prune, (list, tuple)):
        return [wrap(layer, copy=False) for layer in to_prune]
    return wrap(to_prune, copy=False, single=True, **kwargs)


def strip_pruning(model):
    """Returns a plain tf_keras model with the pruned weights as exact zeros.

    The result shares nothing with `model`: layers are rebuilt from their configs and
    the effective weights (weight * mask) copied in. A Keras 3 Sequential or functional
    model is converted to tf_keras (see `keras3_conversion.to_tf_keras`, which warns).

    Raises:
      TypeError: Keras 3 models that cannot be converted, subclassed models, or not a model.
    """
    model = keras3_conversion.to_tf_keras(model, "The model to strip")
    compat.check_model(model, "The model to strip")

    def unwrap(layer):
        if isinstance(layer, keras.Model):
            return strip_pruning(layer)  # a nested model: its weights are copied with the outer model's
        return _copy_layer(getattr(layer, "layer", layer) if isinstance(layer, tfmot_wrapper.PruneLowMagnitude) else layer)

    def masked(layer, weights):
        if not isinstance(layer, tfmot_wrapper.PruneLowMagnitude):
            return weights
        masks_by_weight = {id(weight): mask.numpy() for weight, mask, _ in layer.pruning_vars}
        return [
            value * masks_by_weight[id(variable)] if id(variable) in masks_by_weight else value
            for variable, value in zip(layer.layer.weights, weights)
        ]

    stripped = keras.models.clone_model(model, clone_function=unwrap)
    _copy_weights(model, stripped, masked)
    return stripped
