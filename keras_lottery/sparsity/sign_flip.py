"""Sign-flip pruning: count sign changes inside the training graph, prune flipped weights first.

    model = keras_lottery.prune_low_sign_flip(model, pruning_schedule=schedule, criterion="hybrid")
    model.fit(..., callbacks=[keras_lottery.UpdateMasks()])

`PruneLowSignFlip` is our magnitude wrapper (so tfmot's mask variables, `strip_pruning`,
the IMP loop and rewinding all work) plus three non-trainable variables per pruned
kernel:

* `reference_sign`: the sign of each weight at the ticket's reference point —
  `reference='init'`: the weights when the model is wrapped (its initialization);
  `reference='rewind'`: the snapshot a `RewindCallback` takes at its `rewind_step`
  (until then the reference is not available and the sign-flip criteria refuse to run).
* `flip_count`: how many times the weight's sign changed since the reference point.
* `last_sign`: the last nonzero sign seen, which the count compares against.

With an `OnFlip` schedule (prune as the flips happen, `on_flip.py`) a fourth,
`on_flip_log`, records what each of the schedule's checks pruned.

Counting happens in each training call (`training=True`, as `fit` passes): the
forward pass of step t compares the signs the update of step t-1 left with
`last_sign` — a few elementwise ops, no Python work per step. The update of the
last step is seen when the state is read (`flip_counts` adds it), so counts are
exact. A weight at exactly 0 (pruned) has no sign and never counts as flipping.
"""

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

keras = compat.keras

REFERENCES = ("init", "rewind")
SIGN_FLIP_CRITERIA = ("sign_flip", "flip", "hybrid", "magnitude")


