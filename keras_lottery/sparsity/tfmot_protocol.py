"""tfmot's protocol on keras_lottery's wrappers: `UpdatePruningStep` drives them, nothing else trains dense.

A tfmot user's script keeps tfmot's callback. tfmot 0.8.1's `UpdatePruningStep` sets
each wrapper's `pruning_step` to 0 when training begins (it stays -1 otherwise); each
training call of a wrapper then counts it up by one and applies the schedule at the
new step. `TfmotProtocol`, mixed into `wrappers.PruneLowMagnitude`, does the same, but
computes the masks on the host with keras_lottery's criteria and `masks.compute` (exact
counts, the tie rule, patterns): inside a traced step through `tf.py_function`, only at
the steps where the schedule fires. With keras_lottery's own `UpdateMasks` the step is
traced without any of this (`UpdateMasks` resets the step to -1 and retraces a step
traced for tfmot's callback).

The same check stops a training that would stay dense without a word: a schedule that
prunes, masks that prune nothing yet, and nothing that applies the schedule
(`manage_masks` says the caller sets the masks itself).
"""

import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as tfmot_wrapper

from keras_lottery.sparsity import criteria
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules


class TfmotProtocol:
    """What a keras_lottery wrapper does when tfmot's callback drives it (a mixin of `PruneLowMagnitude`)."""

    # -- tfmot's protocol: its UpdatePruningStep callback (in fit, or called by hand in a custom
    # loop) sets `pruning_step` to 0 when training begins; each training call then counts it
    # up by one and applies the schedule at the new step, as tfmot's own wrapper does. --

    def _driven_by_tfmot(self):
        """True when tfmot's UpdatePruningStep set this wrapper's step (left at -1 otherwise)."""
        if tf.executing_eagerly():
            return int(self.pruning_step.numpy()) >= 0
        with tf.init_scope():  # read when the training step is traced: after the callback's first update
            return int(self.pruning_step.numpy()) >= 0

    def _schedule_update(self):
        """Applies the schedule at `pruning_step` if it fires: our mask computation, on the host.

        Returns:
          None when executing eagerly (the update is done), else the op the step must run
          before it reads the masks.
        """
        if isinstance(self.pruning_schedule, schedules.OnFlip):
            raise ValueError(
                f"layer {self.layer.name!r} has an OnFlip schedule, whose checks prune the weights that flipped "
                "(keras_lottery.sparsity.on_flip), which tfmot's UpdatePruningStep cannot do: train with "
                "callbacks=[keras_lottery.UpdateMasks()] instead."
            )
        if self.strategy != "layerwise":
            raise ValueError(
                f"layer {self.layer.name!r} ranks its weights with strategy={self.strategy!r} (all layers together), "
                "which tfmot's UpdatePruningStep, one layer at a time, cannot drive: train with "
                "callbacks=[keras_lottery.UpdateMasks()] instead."
            )
        if not tf.executing_eagerly() and tf.distribute.has_strategy():
            raise ValueError(
                "tfmot's UpdatePruningStep drives keras_lottery's wrappers through host calls inside the training "
                "step, which tf.distribute replicas cannot make: under a distribution strategy, train with "
                "callbacks=[keras_lottery.UpdateMasks()] instead."
            )
        step = self.pruning_step.assign_add(1)
        if not tf.executing_eagerly():
            step = tf.convert_to_tensor(step)
        if type(self.pruning_schedule).__module__.startswith("keras_lottery."):
            # Our schedules count steps as UpdateMasks does, from 0 (before the first update);
            # tfmot's step here counts the training calls from 1, which tfmot's schedules expect.
            step = step - 1
        should_prune, sparsity = self.pruning_schedule(step)
        if tf.executing_eagerly():
            if bool(should_prune):
                self.update_masks_at(float(sparsity), int(step))
            return None

        def update():
            return tf.py_function(lambda s, t: self.update_masks_at(float(s), int(t)) or True,
                                  [sparsity, step], tf.bool)

        return tf.cond(should_prune, update, lambda: tf.constant(False))

    def update_masks_at(self, sparsity, step=0):
        """Computes this layer's masks at `sparsity` by its criterion, as `prune` does, and assigns them.

        The one mask computation (`criteria` then `masks.compute`, layerwise, masks only
        shrinking); the pruned weights are set to 0 and tfmot's threshold variable to the
        smallest score kept, as tfmot's own update leaves it for `PruningSummaries`.

        Args:
          sparsity: the fraction of this layer's weights to prune.
          step: the training step (seeds the 'random' criterion).
        """
        criterion = getattr(self, "criterion", "magnitude")
        keys = [str(index) for index in range(len(self.pruning_vars))]
        effective = {key: weight.numpy() * mask.numpy() for key, (weight, mask, _) in zip(keys, self.pruning_vars)}
        wants_state = criterion in criteria.FLIP_CRITERIA
        state = {key: self.criterion_state(weight) if wants_state else {}
                 for key, (weight, _, _) in zip(keys, self.pruning_vars)}
        scores = criteria.score(criterion, effective, np.random.default_rng(step), state)
        previous = {key: mask.numpy() for key, (_, mask, _) in zip(keys, self.pruning_vars)}
        pattern = masks_lib.Pattern(block_size=tuple(self.block_size), block_pooling=self.block_pooling_type,
                                    m_by_n=self.sparsity_m_by_n)
        new_masks = masks_lib.compute(scores, sparsity, "layerwise", previous_masks=previous,
                                      patterns={key: pattern for key in keys})
        for key, (weight, mask, threshold) in zip(keys, self.pruning_vars):
            value = new_masks[key]
            mask.assign(value.astype(mask.dtype.as_numpy_dtype))
            weight.assign(weight * tf.cast(value, weight.dtype))
            kept = np.asarray(scores[key])[value > 0]
            threshold.assign(tf.cast(np.min(kept) if kept.size else 0.0, threshold.dtype))
        object.__setattr__(self, "_masks_managed", True)

    def _check_schedule_applied(self):
        """Fails before the first step of a training that would silently stay dense.

        A schedule that prunes, masks that prune nothing yet, and no driver (neither
        `UpdateMasks`, nor tfmot's `UpdatePruningStep`, nor masks set by `prune`/`set_masks`):
        the model would train and export dense. tfmot stops with an assertion there.
        """
        if getattr(self, "_masks_managed", False) or _prunes_nothing(self.pruning_schedule) or not self.pruning_vars \
                or schedules.next_prune_step(self.pruning_schedule, 0) is None:
            return
        with tf.init_scope():
            if any(float(tf.reduce_min(mask).numpy()) < 1.0 for _, mask, _ in self.pruning_vars):
                return  # masks already set (a ticket trained further, a loaded pruned model)
        raise ValueError(
            f"layer {self.layer.name!r} has a pruning schedule that prunes, but nothing applies it during this "
            "training: it would train (and export) dense. Pass callbacks=[keras_lottery.UpdateMasks()] (or "
            "tfmot.sparsity.keras.UpdatePruningStep()) to fit; or, to train dense now and prune later yourself, "
            "set masks with keras_lottery.prune(model, sparsity), call keras_lottery.sparsity.wrappers."
            "manage_masks(model), or wrap with pruning_schedule=keras_lottery.OneShot(0.0). (Compile the "
            "model again before the next fit: this one stopped while its training step was being built.)"
        )


def _prunes_nothing(schedule):
    """True for schedules whose target is 0 (e.g. OneShot(0.0), the wrapping that only holds masks)."""
    for attribute in ("target_sparsity", "final_sparsity"):
        value = getattr(schedule, attribute, None)
        if value is not None:
            return float(value) == 0.0
    return False


def manage_masks(model):
    """Says that the caller sets the masks itself (as `imp` does with `prune`): training alone need not.

    Without it (or `UpdateMasks`, tfmot's `UpdatePruningStep`, masks already set by
    `prune`/`set_masks`, or a `RewindCallback`, which means IMP by hand), training a
    wrapped model whose schedule prunes is refused before its first step: it would stay
    dense. A schedule that never prunes (`OneShot(0.0)`) needs none of these.

    Args:
      model: a model with pruning wrappers, or one wrapper.
    """
    found = [model] if isinstance(model, tfmot_wrapper.PruneLowMagnitude) else tfmot_wrapper.collect_prunable_layers(model)
    for wrapper in found:
        object.__setattr__(wrapper, "_masks_managed", True)