def check_alpha(alpha):
    """Raises ValueError unless `alpha` (the hybrid's flip exponent) is a number >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"alpha (the hybrid's flip exponent) must be a number >= 0; got {alpha!r}.")


def check_arguments(criterion, alpha, reference):
    """Validates the sign-flip wrapper's arguments; returns the reference as a string.

    Raises:
      ValueError: unknown criterion or reference, or a negative alpha.
    """
    if criterion not in SIGN_FLIP_CRITERIA:
        raise ValueError(f"unknown sign-flip criterion {criterion!r}; choose one of {SIGN_FLIP_CRITERIA}.")
    check_alpha(alpha)
    if hasattr(reference, "rewind_step"):  # a RewindCallback
        return "rewind"
    if reference not in REFERENCES:
        raise ValueError(
            f"reference must be 'init', 'rewind' or a keras_lottery.RewindCallback; got {reference!r}."
        )
    return reference


@keras.utils.register_keras_serializable(package="keras_lottery")
class PruneLowSignFlip(wrappers.PruneLowMagnitude):
    """Our pruning wrapper that also tracks each weight's sign flips in the graph.

    Args:
      layer: the layer to prune (Dense, Conv2D, or anything tfmot supports).
      pruning_schedule: a `PruningSchedule` evaluated by `UpdateMasks`.
      strategy: 'layerwise' or 'global'.
      criterion: 'sign_flip' (alias 'flip'), 'hybrid' or 'magnitude' (see `criteria`).
      alpha: the hybrid's exponent: score = |w| / (1 + flips) ** alpha.
      reference: 'init' or 'rewind' (see the module docstring).
      **kwargs: passed to the wrapper.
    """

    def __init__(self, layer, pruning_schedule=None, strategy="layerwise", criterion="sign_flip", alpha=1.0,
                 reference="init", **kwargs):
        reference = check_arguments(criterion, alpha, reference)
        super().__init__(layer, pruning_schedule=pruning_schedule, strategy=strategy, **kwargs)
        self.criterion = criterion
        self.alpha = float(alpha)
        self.reference = reference
        self.flip_vars = []  # (reference_sign, last_sign, flip_count) per pruned weight

    def build(self, input_shape):
        super().build(input_shape)
        several = len(self.pruning_vars) > 1
        for index, (weight, _, _) in enumerate(self.pruning_vars):
            suffix = f"_{index}" if several else ""

            def current_sign(shape, dtype=None, weight=weight):
                del shape
                return tf.sign(tf.cast(weight.read_value(), dtype or tf.float32))

            self.flip_vars.append((self._add_state(f"reference_sign{suffix}", weight.shape, current_sign, tf.float32),
                                   self._add_state(f"last_sign{suffix}", weight.shape, current_sign, tf.float32),
                                   self._add_state(f"flip_count{suffix}", weight.shape, "zeros", tf.int32)))
        # The step whose weights are the reference; -1 until a RewindCallback sets it.
        self.reference_step = self._add_state(
            "reference_step", (), keras.initializers.Constant(0 if self.reference == "init" else -1), tf.int64)
        # An `OnFlip` schedule's record, one row per check (-1: not done yet), in the model's
        # variables so that a mid-round backup keeps it (see `on_flip.py`).
        self.on_flip_logs = []
        if isinstance(self.pruning_schedule, schedules.OnFlip):
            checks = self.pruning_schedule.updates + 1
            self.on_flip_logs = [self._add_state(f"on_flip_log{f'_{i}' if several else ''}", (checks, 3),
                                                 keras.initializers.Constant(-1), tf.int64)
                                 for i in range(len(self.pruning_vars))]

    def _add_state(self, name, shape, initializer, dtype):
        # ONLY_FIRST_REPLICA: replicas see the same (mirrored) weights, so the first
        # replica's count is everyone's.
        return self.add_weight(name, shape=shape, initializer=initializer, dtype=dtype, trainable=False,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        if isinstance(training, (bool, int)) and bool(training):
            self._count_flips()
        return super().call(inputs, training=training, **kwargs)

    def _count_flips(self):
        for (weight, _, _), (_, last_sign, flip_count) in zip(self.pruning_vars, self.flip_vars):
            sign = tf.sign(tf.cast(tf.convert_to_tensor(weight), tf.float32))
            flip_count.assign_add(tf.cast(sign * last_sign < 0, tf.int32))
            last_sign.assign(tf.where(sign != 0, sign, last_sign))

    # -- Reading and resetting the state (Python side, between steps). --

    def _index_of(self, weight):
        for index, (candidate, _, _) in enumerate(self.pruning_vars):
            if candidate is weight:
                return index
        raise ValueError(f"{weight.name} is not a weight this wrapper prunes.")

    def _flip_vars_of(self, weight):
        return self.flip_vars[self._index_of(weight)]

    def flip_counts(self, weight):
        """Exact sign changes of `weight` since the reference, including the last update."""
        _, last_sign, flip_count = self._flip_vars_of(weight)
        pending = np.sign(weight.numpy()) * last_sign.numpy() < 0
        return flip_count.numpy() + pending.astype(np.int32)

    def flipped(self, weight):
        """True where `weight`'s sign now differs from its reference sign (0 never flipped)."""
        reference_sign, _, _ = self._flip_vars_of(weight)
        return np.sign(weight.numpy()) * reference_sign.numpy() < 0

    def reference_available(self):
        return int(self.reference_step.numpy()) >= 0

    def reset_reference(self, step=0):
        """Makes the current weights the reference: signs recorded, counts back to 0."""
        for (weight, _, _), (reference_sign, last_sign, flip_count) in zip(self.pruning_vars, self.flip_vars):
            sign = np.sign(weight.numpy()).astype(np.float32)
            reference_sign.assign(sign)
            last_sign.assign(sign)
            flip_count.assign(np.zeros(flip_count.shape, np.int32))
        self.reference_step.assign(step)

    def bookkeeping_variables(self):
        variables = super().bookkeeping_variables() + [self.reference_step] + list(self.on_flip_logs)
        for triple in self.flip_vars:
            variables += list(triple)
        return variables

    def criterion_state(self, weight):
        if not self.reference_available():
            raise RuntimeError(
                f"Layer {self.layer.name!r} uses reference='rewind', but no RewindCallback has taken its "
                "snapshot yet: add keras_lottery.RewindCallback(rewind_step=k) to the callbacks and prune "
                "after step k, or use reference='init'."
            )
        mask = self._mask_of(weight)
        return {"flip_count": self.flip_counts(weight) * mask, "flipped": self.flipped(weight) & (mask > 0),
                "alpha": self.alpha}

    def _mask_of(self, weight):
        return self.pruning_vars[self._index_of(weight)][1].numpy().astype(np.int32)

    def get_config(self):
        config = super().get_config()
        config.update(criterion=self.criterion, alpha=self.alpha, reference=self.reference)
        return config


def sign_flip_wrappers(model):
    """The `PruneLowSignFlip` wrappers of `model`, in order."""
    return [w for w in wrappers.prunable_wrappers(model) if isinstance(w, PruneLowSignFlip)]


def reset_reference(model, step=0, only_rewind=False):
    """Makes the current weights every sign-flip wrapper's reference; counts restart at 0.

    Args:
      model: a model wrapped with `prune_low_sign_flip`.
      step: the training step the reference stands for (recorded in the wrappers).
      only_rewind: only wrappers with reference='rewind' (what `RewindCallback` does
        when it takes its snapshot).
    """
    for wrapper in sign_flip_wrappers(model):
        if not only_rewind or wrapper.reference == "rewind":
            wrapper.reset_reference(step)


def get_state(model):
    """Every sign-flip wrapper's state as arrays (for saving with a round's results)."""
    state = {}
    for wrapper in sign_flip_wrappers(model):
        for index, variables in enumerate(wrapper.flip_vars):
            for variable, kind in zip(variables, ("reference_sign", "last_sign", "flip_count")):
                state[f"{wrapper.layer.name}/{index}/{kind}"] = variable.numpy()
        state[f"{wrapper.layer.name}/reference_step"] = wrapper.reference_step.numpy()
    return state


def set_state(model, state):
    """Restores what `get_state` returned (e.g. when a run resumes).

    Raises:
      ValueError: the state names other layers or shapes than the model's.
    """
    expected = get_state(model)
    if sorted(expected) != sorted(state):
        raise ValueError(f"the saved sign-flip state names {sorted(state)}, the model has {sorted(expected)}.")
    for wrapper in sign_flip_wrappers(model):
        for index, variables in enumerate(wrapper.flip_vars):
            for variable, kind in zip(variables, ("reference_sign", "last_sign", "flip_count")):
                value = np.asarray(state[f"{wrapper.layer.name}/{index}/{kind}"])
                if value.shape != tuple(variable.shape):
                    raise ValueError(f"saved {kind} of {wrapper.layer.name!r} has shape {value.shape}, "
                                     f"the layer's is {tuple(variable.shape)}.")
                variable.assign(value.astype(variable.dtype.as_numpy_dtype))
        wrapper.reference_step.assign(int(state[f"{wrapper.layer.name}/reference_step"]))


def flip_counts(model):
    """dict mask name -> exact per-weight sign changes since the reference."""
    return {name: wrapper.flip_counts(weight) for name, wrapper, weight, _ in wrappers.pruning_entries(model)
            if isinstance(wrapper, PruneLowSignFlip)}


def flip_statistics(model):
    """Per-layer flip statistics over the surviving weights.

    Returns:
      dict mask name -> {"fraction_flipped": share whose sign now differs from the
      reference, "fraction_ever_flipped": share that changed sign at least once,
      "mean_flips": mean sign changes per weight}. Empty for a model without
      sign-flip wrappers.
    """
    statistics = {}
    for name, wrapper, weight, mask in wrappers.pruning_entries(model):
        if not isinstance(wrapper, PruneLowSignFlip):
            continue
        alive = mask.numpy() > 0
        count = max(int(alive.sum()), 1)
        counts = wrapper.flip_counts(weight)
        statistics[name] = {
            "fraction_flipped": float((wrapper.flipped(weight) & alive).sum() / count),
            "fraction_ever_flipped": float(((counts > 0) & alive).sum() / count),
            "mean_flips": float(counts[alive].sum() / count),
        }
    return statistics


def prune_low_sign_flip(to_prune, pruning_schedule=None, criterion="sign_flip", alpha=1.0, reference="init",
                        strategy="layerwise", pruning_policy=None, block_size=(1, 1), block_pooling_type="AVG",
                        sparsity_m_by_n=None, share_layers=False, **kwargs):
    """Wraps a model, a layer or a list of layers for sign-flip (or hybrid) pruning.

    Same accepted inputs as `prune_low_magnitude` (Sequential, functional, a layer, a
    list; a dict of per-layer schedules). Train with `UpdateMasks()`, which ranks each
    layer by its wrapper's criterion, or use the IMP loop (`ImpConfig(criterion=...)`).

    Args:
      to_prune: a Sequential or functional tf_keras model (or a Keras 3 one, converted
        with `keras3_conversion.to_tf_keras`), a layer, or a list of layers.
      pruning_schedule: as for `prune_low_magnitude` (default `ConstantSparsity(0.5, 0)`).
      criterion: 'sign_flip' (alias 'flip'): flipped weights first, then magnitude;
        'hybrid': |w| / (1 + flips) ** alpha; 'magnitude': |w| through the same wrapper.
      alpha: the hybrid's exponent (>= 0).
      reference: 'init' (the signs when wrapped), 'rewind' (the signs of the
        `RewindCallback` snapshot), or the `RewindCallback` itself, which also checks
        that its snapshot comes before the first scheduled pruning.
      strategy: 'layerwise' or 'global'.
      pruning_policy: optional tfmot `PruningPolicy`.
      block_size, block_pooling_type, sparsity_m_by_n: a structured mask, as for
        `prune_low_magnitude`; the blocks or groups are ranked by this criterion.
      share_layers: wrap the model's own layers, as for `prune_low_magnitude`.
      **kwargs: passed to the wrapper when `to_prune` is a layer.

    Returns:
      A new model (the input is unchanged) or the wrapped layer(s).

    Raises:
      ValueError: unknown criterion or reference, negative alpha, a schedule that
        prunes before the rewind snapshot exists, or any error `prune_low_magnitude`
        raises.
      TypeError: Keras 3 layers, Keras 3 models that cannot be converted, subclassed
        models, or objects that are not layers/models.
    """
    reference_name = check_arguments(criterion, alpha, reference)
    pattern = wrappers.check_pattern(block_size, block_pooling_type, sparsity_m_by_n, strategy)
    if hasattr(reference, "rewind_step") and pruning_schedule is not None:
        scheduled = pruning_schedule.values() if isinstance(pruning_schedule, dict) else [pruning_schedule]
        for schedule in scheduled:
            first = schedules.next_prune_step(schedule, 0)
            if first is not None and first < reference.rewind_step:
                raise ValueError(
                    f"The schedule prunes at step {first}, before the RewindCallback's snapshot at "
                    f"rewind_step={reference.rewind_step}: the reference signs would not exist yet. "
                    "Start pruning at or after the rewind step, or use reference='init'."
                )

    def make_wrapper(layer, schedule, **wrapper_kwargs):
        return PruneLowSignFlip(layer, pruning_schedule=schedule, strategy=strategy, criterion=criterion,
                                alpha=alpha, reference=reference_name, **pattern, **wrapper_kwargs)

    wrapped = wrappers.wrap_layers(to_prune, pruning_schedule, pruning_policy, make_wrapper,
                                   "prune_low_sign_flip", share_layers=share_layers, **kwargs)
    if isinstance(wrapped, keras.Model):
        # The clone's kernels were overwritten with the input's: take the reference now.
        for wrapper in sign_flip_wrappers(wrapped):
            if wrapper.reference == "init":
                wrapper.reset_reference(0)
    return wrapped
